package limiter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/tim"
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
	// Calls written on time: 200 a second and 10 ms of Slack.
	if r := l.Rate(Key{API: "group_msg_recall"}); r < 198.0 || r > 198.1 {
		t.Fatalf("default rate = %v, want 200 ÷ 1.010 s", r)
	}
	fixed, _ := New(rdb, Config{Margin: 0.025})
	if r := fixed.Rate(Key{API: "group_msg_recall"}); r != 195 {
		t.Fatalf("fixed rate = %v, want 195 (200 less 2.5%%)", r)
	}
}

// reserve has l reserve a slot of k through the script, without sleeping
// until it, and returns what the bounds hold of it.
func reserve(t *testing.T, l *Limiter, k Key) boundEntry {
	t.Helper()
	g, err := l.book(t.Context(), k, 0)
	if err != nil {
		t.Fatal(err)
	}
	return g.entry
}

// TestThrottleWidensTheMargin: a throttle code widens the bound of every
// call granted after it, by any process sharing the budget (10 ms more,
// then double, once per pause however many calls in flight are refused); a
// UserSig throttle (70050) or a fixed margin does not, and the backoff
// lapses.
func TestThrottleWidensTheMargin(t *testing.T) {
	mr := miniredis.RunT(t)
	newLimiter := func(cfg Config) *Limiter { return limiterOn(t, mr, cfg) }
	cfg := Config{Cap: 100, WarmUp: time.Nanosecond}
	a, b := newLimiter(cfg), newLimiter(cfg)
	k := Key{AppID: 1, API: "group_msg_recall"}
	base := "imrecall:rl:{" + k.String() + "}"
	// check has b reserve a slot and compares its bound with the slot +
	// Tolerance + Slack + backoff + the clock's widening to the horizon +
	// b's round trip.
	check := func(what string, backoff time.Duration) {
		t.Helper()
		mr.Del(base + ":pause") // skip the throttle's pause
		a.mu.Lock()
		clear(a.paused)
		a.mu.Unlock()
		e := reserve(t, b, k)
		least := (b.cfg.Tolerance + b.cfg.Slack + backoff + time.Duration(2*clockDrift*float64(b.cfg.Horizon))).Microseconds()
		if got := e.bound - e.slot; got < least || got > least+20000 {
			t.Fatalf("%s: bound %d µs after the slot, want Tolerance + Slack + backoff + the clock's widening (%d µs) + a round trip", what, got, least)
		}
	}
	reserve(t, b, k) // b's first reservation warms up (20 ms more)
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
// spell, assume their calls may arrive WarmUpSpread later (its HTTP client
// dials); then its own spread again.
func TestWarmUp(t *testing.T) {
	mr := miniredis.RunT(t)
	l := limiterOn(t, mr, Config{Cap: 100, WarmUp: 300 * time.Millisecond})
	k := Key{AppID: 1, API: "group_msg_recall"}
	own := (l.cfg.Tolerance + l.cfg.Slack).Microseconds()
	warm := own + WarmUpSpread.Microseconds()
	if e := reserve(t, l, k); e.bound-e.slot < warm {
		t.Fatalf("first reservation: bound %d µs after the slot, want at least %d (warming up)", e.bound-e.slot, warm)
	}
	time.Sleep(400 * time.Millisecond)
	if e := reserve(t, l, k); e.bound-e.slot >= warm {
		t.Fatalf("after the warm-up: bound %d µs after the slot, want under %d", e.bound-e.slot, warm)
	}
	l.lastBook.Store(time.Now().Add(-2 * idleSpell).UnixNano()) // an idle spell
	if e := reserve(t, l, k); e.bound-e.slot < warm {
		t.Fatalf("after an idle spell: bound %d µs after the slot, want at least %d (warming up again)", e.bound-e.slot, warm)
	}
}

// TestSentLowersTheBound: a call reported written lowers its slot's bound
// in Redis (with the process's next reservation) to the write's lateness +
// the round trip + Slack; a second report (the transport wrote the request
// again) replaces it, raising it; a slot given up is bounded at 0 (no call
// will arrive); a slot never reported keeps its worst case.
func TestSentLowersTheBound(t *testing.T) {
	mr := miniredis.RunT(t)
	l := limiterOn(t, mr, Config{Cap: 100, WarmUp: time.Nanosecond})
	k := Key{AppID: 1, API: "group_msg_recall"}
	bounds := l.keys(k)[5]
	score := func(e boundEntry) int64 {
		t.Helper()
		set, _ := mr.SortedSet(bounds)
		f, ok := set[strconv.FormatInt(e.slot, 10)]
		if !ok {
			t.Fatalf("slot %d not in the bounds %v", e.slot, set)
		}
		return int64(f)
	}
	r, err := l.Reserve(t.Context(), k, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	worst := r.entry.bound
	r.Sent(r.Slot().Add(2 * time.Millisecond)) // written 2 ms after its slot
	if got := score(r.entry); got != worst {
		t.Fatalf("before the next reservation: bound %d, want the worst case %d (reports travel with reservations)", got, worst)
	}
	next := reserve(t, l, k)
	got := score(r.entry)
	lowest := r.entry.slot + (l.cfg.Slack + 2*time.Millisecond).Microseconds()
	if got >= worst || got < lowest || got > lowest+int64(r.unsure/time.Microsecond)+20000 {
		t.Fatalf("after the report: bound %d µs after the slot, want Slack + 2 ms + a round trip (%d µs at least), under the worst case %d", got-r.entry.slot, lowest-r.entry.slot, worst-r.entry.slot)
	}
	r.Sent(r.Slot().Add(50 * time.Millisecond)) // written again, later
	reserve(t, l, k)
	if got, least := score(r.entry), lowest+48000; got < least {
		t.Fatalf("after a second write 50 ms after the slot: bound %d µs after the slot, want at least %d", got-r.entry.slot, least-r.entry.slot)
	}
	l.giveUp(k, next)
	reserve(t, l, k)
	if set, _ := mr.SortedSet(bounds); set[strconv.FormatInt(next.slot, 10)] != 0 {
		t.Fatalf("a slot given up still bounds a call: %v", set)
	}
	unreported := reserve(t, l, k)
	reserve(t, l, k)
	if got := score(unreported); got != unreported.bound {
		t.Fatalf("a slot never reported: bound %d, want its worst case %d", got, unreported.bound)
	}
}

// TestNoSecondOverTheCap drives the reserve script as several processes
// would, with spreads that change (warm-ups, round trips, backoff) and
// calls reported written sooner or later than assumed, given up, or never
// reported, and reports arriving late; then counts, for every sliding
// second, the calls that may arrive in it (slot ≤ its end, final bound
// after its start): never more than the cap. It also checks what the
// reports buy: calls reported 1 ms late run at nearly the cap, and calls
// never reported at the cap less their worst case.
func TestNoSecondOverTheCap(t *testing.T) {
	const capPerSec = 200
	type call struct {
		slot, bound int64
		void        bool
	}
	run := func(t *testing.T, n int, spread func(i int) int64, outcome func(i int, slot, bound int64) (reported int64, ok bool), delay int) []call {
		_, rdb := redistest.Mini(t)
		l, err := New(rdb, Config{Cap: capPerSec})
		if err != nil {
			t.Fatal(err)
		}
		keys := l.keys(Key{AppID: 1, API: "group_msg_recall"})
		var calls []call
		var pending []string // reports not yet sent, oldest first
		for i := range n {
			var reports []string
			if len(pending) > delay { // reports reach Redis `delay` reservations late
				reports, pending = pending[:len(pending)-delay], pending[len(pending)-delay:]
			}
			res, err := reserveScript.Run(t.Context(), rdb, keys, 0, int64(1e12), "200", 0, capPerSec, spread(i), strings.Join(reports, ",")).Slice()
			if err != nil || res[0].(int64) != 1 {
				t.Fatalf("reserve: %v %v", res, err)
			}
			c := call{slot: res[3].(int64), bound: res[4].(int64)}
			if b, ok := outcome(i, c.slot, c.bound); ok {
				pending = append(pending, fmt.Sprintf("%d:%d", c.slot, b))
				c.bound, c.void = b, b == 0
			}
			calls = append(calls, c)
		}
		worst := 0
		for _, end := range calls { // sliding seconds ending at a slot hold the most
			in := 0
			for _, c := range calls {
				if !c.void && c.slot <= end.slot && c.bound > end.slot-1000000 {
					in++
				}
			}
			worst = max(worst, in)
		}
		if worst > capPerSec {
			t.Fatalf("a sliding second can hold %d calls (cap %d)", worst, capPerSec)
		}
		t.Logf("worst sliding second: %d of %d, %d calls", worst, capPerSec, len(calls))
		return calls
	}
	// spacing is the mean interval of the calls after the first cap, over
	// whole runs of cap (the slots come a base interval apart, then wait
	// for the bounds).
	spacing := func(calls []call) float64 {
		runs := (len(calls) - 1 - capPerSec) / capPerSec
		first, last := calls[capPerSec], calls[capPerSec+runs*capPerSec]
		return float64(last.slot-first.slot) / float64(runs*capPerSec)
	}
	const ms = 1000
	rng := rand.New(rand.NewPCG(1, 2))
	t.Run("mixed", func(t *testing.T) {
		run(t, 3000, func(i int) int64 {
			if i%7 == 0 || i < 300 {
				return 40 * ms // warming up, a far Redis
			}
			return int64(14*ms + rng.IntN(5*ms))
		}, func(i int, slot, bound int64) (int64, bool) {
			switch r := rng.IntN(100); {
			case r < 70: // written on time, or nearly
				return slot + int64(11*ms+rng.IntN(3*ms)), true
			case r < 80: // written later than assumed (a dial): the report raises the bound
				return bound + int64(rng.IntN(30*ms)), true
			case r < 85:
				return 0, true // given up
			default:
				return 0, false // never reported
			}
		}, 50)
	})
	t.Run("reported 1 ms late", func(t *testing.T) {
		calls := run(t, 2000, func(int) int64 { return 20 * ms }, func(_ int, slot, _ int64) (int64, bool) { return slot + ms, true }, 20)
		if got, want := spacing(calls), float64(1000000+ms)/capPerSec*1.002; got > want {
			t.Fatalf("mean interval %.1f µs, want about (1 s + 1 ms)/cap (%.1f at most)", got, want)
		}
	})
	t.Run("never reported", func(t *testing.T) {
		calls := run(t, 2000, func(int) int64 { return 20 * ms }, func(int, int64, int64) (int64, bool) { return 0, false }, 0)
		if got, least := spacing(calls), float64(1000000+20*ms)/capPerSec; got < least {
			t.Fatalf("mean interval %.1f µs, want at least (1 s + 20 ms)/cap (%.1f)", got, least)
		}
	})
}

// TestOlderProcessRefused: while a process of an older imrecall shares the
// budget (its spreads key, which it writes at every reservation), this one
// grants nothing: an *OlderProcessError that holds calls back as a
// throttle; once the key has lapsed (the older process stopped), it grants.
func TestOlderProcessRefused(t *testing.T) {
	mr := miniredis.RunT(t)
	l := limiterOn(t, mr, Config{Cap: 100})
	k := Key{AppID: 1, API: "group_msg_recall"}
	spread := l.keys(k)[6]
	mr.HSet(spread, "0123456789abcdef", "14000:1796213744545034")
	mr.SetTTL(spread, 5*time.Second)
	err := l.Wait(t.Context(), k)
	var older *OlderProcessError
	if !errors.As(err, &older) || !errors.Is(err, tim.ErrThrottled) || older.Key != k {
		t.Fatalf("Wait beside an older process: %v, want an *OlderProcessError that is tim.ErrThrottled", err)
	}
	if set, _ := mr.SortedSet(l.keys(k)[5]); len(set) != 0 {
		t.Fatalf("a slot was booked beside an older process: %v", set)
	}
	mr.FastForward(6 * time.Second) // the older process stopped: its key lapsed
	if err := l.Wait(t.Context(), k); err != nil {
		t.Fatalf("Wait after the older process stopped: %v", err)
	}
}

// TestSentPlacesTheWriteOnRedisClock: on a real redis-server, a call's
// report bounds its write on Redis's clock from above (never earlier than
// a TIME read before the write) and closely (within a millisecond of a
// TIME read after it), through the bounds of Redis's clock the process
// learnt from its reservations.
func TestSentPlacesTheWriteOnRedisClock(t *testing.T) {
	srv := redistest.Start(t)
	l, err := New(srv.Client(), Config{Cap: 1000, WarmUp: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	watch := srv.Client()
	redisNow := func() int64 {
		t.Helper()
		now, err := watch.Time(t.Context()).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now.UnixMicro()
	}
	k := Key{AppID: 1, API: "group_msg_recall"}
	slack := l.cfg.Slack.Microseconds()
	for i := range 300 {
		r, err := l.Reserve(t.Context(), k, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		before := redisNow()
		r.Sent(time.Now())
		after := redisNow()
		reports := l.takeReports(k)
		var slot, bound int64
		if _, err := fmt.Sscanf(reports, "%d:%d", &slot, &bound); err != nil || slot != r.entry.slot {
			t.Fatalf("reports %q: want this slot's (%d)", reports, r.entry.slot)
		}
		written := bound - slack - r.entry.backoff - 1
		if written < before {
			t.Fatalf("call %d: write placed at %d on Redis's clock, %d µs before a TIME read before it", i, written, before-written)
		}
		if i >= 50 && written > after+1000 {
			t.Fatalf("call %d: write placed %d µs after a TIME read after it, want within 1 ms", i, written-after)
		}
	}
}

// TestIdleClockKeepsTheSpread: after an hour without a reply, the bounds of
// Redis's clock have widened by the drift allowed (7.2 s); the bound sent
// with the next reservation still holds at most the usual round trip for
// them, not the widened bounds (the reply tightens them again).
func TestIdleClockKeepsTheSpread(t *testing.T) {
	mr := miniredis.RunT(t)
	l := limiterOn(t, mr, Config{Cap: 100, WarmUp: time.Nanosecond})
	k := Key{AppID: 1, API: "group_msg_recall"}
	reserve(t, l, k)
	c := l.clockOf(k)
	c.mu.Lock()
	c.hiAt -= 3.6e9 // µs: its last reply an hour ago
	c.loAt -= 3.6e9
	c.mu.Unlock()
	if u := c.unsure(); u < 7*time.Second {
		t.Fatalf("uncertainty after an hour: %v, want the drift's 7.2 s", u)
	}
	e := reserve(t, l, k)
	most := l.cfg.Tolerance + l.cfg.Slack + time.Duration(l.rtt.Load()) + 2*time.Millisecond // + the widening to the horizon, 1.5 ms
	if spread := time.Duration(e.bound-e.slot) * time.Microsecond; spread > most {
		t.Fatalf("bound %v after the slot, want at most %v", spread, most)
	}
	if u := c.unsure(); u > 5*time.Millisecond {
		t.Fatalf("uncertainty after the reply: %v, want its round trip", u)
	}
}
