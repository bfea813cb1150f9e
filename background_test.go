package imrecall_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
)

// backlogClient is a Client whose jobs keep at most 20 messages queued.
func backlogClient(t *testing.T, env *imrecalltest.Env) *imrecall.Client {
	t.Helper()
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client, Backlog: 20})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCreateInBackgroundAnswersWhenPlanningWaits: with a backlog of 20 and
// no worker, Create of 200 messages in the background answers once planning
// waits (20 planned, status planning, Planning set) instead of never; Close
// stops the planning, which queues what it planned and says planning was
// interrupted; Create after Close is refused.
func TestCreateInBackgroundAnswersWhenPlanningWaits(t *testing.T) {
	t.Parallel()
	env := imrecalltest.Start(t, imrecalltest.Options{NoWorker: true})
	c := backlogClient(t, env)
	seqs := make([]int64, 200)
	for i := range seqs {
		seqs[i] = int64(i + 1)
	}
	req := imrecall.GroupRecall{GroupID: "@TGS#bg", Seqs: seqs}
	opts := imrecall.CreateOptions{Actor: "alice", Reason: "test", Confirmed: true, InBackground: true}
	created, err := c.Create(t.Context(), req, opts)
	if err != nil || !created.Planning || created.Planned != 20 || created.Tasks != 2 || created.Job.Status != jobs.StatusPlanning || created.Job.Backlog != 20 {
		t.Fatalf("Create in the background = %+v, %v; want planning, 20 planned in 2 tasks", created, err)
	}
	c.Close()
	j, err := c.Job(t.Context(), created.Job.ID)
	if err != nil || j.PlanningInterrupted == nil || j.Counts.Planned != 20 {
		t.Fatalf("after Close: %+v, %v; want planning interrupted with 20 planned", j, err)
	}
	if _, err := c.Create(t.Context(), req, opts); !errors.Is(err, imrecall.ErrClosed) {
		t.Fatalf("Create after Close = %v, want ErrClosed", err)
	}
}

// TestCreateInBackgroundRunsToDone: with a worker, a job created in the
// background plans on as the worker drains it and ends done with every
// message recalled on the emulator; Create without InBackground returns
// only when planning has ended.
func TestCreateInBackgroundRunsToDone(t *testing.T) {
	t.Parallel()
	env := imrecalltest.Start(t, imrecalltest.Options{})
	c := backlogClient(t, env)
	t.Cleanup(c.Close)
	env.IM.Accounts(t, "spammer", "bob")
	for i, inBackground := range []bool{true, false} {
		g := env.IM.Group(t, "Public", fmt.Sprintf("@TGS#bg%d", i), "spammer", "bob")
		seqs := env.IM.SendGroup(t, g, "", 200, "spammer")
		created, err := c.Create(t.Context(), imrecall.GroupRecall{GroupID: g, Seqs: seqs},
			imrecall.CreateOptions{Actor: "alice", Reason: "test", Confirmed: true, InBackground: inBackground})
		if err != nil {
			t.Fatal(err)
		}
		if !inBackground && (created.Planning || created.Planned != 200) {
			t.Fatalf("Create = %+v; want planning ended, 200 planned", created)
		}
		j := env.WaitFinished(t, created.Job.ID)
		if j.Status != jobs.StatusDone || j.Counts.Recalled != 200 {
			t.Fatalf("job %s (in the background: %v): %s %+v; want done, 200 recalled", j.ID, inBackground, j.Status, j.Counts)
		}
		for _, m := range env.IM.Emu.GroupMessages(g, "") {
			if !m.Recalled {
				t.Fatalf("%s #%d not recalled", g, m.Seq)
			}
		}
		t.Logf("in the background %v: answered with %d planned (planning %v)", inBackground, created.Planned, created.Planning)
	}
}

