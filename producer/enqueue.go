package producer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"

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
// returns. With a journal (Journal), every message it plans is also kept in
// the job's plan journal under its lease until its task is queued: if the
// process dies between planning and queueing, a reconciler queues what the
// journal holds once the lease lapses; after an error or an interruption,
// Finish queues what was planned. A Batcher is not safe for concurrent use.
type Batcher struct {
	store      *jobs.Store
	q          Enqueuer
	job        jobs.Job
	generation int

	raw     map[jobs.Target][]int64 // seqs not yet planned
	ready   map[jobs.Target][]int64 // planned, not yet enqueued
	pending int                     // seqs held in raw and ready

	lease   string       // journal lease ("" = no journal)
	nonce   string       // makes this batcher's tokens unique
	calls   int          // plan calls made, for tokens
	confirm []string     // journal fields of queued messages, to remove
	unsent  []unsentTask // tasks whose enqueue failed
	failed  *failedPlan  // a plan call whose answer was lost

	left int64 // messages it may plan before it reads the backlog again
	// pagedBacklog: the planner checks the backlog itself between pages
	// (BacklogFull) and never waits in a plan call (a discovery task).
	pagedBacklog bool

	// Seen counts messages given, Planned the new ones, Tasks the tasks
	// enqueued and AlreadyQueued those an earlier run had enqueued.
	Seen, Planned, Tasks, AlreadyQueued int64
	// Backlog is how the job's bound on queued work held it back
	// (jobs.Spec.Backlog).
	Backlog Backlog
	// OnWait, if set, is called once, when the batcher first waits for the
	// job's backlog (after it queued what it planned).
	OnWait func()
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

// unsentTask is a task whose enqueue failed, with the journal fields of
// its messages.
type unsentTask struct {
	task   *asynq.Task
	fields []string
}

// failedPlan is a plan call that failed without a refusal: the script may
// have planned the items, so Finish repeats it with the same token.
type failedPlan struct {
	t     jobs.Target
	items []string
	token string
}

// Journal makes the batcher keep what it plans in the job's plan journal
// under lease (a lease the caller holds, see jobs.Store.Hold) until queued.
func (b *Batcher) Journal(lease string) {
	var n [6]byte
	_, _ = rand.Read(n[:])
	b.lease, b.nonce = lease, hex.EncodeToString(n[:])
}

// planItems plans items of t, journaled under a fresh token, and passes on
// the confirmations gathered since the last call.
func (b *Batcher) planItems(ctx context.Context, t jobs.Target, items []string) ([]string, error) {
	if err := b.awaitBacklog(ctx, len(items)); err != nil {
		return nil, err
	}
	tok := ""
	if b.lease != "" {
		b.calls++
		tok = jobs.Token(b.lease, b.nonce+"."+strconv.Itoa(b.calls))
	}
	fresh, err := b.store.PlanJournaled(ctx, b.job.ID, t, items, tok, b.confirm)
	if err != nil {
		if tok != "" && !errors.Is(err, jobs.ErrClosed) && !errors.Is(err, jobs.ErrNotFound) {
			b.failed = &failedPlan{t: t, items: items, token: tok}
		}
		return nil, err
	}
	b.confirm = nil
	return fresh, nil
}

// AddC2C plans one one-to-one message and enqueues it if new.
func (b *Batcher) AddC2C(ctx context.Context, t jobs.Target, msgKey string) error {
	b.Seen++
	fresh, err := b.planItems(ctx, t, []string{msgKey})
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
	fresh, err := b.planItems(ctx, t, seqItems(seqs))
	if err != nil {
		return err
	}
	b.pending -= len(seqs) - len(fresh)
	b.addReady(t, fresh)
	return nil
}

// addReady moves planned items (decimal seqs) of t to ready.
func (b *Batcher) addReady(t jobs.Target, items []string) {
	b.Planned += int64(len(items))
	for _, f := range items {
		q, _ := strconv.ParseInt(f, 10, 64)
		b.ready[t] = append(b.ready[t], q)
	}
}

func seqItems(seqs []int64) []string {
	items := make([]string, len(seqs))
	for i, q := range seqs {
		items[i] = strconv.FormatInt(q, 10)
	}
	return items
}

// emitFull enqueues every full call of 10 ready seqs of t.
func (b *Batcher) emitFull(ctx context.Context, t jobs.Target) error {
	for len(b.ready[t]) >= tasks.MaxSeqsPerCall {
		r := b.ready[t]
		b.ready[t] = r[tasks.MaxSeqsPerCall:]
		if err := b.enqueueGroup(ctx, t, r[:tasks.MaxSeqsPerCall]); err != nil {
			return err // the call is kept in unsent for Finish
		}
	}
	if r := b.ready[t]; len(r) == 0 {
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
	return b.emitReady(ctx)
}

// emitReady enqueues every ready seq, target by target in a stable order
// (the last call of each with fewer than 10 seqs), then confirms what was
// queued in the journal.
func (b *Batcher) emitReady(ctx context.Context) error {
	for _, t := range sortedTargets(b.ready) {
		if err := b.emitFull(ctx, t); err != nil {
			return err
		}
		if r := b.ready[t]; len(r) > 0 {
			delete(b.ready, t)
			if err := b.enqueueGroup(ctx, t, r); err != nil {
				return err
			}
		}
	}
	return b.confirmQueued(ctx)
}

// confirmQueued removes the messages queued since the last plan call from
// the journal.
func (b *Batcher) confirmQueued(ctx context.Context) error {
	if len(b.confirm) == 0 {
		return nil
	}
	if err := b.store.Confirm(ctx, b.job.ID, b.confirm); err != nil {
		return err
	}
	b.confirm = nil
	return nil
}

// Finish queues everything the batcher planned and has not queued, and
// confirms it in the journal: after an error or an interruption, call it
// with a fresh context (context.WithoutCancel and a short timeout). A plan
// call whose answer was lost is repeated with its token (it returns the same
// messages); tasks whose enqueue failed are enqueued again (a task already
// queued is a duplicate id, not an error). Messages given but not yet
// planned are dropped: they were never planned, and a later run plans them.
// If Finish fails, the journal still holds what is not confirmed: let the
// lease lapse (jobs.Lease.Abandon) and a reconciler queues it.
func (b *Batcher) Finish(ctx context.Context) error {
	if f := b.failed; f != nil {
		fresh, err := b.store.PlanJournaled(ctx, b.job.ID, f.t, f.items, f.token, nil)
		if err != nil && !errors.Is(err, jobs.ErrClosed) {
			return err
		}
		b.failed = nil
		if f.t.IsGroup() {
			b.addReady(f.t, fresh)
		} else {
			b.Planned += int64(len(fresh))
			for _, k := range fresh {
				if err := b.enqueueC2C(ctx, f.t, k); err != nil {
					return err
				}
			}
		}
	}
	unsent := b.unsent
	b.unsent = nil
	for i, u := range unsent {
		if err := b.enqueue(ctx, u.task); err != nil {
			b.unsent = append(b.unsent, unsent[i:]...)
			return err
		}
		if b.lease != "" {
			b.confirm = append(b.confirm, u.fields...)
		}
	}
	clear(b.raw)
	b.pending = 0
	return b.emitReady(ctx)
}

func sortedTargets[V any](m map[jobs.Target]V) []jobs.Target {
	ts := make([]jobs.Target, 0, len(m))
	for t := range m {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, jobs.CompareTargets)
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
	var fields []string
	if b.lease != "" {
		fields = make([]string, len(seqs))
		for i, q := range seqs {
			fields[i] = jobs.JournalField(t, strconv.FormatInt(q, 10))
		}
	}
	return b.enqueueJournaled(ctx, task, fields)
}

// enqueueJournaled enqueues a task; once queued its messages are confirmed
// (with the next plan call), and if the enqueue fails the task is kept for
// Finish.
func (b *Batcher) enqueueJournaled(ctx context.Context, task *asynq.Task, fields []string) error {
	if err := b.enqueue(ctx, task); err != nil {
		b.unsent = append(b.unsent, unsentTask{task: task, fields: fields})
		return err
	}
	b.confirm = append(b.confirm, fields...)
	return nil
}

func (b *Batcher) enqueueC2C(ctx context.Context, t jobs.Target, key string) error {
	task, err := tasks.NewC2CWithdrawTask(tasks.C2CWithdraw{
		JobID: b.job.ID, AppID: b.job.AppID, From: t.From, To: t.To, MsgKey: key,
	}, b.job.Queue, b.generation)
	if err != nil {
		return err
	}
	var fields []string
	if b.lease != "" {
		fields = []string{jobs.JournalField(t, key)}
	}
	return b.enqueueJournaled(ctx, task, fields)
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
