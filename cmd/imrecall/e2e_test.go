package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/cli"
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

// e2e is a multi-process setup: a private redis-server (or a Redis Cluster,
// see clusterE2E), the emulator in the test process over HTTP, and imrecall
// processes.
type e2e struct {
	t        *testing.T
	bin      string
	redis    *redistest.Server // nil on a Redis Cluster
	redisURL string            // what every imrecall process is given
	env      *imtest.Env
	store    *jobs.Store
	logs     []string // the log file of every process started, in start order
}

func newE2E(t *testing.T, cfg emulator.Config) *e2e {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	return e2eOn(t, redistest.Start(t, redistest.WithAOF()), imtest.Start(t, cfg))
}

// imrecallCommand is the command of one imrecall process of a test, run at
// a lower CPU priority (nice 5) than the test's own process. The emulator in
// the test's process stands for Tencent's servers, which do not share their
// CPUs with their callers: on a loaded two-core machine an imrecall process
// that takes the CPU from the emulator delays its count of calls already
// sent, and a call counted late lands in the sliding second of a later one
// (a 60007 the service would not have answered; the limiter's slack covers
// the service's jitter, not this). Priority only orders who runs first: a
// process that sends too fast is still refused. Without a nice binary the
// process runs at the test's priority.
func imrecallCommand(ctx context.Context, bin string, args ...string) *exec.Cmd {
	if nice, err := exec.LookPath("nice"); err == nil {
		return exec.CommandContext(ctx, nice, append([]string{"-n", "5", bin}, args...)...)
	}
	return exec.CommandContext(ctx, bin, args...)
}

// e2eOn is the setup of newE2E on a redis-server and an emulator of the
// caller's.
func e2eOn(t *testing.T, redis *redistest.Server, env *imtest.Env) *e2e {
	return &e2e{t: t, bin: imrecallBin(t), redis: redis, redisURL: redis.URL(), env: env, store: jobs.NewStore(redis.Client(), "")}
}

// environ is the environment of the imrecall processes of a test. It sets
// no bound on a job's queued work (IMRECALL_BACKLOG=0): most of these tests
// plan a whole job before they start its workers.
// TestBacklogPlannerInterrupted sets --backlog, which the environment does
// not override. A purge by index reaching now waits 1 s, not 10 s, for the
// callbacks in flight (IMRECALL_INDEX_SETTLE=1s): the tests of that wait
// give --index-settle.
func (e *e2e) environ() []string {
	return append(os.Environ(), "IMRECALL_BACKLOG=0", "IMRECALL_INDEX_SETTLE="+e2eIndexSettle,
		"IMRECALL_REDIS="+e.redisURL,
		"IMRECALL_API_BASE="+e.env.URL,
		fmt.Sprintf("IMRECALL_SDKAPPID=%d", imtest.AppID),
		"IMRECALL_ADMIN="+imtest.Admin,
		"IMRECALL_SECRET_KEY="+imtest.Secret,
	)
}

// e2eIndexSettle is the --index-settle of the end-to-end tests' processes
// (environ).
const e2eIndexSettle = "1s"

