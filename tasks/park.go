package tasks

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"
)

// Requeued rebuilds a task that was stored aside (a paused job's parked
// task) with the options its type is queued with: queue, ID, timeout and
// retries.
func Requeued(typ string, payload []byte, queue, id string) *asynq.Task {
	timeout, retries := DefaultTimeout, 25
	if typ == TypeDiscover {
		timeout, retries = DiscoverTimeout, DiscoverMaxRetry
	}
	return asynq.NewTask(typ, payload, asynq.Queue(queue), asynq.TaskID(id), asynq.Timeout(timeout), asynq.MaxRetry(retries))
}

// Discovery task options. A discovery task scans for at most a budget of
// pages and time well inside DiscoverTimeout, then queues its continuation.
const (
	DiscoverTimeout  = 30 * time.Minute
	DiscoverMaxRetry = 10
)

// Archived reports whether asynq archives a task whose handler returned err
// in ctx: its retries are spent (retried ≥ max retry) or err wraps
// asynq.SkipRetry (asynq v0.26's handleFailedMessage). asynq.RevokeTask is
// never archived. Error handlers use it to act on a task's last attempt.
func Archived(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, asynq.RevokeTask) {
		return false
	}
	if errors.Is(err, asynq.SkipRetry) {
		return true
	}
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && retried >= maxRetry
}
