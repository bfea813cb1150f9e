package worker

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// killedMidCall is the IM of a worker killed mid-call: its recall call
// reaches the server, which recalls, and the worker dies before it hears
// the answer. The call goes when release closes, and returns only when its
// context ends (the kill), with that error.
type killedMidCall struct {
	TIM
	sending chan struct{} // closed when the call is about to go (its send counted)
	release chan struct{}
	landed  chan error // the server's answer, once it has acted
}

func (k *killedMidCall) RecallGroup(ctx context.Context, group, topic string, seqs []int64) (map[int64]int, error) {
	close(k.sending)
	<-k.release
	_, err := k.TIM.RecallGroup(context.WithoutCancel(ctx), group, topic, seqs)
	k.landed <- err
	<-ctx.Done()
	return nil, ctx.Err()
}

// answerHeld is an IM whose first recall call is answered, and whose
// answer then waits for meanwhile to run before the handler sees it.
type answerHeld struct {
	TIM
	meanwhile func(ctx context.Context)
}

func (a *answerHeld) RecallGroup(ctx context.Context, group, topic string, seqs []int64) (map[int64]int, error) {
	codes, err := a.TIM.RecallGroup(ctx, group, topic, seqs)
	if a.meanwhile != nil {
		a.meanwhile(ctx)
		a.meanwhile = nil
	}
	return codes, err
}

// TestAnswerDoesNotClearARivalsLostSend: two deliveries of one task run at
// once (asynq delivers at least once; a resume's unparker, a task
// recovered while its first delivery still runs). Delivery A sends and is
// answered 10002 (retry); meanwhile delivery B has counted a send of its
// own, its call recalls the message, and B's worker is killed before it
// hears the answer. Then an operator acts before A calls again: A's answer
// says nothing of B's send, which must stay unanswered:
//   - pause, then resume: the task's next delivery must check the history
//     and count the message recalled (attribution unknown), not call again
//     and dead-letter it as not found (10030) although B's call recalled it;
//   - cancel: its cancelled dead letter must say in_doubt.
//
// Before the fix, A's note of its answer (MarkAnswered) marked the last
// send, B's, as answered, and the message ended a not_found dead letter
// (pause) or a cancelled one not in doubt, the emulator having recalled it.
func TestAnswerDoesNotClearARivalsLostSend(t *testing.T) {
	for _, action := range []string{"pause then resume", "cancel"} {
		t.Run(action, func(t *testing.T) {
			_, env, store, job, g, task := oneMessagePlanned(t, "@TGS#rivalans")
			ctx := t.Context()
			cfg := Config{BaseBackoff: time.Millisecond, MaxBackoff: time.Millisecond}

			// B: a delivery whose worker is killed mid-call.
			killB, doneB := context.WithCancel(ctx)
			imB := &killedMidCall{TIM: TIM{C: env.Client}, sending: make(chan struct{}), release: make(chan struct{}), landed: make(chan error, 1)}
			errB := make(chan error, 1)

			// A: answered 10002; before A sees it, B counts its send and
			// its call recalls the message, and the operator acts.
			env.Emu.SetFaults(emulator.Faults{ItemCodes: map[int]float64{10002: 1}})
			imA := &answerHeld{TIM: TIM{C: env.Client}}
			imA.meanwhile = func(context.Context) {
				go func() { errB <- New(imB, store, cfg).HandleGroupRecall(killB, task) }()
				<-imB.sending
				env.Emu.SetFaults(emulator.Faults{})
				close(imB.release)
				if err := <-imB.landed; err != nil {
					t.Errorf("B's call: %v", err)
				}
				var err error
				if action == "cancel" {
					_, err = store.Cancel(ctx, job.ID, "t", "test")
				} else {
					err = store.SetPaused(ctx, job.ID, "t", "test", true)
				}
				if err != nil {
					t.Error(err)
				}
			}
			errA := New(imA, store, cfg).HandleGroupRecall(ctx, task)
			doneB() // B's worker is killed
			if err := <-errB; !errors.Is(err, context.Canceled) {
				t.Fatalf("B (killed mid-call) returned %v", err)
			}
			if !env.Emu.GroupMessages(g, "")[0].Recalled {
				t.Fatal("B's call did not recall the message")
			}

			if action == "cancel" {
				if errA != nil {
					t.Fatalf("A: %v", errA)
				}
				var dls []jobs.DeadLetter
				if err := store.DeadLetters(ctx, job.ID, func(d jobs.DeadLetter) error { dls = append(dls, d); return nil }); err != nil {
					t.Fatal(err)
				}
				if len(dls) != 1 || dls[0].Code != jobs.CodeCancelled || !dls[0].InDoubt {
					t.Fatalf("dead letters %+v: want one cancelled, in doubt (B's call went unanswered, and recalled it)", dls)
				}
				return
			}
			if errA != nil {
				t.Fatalf("A: %v", errA)
			}
			if parked, err := store.Parked(ctx, job.ID, 10); err != nil || len(parked) != 1 {
				t.Fatalf("parked tasks %v, %v: want A's", parked, err)
			}
			if err := store.SetPaused(ctx, job.ID, "t", "test", false); err != nil {
				t.Fatal(err)
			}
			if err := New(TIM{C: env.Client}, store, cfg).HandleGroupRecall(ctx, task); err != nil {
				t.Fatalf("the delivery after the resume: %v", err)
			}
			j, err := store.Get(ctx, job.ID)
			if err != nil {
				t.Fatal(err)
			}
			if j.Counts.Recalled != 1 || j.Counts.RecalledUnattributed != 1 || j.Counts.DeadLettered != 0 || j.Status != jobs.StatusDone {
				t.Fatalf("job %s, counts %+v: want done, the message recalled (attribution unknown): the emulator recalled it", j.Status, j.Counts)
			}
		})
	}
}

