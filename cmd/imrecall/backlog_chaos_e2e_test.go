package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
)

// TestBacklogUnderChaos: `recall file --backlog 100` of 1,400 messages
// (1,200 one-to-one: 6 s of calls at the cap, so the planner mostly waits)
// plans while two workers drain it, and meanwhile the test SIGKILLs a
// worker (and starts it again), restarts Redis, and SIGKILLs the other
// worker, each while the planner waits for the workers. The bound holds
// throughout (never more than 100 pending), the planner rides out the
// restart (it waits on the job's counts, renewing its lease, and retries),
// and every listed message ends planned once and recalled, checked against
// the emulator. Should the restart interrupt the planner, its job must
// settle as an interrupted plan and running the same command again finish
// it, the two jobs between them accounting for each message once.
func TestBacklogUnderChaos(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200, Seed: 7})
	listed, path := seedList(t, e.env, 4, 50, 8, 150)
	pool := newChaosPool(e, 2)
	pool.start(0)
	pool.start(1)

	w := e.watchNewestJob("")
	counts := func() jobs.Counts { return w.latest().Counts }

	args := []string{"recall", "file", path, "--reason", "test", "--yes", "--json", "--backlog", "100"}
	cmd := imrecallCommand(t.Context(), e.bin, args...)
	cmd.Env = e.environ()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	start := time.Now()
	for step, at := range []int64{300, 700, 1100} {
		for counts().Planned < at {
			select {
			case err := <-exited:
				t.Fatalf("the planner exited (%v) before step %d, with %d planned:\n%s", err, step, counts().Planned, stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
			if time.Since(start) > 2*time.Minute {
				t.Fatalf("the planner never reached %d planned (%+v)", at, counts())
			}
		}
		switch step {
		case 0:
			pool.kill(0)
			time.Sleep(500 * time.Millisecond)
			pool.start(0)
		case 1:
			e.redis.Restart()
		case 2:
			pool.kill(1)
			time.Sleep(500 * time.Millisecond)
			pool.start(1)
		}
		c := counts()
		t.Logf("%5.1fs step %d at %d planned, %d pending", time.Since(start).Seconds(), step, c.Planned, c.Pending)
	}

	var ids []string
	var ee *exec.ExitError
	err := <-exited
	t.Logf("%5.1fs the planner exited: %v", time.Since(start).Seconds(), err)
	switch {
	case err == nil:
		ids = append(ids, jobIDOf(t, stdout.String()))
	case errors.As(err, &ee):
		t.Logf("the planner failed after the chaos (%v); running it again:\n%s", err, stderr.String())
		first := w.latest().ID
		out, err := e.run(args...)
		ids = append(ids, first, jobIDOf(t, e.must(out, err)))
	default:
		t.Fatal(err)
	}
	last := e.waitDone(ids[len(ids)-1], 2*time.Minute)
	w.stop()
	if last.Status != jobs.StatusDone || last.Counts.Pending != 0 || last.Backlog != 100 {
		t.Fatalf("job %s: %s %+v, backlog %d; want done, nothing pending", last.ID, last.Status, last.Counts, last.Backlog)
	}
	if len(ids) == 2 {
		e.settleInterrupted(ids[0])
		e.twoJobsAccount(ids[0], ids[1], keysOf(listed), false)
	} else if last.Counts.Planned != int64(len(listed)) || last.Counts.Recalled != int64(len(listed)) {
		t.Fatalf("job %s: %+v; want all %d listed messages planned and recalled", last.ID, last.Counts, len(listed))
	}
	maxPending := w.maxPending()
	if maxPending > 100 {
		t.Errorf("a job had %d messages pending at once; its backlog is 100", maxPending)
	}
	checkListTruth(t, e.env, listed)
	t.Logf("jobs %v: at most %d pending (backlog 100), %.1f s", ids, maxPending, time.Since(start).Seconds())
}
