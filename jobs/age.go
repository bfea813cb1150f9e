package jobs

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrBadAge is ParseAge's error: want days (30d), a duration (36h) or 0.
var ErrBadAge = errors.New("want days (30d), a duration (36h) or 0")

// ParseAge parses a retention: days (30d), a duration (36h), or 0 or empty
// (keep forever, returned as 0).
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err == nil && days >= 0 && fmt.Sprint(days) == n {
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
	return d, nil
}
