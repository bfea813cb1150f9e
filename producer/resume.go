package producer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// DefaultScanBudget is how long one discovery task scans before it hands
// the rest of its history to a continuation task (well inside the task's
// 30-minute deadline, tasks.DiscoverTimeout).
const DefaultScanBudget = 10 * time.Minute

// WithBudget bounds how much history one discovery task reads: at most
// pages pages (0: no bound) and d of time (0: DefaultScanBudget). Past
// either, the task saves its checkpoint and queues a continuation of
// itself. It returns h.
func (h *DiscoverHandler) WithBudget(pages int, d time.Duration) *DiscoverHandler {
	if d <= 0 {
		d = DefaultScanBudget
	}
	h.maxPages, h.maxTime = max(pages, 0), d
	return h
}

// checkpoint is where a scan stands, saved in the job's records after every
// page (jobs.Store.SaveScanCheckpoint) so that a retried, redelivered or
// continued discovery task resumes after it instead of from the newest
// message. Everything newer than the cursor is planned and queued.
type checkpoint struct {
	// Part is the part that owns the scan: a part that finds a higher one
	// has handed over already (it was redelivered after queueing its
	// continuation) and only makes sure that part is queued.
	Part int `json:"part"`
	// Group histories: the ReqMsgSeq of the next page (0: the newest).
	Next int64 `json:"next_seq,omitempty"`
	// One-to-one: the next page's MaxTime and LastMsgKey (0, "": the newest)
	// on the side being read. A conversation is read from the sender's side
	// first, then (PeerSide) from the peer's: a sender who cleared their
	// side (delete_c2c_msg_ramble) hides messages the peer still has.
	MaxTime  int64  `json:"max_time,omitempty"`
	LastKey  string `json:"last_key,omitempty"`
	PeerSide bool   `json:"peer_side,omitempty"`
	// Done: the history was read to its end (or the range's start).
	Done bool `json:"done,omitempty"`
	// Pages, Scanned and Found count the scan's progress, for reports.
	Pages   int `json:"pages"`
	Scanned int `json:"scanned"`
	Found   int `json:"found"`
	// Low and High: the oldest and newest MsgSeq (groups) or MsgTimeStamp
	// (one-to-one) read so far, for the job's coverage.
	Low  int64 `json:"low,omitempty"`
	High int64 `json:"high,omitempty"`
}

// widen takes a page's span (oldest, newest) into the checkpoint's range.
func (cp *checkpoint) widen(span [2]int64) {
	if span[1] == 0 {
		return
	}
	if cp.Low == 0 || span[0] < cp.Low {
		cp.Low = span[0]
	}
	cp.High = max(cp.High, span[1])
}

// coverage is what the scan s read, as the job's coverage records it.
func (cp checkpoint) coverage(s Scan) jobs.TargetCoverage {
	tc := jobs.TargetCoverage{Target: s.Target, Type: s.Type, Pages: cp.Pages, Scanned: cp.Scanned, Found: cp.Found, Done: cp.Done}
	if s.Target.IsGroup() {
		tc.FirstSeq, tc.LastSeq = cp.Low, cp.High
		return tc
	}
	tc.FirstTime, tc.LastTime = cp.Low, cp.High
	tc.Sides = []string{SideSender}
	if cp.PeerSide {
		tc.Sides = append(tc.Sides, SidePeer)
	}
	return tc
}

func (h *DiscoverHandler) loadCheckpoint(ctx context.Context, jobID, unit string) (checkpoint, error) {
	var cp checkpoint
	raw, err := h.store.ScanCheckpoint(ctx, jobID, unit)
	if err != nil || raw == "" {
		return cp, err
	}
	if err := json.Unmarshal([]byte(raw), &cp); err != nil {
		return cp, fmt.Errorf("decoding the checkpoint of %s, job %s: %w", unit, jobID, err)
	}
	return cp, nil
}

func (h *DiscoverHandler) saveCheckpoint(ctx context.Context, jobID, unit string, cp checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encoding a checkpoint: %w", err)
	}
	return h.store.SaveScanCheckpoint(ctx, jobID, unit, string(b))
}

