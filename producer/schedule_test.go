package producer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/robfig/cron/v3"
)

// TestDueTimesAreTheSameEverywhere: two schedulers started at different
// moments, in different zones, compute the same due times.
func TestDueTimesAreTheSameEverywhere(t *testing.T) {
	for _, c := range []struct {
		spec string
		want string
	}{
		{"0 3 * * *", "2026-12-02T03:00:00Z"},
		{"@every 1h", "2026-12-01T19:00:00Z"},
		{"@daily", "2026-12-02T00:00:00Z"},
		{"CRON_TZ=Asia/Shanghai 0 3 * * *", "2026-12-01T19:00:00Z"},
	} {
		sched, err := parseCron(c.spec)
		if err != nil {
			t.Fatal(err)
		}
		a := time.Date(2026, 12, 1, 18, 17, 0, 0, time.UTC)
		b := a.Add(23 * time.Minute).In(time.FixedZone("X", -5*3600))
		da, db := nextDue(sched, a).UTC().Format(time.RFC3339), nextDue(sched, b).UTC().Format(time.RFC3339)
		if da != c.want || db != c.want {
			t.Errorf("%s: next due %s and %s, want %s", c.spec, da, db, c.want)
		}
	}
	// "Local" is each scheduler's own zone (time.LoadLocation): schedulers
	// on hosts in two zones each fired the schedule at their own 03:00.
	for _, spec := range []string{"CRON_TZ=Local 0 3 * * *", "TZ=Local 0 3 * * *"} {
		sc := Schedule{Name: "s", Cron: spec, Request: &JobRequest{Kind: "purge_user", User: "u", Reason: "retention"}, CreatedBy: "ops"}
		var fe *FieldError
		if err := sc.Validate(); !errors.As(err, &fe) || fe.Field != "cron" || !strings.Contains(err.Error(), "Local") {
			t.Errorf("%s: Validate() = %v, want a cron *FieldError naming Local", spec, err)
		}
	}
}

// TestValidateRefusesSpecsThatWouldNotFireAsWritten: a spec with no due
// time (30 February, 31 April), an "@every" interval below one second,
// negative, zero or with a fraction, and a zone prefix with no spec after
// it (which made cron's parser panic) are refused, naming the cron value.
func TestValidateRefusesSpecsThatWouldNotFireAsWritten(t *testing.T) {
	valid := Schedule{Name: "s", Request: &JobRequest{Kind: "purge_user", User: "u", Reason: "retention"}, CreatedBy: "ops"}
	for _, c := range []struct {
		spec string
		want string // "" if valid
	}{
		{"0 0 30 2 *", `cron "0 0 30 2 *": never fires`},
		{"0 0 31 4 *", `cron "0 0 31 4 *": never fires`},
		{"CRON_TZ=Asia/Shanghai 0 0 31 11 *", "never fires"},
		{"@every -1h", `cron "@every -1h": the interval -1h0m0s is shorter than 1s`},
		{"@every 0s", `cron "@every 0s": the interval 0s is shorter than 1s`},
		{"@every 500ms", `cron "@every 500ms": the interval 500ms is shorter than 1s`},
		{"@every 1.5s", `cron "@every 1.5s": the interval 1.5s is not a whole number of seconds`},
		{"CRON_TZ=UTC @every -5m", `the interval -5m0s is shorter than 1s`},
		{"CRON_TZ=UTC", `cron "CRON_TZ=UTC": a time zone prefix needs a space and a spec after it`},
		{"TZ=Asia/Shanghai\t@daily", "a time zone prefix needs a space"},
		{"0 3 * * *", ""},
		{"0 0 29 2 *", ""}, // a leap day comes within five years
		{"@every 1s", ""},
		{"@every 1h", ""},
		{"@daily", ""},
	} {
		sc := valid
		sc.Cron = c.spec
		err := sc.Validate()
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v, want valid", c.spec, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "cron" || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a cron FieldError naming %q", c.spec, err, c.want)
		}
	}
}