// run runs imrecall to completion and returns its standard output.
func (e *e2e) run(args ...string) (string, error) {
	cmd := imrecallCommand(e.t.Context(), e.bin, args...)
	cmd.Env = e.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("imrecall %s: %w\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// newPurgedE2E is newE2E on an emulator at the cap of 200 calls/s seeded
// with spec, and purgeDone of its first heavy sender: the setup of the tests
// that verify and certify a finished purge.
func newPurgedE2E(t *testing.T, spec emulator.DatasetSpec, reason string, extra ...string) (*e2e, jobs.Job, string) {
	e := newE2E(t, emulator.Config{Rate: 200})
	ds := e.env.Dataset(t, spec)
	j, spammer := e.purgeDone(ds, reason, extra...)
	return e, j, spammer
}

// purgeDone purges the first heavy sender of ds with one worker (purge user
// --source scan with their peers, --yes --json --wait and extra), waits for
// the job to be done with messages planned, and returns it and the sender.
func (e *e2e) purgeDone(ds *emulator.Dataset, reason string, extra ...string) (jobs.Job, string) {
	e.t.Helper()
	spammer := ds.HeavySenders[0]
	e.worker("w1")
	args := []string{"purge", "user", "--user", spammer, "--peers", strings.Join(ds.PeersOf[spammer], ","), "--source", "scan",
		"--yes", "--json", "--reason", reason, "--wait"}
	j := e.waitDone(e.created(append(args, extra...)...), 2*time.Minute)
	if j.Status != jobs.StatusDone || j.Counts.Planned == 0 {
		e.t.Fatalf("job = %+v", j)
	}
	return j, spammer
}

// exitOf returns the exit code of a run of e.run or of a command (0 for
// success); an error that is not an exit fails the test.
func exitOf(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("not an exit: %v", err)
	}
	return ee.ExitCode()
}

// worker starts a worker process; it is stopped (SIGTERM) when the test ends.
func (e *e2e) worker(name string, args ...string) *exec.Cmd {
	return e.workerLogged(filepath.Join(e.t.TempDir(), name+".log"), nil, append([]string{"--log-level", "warn"}, args...)...)
}

// workerLogged starts a worker logging to logPath, with extra environment.
func (e *e2e) workerLogged(logPath string, env []string, args ...string) *exec.Cmd {
	cmd := imrecallCommand(context.Background(), e.bin, append([]string{"worker", "--concurrency", "16", "--max-attempts", "10"}, args...)...)
	cmd.Env = append(e.environ(), env...)
	e.startLogged(cmd, logPath)
	return cmd
}

// startLogged starts cmd with its output in logPath; it is stopped (SIGTERM)
// when the test ends, and the tail of its log shown if the test failed.
func (e *e2e) startLogged(cmd *exec.Cmd, logPath string) {
	e.t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.logs = append(e.logs, logPath)
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
		if e.t.Failed() {
			e.t.Logf("%s (tail):\n%s", filepath.Base(logPath), tail(logPath, 4000))
		}
	})
}

// waitDone waits until job id has finished.
func (e *e2e) waitDone(id string, timeout time.Duration) jobs.Job {
	e.t.Helper()
	return e.waitFor("job "+id+" finished", timeout, jobs.Job.Finished, id)
}

