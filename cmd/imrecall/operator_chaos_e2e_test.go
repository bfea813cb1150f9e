package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
)

// TestOperatorActsDuringChaos runs a list job over three worker processes
// (one reaching Redis through a latency proxy) with faults injected, while
// an operator pauses and resumes it, re-queues its dead letters while it
// runs, and (in "cancel") cancels it, and workers are killed (SIGKILL) and
// stopped (SIGTERM) in between. Message by message, the job's final state
// must agree with the emulator: a message the emulator recalled is
// recalled by the job (r, or u after a lost answer), or a dead letter that
// says its last call may have acted unheard (in_doubt, or timeout,
// transport, exhausted); never not_found/already_recalled unless it was
// missing or recalled before the job; a cancelled dead letter the
// emulator recalled says in_doubt; and the counts match a recount.
func TestOperatorActsDuringChaos(t *testing.T) {
	for _, end := range []string{"requeue", "cancel"} {
		t.Run(end, func(t *testing.T) {
			e := newE2E(t, emulator.Config{Rate: 200, Latency: 5 * time.Millisecond, LatencyMax: 20 * time.Millisecond, Seed: 5})
			f := seedFixture(t, e.env, 20, 100, 30, 60)
			e.env.Emu.SetFaults(emulator.Faults{
				Codes: map[int]float64{91000: 0.03}, ItemCodes: map[int]float64{10002: 0.05},
				HTTP502: 0.01, Hang: 0.01, HangFor: 2 * time.Second,
			})
			id := e.created("recall", "file", f.path, "--yes", "--json", "--reason", "operator chaos")
			pool, proxy := startChaosPool(t, e, 10*time.Millisecond)
			op := func(args ...string) {
				t.Helper()
				if out, err := e.run(append(args, "--reason", "operator chaos", "--actor", "oncall")...); err != nil {
					t.Logf("imrecall %s: %v (%s)", strings.Join(args, " "), err, out)
				}
			}
			ctx := t.Context()
			share := func() float64 {
				j, err := e.store.Get(ctx, id)
				if err != nil {
					return 0
				}
				return float64(j.Counts.Recalled+j.Counts.DeadLettered) / float64(max(j.Counts.Planned, 1))
			}
			waitShare := func(s float64) {
				t.Helper()
				deadline := time.Now().Add(3 * time.Minute)
				for share() < s {
					if time.Now().After(deadline) {
						t.Fatalf("job %s never reached %.0f%% done", id, 100*s)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}

			waitShare(0.15)
			op("jobs", "pause", id)
			pool.kill(0) // mid-send, as the pause lands
			time.Sleep(1500 * time.Millisecond)
			pool.start(0)
			op("jobs", "resume", id)

			waitShare(0.35)
			pool.term(1)
			op("dlq", "requeue", id, "--yes")
			pool.start(1)
			proxy.SetDelay(25 * time.Millisecond)

			waitShare(0.55)
			op("jobs", "pause", id)
			pool.kill(2)
			op("dlq", "requeue", id, "--yes")
			pool.start(2)
			op("jobs", "resume", id)
			proxy.SetDelay(0)

			waitShare(0.7)
			pool.kill(1)
			if end == "cancel" {
				op("jobs", "cancel", id)
			} else {
				op("dlq", "requeue", id, "--yes")
			}
			pool.start(1)

			j := e.waitDone(id, 5*time.Minute)
			if end == "requeue" {
				e.env.Emu.SetFaults(emulator.Faults{})
				op("dlq", "requeue", id, "--yes")
				j = e.waitDone(id, 5*time.Minute)
			}
			// Let any delivery still running land before the emulator is read.
			for i := range chaosWorkers {
				pool.term(i)
			}
			j, err := e.store.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			checkAgainstEmulator(t, e, f, j)
		})
	}
}

// checkAgainstEmulator compares a finished job, message by message, with
// the emulator (see TestOperatorActsDuringChaos).
func checkAgainstEmulator(t *testing.T, e *e2e, f *fixture, j jobs.Job) {
	t.Helper()
	ctx := t.Context()
	states, err := jobStates(ctx, e.redis.Client(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	dead := map[string]jobs.DeadLetter{}
	if err := e.store.DeadLetters(ctx, j.ID, func(d jobs.DeadLetter) error {
		dead[chaosKey(d.Target(), d.Item())] = d
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var problems []string
	bad := func(format string, args ...any) {
		if len(problems) < 40 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	var recalled int64
	// one checks a listed message: live (exists, not recalled before the
	// job), and whether the emulator shows it recalled.
	one := func(key string, live, emuRecalled bool) {
		st, ok := states[key]
		if !ok {
			bad("%s: no state", key)
			return
		}
		d, isDead := dead[key]
		switch {
		case st == "r":
			recalled++
			if !emuRecalled || !live {
				bad("%s: recalled by the job, emulator recalled=%v live=%v", key, emuRecalled, live)
			}
		case st == "u":
			recalled++
			if !emuRecalled {
				bad("%s: recalled (unattributed), but the emulator did not recall it", key)
			}
		case strings.HasPrefix(st, "d:"):
			if !isDead {
				bad("%s: state %s without a dead letter", key, st)
				return
			}
			if !live || !emuRecalled {
				return
			}
			// The emulator recalled a live message: only a dead letter that
			// says the job's call may have done it unheard is acceptable.
			switch d.Code {
			case jobs.CodeTimeout, jobs.CodeTransport, jobs.CodeExhausted:
			default:
				if !d.InDoubt {
					bad("%s: recalled by the job's call, but dead-lettered %s (%s), not in doubt", key, d.Code, d.Category)
				}
			}
		default:
			bad("%s: not terminal (%s) in a finished job", key, st)
		}
	}
	for _, g := range f.groups {
		msgs := e.env.Emu.GroupMessages(g, "")
		for s := int64(1); s <= int64(f.perGroup); s++ {
			key := chaosKey(jobs.Target{GroupID: g}, strconv.FormatInt(s, 10))
			if s > int64(len(msgs)) {
				one(key, false, false)
				continue
			}
			one(key, !f.preRecalled[g][s], msgs[s-1].Recalled)
		}
	}
	for pair := range f.c2cKeys {
		target := jobs.Target{From: pair[0], To: pair[1]}
		for _, m := range e.env.Emu.C2CMessages(pair[0], pair[1]) {
			one(chaosKey(target, m.MsgKey), !f.c2cWithdrawn[[3]string{pair[0], pair[1], m.MsgKey}], m.Recalled)
		}
	}
	if recalled != j.Counts.Recalled {
		bad("job counts %d recalled, its states %d", j.Counts.Recalled, recalled)
	}
	if j.Counts.Pending != 0 || j.Counts.Planned != j.Counts.Recalled+j.Counts.DeadLettered {
		bad("counts do not add up: %+v", j.Counts)
	}
	rc, err := e.store.Recount(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Matches(j.Counts); err != nil {
		bad("recount: %v", err)
	}
	slices.Sort(problems)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("job %s %s: %+v", j.ID, j.Status, j.Counts)
}
