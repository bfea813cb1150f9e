package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/jobs"
)

// TestApprovalThroughServe: `serve --approval-above 3` with two admin
// tokens holds a job of 5 messages; the requester's token cannot approve it
// (403), the second admin's can (200), and a worker runs it to done.
func TestApprovalThroughServe(t *testing.T) {
	e, addr, _, msgs := approvalServe(t, "@TGS#approve")
	do := func(path, token, body string, out any) int {
		t.Helper()
		code, b := httpCall(t, "POST", "http://"+addr+path, body, append(bearer(token), "Content-Type", "application/json")...)
		if out != nil {
			_ = json.Unmarshal(b, out)
		}
		return code
	}
	var created struct{ Job jobs.Job }
	if code := do("/v1/jobs", e2eAPIToken, `{"kind":"recall","reason":"INC-9","messages":[`+strings.Join(msgs, ",")+`]}`, &created); code != http.StatusCreated {
		t.Fatalf("create: HTTP %d", code)
	}
	id := created.Job.ID
	if created.Job.Status != jobs.StatusAwaitingApproval {
		t.Fatalf("a job of 5 messages with --approval-above 3 is %s, want awaiting_approval", created.Job.Status)
	}
	if code := do("/v1/jobs/"+id+"/approve", e2eAPIToken, `{"reason":"mine"}`, nil); code != http.StatusForbidden {
		t.Fatalf("the requester's approval: HTTP %d, want 403", code)
	}
	var approved jobs.Job
	if code := do("/v1/jobs/"+id+"/approve", bobToken, `{"reason":"checked"}`, &approved); code != http.StatusOK || approved.ApprovedBy != "token:bob" {
		t.Fatalf("the second admin's approval: HTTP %d, approved by %q", code, approved.ApprovedBy)
	}
	if j := e.waitDone(id, time.Minute); j.Status != jobs.StatusDone || j.Counts.Recalled != 5 {
		t.Fatalf("approved job = %s, recalled %d; want done, 5", j.Status, j.Counts.Recalled)
	}
}
