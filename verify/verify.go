// Package verify re-reads the histories a recall job touched and tells, for
// every message it planned, whether Tencent now shows it recalled, no longer
// has it (expired or deleted), or still shows it; and, for a purge, which
// visible messages of its subject inside its scope the job did not plan (the
// residue: sent after discovery, or missed).
//
// Group histories are read with group_msg_get_simple and WithRecalledMsg 1
// (IsPlaceMsg: 2 recalled, 1 deleted or expired), 20 seqs a call, one call
// covering every planned seq within 20 of the highest unchecked one; a
// one-to-one conversation with admin_getroammsg over the time span of its
// planned MsgKeys (MsgFlagBits 8: recalled), from the sender's side and,
// for what the sender's side no longer has, from the peer's. Every call goes
// through the IM client, so through the shared limiter at the history APIs'
// caps.
package verify

import (
	"context"
	"fmt"
	"iter"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// IM is what verification needs of the Tencent IM client; *tim.Client has it.
type IM interface {
	GroupMsgGetSimple(ctx context.Context, req tim.GroupMsgGetSimpleRequest) (*tim.GroupMsgGetSimpleResponse, error)
	RoamMsgPages(ctx context.Context, req tim.AdminGetRoamMsgRequest) iter.Seq2[*tim.AdminGetRoamMsgResponse, error]
}

// Verdict is what the history shows of a planned message.
type Verdict string

// Verdicts.
const (
	Recalled     Verdict = "recalled"      // shown recalled
	Gone         Verdict = "gone"          // not there any more: expired or deleted
	StillVisible Verdict = "still_visible" // still shown to users
)

// Finding is one planned message and what the history shows of it.
type Finding struct {
	jobs.Message
	Verdict Verdict
}

// Ref names a message found by a scope scan.
type Ref struct {
	Target jobs.Target
	Item   string // seq (decimal) or MsgKey
}

// ScopeScan reads the job's scope as it is now and calls add for every
// message of the job's subject that is still visible. A purge's scope scan is
// the same discovery the purge ran, as a dry run.
type ScopeScan func(ctx context.Context, add func(Ref) error) error

// Options tune Run. The zero value verifies the planned messages only.
type Options struct {
	// Scope, if set, is scanned for residue.
	Scope ScopeScan
	// OnFinding, if set, is called for every planned message, from one
	// goroutine at a time, in no particular order.
	OnFinding func(Finding) error
	// Concurrency is how many targets are read at once. Zero: 8.
	Concurrency int
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// SampleSize bounds the messages a Result lists by name.
const SampleSize = 100

// Result is what a verification found. Verified + Gone + StillVisible =
// Planned.
type Result struct {
	JobID        string    `json:"job_id"`
	At           time.Time `json:"at"`
	Planned      int64     `json:"planned"`
	Verified     int64     `json:"verified"`
	Gone         int64     `json:"gone"`
	StillVisible int64     `json:"still_visible"`
	// Residue counts visible messages of the subject in the scope that the
	// job did not plan; ScopeChecked says whether the scope was scanned.
	Residue      int64 `json:"residue"`
	ScopeChecked bool  `json:"scope_checked"`
	HistoryCalls int64 `json:"history_calls"`
	// StillVisibleSample and ResidueSample name up to SampleSize of each.
	StillVisibleSample []Ref `json:"still_visible_sample,omitempty"`
	ResidueSample      []Ref `json:"residue_sample,omitempty"`
}

// Passed reports whether nothing the job was about remains visible.
func (r Result) Passed() bool { return r.StillVisible == 0 && r.Residue == 0 }

// Run verifies job jobID.
func Run(ctx context.Context, store *jobs.Store, im IM, jobID string, opt Options) (Result, error) {
	if opt.Concurrency <= 0 {
		opt.Concurrency = 8
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	job, err := store.Get(ctx, jobID)
	if err != nil {
		return Result{}, err
	}
	targets, err := store.Targets(ctx, jobID)
	if err != nil {
		return Result{}, err
	}
	v := &verifier{store: store, im: &counting{IM: im}, jobID: job.ID, opt: opt}
	if err := eachTarget(ctx, targets, opt.Concurrency, v.target); err != nil {
		return Result{}, err
	}
	if opt.Scope != nil {
		if err := v.residue(ctx); err != nil {
			return Result{}, err
		}
		v.res.ScopeChecked = true
	}
	v.res.JobID = job.ID
	v.res.At = opt.Now().UTC()
	v.res.HistoryCalls = v.im.calls.Load()
	return v.res, nil
}

type verifier struct {
	store *jobs.Store
	im    *counting
	jobID string
	opt   Options

	mu  sync.Mutex // guards res and calls of OnFinding
	res Result
}

// found records verdicts of one target.
func (v *verifier) found(fs []Finding) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, f := range fs {
		v.res.Planned++
		switch f.Verdict {
		case Recalled:
			v.res.Verified++
		case Gone:
			v.res.Gone++
		default:
			v.res.StillVisible++
			if len(v.res.StillVisibleSample) < SampleSize {
				v.res.StillVisibleSample = append(v.res.StillVisibleSample, Ref{Target: f.Target, Item: f.Item})
			}
		}
		if v.opt.OnFinding != nil {
			if err := v.opt.OnFinding(f); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v *verifier) target(ctx context.Context, t jobs.Target) error {
	var msgs []jobs.Message
	if err := v.store.WalkTarget(ctx, v.jobID, t, func(m jobs.Message) error {
		msgs = append(msgs, m)
		return nil
	}); err != nil {
		return err
	}
	var fs []Finding
	var err error
	if t.IsGroup() {
		fs, err = v.group(ctx, t, msgs)
	} else {
		fs, err = v.c2c(ctx, t, msgs)
	}
	if err != nil {
		return fmt.Errorf("verifying %s: %w", t, err)
	}
	return v.found(fs)
}

// group reads the history around the planned seqs, highest first: one call
// of 20 covers every planned seq in [low, s], where s is the highest seq not
// yet covered and low the lowest seq of the answer (1 when the answer holds
// fewer than asked, which means it reached the start of the history).
func (v *verifier) group(ctx context.Context, t jobs.Target, msgs []jobs.Message) ([]Finding, error) {
	type planned struct {
		seq int64
		m   jobs.Message
	}
	ps := make([]planned, 0, len(msgs))
	for _, m := range msgs {
		seq, err := strconv.ParseInt(m.Item, 10, 64)
		if err != nil || seq < 1 {
			return nil, fmt.Errorf("planned seq %q: not a seq", m.Item)
		}
		ps = append(ps, planned{seq, m})
	}
	slices.SortFunc(ps, func(a, b planned) int { return int(b.seq - a.seq) })
	out := make([]Finding, 0, len(ps))
	for i := 0; i < len(ps); {
		s := ps[i].seq
		resp, err := v.im.GroupMsgGetSimple(ctx, tim.GroupMsgGetSimpleRequest{
			GroupID: t.GroupID, TopicID: t.TopicID, ReqMsgSeq: s, ReqMsgNumber: tim.MaxGetSimpleMsgs, WithRecalledMsg: 1,
		})
		if err != nil {
			return nil, err
		}
		place := make(map[int64]int, len(resp.RspMsgList))
		low := int64(math.MaxInt64)
		for _, m := range resp.RspMsgList {
			if m.MsgSeq > s {
				return nil, fmt.Errorf("asked for seqs ≤ %d, got seq %d", s, m.MsgSeq)
			}
			place[m.MsgSeq] = m.IsPlaceMsg
			low = min(low, m.MsgSeq)
		}
		if len(resp.RspMsgList) < tim.MaxGetSimpleMsgs && resp.IsFinished != tim.FinishedPartial {
			low = 1 // the answer reached the start of the history
		}
		if low > s { // an empty but partial answer: take only s
			low = s
		}
		for ; i < len(ps) && ps[i].seq >= low; i++ {
			verdict := Gone
			if p, ok := place[ps[i].seq]; ok {
				switch p {
				case tim.PlaceMsgRecalled:
					verdict = Recalled
				case tim.PlaceMsgDeleted:
					verdict = Gone
				default:
					verdict = StillVisible
				}
			}
			out = append(out, Finding{Message: ps[i].m, Verdict: verdict})
		}
	}
	return out, nil
}

// c2c reads the conversation over the span of the planned MsgKeys' times:
// from the sender's side first, then, for keys the sender's side no longer
// has, from the peer's (a sender who cleared their side hides nothing the
// peer still sees).
func (v *verifier) c2c(ctx context.Context, t jobs.Target, msgs []jobs.Message) ([]Finding, error) {
	lo, hi := int64(math.MaxInt64), int64(0)
	for _, m := range msgs {
		ts, ok := msgKeyTime(m.Item)
		if !ok {
			lo, hi = 0, 0 // unknown: read the whole conversation
			break
		}
		lo, hi = min(lo, ts), max(hi, ts)
	}
	if hi == 0 {
		lo, hi = 0, time.Now().Unix()
	}
	want := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		want[m.Item] = true
	}
	verdicts := make(map[string]Verdict, len(msgs))
	for _, side := range [][2]string{{t.From, t.To}, {t.To, t.From}} {
		if len(verdicts) == len(want) {
			break
		}
		req := tim.AdminGetRoamMsgRequest{OperatorAccount: side[0], PeerAccount: side[1], MinTime: lo, MaxTime: hi}
		for page, err := range v.im.RoamMsgPages(ctx, req) {
			if err != nil {
				return nil, err
			}
			for _, m := range page.MsgList {
				if !want[m.MsgKey] {
					continue
				}
				switch cur, seen := verdicts[m.MsgKey]; {
				case m.Recalled():
					if !seen {
						verdicts[m.MsgKey] = Recalled
					}
				default:
					if !seen || cur != StillVisible {
						verdicts[m.MsgKey] = StillVisible
					}
				}
			}
		}
	}
	out := make([]Finding, 0, len(msgs))
	for _, m := range msgs {
		verdict, ok := verdicts[m.Item]
		if !ok {
			verdict = Gone
		}
		out = append(out, Finding{Message: m, Verdict: verdict})
	}
	return out, nil
}

// msgKeyTime returns the send time a MsgKey carries (seq_random_time).
func msgKeyTime(key string) (int64, bool) {
	i := strings.LastIndexByte(key, '_')
	if i < 0 {
		return 0, false
	}
	ts, err := strconv.ParseInt(key[i+1:], 10, 64)
	return ts, err == nil && ts > 0
}

// residue scans the scope and counts visible messages the job never planned.
// Messages the job planned and that are still visible were counted already.
func (v *verifier) residue(ctx context.Context) error {
	return v.opt.Scope(ctx, func(r Ref) error {
		var b jobs.Begin
		var err error
		if r.Target.IsGroup() {
			seq, perr := strconv.ParseInt(r.Item, 10, 64)
			if perr != nil {
				return fmt.Errorf("scope scan gave seq %q: %w", r.Item, perr)
			}
			b, err = v.store.PeekGroup(ctx, v.jobID, r.Target, []int64{seq})
		} else {
			b, err = v.store.PeekC2C(ctx, v.jobID, r.Target, r.Item)
		}
		if err != nil {
			return err
		}
		if b.States[0] != jobs.ItemUnplanned {
			return nil
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		v.res.Residue++
		if len(v.res.ResidueSample) < SampleSize {
			v.res.ResidueSample = append(v.res.ResidueSample, r)
		}
		return nil
	})
}

// eachTarget runs fn for every target, n at once, and returns the first
// error (the others are cancelled).
func eachTarget(ctx context.Context, targets []jobs.Target, n int, fn func(context.Context, jobs.Target) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, t := range targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, t); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// counting counts the history calls an IM makes.
type counting struct {
	IM
	calls atomic.Int64
}

func (c *counting) GroupMsgGetSimple(ctx context.Context, req tim.GroupMsgGetSimpleRequest) (*tim.GroupMsgGetSimpleResponse, error) {
	c.calls.Add(1)
	return c.IM.GroupMsgGetSimple(ctx, req)
}

func (c *counting) RoamMsgPages(ctx context.Context, req tim.AdminGetRoamMsgRequest) iter.Seq2[*tim.AdminGetRoamMsgResponse, error] {
	return func(yield func(*tim.AdminGetRoamMsgResponse, error) bool) {
		for page, err := range c.IM.RoamMsgPages(ctx, req) {
			c.calls.Add(1)
			if !yield(page, err) {
				return
			}
		}
	}
}
