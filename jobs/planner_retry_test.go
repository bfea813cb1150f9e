package jobs

import (
	"errors"
	"testing"
)

// TestInterruptAnswerLostIsRetriedSafely interrupts a job's planner (its
// lease lapsed) over a connection to a real redis-server that loses the
// interrupt script's first answer after Redis ran it: go-redis sends the
// script again. The retry must answer as the first run did: the job's
// status afterwards. Before the fix the retry found the unit closed and
// answered "" ("the unit was not open"): the reconciler neither counted the
// interruption (Summary.Interrupted) nor logged that the planner was gone.
func TestInterruptAnswerLostIsRetriedSafely(t *testing.T) {
	ctx := t.Context()
	s, armed, j := lossyJob(t, interruptScript)
	st, err := retried(t, armed, func() (Status, error) { return s.InterruptPlanner(ctx, j.ID, RootPlanner, "lease lapsed") })
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

// TestClosePlannerAnswerLostIsHarmless closes a job's planning units over
// a connection that loses the close script's first answer after Redis ran
// it: go-redis sends the script again. The retry finds the unit closed and
// the job settled already, changes nothing and answers the status the
// first run left (closing the last unit of a job whose messages all ended
// makes it done), so ClosePlanner needs no call key.
func TestClosePlannerAnswerLostIsHarmless(t *testing.T) {
	ctx := t.Context()
	s, armed, j := lossyJob(t, closePlannerScript)
	g := Target{GroupID: "g"}
	if err := s.OpenPlanner(ctx, j.ID, ScanUnit(g)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PlanGroup(ctx, j.ID, g, []int64{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, j.ID, g, []Outcome{{Item: "1", Recalled: true}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		unit string
		want Status
	}{{RootPlanner, StatusPlanning}, {ScanUnit(g), StatusDone}} {
		st, err := retried(t, armed, func() (Status, error) { return s.ClosePlanner(ctx, j.ID, c.unit) })
		if err != nil || st != c.want {
			t.Fatalf("ClosePlanner %s, its answer lost and retried = %q, %v; want %q", c.unit, st, err, c.want)
		}
	}
	if done := mustCounts(t, s, j.ID, Counts{Planned: 1, Recalled: 1}); done.FinishedAt == nil {
		t.Fatal("a done job without a finish time")
	}
}

// TestFailPlannerAnswerLostIsHarmless fails a discovery unit over a
// connection that loses the fail script's first answer after Redis ran it:
// go-redis sends the script again. The retry finds the unit closed, counts
// no second failure and answers the status the first run left; the job
// ends failed once its other unit closes. FailPlanner needs no call key.
func TestFailPlannerAnswerLostIsHarmless(t *testing.T) {
	ctx := t.Context()
	s, armed, j := lossyJob(t, failPlannerScript)
	unit := ScanUnit(Target{GroupID: "g"})
	if err := s.OpenPlanner(ctx, j.ID, unit); err != nil {
		t.Fatal(err)
	}
	st, err := retried(t, armed, func() (Status, error) { return s.FailPlanner(ctx, j.ID, unit, errors.New("history unreadable")) })
	if err != nil || st != StatusPlanning {
		t.Fatalf("FailPlanner, its answer lost and retried = %q, %v; want %q", st, err, StatusPlanning)
	}
	if st, err := s.ClosePlanner(ctx, j.ID, RootPlanner); err != nil || st != StatusFailed {
		t.Fatalf("ClosePlanner root = %q, %v; want %q", st, err, StatusFailed)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.FailedUnits != 1 || got.Error != "history unreadable" {
		t.Fatalf("job failed units %d, error %q; want 1, %q", got.FailedUnits, got.Error, "history unreadable")
	}
}
