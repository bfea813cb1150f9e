package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// TestScheduleRefusesConnectionSettings: a schedule says what a job is,
// never how a worker connects. Every flag that redirected a worker's API
// base, identity, credentials or files is refused, naming the flag.
func TestScheduleRefusesConnectionSettings(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	r := "--redis=redis://" + mr.Addr() + "/0"
	add := func(cmdline ...string) (string, int) {
		_, e, code := runCLI(t, append([]string{"schedule", "add", "--name", "x", "--cron", "@daily", r, "--"}, cmdline...)...)
		return e, code
	}
	for _, c := range []struct {
		flag    string
		cmdline []string
	}{
		{"--api-base", []string{"purge", "group", "--group", "g", "--api-base", "http://203.0.113.9:8080"}},
		{"--admin", []string{"purge", "user", "--user", "u", "--admin", "someoneelse"}},
		{"--peers-file", []string{"purge", "user", "--user", "u", "--peers-file", "/proc/self/environ"}},
		{"--secret-key-file", []string{"purge", "group", "--group", "g", "--secret-key-file=/etc/passwd"}},
		{"--sdkappid", []string{"recall", "group", "--group", "g", "--seqs", "1", "--sdkappid", "1400000002"}},
		{"--redis", []string{"recall", "group", "--group", "g", "--seqs", "1", "--redis", "redis://203.0.113.9:6379"}},
	} {
		if e, code := add(c.cmdline...); code != cli.ExitBadInput || !strings.Contains(e, c.flag) || !strings.Contains(e, "never how a worker connects") {
			t.Errorf("%s: exit %d, stderr %q; want exit %d naming %s", c.flag, code, e, cli.ExitBadInput, c.flag)
		}
	}
	if e, code := add("recall", "group", "--group", "g", "--seqs", "1", "--dry-run"); code != cli.ExitBadInput || !strings.Contains(e, "--dry-run") {
		t.Errorf("--dry-run: exit %d %q", code, e)
	}
	if e, code := add("jobs", "list"); code != cli.ExitBadInput || !strings.Contains(e, "recall or purge") {
		t.Errorf("not a recall: exit %d %q", code, e)
	}
	if _, e, code := runCLI(t, "schedule", "add", "--name", "bad", "--cron", "every day", r, "--", "recall", "group", "--group", "g", "--seqs", "1"); code != cli.ExitBadInput || !strings.Contains(e, "cron") {
		t.Errorf("bad cron: exit %d %s", code, e)
	}
	// A dry run of the add checks it and says when it would fire, writing
	// nothing.
	out, e, code := runCLI(t, "schedule", "add", "--dry-run", "--name", "nightly", "--cron", "30 2 * * *", "--reason", "retention", r, "--", "purge", "group", "--group", "g", "--until", "90d")
	if code != 0 || !strings.HasPrefix(out, "dry run, nothing added: schedule nightly: 30 2 * * *:") || !regexp.MustCompile(`next due \(UTC\): (\d{4}-\d\d-\d\d 02:30:00(, |\n)){3}$`).MatchString(out) {
		t.Errorf("schedule add --dry-run: exit %d, stdout %q, stderr %q; want three due times at 02:30 UTC", code, out, e)
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Fatalf("refused schedules and a dry run wrote %v", keys)
	}

	// A list file is read when the schedule is added, and held in it.
	list := filepath.Join(t.TempDir(), "list.jsonl")
	writeTestFile(t, list, `{"GroupId":"@TGS#1","MsgSeq":7}`+"\n"+`{"From_Account":"a","To_Account":"b","MsgKey":"1_2_3"}`+"\n")
	if out, e, code := runCLI(t, "schedule", "add", "--name", "from-file", "--cron", "@daily", "--reason", "r", r, "--", "recall", "file", list); code != 0 {
		t.Fatalf("recall file: exit %d %s %s", code, out, e)
	}
	out, _, _ = runCLI(t, "schedule", "list", "--json", r)
	var got []producer.ScheduleView
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 || got[0].Request == nil || len(got[0].Request.Messages) != 2 || got[0].Request.Messages[1].MsgKey != "1_2_3" || len(got[0].Next) != producer.NextDueShown {
		t.Fatalf("schedule list: %v\n%s", err, out)
	}

	// Adding and removing are on record with who and why, as through the
	// API; removing what is not there records nothing.
	if _, e, code := runCLI(t, "schedule", "remove", "nope", "--actor", "dpo", r); code != cli.ExitBadInput || !strings.Contains(e, "no such schedule") {
		t.Fatalf("remove an unknown schedule: exit %d %q", code, e)
	}
	if _, e, code := runCLI(t, "schedule", "remove", "from-file", "--actor", "dpo", "--reason", "incident closed", r); code != 0 {
		t.Fatalf("remove: exit %d %q", code, e)
	}
	evs, err := jobs.NewStore(rdb, "").AuditLog(t.Context(), 10)
	if err != nil || len(evs) != 2 || evs[0].Action != "schedule_add" || !strings.HasPrefix(evs[0].Detail, `from-file "@daily": {"kind":"recall"`) ||
		evs[1].Action != "schedule_remove" || evs[1].Actor != "dpo" || evs[1].Detail != "from-file; incident closed" {
		t.Fatalf("audit trail: %+v (%v)", evs, err)
	}
}

