package imrecalltest_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// TestExampleRecallGroup shows the kit's use: seed the emulator, plan a
// job, and wait on its outcome while an in-process worker runs it.
func TestExampleRecallGroup(t *testing.T) {
	t.Parallel()
	env := imrecalltest.Start(t, imrecalltest.Options{})
	env.IM.Accounts(t, "alice", "bob")
	g := env.IM.Group(t, "Public", "@TGS#example", "alice", "bob")
	seqs := env.IM.SendGroup(t, g, "", 30, "alice", "bob")

	job := env.RecallGroup(t, g, seqs)
	env.RequireOutcome(t, job.ID, imrecalltest.Outcome{Status: jobs.StatusDone, Recalled: 30})
	for _, m := range env.IM.Emu.GroupMessages(g, "") {
		if !m.Recalled {
			t.Fatalf("seq %d not recalled", m.Seq)
		}
	}
}

// TestExampleDeadLetters shows an outcome with dead letters, on a real
// redis-server: a message recalled before the job dead-letters as 10030
// (nothing to recall), the rest are recalled.
func TestExampleDeadLetters(t *testing.T) {
	t.Parallel()
	env := imrecalltest.Start(t, imrecalltest.Options{RedisServer: true, Emulator: emulator.Config{Seed: 1}})
	env.IM.Accounts(t, "alice")
	g := env.IM.Group(t, "Public", "@TGS#dead", "alice")
	seqs := env.IM.SendGroup(t, g, "", 12, "alice")
	if _, err := env.IM.Client.RecallGroup(t.Context(), g, "", seqs[:2]); err != nil {
		t.Fatal(err)
	}
	job := env.RecallGroup(t, g, seqs)
	env.RequireOutcome(t, job.ID, imrecalltest.Outcome{
		Status: jobs.StatusDone, Recalled: 10, DeadLettered: 2,
		DeadByCode: map[string]int64{"10030": 2},
	})
	if st := env.IM.Emu.Stats()[tim.GroupMsgRecall.Name()]; st.Throttled != 0 {
		t.Fatalf("%d throttled calls", st.Throttled)
	}
}

// TestHandlersRunOnTheGroupLane: a task type given in Options.Handlers
// (as cmd gives the schedule firings) runs on the worker's group lane.
func TestHandlersRunOnTheGroupLane(t *testing.T) {
	t.Parallel()
	ran := make(chan string, 1)
	env := imrecalltest.Start(t, imrecalltest.Options{Handlers: map[string]asynq.Handler{
		"test:ping": asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
			ran <- string(task.Payload())
			return nil
		}),
	}})
	if _, err := env.Queue.EnqueueContext(t.Context(), asynq.NewTask("test:ping", []byte("hello")), asynq.Queue(tasks.QueueIncident)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ran:
		if got != "hello" {
			t.Fatalf("handler got %q, want hello", got)
		}
	case <-time.After(imrecalltest.WaitTimeout):
		t.Fatal("the handler never ran")
	}
}
