package limiter

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/redisproxy"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestGrantsThroughLatency: with Redis 10 and 20 ms away each way (a round
// trip well past Tolerance), grants keep coming at the rate and no sliding
// second holds more than the cap. Two processes of 16 goroutines each
// reserve a slot, spend one more round trip on their own Redis write (as the
// worker records the send), then wait out the slot: one limiter wait per
// call, and late slots stay rare.
func TestGrantsThroughLatency(t *testing.T) {
	srv := redistest.Start(t)
	for _, d := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond} {
		t.Run(d.String(), func(t *testing.T) {
			p, err := redisproxy.Start(srv.Addr(), d)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			const capPerSec = 100
			k := Key{AppID: int64(d), API: "group_msg_recall"}
			var mu sync.Mutex
			var grants []time.Time
			const run = 3 * time.Second
			t0 := time.Now()
			ctx, cancel := context.WithTimeout(t.Context(), run)
			defer cancel()
			var wg sync.WaitGroup
			var lims []*Limiter
			for range 2 {
				rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), PoolSize: 64})
				defer rdb.Close()
				// A short warm-up: the test measures the steady rate.
				l, err := New(rdb, Config{Cap: capPerSec, WarmUp: 100 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				lims = append(lims, l)
				for range 16 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							r, err := l.Reserve(ctx, k, DefaultLead)
							if err != nil {
								return
							}
							if err := rdb.Incr(ctx, "sends").Err(); err != nil { // the send's record
								return
							}
							if r.Wait(ctx) != nil {
								return
							}
							mu.Lock()
							grants = append(grants, time.Now())
							mu.Unlock()
						}
					}()
				}
			}
			wg.Wait()
			rate := lims[0].Rate(k) // the adaptive margin's ceiling
			if got := maxInWindow(grants, time.Second); got > capPerSec {
				t.Fatalf("%d grants in one sliding second, cap %d", got, capPerSec)
			}
			// Steady state: after the first second (dialling through the
			// proxy and the first round trips), grants come at the rate.
			var steady int
			for _, g := range grants {
				if g.Sub(t0) >= time.Second {
					steady++
				}
			}
			if share := float64(steady) / (rate * (run - time.Second).Seconds()); share < 0.9 {
				t.Fatalf("%d grants in the last %v at %v/s: %.2f of the rate, want ≥ 0.9 (stalled?)", steady, run-time.Second, rate, share)
			}
			late := lims[0].Late() + lims[1].Late()
			if float64(late) > 0.05*float64(len(grants)) {
				t.Errorf("%d slots given up as late for %d grants", late, len(grants))
			}
			t.Logf("one way %v: %d grants (%.1f/s), max in 1 s %d, late %d", d, len(grants), float64(len(grants))/run.Seconds(), maxInWindow(grants, time.Second), late)
		})
	}
}

// TestLateCallerReservesAgain: a caller that comes back well after its slot
// is given a new slot by Reservation.Wait, counted in Late, and the
// grants still respect the interval.
func TestLateCallerReservesAgain(t *testing.T) {
	srv := redistest.Start(t)
	l, err := New(srv.Client(), Config{Cap: 10, Margin: -1}) // 100 ms slots
	if err != nil {
		t.Fatal(err)
	}
	k := Key{AppID: 1, API: "x"}
	r, err := l.Reserve(t.Context(), k, DefaultLead)
	if err != nil {
		t.Fatal(err)
	}
	first := r.Slot()
	time.Sleep(50 * time.Millisecond) // far past Tolerance
	if err := r.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if l.Late() != 1 {
		t.Fatalf("Late() = %d, want 1", l.Late())
	}
	// Local slot times carry the reply's own delay: allow a tenth.
	if gap := r.Slot().Sub(first); float64(gap)/float64(100*time.Millisecond) < 0.9 {
		t.Fatalf("new slot %v after the given-up one, want about one interval (100ms) or more", gap)
	}
}

