// Package verify re-reads the histories a recall job touched and tells, for
// every message it planned, whether Tencent now shows it recalled, no longer
// has it (expired or deleted), or still shows it; and, for a purge, which
// visible messages of its subject inside its scope the job did not plan (the
// residue: sent after discovery, or missed).
//
// A purge's scope is read once, area by area (each group, topic and
// conversation its discovery scans, as they are now), with recalled
// messages included (group_msg_get_simple with WithRecalledMsg 1: IsPlaceMsg
// 2 recalled, 1 deleted or expired; admin_getroammsg: MsgFlagBits 8): that
// one pass gives the planned messages their verdicts and finds the residue.
// Planned messages outside the scope (a group the user has left, an index
// purge) and any the pass did not meet are read back around themselves:
// group_msg_get_simple for the highest unchecked seq covers every planned
// seq among the 20 it returns; a conversation is read over the time span of
// its MsgKeys, from the sender's side and, for keys that side no longer has,
// the peer's. Every call goes through the IM client, so through the shared
// limiter at the history APIs' caps.
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
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tim"
)

// IM is what verification needs of the Tencent IM client; *tim.Client has it.
type IM interface {
	GroupMsgGetSimple(ctx context.Context, req tim.GroupMsgGetSimpleRequest) (*tim.GroupMsgGetSimpleResponse, error)
	GroupMsgPages(ctx context.Context, req tim.GroupMsgGetSimpleRequest) iter.Seq2[*tim.GroupMsgGetSimpleResponse, error]
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

// Area is one history a purge covers and which of its messages are the
// subject's: a group (or topic) with a filter, or a one-to-one conversation
// seen from the subject's side (Target.From) within the filter's window.
type Area struct {
	Target jobs.Target
	Filter producer.GroupFilter
}

// match reports whether a message belongs to the area's subject.
func (a Area) match(from string, unix, seq int64) bool {
	f := a.Filter
	if !f.Since.IsZero() && unix < f.Since.Unix() || !f.Until.IsZero() && unix > f.Until.Unix() {
		return false
	}
	if !a.Target.IsGroup() {
		return from == a.Target.From
	}
	if f.SeqFrom > 0 && seq < f.SeqFrom || f.SeqTo > 0 && seq > f.SeqTo {
		return false
	}
	return f.Senders == nil || f.Senders[from]
}

// ScopeList lists the areas of a job's scope as they are now (a user's
// groups change). A purge's scope is what its discovery scans.
type ScopeList func(ctx context.Context) ([]Area, error)

// Options tune Run. The zero value verifies the planned messages only.
type Options struct {
	// Scope, if set, lists the areas the job covers: each is read in full
	// once, which both checks the planned messages in it and finds residue.
	Scope ScopeList
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
	// HistoryCalls counts the history calls made.
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
	v := &verifier{store: store, im: &counting{IM: im}, jobID: job.ID, opt: opt, areas: map[jobs.Target]Area{}}
	if opt.Scope != nil {
		areas, err := opt.Scope(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("listing the job's scope: %w", err)
		}
		known := make(map[jobs.Target]bool, len(targets))
		for _, t := range targets {
			known[t] = true
		}
		for _, a := range areas {
			if !known[a.Target] {
				known[a.Target] = true
				targets = append(targets, a.Target)
			}
			v.areas[a.Target] = a
		}
		v.res.ScopeChecked = true
	}
	if err := eachTarget(ctx, targets, opt.Concurrency, v.target); err != nil {
		return Result{}, err
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

	areas map[jobs.Target]Area // the scope, by target

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

// target verifies the planned messages of one target and, when the target
// is an area of the scope, finds its residue in the same pass.
func (v *verifier) target(ctx context.Context, t jobs.Target) error {
	var msgs []jobs.Message
	if err := v.store.WalkTarget(ctx, v.jobID, t, func(m jobs.Message) error {
		msgs = append(msgs, m)
		return nil
	}); err != nil {
		return err
	}
	var fs []Finding
	var residue []Ref
	var err error
	if a, ok := v.areas[t]; ok {
		fs, residue, msgs, err = v.area(ctx, a, msgs)
		if err != nil {
			return fmt.Errorf("verifying %s: %w", t, err)
		}
	}
	// What the pass over the area did not meet (or every message, outside
	// the scope) is read back around the planned messages themselves.
	if len(msgs) > 0 {
		var more []Finding
		if t.IsGroup() {
			more, err = v.group(ctx, t, msgs)
		} else {
			more, err = v.c2c(ctx, t, msgs)
		}
		if err != nil {
			return fmt.Errorf("verifying %s: %w", t, err)
		}
		fs = append(fs, more...)
	}
	v.addResidue(residue)
	return v.found(fs)
}

func (v *verifier) addResidue(rs []Ref) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.res.Residue += int64(len(rs))
	for _, r := range rs {
		if len(v.res.ResidueSample) >= SampleSize {
			break
		}
		v.res.ResidueSample = append(v.res.ResidueSample, r)
	}
}

// area reads one area of the scope in full, newest first, with recalled
// messages included: each planned message it meets gets its verdict, each
// visible message of the subject the job did not plan is residue. It
// returns the planned messages it did not meet.
func (v *verifier) area(ctx context.Context, a Area, msgs []jobs.Message) (fs []Finding, residue []Ref, rest []jobs.Message, err error) {
	planned := make(map[string]jobs.Message, len(msgs))
	for _, m := range msgs {
		planned[m.Item] = m
	}
	meet := func(item string, visible bool, verdict Verdict, subjects bool) {
		if m, ok := planned[item]; ok {
			fs = append(fs, Finding{Message: m, Verdict: verdict})
			delete(planned, item)
		} else if subjects && visible {
			residue = append(residue, Ref{Target: a.Target, Item: item})
		}
	}
	t := a.Target
	if t.IsGroup() {
		req := tim.GroupMsgGetSimpleRequest{GroupID: t.GroupID, TopicID: t.TopicID, ReqMsgNumber: tim.MaxGetSimpleMsgs,
			ReqMsgSeq: a.Filter.SeqTo, WithRecalledMsg: 1}
		for page, err := range v.im.GroupMsgPages(ctx, req) {
			if err != nil {
				return nil, nil, nil, err
			}
			older := false
			for _, m := range page.RspMsgList {
				verdict := StillVisible
				switch m.IsPlaceMsg {
				case tim.PlaceMsgRecalled:
					verdict = Recalled
				case tim.PlaceMsgDeleted:
					verdict = Gone
				}
				meet(strconv.FormatInt(m.MsgSeq, 10), verdict == StillVisible && m.IsSystemMsg != 1, verdict,
					a.match(m.FromAccount, m.MsgTimeStamp, m.MsgSeq))
				older = older || a.Filter.SeqFrom > 0 && m.MsgSeq < a.Filter.SeqFrom ||
					!a.Filter.Since.IsZero() && m.MsgTimeStamp < a.Filter.Since.Unix()
			}
			if older && len(planned) == 0 {
				break // history is in seq order: nothing further back is in the area
			}
		}
	} else {
		// Both sides: a sender who cleared their side hides nothing the peer
		// still sees. A key met on both sides counts once.
		met := map[string]bool{}
		for _, side := range [][2]string{{t.From, t.To}, {t.To, t.From}} {
			req := tim.AdminGetRoamMsgRequest{OperatorAccount: side[0], PeerAccount: side[1], MaxCnt: 100, MaxTime: time.Now().Unix() + 60}
			if !a.Filter.Since.IsZero() {
				req.MinTime = a.Filter.Since.Unix()
			}
			if !a.Filter.Until.IsZero() {
				req.MaxTime = a.Filter.Until.Unix()
			}
			for page, err := range v.im.RoamMsgPages(ctx, req) {
				if tim.IsGone(tim.CodeOf(err)) {
					break // no such account (deleted, or named by a forged index entry): its side shows nothing
				}
				if err != nil {
					return nil, nil, nil, err
				}
				for _, m := range page.MsgList {
					if met[m.MsgKey] {
						continue
					}
					met[m.MsgKey] = true
					verdict := StillVisible
					if m.Recalled() {
						verdict = Recalled
					}
					meet(m.MsgKey, verdict == StillVisible, verdict, a.match(m.FromAccount, m.MsgTimeStamp, 0))
				}
			}
		}
	}
	for _, m := range msgs {
		if _, left := planned[m.Item]; left {
			rest = append(rest, m)
		}
	}
	return fs, residue, rest, nil
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
		if tim.IsGone(tim.CodeOf(err)) {
			// No such group (dismissed) or topic: nobody sees its messages.
			for ; i < len(ps); i++ {
				out = append(out, Finding{Message: ps[i].m, Verdict: Gone})
			}
			break
		}
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
			if tim.IsGone(tim.CodeOf(err)) {
				break // no such account (deleted): its side shows nothing
			}
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

func (c *counting) GroupMsgPages(ctx context.Context, req tim.GroupMsgGetSimpleRequest) iter.Seq2[*tim.GroupMsgGetSimpleResponse, error] {
	return countPages(c.IM.GroupMsgPages(ctx, req), &c.calls)
}

func (c *counting) RoamMsgPages(ctx context.Context, req tim.AdminGetRoamMsgRequest) iter.Seq2[*tim.AdminGetRoamMsgResponse, error] {
	return countPages(c.IM.RoamMsgPages(ctx, req), &c.calls)
}

// countPages counts the answers (pages and errors) of a paging iterator: one
// call each.
func countPages[T any](seq iter.Seq2[T, error], n *atomic.Int64) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		for page, err := range seq {
			n.Add(1)
			if !yield(page, err) {
				return
			}
		}
	}
}
