package limiter

import (
	"fmt"
	"strings"
)

// ParseCapOf parses per-API caps, "api=N,api=unlimited", into
// Config.CapOf, naming the bad element. N must be above 0: 0 is refused
// rather than read as unlimited.
func ParseCapOf(s string) (map[string]int, error) {
	out := map[string]int{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%q: want API=N (N above 0) or API=unlimited", part)
		}
		n, err := ParseCap(v)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", part, err)
		}
		out[strings.TrimSpace(k)] = n
	}
	return out, nil
}
