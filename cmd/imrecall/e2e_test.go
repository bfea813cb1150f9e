package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// binPath is the imrecall binary the end-to-end tests run, built once.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func imrecallBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imrecall-e2e")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "imrecall")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// e2e is a multi-process setup: a private redis-server, the emulator in the
// test process over HTTP, and imrecall processes.
type e2e struct {
	t     *testing.T
	bin   string
	redis *redistest.Server
	env   *imtest.Env
	store *jobs.Store
}

func newE2E(t *testing.T, cfg emulator.Config) *e2e {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	e := &e2e{t: t, bin: imrecallBin(t), redis: redistest.Start(t, redistest.WithAOF()), env: imtest.Start(t, cfg)}
	e.store = jobs.NewStore(e.redis.Client(), "")
	return e
}

func (e *e2e) environ() []string {
	return append(os.Environ(),
		"IMRECALL_REDIS="+e.redis.URL(),
		"IMRECALL_API_BASE="+e.env.URL,
		fmt.Sprintf("IMRECALL_SDKAPPID=%d", imtest.AppID),
		"IMRECALL_ADMIN="+imtest.Admin,
		"IMRECALL_SECRET_KEY="+imtest.Secret,
	)
}

// run runs imrecall to completion and returns its standard output.
func (e *e2e) run(args ...string) (string, error) {
	cmd := exec.CommandContext(e.t.Context(), e.bin, args...)
	cmd.Env = e.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("imrecall %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// worker starts a worker process; it is stopped (SIGTERM) when the test ends.
func (e *e2e) worker(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(e.bin, append([]string{"worker", "--concurrency", "16", "--log-level", "warn"}, args...)...)
	cmd.Env = e.environ()
	logf, err := os.Create(filepath.Join(e.t.TempDir(), name+".log"))
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
		if e.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			e.t.Logf("%s log (tail):\n%s", name, b)
		}
	})
	return cmd
}

