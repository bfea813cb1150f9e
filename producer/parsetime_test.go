package producer

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestParseTimeAtTheEdges: an age too long for the date arithmetic, or an
// absolute time that is the zero instant (which a Window takes for "no
// bound"), is refused naming the value; it named a time after now ("until
// 9223372036854775807d" was tomorrow, so a purge "older than forever"
// recalled every message), or left the bound open ("until
// 0001-01-01T00:00:00Z" recalled everything instead of nothing).
func TestParseTimeAtTheEdges(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	for _, s := range []string{"9223372036854775807d", "9223372036854775800d", "200000000000000d", "3000000d", "106752d", "0001-01-01T00:00:00Z"} {
		got, err := ParseTime(s, now)
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("ParseTime(%q) = %v, %v; want an error naming it", s, got, err)
		}
		_, err = ParseWindow("", s, now)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "until" {
			t.Errorf("ParseWindow(until %q) = %v, want a *FieldError for until", s, err)
		}
	}
	// The longest ages still read, in days as in hours (time.Duration's
	// bound), and are before now.
	for _, s := range []string{"106751d", "2562047h", "0d", "90d"} {
		got, err := ParseTime(s, now)
		if err != nil || got.After(now) || got.IsZero() {
			t.Errorf("ParseTime(%q) = %v, %v; want a time at or before now", s, got, err)
		}
	}
}
