package emulator

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The emulator's settings as text, as "imrecall emulator" and the benches
// take them on the command line. The errors quote the bad part; the caller
// names the flag.

// ParseLatency parses a latency, "30ms", or a uniform range, "20ms-80ms",
// into Config's Latency and LatencyMax.
func ParseLatency(s string) (lo, hi time.Duration, err error) {
	s = strings.TrimSpace(s)
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = time.ParseDuration(strings.TrimSpace(a)); err != nil || lo < 0 {
		return 0, 0, fmt.Errorf("%q: want a duration such as 30ms, or a range such as 20ms-80ms", s)
	}
	if !isRange {
		return lo, lo, nil
	}
	if hi, err = time.ParseDuration(strings.TrimSpace(b)); err != nil || hi < lo {
		return 0, 0, fmt.Errorf("%q: want a range MIN-MAX with MIN ≤ MAX, such as 20ms-80ms", s)
	}
	return lo, hi, nil
}

// ParseFaultCodes parses "10002=0.05,91000=0.02", error codes with their
// probabilities, into Faults.Codes or Faults.ItemCodes; "" is none.
func ParseFaultCodes(s string) (map[int]float64, error) {
	out := map[int]float64{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		code, err1 := strconv.Atoi(strings.TrimSpace(k))
		p, err2 := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || err1 != nil || err2 != nil || code <= 0 || p < 0 || p > 1 {
			return nil, fmt.Errorf("%q: want CODE=PROBABILITY, e.g. 10002=0.05", part)
		}
		out[code] = p
	}
	return out, nil
}

// ParseDatasetSpec parses "groups=200,messages=100000,heavy=1,...", the
// keys groups, users, messages, c2c, heavy, heavy-groups, heavy-share,
// peers, topics and seed, into a DatasetSpec.
func ParseDatasetSpec(s string) (DatasetSpec, error) {
	var spec DatasetSpec
	ints := map[string]*int{
		"groups": &spec.Groups, "users": &spec.Users, "messages": &spec.GroupMessages, "c2c": &spec.C2CMessages,
		"heavy": &spec.HeavySenders, "heavy-groups": &spec.HeavyGroups, "peers": &spec.Peers, "topics": &spec.Topics,
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return spec, fmt.Errorf("%q: want KEY=VALUE", part)
		}
		switch {
		case ints[k] != nil:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return spec, fmt.Errorf("%s=%q: want a whole number ≥ 0", k, v)
			}
			*ints[k] = n
		case k == "heavy-share":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 {
				return spec, fmt.Errorf("heavy-share=%q: want 0 to 1", v)
			}
			spec.HeavyShare = f
		case k == "seed":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return spec, fmt.Errorf("seed=%q: want a whole number", v)
			}
			spec.Seed = n
		default:
			return spec, fmt.Errorf("unknown key %q (groups, users, messages, c2c, heavy, heavy-groups, heavy-share, peers, topics, seed)", k)
		}
	}
	return spec, nil
}
