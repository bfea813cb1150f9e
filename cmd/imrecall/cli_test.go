package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// runCLI runs the root command in process and returns stdout, stderr and
// the exit code main would use.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := newRootCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	code := cli.ExitCode(err, io.Discard)
	if err != nil {
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

// deadJob makes a finished job with dead letters of three kinds.
func deadJob(t *testing.T) (*miniredis.Miniredis, *jobs.Store, string) {
	t.Helper()
	mr, rdb := redistest.Mini(t)
	store := jobs.NewStore(rdb, "")
	ctx := t.Context()
	j, err := store.Create(ctx, jobs.Spec{Kind: "recall:file", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "alice", Reason: "cli test"})
	if err != nil {
		t.Fatal(err)
	}
	g := jobs.Target{GroupID: "@TGS#cli"}
	store.PlanGroup(ctx, j.ID, g, []int64{1, 2, 3, 4})
	c := jobs.Target{From: "a", To: "b"}
	store.PlanC2C(ctx, j.ID, c, []string{"1_2_3"})
	store.ClosePlanner(ctx, j.ID, jobs.RootPlanner)
	store.Record(ctx, j.ID, g, []jobs.Outcome{
		{Item: "1", Recalled: true},
		{Item: "2", Code: "10002", ErrorInfo: "internal error", Attempts: 5},
		{Item: "3", Code: "10002", ErrorInfo: "internal error", Attempts: 5},
		{Item: "4", Code: "10030", ErrorInfo: "not found", Attempts: 1},
	})
	store.Record(ctx, j.ID, c, []jobs.Outcome{{Item: "1_2_3", Code: "20023", Attempts: 1}})
	return mr, store, j.ID
}

func TestJobsAndDLQCommands(t *testing.T) {
	mr, store, id := deadJob(t)
	r := "--redis=redis://" + mr.Addr() + "/0"

	out, _, code := runCLI(t, "jobs", "show", id, "--json", r)
	var j jobs.Job
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil || j.Status != jobs.StatusDone || j.Counts.DeadLettered != 4 || j.Counts.Planned != 5 {
		t.Fatalf("jobs show --json (exit %d):\n%s", code, out)
	}
	out, _, _ = runCLI(t, "jobs", "report", id, r)
	for _, want := range []string{"needs attention", "10002", "reconciled", "requested by alice"} {
		if !strings.Contains(out, want) {
			t.Errorf("jobs report lacks %q:\n%s", want, out)
		}
	}
	_, errOut, code := runCLI(t, "jobs", "wait", id, r)
	if code != cli.ExitDeadLetter || !strings.Contains(errOut, "need attention") {
		t.Fatalf("jobs wait on a job with dead letters needing attention: exit %d, %s", code, errOut)
	}
	out, _, _ = runCLI(t, "jobs", "list", r)
	if !strings.Contains(out, id) || !strings.Contains(out, "alice") {
		t.Fatalf("jobs list:\n%s", out)
	}

	out, _, _ = runCLI(t, "dlq", "list", id, "--category", "needs_attention", r)
	if strings.Count(out, "10002") != 2 || strings.Contains(out, "10030") {
		t.Fatalf("dlq list --category needs_attention:\n%s", out)
	}
	out, _, _ = runCLI(t, "dlq", "export", id, "--format", "csv", r)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 5 || !strings.HasPrefix(lines[0], "job_id,GroupId") {
		t.Fatalf("dlq export --format csv:\n%s", out)
	}
	out, _, _ = runCLI(t, "dlq", "export", id, r)
	if n := strings.Count(out, "\n"); n != 4 || !strings.Contains(out, `"category":"already_recalled"`) {
		t.Fatalf("dlq export (jsonl):\n%s", out)
	}
	_, errOut, code = runCLI(t, "dlq", "list", id, "--category", "bogus", r)
	if code != cli.ExitBadInput || !strings.Contains(errOut, "bogus") {
		t.Fatalf("bad --category: exit %d %s", code, errOut)
	}

	// While the console re-queues this job, the CLI's re-queue is refused
	// (exit 2, naming who), and changes nothing.
	busy, err := store.LockRequeue(t.Context(), id, "token:ops (console)")
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runCLI(t, "dlq", "requeue", id, "--actor", "bob", r)
	if code != cli.ExitBadInput || !strings.Contains(errOut, "a re-queue by token:ops (console) is running") {
		t.Fatalf("dlq requeue while another runs: exit %d %s", code, errOut)
	}
	if err := busy.Release(t.Context()); err != nil {
		t.Fatal(err)
	}

	// The dry run counts what a re-queue would send and changes nothing.
	out, _, code = runCLI(t, "dlq", "requeue", id, "--dry-run", r)
	if code != 0 || !strings.Contains(out, "2 dead letters would be re-queued (dry run: nothing changed)") {
		t.Fatalf("dlq requeue --dry-run (exit %d): %s", code, out)
	}
	if j, _ = store.Get(t.Context(), id); j.Counts.Pending != 0 || j.Counts.DeadLettered != 4 {
		t.Fatalf("after a dry run: %+v", j.Counts)
	}

	// A reason too long for the audit line is refused before anything is
	// asked or moved.
	if _, errOut, code = runCLI(t, "dlq", "requeue", id, "--actor", "bob", "--reason", strings.Repeat("x", producer.MaxReasonLen+1), r); code != cli.ExitBadInput || !strings.Contains(errOut, "--reason") {
		t.Fatalf("dlq requeue with a %d-byte reason: exit %d %s", producer.MaxReasonLen+1, code, errOut)
	}
	if j, _ = store.Get(t.Context(), id); j.Counts.Pending != 0 || j.Counts.DeadLettered != 4 {
		t.Fatalf("after a refused re-queue: %+v", j.Counts)
	}

	// Re-queue what needs attention: two seqs back to pending, one task.
	out, _, code = runCLI(t, "dlq", "requeue", id, "--actor", "bob", r)
	if code != 0 || !strings.Contains(out, "2 dead letters re-queued in 1 tasks") {
		t.Fatalf("dlq requeue (exit %d): %s", code, out)
	}
	j, _ = store.Get(t.Context(), id)
	if j.Status != jobs.StatusRunning || j.Counts.Pending != 2 || j.Counts.DeadLettered != 2 {
		t.Fatalf("after requeue: %+v", j)
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: mr.Addr()})
	defer insp.Close()
	pending, err := insp.ListPendingTasks(tasks.QueuePurge)
	if err != nil || len(pending) != 1 {
		t.Fatalf("pending tasks after requeue: %v %v", pending, err)
	}
	p, _ := tasks.DecodeGroupRecall(asynq.NewTask(pending[0].Type, pending[0].Payload))
	if len(p.Seqs) != 2 {
		t.Fatalf("re-queued task = %+v", p)
	}

	// Pause, resume and cancel are audited.
	for _, args := range [][]string{{"jobs", "pause", id}, {"jobs", "resume", id}, {"jobs", "cancel", id, "--reason", "enough"}} {
		if _, e, code := runCLI(t, append(args, r, "--actor", "carol")...); code != 0 {
			t.Fatalf("%v: exit %d %s", args, code, e)
		}
	}
	out, _, _ = runCLI(t, "jobs", "audit", "--json", r)
	var evs []jobs.Event
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Actor+":"+e.Action)
	}
	if got := strings.Join(actions, " "); got != "alice:create bob:requeue carol:pause carol:resume carol:cancel" {
		t.Fatalf("audit log = %s", got)
	}
	if _, e, code := runCLI(t, "jobs", "show", "nosuchjob", r); code != cli.ExitBadInput || !strings.Contains(e, "not found") {
		t.Fatalf("unknown job: exit %d %s", code, e)
	}
}