// neverSchedule is a cron.Schedule that has no next time (as cron reports
// for "0 0 30 2 *"), or, if stuck, answers the time it was asked about.
type neverSchedule struct{ stuck bool }

func (n neverSchedule) Next(t time.Time) time.Time {
	if n.stuck {
		return t
	}
	return time.Time{}
}

// TestLastDueStopsOnTimesThatDoNotAdvance: lastDue returns (nothing due)
// for a schedule whose next time is zero or does not advance.
func TestLastDueStopsOnTimesThatDoNotAdvance(t *testing.T) {
	now := time.Date(2026, 12, 1, 18, 17, 0, 0, time.UTC)
	for _, sched := range []cron.Schedule{neverSchedule{}, neverSchedule{stuck: true}, cron.ConstantDelaySchedule{}} {
		done := make(chan time.Time, 1)
		go func() { done <- lastDue(sched, now.Add(-time.Minute), now) }()
		select {
		case got := <-done:
			if !got.IsZero() {
				t.Errorf("%#v: due %s, want none", sched, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%#v: lastDue did not return", sched)
		}
	}
	sched, err := parseCron("@every 1m")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := lastDue(sched, now.Add(-150*time.Second), now), now; !got.Equal(want) {
		t.Errorf("@every 1m: due %s, want %s", got, want)
	}
}

// chanQueue is an Enqueuer that sends each task it is given.
type chanQueue chan *asynq.Task

func (q chanQueue) EnqueueContext(ctx context.Context, task *asynq.Task, _ ...asynq.Option) (*asynq.TaskInfo, error) {
	select {
	case q <- task:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &asynq.TaskInfo{}, nil
}

// TestSchedulerSkipsStoredSchedulesThatNeverFire: schedules stored before
// Validate refused them (a spec with no due time, a negative interval, a
// zone that is each host's own) are skipped with a logged error, and
// counted refused at each read of the schedules (logged once, they were
// silent after: a retention schedule stopped with nothing to alert on);
// the scheduler still fires the others and stops when its context ends.
func TestSchedulerSkipsStoredSchedulesThatNeverFire(t *testing.T) {
	_, rdb := redistest.Mini(t)
	scs := NewSchedules(rdb, "")
	req := &JobRequest{Kind: "purge_user", User: "u", Reason: "retention"}
	for _, sc := range []Schedule{
		{Name: "a-feb30", Cron: "0 0 30 2 *", Request: req, CreatedBy: "old"},
		{Name: "b-apr31", Cron: "0 0 31 4 *", Request: req, CreatedBy: "old"},
		{Name: "c-negative", Cron: "@every -1h", Request: req, CreatedBy: "old"},
		{Name: "d-every-second", Cron: "@every 1s", Request: req, CreatedBy: "ops"},
		// Stored by an older version: a field its kind does not take.
		{Name: "e-foreign-field", Cron: "@every 1s", Request: &JobRequest{Kind: "purge_group", Groups: []string{"g"}, User: "u", Reason: "old"}, CreatedBy: "old"},
		{Name: "f-local-zone", Cron: "CRON_TZ=Local 0 3 * * *", Request: req, CreatedBy: "old"},
	} {
		if err := scs.put(t.Context(), sc); err != nil { // as stored before Validate refused them
			t.Fatal(err)
		}
	}
	var logged bytes.Buffer
	q := make(chanQueue)
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan error, 1)
	s := &Scheduler{Schedules: scs, Queue: q, Tick: 10 * time.Millisecond, Sync: 100 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&logged, nil)), Metrics: NewSchedulerMetrics(prometheus.NewRegistry())}
	go func() { ran <- s.Run(ctx) }()
	select {
	case task := <-q:
		p, err := tasks.DecodeScheduleRun(task)
		if err != nil || p.Name != "d-every-second" {
			t.Fatalf("fired %+v (%v), want d-every-second", p, err)
		}
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("the valid schedule did not fire within 10 s")
	}
	refused := func(name string) float64 {
		return testutil.ToFloat64(s.Metrics.firings.WithLabelValues(name, FiringRefused))
	}
	for deadline := time.Now().Add(10 * time.Second); refused("f-local-zone") < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	for _, name := range []string{"a-feb30", "b-apr31", "c-negative", "e-foreign-field", "f-local-zone"} {
		if !strings.Contains(logged.String(), "schedule="+name) {
			t.Errorf("no refusal logged for %s; log:\n%s", name, logged.String())
		}
		if n := refused(name); n < 1 {
			t.Errorf("%s: counted refused %v times, want once a read of the schedules", name, n)
		}
	}
	if n := refused("f-local-zone"); n < 2 {
		t.Errorf("f-local-zone: counted refused %v times, want once a read of the schedules (at least 2 by now)", n)
	}
	if n := refused("d-every-second"); n != 0 {
		t.Errorf("d-every-second fires, yet counted refused %v times", n)
	}
}

