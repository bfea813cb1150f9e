// Package reconcile settles what interrupted processes leave behind, so that
// no job stays planning, running or with pending messages while nothing is
// in flight for it. Every worker runs a Reconciler; a Redis lock lets one
// pass run at a time across processes.
//
// A pass looks at every open job (jobs.Store.OpenJobs):
//
//   - a planning unit whose planner is gone — its lease lapsed, or, for a
//     discovery unit, its task no longer exists in asynq (asynq delivers a
//     task again after a crash, so while it exists the unit stays open) — is
//     closed with jobs.Store.InterruptPlanner: the job ends failed, saying
//     that planning was interrupted and how far it got;
//   - messages in the plan journal whose planner's lease lapsed (planned, the
//     planner died before it confirmed them queued) are queued again;
//   - a job that is neither paused nor held (awaiting approval, or in its
//     approved cool-off), has no planner left and pending messages, made
//     no progress since the previous pass, and has no task in any asynq queue
//     (pending, active, scheduled, retry) gets its unsettled messages queued
//     again in a new generation (the handler skips messages already settled,
//     and checks the history of those sent without an answer);
//   - a job that is finished leaves the open set.
//
// The first pass of a process also adopts unsettled jobs among the newest
// that are not in the open set (created before there was a reconciler); a
// unit of theirs, which holds no lease, is taken for gone an hour after the
// job's creation.
//
// Everything it queues is at least once: a message queued twice is recalled
// once (the first terminal state wins).
package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/redis/go-redis/v9"
)

// DefaultInterval is the time between two passes when Config.Interval is 0.
const DefaultInterval = 15 * time.Second

// Config configures a Reconciler.
type Config struct {
	Store *jobs.Store // job records; required
	// Redis is the Redis of the job records and of asynq's queues (the lock,
	// and asynq's task keys to find a job's tasks); required.
	Redis redis.UniversalClient
	// Queue enqueues the recall tasks it queues again; required.
	Queue producer.Enqueuer
	// Inspector finds discovery tasks in asynq; required.
	Inspector *asynq.Inspector
	// Interval is the time between passes; 0 means DefaultInterval.
	Interval time.Duration
	Logger   *slog.Logger // nil: discard
}

// Reconciler runs reconciliation passes. Create it with New.
type Reconciler struct {
	cfg     Config
	log     *slog.Logger
	id      string
	marks   map[string]progress
	adopted bool // jobs of earlier versions looked for (see adopt)
}

// adoptRecent is how many of the newest jobs the first pass of a process
// looks at for unsettled jobs that are not in the open set (created by a
// version before the reconciler, such as jobs left pending by an interrupted
// plan); legacyGrace is how long a planning unit with neither a lease nor a
// task (opened by such a version) may stay silent before it is taken for gone.
const (
	adoptRecent = 1000
	legacyGrace = time.Hour
)

// progress is what a job had done at a pass: a job whose progress does not
// change between two passes is a candidate for queueing again.
type progress struct {
	done       int64
	generation int
}

// New returns a reconciler, or an error naming a missing field.
func New(cfg Config) (*Reconciler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("reconcile: Store required")
	case cfg.Redis == nil:
		return nil, errors.New("reconcile: Redis required")
	case cfg.Queue == nil:
		return nil, errors.New("reconcile: Queue required")
	case cfg.Inspector == nil:
		return nil, errors.New("reconcile: Inspector required")
	case cfg.Interval < 0:
		return nil, fmt.Errorf("reconcile: Interval %s must not be negative", cfg.Interval)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Reconciler{cfg: cfg, log: log, id: "rc-" + hex.EncodeToString(b[:]), marks: map[string]progress{}}, nil
}

// Run runs a pass every Interval until ctx is done.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Summary is what one pass did.
type Summary struct {
	Ran         bool // false: another process held the lock
	Jobs        int  // open jobs looked at
	Interrupted int  // planning units settled as interrupted
	Journaled   int  // journaled messages queued again
	Requeued    int  // unsettled messages of stalled jobs queued again
	Settled     int  // jobs that left the open set
}

func (r *Reconciler) lockKey() string { return r.cfg.Store.Prefix() + ":reconciler:lock" }

