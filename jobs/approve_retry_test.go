package jobs

import (
	"testing"
	"time"
)

// TestApproveAnswerLostIsRetriedSafely approves held jobs through go-redis
// with its default retries, over a connection to a real redis-server that
// loses the approve script's first answer after Redis ran it (a network
// that dropped the reply, a Redis behind a slow link): go-redis sends the
// script again. The retry must answer as the first run did. Before the fix
// it found the job approved already and refused: Approve returned a
// *StatusError to the operator, audited an approve_refused, and, for an
// approval with a delay, removed its own entry from the cool-off index, so
// that the job stayed "approved" for ever: StartDue never started it and
// nothing it planned was ever recalled.
func TestApproveAnswerLostIsRetriedSafely(t *testing.T) {
	for _, delay := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			ctx := t.Context()
			s, armed := lossyStore(t, approveScript)
			j := newHeldJob(t, s)
			got, err := retried(t, armed, func() (Job, error) { return s.Approve(ctx, j.ID, "token:bob", "looks right", delay) })
			if err != nil {
				t.Fatalf("Approve, its answer lost and retried: %v", err)
			}
			want := StatusPlanning
			if delay > 0 {
				want = StatusApproved
			}
			if got.Status != want || got.ApprovedBy != "token:bob" {
				t.Fatalf("approved = %+v, want %s by token:bob", got, want)
			}
			if delay > 0 {
				startWhenDue(t, s, j.ID, 5*time.Second)
			}
			if held, err := s.Held(ctx, j.ID); err != nil || held {
				t.Fatalf("still held after the approval (and its cool-off): %v, %v", held, err)
			}
			if refused := auditCount(t, s, j.ID, "approve_refused"); refused != 0 {
				t.Fatalf("%d approve_refused audit events for an approval that took effect", refused)
			}
		})
	}
}

// TestStartAnswerLostIsRetriedSafely ends an approved job's cool-off over a
// connection that loses the start script's first answer after Redis ran
// it: go-redis sends the script again. The retry must answer "started" as
// the first run did. Before the fix it found the hold gone and answered
// "not in its cool-off": StartDue did not report the job (its parked tasks
// waited for another path to release them) and the audit trail had no
// start event for it. Two unparkers at once still start it once.
func TestStartAnswerLostIsRetriedSafely(t *testing.T) {
	ctx := t.Context()
	s, armed := lossyStore(t, startScript)
	j := newHeldJob(t, s)
	if _, err := s.Approve(ctx, j.ID, "token:bob", "looks right", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	started, err := retried(t, armed, func() ([]string, error) { return s.StartDue(ctx) })
	if err != nil || len(started) != 1 || started[0] != j.ID {
		t.Fatalf("StartDue, its answer lost and retried = %v, %v; want [%s]", started, err, j.ID)
	}
	again, err := NewStore(s.rdb, "").StartDue(ctx) // a second unparker
	if err != nil || len(again) != 0 {
		t.Fatalf("a second unparker's StartDue = %v, %v; want nothing left to start", again, err)
	}
	if held, err := s.Held(ctx, j.ID); err != nil || held {
		t.Fatalf("still held after its cool-off: %v, %v", held, err)
	}
	if starts := auditCount(t, s, j.ID, "start"); starts != 1 {
		t.Fatalf("%d start audit events, want 1", starts)
	}
}

// auditCount counts the audit events of action about job jobID among the
// last 100.
func auditCount(t *testing.T, s *Store, jobID, action string) int {
	t.Helper()
	events, err := s.AuditLog(t.Context(), 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range events {
		if e.JobID == jobID && e.Action == action {
			n++
		}
	}
	return n
}
