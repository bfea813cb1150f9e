package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// heldJob creates a job held for approval, requested by token:alice, and
// plans and queues every message of groups.
func (l *live) heldJob(t *testing.T, groups ...string) jobs.Job {
	t.Helper()
	spec := jobs.Spec{Kind: "test", Queue: tasks.QueuePurge, AppID: imtest.AppID,
		RequestedBy: "token:alice", Requester: "token:alice", HoldForApproval: true}
	return l.newJob(t, spec, nil, groups...)
}

// parkedHeld waits until every task of a held job is parked, and checks
// that no recall call was made and nothing was recalled.
func (l *live) parkedHeld(t *testing.T, id string, tasks int64, groups ...string) {
	t.Helper()
	waitFor(t, "every task of the held job parked", func() bool {
		n, _ := l.store.ParkedCount(t.Context(), id)
		return n == tasks && l.queued(t) == 0
	})
	if calls := l.env.Emu.Stats()[tim.GroupMsgRecall.Name()].Calls; calls != 0 {
		t.Fatalf("%d group_msg_recall calls for a held job", calls)
	}
	for _, g := range groups {
		for _, m := range l.env.Emu.GroupMessages(g, "") {
			if m.Recalled {
				t.Fatalf("group %s seq %d recalled while its job was held", g, m.Seq)
			}
		}
	}
}

// TestHeldJobRunsAfterApproval: a job held for approval sends nothing (its
// tasks park; a resume does not release them); its requester cannot approve
// it; a second admin's approval releases it and it runs to done with counts
// that reconcile.
func TestHeldJobRunsAfterApproval(t *testing.T) {
	l := startLive(t, emulator.Config{}, 4)
	groups := l.seed(t, "held", 3, 40) // 12 tasks
	j := l.heldJob(t, groups...)
	l.parkedHeld(t, j.ID, 12, groups...)
	if got := l.check(t, j.ID); got.Status != jobs.StatusAwaitingApproval || got.Phase != jobs.StatusRunning || got.Counts.Pending != 120 {
		t.Fatalf("held job = %s (phase %s) %+v", got.Status, got.Phase, got.Counts)
	}
	// A resume is not an approval.
	if err := l.store.SetPaused(t.Context(), j.ID, "token:alice", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpark(t.Context(), l.store, l.client, j.ID); err != nil {
		t.Fatal(err)
	}
	l.parkedHeld(t, j.ID, 12, groups...)

	_, err := l.store.Approve(t.Context(), j.ID, "token:alice", "looks fine to me", 0)
	var self *jobs.SelfApprovalError
	if !errors.As(err, &self) {
		t.Fatalf("the requester's approval = %v, want a SelfApprovalError", err)
	}
	if _, err := l.store.Approve(t.Context(), j.ID, "token:bob", "scope checked", 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the approved job to finish", func() bool { return l.get(t, j.ID).Finished() })
	got := l.check(t, j.ID)
	if got.Status != jobs.StatusDone || got.Counts.Recalled != 120 || got.Counts.DeadLettered != 0 ||
		got.ApprovedBy != "token:bob" || got.ApprovedAt == nil {
		t.Fatalf("approved job = %s %+v by %q at %v", got.Status, got.Counts, got.ApprovedBy, got.ApprovedAt)
	}
	l.allRecalled(t, groups...)
}

// TestCancelInCoolOff: an approved job in its cool-off sends nothing; a
// cancel then stops it for good (its messages are dead-lettered as
// cancelled without a call, and the counts reconcile). A second job whose
// cool-off ends starts by itself and runs to done.
func TestCancelInCoolOff(t *testing.T) {
	l := startLive(t, emulator.Config{}, 4)
	groups := l.seed(t, "cool", 2, 30) // 6 tasks
	j := l.heldJob(t, groups...)
	l.parkedHeld(t, j.ID, 6, groups...)
	approved, err := l.store.Approve(t.Context(), j.ID, "token:bob", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if approved.Status != jobs.StatusApproved || approved.StartsAt == nil {
		t.Fatalf("approved with a cool-off = %+v", approved)
	}
	// The unparker looks every 50 ms: it must leave the job parked.
	if _, err := Unpark(t.Context(), l.store, l.client, j.ID); err != nil {
		t.Fatal(err)
	}
	l.parkedHeld(t, j.ID, 6, groups...)
	if _, err := l.store.Cancel(t.Context(), j.ID, "token:carol", "wrong user"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cancelled job to settle", func() bool { return l.get(t, j.ID).Finished() })
	got := l.check(t, j.ID)
	if got.Status != jobs.StatusCancelled || got.Counts.Recalled != 0 || got.Counts.DeadByCode[jobs.CodeCancelled] != 60 {
		t.Fatalf("cancelled in the cool-off = %s %+v", got.Status, got.Counts)
	}
	if calls := l.env.Emu.Stats()[tim.GroupMsgRecall.Name()].Calls; calls != 0 {
		t.Fatalf("%d group_msg_recall calls for a job cancelled in its cool-off", calls)
	}

	later := l.seed(t, "later", 1, 20)
	k := l.heldJob(t, later...)
	l.parkedHeld(t, k.ID, 2, later...)
	if _, err := l.store.Approve(t.Context(), k.ID, "token:bob", "", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job to start after its cool-off and finish", func() bool { return l.get(t, k.ID).Finished() })
	if got := l.check(t, k.ID); got.Status != jobs.StatusDone || got.Counts.Recalled != 20 {
		t.Fatalf("job after its cool-off = %s %+v", got.Status, got.Counts)
	}
	l.allRecalled(t, later...)
}
