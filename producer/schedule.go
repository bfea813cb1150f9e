package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
)

// Schedule is a recurring job: a cron spec and the typed job request it
// creates at each firing, with relative times (since 90d) evaluated then.
// A schedule says what a job is, never how a worker connects: the worker
// that runs a firing uses its own API base, identity and credentials.
type Schedule struct {
	Name    string      `json:"name"`
	Cron    string      `json:"cron"`
	Request *JobRequest `json:"request,omitempty"`
	// Args is the command line of a schedule stored before schedules held
	// typed requests. Such a schedule never fires: Migrate turns it into a
	// request or reports it refused. Connection flags' values are redacted
	// by Public.
	Args      []string  `json:"args,omitempty"`
	CreatedBy string    `json:"created_by"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// ApprovalAbove is the approval threshold of the API server that took
	// the schedule (zero: none): a firing of more messages is created held
	// until an admin other than Requester (who added it) approves it, as
	// the same request sent to POST /v1/jobs would be.
	ApprovalAbove int    `json:"approval_above,omitempty"`
	Requester     string `json:"requester,omitempty"`
}

var scheduleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// cronParser accepts five fields or a descriptor such as @daily or @every 1h.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Validate names the first bad field (the API's field names: name, cron,
// request.FIELD). A cron spec must fire: one with no due time in the next
// five years ("0 0 30 2 *") is refused, and so is an "@every" interval
// shorter than MinEvery or not a whole number of seconds.
func (s Schedule) Validate() error {
	if !scheduleName.MatchString(s.Name) {
		return &FieldError{Field: "name", Reason: fmt.Sprintf("%q: want letters, digits, '.', '_' or '-', at most 64", s.Name)}
	}
	if _, err := checkCron(s.Cron, time.Now()); err != nil {
		return err
	}
	if len(s.Args) > 0 {
		return &FieldError{Field: "args", Reason: "a schedule holds a typed job request, not a command line"}
	}
	if s.Request == nil {
		return &FieldError{Field: "request", Reason: "required: the job to create (kind, user, groups, ranges, queue, reason)"}
	}
	if s.Request.DryRun {
		return &FieldError{Field: "request.dry_run", Reason: "a scheduled dry run would do nothing"}
	}
	req := *s.Request
	if strings.TrimSpace(req.Reason) == "" {
		req.Reason = s.Reason
	}
	if err := req.Check(time.Now()); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) && fe.Field != "" {
			prefixed := *fe
			prefixed.Field = "request." + fe.Field
			return &prefixed
		}
		return &FieldError{Field: "request", Reason: err.Error(), Err: err}
	}
	if s.CreatedBy == "" {
		return &FieldError{Field: "actor", Reason: "required"}
	}
	// Both go to the audit record of its adding (Schedules.Add), the
	// reason too when the request gives its own.
	return CheckWhoAndWhy(s.CreatedBy, s.Reason)
}

// JobRequest is the request of one firing: the schedule's request, with
// the schedule's reason if it gives none, confirmed (a schedule was
// confirmed when added) and never a dry run.
func (s Schedule) JobRequest() JobRequest {
	req := *s.Request
	if strings.TrimSpace(req.Reason) == "" {
		req.Reason = s.Reason
	}
	req.Confirm, req.DryRun, req.Actor = true, false, ""
	return req
}

// Public is the schedule as shown to readers: a legacy command line has the
// values of its connection flags redacted.
func (s Schedule) Public() Schedule {
	s.Args = RedactArgs(s.Args)
	return s
}

// RedactArgs returns args with the value of every connection flag
// (--secret-key, --api-base, …) replaced by [REDACTED].
func RedactArgs(args []string) []string {
	if args == nil {
		return nil
	}
	out := make([]string, len(args))
	redactNext := false
	for i, a := range args {
		switch {
		case redactNext:
			out[i], redactNext = "[REDACTED]", false
		case strings.HasPrefix(a, "-"):
			name, _, hasValue := strings.Cut(a, "=")
			out[i] = a
			if IsConnectionSetting(name) {
				if hasValue {
					out[i] = name + "=[REDACTED]"
				} else {
					redactNext = true
				}
			}
		default:
			out[i] = a
		}
	}
	return out
}

// Schedules keeps schedules in Redis. Adding and removing one writes an
// audit record first (in the job store's audit stream under the same
// prefix): whatever face adds a schedule, its jobs' recalls are on record
// with who asked for them and why.
type Schedules struct {
	rdb    redis.UniversalClient
	key    string
	prefix string
	audit  *jobs.Store
}

// NewSchedules returns the schedules stored under prefix.
func NewSchedules(rdb redis.UniversalClient, prefix string) *Schedules {
	return &Schedules{rdb: rdb, key: prefix + ":schedules", prefix: prefix, audit: jobs.NewStore(rdb, prefix)}
}

// Add stores a schedule, replacing one of the same name, once the audit
// trail records it (schedule_add, or schedule_replace when it replaces
// one, by its CreatedBy, with its request and Reason). A since or until
// given as a date, or a date and minute, without a zone is stored as RFC
// 3339 in this process's zone (PinZone).
func (s *Schedules) Add(ctx context.Context, sc Schedule) error {
	if err := sc.Validate(); err != nil {
		return err
	}
	sc.Request = pinned(*sc.Request)
	replaces, err := s.rdb.HExists(ctx, s.key, sc.Name).Result()
	if err != nil {
		return fmt.Errorf("adding schedule %s: %w", sc.Name, err)
	}
	action := "schedule_add"
	if replaces {
		action = "schedule_replace"
	}
	request, _ := json.Marshal(sc.Request)
	if err := s.audit.Audit(ctx, jobs.Event{Actor: sc.CreatedBy, Action: action,
		Detail: fmt.Sprintf("%s %q: %s; %s", sc.Name, sc.Cron, request, sc.Reason)}); err != nil {
		return err
	}
	return s.put(ctx, sc)
}

func (s *Schedules) put(ctx context.Context, sc Schedule) error {
	b, err := json.Marshal(sc)
	if err != nil {
		return fmt.Errorf("encoding schedule %s: %w", sc.Name, err)
	}
	if err := s.rdb.HSet(ctx, s.key, sc.Name, b).Err(); err != nil {
		return fmt.Errorf("storing schedule %s: %w", sc.Name, err)
	}
	return nil
}

// ErrNoSchedule is matched by Remove's error for an unknown name.
var ErrNoSchedule = errors.New("no such schedule")

// Remove deletes a schedule once the audit trail records who removed it
// and why (schedule_remove; reason may be empty). An unknown name is
// ErrNoSchedule and records nothing; one removed by another after the
// record is ErrNoSchedule too, and schedule_remove_refused follows it.
func (s *Schedules) Remove(ctx context.Context, name, actor, reason string) error {
	if err := CheckWhoAndWhy(actor, reason); err != nil {
		return err
	}
	exists, err := s.rdb.HExists(ctx, s.key, name).Result()
	if err != nil {
		return fmt.Errorf("removing schedule %s: %w", name, err)
	}
	if !exists {
		return fmt.Errorf("schedule %q: %w", name, ErrNoSchedule)
	}
	detail := name
	if reason != "" {
		detail += "; " + reason
	}
	if err := s.audit.Audit(ctx, jobs.Event{Actor: actor, Action: "schedule_remove", Detail: detail}); err != nil {
		return err
	}
	n, err := s.rdb.HDel(ctx, s.key, name).Result()
	if err != nil {
		return fmt.Errorf("removing schedule %s: %w", name, err)
	}
	if n == 0 {
		// Removed by another between the check and here: the trail says
		// this removal, recorded above, removed nothing (as an approval
		// refused after its record is).
		_ = s.audit.Audit(context.WithoutCancel(ctx), jobs.Event{Actor: actor, Action: "schedule_remove_refused",
			Detail: name + ": removed by another meanwhile"})
		return fmt.Errorf("schedule %q: %w", name, ErrNoSchedule)
	}
	return nil
}

// List returns every schedule, by name, as stored (legacy command lines
// unredacted: show readers Public()).
func (s *Schedules) List(ctx context.Context) ([]Schedule, error) {
	m, err := s.rdb.HGetAll(ctx, s.key).Result()
	if err != nil {
		return nil, fmt.Errorf("listing schedules: %w", err)
	}
	out := make([]Schedule, 0, len(m))
	for name, v := range m {
		var sc Schedule
		if err := json.Unmarshal([]byte(v), &sc); err != nil {
			return nil, fmt.Errorf("schedule %s: %w", name, err)
		}
		out = append(out, sc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RefusedSchedule is a legacy schedule (a command line) that could not be
// turned into a typed request; it never fires.
type RefusedSchedule struct {
	Name string
	Err  error
}

func (e *RefusedSchedule) Error() string {
	return fmt.Sprintf("schedule %s holds a command line that is not a job request (%v): it will not fire; remove it and add it again with a typed request", e.Name, e.Err)
}

func (e *RefusedSchedule) Unwrap() error { return e.Err }

// pinned is req with its since and until pinned to this process's zone: a
// date without a zone means the day of whoever stores the schedule, not
// of whichever scheduler fires it.
func pinned(req JobRequest) *JobRequest {
	req.Since, req.Until = PinZone(req.Since, time.Local), PinZone(req.Until, time.Local)
	return &req
}

// Migrate turns every legacy schedule (a command line) that convert accepts
// into a typed request, stored in its place. It returns the names migrated
// and, joined, a *RefusedSchedule for each one convert refused (left as is:
// it never fires).
func (s *Schedules) Migrate(ctx context.Context, convert func(args []string) (JobRequest, error)) ([]string, error) {
	list, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	var migrated []string
	var refused []error
	for _, sc := range list {
		if len(sc.Args) == 0 {
			continue
		}
		req, err := convert(sc.Args)
		if err == nil {
			if strings.TrimSpace(req.Reason) == "" && strings.TrimSpace(sc.Reason) == "" {
				// Command lines could be scheduled without a reason.
				sc.Reason = "schedule " + sc.Name
			}
			sc.Request, sc.Args = pinned(req), nil
			err = sc.Validate()
		}
		if err != nil {
			refused = append(refused, &RefusedSchedule{Name: sc.Name, Err: err})
			continue
		}
		if err := s.put(ctx, sc); err != nil {
			return migrated, err
		}
		migrated = append(migrated, sc.Name)
	}
	return migrated, errors.Join(refused...)
}

// claimTTL is how long a firing's claim is kept: far longer than schedulers'
// ticks and clock skew, short enough that a schedule due every second keeps
// few keys.
const claimTTL = time.Hour

// claim takes the firing of name at due for this scheduler; false: another
// scheduler took it.
func (s *Schedules) claim(ctx context.Context, name string, due time.Time) (bool, error) {
	return s.rdb.SetNX(ctx, s.claimKey(name, due), "1", claimTTL).Result()
}

func (s *Schedules) unclaim(ctx context.Context, name string, due time.Time) {
	_ = s.rdb.Del(ctx, s.claimKey(name, due)).Err()
}

// claimKey is the claim on the firing of name at due.
func (s *Schedules) claimKey(name string, due time.Time) string {
	return fmt.Sprintf("%s:schedule-fired:{%s}:%d", s.prefix, name, due.Unix())
}

// runKey is a schedule's last run: "due", the due time (Unix seconds) of
// its last firing queued (written by the scheduler before it queues it),
// "queuing", the same while its task is being queued (removed once it is),
// and "job_due" and "job_id", the job a worker created for the firing of
// job_due (RecordJob).
func (s *Schedules) runKey(name string) string { return s.prefix + ":schedule-run:{" + name + "}" }

// firing records that the firing of name at due is queued: the next
// firing waits for it to end (Scheduler.Jobs). It records nothing and
// returns false if the last firing recorded is no longer prev (zero: none),
// which the scheduler found ended: another scheduler fired meanwhile.
func (s *Schedules) firing(ctx context.Context, name string, prev, due time.Time) (bool, error) {
	want := ""
	if !prev.IsZero() {
		want = strconv.FormatInt(prev.Unix(), 10)
	}
	n, err := firingScript.Run(ctx, s.rdb, []string{s.runKey(name)}, want, due.Unix()).Int()
	if err != nil {
		return false, fmt.Errorf("recording the firing of schedule %s: %w", name, err)
	}
	return n == 1, nil
}

// firingScript sets KEYS[1]'s due and queuing to ARGV[2] if its due is
// still ARGV[1] ("": none), and returns 1; 0 otherwise.
var firingScript = redis.NewScript(`
if (redis.call('HGET', KEYS[1], 'due') or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'due', ARGV[2], 'queuing', ARGV[2])
return 1
`)

// firstSkip records that a firing of name was skipped behind the firing
// of prev, and says whether it is the first so skipped: the audit log
// holds that one (a schedule held back by a job awaiting approval for a
// day would write one record a minute), the metric and the log every one.
func (s *Schedules) firstSkip(ctx context.Context, name string, prev time.Time) (bool, error) {
	n, err := firstSkipScript.Run(ctx, s.rdb, []string{s.runKey(name)}, prev.Unix()).Int()
	if err != nil {
		return false, fmt.Errorf("recording a skip of schedule %s: %w", name, err)
	}
	return n == 1, nil
}

// firstSkipScript sets KEYS[1]'s skipped_for to ARGV[1] and returns 1,
// or 0 if it already was.
var firstSkipScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'skipped_for') == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'skipped_for', ARGV[1])
return 1
`)

