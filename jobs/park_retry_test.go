package jobs

import (
	"slices"
	"testing"
)

// TestParkAnswerLostIsRetriedSafely parks a paused job's task through
// go-redis with its default retries, over a connection to a real
// redis-server that loses the park script's first answer after Redis ran
// it: go-redis sends the script again. The retry must answer the first
// run's park and park nothing more. Before the fix it parked the task a
// second time (park number 2): resuming the job queued two copies of it,
// which made the same IM calls twice (the accounting held; the calls were
// spent against the shared cap for nothing).
func TestParkAnswerLostIsRetriedSafely(t *testing.T) {
	ctx := t.Context()
	s, armed, j := lossyJob(t, parkScript)
	if err := s.SetPaused(ctx, j.ID, "alice", "test", true); err != nil {
		t.Fatal(err)
	}
	parkedIDs := func() []string {
		t.Helper()
		p, err := s.Parked(ctx, j.ID, 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, task := range p {
			ids = append(ids, task.TaskID)
		}
		return ids
	}

	parked, err := retried(t, armed, func() (bool, error) { return s.Park(ctx, j.ID, "recall:group", []byte(`{"seqs":[1]}`), "purge", "t1") })
	if err != nil || !parked {
		t.Fatalf("Park, its answer lost and retried = %v, %v; want parked", parked, err)
	}
	if got, want := parkedIDs(), []string{"t1:p1"}; !slices.Equal(got, want) {
		t.Fatalf("parked %v, want %v: one call parks the task once", got, want)
	}
	// Another call (a later delivery of the task) parks it again.
	if parked, err := s.Park(ctx, j.ID, "recall:group", []byte(`{"seqs":[1]}`), "purge", "t1"); err != nil || !parked {
		t.Fatalf("a second Park = %v, %v; want parked", parked, err)
	}
	if got, want := parkedIDs(), []string{"t1:p1", "t1:p2"}; !slices.Equal(got, want) {
		t.Fatalf("parked %v, want %v", got, want)
	}
}
