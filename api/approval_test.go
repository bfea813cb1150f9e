package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
)

// TestApprovalNeedsASecondAdmin: with ApprovalAbove 3, a job of 5 messages
// waits in awaiting_approval; its requester's token cannot approve it
// (403), a read token cannot (403), a second admin can, once (then 409),
// and the job runs to done on an in-process worker.
func TestApprovalNeedsASecondAdmin(t *testing.T) {
	env := imrecalltest.Start(t, imrecalltest.Options{})
	client, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID,
		IM: env.Client, ConfirmAbove: 100, ApprovalAbove: 3})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Client: client, AppID: imrecalltest.AppID, Tokens: []Token{
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
	b := &bundle{t: t, url: hs.URL, srv: srv, store: env.Store}

	env.IM.Accounts(t, "spammer", "bob")
	g := env.IM.Group(t, "Public", "@TGS#approval", "spammer", "bob")
	seqs := env.IM.SendGroup(t, g, "", 5, "spammer")
	var msgs []MessageRef
	for _, s := range seqs {
		msgs = append(msgs, MessageRef{GroupID: g, MsgSeq: s})
	}
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