// ScanProgress says where the scan of a planning unit stands: the part
// whose task owns it now (its ID is tasks.DiscoverTaskID of the scan's
// payload with this Part), whether it is done, and its counts. A reconciler
// that looks for a discovery unit's task must look for this part's, not
// the first's. A scan with no checkpoint yet is at part 0.
type ScanProgress struct {
	Part    int  `json:"part"`
	Done    bool `json:"done"`
	Pages   int  `json:"pages"`
	Scanned int  `json:"scanned"`
	Found   int  `json:"found"`
}

// ScanProgressOf reads the checkpoint of a scan of job jobID.
func ScanProgressOf(ctx context.Context, store *jobs.Store, jobID string, s Scan) (ScanProgress, error) {
	h := &DiscoverHandler{store: store}
	cp, err := h.loadCheckpoint(ctx, jobID, s.unit())
	return ScanProgress{Part: cp.Part, Done: cp.Done, Pages: cp.Pages, Scanned: cp.Scanned, Found: cp.Found}, err
}

// scanEnd is why a part stopped scanning.
type scanEnd int

const (
	endDone    scanEnd = iota // the history is read
	endBudget                 // the budget is spent, or the job was paused: hand over
	endStopped                // the job no longer plans (cancelled, failed)
	endBacklog                // the job's backlog is full: hand over, later (backlogHandOver)
)

// handle runs one part of a scan (see checkpoint).
func (h *DiscoverHandler) handle(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeDiscover(t)
	if err != nil {
		return err
	}
	s := scanFromTask(p)
	unit := s.unit()
	log := h.log.With("job_id", p.JobID, "target", s.Target.String(), "part", p.Part)
	st, paused, err := h.store.Status(ctx, p.JobID)
	if errors.Is(err, jobs.ErrNotFound) {
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	if st != jobs.StatusPlanning {
		// Cancelled or failed: discovery stops and its unit closes.
		if cp, err := h.loadCheckpoint(ctx, p.JobID, unit); err == nil && !cp.Done {
			h.recordPartial(ctx, p.JobID, s)
		}
		_, err := h.store.ClosePlanner(ctx, p.JobID, unit)
		return err
	}
	cp, err := h.loadCheckpoint(ctx, p.JobID, unit)
	if err != nil {
		return err
	}
	switch {
	case cp.Done:
		_, err := h.store.ClosePlanner(ctx, p.JobID, unit)
		return err
	case cp.Part > p.Part:
		return h.enqueuePart(ctx, p, cp.Part)
	}
	if paused {
		queue, _ := asynq.GetQueueName(ctx)
		id, _ := asynq.GetTaskID(ctx)
		parked, err := h.store.Park(ctx, p.JobID, t.Type(), t.Payload(), queue, id)
		if err != nil || parked {
			return err
		}
	}
	job, err := h.store.Get(ctx, p.JobID)
	if err != nil {
		return err
	}
	// This attempt plans under a lease of its own and journals what it
	// plans: if it stops early it still queues what it planned, and what it
	// cannot queue a reconciler queues once the lease lapses.
	var n [6]byte
	_, _ = rand.Read(n[:])
	lease, err := h.store.Hold(ctx, job.ID, "scan:"+hex.EncodeToString(n[:]))
	if err != nil {
		return err
	}
	b := NewBatcher(h.store, h.q, job, 0)
	b.Journal(lease.ID())
	b.pagedBacklog = true
	cp.Part = p.Part
	end, err := h.scan(ctx, s, b, &cp)
	if err == nil && end != endStopped {
		err = b.Flush(ctx)
	}
	if errors.Is(err, jobs.ErrClosed) {
		end, err = endStopped, nil
	}
	if aw, ok := tim.AppWideOf(err); ok {
		// The app's configuration is wrong: pause the job (nothing is
		// lost: the checkpoint holds) and hand over to a part that parks.
		if _, terr := h.store.Trip(ctx, p.JobID, aw.Reason()); terr != nil {
			return terr
		}
		log.Error("app-wide error while reading history: job paused", "code", aw.Code, "reason", aw.Reason())
		end, err = endBudget, b.Flush(ctx)
	}
	if err != nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
		defer cancel()
		if ferr := b.Finish(fctx); ferr != nil {
			lease.Abandon()
			return h.failed(ctx, p, unit, errors.Join(err, ferr), log)
		}
		_ = lease.Release(fctx)
		return h.failed(ctx, p, unit, err, log)
	}
	_ = lease.Release(ctx)
	switch end {
	case endStopped:
		h.recordPartial(ctx, p.JobID, s)
		_, err := h.store.ClosePlanner(ctx, p.JobID, unit)
		return err
	case endBudget, endBacklog:
		cp.Part = p.Part + 1
		if err := h.saveCheckpoint(ctx, p.JobID, unit, cp); err != nil {
			return err
		}
		if end == endBacklog {
			log.Debug("the job's backlog is full: continuing the scan in a new task once the workers drain it", "pages", cp.Pages, "scanned", cp.Scanned, "after", backlogHandOver)
			return h.enqueuePart(ctx, p, cp.Part, asynq.ProcessIn(backlogHandOver))
		}
		log.Info("scan budget spent: continuing in a new task", "pages", cp.Pages, "scanned", cp.Scanned)
		return h.enqueuePart(ctx, p, cp.Part)
	}
	cp.Done = true
	if err := h.saveCheckpoint(ctx, p.JobID, unit, cp); err != nil {
		return err
	}
	// The target is read: record what was read in the job's coverage.
	if err := h.store.SaveTargetCoverage(ctx, p.JobID, cp.coverage(s)); err != nil {
		return err
	}
	_, err = h.store.ClosePlanner(ctx, p.JobID, unit)
	return err
}