var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Pass runs one reconciliation pass if no other process is running one.
func (r *Reconciler) Pass(ctx context.Context) (Summary, error) {
	var s Summary
	ttl := max(4*r.cfg.Interval, 30*time.Second)
	ok, err := r.cfg.Redis.SetNX(ctx, r.lockKey(), r.id, ttl).Result()
	if err != nil {
		return s, fmt.Errorf("taking the reconciler lock: %w", err)
	}
	if !ok {
		return s, nil
	}
	defer unlockScript.Run(context.WithoutCancel(ctx), r.cfg.Redis, []string{r.lockKey()}, r.id)
	s.Ran = true
	if !r.adopted {
		if err := r.adopt(ctx); err != nil {
			return s, err
		}
		r.adopted = true
	}
	ids, err := r.cfg.Store.OpenJobs(ctx)
	if err != nil {
		return s, err
	}
	stalled := map[string]jobs.Job{}
	var errs []error
	for _, id := range ids {
		s.Jobs++
		j, err := r.job(ctx, id, &s)
		if err != nil {
			errs = append(errs, fmt.Errorf("job %s: %w", id, err))
			continue
		}
		if j != nil {
			stalled[id] = *j
		}
	}
	for id := range r.marks {
		if !slices.Contains(ids, id) {
			delete(r.marks, id)
		}
	}
	if len(stalled) > 0 {
		busy, err := r.inFlight(ctx, stalled)
		if err != nil {
			return s, errors.Join(append(errs, err)...)
		}
		for id, j := range stalled {
			if busy[id] {
				continue
			}
			n, err := r.requeueUnsettled(ctx, j)
			s.Requeued += n
			if err != nil {
				errs = append(errs, fmt.Errorf("job %s: %w", id, err))
				continue
			}
			delete(r.marks, id)
			r.log.Warn("job had pending messages and nothing in flight: queued them again", "job_id", id, "messages", n)
		}
	}
	return s, errors.Join(errs...)
}

// adopt adds to the open set the unsettled jobs among the newest that are
// not in it: jobs created before there was a reconciler.
func (r *Reconciler) adopt(ctx context.Context) error {
	list, err := r.cfg.Store.List(ctx, adoptRecent)
	if err != nil {
		return err
	}
	for _, j := range list {
		if j.Finished() {
			continue
		}
		if err := r.cfg.Store.MarkOpen(ctx, j.ID); err != nil {
			return err
		}
	}
	return nil
}