func TestRecallDryRunAndConfirm(t *testing.T) {
	mr := miniredis.RunT(t)
	r := "--redis=redis://" + mr.Addr() + "/0"
	path := t.TempDir() + "/l.csv"
	var b strings.Builder
	b.WriteString("GroupId,MsgSeq\n")
	for i := 1; i <= 25; i++ {
		b.WriteString("@TGS#1," + itoa(i) + "\n")
	}
	writeTestFile(t, path, b.String())
	out, _, code := runCLI(t, "recall", "file", path, "--dry-run", "--json", "--sdkappid", "1400000001", r)
	if code != 0 || !strings.Contains(out, `"group_calls": 3`) || !strings.Contains(out, `"dry_run": true`) {
		t.Fatalf("dry run (exit %d):\n%s", code, out)
	}
	// Above --confirm-above without a terminal and without --yes: refused.
	_, e, code := runCLI(t, "recall", "file", path, "--reason", "test", "--confirm-above", "10", "--sdkappid", "1400000001", r)
	if code != cli.ExitBadInput || !strings.Contains(e, "--yes") {
		t.Fatalf("large job without --yes: exit %d %s", code, e)
	}
	// A job records who asked and why: without --reason (or with a blank
	// one) nothing is created, and the error names the flag. A schedule's
	// jobs need one too.
	for _, args := range [][]string{
		{"recall", "file", path, "--yes", "--sdkappid", "1400000001", r},
		{"recall", "group", "--group", "@TGS#1", "--seqs", "1", "--reason", "  ", "--sdkappid", "1400000001", r},
		{"schedule", "add", "--name", "n", "--cron", "@daily", r, "--", "purge", "group", "--group", "@TGS#1", "--until", "90d"},
	} {
		if _, e, code := runCLI(t, args...); code != cli.ExitBadInput || !strings.Contains(e, "--reason: required") {
			t.Fatalf("%v: exit %d %s, want %d naming --reason", args, code, e, cli.ExitBadInput)
		}
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Fatalf("a dry run or a refused job wrote to Redis: %v", keys)
	}
	out, _, code = runCLI(t, "recall", "group", "--reason", "test", "--group", "@TGS#1", "--seqs", "1,2,3", "--json", "--sdkappid", "1400000001", r)
	if code != 0 || !strings.Contains(out, `"job_id"`) {
		t.Fatalf("recall group --json (exit %d): %s", code, out)
	}
	_, e, code = runCLI(t, "recall", "group", "--reason", "test", "--group", "@TGS#1", "--seqs", "1,x", "--sdkappid", "1400000001", r)
	if code != cli.ExitBadInput || !strings.Contains(e, `"x"`) {
		t.Fatalf("bad --seqs: exit %d %s", code, e)
	}
	_, e, code = runCLI(t, "recall", "c2c", "--reason", "test", "--from", "a", "--to", "b", "--msgkey", "nope", "--sdkappid", "1400000001", r)
	if code != cli.ExitBadInput || !strings.Contains(e, "MsgKey") {
		t.Fatalf("bad --msgkey: exit %d %s", code, e)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func writeTestFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestJobsApprove: a held job cannot be approved by its requester (exit 2,
// nothing changes); another actor approves it, and a second approval is
// refused.
func TestJobsApprove(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	store := jobs.NewStore(rdb, "")
	j, err := store.Create(t.Context(), jobs.Spec{Kind: "recall:file", Queue: tasks.QueuePurge, AppID: 1400000001,
		RequestedBy: "alice", Requester: "alice", Reason: "cli test", HoldForApproval: true})
	if err != nil {
		t.Fatal(err)
	}
	r := "--redis=redis://" + mr.Addr() + "/0"
	if _, e, code := runCLI(t, "jobs", "approve", j.ID, "--actor", "alice", r); code != cli.ExitBadInput || !strings.Contains(e, "alice") {
		t.Fatalf("the requester's own approval: exit %d %s", code, e)
	}
	if got, _ := store.Get(t.Context(), j.ID); got.Status != jobs.StatusAwaitingApproval {
		t.Fatalf("after a refused approval: %s", got.Status)
	}
	out, e, code := runCLI(t, "jobs", "approve", j.ID, "--actor", "bob", "--reason", "checked", r)
	if code != 0 || !strings.Contains(out, "approved by bob") {
		t.Fatalf("jobs approve by bob: exit %d %s %s", code, out, e)
	}
	if _, _, code := runCLI(t, "jobs", "approve", j.ID, "--actor", "carol", r); code != cli.ExitBadInput {
		t.Fatalf("approving twice: exit %d", code)
	}
}

// TestCertificateAndVerifyTakeTheEnvironment: certificate's own flags come
// from IMRECALL_* too (before, --signing-key and --out were checked before
// the environment was applied, so IMRECALL_SIGNING_KEY was refused as
// missing), and verify still applies it before its checks.
func TestCertificateAndVerifyTakeTheEnvironment(t *testing.T) {
	id := "20261122T230512Z-9f3a1c2b"
	missing := t.TempDir() + "/no-such-key.pem"
	t.Setenv("IMRECALL_SIGNING_KEY", missing)
	t.Setenv("IMRECALL_OUT", t.TempDir()+"/erasure.json")
	_, errOut, code := runCLI(t, "certificate", id)
	if code != cli.ExitBadInput || !strings.Contains(errOut, "--signing-key") || !strings.Contains(errOut, "no-such-key.pem") || strings.Contains(errOut, "required") {
		t.Fatalf("certificate with IMRECALL_SIGNING_KEY=%s: exit %d, %q; want the key file's error (exit %d), not a missing flag", missing, code, errOut, cli.ExitBadInput)
	}
	t.Setenv("IMRECALL_CONCURRENCY", "0")
	_, errOut, code = runCLI(t, "verify", id)
	if code != cli.ExitBadInput || !strings.Contains(errOut, "--concurrency 0") {
		t.Fatalf("verify with IMRECALL_CONCURRENCY=0: exit %d, %q; want the --concurrency error (exit %d)", code, errOut, cli.ExitBadInput)
	}
}

// TestCommandLineMistakesAreBadInput: an unknown flag, a flag's bad value, a
// wrong number of arguments and an unknown subcommand exit 2 (bad input,
// nothing changed), as the README says; they exited 1. Under recall and
// purge a flag of one value given twice is refused, naming it and both
// values, rather than the last one kept: `purge user --user alice --user
// bob` purged bob alone. In a schedule's command too. Nothing reaches
// Redis.
func TestCommandLineMistakesAreBadInput(t *testing.T) {
	mr, _ := redistest.Mini(t)
	r := "--redis=redis://" + mr.Addr() + "/0"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"purge", "user", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"jobs", "list", "--limit", "many"}, `invalid argument "many"`},
		{[]string{"recall", "file", r}, "accepts 1 arg(s), received 0"},
		{[]string{"recall", "group", "--group", "g", "--seqs", "1", "extra", r}, `unknown command "extra"`},
		{[]string{"purge", "user", "--user", "alice", "--user", "bob", "--dry-run", r}, `invalid argument "bob" for "--user" flag: given twice (first "alice")`},
		{[]string{"recall", "group", "--group", "g1", "--group", "g2", "--seqs", "1", "--reason", "x", "--yes", r}, `for "--group" flag: given twice (first "g1")`},
		{[]string{"recall", "c2c", "--from", "a", "--to", "b", "--msgkey", "1_2_3", "--reason", "x", "--reason", "y", r}, `for "--reason" flag: given twice`},
		{[]string{"schedule", "add", "--name", "n", "--cron", "@daily", "--reason", "x", r, "--", "purge", "group", "--group", "g", "--seq-from", "1", "--seq-from", "5", "--seq-to", "9"}, `for "--seq-from" flag: given twice`},
	} {
		if _, e, code := runCLI(t, append(c.args, "--sdkappid", "1400000001")...); code != cli.ExitBadInput || !strings.Contains(e, c.want) {
			t.Errorf("%v: exit %d %q, want %d and %q", c.args, code, e, cli.ExitBadInput, c.want)
		}
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Fatalf("a refused command line wrote to Redis: %v", keys)
	}
	// A flag that may hold a secret is never refused for being given twice:
	// the refusal would print its values.
	for _, args := range [][]string{
		{"purge", "user", "--user", "u", "--secret-key", "s3cr3t-first-0001", "--secret-key", "s3cr3t-second-002", "--dry-run", r},
		{"recall", "group", "--group", "g", "--seqs", "1", "--dry-run", "--redis", "redis://:pw-first-0001@127.0.0.1:1/0", "--redis", "redis://:pw-second-002@127.0.0.1:1/0"},
	} {
		out, e, _ := runCLI(t, append(args, "--sdkappid", "1400000001")...)
		for _, secret := range []string{"s3cr3t-first", "s3cr3t-second", "pw-first", "pw-second"} {
			if strings.Contains(out+e, secret) {
				t.Errorf("%v: a secret in the output: %s %s", args, out, e)
			}
		}
	}
	// The environment and the command line do not count as two, and a list
	// flag still takes several.
	t.Setenv("IMRECALL_REASON", "from the environment")
	if out, e, code := runCLI(t, "recall", "group", "--group", "g", "--seqs", "1,2", "--reason", "INC-5", "--dry-run", r, "--sdkappid", "1400000001"); code != cli.ExitOK {
		t.Fatalf("--reason over IMRECALL_REASON: exit %d %s %s", code, out, e)
	}
	if out, e, code := runCLI(t, "schedule", "add", "--name", "n", "--cron", "@daily", r, "--", "purge", "group", "--group", "g1", "--group", "g2", "--seq-from", "1", "--seq-to", "3"); code != cli.ExitOK || !strings.Contains(out, "g1") || !strings.Contains(out, "g2") {
		t.Fatalf("a schedule of a purge of two groups: exit %d %s %s", code, out, e)
	}
}

