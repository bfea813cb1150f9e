package producer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// settleQueued plays the workers: it takes every queued recall task off the
// queues and records its messages recalled, and returns how many messages
// it settled.
func settleQueued(t *testing.T, store *jobs.Store, insp *asynq.Inspector) int {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	n := 0
	for _, q := range tasks.AllQueues() {
		infos, err := insp.ListPendingTasks(q, asynq.PageSize(1000))
		if err != nil {
			continue // a queue never used
		}
		for _, info := range infos {
			task := asynq.NewTask(info.Type, info.Payload)
			var target jobs.Target
			var items []string
			var jobID string
			switch info.Type {
			case tasks.TypeGroupRecall:
				p, err := tasks.DecodeGroupRecall(task)
				if err != nil {
					t.Fatal(err)
				}
				target, jobID = jobs.Target{GroupID: p.GroupID}, p.JobID
				for _, s := range p.Seqs {
					items = append(items, strconv.FormatInt(s, 10))
				}
			case tasks.TypeC2CWithdraw:
				p, err := tasks.DecodeC2CWithdraw(task)
				if err != nil {
					t.Fatal(err)
				}
				target, jobID, items = jobs.Target{From: p.From, To: p.To}, p.JobID, []string{p.MsgKey}
			default:
				continue
			}
			out := make([]jobs.Outcome, len(items))
			for i, it := range items {
				out[i] = jobs.Outcome{Item: it, Recalled: true, Attempts: 1}
			}
			if _, err := store.Record(ctx, jobID, target, out); err != nil {
				t.Fatal(err)
			}
			if err := insp.DeleteTask(q, info.ID); err != nil {
				t.Fatal(err)
			}
			n += len(items)
		}
	}
	return n
}

// planWhileSettling runs NewJob of spec with plan in a goroutine while the
// test plays the workers (settleQueued every 20 ms), and returns the job's
// id, its batcher, the most messages it had pending at a sample, and how
// many messages were settled. It fails if planning fails or lasts over two
// minutes (a planner waiting for messages that are in no queue).
func planWhileSettling(t *testing.T, store *jobs.Store, client Enqueuer, insp *asynq.Inspector, spec jobs.Spec, plan func(ctx context.Context, b *Batcher) error) (string, *Batcher, int64, int) {
	t.Helper()
	created, planned := make(chan string, 1), make(chan error, 1)
	var b *Batcher
	go func() {
		var err error
		_, b, err = NewJob(t.Context(), store, client, spec, func(ctx context.Context, j jobs.Job, _ Enqueuer, b *Batcher) error {
			created <- j.ID
			return plan(ctx, b)
		})
		planned <- err
	}()
	jobID := <-created
	maxPending, settled := settleUntil(t, store, insp, jobID, planned)
	return jobID, b, maxPending, settled
}

// settleUntil plays the workers (settleQueued every 20 ms) until done
// yields (failing on an error, or after two minutes: a planner waiting for
// messages that are in no queue), and returns the most messages jobID had
// pending at a sample and how many messages were settled.
func settleUntil(t *testing.T, store *jobs.Store, insp *asynq.Inspector, jobID string, done <-chan error) (int64, int) {
	t.Helper()
	var maxPending int64
	settled := 0
	deadline := time.Now().Add(2 * time.Minute)
	for finished := false; !finished; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("never ended: the planner waits for messages that are in no queue")
		}
		j, err := store.Get(t.Context(), jobID)
		if err != nil {
			t.Fatal(err)
		}
		maxPending = max(maxPending, j.Counts.Pending)
		settled += settleQueued(t, store, insp)
	}
	return maxPending, settled + settleQueued(t, store, insp)
}

