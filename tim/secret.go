package tim

import (
	"fmt"
	"io"
	"log/slog"
)

// redacted is what a Secret prints as.
const redacted = "[REDACTED]"

// Secret holds a secret such as the app's SecretKey. Every way of printing it
// (fmt verbs, slog, encoding/json) shows "[REDACTED]"; only Reveal returns the
// value. The zero value is the empty secret.
type Secret string

// Reveal returns the secret itself. Pass the result only to the code that
// needs the value (the UserSig generator), never to a log or an error.
func (s Secret) Reveal() string { return string(s) }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s == "" }

// String returns "[REDACTED]".
func (s Secret) String() string { return redacted }

// GoString returns "[REDACTED]", for %#v.
func (s Secret) GoString() string { return redacted }

// Format prints "[REDACTED]" for every verb, so neither %x nor %q leaks it.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue returns "[REDACTED]", for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON encodes the secret as "[REDACTED]".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText encodes the secret as "[REDACTED]".
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