// queued records that the task of the firing recorded by firing is queued.
func (s *Schedules) queued(ctx context.Context, name string) error {
	if err := s.rdb.HDel(ctx, s.runKey(name), "queuing").Err(); err != nil {
		return fmt.Errorf("recording the firing of schedule %s: %w", name, err)
	}
	return nil
}

// claimed says whether the firing of name at due is claimed (by claim).
func (s *Schedules) claimed(ctx context.Context, name string, due time.Time) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.claimKey(name, due)).Result()
	if err != nil {
		return false, fmt.Errorf("reading the claim of schedule %s: %w", name, err)
	}
	return n > 0, nil
}

// RecordJob records jobID as the job of the firing of schedule name at due
// (tasks.ScheduleRun.Due): the schedule's next firing is skipped until it
// has finished (Scheduler.Jobs).
func (s *Schedules) RecordJob(ctx context.Context, name string, due time.Time, jobID string) error {
	if err := s.rdb.HSet(ctx, s.runKey(name), "job_due", due.Unix(), "job_id", jobID).Err(); err != nil {
		return fmt.Errorf("recording job %s of schedule %s: %w", jobID, name, err)
	}
	return nil
}

// JobOf is the job recorded for the firing of schedule name at due
// (RecordJob), or "" if none is: a firing whose task runs again (its worker
// stopped or was killed after creating its job) finds the job it made.
func (s *Schedules) JobOf(ctx context.Context, name string, due time.Time) (string, error) {
	v, err := s.rdb.HMGet(ctx, s.runKey(name), "job_due", "job_id").Result()
	if err != nil {
		return "", fmt.Errorf("reading the last run of schedule %s: %w", name, err)
	}
	jobDue, _ := v[0].(string)
	jobID, _ := v[1].(string)
	if jobDue != strconv.FormatInt(due.Unix(), 10) {
		return "", nil
	}
	return jobID, nil
}

