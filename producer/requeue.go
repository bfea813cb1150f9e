package producer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// Requeued is what RequeueDeadLetters did.
type Requeued struct {
	Messages int   `json:"messages"`
	Tasks    int64 `json:"tasks"`
	// Repaired counts messages of an earlier, interrupted re-queue that were
	// moved back to pending but not queued, and are queued now.
	Repaired int `json:"repaired,omitempty"`
	// Requeuing says the re-queue waits for the job's backlog and goes on
	// (imrecall.Client.RequeueInBackground); the counts are those so far.
	Requeuing bool `json:"requeuing,omitempty"`
}

// RequeueRequest says which dead letters RequeueDeadLetters moves and who
// asked.
type RequeueRequest struct {
	Match         func(jobs.DeadLetter) bool
	Actor, Detail string
	// OnWait, if set, is called once, with what was re-queued so far, when
	// the re-queue first waits for the job's backlog.
	OnWait func(Requeued)
}

// requeueBatch bounds the messages moved back to pending before their
// tasks are queued and the move confirmed.
const requeueBatch = 1000

// RequeueDeadLetters moves the dead letters of a job that match back to
// pending and enqueues them in a new generation of tasks, recording who
// asked in the audit log. It holds only the matching dead letters in
// memory. A cancelled job is refused (*jobs.StatusError): it stays
// cancelled. A job still planning stays planning (its discovery goes on).
//
// Messages move in batches of at most 1000, each journaled until its tasks
// are queued: a re-queue interrupted between the two steps leaves them in
// the journal, and the next re-queue of the job (or FinishRequeue) queues
// them first. A job with a bound on queued work (jobs.Job.Backlog) is held
// to it as its planning was: before each batch moves, the re-queue waits
// while the job has its bound of messages pending (the batches are then at
// most half the bound). The dead letters not yet moved stay dead letters
// meanwhile: an interrupted wait leaves nothing in limbo. One re-queue of a
// job runs at a time (the job's re-queue lock): another is refused with a
// *jobs.BusyError naming who runs it. A re-queue that loses the lock (see
// jobs.ErrRequeueLockLost) stops before its next batch; the batch it had
// moved is still queued, so at most that batch can be queued twice.
func RequeueDeadLetters(ctx context.Context, store *jobs.Store, q Enqueuer, jobID string, req RequeueRequest) (Requeued, error) {
	match, actor, detail := req.Match, req.Actor, req.Detail
	var r Requeued
	job, err := store.Get(ctx, jobID)
	if err != nil {
		return r, err
	}
	if job.Status == jobs.StatusCancelled {
		return r, &jobs.StatusError{JobID: jobID, Status: job.Status, Action: "re-queueing dead letters"}
	}
	lock, err := store.LockRequeue(ctx, jobID, actor)
	if err != nil {
		return r, err
	}
	defer func() { _ = lock.Release(ctx) }() // a lock not released lapses
	ctx, unbind := lock.Bind(ctx)
	defer unbind()
	if r.Repaired, err = finishRequeue(ctx, store, q, job); err != nil {
		return r, lockLost(ctx, err)
	}
	byTarget := map[jobs.Target][]string{}
	total := 0
	if err := store.DeadLetters(ctx, jobID, func(d jobs.DeadLetter) error {
		if match(d) {
			byTarget[d.Target()] = append(byTarget[d.Target()], d.Item())
			total++
		}
		return nil
	}); err != nil {
		return r, err
	}
	if total == 0 {
		return r, nil
	}
	if err := store.Audit(ctx, jobs.Event{Actor: actor, Action: "requeue", JobID: jobID,
		Detail: fmt.Sprintf("%d dead letters; %s", total, detail)}); err != nil {
		return r, err
	}
	if err := store.MarkOpen(ctx, jobID); err != nil { // a reconciler watches it until it settles again
		return r, err
	}
	gen, err := store.NextGeneration(ctx, jobID)
	if err != nil {
		return r, err
	}
	b := NewBatcher(store, q, job, gen)
	if req.OnWait != nil {
		b.OnWait = func() {
			sofar := r
			sofar.Tasks, sofar.Requeuing = b.Tasks, true
			req.OnWait(sofar)
		}
	}
	batch := requeueBatch
	if job.Backlog > 0 { // half the bound, in whole group calls
		batch = int(max(min(int64(batch), job.Backlog/2)/tasks.MaxSeqsPerCall*tasks.MaxSeqsPerCall, tasks.MaxSeqsPerCall))
	}
	for _, t := range sortedTargets(byTarget) {
		items := byTarget[t]
		for len(items) > 0 {
			n := min(len(items), batch)
			if err := b.awaitBacklog(ctx, n); err != nil {
				return r, lockLost(ctx, err)
			}
			if err := lock.Check(ctx); err != nil { // lost: another re-queue may have begun
				return r, lockLost(ctx, err)
			}
			moved, err := store.Requeue(ctx, jobID, t, items[:n])
			if err != nil {
				return r, lockLost(ctx, err)
			}
			items = items[n:]
			// Moved is journaled: queue it even if ctx ends now (a stop
			// while waiting for the backlog leaves nothing to repair).
			qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			err = enqueueMoved(qctx, store, b, jobID, t, moved)
			cancel()
			if err != nil {
				return r, err
			}
			r.Messages += len(moved)
		}
	}
	r.Tasks = b.Tasks
	return r, nil
}

// enqueueMoved queues messages moved back to pending and then removes them
// from the re-queue journal.
func enqueueMoved(ctx context.Context, store *jobs.Store, b *Batcher, jobID string, t jobs.Target, moved []string) error {
	if len(moved) == 0 {
		return nil
	}
	if err := b.EnqueuePlanned(ctx, t, moved); err != nil {
		return err
	}
	if err := b.Flush(ctx); err != nil {
		return err
	}
	return store.ConfirmRequeued(ctx, jobID, t, moved)
}

// FinishRequeue queues the messages that an interrupted re-queue moved back
// to pending without queueing them (the job's re-queue journal), in a new
// generation of tasks, and returns how many. Messages that are terminal
// again are queued too and skipped by the workers. A cancelled job's
// journal is queued as well: its workers dead-letter them as cancelled.
// It takes the job's re-queue lock (*jobs.BusyError while another re-queue
// runs: its moved messages are not an interrupted re-queue's).
func FinishRequeue(ctx context.Context, store *jobs.Store, q Enqueuer, job jobs.Job, holder string) (int, error) {
	lock, err := store.LockRequeue(ctx, job.ID, holder)
	if err != nil {
		return 0, err
	}
	defer func() { _ = lock.Release(ctx) }()
	bctx, unbind := lock.Bind(ctx)
	defer unbind()
	n, err := finishRequeue(bctx, store, q, job)
	return n, lockLost(bctx, err)
}

// lockLost is err, or jobs.ErrRequeueLockLost if that is why ctx ended.
func lockLost(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), jobs.ErrRequeueLockLost) {
		return jobs.ErrRequeueLockLost
	}
	return err
}

// finishRequeue is FinishRequeue under a lock already held.
func finishRequeue(ctx context.Context, store *jobs.Store, q Enqueuer, job jobs.Job) (int, error) {
	var b *Batcher
	n := 0
	err := store.RequeueJournal(ctx, job.ID, func(t jobs.Target, items []string) error {
		if b == nil {
			gen, err := store.NextGeneration(ctx, job.ID)
			if err != nil {
				return err
			}
			b = NewBatcher(store, q, job, gen)
		}
		n += len(items)
		return enqueueMoved(ctx, store, b, job.ID, t, items)
	})
	return n, err
}
