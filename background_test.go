package imrecall_test

import (
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
