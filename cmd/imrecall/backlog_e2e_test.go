package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imrecall/imrecall/api"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
)

// TestBacklogPlannerInterrupted: `recall file --backlog 100` of 1,000
// messages with no worker running plans 100 and waits for the workers
// (issue 17: a bounded backlog). Stopped while it waits (SIGINT: it stops
// and says so; SIGKILL: its lease lapses), the job is an interrupted plan
// like any other: once workers run, it settles by itself (failed, planning
// interrupted, nothing pending), and running the same command again, with
// the workers draining it, never has more than 100 messages pending and
// recalls the rest, checked message by message against the emulator.
func TestBacklogPlannerInterrupted(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newE2E(t, emulator.Config{Rate: 200})
			listed, path := seedList(t, e.env, 12, 80, 4, 10)
			args := []string{"recall", "file", path, "--reason", "test", "--yes", "--json", "--backlog", "100"}
			cmd := imrecallCommand(t.Context(), e.bin, append(args, interruptFlags...)...)
			cmd.Env = e.environ()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()

			// The planner fills the backlog and waits: its job's planned
			// count reaches the bound and stays there while it runs.
			first, planned := "", int64(-1)
			for stable := (time.Time{}); ; time.Sleep(100 * time.Millisecond) {
				select {
				case err := <-exited:
					t.Fatalf("the planner exited with no worker to drain its backlog: %v\n%s", err, stderr.String())
				default:
				}
				list, err := e.store.List(t.Context(), 1)
				if err != nil || len(list) == 0 {
					continue
				}
				j := list[0]
				first = j.ID
				if j.Counts.Planned > 100 {
					t.Fatalf("the planner planned %d messages with a backlog of 100 and no worker", j.Counts.Planned)
				}
				if j.Counts.Planned != planned || planned < 90 {
					planned, stable = j.Counts.Planned, time.Now()
					continue
				}
				if time.Since(stable) > time.Second {
					break
				}
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			var ee *exec.ExitError
			if err := <-exited; !errors.As(err, &ee) {
				t.Fatalf("the planner after %s: %v, want a failure exit\n%s", sig, err, stderr.String())
			}
			t.Logf("planner stopped by %s while waiting with %d planned:\n%s", sig, planned, stderr.String())

			e.worker("w1", "--reconcile-interval", "1s")
			e.worker("w2", "--reconcile-interval", "1s")
			j1, took := e.settleInterrupted(first)
			t.Logf("interrupted job settled %.1f s after the workers started: planned %d, recalled %d", took.Seconds(), j1.Counts.Planned, j1.Counts.Recalled)

			// The re-run, drained by the workers as it plans.
			w := e.watchNewestJob(first)
			out, err := e.run(args...)
			w.stop()
			second := jobIDOf(t, e.must(out, err))
			j2 := e.waitDone(second, 2*time.Minute)
			if j2.Status != jobs.StatusDone || j2.Counts.Pending != 0 || j2.Backlog != 100 {
				t.Fatalf("re-run = %s %+v, backlog %d", j2.Status, j2.Counts, j2.Backlog)
			}
			if maxPending := w.maxPending(); maxPending > 100 {
				t.Errorf("the re-run had %d messages pending at once; its backlog is 100", maxPending)
			}
			t.Logf("re-run: at most %d messages pending (backlog 100)", w.maxPending())
			e.twoJobsAccount(first, second, keysOf(listed), false)
			checkListTruth(t, e.env, listed)
		})
	}
}

