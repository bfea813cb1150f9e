package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"

	"github.com/imrecall/imrecall/producer"
)

// testPauseEnv is a test-only hook, for the interruption tests: with
// IMRECALL_TEST_PAUSE_BEFORE_ENQUEUE=N, `recall` and `purge` enqueue N tasks
// (recall or discovery tasks), and a worker's discovery tasks N recall
// tasks, then, before the next, print
// "test hook: paused before enqueue N+1" on standard error and wait until
// interrupted; the interrupted enqueue fails with the context's error. That
// is the window between planning messages and queueing them. Never set it
// in production.
const testPauseEnv = "IMRECALL_TEST_PAUSE_BEFORE_ENQUEUE"

// testHookEnqueuer wraps q with the test-only pause of testPauseEnv when it
// is set.
func testHookEnqueuer(cmd *cobra.Command, q producer.Enqueuer) producer.Enqueuer {
	v, ok := os.LookupEnv(testPauseEnv)
	if !ok {
		return q
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return q
	}
	return &pausingEnqueuer{q: q, after: n, out: cmd}
}

type pausingEnqueuer struct {
	q     producer.Enqueuer
	after int64
	calls atomic.Int64
	out   *cobra.Command
}

func (p *pausingEnqueuer) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if p.calls.Add(1) == p.after+1 {
		fmt.Fprintf(p.out.ErrOrStderr(), "test hook: paused before enqueue %d\n", p.after+1)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return p.q.EnqueueContext(ctx, task, opts...)
}
