package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// TestScheduleFiresAJob adds a schedule, runs the scheduler and a worker's
// schedule runner, and waits for the job the firing creates.
func TestScheduleFiresAJob(t *testing.T) {
	mr := miniredis.RunT(t)
	url := "redis://" + mr.Addr() + "/0"
	r := "--redis=" + url

	if _, e, code := runCLI(t, "schedule", "add", "--name", "bad", "--cron", "every day", r, "--", "recall", "group", "--group", "g", "--seqs", "1"); code != exitBadInput || !strings.Contains(e, "--cron") {
		t.Fatalf("bad cron: exit %d %s", code, e)
	}
	if _, e, code := runCLI(t, "schedule", "add", "--name", "bad", "--cron", "@daily", r, "--", "jobs", "list"); code != exitBadInput || !strings.Contains(e, "recall or purge") {
		t.Fatalf("not a recall: exit %d %s", code, e)
	}
	if _, e, code := runCLI(t, "schedule", "add", "--name", "bad", "--cron", "@daily", r, "--", "recall", "group", "--nope"); code != exitBadInput {
		t.Fatalf("bad flag in the command: exit %d %s", code, e)
	}
	out, e, code := runCLI(t, "schedule", "add", "--name", "nightly", "--cron", "@every 1s", "--reason", "retention", r,
		"--", "recall", "group", "--group", "@TGS#sched", "--seqs", "1,2,3", "--sdkappid", "1400000001")
	if code != 0 {
		t.Fatalf("schedule add: exit %d %s %s", code, out, e)
	}
	out, _, _ = runCLI(t, "schedule", "list", r)
	if !strings.Contains(out, "nightly") || !strings.Contains(out, "@every 1s") {
		t.Fatalf("schedule list:\n%s", out)
	}

	rf := redisFlags{url: url, prefix: "imrecall"}
	c, err := rf.connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	log := slog.New(slog.DiscardHandler)
	mgr, err := startScheduler(c, rf.prefix, 200*time.Millisecond, log, asynq.ErrorLevel)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Shutdown()
	srv := asynq.NewServer(c.asynq, asynq.Config{Concurrency: 2, Queues: tasks.Queues, LogLevel: asynq.ErrorLevel, Logger: asynqLogger{log}})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeScheduleRun, scheduleRunner{log: log, settings: map[string]string{"redis": url}}.handle)
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		list, err := c.store.List(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > 0 && list[0].Status != jobs.StatusPlanning { // the firing has planned it
			j := list[0]
			if j.RequestedBy != "schedule:nightly" || j.Kind != "recall:group" || j.Counts.Planned != 3 {
				t.Fatalf("the schedule's job = %+v", j)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no job within 30 s of a schedule firing every second")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, e, code := runCLI(t, "schedule", "remove", "nightly", r); code != 0 {
		t.Fatalf("schedule remove: %d %s", code, e)
	}
	if _, _, code := runCLI(t, "schedule", "remove", "nightly", r); code != exitBadInput {
		t.Fatalf("removing twice: exit %d", code)
	}
}
