package limiter

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/redistest"
)

// TestLimiterOnRedisCluster runs the limiter on a real 3-master Redis
// Cluster: reserveScript (KEYS tat, pause) must not fail with CROSSSLOT,
// budgets on different masters stay independent and capped, and a pause is
// shared by every process.
func TestLimiterOnRedisCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	ctx := t.Context()
	admin := cl.Client()

	// Two budgets whose keys live on different masters.
	probe, _ := New(admin, Config{})
	var keys []Key
	var owners []string
	for app := int64(1400000001); len(keys) < 2 && app < 1400000100; app++ {
		k := Key{AppID: app, API: "group_msg_recall"}
		tat, pause := probe.keys(k)[0], probe.keys(k)[1]
		st, err := admin.ClusterKeySlot(ctx, tat).Result()
		if err != nil {
			t.Fatal(err)
		}
		sp, err := admin.ClusterKeySlot(ctx, pause).Result()
		if err != nil {
			t.Fatal(err)
		}
		if st != sp {
			t.Fatalf("%s: tat key %q is in slot %d, pause key %q in %d: the script would fail with CROSSSLOT", k, tat, st, pause, sp)
		}
		m, err := admin.MasterForKey(ctx, tat)
		if err != nil {
			t.Fatal(err)
		}
		if len(owners) == 0 || owners[0] != m.Options().Addr {
			keys = append(keys, k)
			owners = append(owners, m.Options().Addr)
		}
	}
	if len(keys) < 2 {
		t.Fatalf("no two budgets on different masters among 99 apps")
	}
	t.Logf("budgets %s on %s, %s on %s", keys[0], owners[0], keys[1], owners[1])

	// Three processes (one ClusterClient each), four goroutines per budget.
	const capPerSec = 40
	var mu sync.Mutex
	grants := map[Key][]time.Time{}
	wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	var limiters []*Limiter
	for range 3 {
		l, err := New(cl.Client(), Config{Cap: capPerSec})
		if err != nil {
			t.Fatal(err)
		}
		limiters = append(limiters, l)
		for _, k := range keys {
			for range 4 {
				wg.Go(func() {
					for l.Wait(wctx, k) == nil {
						mu.Lock()
						grants[k] = append(grants[k], time.Now())
						mu.Unlock()
					}
				})
			}
		}
	}
	wg.Wait()
	for _, k := range keys {
		if got := maxInWindow(grants[k], time.Second); got > capPerSec {
			t.Errorf("%s: %d grants in one sliding second, cap %d", k, got, capPerSec)
		}
		// 12 waiters against 39 slots/s for 1.5 s: the budget is used.
		if len(grants[k]) < capPerSec/2 {
			t.Errorf("%s: only %d grants in 1.5 s at %d/s", k, len(grants[k]), capPerSec)
		}
		if n, err := admin.Exists(ctx, probe.keys(k)[0]).Result(); err != nil || n != 1 {
			t.Errorf("%s: tat key after grants: exists=%d, %v", k, n, err)
		}
	}

	// A throttle pause set by one process holds the others back on that
	// budget only.
	a, b := limiters[0], limiters[1]
	a.ForApp(keys[0].AppID).Throttled(ctx, keys[0].API, 70050) // a minute
	pttl, err := admin.PTTL(ctx, probe.keys(keys[0])[1]).Result()
	if err != nil || pttl <= 0 {
		t.Fatalf("pause key %q: PTTL %v, %v; want it set", probe.keys(keys[0])[1], pttl, err)
	}
	hctx, hcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = b.Wait(hctx, keys[0])
	hcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("another process's Wait on %s during a pause = %v, want it held back", keys[0], err)
	}
	if err := b.Wait(ctx, keys[1]); err != nil {
		t.Fatalf("Wait on %s (not paused, on %s): %v", keys[1], owners[1], err)
	}
	if err := b.Wait(ctx, Key{AppID: keys[0].AppID, API: "admin_msgwithdraw"}); err != nil {
		t.Fatalf("Wait on another API of app %d: %v", keys[0].AppID, err)
	}
}
