package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// live is a real worker on a private redis-server: an asynq server running
// the handler with its ErrorHandler, an Unparker, and a client to queue
// with. deliveries counts the tasks delivered per job.
type live struct {
	env    *imtest.Env
	store  *jobs.Store
	h      *Handler
	client *asynq.Client
	insp   *asynq.Inspector

	mu         sync.Mutex
	deliveries map[string]int
}

func startLive(t *testing.T, ecfg emulator.Config, concurrency int) *live {
	t.Helper()
	srv := redistest.Start(t)
	if ecfg.RateOf == nil {
		ecfg.RateOf = map[string]int{}
	}
	ecfg.RateOf[tim.GroupMsgRecall.Name()] = 0 // no gate in these tests
	env := imtest.Start(t, ecfg)
	store := jobs.NewStore(srv.Client(), "")
	l := &live{env: env, store: store, deliveries: map[string]int{}}
	l.h = New(TIM{C: env.Client}, store, Config{BaseBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	opt := asynq.RedisClientOpt{Addr: srv.Addr()}
	l.client = asynq.NewClient(opt)
	l.insp = asynq.NewInspector(opt)
	mux := asynq.NewServeMux()
	mux.Use(func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
			if p, err := tasks.DecodeGroupRecall(task); err == nil {
				l.mu.Lock()
				l.deliveries[p.JobID]++
				l.mu.Unlock()
			}
			return next.ProcessTask(ctx, task)
		})
	})
	l.h.Register(mux)
	as := asynq.NewServer(opt, asynq.Config{
		Concurrency: concurrency, Queues: tasks.Queues, StrictPriority: true,
		IsFailure: IsFailure, RetryDelayFunc: RetryDelay, ErrorHandler: asynq.ErrorHandlerFunc(l.h.HandleError),
		DelayedTaskCheckInterval: 100 * time.Millisecond, TaskCheckInterval: 20 * time.Millisecond,
		LogLevel: asynq.FatalLevel,
	})
	if err := as.Start(mux); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&Unparker{Store: store, Queue: l.client, Interval: 50 * time.Millisecond}).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		as.Shutdown()
		l.client.Close()
		l.insp.Close()
	})
	return l
}

// job creates a job and plans and queues every message of groups.
func (l *live) job(t *testing.T, groups ...string) jobs.Job {
	t.Helper()
	return l.newJob(t, jobs.Spec{Kind: "test", Queue: tasks.QueuePurge, AppID: imtest.AppID, RequestedBy: "t"}, nil, groups...)
}

// newJob creates a job of spec, runs first (unless nil) before planning,
// and plans and queues every message of groups.
func (l *live) newJob(t *testing.T, spec jobs.Spec, first func(ctx context.Context, job jobs.Job) error, groups ...string) jobs.Job {
	t.Helper()
	j, _, err := producer.NewJob(t.Context(), l.store, l.client, spec,
		func(ctx context.Context, job jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
			if first != nil {
				if err := first(ctx, job); err != nil {
					return err
				}
			}
			for _, g := range groups {
				var seqs []int64
				for _, m := range l.env.Emu.GroupMessages(g, "") {
					seqs = append(seqs, m.Seq)
				}
				if err := b.AddGroup(ctx, jobs.Target{GroupID: g}, seqs...); err != nil {
					return err
				}
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (l *live) delivered(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deliveries[id]
}

// waitFor polls cond until it holds or a minute passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *live) get(t *testing.T, id string) jobs.Job {
	t.Helper()
	j, err := l.store.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// check reads a job at rest and proves its counters against its states.
func (l *live) check(t *testing.T, id string) jobs.Job {
	t.Helper()
	j := l.get(t, id)
	rc, err := l.store.Recount(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Matches(j.Counts); err != nil {
		t.Fatal(err)
	}
	return j
}

// queued is how many tasks wait in or run from the purge queue.
func (l *live) queued(t *testing.T) int {
	t.Helper()
	qi, err := l.insp.GetQueueInfo(tasks.QueuePurge)
	if err != nil {
		return 0 // the queue does not exist yet
	}
	return qi.Pending + qi.Active + qi.Scheduled + qi.Retry
}

func (l *live) seed(t *testing.T, prefix string, groups, per int) []string {
	t.Helper()
	l.env.Accounts(t, "alice")
	var out []string
	for i := range groups {
		g := l.env.Group(t, "Public", fmt.Sprintf("@TGS#%s%d", prefix, i), "alice")
		l.env.SendGroup(t, g, "", per, "alice")
		out = append(out, g)
	}
	return out
}

func (l *live) allRecalled(t *testing.T, groups ...string) {
	t.Helper()
	for _, g := range groups {
		for _, m := range l.env.Emu.GroupMessages(g, "") {
			if !m.Recalled {
				t.Fatalf("group %s seq %d not recalled", g, m.Seq)
			}
		}
	}
}

// TestPausedJobDoesNotCycle: a paused job's tasks are each delivered once
// and parked; another job on the same queue runs meanwhile; resuming
// queues the parked tasks again and the job finishes.
func TestPausedJobDoesNotCycle(t *testing.T) {
	l := startLive(t, emulator.Config{}, 4)
	big := l.seed(t, "big", 5, 100)    // 50 tasks
	small := l.seed(t, "small", 1, 50) // 5 tasks

	// Pause the big job before its tasks run: create it paused by pausing
	// right after creation, before queueing (its plan func pauses first).
	bigJob := l.newJob(t, jobs.Spec{Kind: "test", Queue: tasks.QueuePurge, AppID: imtest.AppID, RequestedBy: "t"},
		func(ctx context.Context, job jobs.Job) error { return l.store.SetPaused(ctx, job.ID, "t", "", true) }, big...)
	smallJob := l.job(t, small...)
	waitFor(t, "the small job to finish", func() bool { return l.get(t, smallJob.ID).Finished() })
	waitFor(t, "every task of the paused job parked", func() bool {
		n, _ := l.store.ParkedCount(t.Context(), bigJob.ID)
		return n == 50 && l.queued(t) == 0
	})
	if d := l.delivered(bigJob.ID); d != 50 {
		t.Fatalf("paused job: %d deliveries for 50 tasks, want each delivered once", d)
	}
	if j := l.check(t, bigJob.ID); j.Counts.Recalled != 0 || j.Counts.Pending != 500 || j.Status != jobs.StatusRunning {
		t.Fatalf("paused job = %+v", j.Counts)
	}
	// Still parked, nothing cycles: the queue stays empty and no delivery
	// happens while the small job's last outcome settles.
	if l.queued(t) != 0 || l.delivered(bigJob.ID) != 50 {
		t.Fatalf("after parking: queued %d, deliveries %d", l.queued(t), l.delivered(bigJob.ID))
	}
	l.allRecalled(t, small...)

	if err := l.store.SetPaused(t.Context(), bigJob.ID, "t", "", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the resumed job to finish", func() bool { return l.get(t, bigJob.ID).Finished() })
	j := l.check(t, bigJob.ID)
	if j.Status != jobs.StatusDone || j.Counts.Recalled != 500 || j.Counts.DeadLettered != 0 {
		t.Fatalf("resumed job = %s %+v", j.Status, j.Counts)
	}
	if d := l.delivered(bigJob.ID); d != 100 {
		t.Fatalf("deliveries = %d, want 100 (50 parked + 50 after resume)", d)
	}
	l.allRecalled(t, big...)
}
