package emulator

import (
	"sync"
	"time"
)

// APIStats counts what one API served since the start or the last reset.
type APIStats struct {
	Calls     int64 `json:"calls"`     // every request
	Accepted  int64 `json:"accepted"`  // under the rate cap (faults included)
	Throttled int64 `json:"throttled"` // refused with 60007
	Faults    int64 `json:"faults"`    // injected faults (per call, and per seq for item codes)
	// Max1s is the most calls accepted in any sliding one-second window.
	Max1s int64 `json:"max_1s"`
	// PerSecond is the accepted calls in each second since the start or reset.
	PerSecond []int64 `json:"per_second"`
	// First and Last are when the first and the last accepted call arrived.
	First time.Time `json:"first,omitzero"`
	Last  time.Time `json:"last,omitzero"`
}

// apiStats is the live state behind APIStats, with the window of accept times.
type apiStats struct {
	mu     sync.Mutex
	start  time.Time
	s      APIStats
	window []time.Time // accept times within the last second, oldest first
}

func (s *Server) stats(api string) *apiStats {
	s.smu.Lock()
	defer s.smu.Unlock()
	st, ok := s.apis[api]
	if !ok {
		st = &apiStats{start: s.started}
		s.apis[api] = st
	}
	return st
}

func (a *apiStats) call() {
	a.mu.Lock()
	a.s.Calls++
	a.mu.Unlock()
}

func (a *apiStats) fault() {
	a.mu.Lock()
	a.s.Faults++
	a.mu.Unlock()
}

// admit counts an arrival against the sliding-second cap (0: unlimited) and
// reports whether it is accepted. The window size at each accept is the
// number of calls in the second ending then, so its maximum is Max1s.
func (a *apiStats) admit(limit int) bool {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	cut := now.Add(-time.Second)
	i := 0
	for i < len(a.window) && !a.window[i].After(cut) {
		i++
	}
	a.window = a.window[i:]
	if limit > 0 && len(a.window) >= limit {
		a.s.Throttled++
		return false
	}
	a.window = append(a.window, now)
	if a.s.Accepted == 0 {
		a.s.First = now
	}
	a.s.Last = now
	a.s.Accepted++
	a.s.Max1s = max(a.s.Max1s, int64(len(a.window)))
	sec := int(now.Sub(a.start) / time.Second)
	for len(a.s.PerSecond) <= sec {
		a.s.PerSecond = append(a.s.PerSecond, 0)
	}
	a.s.PerSecond[sec]++
	return true
}

// Stats returns what every API that saw calls served, keyed by the path's
// last segment.
func (s *Server) Stats() map[string]APIStats {
	s.smu.Lock()
	defer s.smu.Unlock()
	out := make(map[string]APIStats, len(s.apis))
	for api, a := range s.apis {
		a.mu.Lock()
		c := a.s
		c.PerSecond = append([]int64{}, a.s.PerSecond...)
		a.mu.Unlock()
		out[api] = c
	}
	return out
}

// ResetStats starts every count afresh.
func (s *Server) ResetStats() {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.started = time.Now()
	s.apis = map[string]*apiStats{}
}
