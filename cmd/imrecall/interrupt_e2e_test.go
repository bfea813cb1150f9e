package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
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
	"github.com/imrecall/imrecall/jobs"
)

// Short leases and passes so that interrupted jobs settle quickly.
var interruptFlags = []string{"--planner-lease", "3s"}

// startInterrupted starts imrecall with the test hook that pauses it before
// enqueue pauseAt+1, waits until it is paused (between planning messages
// and queueing them), sends it sig and waits for it to exit.
func (e *e2e) startInterrupted(sig syscall.Signal, pauseAt int, args ...string) {
	e.t.Helper()
	cmd := imrecallCommand(e.t.Context(), e.bin, append(args, interruptFlags...)...)
	cmd.Env = append(e.environ(), testPauseEnv+"="+strconv.Itoa(pauseAt))
	pr, pw := io.Pipe()
	var logged bytes.Buffer
	var mu sync.Mutex
	cmd.Stderr = pw
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	paused := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			logged.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.HasPrefix(sc.Text(), "test hook: paused") {
				once.Do(func() { close(paused) })
			}
		}
	}()
	select {
	case <-paused:
	case <-time.After(time.Minute):
		mu.Lock()
		defer mu.Unlock()
		e.t.Fatalf("imrecall %s never reached the pause:\n%s", strings.Join(args, " "), logged.String())
	}
	if err := cmd.Process.Signal(sig); err != nil {
		e.t.Fatal(err)
	}
	err := cmd.Wait()
	pw.Close()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		e.t.Fatalf("imrecall %s after %s: %v, want a failure exit", strings.Join(args, " "), sig, err)
	}
	mu.Lock()
	e.t.Logf("imrecall %s after %s (%v):\n%s", args[0]+" "+args[1], sig, err, logged.String())
	mu.Unlock()
}

// interruptAndRerun runs imrecall with args, interrupted with sig between
// planning and queueing (see startInterrupted), checks that its job settles
// by itself (settleInterrupted), then runs the same command again to the
// end and requires the re-run to finish done. It returns both jobs' ids.
func (e *e2e) interruptAndRerun(sig syscall.Signal, pauseAt int, args ...string) (first, second string) {
	e.t.Helper()
	e.startInterrupted(sig, pauseAt, args...)
	first = e.newestJob()
	j1, took := e.settleInterrupted(first)
	e.t.Logf("interrupted job settled %.1f s after the signal: planned %d, recalled %d", took.Seconds(), j1.Counts.Planned, j1.Counts.Recalled)
	second = jobIDOf(e.t, e.must(e.run(args...)))
	if j2 := e.waitDone(second, 2*time.Minute); j2.Status != jobs.StatusDone || j2.Counts.Pending != 0 {
		e.t.Fatalf("re-run = %+v", j2)
	}
	return first, second
}

// newestJob returns the id of the newest job.
func (e *e2e) newestJob() string {
	e.t.Helper()
	list, err := e.store.List(e.t.Context(), 1)
	if err != nil || len(list) == 0 {
		e.t.Fatalf("no job: %v", err)
	}
	return list[0].ID
}

// settleInterrupted waits for an interrupted job to settle by itself and
// checks it: failed, planning interrupted on record, nothing pending, the
// counts proven by a recount, `jobs wait` returning, and the report not
// calling it reconciled until it is settled.
func (e *e2e) settleInterrupted(id string) (jobs.Job, time.Duration) {
	e.t.Helper()
	start := time.Now()
	j := e.waitDone(id, 2*time.Minute)
	took := time.Since(start)
	if j.Status != jobs.StatusFailed || j.PlanningInterrupted == nil || j.Counts.Pending != 0 || !strings.Contains(j.Error, "planning interrupted") {
		e.t.Fatalf("interrupted job settled as %s, interruption %+v, pending %d, error %q; want failed, planning interrupted, 0 pending",
			j.Status, j.PlanningInterrupted, j.Counts.Pending, j.Error)
	}
	rep, err := e.store.BuildReport(e.t.Context(), id)
	if err != nil || !rep.Reconciled || !rep.Settled {
		e.t.Fatalf("report of the interrupted job: %+v, %v", rep, err)
	}
	// jobs wait returns at once, with the failure's exit code.
	cmd := imrecallCommand(e.t.Context(), e.bin, "jobs", "wait", id)
	cmd.Env = e.environ()
	out, err := cmd.CombinedOutput()
	if exitOf(e.t, err) != cli.ExitFailure || !strings.Contains(string(out), "planning interrupted") {
		e.t.Fatalf("jobs wait %s: %v\n%s", id, err, out)
	}
	return j, took
}

