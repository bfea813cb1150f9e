package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/jobs"
)

// waitFor polls job id every 100 ms until cond holds or timeout passes. A
// failed read is tried again (a Redis Cluster may be failing over) and
// reported if the time runs out.
func (e *e2e) waitFor(what string, timeout time.Duration, cond func(jobs.Job) bool, id string) jobs.Job {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), timeout)
	defer cancel()
	var j jobs.Job
	for {
		got, err := e.store.Get(ctx, id)
		if err == nil {
			j = got
			if cond(j) {
				return j
			}
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("%s: not within %v: %+v (last error %v)", what, timeout, j, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// spammerLeft counts the heavy sender's group messages not recalled, and
// the others' messages recalled.
func spammerLeft(e *e2e, spammer string) (left, others int) {
	for _, g := range e.env.Emu.Groups() {
		for _, topic := range append([]string{""}, g.Topics...) {
			for _, m := range e.env.Emu.GroupMessages(g.GroupID, topic) {
				switch {
				case m.From == spammer && !m.Recalled && g.Type != "AVChatRoom":
					left++
				case m.From != spammer && m.Recalled:
					others++
				}
			}
		}
	}
	return left, others
}

// TestRequeueDuringDiscovery: `dlq requeue` while a purge is still
// discovering (each discovery task reads 3 pages, then continues from its
// checkpoint in a new task) leaves the job planning, and the purge still
// recalls every message of the user, checked against the emulator.
func TestRequeueDuringDiscovery(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200})
	ds := e.env.Dataset(t, emulator.DatasetSpec{Groups: 12, Users: 200, GroupMessages: 24000, C2CMessages: 10, Peers: 1,
		HeavyGroups: 12, HeavyShare: 0.15, TypeMix: map[string]int{"Public": 1}, Seed: 21})
	spammer := ds.HeavySenders[0]
	// Some calls fail (10002) and, with one attempt, dead-letter at once.
	e.env.Emu.SetFaults(emulator.Faults{ItemCodes: map[int]float64{10002: 0.1}})
	e.worker("w1", "--max-attempts", "1", "--discovery-concurrency", "2", "--discovery-budget-pages", "3")
	id := jobIDOf(t, e.must(e.run("purge", "user", "--user", spammer, "--yes", "--json", "--reason", "requeue during discovery")))
	j := e.waitFor("dead letters while discovering", time.Minute, func(j jobs.Job) bool {
		return j.Counts.DeadLettered >= 20
	}, id)
	if j.Status != jobs.StatusPlanning {
		t.Fatalf("discovery ended before the re-queue (%s): make the history longer", j.Status)
	}
	e.env.Emu.SetFaults(emulator.Faults{})
	out := e.must(e.run("dlq", "requeue", id, "--yes"))
	if !strings.Contains(out, "re-queued") {
		t.Fatalf("dlq requeue printed %q", out)
	}
	if j, _ := e.store.Get(t.Context(), id); j.Status != jobs.StatusPlanning {
		t.Fatalf("status after a re-queue during discovery = %s, want planning", j.Status)
	}
	e.env.Emu.SetFaults(emulator.Faults{ItemCodes: map[int]float64{10002: 0.1}})
	e.waitFor("discovery to end", 3*time.Minute, func(j jobs.Job) bool { return j.Status != jobs.StatusPlanning }, id)
	e.env.Emu.SetFaults(emulator.Faults{})
	e.waitDone(id, 2*time.Minute)
	// Re-queue what the faults dead-lettered after the first re-queue.
	e.must(e.run("dlq", "requeue", id, "--yes"))
	j = e.waitDone(id, 2*time.Minute)
	if j.Status != jobs.StatusDone || j.Counts.Pending != 0 || j.Counts.DeadLettered != 0 {
		t.Fatalf("job = %s %+v", j.Status, j.Counts)
	}
	if left, others := spammerLeft(e, spammer); left != 0 || others != 0 {
		t.Fatalf("%d of the user's messages left, %d of others recalled", left, others)
	}
	if tr := e.env.Emu.Truth(); tr.GroupRecalled != int(j.Counts.Recalled) {
		t.Fatalf("emulator recalled %d, the job %d", tr.GroupRecalled, j.Counts.Recalled)
	}
	// The scans went on across task budgets.
	parts := 0
	cps, _ := e.redis.Client().HGetAll(t.Context(), "imrecall:job:{"+id+"}:scan").Result()
	for _, v := range cps {
		var cp struct {
			Part int  `json:"part"`
			Done bool `json:"done"`
		}
		json.Unmarshal([]byte(v), &cp)
		if !cp.Done {
			t.Fatalf("a scan checkpoint not done: %s", v)
		}
		parts += cp.Part + 1
	}
	t.Logf("%d messages recalled; %d scans in %d discovery tasks", j.Counts.Recalled, len(cps), parts)
	if parts < 3*len(cps) {
		t.Fatalf("%d discovery tasks for %d scans: the budget did not split them", parts, len(cps))
	}
}

// TestRequeueCancelledJobStaysCancelled: `dlq requeue` on a cancelled job is
// refused (exit 2, naming the job and its status) and recalls nothing.
func TestRequeueCancelledJobStaysCancelled(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200})
	ds := e.env.Dataset(t, emulator.DatasetSpec{Groups: 4, Users: 50, GroupMessages: 6000, C2CMessages: 10, Peers: 1,
		HeavyGroups: 4, HeavyShare: 0.5, TypeMix: map[string]int{"Public": 1}, Seed: 22})
	e.env.Emu.SetFaults(emulator.Faults{ItemCodes: map[int]float64{10002: 0.2}})
	// Recalls at 5 calls/s while discovery plans at 20 history calls/s:
	// messages are still pending when the job is cancelled (at 20 calls/s
	// each, the workers could settle all discovery had planned first).
	caps := []string{"--cap", "20", "--cap-of", "group_msg_recall=5"} // every process of a budget uses one cap
	e.worker("w1", append([]string{"--max-attempts", "1"}, caps...)...)
	id := jobIDOf(t, e.must(e.run(append([]string{"purge", "user", "--reason", "test", "--user", ds.HeavySenders[0], "--yes", "--json"}, caps...)...)))
	e.waitFor("some dead letters and messages pending", time.Minute, func(j jobs.Job) bool {
		return j.Counts.DeadLettered >= 10 && j.Counts.Pending >= 20
	}, id)
	e.must(e.run("jobs", "cancel", id, "--reason", "wrong user"))
	j := e.waitDone(id, 2*time.Minute)
	if j.Status != jobs.StatusCancelled || j.Counts.DeadByCode[jobs.CodeCancelled] == 0 {
		t.Fatalf("cancelled job = %s %+v", j.Status, j.Counts)
	}
	e.env.Emu.SetFaults(emulator.Faults{})
	recalled := e.env.Emu.Truth().GroupRecalled
	for _, args := range [][]string{{"dlq", "requeue", id, "--yes"}, {"dlq", "requeue", id, "--yes", "--category", "cancelled"}} {
		_, err := e.run(args...)
		if exitOf(t, err) != cli.ExitBadInput {
			t.Fatalf("%v on a cancelled job: %v, want exit 2", args, err)
		}
		if !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "cancelled") {
			t.Fatalf("%v: error does not name the job and its status: %v", args, err)
		}
	}
	// Nothing moved: the job is as it was, and the worker, which keeps
	// running, recalls nothing more (checked once every queue is empty).
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: e.redis.Addr()})
	defer insp.Close()
	after := e.waitFor("every queue empty", time.Minute, func(jobs.Job) bool {
		qs, err := insp.Queues()
		if err != nil {
			return false
		}
		for _, q := range qs {
			if qi, err := insp.GetQueueInfo(q); err != nil || qi.Pending+qi.Active+qi.Scheduled+qi.Retry > 0 {
				return false
			}
		}
		return true
	}, id)
	if after.Status != jobs.StatusCancelled || after.Counts.Pending != 0 {
		t.Fatalf("after the refused re-queue: %s %+v", after.Status, after.Counts)
	}
	if after.Counts.DeadLettered != j.Counts.DeadLettered || after.Counts.Recalled != j.Counts.Recalled {
		t.Fatalf("counts changed: %+v → %+v", j.Counts, after.Counts)
	}
	if got := e.env.Emu.Truth().GroupRecalled; got != recalled {
		t.Fatalf("%d messages recalled after the refused re-queue", got-recalled)
	}
}

