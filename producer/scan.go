package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// Scan is one unit of discovery: one group (or topic) history, or one
// one-to-one conversation seen from Target.From.
type Scan struct {
	Target jobs.Target
	Type   string      // group type, for reports
	Filter GroupFilter // for a conversation only the Window counts
}

// unit is the scan's planning unit in the job.
func (s Scan) unit() string { return jobs.ScanUnit(s.Target) }

// Run scans and hands what it finds to sink as it goes, a page at a time.
// On an error, what earlier pages found has been handed over already; a
// Batcher plans nothing twice, so running the scan again is safe.
func (s Scan) Run(ctx context.Context, im IM, sink Sink) (TargetReport, error) {
	tr := TargetReport{Target: s.Target, Type: s.Type}
	if s.Target.IsGroup() {
		found, scanned, span, err := scanGroup(ctx, im, s.Target, s.Filter, func(seqs []int64) error {
			return sink.AddGroup(ctx, s.Target, seqs...)
		})
		tr.Messages, tr.Calls, tr.Scanned = found, (found+9)/10, scanned
		tr.FirstSeq, tr.LastSeq = span[0], span[1]
		return tr, err
	}
	found, scanned, span, err := scanC2C(ctx, im, s.Target.From, s.Target.To, s.Filter.Window, func(keys []string) error {
		for _, k := range keys {
			if err := sink.AddC2C(ctx, s.Target, k); err != nil {
				return err
			}
		}
		return nil
	})
	tr.Messages, tr.Calls, tr.Scanned = found, found, scanned
	tr.FirstTime, tr.LastTime, tr.Sides = span[0], span[1], []string{SideSender, SidePeer}
	return tr, err
}

// task is the scan as a queued discovery task of job.
func (s Scan) task(job jobs.Job) (*asynq.Task, error) {
	return tasks.NewDiscoverTask(s.payload(job), job.Queue)
}

// payload is the scan's discovery task payload for job.
func (s Scan) payload(job jobs.Job) tasks.Discover {
	p := tasks.Discover{JobID: job.ID, AppID: job.AppID, GroupID: s.Target.GroupID, TopicID: s.Target.TopicID,
		GroupType: s.Type, From: s.Target.From, To: s.Target.To, SeqFrom: s.Filter.SeqFrom, SeqTo: s.Filter.SeqTo}
	if !s.Filter.Since.IsZero() {
		p.Since = s.Filter.Since.Unix()
	}
	if !s.Filter.Until.IsZero() {
		p.Until = s.Filter.Until.Unix()
	}
	for sender := range s.Filter.Senders {
		p.Senders = append(p.Senders, sender)
	}
	sort.Strings(p.Senders)
	return p
}

func scanFromTask(p tasks.Discover) Scan {
	s := Scan{Target: jobs.Target{GroupID: p.GroupID, TopicID: p.TopicID, From: p.From, To: p.To}, Type: p.GroupType,
		Filter: GroupFilter{SeqFrom: p.SeqFrom, SeqTo: p.SeqTo}}
	if p.Since != 0 {
		s.Filter.Since = time.Unix(p.Since, 0)
	}
	if p.Until != 0 {
		s.Filter.Until = time.Unix(p.Until, 0)
	}
	if len(p.Senders) > 0 {
		s.Filter.Senders = map[string]bool{}
		for _, x := range p.Senders {
			s.Filter.Senders[x] = true
		}
	}
	return s
}

// RunScans runs scans in this process, n at once, into sink (which only one
// goroutine uses at a time), adding each target to rep.
func RunScans(ctx context.Context, im IM, scans []Scan, n int, sink Sink, rep *Report) error {
	byTarget := make(map[jobs.Target]Scan, len(scans))
	targets := make([]jobs.Target, 0, len(scans))
	for _, s := range scans {
		byTarget[s.Target] = s
		targets = append(targets, s.Target)
	}
	var mu sync.Mutex
	err := parallel(ctx, n, targets, func(ctx context.Context, t jobs.Target) (func() error, error) {
		tally := &collect{}
		tr, err := byTarget[t].Run(ctx, im, tally)
		if err != nil {
			return nil, err
		}
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			rep.add(tr)
			return tally.replay(ctx, t, sink)
		}, nil
	})
	rep.sort()
	return err
}

