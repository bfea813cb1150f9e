package limiter

import (
	"sync"
	"time"
)

// recentMax is the largest value seen in the current and the previous
// window of spreadWindow: a process's spread, once widened, is reported
// for at least that long, longer than the slots it booked meanwhile stay
// ahead (Horizon) plus the sliding second they arrive in.
type recentMax struct {
	mu        sync.Mutex
	window    int64 // index of the current window since the epoch
	cur, prev time.Duration
}

// observe folds d in and returns the largest value of the current and the
// previous window.
func (m *recentMax) observe(now time.Time, d time.Duration) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch w := now.UnixNano() / int64(spreadWindow); {
	case w == m.window+1:
		m.window, m.prev, m.cur = w, m.cur, 0
	case w != m.window:
		m.window, m.prev, m.cur = w, 0, 0
	}
	m.cur = max(m.cur, d)
	return max(m.cur, m.prev)
}
