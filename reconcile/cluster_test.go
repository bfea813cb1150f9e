package reconcile

import (
	"errors"
	"slices"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// TestReconcilerOnRedisCluster: on a real 3-master Redis Cluster, the plan
// journal, the leases and the reconciler's scripts stay in the job's slot,
// and its search for tasks in flight scans every master.
func TestReconcilerOnRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	b := setupOn(t, cl.Client(), asynq.RedisClusterClientOpt{Addrs: cl.Addrs()})
	ctx := t.Context()
	job, _, err := producer.NewJob(ctx, b.store, &failingEnqueuer{q: b.client, from: 3, to: 1 << 40}, spec, plan)
	if !errors.Is(err, errEnqueue) {
		t.Fatalf("NewJob error = %v, want the enqueue error", err)
	}
	b.waitLapsed(t, job.ID, jobs.RootPlanner)
	if s := b.pass(t); s.Journaled != 20 {
		t.Fatalf("pass = %+v, want 20 journaled messages queued", s)
	}
	if got := b.queued(t, tasks.QueuePurge); !slices.Equal(got, want) {
		t.Fatalf("queued %v,\nwant %v", got, want)
	}
	if _, err := b.insp.DeleteAllPendingTasks(tasks.QueuePurge); err != nil {
		t.Fatal(err)
	}
	// No progress since the last pass, and now nothing in flight.
	if s := b.pass(t); s.Requeued != 40 {
		t.Fatalf("pass = %+v, want the 40 unsettled messages of the job with nothing in flight queued again", s)
	}
	for range 2 {
		if s := b.pass(t); s.Requeued != 0 {
			t.Fatalf("pass = %+v: the job's tasks are queued (found on their master), want nothing queued", s)
		}
	}
	if got := b.queued(t, tasks.QueuePurge); !slices.Equal(got, want) {
		t.Fatalf("queued %v,\nwant %v", got, want)
	}
}