// collect holds one scan's findings until the sink may take them.
type collect struct {
	seqs []int64
	keys []string
}

func (c *collect) AddGroup(_ context.Context, _ jobs.Target, seqs ...int64) error {
	c.seqs = append(c.seqs, seqs...)
	return nil
}

func (c *collect) AddC2C(_ context.Context, _ jobs.Target, k string) error {
	c.keys = append(c.keys, k)
	return nil
}

func (c *collect) replay(ctx context.Context, t jobs.Target, sink Sink) error {
	if len(c.seqs) > 0 {
		if err := sink.AddGroup(ctx, t, c.seqs...); err != nil {
			return err
		}
	}
	for _, k := range c.keys {
		if err := sink.AddC2C(ctx, t, k); err != nil {
			return err
		}
	}
	return nil
}

// EnqueueScans queues one discovery task per scan into job, each its own
// planning unit: the job plans as the tasks run, in parallel on every
// worker, and a restart loses nothing (a scan run twice plans nothing twice).
//
// One-to-one conversations go first: they are few (one per peer), and until
// they are read the one-to-one API's share of the cap sits idle, while group
// recall has work as soon as the first group history is read.
//
// Scans are queued enqueueConcurrency at a time (each takes two Redis round
// trips): with Redis milliseconds away, one at a time made a purge of a few
// hundred groups spend seconds before the workers had anything to do.
func EnqueueScans(ctx context.Context, store *jobs.Store, q Enqueuer, job jobs.Job, scans []Scan) (int, error) {
	var c2c, groups []Scan
	for _, s := range scans {
		if s.Target.IsGroup() {
			groups = append(groups, s)
		} else {
			c2c = append(c2c, s)
		}
	}
	n := 0
	for _, batch := range [][]Scan{c2c, groups} {
		k, err := enqueueScans(ctx, store, q, job, batch)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// enqueueConcurrency bounds the scans queued at once.
const enqueueConcurrency = 16

// enqueueScans opens each scan's planning unit and queues its task, up to
// enqueueConcurrency at once, and returns how many it queued; on an error
// the others stop (a unit opened but not queued is closed by a reconciler
// once its task is found missing).
func enqueueScans(ctx context.Context, store *jobs.Store, q Enqueuer, job jobs.Job, scans []Scan) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var queued atomic.Int64
	sem := make(chan struct{}, enqueueConcurrency)
	var wg sync.WaitGroup
	for _, s := range scans {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := enqueueScan(ctx, store, q, job, s); err != nil {
				cancel(err)
				return
			}
			queued.Add(1)
		})
	}
	wg.Wait()
	return int(queued.Load()), context.Cause(ctx)
}

func enqueueScan(ctx context.Context, store *jobs.Store, q Enqueuer, job jobs.Job, s Scan) error {
	task, err := s.task(job)
	if err != nil {
		return err
	}
	ref := jobs.TaskRef{Queue: tasks.DiscoveryQueue(job.Queue), ID: tasks.DiscoverTaskID(s.payload(job))}
	if err := store.OpenTaskPlanner(ctx, job.ID, s.unit(), ref); err != nil {
		return err
	}
	if _, err := q.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueueing discovery of %s: %w", s.Target, err)
	}
	return nil
}

// DiscoverHandler runs discovery tasks in workers.
type DiscoverHandler struct {
	im    IM
	store *jobs.Store
	q     Enqueuer
	log   *slog.Logger
	// budget bounds one task's scan: pages (0 = no bound) and time.
	maxPages int
	maxTime  time.Duration
}

// NewDiscoverHandler returns a handler that scans with im and plans into
// store, enqueueing recall tasks with q.
func NewDiscoverHandler(im IM, store *jobs.Store, q Enqueuer, log *slog.Logger) *DiscoverHandler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DiscoverHandler{im: im, store: store, q: q, log: log, maxTime: DefaultScanBudget}
}

// Register adds the handler to mux.
func (h *DiscoverHandler) Register(mux *asynq.ServeMux) {
	mux.HandleFunc(tasks.TypeDiscover, h.Handle)
}

// Handle runs one tasks.TypeDiscover task: one part of a scan, resumed from
// the scan's checkpoint (see resume.go).
func (h *DiscoverHandler) Handle(ctx context.Context, t *asynq.Task) error {
	return h.handle(ctx, t)
}
