package imrecall_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// cancelAtFirstTask is the queue of a planner whose job a person cancels
// as soon as its first recall task is queued, while it still plans.
type cancelAtFirstTask struct {
	q     producer.Enqueuer
	store *jobs.Store
	once  sync.Once
	err   error
}

func (c *cancelAtFirstTask) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	info, err := c.q.EnqueueContext(ctx, t, opts...)
	if t.Type() == tasks.TypeGroupRecall {
		c.once.Do(func() {
			var p struct {
				JobID string `json:"job_id"`
			}
			_ = json.Unmarshal(t.Payload(), &p)
			_, c.err = c.store.Cancel(ctx, p.JobID, "ops", "wrong list")
		})
	}
	return info, err
}

// TestScheduledJobCancelledWhilePlannedIsNotFiredAgain: a person cancels a
// schedule's job while the worker plans it. The firing must end there:
// FireSchedule's error makes asynq run the firing again (up to 3 retries),
// each time creating a new job that recalls what the person stopped.
func TestScheduledJobCancelledWhilePlannedIsNotFiredAgain(t *testing.T) {
	env := imrecalltest.Start(t, imrecalltest.Options{NoWorker: true})
	task, msgs := nightlyFiring(t, env, time.Now().Truncate(time.Minute))
	q := &cancelAtFirstTask{q: env.Queue, store: env.Store}
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: q, AppID: imrecalltest.AppID, IM: env.Client})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.FireSchedule(t.Context(), task, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("the firing of a job cancelled while planned: %v; asynq would fire it again as a new job", err)
	}
	if q.err != nil {
		t.Fatal(q.err)
	}
	list, err := env.Store.List(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Status != jobs.StatusCancelled {
		t.Fatalf("jobs %+v, want the one, cancelled", list)
	}
	// Create says why it stopped, with the job.
	q2 := &cancelAtFirstTask{q: env.Queue, store: env.Store}
	c2, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: q2, AppID: imrecalltest.AppID, IM: env.Client})
	if err != nil {
		t.Fatal(err)
	}
	req, err := imrecall.RequestOf(producer.JobRequest{Kind: producer.KindRecall, Reason: "again", Messages: msgs})
	if err != nil {
		t.Fatal(err)
	}
	created, err := c2.Create(t.Context(), req, imrecall.CreateOptions{Actor: "t", Reason: "again", Confirmed: true})
	var ce *producer.CancelledError
	if !errors.As(err, &ce) || created.Job.ID == "" || created.Job.ID != ce.JobID || created.Job.Status != jobs.StatusCancelled {
		t.Fatalf("Create of a job cancelled while planned: %+v, %v; want a *producer.CancelledError and the cancelled job", created.Job, err)
	}
}

// nightlyFiring is the firing due at due of a schedule "nightly" that
// recalls 60 messages in three groups of alice's, and those messages.
func nightlyFiring(t *testing.T, env *imrecalltest.Env, due time.Time) (*asynq.Task, []producer.MessageRef) {
	t.Helper()
	env.IM.Accounts(t, "alice")
	var msgs []producer.MessageRef
	for _, id := range []string{"@TGS#c1", "@TGS#c2", "@TGS#c3"} {
		g := env.IM.Group(t, "Public", id, "alice")
		env.IM.SendGroup(t, g, "", 20, "alice")
		for s := int64(1); s <= 20; s++ {
			msgs = append(msgs, producer.MessageRef{GroupID: g, MsgSeq: s})
		}
	}
	raw, err := json.Marshal(producer.JobRequest{Kind: producer.KindRecall, Reason: "nightly", Messages: msgs, Confirm: true})
	if err != nil {
		t.Fatal(err)
	}
	task, err := tasks.NewScheduleRunTask(tasks.ScheduleRun{Name: "nightly", Due: due, Request: raw})
	if err != nil {
		t.Fatal(err)
	}
	return task, msgs
}

// stopAtFirstTask is the queue of a worker that is stopped (asynq cancels
// its handlers' context at shutdown) as soon as the job it plans has its
// first recall task queued.
type stopAtFirstTask struct {
	q    producer.Enqueuer
	stop context.CancelFunc
	once sync.Once
}

func (s *stopAtFirstTask) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	info, err := s.q.EnqueueContext(ctx, t, opts...)
	if t.Type() == tasks.TypeGroupRecall {
		s.once.Do(s.stop)
	}
	return info, err
}

// TestScheduleFiringRunAgainMakesNoSecondJob: the worker planning a
// schedule's firing is stopped once its job has messages queued. asynq
// runs the firing's task again; that run must not create a second job of
// the same messages, recalled alongside the first (whose planned messages
// are still recalled) and unseen by the schedule's next firing.
func TestScheduleFiringRunAgainMakesNoSecondJob(t *testing.T) {
	env := imrecalltest.Start(t, imrecalltest.Options{NoWorker: true})
	due := time.Now().Truncate(time.Minute)
	task, _ := nightlyFiring(t, env, due)
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: &stopAtFirstTask{q: env.Queue, stop: stop}, AppID: imrecalltest.AppID, IM: env.Client})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if err := c.FireSchedule(ctx, task, log); err == nil {
		t.Fatal("a firing whose worker stopped while planning ended without an error")
	}
	first, err := env.Store.List(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 1 || first[0].Counts.Planned == 0 {
		t.Fatalf("jobs after the stop: %+v, want one with messages planned", first)
	}
	again, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.FireSchedule(t.Context(), task, log); err != nil {
		t.Fatalf("the firing run again: %v", err)
	}
	list, err := env.Store.List(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("%d jobs of one firing, want 1: %+v", len(list), list)
	}
	if id, err := producer.NewSchedules(env.Redis, jobs.DefaultPrefix).JobOf(t.Context(), "nightly", due); err != nil || id != first[0].ID {
		t.Fatalf("the firing's recorded job: %q, %v; want %s", id, err, first[0].ID)
	}
}