// twoJobsAccount checks message by message that each listed message was
// recalled by exactly one of the two jobs, and that the re-run recorded the
// first job's recalls as already gone (dead letters no one needs to act on),
// or, for a purge (rediscovers), did not plan them at all (a history scan
// skips recalled messages).
func (e *e2e) twoJobsAccount(first, second string, listed []string, rediscovers bool) {
	e.t.Helper()
	s1, err := jobStates(e.t.Context(), e.redis.Client(), first)
	if err != nil {
		e.t.Fatal(err)
	}
	s2, err := jobStates(e.t.Context(), e.redis.Client(), second)
	if err != nil {
		e.t.Fatal(err)
	}
	by1 := 0
	for _, k := range listed {
		r1, r2 := s1[k] == "r", s2[k] == "r"
		switch {
		case r1 == r2:
			e.t.Errorf("%s: first job %q, re-run %q: want recalled by exactly one", k, s1[k], s2[k])
		case r1 && rediscovers && s2[k] == "":
		case r1 && !strings.HasPrefix(s2[k], "d:") || r1 && jobs.CategoryOf(strings.TrimPrefix(s2[k], "d:")) == jobs.NeedsAttention:
			e.t.Errorf("%s: recalled by the first job; the re-run has %q, want an already-gone dead letter", k, s2[k])
		}
		if r1 {
			by1++
		}
	}
	if !rediscovers && len(s2) != len(listed) {
		e.t.Errorf("the re-run planned %d messages, want %d", len(s2), len(listed))
	}
	e.t.Logf("%d messages: %d recalled by the interrupted job, %d by the re-run", len(listed), by1, len(listed)-by1)
}

// TestInterruptedRecallFile: `recall file` interrupted between planning and
// queueing (SIGINT: it queues what it planned and stops; SIGKILL: its lease
// lapses and a worker's reconciler settles the job and queues its journal),
// at the first task and after 30: with workers running, the job settles by
// itself (failed, planning interrupted, nothing pending), and running the
// same command again recalls the rest, checked message by message against
// the emulator.
func TestInterruptedRecallFile(t *testing.T) {
	for _, c := range []struct {
		sig     syscall.Signal
		pauseAt int
	}{{syscall.SIGINT, 0}, {syscall.SIGINT, 30}, {syscall.SIGKILL, 0}, {syscall.SIGKILL, 30}} {
		t.Run(fmt.Sprintf("%s after %d tasks", c.sig, c.pauseAt), func(t *testing.T) {
			e := newE2E(t, emulator.Config{Rate: 200})
			listed, path := seedList(t, e.env, 12, 80, 4, 10)
			e.worker("w1", "--reconcile-interval", "1s")
			e.worker("w2", "--reconcile-interval", "1s")
			args := []string{"recall", "file", path, "--reason", "test", "--yes", "--json"}
			first, second := e.interruptAndRerun(c.sig, c.pauseAt, args...)
			e.twoJobsAccount(first, second, keysOf(listed), false)
			checkListTruth(t, e.env, listed)
		})
	}
}