// TestScheduleMigration: schedules stored as command lines are turned into
// typed requests when they parse into one, and refused (never fired) with a
// message naming them when they carry a connection setting or a file; a
// listing redacts the connection flags' values.
func TestScheduleMigration(t *testing.T) {
	mr := miniredis.RunT(t)
	rf := redisFlags{url: "redis://" + mr.Addr() + "/0", prefix: "imrecall"}
	c, err := rf.connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	legacy := map[string][]string{
		"retention": {"purge", "group", "--group", "@TGS#1", "--until", "90d", "--queue", "backfill"},
		"stealer":   {"purge", "group", "--group", "@TGS#1", "--api-base", "http://203.0.113.9", "--secret-key", "s3cr3t-from-a-schedule"},
		"reader":    {"recall", "file", "/etc/passwd"},
	}
	legacy["no-reason"] = []string{"recall", "group", "--group", "@TGS#1", "--seqs", "1,2"}
	for name, args := range legacy {
		reason := "kept"
		if name == "no-reason" {
			reason = ""
		}
		b, _ := json.Marshal(map[string]any{"name": name, "cron": "@daily", "args": args, "created_by": "old", "reason": reason})
		mr.HSet("imrecall:schedules", name, string(b))
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	newScheduler(t.Context(), c, rf.prefix, asynq.NewClient(c.asynq), time.Second, log)
	list, err := producer.NewSchedules(c.rdb, rf.prefix).List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]producer.Schedule{}
	for _, s := range list {
		byName[s.Name] = s
	}
	if s := byName["retention"]; s.Request == nil || s.Args != nil || s.Request.Kind != producer.KindPurgeGroup || s.Request.Until != "90d" || s.Request.Queue != "backfill" || s.Request.Reason != "" {
		t.Errorf("retention not migrated: %+v", s)
	}
	if s := byName["no-reason"]; s.Request == nil || len(s.Request.Messages) != 2 || s.Reason == "" {
		t.Errorf("a legacy schedule without a reason not migrated: %+v", s)
	}
	for _, name := range []string{"stealer", "reader"} {
		if s := byName[name]; s.Request != nil || len(s.Args) == 0 {
			t.Errorf("%s migrated: %+v", name, s)
		}
		if !strings.Contains(logs.String(), "schedule "+name+" holds a command line") {
			t.Errorf("the log does not name %s:\n%s", name, logs.String())
		}
	}
	if strings.Contains(logs.String(), "s3cr3t") {
		t.Errorf("a secret of a legacy schedule reached the log:\n%s", logs.String())
	}
	out, _, _ := runCLI(t, "schedule", "list", "--redis="+rf.url)
	if strings.Contains(out, "s3cr3t") || strings.Contains(out, "203.0.113.9") || !strings.Contains(out, "REFUSED") {
		t.Errorf("schedule list shows a legacy schedule's connection settings, or does not say it is refused:\n%s", out)
	}
}