// TestAppWideErrorPausesE2E is a 70001-class storm with real processes: a
// worker with a wrong SecretKey (the emulator answers 70003), or an
// emulator that answers 70001 to every call, pauses the job with a reason
// naming IMRECALL_SECRET_KEY and dead-letters nothing; after the fix, a
// worker with the right key and `jobs resume` finish it.
func TestAppWideErrorPausesE2E(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    []string
		faults emulator.Faults
		code   string
		purge  bool // a purge: the storm hits discovery; else a recall planned by the CLI
	}{
		{name: "wrong-key-purge", env: []string{"IMRECALL_SECRET_KEY=wrong-secret-key-0123456789abcdef"}, code: "70003", purge: true},
		{name: "70001-recall", faults: emulator.Faults{Codes: map[int]float64{70001: 1}}, code: "70001"},
		{name: "wrong-key-recall", env: []string{"IMRECALL_SECRET_KEY=wrong-secret-key-0123456789abcdef"}, code: "70003"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newE2E(t, emulator.Config{Rate: 200})
			ds := e.env.Dataset(t, emulator.DatasetSpec{Groups: 4, Users: 50, GroupMessages: 4000, C2CMessages: 10, Peers: 1,
				HeavyGroups: 4, HeavyShare: 0.3, TypeMix: map[string]int{"Public": 1}, Seed: 23})
			spammer := ds.HeavySenders[0]
			var id, spammerGroup string
			if tc.purge {
				id = jobIDOf(t, e.must(e.run("purge", "user", "--reason", "test", "--user", spammer, "--yes", "--json")))
			} else {
				// The spammer's messages of every group, planned by the CLI.
				var seqs []string
				for _, g := range ds.Groups {
					seqs = seqs[:0]
					for _, m := range e.env.Emu.GroupMessages(g.GroupID, "") {
						if m.From == spammer {
							seqs = append(seqs, strconv.FormatInt(m.Seq, 10))
						}
					}
					if len(seqs) > 0 {
						id = jobIDOf(t, e.must(e.run("recall", "group", "--reason", "test", "--group", g.GroupID, "--seqs", strings.Join(seqs, ","), "--json")))
						spammerGroup = g.GroupID
						break
					}
				}
			}
			e.env.Emu.SetFaults(tc.faults)
			bad := e.workerLogged(t.TempDir()+"/bad.log", tc.env, "--log-level", "warn")
			j := e.waitFor("the job paused", time.Minute, func(j jobs.Job) bool { return j.Paused }, id)
			if !strings.Contains(j.PauseReason, "IMRECALL_SECRET_KEY") || !strings.Contains(j.PauseReason, tc.code) {
				t.Fatalf("pause reason = %q", j.PauseReason)
			}
			_ = bad.Process.Signal(syscall.SIGTERM)
			_ = bad.Wait()
			j, _ = e.store.Get(t.Context(), id)
			calls := e.env.Emu.Stats()["group_msg_recall"].Calls
			t.Logf("%s storm: %d messages planned, %d group_msg_recall calls before the pause, %d dead letters", tc.code, j.Counts.Planned, calls, j.Counts.DeadLettered)
			if j.Counts.DeadLettered != 0 || e.env.Emu.Truth().GroupRecalled != 0 {
				t.Fatalf("after the storm: %+v, %d recalled; want nothing dead-lettered or recalled", j.Counts, e.env.Emu.Truth().GroupRecalled)
			}
			show := e.must(e.run("jobs", "show", id))
			if !strings.Contains(show, "IMRECALL_SECRET_KEY") {
				t.Fatalf("jobs show does not say why the job is paused:\n%s", show)
			}
			e.env.Emu.SetFaults(emulator.Faults{})
			e.worker("good")
			e.must(e.run("jobs", "resume", id))
			j = e.waitDone(id, 2*time.Minute)
			if j.Status != jobs.StatusDone || j.Counts.DeadLettered != 0 || j.Paused {
				t.Fatalf("job after the fix = %s %+v", j.Status, j.Counts)
			}
			if !tc.purge {
				for _, m := range e.env.Emu.GroupMessages(spammerGroup, "") {
					if m.Recalled != (m.From == spammer) {
						t.Fatalf("group %s seq %d from %s: recalled %v", spammerGroup, m.Seq, m.From, m.Recalled)
					}
				}
				if j.Counts.Recalled == 0 || j.Counts.Recalled != j.Counts.Planned {
					t.Fatalf("job = %+v", j.Counts)
				}
				return
			}
			if left, others := spammerLeft(e, spammer); left != 0 || others != 0 {
				t.Fatalf("%d of the user's messages left, %d of others recalled", left, others)
			}
		})
	}
}

// must fails the test on err and returns out (for e.must(e.run(...))).
func (e *e2e) must(out string, err error) string {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}
