package worker_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/worker"
)

// attempts is a slog handler that keeps the Server's "task attempt" records.
type attempts struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (a *attempts) Enabled(context.Context, slog.Level) bool { return true }
func (a *attempts) WithAttrs([]slog.Attr) slog.Handler       { return a }
func (a *attempts) WithGroup(string) slog.Handler            { return a }
func (a *attempts) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "task attempt" {
		return nil
	}
	m := map[string]string{}
	r.Attrs(func(at slog.Attr) bool { m[at.Key] = at.Value.String(); return true })
	a.mu.Lock()
	a.recs = append(a.recs, m)
	a.mu.Unlock()
	return nil
}

// of returns the records of job id.
func (a *attempts) of(id string) []map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []map[string]string
	for _, m := range a.recs {
		if m["job_id"] == id {
			out = append(out, m)
		}
	}
	return out
}

func seed(t *testing.T, env *imrecalltest.Env, prefix string, groups, per int) map[string][]int64 {
	t.Helper()
	env.IM.Accounts(t, "alice")
	out := map[string][]int64{}
	for i := range groups {
		g := env.IM.Group(t, "Public", "@TGS#"+prefix+string(rune('a'+i)), "alice")
		out[g] = env.IM.SendGroup(t, g, "", per, "alice")
	}
	return out
}

func recallAll(t *testing.T, env *imrecalltest.Env, groups map[string][]int64) jobs.Job {
	t.Helper()
	return env.NewJob(t, jobs.Spec{}, func(ctx context.Context, _ jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
		for g, seqs := range groups {
			if err := b.AddGroup(ctx, jobs.Target{GroupID: g}, seqs...); err != nil {
				return err
			}
		}
		return nil
	})
}

