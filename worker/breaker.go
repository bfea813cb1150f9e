package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// trip is an open breaker: an app-wide error (see tim.AppWideOf) seen at At.
type trip struct {
	At     time.Time
	Reason string
}

// taskKey carries the task being handled, for parking it.
type taskKey struct{}

func withTask(ctx context.Context, t *asynq.Task) context.Context {
	return context.WithValue(ctx, taskKey{}, t)
}

// park stores the task being handled aside while its job is paused: the
// task completes (nil), so a paused job's tasks do not cycle through the
// queue and take no slot from other jobs; the Unparker queues them again
// once the job is resumed or cancelled. If the job was resumed meanwhile,
// the task is snoozed briefly instead.
func (h *Handler) park(ctx context.Context, jobID string) error {
	t, _ := ctx.Value(taskKey{}).(*asynq.Task)
	if t == nil {
		return &Snooze{After: h.cfg.PausedDelay, Reason: "job " + jobID + " is paused"}
	}
	queue, _ := asynq.GetQueueName(ctx)
	id, _ := asynq.GetTaskID(ctx)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	parked, err := h.store.Park(pctx, jobID, t.Type(), t.Payload(), queue, id)
	if err != nil {
		return err
	}
	if !parked {
		return &Snooze{After: h.cfg.PausedDelay, Reason: "job " + jobID + " was resumed while its task was being parked"}
	}
	h.cfg.Logger.Debug("task parked: job paused", "job_id", jobID, "task_id", id)
	return nil
}

// breakerTrip handles an app-wide error: the job is paused with a reason a
// person can act on, the worker's breaker opens (the app's other jobs pause
// at their next task instead of calling), the messages' last send is noted
// as answered (nothing happened) unless an earlier send of theirs went
// unanswered (they stay in doubt), and the task is parked. Nothing is
// dead-lettered.
func (h *Handler) breakerTrip(ctx context.Context, jobID string, target jobs.Target, items []*item, aw tim.AppWide, log *slog.Logger) error {
	reason := aw.Reason()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	// On Redis's clock, as a resume is (jobs.Store.ResumedAt): the host
	// that resumes may be minutes off this one.
	at, err := h.store.Clock(wctx)
	if err != nil {
		at = time.Now()
	}
	h.breaker.Store(&trip{At: at, Reason: reason})
	// The app-wide answer did nothing; an earlier call left unanswered
	// still may have, and its message stays in doubt.
	if err := h.noteAnswers(wctx, jobID, target, items); err != nil {
		return err
	}
	paused, err := h.store.Trip(wctx, jobID, reason)
	if err != nil {
		return err
	}
	if paused {
		log.Error("app-wide error: job paused, nothing dead-lettered; fix the configuration and resume the job", "code", aw.Code, "reason", reason)
	}
	return h.park(ctx, jobID)
}

// tripIfOpen pauses a job with the breaker's reason if the breaker is open
// and the job was not resumed since it opened (a person who resumes a job
// after fixing the configuration lets it try again). It reports whether the
// job is now paused.
func (h *Handler) tripIfOpen(ctx context.Context, jobID string) (bool, error) {
	tr := h.breaker.Load()
	if tr == nil {
		return false, nil
	}
	resumed, err := h.store.ResumedAt(ctx, jobID)
	if err != nil {
		return false, err
	}
	if resumed.After(tr.At) {
		return false, nil
	}
	if _, err := h.store.Trip(ctx, jobID, tr.Reason); err != nil {
		return false, fmt.Errorf("pausing job %s on the open breaker: %w", jobID, err)
	}
	st, paused, err := h.store.Status(ctx, jobID)
	if err != nil {
		return false, err
	}
	return paused && st != jobs.StatusCancelled, nil
}

// closeBreakerOnRecall closes the breaker once a call recalls a message:
// the configuration works again.
func (h *Handler) closeBreakerOnRecall(out []jobs.Outcome) {
	if h.breaker.Load() == nil {
		return
	}
	for _, o := range out {
		if o.Recalled && !o.Unattributed {
			h.breaker.Store(nil)
			return
		}
	}
}

// BreakerOpen returns the reason the worker's breaker is open, or "".
func (h *Handler) BreakerOpen() string {
	if tr := h.breaker.Load(); tr != nil {
		return tr.Reason
	}
	return ""
}
