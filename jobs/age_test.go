package jobs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestParseAgeRefusesAgesThatWouldOverflow: days are checked before they
// become a Duration, so no age overflows into a short or negative one
// (213504d was 25m26s, 106752d negative); ages longer than MaxAge are
// refused with an error naming the value.
func TestParseAgeRefusesAgesThatWouldOverflow(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    time.Duration
		wantErr error
	}{
		{"30d", 30 * 24 * time.Hour, nil},
		{" 90d ", 90 * 24 * time.Hour, nil},
		{"36h", 36 * time.Hour, nil},
		{"0", 0, nil},
		{"0d", 0, nil},
		{"", 0, nil},
		{"18250d", MaxAge, nil},
		{"438000h", MaxAge, nil},
		{"18251d", 0, ErrAgeTooLong},
		{"106751d", 0, ErrAgeTooLong},
		{"106752d", 0, ErrAgeTooLong},
		{"213504d", 0, ErrAgeTooLong},
		{"99999999d", 0, ErrAgeTooLong},
		{"99999999999999999999d", 0, ErrAgeTooLong},
		{"438001h", 0, ErrAgeTooLong},
		{"2562047h", 0, ErrAgeTooLong},
		{"-1d", 0, ErrBadAge},
		{"+1d", 0, ErrBadAge},
		{"030d", 0, ErrBadAge},
		{"d", 0, ErrBadAge},
		{"-36h", 0, ErrBadAge},
		{"soon", 0, ErrBadAge},
	} {
		got, err := ParseAge(c.in)
		if !errors.Is(err, c.wantErr) || got != c.want {
			t.Errorf("ParseAge(%q) = %s, %v; want %s, %v", c.in, got, err, c.want, c.wantErr)
		}
		if errors.Is(err, ErrAgeTooLong) && !strings.Contains(err.Error(), strings.TrimSpace(c.in)+" is longer than") {
			t.Errorf("ParseAge(%q): %q does not name the value", c.in, err)
		}
	}
}
