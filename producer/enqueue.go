package producer

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// Enqueuer is what the planner needs of asynq's client.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Batcher plans messages of one job and enqueues them as recall tasks. Group
// seqs are buffered per target, unplanned, until 10 make a full call; Flush
// sends the rest. A seq it plans is enqueued before the call that planned it
// returns, so a process killed between two calls leaves no message planned
// without a task: what it held was never planned, and the next run (a
// retried discovery task reads the history again) plans it. A Batcher is
// not safe for concurrent use.
type Batcher struct {
	store      *jobs.Store
	q          Enqueuer
	job        jobs.Job
	generation int

	raw     map[jobs.Target][]int64 // seqs not yet planned
	ready   map[jobs.Target][]int64 // planned, not yet enqueued
	pending int                     // seqs held in raw and ready

	// Seen counts messages given, Planned the new ones, Tasks the tasks
	// enqueued and AlreadyQueued those an earlier run had enqueued.
	Seen, Planned, Tasks, AlreadyQueued int64
}

// maxBuffered bounds the seqs a Batcher holds before it plans and enqueues
// partial calls, so memory stays flat however many groups a file names.
const maxBuffered = 100_000

// NewBatcher returns a batcher for job; generation 0 is the first run, a
// re-queue passes the job's next generation.
func NewBatcher(store *jobs.Store, q Enqueuer, job jobs.Job, generation int) *Batcher {
	return &Batcher{
		store: store, q: q, job: job, generation: generation,
		raw: map[jobs.Target][]int64{}, ready: map[jobs.Target][]int64{},
	}
}

// AddGroup adds group messages; they are planned and enqueued in calls of 10.
func (b *Batcher) AddGroup(ctx context.Context, t jobs.Target, seqs ...int64) error {
	b.Seen += int64(len(seqs))
	b.raw[t] = append(b.raw[t], seqs...)
	b.pending += len(seqs)
	if len(b.raw[t]) >= tasks.MaxSeqsPerCall {
		if err := b.planCalls(ctx, t); err != nil {
			return err
		}
	}
	if b.pending > maxBuffered {
		return b.Flush(ctx)
	}
	return nil
}

// AddC2C plans one one-to-one message and enqueues it if new.
func (b *Batcher) AddC2C(ctx context.Context, t jobs.Target, msgKey string) error {
	b.Seen++
	fresh, err := b.store.PlanC2C(ctx, b.job.ID, t, []string{msgKey})
	if err != nil {
		return err
	}
	if len(fresh) == 0 {
		return nil
	}
	b.Planned++
	return b.enqueueC2C(ctx, t, msgKey)
}

// EnqueuePlanned enqueues messages that are already planned (a re-queue of
// dead letters), bypassing planning.
func (b *Batcher) EnqueuePlanned(ctx context.Context, t jobs.Target, items []string) error {
	if !t.IsGroup() {
		for _, k := range items {
			if err := b.enqueueC2C(ctx, t, k); err != nil {
				return err
			}
		}
		return nil
	}
	seqs := make([]int64, 0, len(items))
	for _, it := range items {
		var s int64
		if _, err := fmt.Sscan(it, &s); err != nil {
			return fmt.Errorf("re-queue %s: seq %q: %w", t, it, err)
		}
		seqs = append(seqs, s)
	}
	b.ready[t] = append(b.ready[t], seqs...)
	b.pending += len(seqs)
	return b.emitFull(ctx, t)
}

// planCalls plans the buffered seqs of t in multiples of 10 and enqueues
// every full call. When seqs planned before (duplicates) leave a call short,
// it plans more of the buffer to fill it, and if the buffer runs out it
// enqueues the short call rather than hold planned seqs back. Fewer than 10
// seqs stay buffered, unplanned.
func (b *Batcher) planCalls(ctx context.Context, t jobs.Target) error {
	for {
		raw := b.raw[t]
		n := len(raw) - len(raw)%tasks.MaxSeqsPerCall
		if short := len(b.ready[t]) % tasks.MaxSeqsPerCall; short > 0 {
			n = min(len(raw), tasks.MaxSeqsPerCall-short)
		}
		if n == 0 {
			break
		}
		if n == len(raw) {
			delete(b.raw, t)
		} else {
			b.raw[t] = raw[n:]
		}
		if err := b.plan(ctx, t, raw[:n]); err != nil {
			return err
		}
		if err := b.emitFull(ctx, t); err != nil {
			return err
		}
	}
	if r := b.ready[t]; len(r) > 0 && len(b.raw[t]) == 0 {
		delete(b.ready, t)
		return b.enqueueGroup(ctx, t, r)
	}
	return nil
}