// lastRun is a schedule's last firing queued (zero: none recorded), its
// job, if a worker created one for it ("": none yet, or none), and whether
// its task was still being queued.
func (s *Schedules) lastRun(ctx context.Context, name string) (due time.Time, jobID string, queuing bool, err error) {
	h, err := s.rdb.HGetAll(ctx, s.runKey(name)).Result()
	if err != nil {
		return time.Time{}, "", false, fmt.Errorf("reading the last run of schedule %s: %w", name, err)
	}
	if h["due"] == "" {
		return time.Time{}, "", false, nil
	}
	unix, err := strconv.ParseInt(h["due"], 10, 64)
	if err != nil {
		return time.Time{}, "", false, fmt.Errorf("reading the last run of schedule %s: due %q: %w", name, h["due"], err)
	}
	if h["job_due"] == h["due"] {
		jobID = h["job_id"]
	}
	return time.Unix(unix, 0).UTC(), jobID, h["queuing"] == h["due"], nil
}

// TaskInspector is what the scheduler reads of asynq (an *asynq.Inspector):
// whether a firing's task is still to run.
type TaskInspector interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
}

// Scheduler fires schedules: each due time of each schedule once, however
// many schedulers run (a Redis claim per schedule and due time, and the
// firing's task ID). Due times are the same in every scheduler: cron specs
// by the clock in UTC (unless the spec starts with CRON_TZ=; on the days such
// a zone's clocks change, a fixed hour fires once, as cron's: see
// nextWallDue), "@every D" at multiples of D. A due time that passed while
// no scheduler ran is skipped, and so is one that comes while the previous
// firing has not ended (see Jobs).
type Scheduler struct {
	Schedules *Schedules
	Queue     Enqueuer
	// Sync is how often the schedules are re-read; zero: 30 s.
	Sync time.Duration
	// Tick is how often due times are checked; zero: 250 ms.
	Tick time.Duration
	// Log; nil discards.
	Log *slog.Logger
	// Jobs and Tasks, both set, keep a schedule's runs from overlapping: a
	// firing is skipped while the schedule's previous firing has not ended
	// (its task is still queued or running, or the job it created has not
	// finished: planning, running, held for approval, paused, or failed
	// with messages pending), and the skip is logged and written to the
	// audit log ("schedule_skipped"). Nil: every firing fires.
	Jobs  *jobs.Store
	Tasks TaskInspector
	// Metrics, if set, counts the firings by result.
	Metrics *SchedulerMetrics
}

