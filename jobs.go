package imrecall

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/worker"
)

// Job reads a job record (jobs.ErrNotFound if there is none).
func (c *Client) Job(ctx context.Context, id string) (jobs.Job, error) {
	if err := jobs.ValidID(id); err != nil {
		return jobs.Job{}, &FieldError{Field: "id", Value: id, Reason: err.Error(), Err: err}
	}
	return c.store.Get(ctx, id)
}

// Jobs lists the newest jobs, at most limit.
func (c *Client) Jobs(ctx context.Context, limit int) ([]jobs.Job, error) {
	return c.store.List(ctx, limit)
}

// Report is a job's report: counts, dead letters by meaning, and a recount.
func (c *Client) Report(ctx context.Context, id string) (jobs.Report, error) {
	if _, err := c.Job(ctx, id); err != nil {
		return jobs.Report{}, err
	}
	return c.store.BuildReport(ctx, id)
}

// Wait reads the job every Config.Poll until it has finished, calling
// onProgress (if set) with each read, and returns it as it finished.
func (c *Client) Wait(ctx context.Context, id string, onProgress func(jobs.Job)) (jobs.Job, error) {
	t := time.NewTicker(c.cfg.Poll)
	defer t.Stop()
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			return j, err
		}
		if onProgress != nil {
			onProgress(j)
		}
		if j.Finished() {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-t.C:
		}
	}
}

// Cancel cancels a job on behalf of actor: its pending messages are
// dead-lettered as cancelled without a call, and its parked tasks are
// queued again at once so that they are (every worker's unparker would
// within a second). It returns the job's status.
func (c *Client) Cancel(ctx context.Context, id, actor, reason string) (jobs.Status, Unparked, error) {
	if err := producer.CheckWhoAndWhy(actor, reason); err != nil {
		return "", Unparked{}, err
	}
	if _, err := c.Job(ctx, id); err != nil {
		return "", Unparked{}, err
	}
	st, err := c.store.Cancel(ctx, id, actor, reason)
	if err != nil {
		return st, Unparked{}, err
	}
	return st, c.unpark(ctx, id), nil
}

// Unparked is what Resume and Cancel did with the job's parked tasks:
// Tasks queued again, or Err (the workers' unparkers will retry).
type Unparked struct {
	Tasks int
	Err   error
}

func (c *Client) unpark(ctx context.Context, id string) Unparked {
	if c.cfg.Queue == nil {
		return Unparked{}
	}
	n, err := worker.Unpark(ctx, c.store, c.cfg.Queue, id)
	if err != nil {
		err = fmt.Errorf("job %s: queueing its parked tasks again (the workers will retry): %w", id, err)
	}
	return Unparked{Tasks: n, Err: err}
}

// Pause pauses a job on behalf of actor: workers park its tasks (set them
// aside, taking no slot) until it is resumed. A cancelled job cannot be
// paused (*jobs.StatusError). The audit record holds the actor and the
// reason.
func (c *Client) Pause(ctx context.Context, id, actor, reason string) error {
	if err := producer.CheckWhoAndWhy(actor, reason); err != nil {
		return err
	}
	if err := c.store.SetPaused(ctx, id, actor, reason, true); err != nil {
		return err
	}
	c.cfg.Logger.InfoContext(ctx, "job paused", "job_id", id, "actor", actor, "reason", reason)
	return nil
}

// Resume resumes a paused job on behalf of actor and queues its parked
// tasks again. The audit record holds the actor and the reason.
func (c *Client) Resume(ctx context.Context, id, actor, reason string) (Unparked, error) {
	if err := producer.CheckWhoAndWhy(actor, reason); err != nil {
		return Unparked{}, err
	}
	if err := c.store.SetPaused(ctx, id, actor, reason, false); err != nil {
		return Unparked{}, err
	}
	c.cfg.Logger.InfoContext(ctx, "job resumed", "job_id", id, "actor", actor, "reason", reason)
	return c.unpark(ctx, id), nil
}

// DeadLetterFilter selects dead letters by code and category (empty: any).
type DeadLetterFilter struct {
	Code     string `json:"code,omitempty"`
	Category string `json:"category,omitempty"`
}

// Match returns the filter as a predicate, or a *FieldError for an unknown
// category.
func (f DeadLetterFilter) Match() (func(jobs.DeadLetter) bool, error) {
	switch jobs.Category(f.Category) {
	case "", jobs.AlreadyRecalled, jobs.NotFound, jobs.Cancelled, jobs.NeedsAttention:
	default:
		return nil, fieldErr("category", f.Category, "want already_recalled, not_found, cancelled or needs_attention")
	}
	return func(d jobs.DeadLetter) bool {
		return (f.Code == "" || d.Code == f.Code) && (f.Category == "" || string(d.Category) == f.Category)
	}, nil
}

