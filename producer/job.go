package producer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imrecall/imrecall/jobs"
)

// CancelledError is NewJob's error when a person cancelled the job while it
// was being planned: planning stopped there, and what it had planned is
// queued and dead-lettered as cancelled by the workers. It is the person's
// decision, not a failure: whoever retries failed requests (a schedule's
// firing, a script re-running a command that failed) must not create the
// job again.
type CancelledError struct{ JobID string }

func (e *CancelledError) Error() string {
	return "job " + e.JobID + " was cancelled while it was being planned"
}

// PlanFunc fills a new job: it adds messages to the batcher, or enqueues
// discovery tasks with q.
type PlanFunc func(ctx context.Context, job jobs.Job, q Enqueuer, b *Batcher) error

// finishTimeout bounds how long an interrupted planner spends queueing what
// it planned.
const finishTimeout = 15 * time.Second

// NewJob creates a job from spec, runs plan, enqueues what the batcher
// holds and closes the job's root planner. The root planner holds a lease
// (renewed in the background) while it plans, and journals what it plans
// until queued, so that a planner killed outright is settled by a reconciler
// (see package reconcile).
//
// If planning stops early — ctx is cancelled (SIGINT, a client gone) or an
// enqueue or Redis call fails — NewJob queues what it planned with a fresh
// context (Batcher.Finish) and ends the root planner: interrupted (the job
// ends failed with "planning interrupted", see jobs.Store.InterruptPlanner)
// when ctx was cancelled, failed with the error otherwise. What was planned
// is still recalled and accounted for; running the same command again
// plans the rest as a new job. The job is returned with the error, which is
// a *CancelledError when a person cancelled the job meanwhile.
func NewJob(ctx context.Context, store *jobs.Store, q Enqueuer, spec jobs.Spec, plan PlanFunc) (jobs.Job, *Batcher, error) {
	job, err := store.Create(ctx, spec)
	if err != nil {
		return jobs.Job{}, nil, fmt.Errorf("creating job: %w", err)
	}
	lease := store.Keep(ctx, job.ID, jobs.RootPlanner) // Create took the lease
	b := NewBatcher(store, q, job, 0)
	b.Journal(jobs.RootPlanner)
	err = plan(ctx, job, q, b)
	if err == nil {
		err = b.Flush(ctx)
	}
	if err == nil {
		_, err = store.ClosePlanner(ctx, job.ID, jobs.RootPlanner)
	}
	if err == nil {
		_ = lease.Release(ctx) // a lease left behind lapses harmlessly
		return job, b, nil
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	ferr := b.Finish(fctx)
	if ferr == nil && errors.Is(err, jobs.ErrClosed) {
		if j, gerr := store.Get(fctx, job.ID); gerr == nil && j.Status == jobs.StatusCancelled {
			_ = lease.Release(fctx)
			return job, b, &CancelledError{JobID: job.ID}
		}
	}
	if cause := context.Cause(ctx); cause != nil {
		_, _ = store.InterruptPlanner(fctx, job.ID, jobs.RootPlanner, "stopped: "+cause.Error())
		if j, gerr := store.Get(fctx, job.ID); gerr == nil {
			err = fmt.Errorf("%w (the job is %s with %d messages planned; they are still recalled: run the same command again for the rest)", err, j.Status, j.Counts.Planned)
		}
	} else {
		_, _ = store.Fail(fctx, job.ID, err)
	}
	if ferr != nil {
		lease.Abandon() // the journal holds what is not queued; a reconciler queues it once the lease lapses
		err = errors.Join(err, fmt.Errorf("queueing what was planned: %w (a worker's reconciler queues it within the planner lease)", ferr))
	} else {
		_ = lease.Release(fctx)
	}
	return job, b, fmt.Errorf("planning job %s: %w", job.ID, err)
}