// unfinished is why a schedule's firing is skipped: the previous firing's
// job, or its task, has not finished.
type unfinished struct {
	Schedule string
	Due      time.Time // the previous firing's due time
	JobID    string    // its job; "" while its task has not created one
	Status   string    // the job's status (paused: "running (paused)"), or its task's state
}

func (r *unfinished) String() string {
	if r.JobID == "" {
		return fmt.Sprintf("schedule %s: the firing due %s has not created its job yet (its task is %s)", r.Schedule, r.Due.Format(time.RFC3339), r.Status)
	}
	return fmt.Sprintf("schedule %s: job %s of the firing due %s is still %s", r.Schedule, r.JobID, r.Due.Format(time.RFC3339), r.Status)
}

// running says how the previous firing of name has not ended, or nil if it
// has (or none is recorded, or the Scheduler checks none), and the due time
// of the previous firing it read (zero: none).
func (s *Scheduler) running(ctx context.Context, name string) (busy *unfinished, prev time.Time, err error) {
	if s.Jobs == nil || s.Tasks == nil {
		return nil, time.Time{}, nil
	}
	due, jobID, queuing, err := s.Schedules.lastRun(ctx, name)
	if err != nil || due.IsZero() {
		return nil, due, err
	}
	busy, err = s.unfinished(ctx, name, due, jobID, queuing)
	return busy, due, err
}

