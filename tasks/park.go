package tasks

import (
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
