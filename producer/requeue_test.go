package producer

import (
	"context"
	"errors"
	"testing"

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
