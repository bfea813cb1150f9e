package producer

import (
	"context"
	"fmt"

	"github.com/imrecall/imrecall/jobs"
)

// PlanFunc fills a new job: it adds messages to the batcher, or enqueues
// discovery tasks with q.
type PlanFunc func(ctx context.Context, job jobs.Job, q Enqueuer, b *Batcher) error

// NewJob creates a job from spec, runs plan, enqueues what the batcher
// holds and closes the job's root planner. If planning fails the job is
// marked failed (what was planned is still recalled and accounted for) and
// the job is returned with the error.
func NewJob(ctx context.Context, store *jobs.Store, q Enqueuer, spec jobs.Spec, plan PlanFunc) (jobs.Job, *Batcher, error) {
	job, err := store.Create(ctx, spec)
	if err != nil {
		return jobs.Job{}, nil, fmt.Errorf("creating job: %w", err)
	}
	b := NewBatcher(store, q, job, 0)
	err = plan(ctx, job, q, b)
	if err == nil {
		err = b.Flush(ctx)
	}
	if err == nil {
		_, err = store.ClosePlanner(ctx, job.ID, jobs.RootPlanner)
	}
	if err != nil {
		_, _ = store.Fail(context.WithoutCancel(ctx), job.ID, err)
		return job, b, fmt.Errorf("planning job %s: %w", job.ID, err)
	}
	return job, b, nil
}
