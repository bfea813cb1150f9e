package jobs

import "testing"

// TestTripAnswerLostIsRetriedSafely trips a job's pause (a worker's
// breaker) over a connection to a real redis-server that loses the pause
// script's first answer after Redis ran it: go-redis sends the script
// again. The retry must answer as the first run did: the job was paused by
// this call. Before the fix the retry found the job paused already and
// answered 0: Trip reported that it had not paused the job, so the
// worker's "pause" audit event was never written (and the worker did not
// log why the job stopped).
func TestTripAnswerLostIsRetriedSafely(t *testing.T) {
	ctx := t.Context()
	s, armed := lossyStore(t, pauseScript)
	j := newJob(t, s)
	armed.Store(true)
	paused, err := s.Trip(ctx, j.ID, "wrong SecretKey")
	if armed.Load() {
		t.Fatal("no answer was lost: the test did not exercise the retry")
	}
	if err != nil || !paused {
		t.Fatalf("Trip, its answer lost and retried = %v, %v; want paused", paused, err)
	}
	if n := auditCount(t, s, j.ID, "pause"); n != 1 {
		t.Fatalf("%d pause audit events, want 1", n)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil || !got.Paused || got.PauseReason != "wrong SecretKey" {
		t.Fatalf("job after the trip = %+v, %v; want paused for the reason given", got, err)
	}
	// Another call (the next task) finds the job paused already.
	if paused, err := s.Trip(ctx, j.ID, "wrong SecretKey"); err != nil || paused {
		t.Fatalf("a second Trip = %v, %v; want not paused by it", paused, err)
	}
}