// unfinished is running's answer for the previous firing read.
func (s *Scheduler) unfinished(ctx context.Context, name string, due time.Time, jobID string, queuing bool) (*unfinished, error) {
	if jobID != "" {
		j, err := s.Jobs.Get(ctx, jobID)
		switch {
		case errors.Is(err, jobs.ErrNotFound):
			return nil, nil // deleted by retention: long finished
		case err != nil:
			return nil, err
		case j.Finished():
			return nil, nil
		}
		st := string(j.Status)
		if j.Paused {
			st += " (paused)"
		}
		return &unfinished{Schedule: name, Due: due, JobID: jobID, Status: st}, nil
	}
	ti, err := s.Tasks.GetTaskInfo(tasks.ScheduleRunQueue, tasks.ScheduleRunID(name, due))
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		if !queuing {
			return nil, nil // ended more than its retention ago
		}
		// Another scheduler is queueing it, or stopped before it could
		// (its claim, which lapses, says which may still be the case).
		if claimed, err := s.Schedules.claimed(ctx, name, due); err != nil || !claimed {
			return nil, err
		}
		return &unfinished{Schedule: name, Due: due, Status: "being queued (or its scheduler stopped before queueing it: until its claim lapses, within " + claimTTL.String() + ")"}, nil
	case err != nil:
		return nil, fmt.Errorf("looking up the firing of schedule %s due %s: %w", name, due.Format(time.RFC3339), err)
	case ti.State == asynq.TaskStateCompleted, ti.State == asynq.TaskStateArchived:
		return nil, nil // ended without a job: refused, cancelled while planned, or failed for good
	}
	return &unfinished{Schedule: name, Due: due, Status: ti.State.String()}, nil
}

