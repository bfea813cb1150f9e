package producer

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// TestBatcherQueuesEverySeqItPlans feeds a Batcher history pages as a
// discovery scan does, with seqs an earlier run planned mixed in, and checks
// after every page that each seq the job counts as planned is in exactly one
// queued task: a worker killed between two pages strands nothing.
func TestBatcherQueuesEverySeqItPlans(t *testing.T) {
	ctx := t.Context()
	store, client, insp := onMiniredis(t)

	job, err := store.Create(ctx, jobs.Spec{Kind: "purge:group", Queue: tasks.QueuePurge, AppID: 1, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	target := jobs.Target{GroupID: "g"}

	// queued returns the seqs of the queued tasks, in task order, and the
	// size of each task.
	queued := func() (seqs []int64, sizes []int) {
		t.Helper()
		infos, err := insp.ListPendingTasks(tasks.QueuePurge, asynq.PageSize(1000))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, nil // nothing queued yet
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range infos {
			p, err := tasks.DecodeGroupRecall(asynq.NewTask(ti.Type, ti.Payload))
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, p.Seqs...)
			sizes = append(sizes, len(p.Seqs))
		}
		return seqs, sizes
	}
	check := func(step string) {
		t.Helper()
		j, err := store.Get(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		seqs, _ := queued()
		distinct := slices.Compact(slices.Sorted(slices.Values(seqs)))
		if len(distinct) != len(seqs) {
			t.Fatalf("%s: a seq is in two tasks: %v", step, seqs)
		}
		if int64(len(seqs)) != j.Counts.Planned {
			t.Fatalf("%s: job counts %d planned, tasks hold %d seqs: planned seqs without a task", step, j.Counts.Planned, len(seqs))
		}
	}

	// An earlier run planned and queued 5, 6 and 7.
	first := NewBatcher(store, client, job, 0)
	if err := first.AddGroup(ctx, target, 5, 6, 7); err != nil {
		t.Fatal(err)
	}
	check("earlier run, before Flush")
	if err := first.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("earlier run")

	b := NewBatcher(store, client, job, 0)
	pages := []struct {
		seqs      []int64
		planned   int64 // by b, after the page
		heldAfter int   // seqs b holds unplanned
	}{
		// 1–13: the first 10 hold 3 planned before, so 3 more are planned to fill the call.
		{imtest.Seqs(1, 13), 10, 0},
		// 14–26: one call of 10; 24–26 wait, unplanned.
		{imtest.Seqs(14, 26), 20, 3},
		// Planned before: nothing to do yet (24–26 and these make 6).
		{[]int64{1, 2, 3}, 20, 6},
		// 27–30 make 10 buffered; 1–3 are old, so 7 are planned and, with
		// nothing left to fill the call, queued as a call of 7.
		{imtest.Seqs(27, 30), 27, 0},
	}
	for i, p := range pages {
		if err := b.AddGroup(ctx, target, p.seqs...); err != nil {
			t.Fatal(err)
		}
		step := fmt.Sprintf("page %d %v", i+1, p.seqs)
		check(step)
		if b.Planned != p.planned {
			t.Fatalf("%s: planned %d, want %d", step, b.Planned, p.planned)
		}
		if held := len(b.raw[target]); held != p.heldAfter {
			t.Fatalf("%s: %d seqs held unplanned, want %d", step, held, p.heldAfter)
		}
		if len(b.ready[target]) != 0 {
			t.Fatalf("%s: %v planned but not queued", step, b.ready[target])
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("after Flush")
	seqs, sizes := queued()
	if want := imtest.Seqs(1, 30); !slices.Equal(slices.Sorted(slices.Values(seqs)), want) {
		t.Fatalf("queued seqs %v, want 1–30 once each", slices.Sorted(slices.Values(seqs)))
	}
	if fmt.Sprint(sizes) != "[3 10 10 7]" {
		t.Fatalf("task sizes %v, want [3 10 10 7]: the earlier run's 3, two full calls, one short by the duplicates", sizes)
	}
}