// failed returns a failure for asynq to retry (the retry resumes from the
// checkpoint); after the last attempt the scan's planning unit is closed as
// failed: the other targets go on, and the job ends failed, saying why.
func (h *DiscoverHandler) failed(ctx context.Context, p tasks.Discover, unit string, err error, log *slog.Logger) error {
	s := scanFromTask(p)
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	if !ok1 || !ok2 || retried < maxRetry { // (outside asynq: always retryable)
		return fmt.Errorf("discovering %s: %w", s.Target, err)
	}
	log.Error("discovery failed for good; the target is recorded as failed", "err", err)
	h.recordPartial(context.WithoutCancel(ctx), p.JobID, s)
	if _, ferr := h.store.FailPlanner(context.WithoutCancel(ctx), p.JobID, unit, fmt.Errorf("discovering %s: %w", s.Target, err)); ferr != nil {
		return ferr
	}
	return fmt.Errorf("discovering %s: %v: %w", s.Target, err, asynq.SkipRetry)
}

// recordPartial records in the job's coverage what a scan that stops for
// good (failed, or its job cancelled) read, as not read to its end. It is
// best effort: the job's status says the scan stopped already.
func (h *DiscoverHandler) recordPartial(ctx context.Context, jobID string, s Scan) {
	cp, err := h.loadCheckpoint(ctx, jobID, s.unit())
	if err == nil {
		cp.Done = false
		err = h.store.SaveTargetCoverage(ctx, jobID, cp.coverage(s))
	}
	if err != nil {
		h.log.Warn("recording what a stopped scan read failed", "job_id", jobID, "target", s.Target.String(), "err", err)
	}
}

// HandleError is for the discovery server's asynq.Config.ErrorHandler: a
// discovery task about to be archived (its last attempt failed in a way
// Handle did not see through, such as a panic) closes its planning unit as
// failed, so that its job does not stay planning.
func (h *DiscoverHandler) HandleError(ctx context.Context, t *asynq.Task, err error) {
	if t.Type() != tasks.TypeDiscover || !tasks.Archived(ctx, err) {
		return
	}
	p, derr := tasks.DecodeDiscover(t)
	if derr != nil {
		return
	}
	s := scanFromTask(p)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, ferr := h.store.FailPlanner(wctx, p.JobID, s.unit(), fmt.Errorf("discovering %s: %w", s.Target, err)); ferr != nil && !errors.Is(ferr, jobs.ErrNotFound) {
		h.log.Error("discovery task archived; its planning unit could not be closed", "job_id", p.JobID, "target", s.Target.String(), "err", ferr)
	}
}

