package reconcile

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/redis/go-redis/v9"
)

// failingEnqueuer fails the enqueues from the from-th to the to-th call
// (1-based, inclusive), like a Redis that went away for a while.
type failingEnqueuer struct {
	q        producer.Enqueuer
	from, to int64
	calls    atomic.Int64
}

var errEnqueue = errors.New("injected: connection refused")

func (f *failingEnqueuer) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if n := f.calls.Add(1); n >= f.from && n <= f.to {
		return nil, errEnqueue
	}
	return f.q.EnqueueContext(ctx, t, opts...)
}

type bundle struct {
	rdb    redis.UniversalClient
	store  *jobs.Store
	client *asynq.Client
	insp   *asynq.Inspector
	rc     *Reconciler
}

func setup(t *testing.T) *bundle {
	t.Helper()
	mr := miniredis.RunT(t)
	return setupOn(t, redis.NewClient(&redis.Options{Addr: mr.Addr()}), asynq.RedisClientOpt{Addr: mr.Addr()})
}

func setupOn(t *testing.T, rdb redis.UniversalClient, opt asynq.RedisConnOpt) *bundle {
	t.Helper()
	b := &bundle{rdb: rdb, client: asynq.NewClient(opt), insp: asynq.NewInspector(opt)}
	t.Cleanup(func() { b.client.Close(); b.insp.Close(); b.rdb.Close() })
	b.store = jobs.NewStore(b.rdb, "")
	b.store.SetLeaseTTL(300 * time.Millisecond)
	var err error
	b.rc, err = New(Config{Store: b.store, Redis: b.rdb, Queue: b.client, Inspector: b.insp, Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// queued returns every seq of the pending group recall tasks on queue,
// sorted, with repeats.
func (b *bundle) queued(t *testing.T, queue string) []int64 {
	t.Helper()
	infos, err := b.insp.ListPendingTasks(queue, asynq.PageSize(10000))
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, ti := range infos {
		p, err := tasks.DecodeGroupRecall(asynq.NewTask(ti.Type, ti.Payload))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, p.Seqs...)
	}
	return slices.Sorted(slices.Values(seqs))
}

// waitLapsed waits until lease id of job has lapsed (Redis's clock).
func (b *bundle) waitLapsed(t *testing.T, job, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls, err := b.store.ReadLeases(t.Context(), job)
		if err != nil {
			t.Fatal(err)
		}
		if !ls.Alive(id) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease %s of job %s still alive", id, job)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bundle) pass(t *testing.T) Summary {
	t.Helper()
	s, err := b.rc.Pass(t.Context())
	if err != nil || !s.Ran {
		t.Fatalf("Pass = %+v, %v", s, err)
	}
	return s
}

var (
	g1, g2 = jobs.Target{GroupID: "g1"}, jobs.Target{GroupID: "g2"}
	// want is what the plan below plans: g1's first two calls and g2's 20
	// seqs (g1's last 5 are never planned: the plan stops first).
	want = append(imtest.Seqs(1, 20), imtest.Seqs(101, 120)...)
)

// plan fills two calls of g1, then g2's two calls, whose first enqueue is
// the third.
func plan(ctx context.Context, _ jobs.Job, _ producer.Enqueuer, bt *producer.Batcher) error {
	if err := bt.AddGroup(ctx, g1, imtest.Seqs(1, 25)...); err != nil {
		return err
	}
	return bt.AddGroup(ctx, g2, imtest.Seqs(101, 120)...)
}

var spec = jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1, RequestedBy: "t"}

// TestFinishQueuesWhatWasPlannedAfterAnEnqueueError: one enqueue fails in
// the middle of planning; NewJob queues, with a fresh context, everything it
// had planned, and fails the job: no planned message is left without a task,
// and the journal is empty.
func TestFinishQueuesWhatWasPlannedAfterAnEnqueueError(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	job, _, err := producer.NewJob(ctx, b.store, &failingEnqueuer{q: b.client, from: 3, to: 3}, spec, plan)
	if !errors.Is(err, errEnqueue) {
		t.Fatalf("NewJob error = %v, want the enqueue error", err)
	}
	if got := b.queued(t, tasks.QueuePurge); !slices.Equal(got, want) {
		t.Fatalf("queued %v,\nwant %v (every planned seq once)", got, want)
	}
	j, _ := b.store.Get(ctx, job.ID)
	if j.Status != jobs.StatusFailed || j.Counts.Planned != int64(len(want)) {
		t.Fatalf("job %s planned %d, want failed, %d", j.Status, j.Counts.Planned, len(want))
	}
	if left, err := b.store.Journal(ctx, job.ID); err != nil || len(left) != 0 {
		t.Fatalf("journal = %v, %v; want empty", left, err)
	}
}

// TestReconcilerQueuesTheJournalOfALapsedPlanner: the enqueue outage
// outlasts the planner (Finish fails too), so the planned messages stay in
// the journal under its lease; once the lease lapses a reconciler pass
// queues them, each once.
func TestReconcilerQueuesTheJournalOfALapsedPlanner(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	job, _, err := producer.NewJob(ctx, b.store, &failingEnqueuer{q: b.client, from: 3, to: 1 << 40}, spec, plan)
	if !errors.Is(err, errEnqueue) {
		t.Fatalf("NewJob error = %v, want the enqueue error", err)
	}
	if got := b.queued(t, tasks.QueuePurge); !slices.Equal(got, imtest.Seqs(1, 20)) {
		t.Fatalf("queued before the pass %v, want g1's 1-20", got)
	}
	if left, _ := b.store.Journal(ctx, job.ID); len(left) != 20 {
		t.Fatalf("journal holds %d, want g2's 20", len(left))
	}
	b.waitLapsed(t, job.ID, jobs.RootPlanner)
	if s := b.pass(t); s.Journaled != 20 {
		t.Fatalf("pass = %+v, want 20 journaled messages queued", s)
	}
	if got := b.queued(t, tasks.QueuePurge); !slices.Equal(got, want) {
		t.Fatalf("queued %v,\nwant %v (every planned seq once)", got, want)
	}
	if left, _ := b.store.Journal(ctx, job.ID); len(left) != 0 {
		t.Fatalf("journal after the pass = %v, want empty", left)
	}
}

// TestReconcilerSettlesAKilledPlannerAndRequeuesLostTasks: a planner that
// stops without a word (killed) leaves its job planning with messages in
// the journal; after its lease lapses one pass settles the job (failed,
// planning interrupted) and queues the journal. Then the job's tasks are
// lost: two passes without progress and with nothing in flight queue every
// unsettled message again; a paused job is left alone.
func TestReconcilerSettlesAKilledPlannerAndRequeuesLostTasks(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	job, err := b.store.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	lease, err := b.store.Hold(ctx, job.ID, jobs.RootPlanner)
	if err != nil {
		t.Fatal(err)
	}
	bt := producer.NewBatcher(b.store, &failingEnqueuer{q: b.client, from: 3, to: 3}, job, 0)
	bt.Journal(jobs.RootPlanner)
	if err := plan(ctx, job, nil, bt); !errors.Is(err, errEnqueue) {
		t.Fatalf("plan = %v, want the enqueue error", err)
	}
	lease.Abandon() // the process is gone: no Finish, no close

	if s := b.pass(t); s.Interrupted != 0 || s.Journaled != 0 {
		t.Fatalf("pass while the lease holds = %+v, want nothing done", s)
	}
	b.waitLapsed(t, job.ID, jobs.RootPlanner)
	if s := b.pass(t); s.Interrupted != 1 || s.Journaled != 20 {
		t.Fatalf("pass = %+v, want the root planner interrupted and 20 journaled messages queued", s)
	}
	j, _ := b.store.Get(ctx, job.ID)
	if j.Status != jobs.StatusFailed || j.PlanningInterrupted == nil || j.PlanningInterrupted.Planned != 40 {
		t.Fatalf("job = %s %+v, want failed with the interruption at 40 planned", j.Status, j.PlanningInterrupted)
	}
	if got := b.queued(t, tasks.QueuePurge); !slices.Equal(got, want) {
		t.Fatalf("queued %v,\nwant %v", got, want)
	}

	// Lose every task; a paused job waits for its resume.
	if _, err := b.insp.DeleteAllPendingTasks(tasks.QueuePurge); err != nil {
		t.Fatal(err)
	}
	if err := b.store.SetPaused(ctx, job.ID, "t", "", true); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if s := b.pass(t); s.Requeued != 0 {
			t.Fatalf("pass on a paused job = %+v, want nothing queued", s)
		}
	}
	if err := b.store.SetPaused(ctx, job.ID, "t", "", false); err != nil {
		t.Fatal(err)
	}
	if s := b.pass(t); s.Requeued != 0 {
		t.Fatalf("first pass = %+v: a job is queued again only after a pass without progress", s)
	}
	if s := b.pass(t); s.Requeued != 40 {
		t.Fatalf("second pass = %+v, want 40 unsettled messages queued again", s)
	}
	if got := b.queued(t, tasks.QueuePurge); !slices.Equal(got, want) {
		t.Fatalf("queued again %v,\nwant %v", got, want)
	}
	for range 2 {
		if s := b.pass(t); s.Requeued != 0 {
			t.Fatalf("pass with tasks in flight = %+v, want nothing queued", s)
		}
	}

	// Settled messages are not queued again; a finished job leaves the open set.
	var out []jobs.Outcome
	for _, q := range imtest.Seqs(1, 20) {
		out = append(out, jobs.Outcome{Item: strconv.FormatInt(q, 10), Recalled: true})
	}
	b.store.Record(ctx, job.ID, g1, out)
	out = out[:0]
	for _, q := range imtest.Seqs(101, 120) {
		out = append(out, jobs.Outcome{Item: strconv.FormatInt(q, 10), Code: "20023"})
	}
	b.store.Record(ctx, job.ID, g2, out)
	if s := b.pass(t); s.Settled != 1 {
		t.Fatalf("pass = %+v, want the finished job settled", s)
	}
	if open, _ := b.store.OpenJobs(ctx); len(open) != 0 {
		t.Fatalf("open jobs = %v, want none", open)
	}
	if ls, _ := b.store.ReadLeases(ctx, job.ID); len(ls.Expiry)+len(ls.Tasks) != 0 {
		t.Fatalf("a settled job keeps leases %+v", ls)
	}
}

