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
