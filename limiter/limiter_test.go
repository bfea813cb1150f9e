package limiter

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// backends runs fn against a real redis-server and miniredis; newClient
// returns a new client (a "process") on the same server.
func backends(t *testing.T, fn func(t *testing.T, newClient func() redis.UniversalClient)) {
	t.Run("redis-server", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t)
		fn(t, func() redis.UniversalClient { return srv.Client() })
	})
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		mr := miniredis.RunT(t)
		fn(t, func() redis.UniversalClient {
			c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			t.Cleanup(func() { c.Close() })
			return c
		})
	})
}

// maxInWindow is the most timestamps in any window of length w.
func maxInWindow(ts []time.Time, w time.Duration) int {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// TestSharedCapAcrossProcesses: four limiters on four connections, eight
// goroutines each, share one cap: no sliding second holds more grants.
func TestSharedCapAcrossProcesses(t *testing.T) {
	backends(t, func(t *testing.T, newClient func() redis.UniversalClient) {
		const capPerSec = 40
		k := Key{AppID: 1, API: "group_msg_recall"}
		var mu sync.Mutex
		var grants []time.Time
		ctx, cancel := context.WithTimeout(t.Context(), 2500*time.Millisecond)
		defer cancel()
		var wg sync.WaitGroup
		for range 4 {
			l, err := New(newClient(), Config{Cap: capPerSec})
			if err != nil {
				t.Fatal(err)
			}
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for l.Wait(ctx, k) == nil {
						mu.Lock()
						grants = append(grants, time.Now())
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		if got := maxInWindow(grants, time.Second); got > capPerSec {
			t.Fatalf("%d grants in one sliding second, cap %d", got, capPerSec)
		}
		// 32 waiters against 39 slots/s: the budget is used, not wasted.
		if len(grants) < capPerSec {
			t.Fatalf("only %d grants in 2.5 s at %d/s", len(grants), capPerSec)
		}
	})
}

func TestIndependentAPIs(t *testing.T) {
	backends(t, func(t *testing.T, newClient func() redis.UniversalClient) {
		l, _ := New(newClient(), Config{Cap: 30, CapOf: map[string]int{"unlimited_api": Unlimited}})
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		counts := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, api := range []string{"group_msg_recall", "admin_msgwithdraw"} {
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for l.Wait(ctx, Key{AppID: 7, API: api}) == nil {
						mu.Lock()
						counts[api]++
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		for api, n := range counts {
			// Each API has its own budget of 0.987 × 30/s (less while warming up): about 44 in 1.5 s.
			if n < 20 || n > 46 {
				t.Errorf("%s: %d grants in 1.5 s, want its own budget of ≈45", api, n)
			}
		}
		if err := l.Wait(t.Context(), Key{AppID: 7, API: "unlimited_api"}); err != nil {
			t.Fatalf("unlimited API: %v", err)
		}
	})
}

func TestPauseSharedByEveryProcess(t *testing.T) {
	backends(t, func(t *testing.T, newClient func() redis.UniversalClient) {
		a, _ := New(newClient(), Config{})
		b, _ := New(newClient(), Config{})
		k := Key{AppID: 1, API: "group_msg_recall"}
		a.ForApp(1).Throttled(t.Context(), "group_msg_recall", 70050) // a minute
		for name, l := range map[string]*Limiter{"the pausing process": a, "another process": b} {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			err := l.Wait(ctx, k)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s: Wait during a pause = %v, want it held back", name, err)
			}
		}
		// Other keys are not paused.
		if err := b.Wait(t.Context(), Key{AppID: 1, API: "admin_msgwithdraw"}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestContextCancel(t *testing.T) {
	backends(t, func(t *testing.T, newClient func() redis.UniversalClient) {
		l, _ := New(newClient(), Config{Cap: 1})
		k := Key{AppID: 1, API: "x"}
		if err := l.Wait(t.Context(), k); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- l.Wait(ctx, k) }()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait after cancel = %v", err)
		}
	})
}

// TestRedisDownFailsClosed kills the server: Wait grants nothing until it is
// back, then grants again.
func TestRedisDownFailsClosed(t *testing.T) {
	srv := redistest.Start(t)
	l, _ := New(srv.Client(), Config{})
	k := Key{AppID: 1, API: "group_msg_recall"}
	if err := l.Wait(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	err := l.Wait(ctx, k)
	cancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with Redis down = %v, want it held back until the deadline", err)
	}
	srv.Restart()
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := l.Wait(ctx, k); err != nil {
		t.Fatalf("Wait after Redis came back = %v", err)
	}
}

func TestConfig(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	for _, cfg := range []Config{{Cap: -2}, {Margin: 0.9}, {CapOf: map[string]int{"a": -2}}, {CapOf: map[string]int{"a": 0}}} {
		if _, err := New(rdb, cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	l, _ := New(rdb, Config{})
	// 8 ms of Tolerance and 5 of Slack: (1 s + 13 ms)/200 + 1 µs.
	if iv := spreadInterval(200, l.spread(0)); iv != 5066*time.Microsecond {
		t.Fatalf("interval at 200/s = %v, want 5.066ms", iv)
	}
	if r := l.Rate(Key{API: "group_msg_recall"}); r < 197.3 || r > 197.5 {
		t.Fatalf("default rate = %v, want 0.987 of 200", r)
	}
	fixed, _ := New(rdb, Config{Margin: 0.025})
	if r := fixed.Rate(Key{API: "group_msg_recall"}); r != 195 {
		t.Fatalf("fixed rate = %v, want 195 (200 less 2.5%%)", r)
	}
}

// TestThrottleWidensTheMargin: a throttle code widens the spacing of every
// process sharing the budget (10 ms more spread, then double, once per
// pause however many calls in flight are refused), a UserSig throttle
// (70050) or a fixed margin does not, and the backoff lapses.
func TestThrottleWidensTheMargin(t *testing.T) {
	mr := miniredis.RunT(t)
	newLimiter := func(cfg Config) *Limiter { return limiterOn(t, mr, cfg) }
	a, b := newLimiter(Config{Cap: 100}), newLimiter(Config{Cap: 100})
	k := Key{AppID: 1, API: "group_msg_recall"}
	base := "imrecall:rl:{" + k.String() + "}"
	// check has b reserve a slot and compares the interval Redis answered
	// with (1 s + the widest spread stored + backoff)/100 + 1 µs.
	check := func(what string, backoff time.Duration) {
		t.Helper()
		mr.Del(base + ":pause") // skip the throttle's pause
		mr.Del(base + ":held")  // and the spreads held from earlier checks (TestSpreadHeldAtEveryLevel)
		a.mu.Lock()
		clear(a.paused)
		a.mu.Unlock()
		if err := b.Wait(t.Context(), k); err != nil {
			t.Fatal(err)
		}
		fields, err := mr.HKeys(base + ":spread")
		if err != nil || !slices.Contains(fields, b.id) {
			t.Fatalf("%s: spreads stored for %v (%v), want b's (%s) among them", what, fields, err, b.id)
		}
		var spread time.Duration
		for _, f := range fields {
			v, _, _ := strings.Cut(mr.HGet(base+":spread", f), ":")
			us, _ := strconv.ParseInt(v, 10, 64)
			spread = max(spread, time.Duration(us)*time.Microsecond)
		}
		if spread <= b.cfg.Tolerance+b.cfg.Slack {
			t.Fatalf("%s: stored spread %v, not wider than Tolerance and Slack (no round trip)", what, spread)
		}
		if got, want := b.Interval(k), spreadInterval(100, spread+backoff); got != want {
			t.Fatalf("%s: interval %v, want %v (spread %v, backoff %v)", what, got, want, spread, backoff)
		}
	}
	if err := a.Wait(t.Context(), k); err != nil { // a's spread stored too
		t.Fatal(err)
	}
	check("before any throttle", 0)
	for range 5 { // five calls refused at once: one pause, one step
		a.ForApp(1).Throttled(t.Context(), k.API, 60007)
	}
	check("after one throttle (seen by another process)", FirstBackoff)
	mr.FastForward(ThrottlePause(60007) + time.Millisecond)
	a.ForApp(1).Throttled(t.Context(), k.API, 60007)
	check("after a throttle in the next second", 2*FirstBackoff)
	for range 10 {
		mr.FastForward(ThrottlePause(60007) + time.Millisecond)
		a.ForApp(1).Throttled(t.Context(), k.API, 60018)
	}
	check("after twelve throttles", MaxBackoff)
	mr.FastForward(BackoffLapse + time.Second)
	check("after the backoff lapsed", 0)
	a.ForApp(1).Throttled(t.Context(), k.API, 70050)
	check("after a UserSig throttle (70050)", 0)
	a.ForApp(1).Throttled(t.Context(), k.API, 10006) // a group's own frequency limit
	check("after a group's frequency limit (10006)", 0)
	fixed := newLimiter(Config{Cap: 100, Margin: 0.1, Prefix: "fixed"})
	fixed.ForApp(1).Throttled(t.Context(), k.API, 60007)
	if n, _ := mr.Get("fixed:{" + k.String() + "}:backoff"); n != "" {
		t.Fatalf("a fixed margin stored backoff %q", n)
	}
}

// TestWidestSpreadCounts: a process with a wide spread (a far Redis, here
// a large Slack) widens the interval of every process sharing the budget
// for as long as it reserves, whoever reserves in between, and stops
// counting spreadWindow after its last reservation.
func TestWidestSpreadCounts(t *testing.T) {
	mr := miniredis.RunT(t)
	newLimiter := func(cfg Config) *Limiter { return limiterOn(t, mr, cfg) }
	wide, near := newLimiter(Config{Cap: 1000, Slack: 100 * time.Millisecond}), newLimiter(Config{Cap: 1000})
	k := Key{AppID: 1, API: "group_msg_recall"}
	wait := func(l *Limiter) time.Duration {
		t.Helper()
		if err := l.Wait(t.Context(), k); err != nil {
			t.Fatal(err)
		}
		return l.Interval(k)
	}
	w := wait(wide)
	if w < spreadInterval(1000, 108*time.Millisecond) {
		t.Fatalf("the wide process's interval %v, want at least (1 s + 108 ms)/1000", w)
	}
	for i := range 50 { // the near process reserves many times; the wide one's spread still counts
		if got := wait(near); got < w {
			t.Fatalf("reservation %d of the near process: interval %v, narrower than the wide process's %v", i, got, w)
		}
		mr.FastForward(50 * time.Millisecond)
	}
	mr.FastForward(spreadWindow)
	if got := wait(near); got >= w || got > spreadInterval(1000, near.spread(time.Second)) {
		t.Fatalf("after the wide process stopped: interval %v, want the near process's own (< %v)", got, w)
	}
}

// limiterOn is a limiter on its own connection to mr: a process.
func limiterOn(t *testing.T, mr *miniredis.Miniredis, cfg Config) *Limiter {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { c.Close() })
	l, err := New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestWarmUp: a process's first reservations, and its first after an idle
// spell, are spaced for WarmUpSpread more; then for its own spread again.
func TestWarmUp(t *testing.T) {
	mr := miniredis.RunT(t)
	l := limiterOn(t, mr, Config{Cap: 100, WarmUp: 300 * time.Millisecond})
	k := Key{AppID: 1, API: "group_msg_recall"}
	if err := l.Wait(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if got, least := l.Interval(k), spreadInterval(100, l.spread(0)+WarmUpSpread); got < least {
		t.Fatalf("first reservation: interval %v, want at least %v (warming up)", got, least)
	}
	time.Sleep(400 * time.Millisecond)
	mr.FastForward(spreadWindow + time.Second) // the warm-up spread stored lapses
	if err := l.Wait(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if got, most := l.Interval(k), spreadInterval(100, l.spread(time.Duration(l.rtt.Load())+5*time.Millisecond)); got > most {
		t.Fatalf("after the warm-up: interval %v, want at most %v", got, most)
	}
	l.lastBook.Store(time.Now().Add(-2 * idleSpell).UnixNano()) // an idle spell
	if err := l.Wait(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if got, least := l.Interval(k), spreadInterval(100, l.spread(0)+WarmUpSpread); got < least {
		t.Fatalf("after an idle spell: interval %v, want at least %v (warming up again)", got, least)
	}
}

// TestNarrowedSpreadIsHeld: when a process's spread narrows (here its
// warm-up ends), the wider spacing holds for the slots within 1 s + the
// wide spread of the last slot granted at it (calls granted then may still
// arrive that late), then the budget narrows; before, a narrower spread
// took effect at the next slot.
func TestNarrowedSpreadIsHeld(t *testing.T) {
	mr := miniredis.RunT(t)
	l := limiterOn(t, mr, Config{Cap: 100, WarmUp: 100 * time.Millisecond})
	k := Key{AppID: 1, API: "group_msg_recall"}
	wait := func() time.Duration {
		t.Helper()
		if err := l.Wait(t.Context(), k); err != nil {
			t.Fatal(err)
		}
		return l.Interval(k)
	}
	wide := wait()
	if least := spreadInterval(100, l.spread(0)+WarmUpSpread); wide < least {
		t.Fatalf("warming up: interval %v, want at least %v", wide, least)
	}
	wideAt := time.Now()
	time.Sleep(150 * time.Millisecond) // the warm-up is over
	if got := wait(); got != wide {
		t.Fatalf("just after the warm-up: interval %v, want the held %v", got, wide)
	}
	for time.Since(wideAt) < 1200*time.Millisecond { // past 1 s + the wide spread of its last slot
		time.Sleep(50 * time.Millisecond)
	}
	if got := wait(); got >= wide || got > spreadInterval(100, l.spread(time.Duration(l.rtt.Load())+5*time.Millisecond)) {
		t.Fatalf("1.2 s after the last wide slot: interval %v, want the process's own (< %v)", got, wide)
	}
}

// TestSpreadHeldAtEveryLevel drives the reserve script with spreads that
// narrow in steps, as processes warming up at different times and round
// trips settling do, and counts the worst sliding second of arrivals (each
// call anywhere in [slot, slot + its spread]): never more than the cap.
// With only the widest spread held, a level in between was forgotten
// when the widest one's hold ended: these scenarios gave 202, 203 and 201
// calls in a second at cap 200.
func TestSpreadHeldAtEveryLevel(t *testing.T) {
	type step struct {
		n      int               // reservations
		spread func(i int) int64 // µs reported by the reserving process
	}
	alternate := func(a, b int64) func(int) int64 {
		return func(i int) int64 {
			if i%2 == 0 {
				return a
			}
			return b
		}
	}
	const ms = 1000
	scenarios := map[string][]step{
		"two processes warming up a second apart": {
			{300, alternate(40*ms, 40*ms)}, {190, alternate(20*ms, 34*ms)}, {600, alternate(20*ms, 14*ms)}},
		"a round trip spiking twice": {
			{220, alternate(43*ms, 43*ms)}, {150, alternate(14*ms, 14*ms)}, {40, alternate(30*ms, 30*ms)}, {600, alternate(14*ms, 14*ms)}},
		"a slow descent": {
			{300, func(i int) int64 { return int64(40*ms - 60*i) }}, {600, alternate(14*ms, 14*ms)}},
	}
	for name, steps := range scenarios {
		t.Run(name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			defer rdb.Close()
			l, err := New(rdb, Config{Cap: 200})
			if err != nil {
				t.Fatal(err)
			}
			keys := l.keys(Key{AppID: 1, API: "group_msg_recall"})
			type call struct{ slot, spread int64 }
			var calls []call
			for _, st := range steps {
				for i := range st.n {
					sp := st.spread(i)
					res, err := reserveScript.Run(t.Context(), rdb, keys, 0, int64(1e12), "200", 0, 200, sp, []string{"p1", "p2"}[i%2]).Slice()
					if err != nil || res[0].(int64) != 1 {
						t.Fatalf("reserve: %v %v", res, err)
					}
					next, _ := mr.Get(keys[0]) // the slot granted is the new tat less the interval
					tat, _ := strconv.ParseInt(next, 10, 64)
					calls = append(calls, call{tat - res[2].(int64), sp})
				}
			}
			worst := 0
			for _, c := range calls {
				from := c.slot + c.spread // a window opening as c's latest arrival
				n := 0
				for _, d := range calls {
					if d.slot < from+1000000 && d.slot+d.spread >= from {
						n++
					}
				}
				worst = max(worst, n)
			}
			if worst > 200 {
				t.Fatalf("a sliding second can hold %d calls (cap 200)", worst)
			}
			t.Logf("worst sliding second: %d of 200, %d calls", worst, len(calls))
		})
	}
}