// job reconciles one job and returns it if it looks stalled (to check for
// tasks in flight).
func (r *Reconciler) job(ctx context.Context, id string, s *Summary) (*jobs.Job, error) {
	store := r.cfg.Store
	j, err := store.Get(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		s.Settled++
		return nil, store.MarkSettled(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	ls, err := store.ReadLeases(ctx, id)
	if err != nil {
		return nil, err
	}
	units, err := store.Planners(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, u := range units {
		why, err := r.gone(ctx, j, ls, u)
		if err != nil {
			return nil, err
		}
		if why == "" {
			continue
		}
		st, err := store.InterruptPlanner(ctx, id, u, why)
		if err != nil {
			return nil, err
		}
		if st != "" {
			s.Interrupted++
			r.log.Warn("planner gone: planning interrupted", "job_id", id, "unit", u, "why", why, "status", st, "planned", j.Counts.Planned)
		}
	}
	n, err := r.journal(ctx, j, ls)
	s.Journaled += n
	if err != nil {
		return nil, err
	}
	if j, err = store.Get(ctx, id); err != nil {
		return nil, err
	}
	switch {
	case j.Counts.Pending == 0:
		delete(r.marks, id)
		if j.Finished() {
			if left, err := store.Journal(ctx, id); err != nil || len(left) > 0 {
				return nil, err
			}
			s.Settled++
			return nil, store.MarkSettled(ctx, id)
		}
		return nil, nil
	case j.Paused || j.Held() || j.Status == jobs.StatusPlanning:
		// A paused or held job's tasks may be parked; planners are at work.
		delete(r.marks, id)
		return nil, nil
	}
	p := progress{done: j.Counts.Recalled + j.Counts.DeadLettered, generation: j.Generation}
	if prev, ok := r.marks[id]; !ok || prev != p {
		r.marks[id] = p
		return nil, nil
	}
	return &j, nil
}

// gone says why a planning unit's planner is gone, or "" if it is not.
func (r *Reconciler) gone(ctx context.Context, j jobs.Job, ls jobs.Leases, unit string) (string, error) {
	if ls.Alive(unit) {
		return "", nil
	}
	ref, ok := ls.Tasks[unit]
	if !ok {
		if _, held := ls.Expiry[unit]; !held {
			// Opened with no lease and no task (jobs.Store.OpenPlanner, or a
			// version before leases): given legacyGrace to close by itself.
			if ls.Now.Sub(j.CreatedAt) > legacyGrace {
				return fmt.Sprintf("no lease, and the job is older than %s", legacyGrace), nil
			}
			return "", nil
		}
		return "its planner's lease lapsed", nil
	}
	ti, err := r.cfg.Inspector.GetTaskInfo(ref.Queue, ref.ID)
	if errors.Is(err, asynq.ErrTaskNotFound) || err == nil && ti.State == asynq.TaskStateCompleted {
		// A paused job's discovery task is parked (stored aside, completed);
		// the unparker queues it again and names it the unit's task.
		parked, perr := r.cfg.Store.ParkedCount(ctx, j.ID)
		if perr != nil {
			return "", perr
		}
		if j.Paused || j.Held() || parked > 0 {
			return "", nil
		}
	}
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return "its discovery task is gone", nil
	case err != nil:
		return "", fmt.Errorf("looking up task %s: %w", ref.ID, err)
	case ti.State == asynq.TaskStateArchived:
		return "its discovery task was archived after its last attempt", nil
	case ti.State == asynq.TaskStateCompleted:
		return "its discovery task completed without closing it", nil
	}
	return "", nil
}

// journal queues the journaled messages whose planner's lease lapsed.
func (r *Reconciler) journal(ctx context.Context, j jobs.Job, ls jobs.Leases) (int, error) {
	store := r.cfg.Store
	entries, err := store.Journal(ctx, j.ID)
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	var dead []jobs.JournalEntry
	for _, e := range entries {
		if !ls.Alive(e.Lease()) {
			dead = append(dead, e)
		}
	}
	if len(dead) == 0 {
		return 0, nil
	}
	lease, err := store.Hold(ctx, j.ID, r.id)
	if err != nil {
		return 0, err
	}
	taken, err := store.TakeJournal(ctx, j.ID, dead, jobs.Token(r.id, "take"))
	if err != nil || len(taken) == 0 {
		_ = lease.Release(ctx)
		return 0, err
	}
	byTarget := map[jobs.Target][]string{}
	fields := make([]string, 0, len(taken))
	for _, e := range taken {
		byTarget[e.Target] = append(byTarget[e.Target], e.Item)
		fields = append(fields, e.Field())
	}
	if err := r.enqueue(ctx, j, byTarget); err != nil {
		lease.Abandon() // taken entries lapse with this lease in turn
		return 0, err
	}
	if err := store.Confirm(ctx, j.ID, fields); err != nil {
		lease.Abandon()
		return 0, err
	}
	_ = lease.Release(ctx)
	r.log.Warn("planner died between planning and queueing: queued its journaled messages", "job_id", j.ID, "messages", len(taken))
	return len(taken), nil
}

// enqueue queues messages already planned, in a new generation of tasks.
func (r *Reconciler) enqueue(ctx context.Context, j jobs.Job, byTarget map[jobs.Target][]string) error {
	gen, err := r.cfg.Store.NextGeneration(ctx, j.ID)
	if err != nil {
		return err
	}
	b := producer.NewBatcher(r.cfg.Store, r.cfg.Queue, j, gen)
	for t, items := range byTarget {
		if err := b.EnqueuePlanned(ctx, t, items); err != nil {
			return err
		}
	}
	return b.Flush(ctx)
}

// requeueUnsettled queues every unsettled message of a stalled job again.
func (r *Reconciler) requeueUnsettled(ctx context.Context, j jobs.Job) (int, error) {
	gen, err := r.cfg.Store.NextGeneration(ctx, j.ID)
	if err != nil {
		return 0, err
	}
	b := producer.NewBatcher(r.cfg.Store, r.cfg.Queue, j, gen)
	n := 0
	err = r.cfg.Store.Unsettled(ctx, j.ID, func(t jobs.Target, items []string) error {
		n += len(items)
		return b.EnqueuePlanned(ctx, t, items)
	})
	if err == nil {
		err = b.Flush(ctx)
	}
	return n, err
}

// inFlightStates are the asynq task states of a task that will still run.
var inFlightStates = map[string]bool{"pending": true, "active": true, "scheduled": true, "retry": true, "aggregating": true}

// inFlight returns which of the jobs have a task in any asynq queue that
// will still run. Task ids of a job begin with "<job id>:" (see tasks);
// asynq keeps each task in a hash asynq:{<queue>}:t:<task id> with its
// state, so a SCAN for the job's task keys finds them all. It runs only for
// jobs that made no progress since the previous pass, and stops at the
// first task of a job that will still run.
func (r *Reconciler) inFlight(ctx context.Context, of map[string]jobs.Job) (map[string]bool, error) {
	busy := map[string]bool{}
	for id := range of {
		found, err := r.jobInFlight(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("looking for tasks of job %s in flight: %w", id, err)
		}
		busy[id] = found
	}
	return busy, nil
}

func (r *Reconciler) jobInFlight(ctx context.Context, jobID string) (bool, error) {
	pattern := "asynq:{*}:t:" + jobID + ":*"
	var found atomic.Bool // masters are scanned concurrently
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		iter := c.Scan(ctx, 0, pattern, 10000).Iterator()
		var keys []string
		check := func() error {
			if len(keys) == 0 || found.Load() {
				return nil
			}
			cmds := make([]*redis.StringCmd, len(keys))
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, k := range keys {
					cmds[i] = p.HGet(ctx, k, "state")
				}
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			for _, cmd := range cmds {
				if inFlightStates[cmd.Val()] {
					found.Store(true)
				}
			}
			keys = keys[:0]
			return nil
		}
		for !found.Load() && iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) >= 500 {
				if err := check(); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		return check()
	}
	if cc, ok := r.cfg.Redis.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
		return found.Load(), err
	}
	err := scan(ctx, r.cfg.Redis)
	return found.Load(), err
}
