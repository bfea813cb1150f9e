// Package testhook holds imrecall's test-only hook for the interruption
// tests: with IMRECALL_TEST_PAUSE_BEFORE_ENQUEUE=N, `recall` and `purge`
// enqueue N tasks (recall or discovery tasks), and a worker's discovery
// tasks N recall tasks, then, before the next, print
// "test hook: paused before enqueue N+1" and wait until interrupted; the
// interrupted enqueue fails with the context's error. That is the window
// between planning messages and queueing them. Never set it in production.
package testhook

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/producer"
)

// PauseEnv is the variable that sets the hook.
const PauseEnv = "IMRECALL_TEST_PAUSE_BEFORE_ENQUEUE"

// Enqueuer wraps q with the pause of PauseEnv when it is set (to a whole
// number of 0 or more); out gets the pause's line.
func Enqueuer(q producer.Enqueuer, out io.Writer) producer.Enqueuer {
	n, err := strconv.ParseInt(os.Getenv(PauseEnv), 10, 64)
	if err != nil || n < 0 {
		return q
	}
	return &pausing{q: q, after: n, out: out}
}

type pausing struct {
	q     producer.Enqueuer
	after int64
	calls atomic.Int64
	out   io.Writer
}

func (p *pausing) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if p.calls.Add(1) == p.after+1 {
		fmt.Fprintf(p.out, "test hook: paused before enqueue %d\n", p.after+1)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return p.q.EnqueueContext(ctx, task, opts...)
}
