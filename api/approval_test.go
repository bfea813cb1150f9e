package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// TestApprovalNeedsASecondAdmin: with ApprovalAbove 3, a job of 5 messages
// waits in awaiting_approval; its requester's token cannot approve it
// (403), a read token cannot (403), a second admin can, once (then 409),
// and the job runs to done on an in-process worker.
func TestApprovalNeedsASecondAdmin(t *testing.T) {
	env := imrecalltest.Start(t, imrecalltest.Options{})
	b, msgs := approvalServer(t, env, "@TGS#approval")
	// The dry run says the job would wait; a dry run of 3 messages would not.
	var dry CreateJobResponse
	if code := b.call("POST", "/v1/jobs", adminSecret, CreateJobRequest{Kind: KindRecall, Reason: "INC-9", Messages: msgs, DryRun: true}, &dry); code != http.StatusOK || dry.ApprovalAbove != 3 {
		t.Fatalf("dry run: HTTP %d, approval_above %d; want 200, 3", code, dry.ApprovalAbove)
	}
	var dry3 CreateJobResponse
	if code := b.call("POST", "/v1/jobs", adminSecret, CreateJobRequest{Kind: KindRecall, Reason: "INC-9", Messages: msgs[:3], DryRun: true}, &dry3); code != http.StatusOK || dry3.ApprovalAbove != 0 || dry3.Messages != 3 {
		t.Fatalf("dry run of 3: HTTP %d, %+v; want 200, 3 messages, no approval", code, dry3)
	}
	var created CreateJobResponse
	if code := b.call("POST", "/v1/jobs", adminSecret, CreateJobRequest{Kind: KindRecall, Reason: "INC-9", Messages: msgs}, &created); code != http.StatusCreated {
		t.Fatalf("create: HTTP %d", code)
	}
	id := created.Job.ID
	if created.Job.Status != jobs.StatusAwaitingApproval || !created.Job.HeldForApproval || created.Job.Requester != "token:alice" {
		t.Fatalf("a job above --approval-above = %+v, want awaiting_approval, requested by token:alice", created.Job)
	}
	var e apiError
	if code := b.call("POST", "/v1/jobs/"+id+"/approve", adminSecret, map[string]string{"reason": "mine"}, &e); code != http.StatusForbidden {
		t.Fatalf("the requester's own approval: HTTP %d %q, want 403", code, e.Error)
	}
	if code := b.call("POST", "/v1/jobs/"+id+"/approve", readSecret, map[string]string{"reason": "x"}, &e); code != http.StatusForbidden {
		t.Fatalf("a read token's approval: HTTP %d, want 403", code)
	}
	if j, _ := env.Store.Get(t.Context(), id); j.Status != jobs.StatusAwaitingApproval || j.Counts.Recalled != 0 {
		t.Fatalf("after refused approvals the job = %s with %d recalled, want still held", j.Status, j.Counts.Recalled)
	}
	var approved jobs.Job
	if code := b.call("POST", "/v1/jobs/"+id+"/approve", "bob-"+adminSecret, map[string]string{"reason": "scope checked"}, &approved); code != http.StatusOK {
		t.Fatalf("a second admin's approval: HTTP %d", code)
	}
	if approved.ApprovedBy != "token:bob" {
		t.Fatalf("approved by %q, want token:bob", approved.ApprovedBy)
	}
	if code := b.call("POST", "/v1/jobs/"+id+"/approve", "bob-"+adminSecret, map[string]string{"reason": "again"}, &e); code != http.StatusConflict {
		t.Fatalf("approving twice: HTTP %d, want 409", code)
	}
	env.RequireOutcome(t, id, imrecalltest.Outcome{Status: jobs.StatusDone, Recalled: 5})
	evs, err := env.Store.AuditLog(t.Context(), 20)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		found = found || ev.Action == "approve" && ev.JobID == id && ev.Actor == "token:bob" && strings.Contains(ev.Detail, "scope checked")
	}
	if !found {
		t.Fatalf("no approve event by token:bob in the audit log: %+v", evs)
	}
}