// TestUnknownSubcommandIsBadInput: a mistyped subcommand is a command-line
// mistake (exit 2, naming it), under the root and under a group alike: it
// used to print the group's help and exit 0 (imrecall recall grup), which a
// script takes for success, or exit 1 (imrecall bogus). A group named alone
// still prints its help and exits 0.
func TestUnknownSubcommandIsBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		typo string
	}{{[]string{"bogus"}, "bogus"}, {[]string{"recall", "grup"}, "grup"}, {[]string{"purge", "usr", "x"}, "usr"},
		{[]string{"jobs", "lst"}, "lst"}, {[]string{"dlq", "requeu", "JOB"}, "requeu"}} {
		out, e, code := runCLI(t, c.args...)
		if code != cli.ExitBadInput || !strings.Contains(e, `unknown command "`+c.typo+`"`) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q: want exit %d naming %q", c.args, code, out, e, cli.ExitBadInput, c.typo)
		}
	}
	for _, args := range [][]string{{}, {"recall"}, {"purge"}, {"jobs"}} {
		if out, e, code := runCLI(t, args...); code != cli.ExitOK || !strings.Contains(out, "Available Commands") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q: want its help, exit 0", args, code, out, e)
		}
	}
}

// TestScheduleOfAGroupIsRefused: a schedule's command must name a recall or
// purge subcommand; a mistyped one is "not a command", as before groups
// printed their help when run.
func TestScheduleOfAGroupIsRefused(t *testing.T) {
	mr, _ := redistest.Mini(t)
	r := "--redis=redis://" + mr.Addr() + "/0"
	_, e, code := runCLI(t, "schedule", "add", "--name", "n", "--cron", "@daily", "--reason", "x", r, "--", "purge", "grup", "--group", "g")
	if code != cli.ExitBadInput || !strings.Contains(e, "imrecall purge grup: not a command") {
		t.Fatalf("exit %d %q", code, e)
	}
}