// TestScheduleFiresAJob adds a schedule, runs the scheduler and a worker's
// schedule runner, and waits for the job the firing creates.
func TestScheduleFiresAJob(t *testing.T) {
	mr := miniredis.RunT(t)
	url := "redis://" + mr.Addr() + "/0"
	r := "--redis=" + url
	out, e, code := runCLI(t, "schedule", "add", "--name", "nightly", "--cron", "@every 1s", "--reason", "retention", r,
		"--", "recall", "group", "--group", "@TGS#sched", "--seqs", "1,2,3")
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
	enq := asynq.NewClient(c.asynq)
	defer enq.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sched := newScheduler(ctx, c, rf.prefix, enq, 200*time.Millisecond, log)
	go func() { _ = sched.Run(ctx) }()
	creator, err := imrecall.New(imrecall.Config{Redis: c.rdb, Prefix: rf.prefix, Queue: enq, AppID: imtest.AppID})
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(c.asynq, asynq.Config{Concurrency: 2, Queues: tasks.Queues, LogLevel: asynq.ErrorLevel, Logger: asynqLogger{L: log}})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeScheduleRun, scheduleRunner{client: creator, log: log}.handle)
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	for {
		list, err := c.store.List(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > 0 && list[0].Status != jobs.StatusPlanning { // the firing has planned it
			j := list[0]
			if j.RequestedBy != "schedule:nightly" || j.Kind != "recall:api" || j.Counts.Planned != 3 || j.Reason != "retention" {
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
	if _, _, code := runCLI(t, "schedule", "remove", "nightly", r); code != cli.ExitBadInput {
		t.Fatalf("removing twice: exit %d", code)
	}
}

// TestTwoSchedulersFireOncePerDueTime is issue 12's acceptance for
// schedules: two `imrecall scheduler` processes and a worker on one Redis;
// a schedule due every second creates exactly one job per due time.
func TestTwoSchedulersFireOncePerDueTime(t *testing.T) {
	e := newE2E(t, emulator.Config{})
	if _, err := e.run("schedule", "add", "--name", "every-second", "--cron", "@every 1s", "--reason", "fire-once test",
		"--", "recall", "group", "--group", "@TGS#once", "--seqs", "1"); err != nil {
		t.Fatal(err)
	}
	e.worker("w1")
	var logs []string
	var procs []*exec.Cmd
	for i := range 2 {
		logPath := filepath.Join(t.TempDir(), fmt.Sprintf("scheduler%d.log", i))
		f, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := imrecallCommand(context.Background(), e.bin, "scheduler", "--sync", "200ms", "--log-level", "debug")
		cmd.Env = e.environ()
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		logs = append(logs, logPath)
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); f.Close() })
	}
	// Wait for both schedulers to have seen at least four due times each
	// (their "already fired" or "fired" lines), then stop them.
	due := regexp.MustCompile(`msg="schedule (?:already )?fired(?: by another scheduler)?" schedule=every-second due=(\S+)`)
	deadline := time.Now().Add(60 * time.Second)
	seen := func(path string) []string {
		b, _ := os.ReadFile(path)
		var out []string
		for _, m := range due.FindAllStringSubmatch(string(b), -1) {
			out = append(out, m[1])
		}
		return out
	}
	for len(seen(logs[0])) < 4 || len(seen(logs[1])) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("schedulers did not fire within 60 s:\n%s\n%s", tail(logs[0], 2000), tail(logs[1], 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range procs {
		_ = p.Process.Signal(syscall.SIGTERM)
		_ = p.Wait()
	}
	fired := map[string]int{}
	for _, path := range logs {
		b, _ := os.ReadFile(path)
		for _, m := range regexp.MustCompile(`msg="schedule fired" schedule=every-second due=(\S+)`).FindAllStringSubmatch(string(b), -1) {
			fired[m[1]]++
		}
	}
	both := map[string]int{}
	for _, path := range logs {
		for _, d := range seen(path) {
			both[d]++
		}
	}
	shared := 0
	for d, n := range fired {
		if n != 1 {
			t.Errorf("due time %s fired %d times", d, n)
		}
		if both[d] == 2 {
			shared++
		}
	}
	if shared < 2 {
		t.Fatalf("the two schedulers saw only %d due times in common: the test proves nothing\nfired %v", shared, fired)
	}
	// Every firing became one job, and no other job exists.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		list, err := e.store.List(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == len(fired) {
			for _, j := range list {
				if j.RequestedBy != "schedule:every-second" {
					t.Fatalf("job %s requested by %q", j.ID, j.RequestedBy)
				}
			}
			t.Logf("%d due times, %d firings, %d jobs; %d due times seen by both schedulers", len(both), len(fired), len(list), shared)
			return
		}
		if len(list) > len(fired) {
			t.Fatalf("%d jobs for %d firings", len(list), len(fired))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d jobs for %d firings after 30 s", len(list), len(fired))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