// heldAnswer is the IM of a delivery whose call reaches the server (which
// recalls) as soon as release closes, and whose answer comes back only
// once answer closes (a slow network, or a worker killed before it hears:
// answer never closes, and the call ends with its context).
type heldAnswer struct {
	TIM
	sending chan struct{} // closed when the call is about to go (its send counted)
	release chan struct{}
	landed  chan error // the server's answer, once it has acted
	answer  chan struct{}
}

func (k *heldAnswer) RecallGroup(ctx context.Context, group, topic string, seqs []int64) (map[int64]int, error) {
	close(k.sending)
	<-k.release
	codes, err := k.TIM.RecallGroup(context.WithoutCancel(ctx), group, topic, seqs)
	k.landed <- err
	select {
	case <-k.answer:
		return codes, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestRivalSendAfterOurSendIsInDoubt: two deliveries of one task run at
// once (asynq delivers at least once: a task pushed back to its queue by a
// worker shutting down, or recovered from a worker cut off from Redis,
// while its first delivery still runs). A counts its send; then B counts
// one and B's call reaches the server first and recalls the message.
//   - A's call is answered 10030: A must check the history, not dead-letter
//     the message as not found ahead of B's "recalled" (B's answer comes
//     late, and the first terminal state wins);
//   - A's call is answered 10002 at its last attempt, and B's worker is
//     killed: A's dead letter must say in_doubt, so that `dlq requeue`
//     sends it back as sent and unanswered and its next delivery finds it
//     recalled, rather than calling and dead-lettering it as not found.
//
// Before the fix, A looked at the sends of other deliveries only when it
// counted its own (noteRivalSends), and a send counted after A's went
// unseen: the message ended a 10030 dead letter in both cases, although
// the job's own call had recalled it.
func TestRivalSendAfterOurSendIsInDoubt(t *testing.T) {
	for _, answerA := range []int{10030, 10002} {
		t.Run(strconv.Itoa(answerA), func(t *testing.T) {
			srv, env, store, job, g, task := oneMessagePlanned(t, "@TGS#rivalsend")
			ctx := t.Context()
			cfg := Config{BaseBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxAttempts: 1}

			killB, doneB := context.WithCancel(ctx)
			defer doneB()
			imB := &heldAnswer{TIM: TIM{C: env.Client}, sending: make(chan struct{}), release: make(chan struct{}),
				landed: make(chan error, 1), answer: make(chan struct{})}
			errB := make(chan error, 1)
			imA := &raceAhead{TIM: TIM{C: env.Client}}
			imA.ahead = func(context.Context) {
				// A's send is counted; B counts its own and its call lands first.
				go func() { errB <- New(imB, store, cfg).HandleGroupRecall(killB, task) }()
				<-imB.sending
				close(imB.release)
				if err := <-imB.landed; err != nil {
					t.Errorf("B's call: %v", err)
				}
				if answerA == 10002 {
					env.Emu.SetFaults(emulator.Faults{ItemCodes: map[int]float64{10002: 1}})
				}
			}
			if err := New(imA, store, cfg).HandleGroupRecall(ctx, task); err != nil {
				t.Fatalf("A: %v", err)
			}
			env.Emu.SetFaults(emulator.Faults{})
			if !env.Emu.GroupMessages(g, "")[0].Recalled {
				t.Fatal("B's call did not recall the message")
			}
			if answerA == 10030 {
				close(imB.answer) // B hears its answer late
				if err := <-errB; err != nil {
					t.Fatalf("B: %v", err)
				}
			} else {
				doneB() // B's worker is killed
				if err := <-errB; !errors.Is(err, context.Canceled) {
					t.Fatalf("B (killed mid-call) returned %v", err)
				}
				q := asynq.NewClient(asynq.RedisClientOpt{Addr: srv.Addr()})
				defer q.Close()
				if _, err := producer.RequeueDeadLetters(ctx, store, q, job.ID, producer.RequeueRequest{
					Match: func(jobs.DeadLetter) bool { return true }, Actor: "t", Detail: "test"}); err != nil {
					t.Fatal(err)
				}
				if err := New(TIM{C: env.Client}, store, cfg).HandleGroupRecall(ctx, task); err != nil {
					t.Fatalf("the delivery after the re-queue: %v", err)
				}
			}
			j, err := store.Get(ctx, job.ID)
			if err != nil {
				t.Fatal(err)
			}
			if j.Counts.Recalled != 1 || j.Counts.DeadLettered != 0 || j.Status != jobs.StatusDone {
				t.Fatalf("job %s, counts %+v: want done, the message recalled: the job's own call recalled it", j.Status, j.Counts)
			}
		})
	}
}

// oneMessagePlanned starts a redis-server and the emulator, makes the
// Public group id of alice with one message of hers, plans it in a new job
// (planning closed) and returns the task that recalls it.
func oneMessagePlanned(t *testing.T, id string) (*redistest.Server, *imtest.Env, *jobs.Store, jobs.Job, string, *asynq.Task) {
	t.Helper()
	srv := redistest.Start(t)
	env := imtest.Start(t, emulator.Config{})
	store := jobs.NewStore(srv.Client(), "")
	ctx := t.Context()
	job, err := store.Create(ctx, jobs.Spec{Kind: "test", Queue: tasks.QueuePurge, AppID: imtest.AppID, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	env.Accounts(t, "alice")
	g := env.Group(t, "Public", id, "alice")
	env.SendGroup(t, g, "", 1, "alice")
	if _, err := store.PlanGroup(ctx, job.ID, jobs.Target{GroupID: g}, []int64{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); err != nil {
		t.Fatal(err)
	}
	task, err := tasks.NewGroupRecallTask(tasks.GroupRecall{JobID: job.ID, AppID: imtest.AppID, GroupID: g, Seqs: []int64{1}}, tasks.QueuePurge, 0)
	if err != nil {
		t.Fatal(err)
	}
	return srv, env, store, job, g, task
}