// TestScheduleReasonRefusedSaysWhy: a schedule's reason that is given but
// refused (longer than producer.MaxReasonLen) is refused for that, not as
// "required".
func TestScheduleReasonRefusedSaysWhy(t *testing.T) {
	mr, _ := redistest.Mini(t)
	r := "--redis=redis://" + mr.Addr() + "/0"
	long := strings.Repeat("x", producer.MaxReasonLen+1)
	for _, args := range [][]string{
		{"schedule", "add", "--name", "n", "--cron", "@daily", "--reason", long, r, "--", "purge", "user", "--user", "u", "--peers", "a"},
		{"schedule", "add", "--name", "n", "--cron", "@daily", r, "--", "purge", "user", "--user", "u", "--peers", "a", "--reason", long},
	} {
		_, e, code := runCLI(t, args...)
		if code != cli.ExitBadInput || strings.Contains(e, "required") || !strings.Contains(e, "longer than") {
			t.Errorf("a reason of %d bytes: exit %d %q, want %d saying it is too long", len(long), code, e, cli.ExitBadInput)
		}
	}
	if _, e, code := runCLI(t, "schedule", "add", "--name", "n", "--cron", "@daily", r, "--", "purge", "user", "--user", "u", "--peers", "a"); code != cli.ExitBadInput || !strings.Contains(e, "--reason: required") {
		t.Errorf("no reason: exit %d %q", code, e)
	}
}

// TestFractionGivenTwiceIsRefused: --margin (a float) is a flag of one
// value too: given twice under purge it is refused, as the README says of
// every flag of one value, rather than the last one kept.
func TestFractionGivenTwiceIsRefused(t *testing.T) {
	mr, _ := redistest.Mini(t)
	r := "--redis=redis://" + mr.Addr() + "/0"
	_, e, code := runCLI(t, "purge", "user", "--user", "alice", "--peers", "bob", "--margin", "0.1", "--margin", "0.4", "--dry-run", r, "--sdkappid", "1400000001")
	if code != cli.ExitBadInput || !strings.Contains(e, `for "--margin" flag: given twice (first "0.1")`) {
		t.Fatalf("--margin twice: exit %d %q, want %d naming both", code, e, cli.ExitBadInput)
	}
}
