package worker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redisproxy"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/redis/go-redis/v9"
)

// TestSendPathThroughRedisLatency: handlers whose job store and limiter
// reach Redis 10 ms away each way (a 20 ms round trip, past the limiter's
// 8 ms tolerance) recall every message, never over the cap, and each call
// costs one limiter wait: the send is recorded during the slot's lead, and
// no grant expires while it is.
func TestSendPathThroughRedisLatency(t *testing.T) {
	const capPerSec = 40
	env := imtest.Start(t, emulator.Config{Rate: capPerSec, Seed: 3})
	srv := redistest.Start(t)
	p, err := redisproxy.Start(srv.Addr(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), PoolSize: 128})
	defer rdb.Close()
	var grants atomic.Int64
	lim, err := limiter.New(rdb, limiter.Config{Cap: capPerSec, Observer: func(k limiter.Key, _ time.Duration) {
		if k.API == tim.GroupMsgRecall.Name() {
			grants.Add(1)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := tim.New(tim.Config{SDKAppID: imtest.AppID, Admin: imtest.Admin, SecretKey: imtest.Secret, BaseURL: env.URL, Gate: lim.ForApp(imtest.AppID)})
	if err != nil {
		t.Fatal(err)
	}
	store := jobs.NewStore(rdb, "")
	h := New(TIM{C: client}, store, Config{BaseBackoff: time.Millisecond, Limiter: lim.ForApp(imtest.AppID)})
	ctx := t.Context()
	job, err := store.Create(ctx, jobs.Spec{Kind: "test", Queue: "purge", AppID: imtest.AppID, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{env: env, store: store, h: h, job: job}

	// 4 groups × 200 messages: 80 tasks of 10 seqs, about 2 s at the cap.
	env.Accounts(t, "alice", "bob")
	type task struct {
		target jobs.Target
		seqs   []int64
	}
	var work []task
	for i := range 4 {
		g := env.Group(t, "Public", fmt.Sprintf("@TGS#lat%d", i), "alice", "bob")
		seqs := env.SendGroup(t, g, "", 200, "alice")
		b.planGroup(t, jobs.Target{GroupID: g}, seqs)
		for j := 0; j < len(seqs); j += 10 {
			work = append(work, task{jobs.Target{GroupID: g}, seqs[j:min(j+10, len(seqs))]})
		}
	}
	b.close(t)
	env.Emu.ResetStats()

	var wg sync.WaitGroup
	errs := make(chan error, len(work))
	for _, w := range work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.runGroup(t, w.target, w.seqs); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("handler: %v", err)
	}
	j := b.counts(t)
	if j.Counts.Recalled != 800 || j.Counts.Pending != 0 {
		t.Fatalf("counts %+v, want all 800 recalled", j.Counts)
	}
	st := env.Emu.Stats()[tim.GroupMsgRecall.Name()]
	if st.Throttled != 0 || st.Max1s > capPerSec {
		t.Fatalf("emulator: max_1s %d, throttled %d; want ≤ %d and 0", st.Max1s, st.Throttled, capPerSec)
	}
	// One grant per call: no call waited twice, none went without a wait.
	if n := grants.Load(); n != st.Accepted {
		t.Fatalf("%d limiter grants for %d calls, want one each", n, st.Accepted)
	}
	if late := lim.Late(); float64(late) > 0.1*float64(st.Accepted) {
		t.Fatalf("%d slots given up as late for %d calls", late, st.Accepted)
	}
	t.Logf("%d calls, max_1s %d, %d late slots", st.Accepted, st.Max1s, lim.Late())
}

// TestStoppedWhileReservingCountsNoSend: with the real limiter, a worker
// stopped while its reserved slot is still far off (a backlog) has
// recorded no send: the send is recorded only within the slot's lead.
func TestStoppedWhileReservingCountsNoSend(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{MaxAttempts: 5})
	b.env.Accounts(t, "alice", "bob")
	g := b.env.Group(t, "Public", "@TGS#reserved", "alice", "bob")
	seqs := b.env.SendGroup(t, g, "", 5, "alice")
	group := jobs.Target{GroupID: g}
	b.planGroup(t, group, seqs)
	b.close(t)

	mr, lrdb := redistest.Mini(t)
	lim, err := limiter.New(lrdb, limiter.Config{Cap: 1}) // a slot every ~1 s
	if err != nil {
		t.Fatal(err)
	}
	k := limiter.Key{AppID: imtest.AppID, API: tim.GroupMsgRecall.Name()}
	if err := lim.Wait(t.Context(), k); err != nil { // the backlog: the next slot is ~1 s off
		t.Fatal(err)
	}
	tatKey := "imrecall:rl:{" + k.String() + "}:tat"
	before, _ := mr.Get(tatKey)
	client, err := tim.New(tim.Config{SDKAppID: imtest.AppID, Admin: imtest.Admin, SecretKey: imtest.Secret, BaseURL: b.env.URL, Gate: lim.ForApp(imtest.AppID)})
	if err != nil {
		t.Fatal(err)
	}
	h := New(TIM{C: client}, b.store, Config{MaxAttempts: 5, BaseBackoff: time.Millisecond, Limiter: lim.ForApp(imtest.AppID)})
	task, _ := tasks.NewGroupRecallTask(tasks.GroupRecall{JobID: b.job.ID, AppID: imtest.AppID, GroupID: g, Seqs: seqs}, tasks.QueuePurge, 0)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.HandleGroupRecall(ctx, task) }()
	// Stop once the handler has reserved its slot (the budget moved on).
	for {
		if now, _ := mr.Get(tatKey); now != before {
			break
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if err := <-done; err == nil {
		t.Fatal("a handler stopped while reserving returned nil")
	}
	if n := b.env.Emu.Stats()[tim.GroupMsgRecall.Name()].Accepted; n != 0 {
		t.Fatalf("%d calls reached the emulator", n)
	}
	peek, err := b.store.PeekGroup(t.Context(), b.job.ID, group, seqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range peek.States {
		if st != 0 {
			t.Errorf("seq %d: state %d after a stop while reserving, want 0 (no send)", seqs[i], st)
		}
	}
}
