package producer

import (
	"errors"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// TestDiscoveryTasks queues a user purge's scans as tasks and runs each task
// twice, as a redelivery after a crash would: the job plans every message
// once, and leaves planning only when every scan has run.
func TestDiscoveryTasks(t *testing.T) {
	ctx := t.Context()
	env := imtest.Start(t, emulator.Config{})
	ds, err := env.Emu.Generate(emulator.DatasetSpec{Groups: 12, Users: 60, GroupMessages: 3000, C2CMessages: 300, HeavyGroups: 8, HeavyShare: 0.2, Peers: 4, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	spammer := ds.HeavySenders[0]
	store, q, insp := onMiniredis(t)

	spec := UserPurge{User: spammer, Peers: ds.PeersOf[spammer]}
	dry := &Tally{}
	if _, err := PlanUserPurge(ctx, env.Client, spec, dry); err != nil {
		t.Fatal(err)
	}
	job, _ := store.Create(ctx, jobs.Spec{Kind: "purge:user", Queue: tasks.QueuePurge, AppID: imtest.AppID, RequestedBy: "t"})
	scans, _, err := UserScans(ctx, env.Client, spec)
	if err != nil {
		t.Fatal(err)
	}
	n, err := EnqueueScans(ctx, store, q, job, scans)
	if err != nil || n != len(scans) {
		t.Fatalf("EnqueueScans = %d, %v", n, err)
	}
	store.ClosePlanner(ctx, job.ID, jobs.RootPlanner)
	pending, err := insp.ListPendingTasks(tasks.DiscoveryQueue(tasks.QueuePurge), asynq.PageSize(1000))
	if err != nil {
		t.Fatal(err)
	}
	h := NewDiscoverHandler(env.Client, store, q, nil)
	var discover []*asynq.Task
	for _, ti := range pending {
		if ti.Type == tasks.TypeDiscover {
			discover = append(discover, asynq.NewTask(ti.Type, ti.Payload))
		}
	}
	if len(discover) != len(scans) {
		t.Fatalf("%d discovery tasks queued for %d scans", len(discover), len(scans))
	}
	for i, task := range discover {
		for range 2 { // delivered twice
			if err := h.Handle(ctx, task); err != nil {
				t.Fatal(err)
			}
		}
		j, _ := store.Get(ctx, job.ID)
		if last := i == len(discover)-1; (j.Status == jobs.StatusPlanning) == last {
			t.Fatalf("after %d of %d scans the job is %s", i+1, len(discover), j.Status)
		}
	}
	j, _ := store.Get(ctx, job.ID)
	if int(j.Counts.Planned) != dry.Count() || j.Counts.Planned == 0 {
		t.Fatalf("planned %d, the dry run found %d", j.Counts.Planned, dry.Count())
	}

	// A cancelled job's scan plans nothing and still closes its unit; a task
	// naming an unknown job is never retried.
	job2, _ := store.Create(ctx, jobs.Spec{Kind: "purge:user", Queue: tasks.QueuePurge, AppID: imtest.AppID, RequestedBy: "t"})
	task, _ := scans[0].task(job2)
	store.OpenPlanner(ctx, job2.ID, scans[0].unit())
	store.Cancel(ctx, job2.ID, "t", "")
	if err := h.Handle(ctx, task); err != nil {
		t.Fatal(err)
	}
	if j2, _ := store.Get(ctx, job2.ID); j2.Counts.Planned != 0 || !j2.Finished() {
		t.Fatalf("cancelled job = %+v", j2)
	}
	ghost, _ := scans[0].task(jobs.Job{ID: "20260101T000000Z-00000000", AppID: imtest.AppID, Queue: tasks.QueuePurge})
	if err := h.Handle(ctx, ghost); !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("unknown job: err = %v, want SkipRetry", err)
	}
}