// TestRequeueInBackgroundAnswersWhenItWaits: 200 dead letters of a job with
// a backlog of 20 and no worker: RequeueInBackground answers once the
// re-queue waits (20 moved, Requeuing set) instead of never; Close stops it,
// leaving the 180 it did not move dead letters and nothing in its journal.
func TestRequeueInBackgroundAnswersWhenItWaits(t *testing.T) {
	t.Parallel()
	env := imrecalltest.Start(t, imrecalltest.Options{NoWorker: true})
	c := backlogClient(t, env)
	ctx := t.Context()
	job := deadJob(t, env, 200, 20)
	r, err := c.RequeueInBackground(ctx, job.ID, imrecall.DeadLetterFilter{Code: "10002"}, imrecall.RequeueOptions{Actor: "alice", Reason: "test", Confirmed: true})
	if err != nil || !r.Requeuing || r.Messages != 20 || r.Tasks != 2 {
		t.Fatalf("RequeueInBackground = %+v, %v; want requeuing, 20 moved in 2 tasks", r, err)
	}
	c.Close()
	j, err := c.Job(ctx, job.ID)
	if err != nil || j.Counts.Pending != 20 || j.Counts.DeadLettered != 180 {
		t.Fatalf("after Close: %+v, %v; want 20 pending, 180 still dead letters", j.Counts, err)
	}
	if err := env.Store.RequeueJournal(ctx, job.ID, func(t2 jobs.Target, items []string) error {
		return fmt.Errorf("journal holds %v of %s", items, t2)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RequeueInBackground(ctx, job.ID, imrecall.DeadLetterFilter{}, imrecall.RequeueOptions{Actor: "alice", Reason: "test", Confirmed: true}); !errors.Is(err, imrecall.ErrClosed) {
		t.Fatalf("RequeueInBackground after Close = %v, want ErrClosed", err)
	}
}

// deadJob is a job of n messages of one group (@TGS#dead, seqs 1..n), all
// dead letters that need attention (10002 after its attempts), with a
// bound of backlog on its queued work (0: none).
func deadJob(t *testing.T, env *imrecalltest.Env, n, backlog int) jobs.Job {
	t.Helper()
	ctx := t.Context()
	job, err := env.Store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: "purge", AppID: imrecalltest.AppID, RequestedBy: "t", Backlog: int64(backlog)})
	if err != nil {
		t.Fatal(err)
	}
	g := jobs.Target{GroupID: "@TGS#dead"}
	seqs := make([]int64, n)
	out := make([]jobs.Outcome, n)
	for i := range seqs {
		seqs[i] = int64(i + 1)
		out[i] = jobs.Outcome{Item: fmt.Sprint(i + 1), Code: "10002"}
	}
	if _, err := env.Store.PlanGroup(ctx, job.ID, g, seqs); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Store.Record(ctx, job.ID, g, out); err != nil {
		t.Fatal(err)
	}
	return job
}

// TestLargeRequeueNeedsConfirmation: a re-queue of more dead letters than
// Config.ConfirmAbove is a bulk action like a job of as many messages: it
// is refused with *ConfirmationRequired unless confirmed, moving nothing
// and recording nothing. Only the CLI asked (above a fixed 1000); the API
// and RequeueInBackground re-sent any number at once.
func TestLargeRequeueNeedsConfirmation(t *testing.T) {
	t.Parallel()
	c, env := newClient(t, 2)
	ctx := t.Context()
	job := deadJob(t, env, 3, 0)
	who := imrecall.RequeueOptions{Actor: "alice", Reason: "Tencent 10002 storm over"}
	var need *imrecall.ConfirmationRequired
	if _, err := c.Requeue(ctx, job.ID, imrecall.DeadLetterFilter{}, who); !errors.As(err, &need) || need.Messages != 3 || need.Above != 2 {
		t.Fatalf("Requeue of 3 above 2 = %v, want *ConfirmationRequired for 3", err)
	}
	if _, err := c.RequeueInBackground(ctx, job.ID, imrecall.DeadLetterFilter{}, who); !errors.As(err, &need) {
		t.Fatalf("RequeueInBackground of 3 above 2 = %v, want *ConfirmationRequired", err)
	}
	declined := who
	declined.Confirm = func(context.Context, *imrecall.ConfirmationRequired) error { return errors.New("no") }
	if _, err := c.Requeue(ctx, job.ID, imrecall.DeadLetterFilter{}, declined); err == nil || err.Error() != "no" {
		t.Fatalf("Requeue declined = %v, want the answer's error", err)
	}
	if j, err := c.Job(ctx, job.ID); err != nil || j.Counts.DeadLettered != 3 || j.Counts.Pending != 0 {
		t.Fatalf("after refused re-queues: %+v (%v), want 3 dead letters", j.Counts, err)
	}
	evs, err := c.Store().AuditLog(ctx, 10)
	for _, e := range evs {
		if e.JobID == job.ID && e.Action != "create" {
			t.Fatalf("a refused re-queue is on the audit record: %+v (%v)", e, err)
		}
	}
	// A smaller one, and a confirmed one, go ahead.
	if r, err := c.Requeue(ctx, job.ID, imrecall.DeadLetterFilter{Code: "10002"}, imrecall.RequeueOptions{Actor: "alice", Reason: "r", Confirmed: true}); err != nil || r.Messages != 3 {
		t.Fatalf("confirmed Requeue = %+v, %v; want 3 moved", r, err)
	}
}
