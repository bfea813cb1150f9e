package jobs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrBadAge is ParseAge's error: want days (30d), a duration (36h) or 0.
var ErrBadAge = errors.New("want days (30d), a duration (36h) or 0")

// maxAgeDays is MaxAge in days.
const maxAgeDays = 50 * 365

// MaxAge is the longest retention ParseAge accepts: 18250 days (50 years).
// A longer one is no retention at all (0 keeps forever), and the sweep
// could not apply it: its cutoff, now minus the age, would fall before
// 1970, which the audit log's stream IDs (Unix milliseconds) cannot
// express; beyond 106751 days a time.Duration overflows.
const MaxAge = maxAgeDays * 24 * time.Hour

// ErrAgeTooLong is ParseAge's error for an age longer than MaxAge; the
// error names the value.
var ErrAgeTooLong = fmt.Errorf("longer than the longest retention, %dd (50 years); 0 keeps forever", maxAgeDays)

// ParseAge parses a retention: days (30d), a duration (36h), or 0 or empty
// (keep forever, returned as 0). Its errors match ErrBadAge, or
// ErrAgeTooLong for an age longer than MaxAge.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	tooLong := fmt.Errorf("%s is %w", s, ErrAgeTooLong)
	if n, ok := strings.CutSuffix(s, "d"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
		days, err := strconv.ParseInt(n, 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange), err == nil && days > maxAgeDays:
			// Checked before multiplying: 106752d would overflow.
			return 0, tooLong
		case err == nil && strconv.FormatInt(days, 10) == n:
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	if s == "0" || s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, ErrBadAge
	}
	if d > MaxAge {
		return 0, tooLong
	}
	return d, nil
}
