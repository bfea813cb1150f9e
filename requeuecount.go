package imrecall

import (
	"context"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
)

// CountRequeue counts the dead letters of job id that f selects (by
// default, as for Requeue, those that need attention), so that a caller
// can ask before a large re-queue. A cancelled job is refused
// (*jobs.StatusError). When none match, it finishes a re-queue that was
// interrupted: repaired is how many messages that queued (*jobs.BusyError
// while a re-queue of the job runs).
func (c *Client) CountRequeue(ctx context.Context, id string, f DeadLetterFilter) (count, repaired int, err error) {
	if count, err = c.CountDeadLetters(ctx, id, f); err != nil || count > 0 {
		return count, 0, err
	}
	if c.cfg.Queue == nil {
		return 0, 0, ErrNotConfigured
	}
	j, err := c.store.Get(ctx, id)
	if err != nil {
		return 0, 0, err
	}
	repaired, err = producer.FinishRequeue(ctx, c.store, c.cfg.Queue, j, "a count of dead letters finishing an interrupted re-queue")
	return 0, repaired, err
}

// CountDeadLetters counts the dead letters of job id that f selects (by
// default, as for Requeue, those that need attention) and changes nothing:
// the dry run of a re-queue. A cancelled job is refused (*jobs.StatusError),
// as its re-queue would be.
func (c *Client) CountDeadLetters(ctx context.Context, id string, f DeadLetterFilter) (count int, err error) {
	if f.Code == "" && f.Category == "" {
		f.Category = string(jobs.NeedsAttention)
	}
	match, err := f.Match()
	if err != nil {
		return 0, err
	}
	if j, err := c.store.Get(ctx, id); err != nil {
		return 0, err
	} else if j.Status == jobs.StatusCancelled {
		return 0, &jobs.StatusError{JobID: id, Status: j.Status, Action: "re-queueing dead letters"}
	}
	err = c.store.DeadLetters(ctx, id, func(d jobs.DeadLetter) error {
		if match(d) {
			count++
		}
		return nil
	})
	return count, err
}