// TestBacklogBoundsQueuedWork plans 3,000 group messages and 300 one-to-one
// ones into a job whose backlog is 100, while a slow "worker" settles what
// is queued: the job never has more than 100 messages planned and not
// settled, the planner waits for the worker, and in the end every message
// was queued once and settled.
func TestBacklogBoundsQueuedWork(t *testing.T) {
	store, client, insp := onMiniredis(t)
	ctx := t.Context()
	const bound = 100
	spec := jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "t", Backlog: bound}
	jobID, b, maxPending, settled := planWhileSettling(t, store, client, insp, spec, func(ctx context.Context, b *Batcher) error {
		for g := range 30 {
			for s := range 100 {
				if err := b.AddGroup(ctx, jobs.Target{GroupID: fmt.Sprintf("@TGS#g%02d", g)}, int64(s+1)); err != nil {
					return err
				}
			}
			for k := range 10 {
				if err := b.AddC2C(ctx, jobs.Target{From: "spammer", To: fmt.Sprintf("u%02d", g)}, fmt.Sprintf("%d_1_1", k+1)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	j, err := store.Get(ctx, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if maxPending > bound {
		t.Errorf("the job had %d messages pending at once; its backlog is %d", maxPending, bound)
	}
	if j.Backlog != bound || j.Counts.Planned != 3300 || j.Counts.Recalled != 3300 || j.Counts.Pending != 0 || settled != 3300 {
		t.Errorf("job %+v (backlog %d); settled %d; want 3,300 planned, queued and settled", j.Counts, j.Backlog, settled)
	}
	if b.Backlog.Waits == 0 || b.Backlog.Waited <= 0 {
		t.Errorf("the planner never waited for the workers: %+v", b.Backlog)
	}
	if b.Planned != 3300 || b.Tasks != 300*1+300 {
		t.Errorf("batcher planned %d in %d tasks; want 3,300 in 600 (300 calls of 10 seqs, 300 one-to-one)", b.Planned, b.Tasks)
	}
	t.Logf("max pending %d of a backlog of %d; the planner waited %d times, %v in all", maxPending, bound, b.Backlog.Waits, b.Backlog.Waited)
}

// TestBacklogQueuesShortCallsBeforeItWaits: 2,000 groups of 3 seqs each,
// planned at the Flush, every target before any is queued, with a backlog
// of 50: the planner queues the short calls it planned before it waits (or
// it would wait for messages that are in no queue), and everything is
// planned, queued once and settled, never more than 50 pending.
func TestBacklogQueuesShortCallsBeforeItWaits(t *testing.T) {
	store, client, insp := onMiniredis(t)
	spec := jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "t", Backlog: 50}
	jobID, _, maxPending, settled := planWhileSettling(t, store, client, insp, spec, func(ctx context.Context, b *Batcher) error {
		for g := range 2000 {
			if err := b.AddGroup(ctx, jobs.Target{GroupID: fmt.Sprintf("@TGS#s%04d", g)}, 1, 2, 3); err != nil {
				return err
			}
		}
		return nil
	})
	j, err := store.Get(t.Context(), jobID)
	if err != nil || j.Counts.Planned != 6000 || j.Counts.Recalled != 6000 || settled != 6000 || maxPending > 50 {
		t.Fatalf("job %+v, %v; settled %d, at most %d pending; want 6,000 planned and settled, at most 50 pending", j.Counts, err, settled, maxPending)
	}
}

// TestBacklogHeldJobQueuesItsWholePlan: a job held for approval sends
// nothing, so waiting for its workers would never end: its plan is queued
// whole, and the approver sees its count.
func TestBacklogHeldJobQueuesItsWholePlan(t *testing.T) {
	store, client, _ := onMiniredis(t)
	spec := jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "t", Backlog: 10, HoldForApproval: true}
	job, b, err := NewJob(t.Context(), store, client, spec, func(ctx context.Context, _ jobs.Job, _ Enqueuer, b *Batcher) error {
		for s := range 500 {
			if err := b.AddGroup(ctx, jobs.Target{GroupID: "@TGS#held"}, int64(s+1)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	j, err := store.Get(t.Context(), job.ID)
	if err != nil || j.Status != jobs.StatusAwaitingApproval || j.Counts.Planned != 500 || b.Tasks != 50 || b.Backlog.Waits != 0 {
		t.Fatalf("held job %s %+v, %d tasks, backlog %+v, %v; want awaiting approval, 500 planned in 50 tasks, no wait", j.Status, j.Counts, b.Tasks, b.Backlog, err)
	}
}

// TestBacklogWaitEnds: a planner waiting for the workers stops when its job
// is cancelled (the next plan call is refused: the job is closed) and when
// it is interrupted (its context ends): the job then says planning was
// interrupted, with what was planned still queued.
func TestBacklogWaitEnds(t *testing.T) {
	for _, how := range []string{"cancel", "interrupt"} {
		t.Run(how, func(t *testing.T) {
			store, client, insp := onMiniredis(t)
			ctx, stop := context.WithCancelCause(t.Context())
			defer stop(nil)
			spec := jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "t", Backlog: 20}
			var (
				mu      sync.Mutex
				id      string
				waiting = make(chan struct{})
			)
			done := make(chan error, 1)
			go func() {
				_, _, err := NewJob(ctx, store, client, spec, func(ctx context.Context, j jobs.Job, _ Enqueuer, b *Batcher) error {
					mu.Lock()
					id = j.ID
					mu.Unlock()
					for s := range 1000 {
						if s == 25 {
							close(waiting) // 20 planned and queued; the next call waits
						}
						if err := b.AddGroup(ctx, jobs.Target{GroupID: "@TGS#wait"}, int64(s+1)); err != nil {
							return err
						}
					}
					return nil
				})
				done <- err
			}()
			<-waiting
			mu.Lock()
			jobID := id
			mu.Unlock()
			time.Sleep(300 * time.Millisecond) // the planner is in its wait
			if how == "cancel" {
				if _, err := store.Cancel(t.Context(), jobID, "t", "wrong list"); err != nil {
					t.Fatal(err)
				}
			} else {
				stop(errors.New("interrupt signal received"))
			}
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("planning went on to the end")
				}
				t.Logf("planner: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the waiting planner did not stop")
			}
			j, err := store.Get(t.Context(), jobID)
			if err != nil {
				t.Fatal(err)
			}
			queued := settleQueued(t, store, insp)
			if j.Counts.Planned != 20 || queued != 20 {
				t.Errorf("job %s %+v, %d queued; want the 20 planned before the wait, all queued", j.Status, j.Counts, queued)
			}
			switch how {
			case "cancel":
				if j.Status != jobs.StatusCancelled {
					t.Errorf("status %s, want cancelled", j.Status)
				}
			case "interrupt":
				if j.PlanningInterrupted == nil {
					t.Errorf("job %s: planning not marked interrupted", j.Status)
				}
			}
		})
	}
}

// TestDiscoveryHandsOverWhenBacklogFull scans a history of 60 pages (600 of
// alice's messages) for a job whose backlog is 50, with no page budget: a
// discovery task never waits for the workers in a worker's lane; between
// pages it finds the backlog full and hands over to a later part of its
// scan (queued to run in backlogHandOver). Settling the queued messages
// between parts, the scan reads each page once, plans every message once,
// and the job never has more than the bound and one page's messages
// pending.
func TestDiscoveryHandsOverWhenBacklogFull(t *testing.T) {
	b := setupDiscoveryBacklog(t, 1200, 50) // 60 pages of 20, 10 of alice's a page
	h := NewDiscoverHandler(b.env.Client, b.store, b.q, nil).WithBudget(0, 0)
	var maxPending int64
	settled := map[int64]bool{}
	runs := 0
	for {
		task := b.q.pop(tasks.TypeDiscover)
		if task == nil {
			break
		}
		if runs++; runs > 200 {
			t.Fatal("discovery does not end")
		}
		if err := h.Handle(t.Context(), task); err != nil {
			t.Fatal(err)
		}
		j, err := b.store.Get(t.Context(), b.job.ID)
		if err != nil {
			t.Fatal(err)
		}
		maxPending = max(maxPending, j.Counts.Pending)
		// The workers settle what was queued.
		for {
			rt := b.q.pop(tasks.TypeGroupRecall)
			if rt == nil {
				break
			}
			p, err := tasks.DecodeGroupRecall(rt)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]jobs.Outcome, len(p.Seqs))
			for i, s := range p.Seqs {
				if settled[s] {
					t.Fatalf("seq %d queued twice", s)
				}
				settled[s] = true
				out[i] = jobs.Outcome{Item: strconv.FormatInt(s, 10), Recalled: true, Attempts: 1}
			}
			if _, err := b.store.Record(t.Context(), b.job.ID, jobs.Target{GroupID: b.group}, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := b.alices()
	if len(settled) != len(want) {
		t.Errorf("settled %d seqs, want alice's %d", len(settled), len(want))
	}
	if calls := b.env.Emu.Stats()[tim.GroupMsgGetSimple.Name()].Calls; calls != 60 {
		t.Errorf("%d history calls, want each of the 60 pages read once", calls)
	}
	if runs < 10 || b.q.delayed != runs-1 {
		t.Errorf("%d discovery tasks ran, %d parts queued for later; want a part per backlog's worth (50 of 600), each queued for later", runs, b.q.delayed)
	}
	if maxPending > 50+10 {
		t.Errorf("the job had %d messages pending at once; backlog 50, pages of 10 of alice's", maxPending)
	}
	j, _ := b.store.Get(t.Context(), b.job.ID)
	if j.Status != jobs.StatusDone || j.Counts.Planned != int64(len(want)) || j.Counts.Pending != 0 {
		t.Errorf("job after discovery = %s %+v", j.Status, j.Counts)
	}
	t.Logf("%d discovery parts; at most %d messages pending (backlog 50)", runs, maxPending)
}

// TestBacklogBoundsRequeue: 2,000 group dead letters and 100 one-to-one
// ones of a job whose backlog is 100 are re-queued while a slow "worker"
// settles what is queued: the job never has more than 100 pending, the
// re-queue says once that it waits (with what it moved so far), and every
// dead letter is moved, queued once and settled.
func TestBacklogBoundsRequeue(t *testing.T) {
	for _, status := range []jobs.Status{jobs.StatusDone, jobs.StatusFailed} {
		t.Run(string(status), func(t *testing.T) { testBacklogBoundsRequeue(t, status) })
	}
}

// testBacklogBoundsRequeue is TestBacklogBoundsRequeue for a job that ended
// with status (done: its planner closed; failed: its planning interrupted).
func testBacklogBoundsRequeue(t *testing.T, status jobs.Status) {
	store, client, insp := onMiniredis(t)
	ctx := t.Context()
	const bound = 100
	job, err := store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "t", Backlog: bound})
	if err != nil {
		t.Fatal(err)
	}
	for g := range 20 {
		target := jobs.Target{GroupID: fmt.Sprintf("@TGS#g%02d", g)}
		var seqs []int64
		var out []jobs.Outcome
		for s := int64(1); s <= 100; s++ {
			seqs = append(seqs, s)
			out = append(out, jobs.Outcome{Item: strconv.FormatInt(s, 10), Code: "10002"})
		}
		mustDo(t, func() error { _, err := store.PlanGroup(ctx, job.ID, target, seqs); return err })
		mustDo(t, func() error { _, err := store.Record(ctx, job.ID, target, out); return err })
	}
	for k := range 100 {
		target := jobs.Target{From: "spammer", To: fmt.Sprintf("u%02d", k%10)}
		key := fmt.Sprintf("%d_1_1", k+1)
		mustDo(t, func() error { _, err := store.PlanC2C(ctx, job.ID, target, []string{key}); return err })
		mustDo(t, func() error {
			_, err := store.Record(ctx, job.ID, target, []jobs.Outcome{{Item: key, Code: "10002"}})
			return err
		})
	}
	if status == jobs.StatusFailed {
		mustDo(t, func() error { _, err := store.InterruptPlanner(ctx, job.ID, jobs.RootPlanner, "test"); return err })
	} else {
		mustDo(t, func() error { _, err := store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); return err })
	}
	if j, _ := store.Get(ctx, job.ID); j.Counts.DeadLettered != 2100 || j.Counts.Pending != 0 || j.Status != status {
		t.Fatalf("before the re-queue: %s %+v, want %s with 2,100 dead letters", j.Status, j.Counts, status)
	}

	var waits []Requeued
	done := make(chan error, 1)
	var r Requeued
	go func() {
		var err error
		r, err = RequeueDeadLetters(ctx, store, client, job.ID, RequeueRequest{Match: func(jobs.DeadLetter) bool { return true },
			Actor: "t", OnWait: func(so Requeued) { waits = append(waits, so) }})
		done <- err
	}()
	maxPending, settled := settleUntil(t, store, insp, job.ID, done)
	j, err := store.Get(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if maxPending > bound {
		t.Errorf("the job had %d messages pending at once; its backlog is %d", maxPending, bound)
	}
	if r.Messages != 2100 || settled != 2100 || j.Counts.Recalled != 2100 || j.Counts.DeadLettered != 0 || j.Counts.Pending != 0 {
		t.Errorf("re-queued %+v, settled %d, job %+v; want 2,100 moved, queued and settled", r, settled, j.Counts)
	}
	// What it moved before it first waited depends on how fast the
	// "worker" settled meanwhile (the bound is on what is pending).
	if len(waits) != 1 || !waits[0].Requeuing || waits[0].Messages <= 0 || waits[0].Messages >= r.Messages {
		t.Errorf("OnWait saw %+v; want one call, requeuing, with some of the %d moved", waits, r.Messages)
	}
	t.Logf("max pending %d of a backlog of %d; first wait after %d moved", maxPending, bound, waits[0].Messages)
}

func mustDo(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}
