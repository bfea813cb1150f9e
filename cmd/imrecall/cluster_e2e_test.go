package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
)

// clusterE2E is e2e on a Redis Cluster: every imrecall process gets the
// cluster's redis-cluster:// URL.
type clusterE2E struct {
	*e2e
	cl *redistest.Cluster
}

// worker starts a worker process on the cluster, reconciling every second.
func (c *clusterE2E) worker(name string) *exec.Cmd {
	return c.e2e.worker(name, "--reconcile-interval", "1s")
}

// killPlanner runs imrecall with the test hook that pauses it before
// enqueue pauseAt+1 (between planning messages and queueing them), SIGKILLs
// it there and waits for it to exit.
func (c *clusterE2E) killPlanner(pauseAt int, args ...string) {
	c.t.Helper()
	cmd := imrecallCommand(c.t.Context(), c.bin, args...)
	cmd.Env = append(c.environ(), testPauseEnv+"="+strconv.Itoa(pauseAt))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	paused := make(chan struct{})
	var logged strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "test hook: paused") {
				close(paused)
				_, _ = io.Copy(io.Discard, stderr)
				return
			}
			logged.WriteString(sc.Text() + "\n")
		}
	}()
	select {
	case <-paused:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		c.t.Fatalf("imrecall %s never reached the pause:\n%s", strings.Join(args, " "), logged.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	_ = cmd.Wait()
}

// verifyJob runs `imrecall verify ID --json` and requires it to pass.
func (c *clusterE2E) verifyJob(j jobs.Job) verification {
	c.t.Helper()
	out, err := c.run("verify", j.ID, "--json")
	if err != nil {
		c.t.Fatalf("verify %s: %v", j.ID, err)
	}
	var v verification
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		c.t.Fatalf("verify --json printed %q: %v", out, err)
	}
	if !v.Passed || v.StillVisible != 0 || v.Verified != j.Counts.Planned {
		c.t.Fatalf("verify %s: %+v (job planned %d)", j.ID, v, j.Counts.Planned)
	}
	return v
}

