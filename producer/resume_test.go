package producer

import (
	"context"
	"errors"
	"iter"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// memQ is an Enqueuer that keeps tasks in order and refuses a task it has
// seen (asynq's ErrTaskIDConflict), like a queue that keeps task IDs.
type memQ struct {
	mu    sync.Mutex
	tasks []*asynq.Task
	ids   map[string]bool
	// delayed counts the tasks enqueued with asynq.ProcessIn.
	delayed int
}

func (q *memQ) EnqueueContext(_ context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	// Task IDs are derived from the payload: the payload stands for the ID.
	id := t.Type() + " " + string(t.Payload())
	if q.ids == nil {
		q.ids = map[string]bool{}
	}
	if q.ids[id] {
		return nil, asynq.ErrTaskIDConflict
	}
	q.ids[id] = true
	q.tasks = append(q.tasks, t)
	for _, o := range opts {
		if o.Type() == asynq.ProcessInOpt {
			q.delayed++
		}
	}
	return &asynq.TaskInfo{ID: id}, nil
}

// pop takes the first task of type typ.
func (q *memQ) pop(typ string) *asynq.Task {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, t := range q.tasks {
		if t.Type() == typ {
			q.tasks = append(q.tasks[:i], q.tasks[i+1:]...)
			return t
		}
	}
	return nil
}

// flakyIM fails the history read once, after failAfter pages.
type flakyIM struct {
	IM
	mu        sync.Mutex
	pages     int
	failAfter int
}

var errFlaky = errors.New("connection reset (test)")

func (f *flakyIM) GroupMsgPages(ctx context.Context, req tim.GroupMsgGetSimpleRequest) iter.Seq2[*tim.GroupMsgGetSimpleResponse, error] {
	return func(yield func(*tim.GroupMsgGetSimpleResponse, error) bool) {
		for page, err := range f.IM.GroupMsgPages(ctx, req) {
			f.mu.Lock()
			f.pages++
			fail := f.failAfter > 0 && f.pages == f.failAfter+1
			f.mu.Unlock()
			if fail {
				yield(nil, errFlaky)
				return
			}
			if !yield(page, err) {
				return
			}
		}
	}
}

type discoveryBundle struct {
	env   *imtest.Env
	store *jobs.Store
	q     *memQ
	job   jobs.Job
	group string
}

// setupDiscovery seeds a group of n messages from alice and bob and a job
// that purges alice's, with its discovery task queued in q.
func setupDiscovery(t *testing.T, n int) *discoveryBundle {
	t.Helper()
	return setupDiscoveryBacklog(t, n, 0)
}

// setupDiscoveryBacklog is setupDiscovery with a job whose backlog is
// backlog (jobs.Spec.Backlog; 0: none).
func setupDiscoveryBacklog(t *testing.T, n int, backlog int64) *discoveryBundle {
	t.Helper()
	srv := redistest.Start(t)
	env := imtest.Start(t, emulator.Config{RateOf: map[string]int{tim.GroupMsgGetSimple.Name(): 0}})
	env.Accounts(t, "alice", "bob")
	g := env.Group(t, "Public", "@TGS#long", "alice", "bob")
	env.SendGroup(t, g, "", n, "alice", "alice", "bob")
	store := jobs.NewStore(srv.Client(), "")
	job, err := store.Create(t.Context(), jobs.Spec{Kind: "purge:user", Queue: tasks.QueuePurge, AppID: imtest.AppID, RequestedBy: "t", Backlog: backlog})
	if err != nil {
		t.Fatal(err)
	}
	q := &memQ{}
	scan := Scan{Target: jobs.Target{GroupID: g}, Type: "Public", Filter: GroupFilter{Senders: map[string]bool{"alice": true}}}
	if _, err := EnqueueScans(t.Context(), store, q, job, []Scan{scan}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ClosePlanner(t.Context(), job.ID, jobs.RootPlanner); err != nil {
		t.Fatal(err)
	}
	return &discoveryBundle{env: env, store: store, q: q, job: job, group: g}
}

// drain runs discovery tasks until none is left, and returns how many ran
// and their errors.
func (b *discoveryBundle) drain(t *testing.T, h *DiscoverHandler) (runs int, errs []error) {
	t.Helper()
	for {
		task := b.q.pop(tasks.TypeDiscover)
		if task == nil {
			return runs, errs
		}
		runs++
		if err := h.Handle(t.Context(), task); err != nil {
			errs = append(errs, err)
			// asynq would retry it: put it back (a retry keeps its ID).
			b.q.mu.Lock()
			b.q.tasks = append(b.q.tasks, task)
			b.q.mu.Unlock()
		}
		if runs > 1000 {
			t.Fatal("discovery does not end")
		}
	}
}

// recallSeqs returns every seq in the queued recall tasks, failing on a
// seq queued twice.
func (b *discoveryBundle) recallSeqs(t *testing.T) map[int64]bool {
	t.Helper()
	seen := map[int64]bool{}
	for _, task := range b.q.tasks {
		p, err := tasks.DecodeGroupRecall(task)
		if err != nil {
			continue
		}
		for _, s := range p.Seqs {
			if seen[s] {
				t.Fatalf("seq %d queued twice", s)
			}
			seen[s] = true
		}
	}
	return seen
}

func (b *discoveryBundle) alices() map[int64]bool {
	want := map[int64]bool{}
	for _, m := range b.env.Emu.GroupMessages(b.group, "") {
		if m.From == "alice" {
			want[m.Seq] = true
		}
	}
	return want
}

// TestDiscoveryAcrossBudgets scans a history of 60 pages with a budget of 4
// pages a task: the scan goes on in continuation tasks from its checkpoint,
// reads each page once, and plans every message of the sender once.
func TestDiscoveryAcrossBudgets(t *testing.T) {
	b := setupDiscovery(t, 1200) // 60 pages of 20
	h := NewDiscoverHandler(b.env.Client, b.store, b.q, nil).WithBudget(4, 0)
	runs, errs := b.drain(t, h)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if runs != 15 {
		t.Fatalf("%d discovery tasks ran, want 15 (60 pages, 4 a task)", runs)
	}
	want := b.alices()
	got := b.recallSeqs(t)
	if len(got) != len(want) {
		t.Fatalf("queued %d seqs, want %d", len(got), len(want))
	}
	for s := range want {
		if !got[s] {
			t.Fatalf("seq %d of alice not queued", s)
		}
	}
	if calls := b.env.Emu.Stats()[tim.GroupMsgGetSimple.Name()].Calls; calls != 60 {
		t.Fatalf("%d history calls, want each of the 60 pages read once", calls)
	}
	sp, err := ScanProgressOf(t.Context(), b.store, b.job.ID, Scan{Target: jobs.Target{GroupID: b.group}})
	if err != nil || !sp.Done || sp.Part != 14 || sp.Pages != 60 || sp.Scanned != 1200 || sp.Found != len(want) {
		t.Fatalf("scan progress = %+v, %v", sp, err)
	}
	j, _ := b.store.Get(t.Context(), b.job.ID)
	if j.Status != jobs.StatusRunning || j.Counts.Planned != int64(len(want)) {
		t.Fatalf("job after discovery = %s %+v", j.Status, j.Counts)
	}
	// The job's coverage records the seq range read, across the parts.
	cov, err := b.store.Coverage(t.Context(), b.job.ID)
	if err != nil || cov == nil || len(cov.Targets) != 1 {
		t.Fatalf("coverage = %+v, %v", cov, err)
	}
	if tc := cov.Targets[0]; tc.FirstSeq != 1 || tc.LastSeq != 1200 || tc.Scanned != 1200 || tc.Found != len(want) || !tc.Done {
		t.Fatalf("the group's coverage = %+v, want seqs 1..1200 read", tc)
	}
}

// TestDiscoveryRetryResumes: a scan that fails mid-history is retried from
// its checkpoint, not from the newest message, and a part delivered again
// after it handed over plans nothing twice.
func TestDiscoveryRetryResumes(t *testing.T) {
	b := setupDiscovery(t, 1200)
	im := &flakyIM{IM: b.env.Client, failAfter: 37}
	h := NewDiscoverHandler(im, b.store, b.q, nil).WithBudget(0, 0)
	runs, errs := b.drain(t, h)
	if runs != 2 || len(errs) != 1 || !errors.Is(errs[0], errFlaky) {
		t.Fatalf("runs %d, errors %v; want one failure and one retry", runs, errs)
	}
	// The retry reads again at most the pages after the last checkpoint
	// that still held seqs in the batcher (fewer than 10 of alice's).
	calls := b.env.Emu.Stats()[tim.GroupMsgGetSimple.Name()].Calls
	t.Logf("60-page history, failure after page 37: %d history calls in all", calls)
	if calls > 60+2 {
		t.Fatalf("%d history calls: the retry rescanned from the newest message", calls)
	}
	want := b.alices()
	if got := b.recallSeqs(t); len(got) != len(want) {
		t.Fatalf("queued %d seqs, want %d", len(got), len(want))
	}
	j, _ := b.store.Get(t.Context(), b.job.ID)
	if j.Counts.Planned != int64(len(want)) || j.Status != jobs.StatusRunning {
		t.Fatalf("job = %s %+v", j.Status, j.Counts)
	}
}

// TestCancelStopsDiscovery: a cancel during a scan stops it at its next
// page, and its planning unit closes.
func TestCancelStopsDiscovery(t *testing.T) {
	b := setupDiscovery(t, 1200)
	h := NewDiscoverHandler(b.env.Client, b.store, b.q, nil).WithBudget(4, 0)
	// Run two parts, then cancel.
	for range 2 {
		if err := h.Handle(t.Context(), b.q.pop(tasks.TypeDiscover)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.store.Cancel(t.Context(), b.job.ID, "t", "wrong user"); err != nil {
		t.Fatal(err)
	}
	before := b.env.Emu.Stats()[tim.GroupMsgGetSimple.Name()].Calls
	runs, errs := b.drain(t, h)
	if runs != 1 || len(errs) != 0 {
		t.Fatalf("after cancel: %d runs, %v", runs, errs)
	}
	if after := b.env.Emu.Stats()[tim.GroupMsgGetSimple.Name()].Calls; after != before {
		t.Fatalf("a cancelled job's discovery read %d more pages", after-before)
	}
	j, _ := b.store.Get(t.Context(), b.job.ID)
	if j.Status != jobs.StatusCancelled {
		t.Fatalf("status = %s", j.Status)
	}
	// The job's coverage says how far the scan got: 8 pages of 20 from the newest.
	cov, err := b.store.Coverage(t.Context(), b.job.ID)
	if err != nil || cov == nil || len(cov.Targets) != 1 {
		t.Fatalf("coverage = %+v, %v", cov, err)
	}
	if tc := cov.Targets[0]; tc.Done || tc.LastSeq != 1200 || tc.FirstSeq != 1041 || tc.Scanned != 160 {
		t.Fatalf("a cancelled scan's coverage = %+v, want seqs 1041..1200 read, not done", tc)
	}
}

// TestRequeueDuringDiscoveryKeepsPlanning: a re-queue of dead letters while
// the job is still discovering leaves it planning, and the scan finishes.
func TestRequeueDuringDiscoveryKeepsPlanning(t *testing.T) {
	b := setupDiscovery(t, 600)
	h := NewDiscoverHandler(b.env.Client, b.store, b.q, nil).WithBudget(3, 0)
	if err := h.Handle(t.Context(), b.q.pop(tasks.TypeDiscover)); err != nil {
		t.Fatal(err)
	}
	// Dead-letter one planned message, then re-queue it.
	first := b.recallSeqs(t)
	var seq int64
	for s := range first {
		seq = s
		break
	}
	tg := jobs.Target{GroupID: b.group}
	if _, err := b.store.Record(t.Context(), b.job.ID, tg, []jobs.Outcome{{Item: itoa(seq), Code: "10002"}}); err != nil {
		t.Fatal(err)
	}
	r, err := RequeueDeadLetters(t.Context(), b.store, b.q, b.job.ID, RequeueRequest{Match: func(jobs.DeadLetter) bool { return true }, Actor: "t"})
	if err != nil || r.Messages != 1 {
		t.Fatalf("requeue = %+v, %v", r, err)
	}
	if j, _ := b.store.Get(t.Context(), b.job.ID); j.Status != jobs.StatusPlanning {
		t.Fatalf("status after a re-queue during discovery = %s, want planning", j.Status)
	}
	if _, errs := b.drain(t, h); len(errs) > 0 {
		t.Fatal(errs)
	}
	want := b.alices()
	j, _ := b.store.Get(t.Context(), b.job.ID)
	if j.Counts.Planned != int64(len(want)) || j.Status != jobs.StatusRunning {
		t.Fatalf("job = %s %+v, want all %d planned and running", j.Status, j.Counts, len(want))
	}
}
