package imrecall_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// scheduleJobs returns the jobs schedule name created, newest first.
func scheduleJobs(t *testing.T, s *jobs.Store, name string) []jobs.Job {
	t.Helper()
	list, err := s.List(t.Context(), 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []jobs.Job
	for _, j := range list {
		if strings.Contains(j.RequestedBy, "schedule:"+name) {
			out = append(out, j)
		}
	}
	return out
}

// TestScheduleSkipsAFiringWhileItsLastJobRuns: a schedule due every second
// whose job waits for approval (so it stays unfinished) fires once; its
// next firings are skipped, logged and audited, and plan no second job of
// the same messages; once the job is approved and finished, the next firing
// creates a job again. Real redis-server, worker and emulator.
func TestScheduleSkipsAFiringWhileItsLastJobRuns(t *testing.T) {
	t.Parallel()
	var client atomic.Pointer[imrecall.Client]
	env := imrecalltest.Start(t, imrecalltest.Options{RedisServer: true, Handlers: map[string]asynq.Handler{
		tasks.TypeScheduleRun: asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
			return client.Load().FireSchedule(ctx, task, slog.New(slog.DiscardHandler))
		})}})
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client})
	if err != nil {
		t.Fatal(err)
	}
	client.Store(c)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	env.IM.Accounts(t, "alice")
	g := env.IM.Group(t, "Public", "@TGS#nightly", "alice")
	var msgs []producer.MessageRef
	for _, seq := range env.IM.SendGroup(t, g, "", 3, "alice") {
		msgs = append(msgs, producer.MessageRef{GroupID: g, MsgSeq: seq})
	}
	schedules := producer.NewSchedules(env.Redis, jobs.DefaultPrefix)
	if err := schedules.Add(ctx, producer.Schedule{Name: "nightly", Cron: "@every 1s", CreatedBy: "token:alice",
		Request:       &producer.JobRequest{Kind: producer.KindRecall, Messages: msgs, Reason: "retention"},
		ApprovalAbove: 1, Requester: "token:alice"}); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(env.RedisOpt)
	defer insp.Close()
	var logged bytes.Buffer // read once the scheduler has stopped
	sched := &producer.Scheduler{Schedules: schedules, Queue: env.Queue, Sync: 20 * time.Millisecond, Tick: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&logged, nil)), Jobs: env.Store, Tasks: insp}
	ran := make(chan struct{})
	go func() { defer close(ran); _ = sched.Run(ctx) }()
	stop := func() { cancel(); <-ran }
	defer stop()

	// The first firing's job, held: it does not finish by itself.
	first := waitScheduleJobs(t, env.Store, "nightly", 1)
	// Later firings are skipped, naming the job, until it has finished.
	waitFor(t, "a firing skipped for the first job", func() bool {
		if list := scheduleJobs(t, env.Store, "nightly"); len(list) != 1 {
			t.Fatalf("%d jobs of the schedule while the first (%s) is not finished, want 1; the newest, %s, is %s",
				len(list), first.ID, list[0].ID, list[0].Status)
		}
		events, err := env.Store.AuditLog(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.Action == "schedule_skipped" && e.JobID == first.ID && e.Actor == "schedule:nightly" {
				return true
			}
		}
		return false
	})
	if _, err := env.Store.Approve(ctx, first.ID, "token:bob", "checked", 0); err != nil {
		t.Fatal(err)
	}
	done := env.RequireOutcome(t, first.ID, imrecalltest.Outcome{Status: jobs.StatusDone, Recalled: 3})
	second := waitScheduleJobs(t, env.Store, "nightly", 2)
	if second.ID == first.ID || done.FinishedAt == nil || second.CreatedAt.Before(*done.FinishedAt) {
		t.Fatalf("second job %s created %v; the first, %s, finished %v: want it created after", second.ID, second.CreatedAt, first.ID, done.FinishedAt)
	}
	stop()
	if got := logged.String(); !strings.Contains(got, "schedule skipped") || !strings.Contains(got, "job_id="+first.ID) {
		t.Errorf("the skip is not logged with the job:\n%s", got)
	}
}

// waitScheduleJobs waits until schedule name has created n jobs and
// returns the newest.
func waitScheduleJobs(t *testing.T, s *jobs.Store, name string, n int) jobs.Job {
	t.Helper()
	var list []jobs.Job
	waitFor(t, fmt.Sprintf("job %d of schedule %s", n, name), func() bool {
		list = scheduleJobs(t, s, name)
		return len(list) >= n
	})
	return list[0]
}

// waitFor polls cond until it holds, failing the test after
// imrecalltest.WaitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(imrecalltest.WaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
