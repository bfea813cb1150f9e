package worker

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
)

// LimitRunning returns a handler that runs at most n tasks through h at
// once in this process. A task that finds n already running is snoozed for
// one to two seconds (a Snooze: it uses no retry attempt), which gives its
// asynq slot back.
//
// It keeps long tasks from taking every slot. A discovery task holds its
// slot while it reads a whole history, and a purge queues one per group. If
// those filled all the slots, the recall tasks that discovery produces
// would wait behind it, and the recall APIs would sit idle until discovery
// finished.
func LimitRunning(n int, reason string, h asynq.Handler) asynq.Handler {
	slots := make(chan struct{}, max(n, 1))
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		select {
		case slots <- struct{}{}:
		default:
			return &Snooze{After: time.Second + rand.N(time.Second), Reason: reason}
		}
		defer func() { <-slots }()
		return h.ProcessTask(ctx, t)
	})
}
