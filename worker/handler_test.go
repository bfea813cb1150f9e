package worker

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/redis/go-redis/v9"
)

// bundle is one test's emulator, job store and handler.
type bundle struct {
	env   *imtest.Env
	store *jobs.Store
	h     *Handler
	job   jobs.Job
	rdb   *redis.Client
}

func setup(t *testing.T, cfg emulator.Config, wcfg Config) *bundle {
	t.Helper()
	env := imtest.Start(t, cfg)
	_, rdb := redistest.Mini(t)
	store := jobs.NewStore(rdb, "")
	if wcfg.BaseBackoff == 0 {
		wcfg.BaseBackoff = time.Millisecond
	}
	job, err := store.Create(t.Context(), jobs.Spec{Kind: "test", Queue: tasks.QueuePurge, AppID: imtest.AppID, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{env: env, store: store, h: New(TIM{C: env.Client}, store, wcfg), job: job, rdb: rdb}
}

// plan plans seqs of a group and closes planning.
func (b *bundle) planGroup(t *testing.T, target jobs.Target, seqs []int64) {
	t.Helper()
	if _, err := b.store.PlanGroup(t.Context(), b.job.ID, target, seqs); err != nil {
		t.Fatal(err)
	}
}

// plannedGroup makes the Public group id of alice with n messages of hers,
// plans them all and closes planning.
func (b *bundle) plannedGroup(t *testing.T, id string, n int64) (string, jobs.Target) {
	t.Helper()
	b.env.Accounts(t, "alice")
	g := b.env.Group(t, "Public", id, "alice")
	b.env.SendGroup(t, g, "", int(n), "alice")
	target := jobs.Target{GroupID: g}
	b.planGroup(t, target, imtest.Seqs(1, n))
	b.close(t)
	return g, target
}

// plannedC2C sends one message from alice to bob, plans it and closes
// planning.
func (b *bundle) plannedC2C(t *testing.T) (string, jobs.Target) {
	t.Helper()
	b.env.Accounts(t, "alice", "bob")
	key := b.env.SendC2C(t, "alice", "bob", 1)[0]
	target := jobs.Target{From: "alice", To: "bob"}
	if _, err := b.store.PlanC2C(t.Context(), b.job.ID, target, []string{key}); err != nil {
		t.Fatal(err)
	}
	b.close(t)
	return key, target
}

func (b *bundle) close(t *testing.T) {
	t.Helper()
	if _, err := b.store.ClosePlanner(t.Context(), b.job.ID, jobs.RootPlanner); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) runGroup(t *testing.T, target jobs.Target, seqs []int64) error {
	t.Helper()
	task, err := tasks.NewGroupRecallTask(tasks.GroupRecall{JobID: b.job.ID, AppID: imtest.AppID, GroupID: target.GroupID, TopicID: target.TopicID, Seqs: seqs}, tasks.QueuePurge, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b.h.HandleGroupRecall(t.Context(), task)
}

func (b *bundle) runC2C(t *testing.T, from, to, key string) error {
	t.Helper()
	task, err := tasks.NewC2CWithdrawTask(tasks.C2CWithdraw{JobID: b.job.ID, AppID: imtest.AppID, From: from, To: to, MsgKey: key}, tasks.QueuePurge, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b.h.HandleC2CWithdraw(t.Context(), task)
}

func (b *bundle) counts(t *testing.T) jobs.Job {
	t.Helper()
	j, err := b.store.Get(t.Context(), b.job.ID)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := b.store.Recount(t.Context(), b.job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Matches(j.Counts); err != nil {
		t.Fatal(err)
	}
	return j
}

func recalledSeqs(t *testing.T, env *imtest.Env, group string) map[int64]bool {
	t.Helper()
	out := map[int64]bool{}
	for _, m := range env.Emu.GroupMessages(group, "") {
		if m.Recalled {
			out[m.Seq] = true
		}
	}
	return out
}

func TestGroupRecallOutcomes(t *testing.T) {
	b := setup(t, emulator.Config{Faults: emulator.Faults{ItemCodes: map[int]float64{10002: 0.3}}, Seed: 7}, Config{MaxAttempts: 20})
	b.env.Accounts(t, "alice", "bob")
	g := b.env.Group(t, "Public", "@TGS#work1", "alice", "bob")
	b.env.SendGroup(t, g, "", 30, "alice", "bob")
	// seq 3 was recalled before the job: it dead-letters as 10030.
	b.env.Emu.SetFaults(emulator.Faults{})
	if _, err := b.env.Client.RecallGroup(t.Context(), g, "", []int64{3}); err != nil {
		t.Fatal(err)
	}
	b.env.Emu.SetFaults(emulator.Faults{ItemCodes: map[int]float64{10002: 0.3}})

	target := jobs.Target{GroupID: g}
	seqs := append(imtest.Seqs(1, 9), 50) // 50 does not exist
	b.planGroup(t, target, seqs)
	b.close(t)
	if err := b.runGroup(t, target, seqs); err != nil {
		t.Fatalf("handler: %v", err)
	}
	j := b.counts(t)
	if j.Counts.Recalled != 8 || j.Counts.DeadLettered != 2 || j.Counts.DeadByCode["10030"] != 2 || j.Status != jobs.StatusDone {
		t.Fatalf("job = %+v", j)
	}
	got := recalledSeqs(t, b.env, g)
	for _, s := range imtest.Seqs(1, 9) {
		if !got[s] {
			t.Errorf("seq %d not recalled on the emulator", s)
		}
	}
	for _, m := range b.env.Emu.GroupMessages(g, "") {
		if m.Seq != 3 && m.RecallRequests != 0 {
			t.Errorf("seq %d: %d recall requests after it was recalled", m.Seq, m.RecallRequests)
		}
	}
	// A redelivery of the same task changes nothing and calls nothing.
	before := b.env.Emu.Stats()[tim.GroupMsgRecall.Name()].Calls
	if err := b.runGroup(t, target, seqs); err != nil {
		t.Fatal(err)
	}
	if after := b.env.Emu.Stats()[tim.GroupMsgRecall.Name()].Calls; after != before {
		t.Fatalf("redelivered task made %d calls", after-before)
	}
	b.counts(t)
}

func TestRetriesExhaustedOnlyFailedSeqs(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{MaxAttempts: 3})
	b.env.Accounts(t, "alice")
	g := b.env.Group(t, "Private", "@TGS#p", "alice")
	b.env.SendGroup(t, g, "", 10, "alice")
	b.env.Emu.SetFaults(emulator.Faults{ItemCodes: map[int]float64{10002: 1}})
	target := jobs.Target{GroupID: g}
	b.planGroup(t, target, imtest.Seqs(1, 10))
	b.close(t)
	if err := b.runGroup(t, target, imtest.Seqs(1, 10)); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	if j.Counts.DeadByCode["10002"] != 10 || j.Counts.Recalled != 0 {
		t.Fatalf("job = %+v", j)
	}
	if calls := b.env.Emu.Stats()[tim.GroupMsgRecall.Name()].Calls; calls != 3 {
		t.Fatalf("group_msg_recall calls = %d, want 3 (MaxAttempts)", calls)
	}
	var dl []jobs.DeadLetter
	b.store.DeadLetters(t.Context(), b.job.ID, func(d jobs.DeadLetter) error { dl = append(dl, d); return nil })
	if len(dl) != 10 || dl[0].Attempts != 3 || dl[0].Category != jobs.NeedsAttention || dl[0].ErrorInfo == "" {
		t.Fatalf("dead letters = %+v", dl)
	}
}

func TestPermanentTopLevelCode(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{})
	target := jobs.Target{GroupID: "@TGS#nosuchgroup"}
	b.planGroup(t, target, []int64{1, 2})
	b.close(t)
	if err := b.runGroup(t, target, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	if j := b.counts(t); j.Counts.DeadByCode["10010"] != 2 {
		t.Fatalf("job = %+v", j)
	}
}

func TestCancelledJobMakesNoCalls(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{})
	target := jobs.Target{GroupID: "@TGS#x"}
	b.planGroup(t, target, []int64{1, 2, 3})
	b.store.Cancel(t.Context(), b.job.ID, "t", "test")
	if err := b.runGroup(t, target, []int64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	if j.Counts.DeadByCode[jobs.CodeCancelled] != 3 || !j.Finished() {
		t.Fatalf("job = %+v", j)
	}
	if st, ok := b.env.Emu.Stats()[tim.GroupMsgRecall.Name()]; ok && st.Calls != 0 {
		t.Fatalf("a cancelled job made %d calls", st.Calls)
	}
}

func TestPausedJobParks(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{PausedDelay: 3 * time.Second})
	_, target := b.plannedGroup(t, "@TGS#park", 3)
	b.store.SetPaused(t.Context(), b.job.ID, "t", "", true)
	// The paused job's task completes, parked: it does not cycle.
	if err := b.runGroup(t, target, []int64{1, 2, 3}); err != nil {
		t.Fatalf("err = %v, want the task parked (nil)", err)
	}
	if n, _ := b.store.ParkedCount(t.Context(), b.job.ID); n != 1 {
		t.Fatalf("parked = %d, want 1", n)
	}
	q := &captureQ{}
	if n, err := Unpark(t.Context(), b.store, q, b.job.ID); err != nil || n != 0 || len(q.tasks) != 0 {
		t.Fatalf("Unpark while paused = %d, %v, %d tasks; want nothing queued", n, err, len(q.tasks))
	}
	b.store.SetPaused(t.Context(), b.job.ID, "t", "", false)
	if n, err := Unpark(t.Context(), b.store, q, b.job.ID); err != nil || n != 1 || len(q.tasks) != 1 {
		t.Fatalf("Unpark after resume = %d, %v", n, err)
	}
	if n, _ := b.store.ParkedCount(t.Context(), b.job.ID); n != 0 {
		t.Fatalf("parked after unpark = %d", n)
	}
	// The queued task is the same work: running it recalls the messages.
	if err := b.h.HandleGroupRecall(t.Context(), q.tasks[0]); err != nil {
		t.Fatal(err)
	}
	if j := b.counts(t); j.Counts.Recalled != 3 || j.Status != jobs.StatusDone {
		t.Fatalf("job after resume = %+v", j)
	}
	if !IsFailure(errors.New("redis down")) {
		t.Fatal("a real error must count as a failure")
	}
	if d := RetryDelay(1, &Snooze{After: 3 * time.Second}, nil); d != 3*time.Second {
		t.Fatalf("RetryDelay = %v", d)
	}
}

// captureQ is an Enqueuer that keeps the tasks.
type captureQ struct{ tasks []*asynq.Task }

func (c *captureQ) EnqueueContext(_ context.Context, t *asynq.Task, _ ...asynq.Option) (*asynq.TaskInfo, error) {
	c.tasks = append(c.tasks, t)
	return &asynq.TaskInfo{}, nil
}

// TestUnansweredCallIsVerified: a crash after the server recalled a message
// but before the outcome was recorded. The redelivered task sees 10030,
// checks the history and counts the message recalled, not dead.
func TestUnansweredCallIsVerified(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{})
	g, target := b.plannedGroup(t, "@TGS#v", 5)
	// The first delivery marked the sends and its call recalled 1 and 2,
	// then the process died before recording anything.
	if _, err := b.store.BeginGroup(t.Context(), b.job.ID, target, imtest.Seqs(1, 5)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.env.Client.RecallGroup(t.Context(), g, "", []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.runGroup(t, target, imtest.Seqs(1, 5)); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	// 1 and 2 are gone, but the lost call or someone else may have recalled
	// them: counted recalled, attribution unknown.
	if j.Counts.Recalled != 5 || j.Counts.DeadLettered != 0 || j.Counts.RecalledUnattributed != 2 {
		t.Fatalf("job = %+v", j.Counts)
	}
}

func TestC2CWithdraw(t *testing.T) {
	b := setup(t, emulator.Config{Faults: emulator.Faults{Codes: map[int]float64{91000: 0.3}, HTTP502: 0.1}, Seed: 3}, Config{MaxAttempts: 30})
	b.env.Emu.SetFaults(emulator.Faults{})
	b.env.Accounts(t, "alice", "bob")
	keys := b.env.SendC2C(t, "alice", "bob", 6)
	// keys[5] was withdrawn before the job: 20023, already recalled.
	if _, err := b.env.Client.AdminMsgWithdraw(t.Context(), tim.AdminMsgWithdrawRequest{FromAccount: "alice", ToAccount: "bob", MsgKey: keys[5]}); err != nil {
		t.Fatal(err)
	}
	b.env.Emu.SetFaults(emulator.Faults{Codes: map[int]float64{91000: 0.3}, HTTP502: 0.1})
	target := jobs.Target{From: "alice", To: "bob"}
	unknownKey := "999999_1_1"
	for _, k := range append(keys, unknownKey) {
		if _, err := b.store.PlanC2C(t.Context(), b.job.ID, target, []string{k}); err != nil {
			t.Fatal(err)
		}
	}
	b.close(t)
	for _, k := range append(keys, unknownKey) {
		if err := b.runC2C(t, "alice", "bob", k); err != nil {
			t.Fatal(err)
		}
	}
	j := b.counts(t)
	if j.Counts.Recalled != 5 || j.Counts.DeadByCode["20023"] != 1 || j.Counts.DeadByCode["20022"] != 1 || j.Status != jobs.StatusDone {
		t.Fatalf("job = %+v", j)
	}
	rep, _ := b.store.BuildReport(t.Context(), b.job.ID)
	if rep.AlreadyRecalled != 1 || rep.NotFound != 1 || rep.NeedsAttention != 0 {
		t.Fatalf("report = %+v", rep)
	}
}

func TestThrottleUsesNoAttempt(t *testing.T) {
	// The emulator allows 5 recall calls a second; without a limiter the
	// handler meets 60007 and must retry without spending its 1 attempt.
	b := setup(t, emulator.Config{RateOf: map[string]int{"group_msg_recall": 5}}, Config{MaxAttempts: 1})
	g, _ := b.plannedGroup(t, "@TGS#t", 80)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			s := imtest.Seqs(int64(i*10+1), int64(i*10+10))
			task, _ := tasks.NewGroupRecallTask(tasks.GroupRecall{JobID: b.job.ID, AppID: imtest.AppID, GroupID: g, Seqs: s}, tasks.QueuePurge, 0)
			errs <- b.h.HandleGroupRecall(ctx, task)
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	j := b.counts(t)
	if j.Counts.Recalled != 80 {
		t.Fatalf("job = %+v (throttles must not use attempts)", j)
	}
	if b.env.Emu.Stats()[tim.GroupMsgRecall.Name()].Throttled == 0 {
		t.Fatal("the test did not provoke any throttle")
	}
}

// TestAnsweredSendIsNotSuspected: a message whose earlier send was answered
// (a retryable code) and that was recalled by someone else meanwhile is a
// 10030 dead letter on redelivery, not counted as ours, and no history check
// is made.
func TestAnsweredSendIsNotSuspected(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{})
	g, target := b.plannedGroup(t, "@TGS#a", 3)
	if _, err := b.store.BeginGroup(t.Context(), b.job.ID, target, imtest.Seqs(1, 3)); err != nil {
		t.Fatal(err)
	}
	if err := b.store.MarkAnswered(t.Context(), b.job.ID, target, []jobs.Answer{{Item: "1", Send: 1}, {Item: "2", Send: 1}, {Item: "3", Send: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.env.Client.RecallGroup(t.Context(), g, "", []int64{1}); err != nil {
		t.Fatal(err)
	}
	if err := b.runGroup(t, target, imtest.Seqs(1, 3)); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	if j.Counts.Recalled != 2 || j.Counts.DeadByCode["10030"] != 1 {
		t.Fatalf("job = %+v", j)
	}
	if st, ok := b.env.Emu.Stats()[tim.GroupMsgGetSimple.Name()]; ok && st.Calls != 0 {
		t.Fatalf("%d history checks for answered sends", st.Calls)
	}
}

// heldLimiter is the shared limiter with a backlog that never drains:
// every reservation waits until its context ends. It tells the test when a
// call waits.
type heldLimiter struct{ waiting chan string }

func (g heldLimiter) Reserve(ctx context.Context, api string) (tim.Slot, error) {
	g.waiting <- api
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestStoppedWhileWaitingForTheCapCountsNoSend: a worker stopped while its
// calls wait for the shared cap has sent nothing, so it must record no send.
// Were a send recorded, the next delivery would suspect it, find the
// messages withdrawn and recalled before the job, and count them as the
// job's recalls instead of the 20023 and 10030 dead letters they are.
func TestStoppedWhileWaitingForTheCapCountsNoSend(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{MaxAttempts: 5})
	b.env.Accounts(t, "alice", "bob")
	g := b.env.Group(t, "Public", "@TGS#held", "alice", "bob")
	b.env.SendGroup(t, g, "", 5, "alice")
	keys := b.env.SendC2C(t, "alice", "bob", 1)
	// Recalled before the job: seq 2 and the one-to-one message.
	if _, err := b.env.Client.RecallGroup(t.Context(), g, "", []int64{2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.env.Client.AdminMsgWithdraw(t.Context(), tim.AdminMsgWithdrawRequest{FromAccount: "alice", ToAccount: "bob", MsgKey: keys[0]}); err != nil {
		t.Fatal(err)
	}
	group, c2c := jobs.Target{GroupID: g}, jobs.Target{From: "alice", To: "bob"}
	seqs := imtest.Seqs(1, 5)
	b.planGroup(t, group, seqs)
	if _, err := b.store.PlanC2C(t.Context(), b.job.ID, c2c, keys); err != nil {
		t.Fatal(err)
	}
	b.close(t)

	// A worker whose calls wait for the cap, stopped while they wait.
	gate := heldLimiter{waiting: make(chan string, 2)}
	stopped := New(TIM{C: b.env.Client}, b.store, Config{MaxAttempts: 5, BaseBackoff: time.Millisecond, Limiter: gate})
	gtask, _ := tasks.NewGroupRecallTask(tasks.GroupRecall{JobID: b.job.ID, AppID: imtest.AppID, GroupID: g, Seqs: seqs}, tasks.QueuePurge, 0)
	ctask, _ := tasks.NewC2CWithdrawTask(tasks.C2CWithdraw{JobID: b.job.ID, AppID: imtest.AppID, From: "alice", To: "bob", MsgKey: keys[0]}, tasks.QueuePurge, 0)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 2)
	go func() { done <- stopped.HandleGroupRecall(ctx, gtask) }()
	go func() { done <- stopped.HandleC2CWithdraw(ctx, ctask) }()
	for range 2 {
		<-gate.waiting
	}
	stop()
	for range 2 {
		if err := <-done; err == nil {
			t.Fatal("a handler stopped mid-wait returned nil")
		}
	}
	if n := b.env.Emu.Stats()[tim.GroupMsgRecall.Name()].Accepted + b.env.Emu.Stats()[tim.AdminMsgWithdraw.Name()].Accepted; n != 2 {
		t.Fatalf("%d recall calls reached the emulator, want only the 2 made before the job", n)
	}
	gb, err := b.store.PeekGroup(t.Context(), b.job.ID, group, seqs)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.store.PeekC2C(t.Context(), b.job.ID, c2c, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range append(gb.States, cb.States...) {
		if st != 0 {
			t.Errorf("message %d: state %d after a stop before any send, want 0 (no send)", i, st)
		}
	}

	// The tasks are delivered again, to a worker whose calls go.
	if err := b.runGroup(t, group, seqs); err != nil {
		t.Fatal(err)
	}
	if err := b.runC2C(t, "alice", "bob", keys[0]); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	if j.Counts.Recalled != 4 || j.Counts.DeadByCode["10030"] != 1 || j.Counts.DeadByCode["20023"] != 1 || j.Status != jobs.StatusDone {
		t.Fatalf("job = %+v, want 4 recalled and the two recalled before the job dead-lettered (10030, 20023)", j.Counts)
	}
}

func TestOutcomeOf(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		code int
		want Outcome
	}{
		{0, OutcomeRecalled},
		{10030, OutcomeGone}, // group message not found
		{20022, OutcomeGone}, // one-to-one message not found
		{20023, OutcomeGone}, // already recalled
		{10006, OutcomeThrottled},
		{10023, OutcomeThrottled},
		{10002, OutcomeRetry},
		{20004, OutcomeRetry},
		{20005, OutcomeRetry},
		{10031, OutcomeDeadLetter}, // past the recall time limit
		{10032, OutcomeDeadLetter},
		{10033, OutcomeDeadLetter},
		{10010, OutcomeDeadLetter},
		{90054, OutcomeDeadLetter},
		{123456, OutcomeDeadLetter}, // undocumented: permanent
		{70001, OutcomeAppWide},
		{20002, OutcomeAppWide}, // an auth code, but one that condemns the app
		{90009, OutcomeAppWide},
		{10041, OutcomeAppWide}, // recall disabled for the app
		{70016, OutcomeAppWide},
	} {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			if got := OutcomeOf(tt.code); got != tt.want {
				t.Errorf("OutcomeOf(%d) = %s, want %s", tt.code, got, tt.want)
			}
		})
	}
}
