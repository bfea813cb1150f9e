package certificate

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
)

// NotACertificateError is OpenView's error for a file that is not a
// certificate document.
type NotACertificateError struct {
	Path string
	Err  error
}

func (e *NotACertificateError) Error() string {
	return fmt.Sprintf("%s: not a certificate: %v", e.Path, e.Err)
}

func (e *NotACertificateError) Unwrap() error { return e.Err }

// OpenView reads a certificate for rendering. With a public key it is
// checked first: a certificate that fails the check is still shown, with
// the problem (View.Problem); without one it is shown unchecked.
func OpenView(path string, pub ed25519.PublicKey) (View, error) {
	if pub != nil {
		doc, err := Verify(path, pub)
		var fail *Failure
		if errors.As(err, &fail) {
			var d Document
			if b, rerr := os.ReadFile(path); rerr == nil {
				_ = json.Unmarshal(b, &d)
			}
			return View{Document: d, Checked: true, Problem: fail.Error()}, nil
		}
		if err != nil {
			return View{}, err
		}
		return View{Document: doc, Checked: true}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return View{}, err
	}
	var d Document
	if err := json.Unmarshal(b, &d); err != nil {
		return View{}, &NotACertificateError{Path: path, Err: err}
	}
	return View{Document: d}, nil
}

// BuildVersion is the module version and VCS revision the running binary
// was built from (Software.Version).
func BuildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v += " (modified)"
		}
	}
	return v
}

// ConfigHash is the SHA-256 (hex) of settings as JSON (Software.ConfigSHA256):
// give it the settings that shaped the calls, never a secret.
func ConfigHash(settings map[string]any) string {
	b, _ := json.Marshal(settings)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