// enqueuePart queues part of p's scan; queued already is fine.
func (h *DiscoverHandler) enqueuePart(ctx context.Context, p tasks.Discover, part int, opts ...asynq.Option) error {
	p.Part = part
	task, err := tasks.NewDiscoverTask(p, h.queueOf(ctx, p))
	if err != nil {
		return err
	}
	if _, err := h.q.EnqueueContext(ctx, task, opts...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) && !errors.Is(err, asynq.ErrDuplicateTask) {
		return fmt.Errorf("queueing part %d of the discovery of %s: %w", part, scanFromTask(p).Target, err)
	}
	// The unit is carried by the new part now: a reconciler looks for it.
	ref := jobs.TaskRef{Queue: tasks.DiscoveryQueue(h.queueOf(ctx, p)), ID: tasks.DiscoverTaskID(p)}
	if err := h.store.OpenTaskPlanner(ctx, p.JobID, scanFromTask(p).unit(), ref); err != nil && !errors.Is(err, jobs.ErrClosed) {
		return err
	}
	return nil
}

// queueOf is the job queue a discovery task belongs to.
func (h *DiscoverHandler) queueOf(ctx context.Context, p tasks.Discover) string {
	if job, err := h.store.Get(ctx, p.JobID); err == nil {
		return job.Queue
	}
	return tasks.QueuePurge
}

// scan reads the history from cp's cursor, a page at a time, into b, and
// saves the checkpoint after every page. It stops at the end of the history,
// when the budget is spent or the job is paused (endBudget), when the job's
// backlog is full (endBacklog: a discovery task does not hold a worker
// while it waits), or when the job no longer plans (endStopped).
func (h *DiscoverHandler) scan(ctx context.Context, s Scan, b *Batcher, cp *checkpoint) (scanEnd, error) {
	start, pages := time.Now(), 0
	end := endDone
	// after is called once a page's findings are handed to b: checkpoint,
	// then look at the job and the budget.
	after := func() (bool, error) {
		pages++
		if err := h.saveCheckpoint(ctx, b.job.ID, s.unit(), *cp); err != nil {
			return true, err
		}
		st, paused, err := h.store.Status(ctx, b.job.ID)
		if err != nil {
			return true, err
		}
		switch {
		case st != jobs.StatusPlanning:
			end = endStopped
			return true, nil
		case paused, h.maxPages > 0 && pages >= h.maxPages, time.Since(start) >= h.maxTime:
			end = endBudget
			return true, nil
		}
		if full, err := b.BacklogFull(ctx); err != nil || full {
			end = endBacklog
			return true, err
		}
		return false, nil
	}
	var err error
	if s.Target.IsGroup() {
		err = scanGroupFrom(ctx, h.im, s.Target, s.Filter, cp.Next, func(seqs []int64, scanned int, next int64, span [2]int64) (bool, error) {
			cp.widen(span)
			if len(seqs) > 0 {
				if err := b.AddGroup(ctx, s.Target, seqs...); err != nil {
					return true, err
				}
			}
			cp.Pages++
			cp.Scanned += scanned
			cp.Found += len(seqs)
			cp.Next = next
			if top, n := b.held(s.Target); n > 0 {
				cp.Next = top // read the held seqs again after a crash
			}
			if next == 0 {
				return false, nil // the last page: done once the loop ends
			}
			stop, err := after()
			if stop && err == nil && end != endStopped {
				// Handing over: queue what is held and move the cursor
				// exactly past this page.
				if err := b.Flush(ctx); err != nil {
					return true, err
				}
				cp.Next = next
			}
			return stop, err
		})
	} else {
		// The sender's side, then the peer's; the checkpoint says which.
		for err == nil && end == endDone {
			operator, peer := s.Target.From, s.Target.To
			if cp.PeerSide {
				operator, peer = peer, operator
			}
			sideDone := false
			err = scanC2CFrom(ctx, h.im, operator, peer, s.Target.From, s.Filter.Window, cp.MaxTime, cp.LastKey,
				func(keys []string, scanned int, maxTime int64, lastKey string, complete bool, span [2]int64) (bool, error) {
					cp.widen(span)
					for _, k := range keys {
						if err := b.AddC2C(ctx, s.Target, k); err != nil {
							return true, err
						}
					}
					cp.Pages++
					cp.Scanned += scanned
					cp.Found += len(keys)
					cp.MaxTime, cp.LastKey = maxTime, lastKey
					if complete {
						sideDone = true
						return false, nil
					}
					return after()
				})
			if err != nil || !sideDone || cp.PeerSide {
				break
			}
			// The sender's side is read: the peer's next, from its newest.
			cp.PeerSide, cp.MaxTime, cp.LastKey = true, 0, ""
			var stop bool
			if stop, err = after(); stop {
				break
			}
		}
	}
	return end, err
}