// TestScheduledJobIsHeldForApproval: with ApprovalAbove 3 on the API
// server, a schedule an admin adds through it fires (in a worker whose
// Client has no threshold of its own) a job of 5 messages that waits in
// awaiting_approval, requested by that admin: a second admin approves it.
// A helper's attack reproduced the bypass: the fired job ran at once.
func TestScheduledJobIsHeldForApproval(t *testing.T) {
	var fire *imrecall.Client // the worker's, set once env is up
	env := imrecalltest.Start(t, imrecalltest.Options{Handlers: map[string]asynq.Handler{
		tasks.TypeScheduleRun: asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
			return fire.FireSchedule(ctx, task, slog.New(slog.DiscardHandler))
		}),
	}})
	var err error
	if fire, err = imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client}); err != nil {
		t.Fatal(err)
	}
	b, msgs := approvalServer(t, env, "@TGS#scheduled")
	schedules := b.srv.cfg.Schedules
	add := map[string]any{"name": "sweep", "cron": "@every 1s", "reason": "nightly sweep",
		"request": CreateJobRequest{Kind: KindRecall, Reason: "nightly sweep", Messages: msgs}}
	var added producer.Schedule
	if code := b.call("POST", "/v1/schedules", adminSecret, add, &added); code != http.StatusCreated || added.ApprovalAbove != 3 || added.Requester != "token:alice" {
		t.Fatalf("add schedule: HTTP %d %+v, want 201 carrying approval above 3, requested by token:alice", code, added)
	}
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	go func() {
		_ = (&producer.Scheduler{Schedules: schedules, Queue: env.Queue, Sync: 50 * time.Millisecond, Tick: 50 * time.Millisecond}).Run(ctx)
	}()
	var job jobs.Job
	for deadline := time.Now().Add(imrecalltest.WaitTimeout); job.ID == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the schedule never fired")
		}
		list, err := env.Store.List(t.Context(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > 0 && list[len(list)-1].Status != jobs.StatusPlanning {
			job = list[len(list)-1]
		}
	}
	stop()
	if job.Status != jobs.StatusAwaitingApproval || !job.HeldForApproval || job.Requester != "token:alice" || job.Counts.Recalled != 0 {
		t.Fatalf("the fired job = %s held %v requester %q, %d recalled; want awaiting_approval, held, token:alice, none recalled",
			job.Status, job.HeldForApproval, job.Requester, job.Counts.Recalled)
	}
	var e apiError
	if code := b.call("POST", "/v1/jobs/"+job.ID+"/approve", adminSecret, map[string]string{"reason": "mine"}, &e); code != http.StatusForbidden {
		t.Fatalf("the schedule's author approving its firing: HTTP %d %q, want 403", code, e.Error)
	}
	var approved jobs.Job
	if code := b.call("POST", "/v1/jobs/"+job.ID+"/approve", "bob-"+adminSecret, map[string]string{"reason": "scope checked"}, &approved); code != http.StatusOK {
		t.Fatalf("a second admin's approval: HTTP %d", code)
	}
	env.RequireOutcome(t, job.ID, imrecalltest.Outcome{Status: jobs.StatusDone, Recalled: 5})
}

// approvalServer is an API server over env with ApprovalAbove 3 and
// schedules, admin tokens alice and bob and read token auditor, and a
// group of that ID with 5 messages of spammer, listed.
func approvalServer(t *testing.T, env *imrecalltest.Env, group string) (*bundle, []MessageRef) {
	t.Helper()
	client, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID,
		IM: env.Client, ConfirmAbove: 100, ApprovalAbove: 3})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Client: client, AppID: imrecalltest.AppID, Schedules: producer.NewSchedules(env.Redis, ""), Tokens: []Token{
		{Name: "alice", Role: RoleAdmin, Secret: adminSecret},
		{Name: "bob", Role: RoleAdmin, Secret: "bob-" + adminSecret},
		{Name: "auditor", Role: RoleRead, Secret: readSecret},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	env.IM.Accounts(t, "spammer", "bob")
	g := env.IM.Group(t, "Public", group, "spammer", "bob")
	var msgs []MessageRef
	for _, s := range env.IM.SendGroup(t, g, "", 5, "spammer") {
		msgs = append(msgs, MessageRef{GroupID: g, MsgSeq: s})
	}
	return &bundle{t: t, url: hs.URL, srv: srv, store: env.Store}, msgs
}
