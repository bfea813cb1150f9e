package tim

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"
)

// fakeClock is a settable clock for the sig cache.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingCache returns a cache whose sigs are "sig-1", "sig-2", ...
func countingCache(ttl time.Duration) (*sigCache, *fakeClock, *atomic.Int64) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	var n atomic.Int64
	s := &sigCache{
		generate: func(time.Duration) (string, error) {
			return "sig-" + strconv.FormatInt(n.Add(1), 10), nil
		},
		now: clock.Now,
		ttl: ttl,
	}
	return s, clock, &n
}

func TestSigCacheRenewal(t *testing.T) {
	t.Parallel()
	s, clock, _ := countingCache(24 * time.Hour)
	steps := []struct {
		advance time.Duration
		want    string
	}{
		{0, "sig-1"},
		{time.Hour, "sig-1"},
		{20 * time.Hour, "sig-1"},             // 21h: 3h left, over a tenth
		{time.Hour + 35*time.Minute, "sig-2"}, // 22h35m: under 2h24m left → renewed
		{time.Minute, "sig-2"},
		{22 * time.Hour, "sig-3"},
	}
	for i, st := range steps {
		clock.Add(st.advance)
		got, err := s.get()
		if err != nil {
			t.Fatal(err)
		}
		if got != st.want {
			t.Errorf("step %d: get() = %q, want %q", i, got, st.want)
		}
	}
}

func TestSigCacheInvalidate(t *testing.T) {
	t.Parallel()
	s, _, _ := countingCache(time.Hour)
	first, _ := s.get()
	s.invalidate("some-older-sig") // not the current one: no effect
	if got, _ := s.get(); got != first {
		t.Fatalf("after invalidating another sig: %q, want %q", got, first)
	}
	s.invalidate(first)
	second, _ := s.get()
	if second == first {
		t.Fatalf("after invalidate(%q): still %q", first, second)
	}
	s.invalidateAll()
	if third, _ := s.get(); third == second {
		t.Fatalf("after invalidateAll: still %q", third)
	}
}

func TestSigCacheNoThunderingHerd(t *testing.T) {
	t.Parallel()
	s, clock, n := countingCache(time.Hour)
	const callers = 200
	// Phase 1: all callers hold the same sig, as concurrent calls do.
	sigs := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			var err error
			if sigs[i], err = s.get(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Phase 2: every call was refused with it (70001); each invalidates the
	// sig it used and gets a new one. Only the first invalidation counts.
	for i := range callers {
		wg.Go(func() {
			s.invalidate(sigs[i])
			if _, err := s.get(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := n.Load(); got != 2 {
		t.Errorf("%d generations for %d concurrent auth failures with one sig, want 2", got, callers)
	}
	// Phase 3: past the renewal point, concurrent callers cause one generation.
	clock.Add(time.Hour)
	for range callers {
		wg.Go(func() {
			if _, err := s.get(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := n.Load(); got != 3 {
		t.Errorf("%d generations after concurrent renewal, want 3", got)
	}
}

func TestSigCacheGenerateError(t *testing.T) {
	t.Parallel()
	s, _, _ := countingCache(time.Hour)
	boom := errors.New("zlib failed")
	s.generate = func(time.Duration) (string, error) { return "", boom }
	if _, err := s.get(); !errors.Is(err, boom) {
		t.Fatalf("get() error = %v, want %v", err, boom)
	}
}

func TestSigCacheRealSig(t *testing.T) {
	t.Parallel()
	const app, admin, key = 1400000001, "administrator", "k3y-for-test"
	s := newSigCache(app, admin, Secret(key), time.Hour, time.Now)
	sig, err := s.get()
	if err != nil {
		t.Fatal(err)
	}
	if err := tencentyun.VerifyUserSig(app, key, admin, sig, time.Now()); err != nil {
		t.Fatalf("VerifyUserSig: %v", err)
	}
	if err := tencentyun.VerifyUserSig(app, key, admin, sig, time.Now().Add(2*time.Hour)); !errors.Is(err, tencentyun.ErrExpired) {
		t.Fatalf("sig valid after its TTL: %v", err)
	}
}