// MinEvery is the shortest "@every" interval a schedule may have. The
// scheduler fires in whole seconds (cron's own "@every" rounds a shorter
// interval, even a negative or zero one, up to one second, and drops
// fractions), so a shorter interval cannot mean what it says. Five-field
// specs fire at most once a minute; a retention or backfill schedule
// normally runs hourly or daily, and one second is the floor for tests
// and demonstrations.
const MinEvery = time.Second

// checkCron parses spec as parseCron does and refuses a schedule that
// would not fire as written: an "@every" interval that is not a whole
// number of seconds of at least MinEvery, or a spec with no due time after
// now (cron's Next looks five years ahead: "0 0 30 2 *" never comes). Its
// errors are *FieldError naming the cron field and its value.
func checkCron(spec string, now time.Time) (cron.Schedule, error) {
	bad := func(reason string) error { return &FieldError{Field: "cron", Value: spec, Reason: reason} }
	sched, err := parseCron(spec)
	if err != nil {
		return nil, bad(err.Error())
	}
	if _, ok := sched.(cron.ConstantDelaySchedule); ok {
		// cron.Every has already rounded the interval: read it as written.
		_, text, _ := strings.Cut(spec, "@every ")
		every, err := time.ParseDuration(text)
		switch {
		case err != nil:
			return nil, bad(err.Error())
		case every < MinEvery:
			return nil, bad(fmt.Sprintf("the interval %s is shorter than %s, the shortest a schedule may have (e.g. @every 1m, @every 1h)", every, MinEvery))
		case every%time.Second != 0:
			return nil, bad(fmt.Sprintf("the interval %s is not a whole number of seconds (cron would fire every %s)", every, every.Truncate(time.Second)))
		}
	}
	if nextDue(sched, now).IsZero() {
		return nil, bad("never fires: no date matches it in the next five years")
	}
	return sched, nil
}

// parseCron parses a schedule's spec; without a CRON_TZ= (or TZ=) prefix
// it is read in UTC, as asynq's scheduler reads it, so that every scheduler
// computes the same due times whatever its local zone.
// CRON_TZ=Local (each host's own zone) is refused. A zone prefix must be
// followed by a space and a spec: cron's parser
// panics on "CRON_TZ=UTC" alone.
func parseCron(spec string) (cron.Schedule, error) {
	if (strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "TZ=")) && !strings.Contains(spec, " ") {
		return nil, errors.New("a time zone prefix needs a space and a spec after it (CRON_TZ=Asia/Shanghai 0 3 * * *)")
	}
	// time.LoadLocation("Local") is the zone of the process reading it:
	// schedulers on hosts in two zones would each fire at their own 03:00.
	for _, prefix := range []string{"CRON_TZ=", "TZ="} {
		if rest, ok := strings.CutPrefix(spec, prefix); ok && strings.HasPrefix(rest, "Local ") {
			return nil, errors.New("CRON_TZ=Local is the zone of each scheduler's host, which differs between hosts: name the zone (CRON_TZ=Europe/Berlin), or leave the prefix out for UTC")
		}
	}
	sched, err := cronParser.Parse(spec)
	if err != nil {
		return nil, err
	}
	if ss, ok := sched.(*cron.SpecSchedule); ok && !strings.HasPrefix(spec, "CRON_TZ=") && !strings.HasPrefix(spec, "TZ=") {
		ss.Location = time.UTC
	}
	return sched, nil
}

// nextDue is a schedule's next due time after t; the zero time if it has
// none (cron's Next gives up five years ahead).
func nextDue(sched cron.Schedule, t time.Time) time.Time {
	switch s := sched.(type) {
	case cron.ConstantDelaySchedule:
		return t.Truncate(s.Delay).Add(s.Delay)
	case *cron.SpecSchedule:
		return nextWallDue(s, t)
	}
	return sched.Next(t)
}

// cronStar marks a cron field written "*" (robfig/cron's starBit).
const cronStar = 1 << 63

