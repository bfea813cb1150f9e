package producer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// brokenQ fails every enqueue after the first ok ones.
type brokenQ struct {
	memQ
	ok int
}

var errQueueDown = errors.New("queue down (test)")

func (q *brokenQ) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if q.ok <= 0 {
		return nil, errQueueDown
	}
	q.ok--
	return q.memQ.EnqueueContext(ctx, t, opts...)
}

// TestInterruptedRequeueIsFinished: a re-queue whose enqueue fails midway
// leaves the messages it moved in the journal; the next re-queue queues
// them first, so none is left pending with no task.
func TestInterruptedRequeueIsFinished(t *testing.T) {
	srv := redistest.Start(t)
	store := jobs.NewStore(srv.Client(), "")
	ctx := t.Context()
	job, err := store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	g := jobs.Target{GroupID: "g"}
	var seqs []int64
	var out []jobs.Outcome
	for s := int64(1); s <= 55; s++ {
		seqs = append(seqs, s)
		out = append(out, jobs.Outcome{Item: itoa(s), Code: "10002"})
	}
	store.PlanGroup(ctx, job.ID, g, seqs)
	store.ClosePlanner(ctx, job.ID, jobs.RootPlanner)
	store.Record(ctx, job.ID, g, out)

	q := &brokenQ{ok: 2}
	all := func(jobs.DeadLetter) bool { return true }
	if _, err := RequeueDeadLetters(ctx, store, q, job.ID, RequeueRequest{Match: all, Actor: "t"}); !errors.Is(err, errQueueDown) {
		t.Fatalf("requeue with a failing queue = %v", err)
	}
	j, _ := store.Get(ctx, job.ID)
	if j.Counts.Pending != 55 || len(q.tasks) != 2 {
		t.Fatalf("after the interrupted requeue: %+v, %d tasks", j.Counts, len(q.tasks))
	}
	journaled := 0
	store.RequeueJournal(ctx, job.ID, func(_ jobs.Target, items []string) error { journaled += len(items); return nil })
	if journaled != 55 {
		t.Fatalf("journal holds %d, want the 55 moved", journaled)
	}

	q.ok = 100
	r, err := RequeueDeadLetters(ctx, store, q, job.ID, RequeueRequest{Match: all, Actor: "t"})
	if err != nil || r.Repaired != 55 || r.Messages != 0 {
		t.Fatalf("second requeue = %+v, %v; want the 55 repaired", r, err)
	}
	queued := map[int64]bool{}
	for _, task := range q.tasks {
		p, _ := tasks.DecodeGroupRecall(task)
		for _, s := range p.Seqs {
			queued[s] = true
		}
	}
	if len(queued) != 55 {
		t.Fatalf("%d of 55 seqs queued", len(queued))
	}
	store.RequeueJournal(ctx, job.ID, func(_ jobs.Target, items []string) error {
		t.Fatalf("journal still holds %v", items)
		return nil
	})

	// A cancelled job refuses a re-queue and stays cancelled.
	store.Cancel(ctx, job.ID, "t", "")
	store.Record(ctx, job.ID, g, []jobs.Outcome{{Item: "1", Code: jobs.CodeCancelled}})
	_, err = RequeueDeadLetters(ctx, store, q, job.ID, RequeueRequest{Match: all, Actor: "t"})
	var se *jobs.StatusError
	if !errors.As(err, &se) || se.Status != jobs.StatusCancelled {
		t.Fatalf("requeue of a cancelled job = %v", err)
	}
	if j, _ := store.Get(ctx, job.ID); j.Status != jobs.StatusCancelled {
		t.Fatalf("status = %s", j.Status)
	}
}

// slowQ is a queue whose every enqueue takes a while: the window between a
// re-queue moving messages back to pending and queueing them.
type slowQ struct{ Enqueuer }

func (q slowQ) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	time.Sleep(2 * time.Millisecond)
	return q.Enqueuer.EnqueueContext(ctx, t, opts...)
}

// deadLetteredJob is a job on a private redis-server whose groups×perGroup
// group messages are all dead letters (10002), its planning closed, with
// an asynq client and inspector on the same server.
func deadLetteredJob(t *testing.T, groups, perGroup int, backlog int64) (*redistest.Server, *jobs.Store, jobs.Job, *asynq.Client, *asynq.Inspector) {
	t.Helper()
	srv := redistest.Start(t)
	store := jobs.NewStore(srv.Client(), "")
	ctx := t.Context()
	job, err := store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "t", Backlog: backlog})
	if err != nil {
		t.Fatal(err)
	}
	for gi := range groups {
		g := jobs.Target{GroupID: "g" + itoa(int64(gi))}
		var seqs []int64
		var out []jobs.Outcome
		for s := int64(1); s <= int64(perGroup); s++ {
			seqs = append(seqs, s)
			out = append(out, jobs.Outcome{Item: itoa(s), Code: "10002"})
		}
		mustDo(t, func() error { _, err := store.PlanGroup(ctx, job.ID, g, seqs); return err })
		mustDo(t, func() error { _, err := store.Record(ctx, job.ID, g, out); return err })
	}
	mustDo(t, func() error { _, err := store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); return err })
	opt := asynq.RedisClientOpt{Addr: srv.Addr()}
	client, insp := asynq.NewClient(opt), asynq.NewInspector(opt)
	t.Cleanup(func() { client.Close(); insp.Close() })
	return srv, store, job, client, insp
}