// TestServeBacklog: `serve --backlog 50` answers POST /v1/jobs of 400
// listed messages with no worker running once planning waits (201, planning,
// 50 planned) instead of holding the request; a worker then drains it while
// serve plans on, never more than 50 pending, to done, every message
// recalled on the emulator. Serve shut down (SIGTERM) while a second job
// plans stops that planning: it queues what it planned and the job says
// planning was interrupted.
func TestServeBacklog(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200})
	addr := freeAddr(t)
	listed, _ := seedList(t, e.env, 8, 50, 0, 0)
	var refs []string
	for _, m := range listed {
		refs = append(refs, fmt.Sprintf(`{"GroupId":%q,"MsgSeq":%s}`, m.target.GroupID, m.item))
	}
	body := `{"kind":"recall","reason":"INC-17","confirm":true,"messages":[` + strings.Join(refs, ",") + `]}`
	post := func() (int, api.CreateJobResponse) {
		t.Helper()
		code, b := httpCall(t, "POST", "http://"+addr+"/v1/jobs", body, append(bearer(e2eAPIToken), "Content-Type", "application/json")...)
		var resp api.CreateJobResponse
		if err := json.Unmarshal(b, &resp); err != nil {
			t.Fatalf("POST /v1/jobs: HTTP %d %s", code, b)
		}
		return code, resp
	}

	serve, _ := e.serveCmd(addr, "--backlog", "50")
	code, resp := post()
	if code != http.StatusCreated || !resp.Planning || resp.Planned != 50 || resp.Job == nil || resp.Job.Status != jobs.StatusPlanning {
		t.Fatalf("POST /v1/jobs with serve --backlog 50 and no worker: HTTP %d %+v; want 201, planning, 50 planned", code, resp)
	}
	first := resp.Job.ID
	w1 := e.worker("w1")
	var maxPending int64
	for {
		j, err := e.store.Get(t.Context(), first)
		if err != nil {
			t.Fatal(err)
		}
		maxPending = max(maxPending, j.Counts.Pending)
		if j.Finished() {
			if j.Status != jobs.StatusDone || j.Counts.Recalled != int64(len(listed)) || maxPending > 50 {
				t.Fatalf("job %s: %s %+v, at most %d pending; want done, %d recalled, at most 50 pending", first, j.Status, j.Counts, maxPending, len(listed))
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkListTruth(t, e.env, listed)

	// With the worker stopped, a second job of the same messages; serve
	// stops while it plans.
	if err := w1.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w1.Wait(); err != nil {
		t.Fatalf("worker after SIGTERM: %v", err)
	}
	code, resp = post()
	if code != http.StatusCreated || !resp.Planning {
		t.Fatalf("second POST: HTTP %d %+v", code, resp)
	}
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
	j, err := e.store.Get(t.Context(), resp.Job.ID)
	if err != nil || j.PlanningInterrupted == nil || !strings.Contains(j.Error, "server shutting down") || j.Counts.Planned != 50 {
		t.Fatalf("the job serve was planning when it stopped: %+v, %v; want planning interrupted (server shutting down)", j, err)
	}
	t.Logf("first job: at most %d pending of 50; second job stopped with %d planned", maxPending, j.Counts.Planned)
}

// jobWatch samples the newest job every 20 ms (skipping Redis errors, and
// the job it was told to skip) until stopped: the latest sample, and the
// most messages pending at any sample.
type jobWatch struct {
	mu      sync.Mutex
	newest  jobs.Job
	pending int64
	done    chan struct{}
	sampled chan struct{}
}

// watchNewestJob starts a jobWatch that ignores the job skip ("" none).
func (e *e2e) watchNewestJob(skip string) *jobWatch {
	w := &jobWatch{done: make(chan struct{}), sampled: make(chan struct{})}
	go func() {
		defer close(w.sampled)
		for {
			select {
			case <-w.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if list, err := e.store.List(e.t.Context(), 1); err == nil && len(list) == 1 && list[0].ID != skip {
				w.mu.Lock()
				w.newest, w.pending = list[0], max(w.pending, list[0].Counts.Pending)
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// stop ends the sampling and waits for it.
func (w *jobWatch) stop() {
	close(w.done)
	<-w.sampled
}

// latest is the newest job at the last sample.
func (w *jobWatch) latest() jobs.Job {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.newest
}

// maxPending is the most messages pending at any sample.
func (w *jobWatch) maxPending() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending
}