// TestInterruptedPurgeUser: `purge user` interrupted while it queues its
// discovery tasks, at the first and after 6: the job settles by itself once
// the discovery tasks queued have run (the units never queued are settled
// as interrupted when their leases lapse), and running the same purge again
// recalls everything the user sent, checked against the emulator.
func TestInterruptedPurgeUser(t *testing.T) {
	for _, c := range []struct {
		sig     syscall.Signal
		pauseAt int
	}{{syscall.SIGINT, 0}, {syscall.SIGINT, 6}, {syscall.SIGKILL, 0}, {syscall.SIGKILL, 6}} {
		t.Run(fmt.Sprintf("%s after %d tasks", c.sig, c.pauseAt), func(t *testing.T) {
			e := newE2E(t, emulator.Config{Rate: 200})
			ds := e.env.Dataset(t, emulator.DatasetSpec{Groups: 24, Users: 300, GroupMessages: 8000, C2CMessages: 400,
				HeavyGroups: 20, HeavyShare: 0.08, Peers: 5, Seed: 23, TypeMix: map[string]int{"Public": 3, "Work": 1, "AVChatRoom": 1}})
			spammer := ds.HeavySenders[0]
			e.worker("w1", "--reconcile-interval", "1s")
			e.worker("w2", "--reconcile-interval", "1s")
			args := []string{"purge", "user", "--reason", "test", "--user", spammer, "--peers", strings.Join(ds.PeersOf[spammer], ","), "--source", "scan", "--yes", "--json"}
			first, second := e.interruptAndRerun(c.sig, c.pauseAt, args...)
			// Ground truth: every message the user sent (recallable groups, chats
			// with the peers) is recalled, by exactly one of the two jobs, and
			// nothing else is.
			var sent []string
			others := 0
			for _, g := range e.env.Emu.Groups() {
				for _, topic := range append([]string{""}, g.Topics...) {
					for _, m := range e.env.Emu.GroupMessages(g.GroupID, topic) {
						switch {
						case m.From == spammer && g.Type != "AVChatRoom":
							if !m.Recalled {
								t.Errorf("group %s topic %q seq %d: the user's message is not recalled", g.GroupID, topic, m.Seq)
							}
							sent = append(sent, chaosKey(jobs.Target{GroupID: g.GroupID, TopicID: topic}, strconv.FormatInt(m.Seq, 10)))
						case m.From != spammer && m.Recalled:
							others++
						}
					}
				}
			}
			for _, p := range ds.PeersOf[spammer] {
				for _, m := range e.env.Emu.C2CMessages(spammer, p) {
					switch {
					case m.From == spammer:
						if !m.Recalled {
							t.Errorf("chat %s→%s %s: not recalled", spammer, p, m.MsgKey)
						}
						sent = append(sent, chaosKey(jobs.Target{From: spammer, To: p}, m.MsgKey))
					case m.Recalled:
						others++
					}
				}
			}
			if others != 0 || len(sent) == 0 {
				t.Fatalf("%d messages of others recalled; the user sent %d", others, len(sent))
			}
			e.twoJobsAccount(first, second, sent, true)
		})
	}
}

func jobIDOf(t *testing.T, out string) string {
	t.Helper()
	i := strings.Index(out, `"job_id"`)
	if i < 0 {
		t.Fatalf("no job id in %q", out)
	}
	rest := out[i+len(`"job_id"`):]
	rest = rest[strings.Index(rest, `"`)+1:]
	return rest[:strings.Index(rest, `"`)]
}

// listedMsg is one message named in a list file.
type listedMsg struct {
	target jobs.Target
	item   string
}

func keysOf(l []listedMsg) []string {
	out := make([]string, len(l))
	for i, m := range l {
		out[i] = chaosKey(m.target, m.item)
	}
	return out
}