func (e *e2e) waitDone(id string, timeout time.Duration) jobs.Job {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), timeout)
	defer cancel()
	for {
		j, err := e.store.Get(ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if j.Finished() {
			return j
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("job did not finish in %v: %+v", timeout, j)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// fixture seeds groups and one-to-one chats and writes a list file naming
// them, with missing seqs, already-recalled messages and unknown MsgKeys.
type fixture struct {
	path          string
	groups        []string
	perGroup      int
	preRecalled   map[string]map[int64]bool // group → seq
	missing       int
	c2cKeys       map[[2]string][]string
	c2cWithdrawn  map[[3]string]bool // from, to, MsgKey
	unknownC2C    int
	groupMessages int
	c2cMessages   int
}

func seedFixture(t *testing.T, env *imtest.Env, groups, perGroup, c2cPairs, perPair int) *fixture {
	t.Helper()
	f := &fixture{perGroup: perGroup, preRecalled: map[string]map[int64]bool{}, c2cKeys: map[[2]string][]string{}, c2cWithdrawn: map[[3]string]bool{}}
	users := []string{"spam", "u1", "u2", "u3"}
	for i := range c2cPairs {
		users = append(users, fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
	}
	env.Accounts(t, users...)
	types := []string{"Public", "Private", "ChatRoom", "Work", "Meeting"}
	var mu sync.Mutex
	f.groups = make([]string, groups)
	imtest.Parallel(groups, func(i int) {
		g := env.Group(t, types[i%len(types)], fmt.Sprintf("@TGS#e2e%03d", i), "spam", "u1", "u2", "u3")
		n := perGroup
		if i%10 == 0 {
			n = perGroup - 5 // the list names 5 seqs this group never had
		}
		env.SendGroup(t, g, "", n, "spam", "u1", "u2", "u3")
		mu.Lock()
		f.groups[i] = g
		mu.Unlock()
	})
	// Recall a few messages before the job, as someone else might have.
	for i, g := range f.groups {
		if i%10 != 1 {
			continue
		}
		f.preRecalled[g] = map[int64]bool{1: true, 2: true, 3: true}
		if _, err := env.Client.RecallGroup(t.Context(), g, "", []int64{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
	}
	imtest.Parallel(c2cPairs, func(i int) {
		a, b := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
		keys := env.SendC2C(t, a, b, perPair)
		mu.Lock()
		f.c2cKeys[[2]string{a, b}] = keys
		mu.Unlock()
	})
	for pair, keys := range f.c2cKeys {
		if len(f.c2cWithdrawn) >= 10 {
			break
		}
		if _, err := env.Client.AdminMsgWithdraw(t.Context(), tim.AdminMsgWithdrawRequest{FromAccount: pair[0], ToAccount: pair[1], MsgKey: keys[0]}); err != nil {
			t.Fatal(err)
		}
		f.c2cWithdrawn[[3]string{pair[0], pair[1], keys[0]}] = true
	}

	var buf bytes.Buffer
	for i, g := range f.groups {
		for s := 1; s <= perGroup; s++ {
			fmt.Fprintf(&buf, `{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":%q,"MsgSeq":%d,"From_Account":"x"}`+"\n", g, s)
			f.groupMessages++
		}
		if i%10 == 0 {
			f.missing += 5
		}
	}
	for pair, keys := range f.c2cKeys {
		for _, k := range keys {
			fmt.Fprintf(&buf, `{"From_Account":%q,"To_Account":%q,"MsgKey":%q}`+"\n", pair[0], pair[1], k)
			f.c2cMessages++
		}
	}
	for i := range 5 {
		fmt.Fprintf(&buf, `{"From_Account":"a0","To_Account":"b0","MsgKey":"9999%d_1_1"}`+"\n", i)
		f.unknownC2C++
		f.c2cMessages++
	}
	f.path = filepath.Join(t.TempDir(), "list.jsonl")
	if err := os.WriteFile(f.path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// check compares a finished job with the emulator's ground truth.
func (f *fixture) check(t *testing.T, env *imtest.Env, j jobs.Job, store *jobs.Store) {
	t.Helper()
	var pre int64
	for _, m := range f.preRecalled {
		pre += int64(len(m))
	}
	wantGroupRecalled := int64(f.groupMessages) - int64(f.missing) - pre
	wantC2CRecalled := int64(f.c2cMessages - f.unknownC2C - len(f.c2cWithdrawn))

	// Ground truth: every listed message that exists is recalled now; the
	// job recalled exactly those it did not find recalled already.
	var recalledByJob int64
	for _, g := range f.groups {
		for _, m := range env.Emu.GroupMessages(g, "") {
			if !m.Recalled {
				t.Errorf("group %s seq %d is not recalled", g, m.Seq)
				continue
			}
			if !f.preRecalled[g][m.Seq] {
				recalledByJob++
				if m.RecallRequests != 0 {
					t.Errorf("group %s seq %d: %d recall requests after it was recalled", g, m.Seq, m.RecallRequests)
				}
			}
		}
	}
	for pair, keys := range f.c2cKeys {
		for _, m := range env.Emu.C2CMessages(pair[0], pair[1]) {
			if !m.Recalled {
				t.Errorf("c2c %s→%s %s is not recalled", pair[0], pair[1], m.MsgKey)
			} else if !f.c2cWithdrawn[[3]string{pair[0], pair[1], m.MsgKey}] {
				recalledByJob++
			}
		}
		_ = keys
	}
	c := j.Counts
	if c.Planned != int64(f.groupMessages+f.c2cMessages) {
		t.Errorf("planned = %d, want %d", c.Planned, f.groupMessages+f.c2cMessages)
	}
	if c.Recalled != wantGroupRecalled+wantC2CRecalled || c.Recalled != recalledByJob {
		t.Errorf("recalled = %d, want %d (emulator: %d recalled by the job)", c.Recalled, wantGroupRecalled+wantC2CRecalled, recalledByJob)
	}
	if c.DeadByCode["10030"] != int64(f.missing)+pre || c.DeadByCode["20023"] != int64(len(f.c2cWithdrawn)) || c.DeadByCode["20022"] != int64(f.unknownC2C) {
		t.Errorf("dead letters by code = %v, want 10030:%d 20023:%d 20022:%d", c.DeadByCode, int64(f.missing)+pre, len(f.c2cWithdrawn), f.unknownC2C)
	}
	if c.Pending != 0 || c.Planned != c.Recalled+c.DeadLettered {
		t.Errorf("counts do not add up: %+v", c)
	}
	rc, err := store.Recount(t.Context(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Matches(c); err != nil {
		t.Error(err)
	}
	for api, st := range env.Emu.Stats() {
		if st.Throttled != 0 {
			t.Errorf("emulator throttled %d %s calls", st.Throttled, api)
		}
		if st.Max1s > 200 {
			t.Errorf("%s: max_1s = %d, over the cap", api, st.Max1s)
		}
	}
}

// TestEndToEndTwoWorkers is issue [3/6]'s acceptance: 20,000 group messages
// over 100 groups and 1,000 one-to-one messages, faults injected, two worker
// processes, a real Redis; the job ends done and matches the ground truth.
func TestEndToEndTwoWorkers(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200, Latency: 5 * time.Millisecond, LatencyMax: 20 * time.Millisecond, Seed: 11})
	f := seedFixture(t, e.env, 100, 200, 50, 20)
	e.env.Emu.ResetStats()
	e.env.Emu.SetFaults(emulator.Faults{
		Codes:     map[int]float64{91000: 0.05},
		ItemCodes: map[int]float64{10002: 0.05},
		HTTP502:   0.01,
	})

	out, err := e.run("recall", "file", f.path, "--yes", "--json", "--reason", "e2e test")
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.JobID == "" {
		t.Fatalf("recall file --json printed %q: %v", out, err)
	}
	e.worker("w1")
	e.worker("w2")
	j := e.waitDone(created.JobID, 5*time.Minute)
	if j.Status != jobs.StatusDone {
		t.Fatalf("job status %s", j.Status)
	}
	f.check(t, e.env, j, e.store)

	st := e.env.Emu.Stats()[tim.GroupMsgRecall.Name()]
	// 20,000 seqs in calls of 10 is 2,000 calls; retries of failed seqs add
	// at most one call per fault.
	if st.Accepted < 2000 || st.Accepted > 2000+st.Faults+int64(float64(f.groupMessages)*0.08) {
		t.Errorf("group_msg_recall accepted %d calls for %d seqs", st.Accepted, f.groupMessages)
	}

	// jobs show --json reports the same record.
	out, err = e.run("jobs", "show", created.JobID, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var shown jobs.Job
	if err := json.Unmarshal([]byte(out), &shown); err != nil || shown.Status != jobs.StatusDone || shown.Counts.Recalled != j.Counts.Recalled {
		t.Fatalf("jobs show --json = %s (%v)", out, err)
	}
}

// TestWorkerKilledMidJob kills a worker with SIGKILL mid-job: another worker
// finishes it and the counts still reconcile with the ground truth.
func TestWorkerKilledMidJob(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200, Latency: 20 * time.Millisecond, LatencyMax: 40 * time.Millisecond, Seed: 5})
	f := seedFixture(t, e.env, 20, 150, 10, 10)
	e.env.Emu.ResetStats()
	out, err := e.run("recall", "file", f.path, "--yes", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	w1 := e.worker("w1")
	// Kill it once it has recorded some work.
	deadline := time.Now().Add(time.Minute)
	for {
		j, _ := e.store.Get(t.Context(), created.JobID)
		if j.Counts.Recalled > 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker made no progress: %+v", j)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := w1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.worker("w2")
	j := e.waitDone(created.JobID, 4*time.Minute)
	f.check(t, e.env, j, e.store)
}

// TestRecallFileRejectsBadInput: a bad line is named and nothing is enqueued.
func TestRecallFileRejectsBadInput(t *testing.T) {
	e := newE2E(t, emulator.Config{})
	cases := map[string]string{
		"bad json":     `{"GroupId":"g","MsgSeq":1}` + "\n" + `{"GroupId":"g","MsgSeq":2` + "\n",
		"non-numeric":  `{"GroupId":"g","MsgSeq":1}` + "\n" + `{"GroupId":"g","MsgSeq":"x"}` + "\n",
		"negative":     `{"GroupId":"g","MsgSeq":1}` + "\n" + `{"GroupId":"g","MsgSeq":-3}` + "\n",
		"missing seq":  `{"GroupId":"g","MsgSeq":1}` + "\n" + `{"GroupId":"g"}` + "\n",
		"missing peer": `{"GroupId":"g","MsgSeq":1}` + "\n" + `{"From_Account":"a","MsgKey":"1_1_1"}` + "\n",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.jsonl")
			os.WriteFile(path, []byte(body), 0o600)
			cmd := exec.CommandContext(t.Context(), e.bin, "recall", "file", path, "--yes")
			cmd.Env = e.environ()
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitBadInput {
				t.Fatalf("exit = %v, want %d\n%s", err, exitBadInput, out)
			}
			if !strings.Contains(string(out), path+":2:") {
				t.Fatalf("output does not name %s:2:\n%s", path, out)
			}
		})
	}
	list, err := e.store.List(t.Context(), 10)
	if err != nil || len(list) != 0 {
		t.Fatalf("jobs after bad input: %v %v", list, err)
	}
	if n, _ := e.redis.Client().Keys(t.Context(), "asynq:*pending").Result(); len(n) != 0 {
		t.Fatalf("tasks enqueued after bad input: %v", n)
	}
}