// nextWallDue is s.Next(t) with cron's rule for the days a zone's clocks
// change (CRON_TZ= with daylight saving time), which robfig/cron does not
// follow: a spec with a fixed hour fires once for a wall-clock time the
// clocks repeat when they go back (not twice, an hour apart), and for one
// the clocks skip when they go forward it fires at the change (not a day
// later, or never that day). A spec whose hour is "*" fires by the clock
// as it goes, as cron's do.
func nextWallDue(s *cron.SpecSchedule, t time.Time) time.Time {
	d := s.Next(t)
	if d.IsZero() || s.Hour&cronStar != 0 {
		return d
	}
	if c := skippedDue(s, t, d); !c.IsZero() {
		return c
	}
	for i := 0; i < 4 && !d.IsZero() && repeatedWall(d, s.Location); i++ {
		next := s.Next(d)
		if c := skippedDue(s, d, next); !c.IsZero() {
			return c
		}
		d = next
	}
	return d
}

// repeatedWall reports whether the wall-clock time of d in loc already
// happened earlier (the clocks went back in between).
func repeatedWall(d time.Time, loc *time.Location) bool {
	w := d.In(loc)
	for _, back := range []time.Duration{30 * time.Minute, time.Hour, 2 * time.Hour} {
		e := d.Add(-back).In(loc)
		if e.Year() == w.Year() && e.YearDay() == w.YearDay() && e.Hour() == w.Hour() && e.Minute() == w.Minute() && e.Second() == w.Second() {
			return true
		}
	}
	return false
}

// skippedDue returns the first instant after t and before d at which s's
// zone skipped a wall-clock time s names (the clocks went forward over
// it): the change itself. Zero if there is none.
func skippedDue(s *cron.SpecSchedule, t, d time.Time) time.Time {
	loc := s.Location
	// Offsets are read a day apart: a change between t and d shows as a
	// day whose offsets differ, and is then found to the second.
	for from := t; from.Before(d); {
		to := from.Add(24 * time.Hour)
		if to.After(d) {
			to = d
		}
		_, before := from.In(loc).Zone()
		if _, after := to.In(loc).Zone(); after > before {
			lo, hi := from, to
			for hi.Sub(lo) > time.Second {
				mid := lo.Add(hi.Sub(lo) / 2)
				if _, off := mid.In(loc).Zone(); off == before {
					lo = mid
				} else {
					hi = mid
				}
			}
			change := hi.Truncate(time.Second)
			// The times the change skipped, read on the clock before it.
			old := *s
			old.Location = time.FixedZone("", before)
			if x := old.Next(change.Add(-time.Nanosecond)); !x.IsZero() && x.Before(change.Add(time.Duration(after-before)*time.Second)) {
				if change.After(t) {
					return change
				}
			}
		}
		from = to
	}
	return time.Time{}
}

// lastDue is the latest due time of sched after last and not after now, or
// the zero time if there is none. It stops at a due time that is zero or
// does not advance, so a schedule that never fires cannot hold the loop.
func lastDue(sched cron.Schedule, last, now time.Time) time.Time {
	var due time.Time
	for d := nextDue(sched, last); !d.IsZero() && d.After(last) && !d.After(now); d = nextDue(sched, d) {
		due, last = d, d
	}
	return due
}

// Run fires schedules until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sync, tick := s.Sync, s.Tick
	if sync <= 0 {
		sync = 30 * time.Second
	}
	if tick <= 0 {
		tick = 250 * time.Millisecond
	}
	type entry struct {
		sc    Schedule
		sched cron.Schedule
	}
	var list []entry
	var loaded time.Time
	warned := map[string]bool{}
	last := time.Now()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		now := time.Now()
		if now.Sub(loaded) >= sync {
			all, err := s.Schedules.List(ctx)
			if err != nil {
				log.Error("reading schedules", "err", err)
			} else {
				loaded, list = now, list[:0]
				for _, sc := range all {
					sched, why, err := sc.firing(now)
					if why != "" {
						s.Metrics.count(sc.Name, FiringRefused)
						if !warned[sc.Name] {
							args := []any{"schedule", sc.Name}
							if err != nil {
								args = append(args, "err", err)
							}
							log.Error(why, args...)
							warned[sc.Name] = true
						}
						continue
					}
					list = append(list, entry{sc, sched})
				}
			}
		}
		for _, e := range list {
			if due := lastDue(e.sched, last, now); !due.IsZero() {
				if err := s.fire(ctx, e.sc, due, log); err != nil {
					s.Metrics.count(e.sc.Name, FiringFailed)
					log.Error("firing a schedule", "schedule", e.sc.Name, "due", due, "err", err)
				}
			}
		}
		last = now
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// firing is the parsed spec of a schedule the scheduler fires, or why it
// refuses it (a log line, with err when there is one to show): a legacy
// command line, a spec that would not fire as written (stored before
// Validate refused such specs, or by hand), or a request this version
// refuses (stored by an older one: a field its kind does not take), which
// would fail at every firing.
func (s Schedule) firing(now time.Time) (cron.Schedule, string, error) {
	if len(s.Args) > 0 || s.Request == nil {
		return nil, "schedule refused: it holds no typed job request (run the scheduler's migration, or remove and add it again)", nil
	}
	sched, err := checkCron(s.Cron, now)
	if err != nil {
		return nil, "schedule refused: it will not fire (remove it and add it again with a valid cron spec)", err
	}
	if err := s.JobRequest().Check(now); err != nil {
		return nil, "schedule refused: its request is not valid now (remove it and add it again)", err
	}
	return sched, "", nil
}