// seedList sends perGroup+5 messages in each of groups groups and perPair+2
// in each of pairs one-to-one chats, and writes a list file naming the first
// perGroup and perPair of them: the others must stay.
func seedList(t *testing.T, env *imtest.Env, groups, perGroup, pairs, perPair int) ([]listedMsg, string) {
	t.Helper()
	users := []string{"s", "u1"}
	for i := range pairs {
		users = append(users, fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
	}
	env.Accounts(t, users...)
	var listed []listedMsg
	var buf bytes.Buffer
	for i := range groups {
		g := env.Group(t, "Public", fmt.Sprintf("@TGS#int%03d", i), "s", "u1")
		env.SendGroup(t, g, "", perGroup+5, "s", "u1")
		for s := 1; s <= perGroup; s++ {
			fmt.Fprintf(&buf, `{"GroupId":%q,"MsgSeq":%d}`+"\n", g, s)
			listed = append(listed, listedMsg{jobs.Target{GroupID: g}, strconv.Itoa(s)})
		}
	}
	for i := range pairs {
		a, b := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
		keys := env.SendC2C(t, a, b, perPair+2)
		for _, k := range keys[:perPair] {
			fmt.Fprintf(&buf, `{"From_Account":%q,"To_Account":%q,"MsgKey":%q}`+"\n", a, b, k)
			listed = append(listed, listedMsg{jobs.Target{From: a, To: b}, k})
		}
	}
	path := filepath.Join(t.TempDir(), "list.jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return listed, path
}

// checkListTruth: every listed message is recalled at the emulator, and no
// other message is.
func checkListTruth(t *testing.T, env *imtest.Env, listed []listedMsg) {
	t.Helper()
	want := map[string]bool{}
	for _, m := range listed {
		want[chaosKey(m.target, m.item)] = true
	}
	seen := 0
	for _, g := range env.Emu.Groups() {
		for _, m := range env.Emu.GroupMessages(g.GroupID, "") {
			k := chaosKey(jobs.Target{GroupID: g.GroupID}, strconv.FormatInt(m.Seq, 10))
			if m.Recalled != want[k] {
				t.Errorf("%s: recalled %v, listed %v", k, m.Recalled, want[k])
			}
			if want[k] {
				seen++
			}
		}
	}
	pairs := map[[2]string]bool{}
	for _, m := range listed {
		if !m.target.IsGroup() {
			pairs[[2]string{m.target.From, m.target.To}] = true
		}
	}
	for p := range pairs {
		for _, m := range env.Emu.C2CMessages(p[0], p[1]) {
			k := chaosKey(jobs.Target{From: p[0], To: p[1]}, m.MsgKey)
			if m.Recalled != want[k] {
				t.Errorf("%s: recalled %v, listed %v", k, m.Recalled, want[k])
			}
			if want[k] {
				seen++
			}
		}
	}
	if seen != len(listed) {
		t.Errorf("found %d of the %d listed messages at the emulator", seen, len(listed))
	}
}

// TestWorkerKilledBetweenPlanAndQueueInDiscovery: a worker is SIGKILLed in
// a discovery task, between planning a page of messages and queueing them
// (the test hook pauses it there). Its attempt's lease lapses and another
// worker's reconciler queues the journaled messages; asynq delivers the
// discovery task again, whose rescan plans what is left. The purge ends
// done with every message the user sent recalled, nothing pending.
func TestWorkerKilledBetweenPlanAndQueueInDiscovery(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200})
	ds := e.env.Dataset(t, emulator.DatasetSpec{Groups: 12, Users: 200, GroupMessages: 6000, C2CMessages: 200,
		HeavyGroups: 10, HeavyShare: 0.1, Peers: 3, Seed: 29, TypeMix: map[string]int{"Public": 1}})
	spammer := ds.HeavySenders[0]
	logPath := filepath.Join(t.TempDir(), "w1.log")
	w1 := e.workerLogged(logPath, []string{testPauseEnv + "=5"}, "--log-level", "warn", "--reconcile-interval", "1s", "--planner-lease", "3s")
	out, err := e.run("purge", "user", "--reason", "test", "--user", spammer, "--peers", strings.Join(ds.PeersOf[spammer], ","), "--source", "scan", "--yes", "--json")
	if err != nil {
		t.Fatal(err)
	}
	id := jobIDOf(t, out)
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte("test hook: paused")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker never paused in discovery:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	j, _ := e.store.Get(t.Context(), id)
	journal, err := e.store.Journal(t.Context(), id)
	if err != nil || len(journal) == 0 {
		t.Fatalf("journal while the worker is paused between planning and queueing = %d entries, %v; want some", len(journal), err)
	}
	t.Logf("worker killed with %d planned (%d of them journaled, not queued)", j.Counts.Planned, len(journal))
	if err := w1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	e.worker("w2", "--reconcile-interval", "1s", "--planner-lease", "3s")
	j = e.waitDone(id, 4*time.Minute)
	t.Logf("job %s %.1f s after the kill: planned %d, recalled %d, dead-lettered %d", j.Status, time.Since(killed).Seconds(),
		j.Counts.Planned, j.Counts.Recalled, j.Counts.DeadLettered)
	if j.Status != jobs.StatusDone || j.Counts.Pending != 0 || j.PlanningInterrupted != nil {
		t.Fatalf("job = %+v, want done", j)
	}
	left, others, sent := 0, 0, 0
	count := func(from string, recalled bool) {
		switch {
		case from == spammer:
			sent++
			if !recalled {
				left++
			}
		case recalled:
			others++
		}
	}
	for _, g := range e.env.Emu.Groups() {
		for _, m := range e.env.Emu.GroupMessages(g.GroupID, "") {
			count(m.From, m.Recalled)
		}
	}
	for _, p := range ds.PeersOf[spammer] {
		for _, m := range e.env.Emu.C2CMessages(spammer, p) {
			count(m.From, m.Recalled)
		}
	}
	if left != 0 || others != 0 || sent == 0 {
		t.Fatalf("%d of the user's %d messages left, %d of others recalled", left, sent, others)
	}
}