// TestCapStoredWithBudget: the first process stores its cap with the
// budget; a second process with another cap (or unlimited) is refused at
// start and at every Wait, naming both values; SetCap changes the stored
// cap on purpose, after which the process with the new cap starts and the
// old one is refused.
func TestCapStoredWithBudget(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	apis := []string{"group_msg_recall", "admin_msgwithdraw"}
	a, err := New(srv.Client(), Config{Cap: 200, CapOf: map[string]int{"admin_msgwithdraw": 100}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CheckCaps(ctx, 7, apis); err != nil {
		t.Fatal(err)
	}
	if v, _ := StoredCap(ctx, srv.Client(), "", Key{AppID: 7, API: "admin_msgwithdraw"}); v != "100" {
		t.Fatalf("stored cap %q, want 100", v)
	}
	same, _ := New(srv.Client(), Config{Cap: 200, CapOf: map[string]int{"admin_msgwithdraw": 100}})
	if err := same.CheckCaps(ctx, 7, apis); err != nil {
		t.Fatalf("a process with the same caps: %v", err)
	}
	for name, cfg := range map[string]Config{
		"another cap": {Cap: 250, CapOf: map[string]int{"admin_msgwithdraw": 100}},
		"unlimited":   {Cap: 200, CapOf: map[string]int{"admin_msgwithdraw": Unlimited}},
	} {
		b, err := New(srv.Client(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = b.CheckCaps(ctx, 7, apis)
		var m *CapMismatchError
		if !errors.As(err, &m) {
			t.Fatalf("%s: CheckCaps = %v, want a *CapMismatchError", name, err)
		}
		if m.Key.AppID != 7 || m.Stored == m.Ours || m.Stored == "" {
			t.Fatalf("%s: mismatch %+v", name, m)
		}
		if name == "unlimited" && (m.Key.API != "admin_msgwithdraw" || m.Stored != "100" || m.Ours != "unlimited") {
			t.Fatalf("%s: mismatch %+v, want admin_msgwithdraw stored 100, ours unlimited", name, m)
		}
	}
	// A process that skipped the check is refused at its first Wait.
	b, _ := New(srv.Client(), Config{Cap: 250})
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var m *CapMismatchError
	if err := b.Wait(wctx, Key{AppID: 7, API: "group_msg_recall"}); !errors.As(err, &m) || m.Stored != "200" || m.Ours != "250" {
		t.Fatalf("Wait with another cap = %v, want a *CapMismatchError (stored 200, ours 250)", err)
	}

	// The operator changes the cap: now the new cap starts, the old is refused.
	prev, err := SetCap(ctx, srv.Client(), "", Key{AppID: 7, API: "group_msg_recall"}, 250)
	if err != nil || prev != "200" {
		t.Fatalf("SetCap = %q, %v; want previous 200", prev, err)
	}
	if err := b.CheckCaps(ctx, 7, apis[:1]); err != nil {
		t.Fatalf("after set-cap 250: %v", err)
	}
	if err := b.Wait(wctx, Key{AppID: 7, API: "group_msg_recall"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CheckCaps(ctx, 7, apis); !errors.As(err, &m) {
		t.Fatalf("the old cap after set-cap: %v, want refused", err)
	}
	if _, err := SetCap(ctx, srv.Client(), "", Key{AppID: 7, API: "x"}, 0); err == nil {
		t.Fatal("SetCap accepted 0")
	}
}

func TestParseCap(t *testing.T) {
	for in, want := range map[string]int{"200": 200, " 1 ": 1, "unlimited": Unlimited, "Unlimited": Unlimited} {
		if got, err := ParseCap(in); err != nil || got != want {
			t.Errorf("ParseCap(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-1", "", "lots", "1.5"} {
		if _, err := ParseCap(in); err == nil {
			t.Errorf("ParseCap(%q) accepted", in)
		}
	}
}