// fire queues the firing of sc at due unless another scheduler did.
func (s *Scheduler) fire(ctx context.Context, sc Schedule, due time.Time, log *slog.Logger) error {
	won, err := s.Schedules.claim(ctx, sc.Name, due)
	if err != nil {
		return err
	}
	if !won {
		log.Debug("schedule already fired by another scheduler", "schedule", sc.Name, "due", due)
		return nil
	}
	busy, prev, err := s.running(ctx, sc.Name)
	if err != nil {
		// Not fired: a second run of the same messages is worse than a
		// missed one.
		return err
	}
	if busy != nil {
		s.Metrics.count(sc.Name, FiringSkipped)
		log.Warn("schedule skipped: its previous run has not finished", "schedule", sc.Name, "due", due,
			"job_id", busy.JobID, "previous_due", busy.Due, "status", busy.Status)
		if first, err := s.Schedules.firstSkip(ctx, sc.Name, busy.Due); err != nil || !first {
			return err
		}
		return s.Jobs.Audit(ctx, jobs.Event{Actor: "schedule:" + sc.Name, Action: "schedule_skipped", JobID: busy.JobID,
			Detail: fmt.Sprintf("due %s: %s (the firings skipped after it behind the same run are logged and counted, not audited)", due.Format(time.RFC3339), busy)})
	}
	raw, err := json.Marshal(sc.JobRequest())
	if err != nil {
		return err
	}
	task, err := tasks.NewScheduleRunTask(tasks.ScheduleRun{Name: sc.Name, Due: due, Request: raw,
		ApprovalAbove: sc.ApprovalAbove, Requester: sc.Requester})
	if err != nil {
		return err
	}
	if s.Jobs != nil && s.Tasks != nil {
		// Before it is queued, as queuing until it is: another
		// scheduler's next firing waits for a task not found yet, and
		// for one whose scheduler stopped before queueing it until its
		// claim lapses.
		recorded, err := s.Schedules.firing(ctx, sc.Name, prev, due)
		if err != nil {
			s.Schedules.unclaim(context.WithoutCancel(ctx), sc.Name, due)
			return err
		}
		if !recorded {
			s.Metrics.count(sc.Name, FiringSkipped)
			log.Warn("schedule skipped: another scheduler fired it while this one checked its previous run", "schedule", sc.Name, "due", due)
			return s.Jobs.Audit(ctx, jobs.Event{Actor: "schedule:" + sc.Name, Action: "schedule_skipped",
				Detail: fmt.Sprintf("due %s: schedule %s: another scheduler fired it meanwhile", due.Format(time.RFC3339), sc.Name)})
		}
	}
	if _, err := s.Queue.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		s.Schedules.unclaim(context.WithoutCancel(ctx), sc.Name, due)
		return err
	}
	if s.Jobs != nil && s.Tasks != nil {
		if err := s.Schedules.queued(ctx, sc.Name); err != nil {
			return err
		}
	}
	s.Metrics.count(sc.Name, FiringFired)
	log.Info("schedule fired", "schedule", sc.Name, "due", due)
	return nil
}