// twoSchedulers are two schedulers of one schedule, firing it by hand.
type twoSchedulers struct {
	q     *asynq.Client
	insp  *asynq.Inspector
	scs   *Schedules
	store *jobs.Store
	sc    Schedule
	due   time.Time // a due time of sc
	log   *slog.Logger
	other *Scheduler // the second scheduler
}

func startTwoSchedulers(t *testing.T) *twoSchedulers {
	srv := redistest.Start(t)
	rdb := srv.Client()
	opt := asynq.RedisClientOpt{Addr: srv.Addr()}
	x := &twoSchedulers{q: asynq.NewClient(opt), insp: asynq.NewInspector(opt),
		scs: NewSchedules(rdb, jobs.DefaultPrefix), store: jobs.NewStore(rdb, jobs.DefaultPrefix),
		sc: Schedule{Name: "nightly", Cron: "@every 1m", Request: &JobRequest{Kind: KindRecall, Reason: "retention",
			Messages: []MessageRef{{GroupID: "@TGS#1", MsgSeq: 1}}}},
		due: time.Now().UTC().Truncate(time.Minute), log: slog.New(slog.DiscardHandler)}
	t.Cleanup(func() { _ = x.q.Close(); _ = x.insp.Close() })
	x.other = &Scheduler{Schedules: x.scs, Queue: x.q, Jobs: x.store, Tasks: x.insp}
	return x
}

// fireOther fires sc at due by the other scheduler.
func (x *twoSchedulers) fireOther(t *testing.T, due time.Time) {
	if err := x.other.fire(t.Context(), x.sc, due, x.log); err != nil {
		t.Error(err)
	}
}

// requireQueued fails t unless the firing of due is the one queued.
func (x *twoSchedulers) requireQueued(t *testing.T, due time.Time) {
	t.Helper()
	queued, err := x.insp.ListPendingTasks(tasks.ScheduleRunQueue)
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 1 || queued[0].ID != tasks.ScheduleRunID(x.sc.Name, due) {
		var ids []string
		for _, ti := range queued {
			ids = append(ids, ti.ID)
		}
		t.Fatalf("firings queued %q, want only %s's: both would run at once", ids, due.Format(time.RFC3339))
	}
}

// stallAtFirstEnqueue is the queue of a scheduler that stalls between
// recording a firing and queueing its task, while meanwhile runs.
type stallAtFirstEnqueue struct {
	q         Enqueuer
	meanwhile func()
}

func (f *stallAtFirstEnqueue) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if m := f.meanwhile; m != nil {
		f.meanwhile = nil
		m()
	}
	return f.q.EnqueueContext(ctx, t, opts...)
}

