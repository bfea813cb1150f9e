package emulator

import (
	"slices"
	"sort"
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
	// HandledLateMaxMs is the longest a call waited on this host, from its
	// arrival to the emulator counting it (ms; 0 where arrivals are not
	// known, see ArrivalListener): how busy the host was, which no longer
	// moves a call's place in the count (unless it waited longer than the
	// window keeps arrivals: see admit).
	HandledLateMaxMs float64 `json:"handled_late_max_ms,omitempty"`
}

// keptArrivals is how far back from the latest arrival the window of an
// API keeps the arrivals of accepted calls.
const keptArrivals = 10 * time.Second

// apiStats is the live state behind APIStats, with the window of accept times.
type apiStats struct {
	mu     sync.Mutex
	start  time.Time
	s      APIStats
	window []time.Time // arrivals of the accepted calls of the last keptArrivals, oldest first
	latest time.Time   // the latest arrival seen
	// kept is the oldest arrival the window is whole after: it holds every
	// accepted call that arrived after kept.
	kept time.Time
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

// admit counts a call that arrived at at against the sliding-second cap
// (0: unlimited) and reports whether it is accepted. Calls on several
// connections may be admitted in another order than they arrived, so the
// window is kept in order of arrival and at is refused when any second
// holding it would hold more than limit calls; the busiest such second,
// at included, raises Max1s.
func (a *apiStats) admit(at time.Time, limit int) bool {
	late := time.Since(at)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.s.HandledLateMaxMs = max(a.s.HandledLateMaxMs, float64(late)/float64(time.Millisecond))
	if at.After(a.latest) {
		a.latest = at
	}
	// A call admitted late arrived a moment before the latest, usually
	// milliseconds: keeping what arrived in the last 10 s covers every
	// second it can share. Nothing bounds that delay, though (the server's
	// ReadHeaderTimeout times reading a request, not the wait for its
	// handler): a call whose second reaches back past what the window
	// keeps is counted at the latest arrival, where the window is whole.
	cut := a.latest.Add(-keptArrivals)
	i := 0
	for i < len(a.window) && !a.window[i].After(cut) {
		i++
	}
	a.window = a.window[i:]
	if cut.After(a.kept) {
		a.kept = cut
	}
	if at.Add(-time.Second).Before(a.kept) {
		at = a.latest
	}
	after := sort.Search(len(a.window), func(i int) bool { return a.window[i].After(at) })
	busiest := a.inSecondEnding(at)
	for _, end := range a.window[after:] {
		if end.Sub(at) >= time.Second {
			break
		}
		busiest = max(busiest, a.inSecondEnding(end))
	}
	if limit > 0 && busiest >= limit {
		a.s.Throttled++
		return false
	}
	a.window = slices.Insert(a.window, after, at)
	if a.s.First.IsZero() || at.Before(a.s.First) {
		a.s.First = at
	}
	if at.After(a.s.Last) {
		a.s.Last = at
	}
	a.s.Accepted++
	a.s.Max1s = max(a.s.Max1s, int64(busiest+1))
	sec := max(0, int(at.Sub(a.start)/time.Second))
	for len(a.s.PerSecond) <= sec {
		a.s.PerSecond = append(a.s.PerSecond, 0)
	}
	a.s.PerSecond[sec]++
	return true
}

// inSecondEnding counts the accepted calls that arrived in (end-1s, end].
func (a *apiStats) inSecondEnding(end time.Time) int {
	hi := sort.Search(len(a.window), func(i int) bool { return a.window[i].After(end) })
	lo := sort.Search(hi, func(i int) bool { return a.window[i].After(end.Add(-time.Second)) })
	return hi - lo
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
