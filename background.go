package imrecall

import (
	"context"
	"errors"
	"sync"
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

// Close stops the plans going on in the background (CreateOptions.InBackground)
// and waits for them: each queues what it planned and marks its job's
// planning interrupted (run the same request again for the rest). Create
// is refused after Close.
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
	bctx, done, err := c.bg.start(context.WithoutCancel(ctx))
	if err != nil {
		return Created{}, err
	}
	type result struct {
		out Created
		err error
	}
	finished := make(chan result, 1)
	waiting := make(chan Created, 1)
	opts.InBackground = false
	opts.onWait = func(cr Created) { waiting <- cr }
	go func() {
		defer done()
		out, err := c.Create(bctx, req, opts)
		finished <- result{out, err}
	}()
	select {
	case r := <-finished:
		return r.out, r.err
	case cr := <-waiting:
		if j, err := c.store.Get(ctx, cr.Job.ID); err == nil {
			cr.Job = j
		}
		cr.Planning = true
		go func() {
			switch r := <-finished; {
			case errors.Is(r.err, errShuttingDown):
				c.cfg.Logger.Warn("planning in the background stopped: what was planned is queued; run the same request again for the rest", "job_id", cr.Job.ID, "err", r.err)
			case r.err != nil:
				c.cfg.Logger.Error("planning in the background failed", "job_id", cr.Job.ID, "err", r.err)
			}
		}()
		return cr, nil
	}
}