func parked(t *testing.T, env *imrecalltest.Env, id string) int64 {
	n, err := env.Store.ParkedCount(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAppWideErrorPausesJob is a 70001 storm: every call answers 70001.
// The job pauses with a reason naming the fix, nothing is dead-lettered, a
// second job of the app pauses on the breaker without a call, and after the
// fix and a resume both finish.
func TestAppWideErrorPausesJob(t *testing.T) {
	t.Parallel()
	env := imrecalltest.Start(t, imrecalltest.Options{Concurrency: 4})
	groups := seed(t, env, "storm", 4, 50) // 20 tasks
	other := seed(t, env, "other", 1, 30)
	env.IM.Emu.SetFaults(emulator.Faults{Codes: map[int]float64{70001: 1}})

	first := recallAll(t, env, groups)
	j := env.Wait(t, first.ID, "the job paused and its tasks parked", func(j jobs.Job) bool {
		return j.Paused && parked(t, env, first.ID) == 20
	})
	if j.Counts.DeadLettered != 0 || j.Counts.Pending != 200 {
		t.Fatalf("after a 70001 storm: %+v, want 0 dead letters, 200 pending", j.Counts)
	}
	if !strings.Contains(j.PauseReason, "70001") || !strings.Contains(j.PauseReason, "IMRECALL_SECRET_KEY") {
		t.Fatalf("pause reason = %q", j.PauseReason)
	}
	calls := env.IM.Emu.Stats()[tim.GroupMsgRecall.Name()].Calls
	// At most the tasks in flight when the first answer came (4 slots), each
	// sent twice (the client renews the UserSig once).
	t.Logf("70001 storm: %d group_msg_recall calls before the job paused (20 tasks, 200 messages, 4 slots)", calls)
	if calls > 8 {
		t.Fatalf("%d group_msg_recall calls in a 70001 storm, want at most 8", calls)
	}

	second := recallAll(t, env, other)
	env.Wait(t, second.ID, "the second job paused by the breaker", func(j jobs.Job) bool {
		return j.Paused && parked(t, env, second.ID) == 3
	})
	if got := env.IM.Emu.Stats()[tim.GroupMsgRecall.Name()].Calls; got != calls {
		t.Fatalf("the open breaker let %d more calls go", got-calls)
	}

	// Fixed: resume both.
	env.IM.Emu.SetFaults(emulator.Faults{})
	for _, id := range []string{first.ID, second.ID} {
		if err := env.Store.SetPaused(t.Context(), id, "t", "", false); err != nil {
			t.Fatal(err)
		}
	}
	env.RequireOutcome(t, first.ID, imrecalltest.Outcome{Status: jobs.StatusDone, Recalled: 200})
	env.RequireOutcome(t, second.ID, imrecalltest.Outcome{Status: jobs.StatusDone, Recalled: 30})
	for g := range groups {
		for _, m := range env.IM.Emu.GroupMessages(g, "") {
			if !m.Recalled {
				t.Fatalf("group %s seq %d not recalled", g, m.Seq)
			}
		}
	}
}

// TestArchivedTaskDeadLetters: a task whose last attempt fails (here: its
// deadline passes while the API hangs) is archived by asynq; its messages
// are dead-lettered as "exhausted" and the job settles with nothing pending.
// The Server's middleware logs each of the two attempts once, with its
// outcome.
func TestArchivedTaskDeadLetters(t *testing.T) {
	t.Parallel()
	log := &attempts{}
	env := imrecalltest.Start(t, imrecalltest.Options{RedisServer: true, Concurrency: 2, Logger: slog.New(log)})
	groups := seed(t, env, "arch", 1, 10)
	env.IM.Emu.SetFaults(emulator.Faults{Hang: 1, HangFor: 3 * time.Second})
	job, err := env.Store.Create(t.Context(), jobs.Spec{Kind: "test", Queue: tasks.QueuePurge, AppID: imrecalltest.AppID, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	var target jobs.Target
	var seqs []int64
	for g, s := range groups {
		target, seqs = jobs.Target{GroupID: g}, s
	}
	if _, err := env.Store.PlanGroup(t.Context(), job.ID, target, seqs); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Store.ClosePlanner(t.Context(), job.ID, jobs.RootPlanner); err != nil {
		t.Fatal(err)
	}
	task, err := tasks.NewGroupRecallTask(tasks.GroupRecall{JobID: job.ID, AppID: imrecalltest.AppID, GroupID: target.GroupID, Seqs: seqs}, tasks.QueuePurge, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Queue.Enqueue(task, asynq.MaxRetry(1), asynq.Timeout(time.Second)); err != nil {
		t.Fatal(err)
	}
	j := env.RequireOutcome(t, job.ID, imrecalltest.Outcome{Status: jobs.StatusDone, DeadLettered: 10,
		DeadByCode: map[string]int64{jobs.CodeExhausted: 10}})
	if j.Counts.Pending != 0 {
		t.Fatalf("pending %d after an archived task", j.Counts.Pending)
	}
	var dl []jobs.DeadLetter
	if err := env.Store.DeadLetters(t.Context(), job.ID, func(d jobs.DeadLetter) error { dl = append(dl, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(dl) != 10 || dl[0].Category != jobs.NeedsAttention || !strings.Contains(dl[0].ErrorInfo, "archived") {
		t.Fatalf("dead letters = %+v", dl)
	}
	recs := log.of(job.ID)
	if len(recs) != 2 {
		t.Fatalf("%d attempt records, want 2 (MaxRetry 1): %v", len(recs), recs)
	}
	for i, want := range []string{"retry", "failed"} {
		r := recs[i]
		if r["outcome"] != want || r["attempt"] != string(rune('1'+i)) || r["task_id"] == "" || r["task_type"] != tasks.TypeGroupRecall {
			t.Errorf("attempt record %d = %v, want outcome %s", i+1, r, want)
		}
	}
}

func TestAttemptOutcome(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, "done"},
		{"snooze", &worker.Snooze{After: time.Second, Reason: "paused"}, "snoozed"},
		{"wrapped snooze", errors.Join(errors.New("x"), &worker.Snooze{}), "snoozed"},
		{"skip retry", errors.Join(errors.New("bad payload"), asynq.SkipRetry), "dead"},
		{"transient, outside asynq", errors.New("redis down"), "retry"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := worker.AttemptOutcome(t.Context(), tt.err); got != tt.want {
				t.Errorf("AttemptOutcome(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}