// created runs imrecall with args (a command that creates a job and prints
// it as JSON first) and returns the new job's id.
func (e *e2e) created(args ...string) string {
	e.t.Helper()
	out, err := e.run(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	var created struct {
		JobID string `json:"job_id"`
	}
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&created); err != nil || created.JobID == "" {
		e.t.Fatalf("imrecall %s printed %q: %v", strings.Join(args, " "), out, err)
	}
	return created.JobID
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
	// checksFailed counts, by group id|seq, the history checks that failed
	// after a "not found" that followed a lost answer (verifyFailuresIn):
	// each is followed by one more recall request.
	checksFailed map[string]int
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

// check compares a finished job, message by message, with the emulator's
// ground truth: every listed message that exists and was not recalled before
// is recalled by the job, exactly once, unless it is a dead letter that needs
// attention (retries exhausted) and the emulator agrees it is not recalled.
func (f *fixture) check(t *testing.T, env *imtest.Env, j jobs.Job, store *jobs.Store) {
	t.Helper()
	dead := map[string]jobs.DeadLetter{}
	if err := store.DeadLetters(t.Context(), j.ID, func(d jobs.DeadLetter) error {
		dead[d.Target().String()+"|"+d.Item()] = d
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var recalledByJob, wantDead, unattributed int64
	expectDead := func(key, code string) {
		wantDead++
		if d, ok := dead[key]; !ok || d.Code != code {
			t.Errorf("%s: dead letter %+v, want code %s", key, d, code)
		}
	}
	// A message recalled before the job is a dead letter with code, unless
	// a worker was killed with the job's own call to it in flight: then the
	// next delivery finds it recalled and cannot tell by whom. It counts as
	// recalled, and as one of the job's unattributed recalls.
	expectDeadOrUnattributed := func(key, code string) {
		if _, ok := dead[key]; !ok {
			unattributed++
			return
		}
		expectDead(key, code)
	}
	for _, g := range f.groups {
		msgs := env.Emu.GroupMessages(g, "")
		for s := int64(1); s <= int64(f.perGroup); s++ {
			key := jobs.Target{GroupID: g}.String() + "|" + strconv.FormatInt(s, 10)
			switch {
			case s > int64(len(msgs)):
				expectDead(key, "10030") // never existed
			case f.preRecalled[g][s]:
				expectDeadOrUnattributed(key, "10030") // recalled before the job
			case msgs[s-1].Recalled:
				recalledByJob++
				if _, ok := dead[key]; ok {
					t.Errorf("%s: recalled, yet dead-lettered %+v", key, dead[key])
				}
				m := msgs[s-1]
				allowed := m.AnswersLost
				if allowed > 0 {
					allowed += f.checksFailed[g+"|"+strconv.FormatInt(s, 10)]
				}
				if m.RecallRequests > allowed {
					t.Errorf("%s: %d recall requests after it was recalled; allowed %d (%d answers lost, then failed history checks)", key, m.RecallRequests, allowed, m.AnswersLost)
				}
			default:
				wantDead++
				if d, ok := dead[key]; !ok || d.Category != jobs.NeedsAttention {
					t.Errorf("%s: not recalled and not a dead letter needing attention (%+v)", key, d)
				}
			}
		}
	}
	for pair := range f.c2cKeys {
		target := jobs.Target{From: pair[0], To: pair[1]}
		for _, m := range env.Emu.C2CMessages(pair[0], pair[1]) {
			key := target.String() + "|" + m.MsgKey
			switch {
			case f.c2cWithdrawn[[3]string{pair[0], pair[1], m.MsgKey}]:
				expectDeadOrUnattributed(key, "20023")
			case m.Recalled:
				recalledByJob++
			default:
				wantDead++
				if d, ok := dead[key]; !ok || d.Category != jobs.NeedsAttention {
					t.Errorf("%s: not recalled and not a dead letter needing attention (%+v)", key, d)
				}
			}
		}
	}
	for i := range f.unknownC2C {
		expectDead(jobs.Target{From: "a0", To: "b0"}.String()+"|"+fmt.Sprintf("9999%d_1_1", i), "20022")
	}
	c := j.Counts
	if c.Planned != int64(f.groupMessages+f.c2cMessages) {
		t.Errorf("planned = %d, want %d", c.Planned, f.groupMessages+f.c2cMessages)
	}
	if c.Recalled != recalledByJob+unattributed || c.DeadLettered != wantDead || int64(len(dead)) != wantDead {
		t.Errorf("recalled %d, dead-lettered %d (%d records); ground truth: %d recalled by the job, %d recalled before it and found so after a lost answer, %d not",
			c.Recalled, c.DeadLettered, len(dead), recalledByJob, unattributed, wantDead)
	}
	if c.RecalledUnattributed < unattributed {
		t.Errorf("%d messages recalled before the job were counted recalled, but only %d recalls are marked unattributed", unattributed, c.RecalledUnattributed)
	}
	if unattributed > 0 {
		t.Logf("%d messages recalled before the job were found recalled after a lost answer (unattributed recalls: %d)", unattributed, c.RecalledUnattributed)
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
		// the call takes effect, its answer is lost at the gateway
		HTTP502AfterEffect: 0.01,
	})

	jobID := e.created("recall", "file", f.path, "--yes", "--json", "--reason", "e2e test")
	w1 := e.worker("w1")
	metricsAddr := freeAddr(t)
	e.worker("w2", "--metrics-listen", metricsAddr)

	// SIGTERM one worker mid-job: it finishes its calls in flight, records
	// them and exits cleanly; the other finishes the job.
	for {
		j, _ := e.store.Get(t.Context(), jobID)
		if j.Counts.Recalled > 2000 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := w1.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w1.Wait(); err != nil {
		t.Fatalf("worker after SIGTERM: %v", err)
	}
	j := e.waitDone(jobID, 5*time.Minute)
	if j.Status != jobs.StatusDone {
		t.Fatalf("job status %s", j.Status)
	}
	f.checksFailed = verifyFailuresIn(e.logs)
	f.check(t, e.env, j, e.store)

	st := e.env.Emu.Stats()[tim.GroupMsgRecall.Name()]
	// 20,000 seqs in calls of 10 is 2,000 calls; retries of failed seqs add
	// at most one call per fault.
	if st.Accepted < 2000 || st.Accepted > 2000+st.Faults+int64(float64(f.groupMessages)*0.08) {
		t.Errorf("group_msg_recall accepted %d calls for %d seqs", st.Accepted, f.groupMessages)
	}
	// The job counts a call as each starts (the console's calls/s): every
	// call the emulator saw, plus at most one per lane of the worker stopped
	// mid-job (a send counted, then its wait for the slot cut short).
	emuCalls := st.Calls + e.env.Emu.Stats()[tim.AdminMsgWithdraw.Name()].Calls
	if j.Calls < emuCalls || j.Calls > emuCalls+64 {
		t.Errorf("the job counts %d calls; the emulator saw %d", j.Calls, emuCalls)
	}

	// The worker's metrics count calls by API and code, and messages by outcome.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`imrecall_api_calls_total{api="group_msg_recall",code="0"}`, `imrecall_messages_total{outcome="recalled"}`,
		`imrecall_limiter_wait_seconds_count{api="admin_msgwithdraw"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// jobs show --json reports the same record.
	out, err := e.run("jobs", "show", jobID, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var shown jobs.Job
	if err := json.Unmarshal([]byte(out), &shown); err != nil || shown.Status != jobs.StatusDone || shown.Counts.Recalled != j.Counts.Recalled {
		t.Fatalf("jobs show --json = %s (%v)", out, err)
	}
}

// httpCall sends method url with body (none when empty) and the header
// pairs given (name, value, ...), and returns the answer's status and body.
func httpCall(t *testing.T, method, url, body string, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// bearer is the Authorization header pair of token, none when it is empty.
func bearer(token string) []string {
	if token == "" {
		return nil
	}
	return []string{"Authorization", "Bearer " + token}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestWorkerKilledMidJob kills a worker with SIGKILL mid-job: another worker
// finishes it and the counts still reconcile with the ground truth.
func TestWorkerKilledMidJob(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200, Latency: 20 * time.Millisecond, LatencyMax: 40 * time.Millisecond, Seed: 5})
	f := seedFixture(t, e.env, 20, 150, 10, 10)
	e.env.Emu.ResetStats()
	jobID := e.created("recall", "file", f.path, "--reason", "test", "--yes", "--json")
	w1 := e.worker("w1")
	// Kill it once it has recorded some work.
	deadline := time.Now().Add(time.Minute)
	for {
		j, _ := e.store.Get(t.Context(), jobID)
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
	j := e.waitDone(jobID, 4*time.Minute)
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
			cmd := imrecallCommand(t.Context(), e.bin, "recall", "file", path, "--reason", "test", "--yes")
			cmd.Env = e.environ()
			out, err := cmd.CombinedOutput()
			if exitOf(t, err) != cli.ExitBadInput {
				t.Fatalf("exit = %v, want %d\n%s", err, cli.ExitBadInput, out)
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
