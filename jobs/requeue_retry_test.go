package jobs

import (
	"slices"
	"sync/atomic"
	"testing"

	"github.com/imrecall/imrecall/internal/redistest"
)

// TestRequeueAnswerLostIsRetriedSafely moves dead letters back to pending
// through go-redis with its default retries, over a connection to a real
// redis-server that loses the re-queue script's first answer after Redis
// ran it: go-redis sends the script again. The retry must answer the
// messages the first run moved, which the re-queue then queues. Before the
// fix it found them moved already and answered none: `dlq requeue`
// reported them not re-queued and queued no task for them, and they stayed
// pending with nothing in flight until a reconciler noticed the job
// stalled (or never, for a job the reconciler leaves alone).
func TestRequeueAnswerLostIsRetriedSafely(t *testing.T) {
	ctx := t.Context()
	s, armed, j := lossyJob(t, requeueScript)
	g := Target{GroupID: "g"}
	if _, err := s.PlanGroup(ctx, j.ID, g, []int64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClosePlanner(ctx, j.ID, RootPlanner); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, j.ID, g, []Outcome{
		{Item: "1", Code: "10002", Attempts: 5}, {Item: "2", Code: "10002", Attempts: 5}, {Item: "3", Recalled: true, Attempts: 1},
	}); err != nil {
		t.Fatal(err)
	}
	moved, err := retried(t, armed, func() ([]string, error) { return s.Requeue(ctx, j.ID, g, []string{"1", "2"}) })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(moved, []string{"1", "2"}) {
		t.Fatalf("moved %v, want [1 2]: the messages moved back to pending must be queued", moved)
	}
	mustCounts(t, s, j.ID, Counts{Planned: 3, Recalled: 1, Pending: 2})
	// A later re-queue (another call) moves nothing again.
	if moved, err := s.Requeue(ctx, j.ID, g, []string{"1", "2"}); err != nil || len(moved) != 0 {
		t.Fatalf("a second re-queue moved %v, %v; want nothing", moved, err)
	}
}

// TestRequeueLockAnswerLostIsRetriedSafely takes a job's re-queue lock over
// a connection that loses the answer to the SET that took it: go-redis
// sends it again, and Redis answers that the key is held, by this very
// taker. Before the fix the re-queue was refused as busy, naming its own
// holder (CLI exit 2, API 409), and the job stayed locked until the lease
// lapsed; it must take the lock.
func TestRequeueLockAnswerLostIsRetriedSafely(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	armed := new(atomic.Bool)
	holder := "lose-this-answer"
	rdb := lossyClient(t, srv.Addr(), []byte(holder), armed)
	s := NewStore(rdb, "")
	l, err := retried(t, armed, func() (*RequeueLock, error) { return s.LockRequeue(ctx, "j1", holder) })
	if err != nil {
		t.Fatalf("taking the lock, its answer lost and retried: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if l, err := s.LockRequeue(ctx, "j1", "bob"); err != nil {
		t.Fatalf("after the release: %v", err)
	} else {
		_ = l.Release(ctx)
	}
}
