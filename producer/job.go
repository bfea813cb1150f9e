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

// Requeued is what RequeueDeadLetters did.
type Requeued struct {
	Messages int   `json:"messages"`
	Tasks    int64 `json:"tasks"`
}

// RequeueDeadLetters moves the dead letters of a job that match back to
// pending and enqueues them in a new generation of tasks, recording who
// asked in the audit log. It holds only the matching dead letters in
// memory.
func RequeueDeadLetters(ctx context.Context, store *jobs.Store, q Enqueuer, jobID string, match func(jobs.DeadLetter) bool, actor, detail string) (Requeued, error) {
	var r Requeued
	job, err := store.Get(ctx, jobID)
	if err != nil {
		return r, err
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
	gen, err := store.NextGeneration(ctx, jobID)
	if err != nil {
		return r, err
	}
	b := NewBatcher(store, q, job, gen)
	for _, t := range sortedTargets(byTarget) {
		moved, err := store.Requeue(ctx, jobID, t, byTarget[t])
		if err != nil {
			return r, err
		}
		r.Messages += len(moved)
		if err := b.EnqueuePlanned(ctx, t, moved); err != nil {
			return r, err
		}
	}
	if err := b.Flush(ctx); err != nil {
		return r, err
	}
	r.Tasks = b.Tasks
	return r, nil
}