// TestClusterEndToEnd is issue 12's "the whole pipeline on a real Redis
// Cluster": a 3-master cluster, worker processes, `purge user` (discovery by
// history scan), `recall file` with a worker SIGKILLed mid-job, `verify` of
// both jobs, and a `recall file` planner SIGKILLed between planning and
// queueing (the workers' reconciler settles its job; the same command run
// again finishes), all through --redis redis-cluster://; checked message by
// message against the emulator: everything the user sent and everything
// listed is recalled (a killed planner's message by exactly one of its two
// jobs), nothing else is, each job's message states are terminal and its
// counters equal the recount.
func TestClusterEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	cl := redistest.StartCluster(t, 3)
	rdb := cl.Client()
	c := &clusterE2E{cl: cl, e2e: &e2e{t: t, bin: imrecallBin(t), redisURL: cl.URL(), store: jobs.NewStore(rdb, ""),
		env: imtest.Start(t, emulator.Config{Rate: 200, Latency: 2 * time.Millisecond, LatencyMax: 10 * time.Millisecond, Seed: 3})}}
	ctx := t.Context()

	ds := c.env.Dataset(t, emulator.DatasetSpec{Groups: 24, Users: 300, GroupMessages: 8000, C2CMessages: 600,
		HeavyGroups: 16, HeavyShare: 0.08, Peers: 5, Topics: 2, Seed: 31})
	spammer := ds.HeavySenders[0]
	peers := ds.PeersOf[spammer]

	// The list of `recall file`: every third message of other senders in the
	// groups and topics that keep a history, and the peers' messages to the
	// user.
	var buf bytes.Buffer
	listed := map[string]bool{}
	for _, g := range c.env.Emu.Groups() {
		if g.Type == "AVChatRoom" {
			continue // no history, no recall
		}
		for _, topic := range append([]string{""}, g.Topics...) {
			for _, m := range c.env.Emu.GroupMessages(g.GroupID, topic) {
				if m.From == spammer || m.Seq%3 != 0 {
					continue
				}
				line := map[string]any{"GroupId": g.GroupID, "MsgSeq": m.Seq}
				if topic != "" {
					line["TopicId"] = topic
				}
				b, _ := json.Marshal(line)
				buf.Write(append(b, '\n'))
				listed[chaosKey(jobs.Target{GroupID: g.GroupID, TopicID: topic}, strconv.FormatInt(m.Seq, 10))] = true
			}
		}
	}
	for _, p := range peers {
		for _, m := range c.env.Emu.C2CMessages(spammer, p) {
			if m.From == spammer {
				continue
			}
			fmt.Fprintf(&buf, `{"From_Account":%q,"To_Account":%q,"MsgKey":%q}`+"\n", m.From, m.To, m.MsgKey)
			listed[chaosKey(jobs.Target{From: m.From, To: m.To}, m.MsgKey)] = true
		}
	}
	listPath := filepath.Join(t.TempDir(), "list.jsonl")
	if err := os.WriteFile(listPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// The list of the interrupted `recall file`: others' messages at seq 1
	// mod 3 in the plain groups, up to 400.
	buf.Reset()
	listed2 := map[string]bool{}
	for _, g := range c.env.Emu.Groups() {
		if g.Type == "AVChatRoom" {
			continue
		}
		for _, m := range c.env.Emu.GroupMessages(g.GroupID, "") {
			if m.From != spammer && m.Seq%3 == 1 && len(listed2) < 400 {
				fmt.Fprintf(&buf, `{"GroupId":%q,"MsgSeq":%d}`+"\n", g.GroupID, m.Seq)
				listed2[chaosKey(jobs.Target{GroupID: g.GroupID}, strconv.FormatInt(m.Seq, 10))] = true
			}
		}
	}
	list2Path := filepath.Join(t.TempDir(), "list2.jsonl")
	if err := os.WriteFile(list2Path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	// 1. purge user, two workers.
	c.worker("w1")
	w2 := c.worker("w2")
	out, err := c.run("purge", "user", "--reason", "test", "--user", spammer, "--peers", strings.Join(peers, ","), "--source", "scan", "--yes", "--json")
	if err != nil {
		t.Fatal(err)
	}
	purge := c.waitDone(jobIDOf(t, out), 3*time.Minute)
	if purge.Status != jobs.StatusDone || purge.Counts.Planned == 0 || purge.Counts.Pending != 0 {
		t.Fatalf("purge job = %+v", purge)
	}
	vp := c.verifyJob(purge)

	// 2. recall file; the worker w2 is SIGKILLed mid-job and w3 takes over.
	out, err = c.run("recall", "file", listPath, "--reason", "test", "--yes", "--json")
	if err != nil {
		t.Fatal(err)
	}
	recallID := jobIDOf(t, out)
	deadline := time.Now().Add(2 * time.Minute)
	var killedAt jobs.Counts
	for {
		j, err := c.store.Get(ctx, recallID)
		if err == nil && j.Counts.Recalled > 200 {
			killedAt = j.Counts
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recall file job made no progress: %+v (%v)", j, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := w2.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.worker("w3")
	recall := c.waitDone(recallID, 4*time.Minute)
	if recall.Status != jobs.StatusDone || recall.Counts.Planned != int64(len(listed)) || recall.Counts.Pending != 0 {
		t.Fatalf("recall file job = %+v, want done with %d planned", recall, len(listed))
	}
	if killedAt.Recalled+killedAt.DeadLettered >= recall.Counts.Planned {
		t.Errorf("the worker was killed after the job's last message (%+v)", killedAt)
	}
	vr := c.verifyJob(recall)

	// 3. recall file SIGKILLed between planning and queueing (the test
	// hook): its lease lapses, a worker's reconciler settles the job and
	// queues its journal; the same command run again finishes the work.
	args := []string{"recall", "file", list2Path, "--reason", "test", "--yes", "--json", "--planner-lease", "3s"}
	c.killPlanner(3, args...)
	list, err := c.store.List(ctx, 1)
	if err != nil || len(list) == 0 {
		t.Fatalf("no job: %v", err)
	}
	killed := c.waitDone(list[0].ID, 2*time.Minute)
	if killed.Status != jobs.StatusFailed || killed.PlanningInterrupted == nil || killed.Counts.Pending != 0 {
		t.Fatalf("the killed planner's job settled as %s, interruption %+v, counts %+v; want failed, planning interrupted, none pending",
			killed.Status, killed.PlanningInterrupted, killed.Counts)
	}
	out, err = c.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	rerun := c.waitDone(jobIDOf(t, out), 2*time.Minute)
	if rerun.Status != jobs.StatusDone || rerun.Counts.Planned != int64(len(listed2)) || rerun.Counts.Pending != 0 {
		t.Fatalf("re-run = %+v, want done with %d planned", rerun, len(listed2))
	}

	// Each job: states terminal, counters = recount.
	states := map[string]map[string]string{}
	for _, j := range []jobs.Job{purge, recall, killed, rerun} {
		rc, err := c.store.Recount(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := rc.Matches(j.Counts); err != nil {
			t.Errorf("job %s: %v", j.ID, err)
		}
		if j.Counts.Recalled+j.Counts.DeadLettered != j.Counts.Planned {
			t.Errorf("job %s: counts %+v do not add up", j.ID, j.Counts)
		}
		st, err := jobStates(ctx, rdb, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range st {
			if v != "r" && v != "u" && !strings.HasPrefix(v, "d:") {
				t.Errorf("job %s: %s in state %q, not terminal", j.ID, k, v)
			}
		}
		if int64(len(st)) != j.Counts.Planned {
			t.Errorf("job %s: %d message states, %d planned", j.ID, len(st), j.Counts.Planned)
		}
		states[j.ID] = st
	}

	// Ground truth, message by message.
	var sent, requestedAgain int
	check := func(k string, from string, recalled bool, requests int) {
		switch {
		case from == spammer:
			sent++
			if st := states[purge.ID][k]; !recalled || st != "r" {
				t.Errorf("%s: the user's message: recalled %v, purge state %q; want recalled by the purge", k, recalled, st)
			}
			if requests != 0 {
				t.Errorf("%s: %d recall requests after the purge recalled it", k, requests)
			}
		case listed[k]:
			if st := states[recall.ID][k]; !recalled || (st != "r" && st != "u") {
				t.Errorf("%s: listed: recalled %v, recall file state %q; want recalled by the job", k, recalled, st)
			}
			if requests > 1 {
				t.Errorf("%s: %d recall requests after it was recalled", k, requests)
			}
			requestedAgain += requests
		case listed2[k]:
			st1, st2 := states[killed.ID][k], states[rerun.ID][k]
			if !recalled || st1 != "r" && st1 != "u" && st2 != "r" && st2 != "u" || st1 == "r" && st2 == "r" {
				t.Errorf("%s: recalled %v, states %q (killed planner's job), %q (re-run); want recalled by exactly one", k, recalled, st1, st2)
			}
			if requests > 1 {
				t.Errorf("%s: %d recall requests after it was recalled", k, requests)
			}
		case recalled || requests > 0:
			t.Errorf("%s: neither the user's nor listed, yet recalled %v with %d further requests", k, recalled, requests)
		}
	}
	for _, g := range c.env.Emu.Groups() {
		for _, topic := range append([]string{""}, g.Topics...) {
			for _, m := range c.env.Emu.GroupMessages(g.GroupID, topic) {
				from := m.From
				if g.Type == "AVChatRoom" && from == spammer {
					from = "" // no history: nothing to recall
				}
				check(chaosKey(jobs.Target{GroupID: g.GroupID, TopicID: topic}, strconv.FormatInt(m.Seq, 10)), from, m.Recalled, m.RecallRequests)
			}
		}
	}
	for _, p := range peers {
		for _, m := range c.env.Emu.C2CMessages(spammer, p) {
			check(chaosKey(jobs.Target{From: m.From, To: m.To}, m.MsgKey), m.From, m.Recalled, m.RecallRequests)
		}
	}
	if int64(sent) != purge.Counts.Recalled {
		t.Errorf("the user sent %d recallable messages; the purge recalled %d", sent, purge.Counts.Recalled)
	}
	if tr := c.env.Emu.Truth(); int64(tr.GroupRecalled+tr.C2CRecalled) != int64(sent+len(listed)+len(listed2)) {
		t.Errorf("the emulator holds %d recalled messages, want %d (the user's) + %d + %d (listed)", tr.GroupRecalled+tr.C2CRecalled, sent, len(listed), len(listed2))
	}
	for api, st := range c.env.Emu.Stats() {
		if st.Throttled != 0 || st.Max1s > 200 {
			t.Errorf("%s: %d calls throttled, max_1s %d", api, st.Throttled, st.Max1s)
		}
	}
	t.Logf("%s: purge %s recalled %d (verify: %d checked, %d history calls); recall file %s planned %d, recalled %d, dead-lettered %d, worker killed at %d recalled, %d requests after recall (verify: %d checked, %d history calls)",
		cl, purge.ID, purge.Counts.Recalled, vp.Verified, vp.HistoryCalls, recall.ID, recall.Counts.Planned, recall.Counts.Recalled, recall.Counts.DeadLettered, killedAt.Recalled, requestedAgain,
		vr.Verified, vr.HistoryCalls)
	t.Logf("killed planner: job %s %s (%s), planned %d, recalled %d; re-run %s planned %d, recalled %d, dead-lettered %d",
		killed.ID, killed.Status, killed.Error, killed.Counts.Planned, killed.Counts.Recalled, rerun.ID, rerun.Counts.Planned, rerun.Counts.Recalled, rerun.Counts.DeadLettered)
}
