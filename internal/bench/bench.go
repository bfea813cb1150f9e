// Package bench holds imrecall's benchmark harnesses, which
// "imrecall bench" runs (docs/BENCHMARKS.md has their figures):
//
//   - RunLimiter: P processes calling the emulator through a limiter, against
//     its strict cap; RunLimiterChild is one of those processes.
//   - RunE2E: the production path end to end, worker processes and the
//     producer's command against the emulator, measured against the
//     physical floor.
//   - RunScale: list files of growing sizes end to end at a raised cap,
//     for Redis bytes per message, peak RSS and wall time.
//
// The harnesses start their child processes from this binary
// (os.Executable): the binary that calls them must be imrecall, with its
// worker, purge, recall, verify, serve and "bench limiter-child"
// subcommands. Linux: peak RSS and CPU are read from /proc.
package bench

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
)

// App and Admin are the SDKAppID and admin identifier of the emulated app.
const (
	App   = int64(1400000001)
	Admin = "administrator"
)

// verifyExitNotErased is "imrecall verify"'s exit code when messages
// remain: a result, not a failure of the command.
const verifyExitNotErased = 5

// ConfigError is a harness configuration that cannot run: the caller's
// input is wrong (the CLI exits with its usage code).
type ConfigError struct{ Err error }

func (e ConfigError) Error() string { return e.Err.Error() }
func (e ConfigError) Unwrap() error { return e.Err }

func configError(format string, args ...any) error {
	return ConfigError{fmt.Errorf(format, args...)}
}

// redact is a URL with its password hidden, for errors.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(an unparsable URL)"
	}
	return u.Redacted()
}

// randomHex is n random bytes in hex: secrets and tokens of one run.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