// scanGroupFrom reads a group's (or topic's) history backwards from seq
// from (0: the newest, or f.SeqTo) and calls page with the seqs of each page
// that match f, how many messages the page held, and the ReqMsgSeq of the
// next page (0 when this page is the last: the history or the range ends).
// page returns true to stop.
func scanGroupFrom(ctx context.Context, im IM, t jobs.Target, f GroupFilter, from int64, page func(seqs []int64, scanned int, next int64, span [2]int64) (bool, error)) error {
	req := tim.GroupMsgGetSimpleRequest{GroupID: t.GroupID, TopicID: t.TopicID, ReqMsgNumber: tim.MaxGetSimpleMsgs}
	switch {
	case from > 0:
		req.ReqMsgSeq = from
	case f.SeqTo > 0:
		req.ReqMsgSeq = f.SeqTo
	}
	for resp, err := range im.GroupMsgPages(ctx, req) {
		if err != nil {
			return fmt.Errorf("reading history of %s: %w", t, err)
		}
		older := false
		low, high := resp.RspMsgList[0].MsgSeq, resp.RspMsgList[0].MsgSeq
		var seqs []int64
		for _, m := range resp.RspMsgList {
			low, high = min(low, m.MsgSeq), max(high, m.MsgSeq)
			if f.SeqFrom > 0 && m.MsgSeq < f.SeqFrom {
				older = true
				continue
			}
			if !f.Since.IsZero() && m.MsgTimeStamp < f.Since.Unix() {
				older = true
				continue
			}
			if m.IsPlaceMsg != tim.PlaceMsgNormal || m.IsSystemMsg == 1 || !f.contains(m.MsgTimeStamp) {
				continue
			}
			if f.Senders != nil && !f.Senders[m.FromAccount] {
				continue
			}
			seqs = append(seqs, m.MsgSeq)
		}
		next := low - 1
		if older || low <= 1 {
			next = 0
		}
		stop, err := page(seqs, len(resp.RspMsgList), next, [2]int64{low, high})
		if err != nil {
			return err
		}
		if stop || next == 0 {
			return nil // history is in seq order: everything further back is out of range
		}
	}
	return nil
}

// scanC2CFrom reads the one-to-one history of operator with peer (as
// operator sees it) within w backwards from maxTime and lastKey (0, "": the
// newest) and calls page with the MsgKeys sent by user (not recalled), how
// many messages the page held, the next page's cursor, and whether this
// page is the last. page returns true to stop.
func scanC2CFrom(ctx context.Context, im IM, operator, peer, user string, w Window, maxTime int64, lastKey string,
	page func(keys []string, scanned int, maxTime int64, lastKey string, complete bool, span [2]int64) (bool, error)) error {
	req := tim.AdminGetRoamMsgRequest{OperatorAccount: operator, PeerAccount: peer, MaxCnt: 100, MaxTime: time.Now().Unix() + 60}
	if !w.Since.IsZero() {
		req.MinTime = w.Since.Unix()
	}
	if !w.Until.IsZero() {
		req.MaxTime = w.Until.Unix()
	}
	if maxTime > 0 {
		req.MaxTime, req.LastMsgKey = maxTime, lastKey
	}
	for resp, err := range im.RoamMsgPages(ctx, req) {
		if err != nil {
			return fmt.Errorf("reading one-to-one history of %s with %s: %w", operator, peer, err)
		}
		var keys []string
		var span [2]int64
		for i, m := range resp.MsgList {
			if i == 0 {
				span = [2]int64{m.MsgTimeStamp, m.MsgTimeStamp}
			}
			span = [2]int64{min(span[0], m.MsgTimeStamp), max(span[1], m.MsgTimeStamp)}
			if m.FromAccount == user && !m.Recalled() && w.contains(m.MsgTimeStamp) {
				keys = append(keys, m.MsgKey)
			}
		}
		complete := resp.Complete == 1
		stop, err := page(keys, len(resp.MsgList), resp.LastMsgTime, string(resp.LastMsgKey), complete, span)
		if err != nil || stop || complete {
			return err
		}
	}
	return nil
}