// queuedGroupSeqs counts, per group message, the pending tasks of the
// purge queue that carry it, and how many messages more than one does.
func queuedGroupSeqs(t *testing.T, insp *asynq.Inspector) (queued map[string]int, twice int) {
	t.Helper()
	infos, err := insp.ListPendingTasks(tasks.QueuePurge, asynq.PageSize(1000))
	if err != nil {
		t.Fatal(err)
	}
	queued = map[string]int{}
	for _, info := range infos {
		p, err := tasks.DecodeGroupRecall(asynq.NewTask(info.Type, info.Payload))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Seqs {
			if queued[p.GroupID+"/"+itoa(s)]++; queued[p.GroupID+"/"+itoa(s)] == 2 {
				twice++
			}
		}
	}
	return queued, twice
}

// TestConcurrentRequeuesQueueEachMessageOnce: two re-queues of one job at
// once (an operator's double click, the console and the CLI, each trying
// again when refused) and a third caller finishing "interrupted" re-queues
// meanwhile queue every dead letter exactly once: one re-queue runs at a
// time, the others are refused naming who runs it, and a re-queue still
// running is not mistaken for an interrupted one. (Without the lock, 270
// of these 360 messages were queued twice.)
func TestConcurrentRequeuesQueueEachMessageOnce(t *testing.T) {
	const groups, perGroup = 8, 45
	_, store, job, client, insp := deadLetteredJob(t, groups, perGroup, 0)
	ctx := t.Context()
	q := slowQ{client}
	all := func(jobs.DeadLetter) bool { return true }
	var wg sync.WaitGroup
	var mu sync.Mutex
	var done, busy, finishes int
	outcome := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		var be *jobs.BusyError
		switch {
		case errors.As(err, &be) && be.JobID == job.ID && be.Holder != "":
			busy++
		case err != nil:
			t.Errorf("a re-queue failed: %v", err)
		}
	}
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for { // an operator who is refused tries again
				r, err := RequeueDeadLetters(ctx, store, q, job.ID, RequeueRequest{Match: all, Actor: "operator " + itoa(int64(i))})
				outcome(err)
				if errors.Is(err, jobs.ErrBusy) {
					time.Sleep(time.Millisecond)
					continue
				}
				if r.Messages > 0 {
					mu.Lock()
					done++
					mu.Unlock()
				}
				return
			}
		}()
	}
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := FinishRequeue(ctx, store, q, job, "a repair")
			outcome(err)
			mu.Lock()
			finishes++
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if done != 1 || busy == 0 || finishes < 10 {
		t.Fatalf("%d re-queues moved messages, %d attempts refused as busy, %d repairs tried: want 1, some and many (the test must overlap them)", done, busy, finishes)
	}
	queued, twice := queuedGroupSeqs(t, insp)
	if len(queued) != groups*perGroup || twice > 0 {
		t.Fatalf("%d of %d messages queued, %d of them more than once", len(queued), groups*perGroup, twice)
	}
}

// TestRequeueStopsWhenItsLockIsLost: a re-queue whose lock is taken from
// it (here: deleted, as a failover to a replica without it would, and
// taken by a repair) stops before its next batch with
// jobs.ErrRequeueLockLost; at most the batch it had moved is queued by
// both.
func TestRequeueStopsWhenItsLockIsLost(t *testing.T) {
	srv, store, job, client, insp := deadLetteredJob(t, 6, 20, 20)
	store.SetLeaseTTL(300 * time.Millisecond)
	ctx := t.Context()
	all := func(jobs.DeadLetter) bool { return true }
	// The backlog bound (20) holds the re-queue after its first batch (10):
	// while it waits, its lock is deleted and a repair runs.
	waiting := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		_, err := RequeueDeadLetters(ctx, store, slowQ{client}, job.ID, RequeueRequest{Match: all, Actor: "alice",
			OnWait: func(Requeued) { waiting <- struct{}{} }})
		done <- err
	}()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("the re-queue ended before it waited: %v", err)
	}
	keys, err := srv.Client().Keys(ctx, "*requeue-lock").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("lock keys %v %v", keys, err)
	}
	srv.Client().Del(ctx, keys[0])
	if _, err := FinishRequeue(ctx, store, client, job, "bob's repair"); err != nil {
		t.Fatalf("a repair once the lock was gone: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, jobs.ErrRequeueLockLost) {
			t.Fatalf("the re-queue whose lock was lost = %v, want ErrRequeueLockLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the re-queue whose lock was lost goes on")
	}
	queued, twice := queuedGroupSeqs(t, insp)
	if twice > 10 {
		t.Fatalf("%d messages queued twice, more than the batch it had moved (10)", twice)
	}
	t.Logf("%d messages queued, %d twice", len(queued), twice)
}