// TestTwoSchedulersDoNotOverlapAFiringBeingQueued: a scheduler records a
// schedule's firing and, before its task is queued, another scheduler
// comes to the schedule's next due time. That firing must wait: the task
// not found yet is not a firing that ended, and both would run at once.
func TestTwoSchedulersDoNotOverlapAFiringBeingQueued(t *testing.T) {
	x := startTwoSchedulers(t)
	stalled := &stallAtFirstEnqueue{q: x.q, meanwhile: func() { x.fireOther(t, x.due.Add(time.Minute)) }}
	first := &Scheduler{Schedules: x.scs, Queue: stalled, Jobs: x.store, Tasks: x.insp}
	if err := first.fire(t.Context(), x.sc, x.due, x.log); err != nil {
		t.Fatal(err)
	}
	x.requireQueued(t, x.due)
	events, err := x.store.AuditLog(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Action != "schedule_skipped" {
		t.Fatalf("audit %+v, want the next firing's schedule_skipped", events)
	}
}

// stallAtFirstLook is the asynq inspector of a scheduler that stalls as it
// looks up a schedule's previous firing, while meanwhile runs.
type stallAtFirstLook struct {
	TaskInspector
	meanwhile func()
}

func (s *stallAtFirstLook) GetTaskInfo(queue, id string) (*asynq.TaskInfo, error) {
	if m := s.meanwhile; m != nil {
		s.meanwhile = nil
		m()
	}
	return s.TaskInspector.GetTaskInfo(queue, id)
}

// TestTwoSchedulersDoNotOverlapAfterALook: a scheduler finds a schedule's
// previous firing ended and, before it records its own, another scheduler
// fires the schedule's next due time. The first must not fire too: both
// would run at once, and the record would name the first's firing only.
func TestTwoSchedulersDoNotOverlapAfterALook(t *testing.T) {
	x := startTwoSchedulers(t)
	prev := x.due.Add(-time.Minute)
	x.fireOther(t, prev)
	// That firing ended without a job (refused, say), its task gone.
	if err := x.insp.DeleteTask(tasks.ScheduleRunQueue, tasks.ScheduleRunID(x.sc.Name, prev)); err != nil {
		t.Fatal(err)
	}
	stalled := &stallAtFirstLook{TaskInspector: x.insp, meanwhile: func() { x.fireOther(t, x.due.Add(time.Minute)) }}
	first := &Scheduler{Schedules: x.scs, Queue: x.q, Jobs: x.store, Tasks: stalled}
	if err := first.fire(t.Context(), x.sc, x.due, x.log); err != nil {
		t.Fatal(err)
	}
	x.requireQueued(t, x.due.Add(time.Minute))
}

// TestSchedulerCountsItsFirings: a firing queued counts fired; the next
// two, due while the first's task still waits for a worker, count skipped,
// and the audit log records the first of them.
func TestSchedulerCountsItsFirings(t *testing.T) {
	x := startTwoSchedulers(t)
	reg := prometheus.NewRegistry()
	s := &Scheduler{Schedules: x.scs, Queue: x.q, Jobs: x.store, Tasks: x.insp, Metrics: NewSchedulerMetrics(reg)}
	for _, due := range []time.Time{x.due, x.due.Add(time.Minute), x.due.Add(2 * time.Minute)} {
		if err := s.fire(t.Context(), x.sc, due, x.log); err != nil {
			t.Fatal(err)
		}
	}
	// The audit log holds the first skip behind that run, not one a
	// minute.
	events, err := x.store.AuditLog(t.Context(), 10)
	if err != nil || len(events) != 1 || events[0].Action != "schedule_skipped" {
		t.Fatalf("audit %+v (%v), want one schedule_skipped", events, err)
	}
	for result, want := range map[string]float64{FiringFired: 1, FiringSkipped: 2, FiringFailed: 0} {
		if got := testutil.ToFloat64(s.Metrics.firings.WithLabelValues(x.sc.Name, result)); got != want {
			t.Errorf("imrecall_schedule_firings_total{schedule=%q,result=%q} = %v, want %v", x.sc.Name, result, got, want)
		}
	}
}
