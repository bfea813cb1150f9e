package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// Enqueuer is what the Unparker needs of asynq's client.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Unparker queues the parked tasks of resumed, approved and cancelled jobs
// again (a cancelled job's messages are then dead-lettered as cancelled by
// the handler, without a call). It also ends the cool-off of approved jobs
// whose start has come (jobs.Store.StartDue). Every worker runs one; two
// queueing the same parked task meet on its task ID.
type Unparker struct {
	Store *jobs.Store
	Queue Enqueuer
	// Interval between looks at the jobs with parked tasks. Default 1 s.
	Interval time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Run unparks until ctx ends.
func (u *Unparker) Run(ctx context.Context) {
	every := u.Interval
	if every <= 0 {
		every = time.Second
	}
	log := u.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		started, err := u.Store.StartDue(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("starting approved jobs after their cool-off failed; will retry", "err", err)
		}
		for _, id := range started {
			log.Info("approved job's cool-off is over: it starts", "job_id", id)
		}
		ids, err := u.Store.ParkedJobs(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("listing parked tasks failed; will retry", "err", err)
		}
		for _, id := range ids {
			if n, err := Unpark(ctx, u.Store, u.Queue, id); err != nil {
				if ctx.Err() == nil {
					log.Warn("queueing parked tasks again failed; will retry", "job_id", id, "err", err)
				}
			} else if n > 0 {
				log.Info("parked tasks queued again", "job_id", id, "tasks", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Unpark queues the parked tasks of jobID again if the job is neither
// paused nor held for approval or a cool-off (or is cancelled), in batches, each removed from the parked list
// only once queued: an interrupted unpark leaves the rest parked for the
// next, and two at once queue a task twice at worst (the handler skips what
// is done). It returns how many tasks it queued.
func Unpark(ctx context.Context, store *jobs.Store, q Enqueuer, jobID string) (int, error) {
	st, paused, err := store.Status(ctx, jobID)
	if errors.Is(err, jobs.ErrNotFound) {
		// The job is gone (deleted): its parked tasks would find nothing.
		for {
			p, err := store.Parked(ctx, jobID, 1000)
			if err != nil || len(p) == 0 {
				return 0, err
			}
			if err := store.DropParked(ctx, jobID, p); err != nil {
				return 0, err
			}
		}
	}
	if err != nil {
		return 0, err
	}
	if st != jobs.StatusCancelled {
		held, err := store.Held(ctx, jobID)
		if err != nil || paused || held {
			return 0, err
		}
	}
	n := 0
	for {
		batch, err := store.Parked(ctx, jobID, 100)
		if err != nil {
			return n, err
		}
		if len(batch) == 0 {
			return n, store.DropParked(ctx, jobID, nil)
		}
		for _, p := range batch {
			_, err := q.EnqueueContext(ctx, tasks.Requeued(p.Type, p.Payload, p.Queue, p.TaskID))
			if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) && !errors.Is(err, asynq.ErrDuplicateTask) {
				return n, fmt.Errorf("queueing parked task %s of job %s: %w", p.TaskID, jobID, err)
			}
			if err := carryUnit(ctx, store, jobID, p); err != nil {
				return n, err
			}
			n++
		}
		if err := store.DropParked(ctx, jobID, batch); err != nil {
			return n, err
		}
	}
}

// carryUnit tells the job that a discovery task queued again under a new id
// now carries its scan's planning unit, so that a reconciler looking for
// the unit's task finds it.
func carryUnit(ctx context.Context, store *jobs.Store, jobID string, p jobs.ParkedTask) error {
	if p.Type != tasks.TypeDiscover {
		return nil
	}
	d, err := tasks.DecodeDiscover(asynq.NewTask(p.Type, p.Payload))
	if err != nil {
		return nil // a payload that cannot be decoded is dead-lettered when it runs
	}
	t := jobs.Target{GroupID: d.GroupID, TopicID: d.TopicID, From: d.From, To: d.To}
	err = store.OpenTaskPlanner(ctx, jobID, jobs.ScanUnit(t), jobs.TaskRef{Queue: p.Queue, ID: p.TaskID})
	if err != nil && !errors.Is(err, jobs.ErrClosed) && !errors.Is(err, jobs.ErrNotFound) {
		return err
	}
	return nil
}
