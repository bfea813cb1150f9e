package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/redis/go-redis/v9"
)

// TestSecretsNeverLeak runs jobs of every kind with debug logging (recalls,
// purges by scan and by index, a list file, schedule firings, an old firing
// naming files and credentials), one worker with the right key and one with
// a wrong key (so auth errors are logged and tasks fail), and checks that
// neither the SecretKey nor any UserSig the emulator received nor a token
// appears in logs, reports, exports, asynqmon's API (task payloads and
// errors, as a read token sees them) or any key in Redis.
func TestSecretsNeverLeak(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200, Faults: emulator.Faults{Codes: map[int]float64{91000: 0.2}}, Seed: 4})
	e.env.Emu.SetFaults(emulator.Faults{})
	e.env.Accounts(t, "alice", "bob")
	g := e.env.Group(t, "Public", "@TGS#secret", "alice")
	e.env.SendGroup(t, g, "", 30, "alice")
	keys := e.env.SendC2C(t, "alice", "bob", 3)
	e.env.Emu.SetFaults(emulator.Faults{Codes: map[int]float64{91000: 0.2}})

	logDir := t.TempDir()
	var outputs []string

	// First a worker with a wrong key: its calls fail auth (70003) and the
	// job is paused (an app-wide error dead-letters nothing); the worker is
	// stopped before the good one starts, and the job resumed.
	bad := e.workerLogged(filepath.Join(logDir, "bad.log"), []string{"IMRECALL_SECRET_KEY=wrong-key"}, "--log-level", "debug", "--max-attempts", "2")
	out, err := e.run("recall", "c2c", "--reason", "test", "--from", "alice", "--to", "bob", "--msgkey", keys[1], "--json")
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, out)
	badJob := jobID(t, out)
	if j := e.waitFor("the wrong key's job paused", time.Minute, func(j jobs.Job) bool { return j.Paused }, badJob); j.Counts.DeadLettered != 0 ||
		!strings.Contains(j.PauseReason, "70003") {
		t.Fatalf("the wrong key's job = %+v", j)
	}
	_ = bad.Process.Signal(syscall.SIGTERM)
	_ = bad.Wait()

	e.workerLogged(filepath.Join(logDir, "good.log"), nil, "--log-level", "debug")
	if out, err := e.run("jobs", "resume", badJob); err != nil {
		t.Fatal(err)
	} else {
		outputs = append(outputs, out)
	}
	if j := e.waitDone(badJob, time.Minute); j.Counts.Recalled != 1 {
		t.Fatalf("the wrong key's job after the fix = %+v", j.Counts)
	}
	out, err = e.run("recall", "group", "--reason", "test", "--group", g, "--seqs", "1,2,3,4,5,6,7,8,9,10,11,12,99", "--json")
	if err != nil {
		t.Fatal(err)
	}
	id := jobID(t, out)
	outputs = append(outputs, out)
	out, err = e.run("recall", "c2c", "--reason", "test", "--from", "alice", "--to", "bob", "--msgkey", keys[0], "--json")
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, out)
	e.waitDone(id, time.Minute)
	e.waitDone(jobID(t, out), time.Minute)
	for _, args := range [][]string{{"jobs", "report", id}, {"jobs", "report", id, "--json"}, {"jobs", "show", id, "--json"},
		{"dlq", "export", id}, {"dlq", "export", id, "--format", "csv"}, {"jobs", "audit"}} {
		o, err := e.run(args...)
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, o)
	}
	// Jobs of every other kind, through the CLI, the API and a schedule:
	// purges by scan (discovery tasks), by index, a list file, a failing
	// recall, and firings of a typed schedule and of an old command line
	// naming files and credentials.
	e.env.Accounts(t, "mallory")
	list := filepath.Join(t.TempDir(), "list.jsonl")
	writeTestFile(t, list, fmt.Sprintf(`{"GroupId":%q,"MsgSeq":20}`+"\n"+`{"GroupId":"@TGS#nowhere","MsgSeq":1}`+"\n", g))
	tokens := filepath.Join(t.TempDir(), "tokens")
	writeTestFile(t, tokens, "auditor:read:"+e2eReadToken+"\n")
	addr := freeAddr(t)
	e.serveProc(addr, "--tokens-file", tokens)
	for _, args := range [][]string{
		{"purge", "user", "--reason", "test", "--user", "alice", "--source", "scan", "--peers", "bob", "--yes", "--json", "--since", "30d"},
		{"purge", "group", "--reason", "test", "--group", g, "--seq-from", "13", "--seq-to", "16", "--yes", "--json"},
		{"purge", "user", "--reason", "test", "--user", "mallory", "--source", "index", "--yes", "--json"},
		{"recall", "file", list, "--reason", "test", "--yes", "--json"},
	} {
		o, err := e.run(args...)
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, o)
		e.waitDone(jobID(t, o), time.Minute)
	}
	if o, err := e.run("schedule", "add", "--name", "typed", "--cron", "@every 1s", "--reason", "secrets", "--", "purge", "group", "--group", g, "--seq-from", "17", "--seq-to", "18"); err != nil {
		t.Fatal(err)
	} else {
		outputs = append(outputs, o)
	}
	old, _ := json.Marshal(map[string]any{"name": "old", "args": []string{"purge", "user", "--user", "alice", "--peers-file", "/proc/self/environ", "--secret-key-file", "/proc/self/environ"}})
	cl := asynq.NewClient(asynq.RedisClientOpt{Addr: e.redis.Addr()})
	defer cl.Close()
	if _, err := cl.Enqueue(asynq.NewTask(tasks.TypeScheduleRun, old, asynq.Queue(tasks.QueueBackfill), asynq.TaskID("old-firing"))); err != nil {
		t.Fatal(err)
	}
	sched := imrecallCommand(context.Background(), e.bin, "scheduler", "--sync", "200ms")
	sched.Env = e.environ()
	if err := sched.Start(); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: e.redis.Addr()})
	defer insp.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		list, _ := e.store.List(t.Context(), 100)
		fired := 0
		for _, j := range list {
			if j.RequestedBy == "schedule:typed" && j.Finished() {
				fired++
			}
		}
		info, _ := insp.GetTaskInfo(tasks.QueueBackfill, "old-firing")
		if fired > 0 && info != nil && info.State == asynq.TaskStateArchived {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no finished schedule firing, or the old firing not archived, after a minute (%d, %+v)", fired, info)
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = sched.Process.Signal(syscall.SIGTERM)
	_ = sched.Wait()

	// asynqmon's API, as a read token sees it: queues and the tasks of
	// every state, with their payloads and errors.
	monitored := 0
	queues, err := insp.Queues()
	if err != nil || len(queues) < 3 {
		t.Fatalf("queues %v %v", queues, err)
	}
	for _, q := range queues {
		for _, state := range []string{"pending", "active", "scheduled", "retry", "archived", "completed"} {
			code, b := httpCall(t, "GET", fmt.Sprintf("http://%s/monitor/api/queues/%s/%s_tasks?page_size=1000", addr, q, state), "", bearer(e2eReadToken)...)
			if code != http.StatusOK {
				t.Fatalf("asynqmon %s %s: HTTP %d %s", q, state, code, b)
			}
			if strings.Contains(string(b), `"error_message":"`) || strings.Contains(string(b), `"payload"`) {
				monitored++
			}
			outputs = append(outputs, string(b))
		}
	}
	if monitored == 0 {
		t.Error("asynqmon showed no task: the check saw nothing")
	}
	// Every key in Redis: task payloads and errors (asynq's), job records,
	// dead letters, the audit log, the index, schedules.
	dump, nkeys := redisDump(t, e.redis.Client())
	if !strings.Contains(dump, "old-firing") || !strings.Contains(dump, "a command line, not a job request") {
		t.Errorf("the dump of %d keys lacks the old firing and its error: the check saw nothing", nkeys)
	}
	outputs = append(outputs, dump)
	t.Logf("%d Redis keys and %d asynqmon pages checked", nkeys, len(queues)*6)

	time.Sleep(500 * time.Millisecond)                  // let the workers flush their last log lines
	for _, f := range []string{"good.log", "bad.log"} { // bad.log last
		b, err := os.ReadFile(filepath.Join(logDir, f))
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, string(b))
	}
	if bad := outputs[len(outputs)-1]; !strings.Contains(bad, "70003") {
		t.Errorf("the worker with a wrong key logged no auth failure (70003); the check saw nothing:\n%.2000s", bad)
	}
	sigs := e.env.SeenSigs()
	if len(sigs) == 0 {
		t.Fatal("the emulator saw no UserSig")
	}
	secrets := append([]string{imtest.Secret, "wrong-key", "IMRECALL_SECRET_KEY=", e2eAPIToken, e2eReadToken, e2eCallbackToken}, sigs...)
	for i, o := range outputs {
		for _, s := range secrets {
			if strings.Contains(o, s) {
				t.Errorf("output %d contains a secret (%.12s…)", i, s)
			}
		}
		if strings.Contains(o, "usersig=e") { // a UserSig is base64 of zlib: it starts with "e"
			t.Errorf("output %d shows a usersig query parameter", i)
		}
	}
}

// redisDump returns the contents of every key of rdb, as text, and how many
// keys there were.
func redisDump(t *testing.T, rdb *redis.Client) (string, int) {
	t.Helper()
	ctx := t.Context()
	var b strings.Builder
	n := 0
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		n++
		fmt.Fprintf(&b, "%s:", key)
		typ, err := rdb.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		switch typ {
		case "string":
			v, err = rdb.Get(ctx, key).Result()
		case "hash":
			v, err = rdb.HGetAll(ctx, key).Result()
		case "list":
			v, err = rdb.LRange(ctx, key, 0, -1).Result()
		case "set":
			v, err = rdb.SMembers(ctx, key).Result()
		case "zset":
			v, err = rdb.ZRange(ctx, key, 0, -1).Result()
		case "stream":
			v, err = rdb.XRange(ctx, key, "-", "+").Result()
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%v\n", v)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String(), n
}

func jobID(t *testing.T, out string) string {
	t.Helper()
	i := strings.Index(out, `"job_id": "`)
	if i < 0 {
		t.Fatalf("no job_id in %q", out)
	}
	rest := out[i+len(`"job_id": "`):]
	return rest[:strings.Index(rest, `"`)]
}