// TestDiscoveryUnitLivesWhileItsTaskExists: a discovery unit's first lease
// lapses once its task is queued; the unit stays open while asynq holds the
// task (it is delivered again after a crash) and is interrupted once the
// task is gone.
func TestDiscoveryUnitLivesWhileItsTaskExists(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	job, err := b.store.Create(ctx, jobs.Spec{Kind: "purge:user", Queue: tasks.QueuePurge, AppID: 1, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	p := tasks.Discover{JobID: job.ID, AppID: 1, GroupID: "g1"}
	task, err := tasks.NewDiscoverTask(p, tasks.QueuePurge)
	if err != nil {
		t.Fatal(err)
	}
	unit := "scan group g1"
	if err := b.store.OpenTaskPlanner(ctx, job.ID, unit, jobs.TaskRef{Queue: tasks.DiscoveryQueue(tasks.QueuePurge), ID: tasks.DiscoverTaskID(p)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.EnqueueContext(ctx, task); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); err != nil {
		t.Fatal(err)
	}
	b.waitLapsed(t, job.ID, unit)
	if s := b.pass(t); s.Interrupted != 0 {
		t.Fatalf("pass = %+v: the unit's task is queued, want it open", s)
	}
	if err := b.insp.DeleteTask(tasks.DiscoveryQueue(tasks.QueuePurge), tasks.DiscoverTaskID(p)); err != nil {
		t.Fatal(err)
	}
	if s := b.pass(t); s.Interrupted != 1 {
		t.Fatalf("pass = %+v, want the unit interrupted (its task is gone)", s)
	}
	if j, _ := b.store.Get(ctx, job.ID); j.Status != jobs.StatusFailed || j.PlanningInterrupted.Units != unit {
		t.Fatalf("job = %s %+v, want failed, interrupted in %q", j.Status, j.PlanningInterrupted, unit)
	}
}

// TestReconcilerAdoptsJobsOfEarlierVersions: a job left by a version before
// the reconciler — planning forever, its planned messages never queued, not
// in the open set, its root planner holding no lease — is adopted by the
// first pass, settled as interrupted (it is older than legacyGrace) and its
// messages are queued on the next pass.
func TestReconcilerAdoptsJobsOfEarlierVersions(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	job, err := b.store.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.PlanGroup(ctx, job.ID, g1, imtest.Seqs(1, 20)); err != nil {
		t.Fatal(err)
	}
	// What an earlier version left: no open-set entry, no lease, created long ago.
	if err := b.store.MarkSettled(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * legacyGrace).UTC().Format(time.RFC3339Nano)
	if err := b.rdb.HSet(ctx, jobs.DefaultPrefix+":job:{"+job.ID+"}", "created_at", old).Err(); err != nil {
		t.Fatal(err)
	}
	if s := b.pass(t); s.Jobs != 1 || s.Interrupted != 1 {
		t.Fatalf("first pass = %+v, want the job adopted and its root planner settled", s)
	}
	if j, _ := b.store.Get(ctx, job.ID); j.Status != jobs.StatusFailed || j.PlanningInterrupted == nil {
		t.Fatalf("job = %s %+v, want failed, planning interrupted", j.Status, j.PlanningInterrupted)
	}
	if s := b.pass(t); s.Requeued != 20 {
		t.Fatalf("second pass = %+v, want its 20 messages queued", s)
	}
	if got := b.queued(t, tasks.QueuePurge); !slices.Equal(got, imtest.Seqs(1, 20)) {
		t.Fatalf("queued %v, want 1-20", got)
	}
}

// TestReconcilerLeavesAHeldJobAlone: a job awaiting approval has pending
// messages and nothing in flight (its tasks are parked, here gone), yet
// passes neither queue its messages again nor settle nor fail it; once
// approved, lost tasks are queued again as for any job.
func TestReconcilerLeavesAHeldJobAlone(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	held := spec
	held.Requester, held.HoldForApproval = "token:alice", true
	job, _, err := producer.NewJob(ctx, b.store, b.client, held, plan)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insp.DeleteAllPendingTasks(tasks.QueuePurge); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if s := b.pass(t); s.Requeued != 0 || s.Interrupted != 0 || s.Settled != 0 {
			t.Fatalf("pass on a held job = %+v, want nothing done", s)
		}
	}
	j, _ := b.store.Get(ctx, job.ID)
	if j.Status != jobs.StatusAwaitingApproval || j.Phase != jobs.StatusRunning || j.Counts.Pending != 45 {
		t.Fatalf("held job after passes = %s (phase %s) %+v", j.Status, j.Phase, j.Counts)
	}
	if open, _ := b.store.OpenJobs(ctx); len(open) != 1 {
		t.Fatalf("open jobs = %v, want the held job", open)
	}
	if _, err := b.store.Approve(ctx, job.ID, "token:bob", "", 0); err != nil {
		t.Fatal(err)
	}
	b.pass(t)
	if s := b.pass(t); s.Requeued != 45 {
		t.Fatalf("second pass after approval = %+v, want 45 unsettled messages queued again", s)
	}
}