// RequeueOptions say who re-queues dead letters and why, and whether a
// large re-queue is confirmed: re-sending more than Config.ConfirmAbove
// dead letters is a bulk action, confirmed as a job of as many messages
// is (CreateOptions).
type RequeueOptions struct {
	Actor, Reason string
	// Confirmed: the re-queue goes ahead whatever its size.
	Confirmed bool
	// Confirm, if set and not Confirmed, is asked when more than
	// Config.ConfirmAbove dead letters would be re-queued; its error
	// refuses the re-queue. Without it such a re-queue is refused with a
	// *ConfirmationRequired (Messages: the dead letters; Plan empty).
	Confirm func(ctx context.Context, need *ConfirmationRequired) error
}

// Requeue queues again, on behalf of opts.Actor, the job's dead letters
// that f selects (an empty filter: those that need attention); more than
// Config.ConfirmAbove of them need confirmation (RequeueOptions), and
// nothing is moved or recorded without it. A cancelled job is never
// reopened (*jobs.StatusError). A job with a bound on queued work is held
// to it: Requeue waits for the workers as planning does (see
// RequeueInBackground for a caller that must answer).
func (c *Client) Requeue(ctx context.Context, id string, f DeadLetterFilter, opts RequeueOptions) (producer.Requeued, error) {
	return c.requeue(ctx, id, f, opts, nil)
}

// requeue is Requeue, calling onWait (if set) when it first waits for the
// job's backlog.
func (c *Client) requeue(ctx context.Context, id string, f DeadLetterFilter, opts RequeueOptions, onWait func(producer.Requeued)) (producer.Requeued, error) {
	if c.cfg.Queue == nil {
		return producer.Requeued{}, ErrNotConfigured
	}
	actor, reason := opts.Actor, opts.Reason
	if err := producer.CheckWhoAndWhy(actor, reason); err != nil {
		return producer.Requeued{}, err
	}
	if f.Code == "" && f.Category == "" {
		f.Category = string(jobs.NeedsAttention)
	}
	match, err := f.Match()
	if err != nil {
		return producer.Requeued{}, err
	}
	if !opts.Confirmed {
		n, err := c.CountDeadLetters(ctx, id, f)
		if err != nil {
			return producer.Requeued{}, err
		}
		if n > c.cfg.ConfirmAbove {
			need := &ConfirmationRequired{Messages: int64(n), Above: c.cfg.ConfirmAbove}
			if opts.Confirm == nil {
				return producer.Requeued{}, need
			}
			if err := opts.Confirm(ctx, need); err != nil {
				return producer.Requeued{}, err
			}
		}
	}
	return producer.RequeueDeadLetters(ctx, c.store, c.cfg.Queue, id, producer.RequeueRequest{Match: match, Actor: actor,
		Detail: fmt.Sprintf("code=%q category=%q %s", f.Code, f.Category, reason), OnWait: onWait})
}

// Audit records an event in the audit log (a dry run, for one: it changes
// nothing but is part of who asked for what).
func (c *Client) Audit(ctx context.Context, e jobs.Event) error { return c.store.Audit(ctx, e) }

// Approve approves a job held for approval (Config.ApprovalAbove) on behalf
// of approver, who must not be its requester (*jobs.SelfApprovalError); a
// job not awaiting approval is refused (*jobs.StatusError). After
// Config.ApprovalDelay it starts (the workers' unparkers start it; with no
// delay its parked tasks are queued at once).
func (c *Client) Approve(ctx context.Context, id, approver, reason string) (jobs.Job, error) {
	if _, err := c.Job(ctx, id); err != nil {
		return jobs.Job{}, err
	}
	if strings.TrimSpace(approver) == "" {
		return jobs.Job{}, fieldErr("actor", "", "required (who approves, for the audit record)")
	}
	if err := producer.CheckWhoAndWhy(approver, reason); err != nil {
		return jobs.Job{}, err
	}
	j, err := c.store.Approve(ctx, id, approver, reason, c.cfg.ApprovalDelay)
	if err != nil {
		return j, err
	}
	if c.cfg.ApprovalDelay <= 0 {
		if un := c.unpark(ctx, id); un.Err != nil {
			c.cfg.Logger.WarnContext(ctx, "approved job: queueing its parked tasks (the workers will)", "job_id", id, "err", un.Err)
		}
	}
	return c.Job(ctx, id)
}
