package producer

import (
	"context"
	"time"

	"github.com/imrecall/imrecall/jobs"
)

// DefaultBacklog is the bound on a job's queued work that the CLI and the
// schedules give a job (jobs.Spec.Backlog): 20,000 messages, 10 s of group
// recalls at the cap of 200 calls/s (10 seqs a call), 100 s of one-to-one
// ones; in Redis, about 2 MB of queued tasks.
const DefaultBacklog = 20_000

// backlogHandOver is how long a discovery task that found its job's
// backlog full waits before the next part of its scan runs.
const backlogHandOver = 2 * time.Second

// backlogPoll is how often a planner that waits for the backlog reads the
// job's counts; it grows to backlogPollMax while the wait lasts.
const (
	backlogPoll    = 100 * time.Millisecond
	backlogPollMax = 250 * time.Millisecond
)

// Backlog is what a Batcher's bound on queued work did: how often and how
// long it waited for the workers.
type Backlog struct {
	Waits  int
	Waited time.Duration
}

// room reports how many more messages the batcher may plan before it looks
// at the backlog again, reading the job: its bound less its pending
// messages. A job that is held (awaiting approval, or in its cool-off)
// sends nothing, so its whole plan is queued (the approver sees the count),
// and so is a cancelled one's (its workers settle the tasks as cancelled at
// once). A failed or done job counts as any other: a re-queue of its dead
// letters makes it send again.
func (b *Batcher) room(ctx context.Context) (int64, error) {
	j, err := b.store.Get(ctx, b.job.ID)
	if err != nil {
		return 0, err
	}
	if j.Held() || j.Status == jobs.StatusCancelled {
		return b.job.Backlog, nil
	}
	return b.job.Backlog - j.Counts.Pending, nil
}

// awaitBacklog is called before n messages are planned: with a bound
// (jobs.Job.Backlog), it waits while the job has that many messages
// planned and not settled, the queue of work ahead of the workers. It reads
// the job only when the room it last saw is used up, so a job far from its
// bound costs one read per bound's worth of messages. While it waits the
// planner's lease is renewed as always (jobs.Store.Keep): a planner that
// waits for the workers is alive; one that dies while it waits is an
// interrupted plan like any other. Before it waits, it queues what it
// planned and holds for a fuller call, and confirms the journal: the
// messages counted pending are all in the queues for the workers, and a
// wait holds nothing in the journal.
func (b *Batcher) awaitBacklog(ctx context.Context, n int) error {
	if b.job.Backlog <= 0 || b.pagedBacklog {
		return nil
	}
	if b.left -= int64(n); b.left >= 0 {
		return nil
	}
	started, poll := time.Now(), backlogPoll
	for waited := false; ; waited = true {
		room, err := b.room(ctx)
		if err != nil {
			return err
		}
		// Room for these n; after a wait, for half the bound (the workers
		// drain a batch before the planner fills it again); or an empty
		// queue (a call larger than the bound still goes, alone).
		need := int64(n)
		if waited {
			need = max(need, b.job.Backlog/2)
		}
		if room >= need || room == b.job.Backlog && n > 0 {
			b.left = room - int64(n)
			if waited {
				b.Backlog.Waited += time.Since(started)
			}
			return nil
		}
		if !waited {
			// Everything counted pending must be where workers can
			// settle it: queue the seqs planned but held for a fuller
			// call (a Flush plans every target before it queues), and
			// confirm what is queued in the journal.
			b.Backlog.Waits++
			if err := b.emitReady(ctx); err != nil {
				return err
			}
			if f := b.OnWait; f != nil {
				b.OnWait = nil
				f()
			}
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			b.Backlog.Waited += time.Since(started)
			return context.Cause(ctx)
		case <-t.C:
		}
		poll = min(2*poll, backlogPollMax)
	}
}

// BacklogFull reports whether the job has at least its bound of messages
// queued ahead of the workers (never without a bound). A discovery task
// asks it between pages, and hands over to a later part of its scan when it
// is, instead of holding a worker while it waits (DiscoverHandler).
func (b *Batcher) BacklogFull(ctx context.Context) (bool, error) {
	if b.job.Backlog <= 0 {
		return false, nil
	}
	room, err := b.room(ctx)
	if err != nil {
		return false, err
	}
	b.left = room
	return room <= 0, nil
}