// planGroup plans every buffered seq of t; Flush enqueues them.
func (b *Batcher) planGroup(ctx context.Context, t jobs.Target) error {
	raw := b.raw[t]
	if len(raw) == 0 {
		return nil
	}
	delete(b.raw, t)
	return b.plan(ctx, t, raw)
}

// plan records seqs as planned in the job and moves the new ones to ready.
func (b *Batcher) plan(ctx context.Context, t jobs.Target, seqs []int64) error {
	fresh, err := b.store.PlanGroup(ctx, b.job.ID, t, seqs)
	if err != nil {
		return err
	}
	b.pending -= len(seqs) - len(fresh)
	b.Planned += int64(len(fresh))
	if len(fresh) > 0 {
		b.ready[t] = append(b.ready[t], fresh...)
	}
	return nil
}

// emitFull enqueues every full call of 10 ready seqs of t.
func (b *Batcher) emitFull(ctx context.Context, t jobs.Target) error {
	r := b.ready[t]
	for len(r) >= tasks.MaxSeqsPerCall {
		if err := b.enqueueGroup(ctx, t, r[:tasks.MaxSeqsPerCall]); err != nil {
			return err
		}
		r = r[tasks.MaxSeqsPerCall:]
	}
	if len(r) == 0 {
		delete(b.ready, t)
	} else {
		b.ready[t] = append([]int64(nil), r...)
	}
	return nil
}

// Flush plans and enqueues everything buffered, the last call of each
// target with fewer than 10 seqs. Targets go in a stable order.
func (b *Batcher) Flush(ctx context.Context) error {
	for _, t := range sortedTargets(b.raw) {
		if err := b.planGroup(ctx, t); err != nil {
			return err
		}
	}
	for _, t := range sortedTargets(b.ready) {
		if err := b.emitFull(ctx, t); err != nil {
			return err
		}
		if r := b.ready[t]; len(r) > 0 {
			if err := b.enqueueGroup(ctx, t, r); err != nil {
				return err
			}
			delete(b.ready, t)
		}
	}
	return nil
}

func sortedTargets[V any](m map[jobs.Target]V) []jobs.Target {
	ts := make([]jobs.Target, 0, len(m))
	for t := range m {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool {
		a, b := ts[i], ts[j]
		if a.GroupID != b.GroupID {
			return a.GroupID < b.GroupID
		}
		if a.TopicID != b.TopicID {
			return a.TopicID < b.TopicID
		}
		if a.From != b.From {
			return a.From < b.From
		}
		return a.To < b.To
	})
	return ts
}

func (b *Batcher) enqueueGroup(ctx context.Context, t jobs.Target, seqs []int64) error {
	task, err := tasks.NewGroupRecallTask(tasks.GroupRecall{
		JobID: b.job.ID, AppID: b.job.AppID, GroupID: t.GroupID, TopicID: t.TopicID,
		Seqs: append([]int64(nil), seqs...),
	}, b.job.Queue, b.generation)
	if err != nil {
		return err
	}
	b.pending -= len(seqs)
	return b.enqueue(ctx, task)
}

func (b *Batcher) enqueueC2C(ctx context.Context, t jobs.Target, key string) error {
	task, err := tasks.NewC2CWithdrawTask(tasks.C2CWithdraw{
		JobID: b.job.ID, AppID: b.job.AppID, From: t.From, To: t.To, MsgKey: key,
	}, b.job.Queue, b.generation)
	if err != nil {
		return err
	}
	return b.enqueue(ctx, task)
}

func (b *Batcher) enqueue(ctx context.Context, task *asynq.Task) error {
	_, err := b.q.EnqueueContext(ctx, task)
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		b.AlreadyQueued++
		return nil
	}
	if err != nil {
		return fmt.Errorf("enqueueing %s for job %s: %w", task.Type(), b.job.ID, err)
	}
	b.Tasks++
	return nil
}
