package imrecall

import (
	"context"
	"errors"
	"sync"

	"github.com/imrecall/imrecall/producer"
)

// ErrClosed is returned by Create after Close.
var ErrClosed = errors.New("imrecall: client closed")

// errShuttingDown is why Close stops a plan going on in the background; the
// job's interruption says so ("stopped: server shutting down").
var errShuttingDown = errors.New("server shutting down")

// background is the plans a Client runs in the background
// (CreateOptions.InBackground): a server answers a request to create a
// big job once its planning first waits for the job's backlog
// (Config.Backlog), and planning goes on here, in the server's process,
// under the job's planner lease. A server that dies meanwhile leaves an
// interrupted plan, which the workers' reconciler settles like any other;
// one that shuts down stops them (Close), so each queues what it planned
// and says its planning was interrupted at once.
type background struct {
	mu     sync.Mutex
	wg     sync.WaitGroup
	stops  map[int]context.CancelCauseFunc
	next   int
	closed bool
}

// start registers a plan; done unregisters it.
func (bg *background) start(ctx context.Context) (context.Context, func(), error) {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	if bg.closed {
		return nil, nil, ErrClosed
	}
	if bg.stops == nil {
		bg.stops = map[int]context.CancelCauseFunc{}
	}
	ctx, stop := context.WithCancelCause(ctx)
	id := bg.next
	bg.next++
	bg.stops[id] = stop
	bg.wg.Add(1)
	return ctx, func() {
		bg.mu.Lock()
		delete(bg.stops, id)
		bg.mu.Unlock()
		stop(nil)
		bg.wg.Done()
	}, nil
}

// Close stops the plans and re-queues going on in the background
// (CreateOptions.InBackground, RequeueInBackground) and waits for them:
// each queues what it planned and marks its job's planning interrupted, or
// leaves the dead letters it has not moved (run the same request again for
// the rest). Create and RequeueInBackground are refused after Close.
func (c *Client) Close() {
	bg := &c.bg
	bg.mu.Lock()
	bg.closed = true
	for _, stop := range bg.stops {
		stop(errShuttingDown)
	}
	bg.mu.Unlock()
	bg.wg.Wait()
}

// createInBackground is Create with CreateOptions.InBackground: it returns
// when planning ends, or once it first waits for the job's backlog, with
// Created.Planning set and the counts so far, leaving it to go on.
func (c *Client) createInBackground(ctx context.Context, req Request, opts CreateOptions) (Created, error) {
	opts.InBackground = false
	return inBackground(ctx, c, "planning",
		func(ctx context.Context, onWait func(Created)) (Created, error) {
			opts.onWait = onWait
			return c.Create(ctx, req, opts)
		},
		func(cr Created) (Created, string) {
			if j, err := c.store.Get(ctx, cr.Job.ID); err == nil {
				cr.Job = j
			}
			cr.Planning = true
			return cr, cr.Job.ID
		})
}

// RequeueInBackground is Requeue for a server answering a request: it
// returns when the re-queue ends or once it first waits for the job's
// backlog (jobs.Job.Backlog), with Requeued.Requeuing set and the counts so
// far, and the re-queue goes on in the background until it ends or Close.
// The dead letters not yet moved stay dead letters: a re-queue stopped by
// Close, or by a server that dies, is finished by running it again.
func (c *Client) RequeueInBackground(ctx context.Context, id string, f DeadLetterFilter, opts RequeueOptions) (producer.Requeued, error) {
	return inBackground(ctx, c, "re-queueing",
		func(ctx context.Context, onWait func(producer.Requeued)) (producer.Requeued, error) {
			return c.requeue(ctx, id, f, opts, onWait)
		},
		func(r producer.Requeued) (producer.Requeued, string) { return r, id })
}

// inBackground runs work in the background (registered with c.bg, so that
// Close stops it) and returns its result when it ends, or what it reports
// when it first waits for a job's backlog (passed through answer, which
// also names the job for the log), leaving it to go on; a later failure is
// logged.
func inBackground[T any](ctx context.Context, c *Client, what string,
	work func(ctx context.Context, onWait func(T)) (T, error), answer func(T) (T, string)) (T, error) {
	var zero T
	bctx, done, err := c.bg.start(context.WithoutCancel(ctx))
	if err != nil {
		return zero, err
	}
	type result struct {
		out T
		err error
	}
	finished := make(chan result, 1)
	waiting := make(chan T, 1)
	go func() {
		defer done()
		out, err := work(bctx, func(v T) { waiting <- v })
		finished <- result{out, err}
	}()
	select {
	case r := <-finished:
		return r.out, r.err
	case v := <-waiting:
		v, jobID := answer(v)
		go func() {
			switch r := <-finished; {
			case errors.Is(r.err, errShuttingDown):
				c.cfg.Logger.Warn(what+" in the background stopped: what was done is queued; run the same request again for the rest", "job_id", jobID, "err", r.err)
			case errors.As(r.err, new(*CancelledError)):
				c.cfg.Logger.Info(what+" in the background ended: the job was cancelled", "job_id", jobID)
			case r.err != nil:
				c.cfg.Logger.Error(what+" in the background failed", "job_id", jobID, "err", r.err)
			}
		}()
		return v, nil
	}
}
