package jobs

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/redisproxy"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestReportOfARunningJobUnderLatency: `jobs report` of a job while its
// workers record outcomes, with Redis a few ms away. The report read the
// counters, then recounted target by target while outcomes landed, and said
// NOT RECONCILED (a recount that differs from the counters: the alarm for a
// broken ledger) about a job whose every transition was exact. A report
// agrees with the states it recounted, or it is not made.
func TestReportOfARunningJobUnderLatency(t *testing.T) {
	srv := redistest.Start(t)
	workers := NewStore(srv.Client(), "")
	p, err := redisproxy.Start(srv.Addr(), 3*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	far := redis.NewClient(&redis.Options{Addr: p.Addr()})
	defer far.Close()
	reports := NewStore(far, "")

	ctx := t.Context()
	job := newJob(t, workers)
	const targets, per = 20, 20
	for g := range targets {
		seqs := make([]int64, per)
		for i := range seqs {
			seqs[i] = int64(i + 1)
		}
		if _, err := workers.PlanGroup(ctx, job.ID, Target{GroupID: "@TGS#" + strconv.Itoa(g)}, seqs); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := workers.ClosePlanner(ctx, job.ID, RootPlanner); err != nil {
		t.Fatal(err)
	}
	// The workers: one outcome at a time, every target in turn, until all
	// are recorded.
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= per; i++ {
			for g := range targets {
				out := Outcome{Item: strconv.Itoa(i), Recalled: true, Attempts: 1}
				if i%5 == 0 {
					out = Outcome{Item: strconv.Itoa(i), Code: "10030", Attempts: 1}
				}
				if _, err := workers.Record(context.Background(), job.ID, Target{GroupID: "@TGS#" + strconv.Itoa(g)}, []Outcome{out}); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	var made, wrong int
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		default:
		}
		r, err := reports.BuildReport(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		made++
		if !r.Reconciled {
			wrong++
			t.Logf("report %d: NOT RECONCILED: %s", made, r.ReconcileProblem)
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d reports of a running job said NOT RECONCILED", wrong, made)
	}
	r, err := reports.BuildReport(ctx, job.ID)
	if err != nil || !r.Reconciled || !r.Settled || r.Job.Counts.Planned != targets*per {
		t.Fatalf("the final report: reconciled %v settled %v counts %+v (%v)", r.Reconciled, r.Settled, r.Job.Counts, err)
	}
}
