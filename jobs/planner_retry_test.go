package jobs

import "testing"

// TestInterruptAnswerLostIsRetriedSafely interrupts a job's planner (its
// lease lapsed) over a connection to a real redis-server that loses the
// interrupt script's first answer after Redis ran it: go-redis sends the
// script again. The retry must answer as the first run did: the job's
// status afterwards. Before the fix the retry found the unit closed and
// answered "" ("the unit was not open"): the reconciler neither counted the
// interruption (Summary.Interrupted) nor logged that the planner was gone.
func TestInterruptAnswerLostIsRetriedSafely(t *testing.T) {
	ctx := t.Context()
	s, armed := lossyStore(t, interruptScript)
	j := newJob(t, s)
	armed.Store(true)
	st, err := s.InterruptPlanner(ctx, j.ID, RootPlanner, "lease lapsed")
	if armed.Load() {
		t.Fatal("no answer was lost: the test did not exercise the retry")
	}
	if err != nil || st != StatusFailed {
		t.Fatalf("InterruptPlanner, its answer lost and retried = %q, %v; want %q", st, err, StatusFailed)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusFailed || got.PlanningInterrupted == nil || got.PlanningInterrupted.Units != RootPlanner {
		t.Fatalf("job = %s, interruption %+v; want failed, %s interrupted once", got.Status, got.PlanningInterrupted, RootPlanner)
	}
	// Another call (a later reconcile pass) finds the unit closed.
	if st, err := s.InterruptPlanner(ctx, j.ID, RootPlanner, "lease lapsed"); err != nil || st != "" {
		t.Fatalf("a second InterruptPlanner = %q, %v; want \"\" (not open)", st, err)
	}
}
