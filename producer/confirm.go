package producer

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// SenderCheck is a Sink that confirms, from the history, that each message
// handed to it was sent by User (within Window) before it hands it on to
// Next. The callback
// index records what callbacks claimed, and Tencent's Sign does not cover a
// callback's body: a forged entry may name another user's message. A purge
// by index therefore recalls only what the history shows User sent.
//
// It buffers what it is given; Flush confirms and hands on. Group messages
// are confirmed with one group_msg_get_simple call per page of 20 seqs
// around them (the highest unconfirmed seq and the 19 below it), one-to-one
// messages with admin_getroammsg over the time span of their MsgKeys, one
// paged read per peer from User's side and one from the peer's side for
// what User's side lacks. Every call goes through the IM client, so through
// the shared limiter at the history APIs' cap. A SenderCheck is not safe
// for concurrent use.
type SenderCheck struct {
	IM   IM
	User string
	Next Sink

	// Concurrency is how many pages or chats are read at once; zero: 16.
	Concurrency int
	// Window is the purge's time range: a message the history shows sent
	// outside it is refused, whatever time the index claimed (a callback's
	// Sign does not cover its MsgTime). Zero: no bound.
	Window Window

	// Confirmed and Refused count the messages handed on, and those the
	// history does not show as User's (sent by someone else, or not there:
	// forged, deleted or expired). Calls counts history calls.
	Confirmed, Refused, Calls int

	groups map[jobs.Target]map[int64]bool
	c2c    map[string]map[string]bool // peer → MsgKeys
	peers  map[string]bool            // the peers of User's chats with a confirmed message

	// What was confirmed, for Replay.
	okGroups map[jobs.Target][]int64
	okC2C    map[jobs.Target][]string
}

// NewSenderCheck returns a check of user's messages in front of next.
func NewSenderCheck(im IM, user string, next Sink) *SenderCheck {
	return &SenderCheck{IM: im, User: user, Next: next, groups: map[jobs.Target]map[int64]bool{}, c2c: map[string]map[string]bool{},
		peers: map[string]bool{}, okGroups: map[jobs.Target][]int64{}, okC2C: map[jobs.Target][]string{}}
}

// Replay hands everything confirmed so far to sink again, without a history
// call: a dry run's confirmed messages become a job's plan.
func (c *SenderCheck) Replay(ctx context.Context, sink Sink) error {
	for _, t := range sortedTargets(c.okGroups) {
		if err := sink.AddGroup(ctx, t, c.okGroups[t]...); err != nil {
			return err
		}
	}
	for _, t := range sortedTargets(c.okC2C) {
		for _, k := range c.okC2C[t] {
			if err := sink.AddC2C(ctx, t, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// AddGroup buffers group seqs until Flush.
func (c *SenderCheck) AddGroup(_ context.Context, t jobs.Target, seqs ...int64) error {
	m := c.groups[t]
	if m == nil {
		m = map[int64]bool{}
		c.groups[t] = m
	}
	for _, s := range seqs {
		m[s] = true
	}
	return nil
}

// AddC2C buffers a one-to-one message until Flush. The target must be a
// chat of User (From = User).
func (c *SenderCheck) AddC2C(_ context.Context, t jobs.Target, key string) error {
	if t.From != c.User {
		c.Refused++
		return nil
	}
	m := c.c2c[t.To]
	if m == nil {
		m = map[string]bool{}
		c.c2c[t.To] = m
	}
	m[key] = true
	return nil
}

// Peers names, sorted, the peers of every chat of User in which it
// confirmed a message: the one-to-one chats a purge by index knows, which
// a verification re-scans. A chat named only by entries the history does
// not back (forged, or of an account that does not exist) is not one.
func (c *SenderCheck) Peers() []string {
	out := make([]string, 0, len(c.peers))
	for p := range c.peers {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Flush confirms everything buffered and hands what the history shows as
// User's to Next as it is confirmed (a slice of pages at a time, so that a
// Batcher queues recalls while later pages are read); the rest is counted
// in Refused. Pages and chats are read Concurrency at a time (the limiter
// still caps the calls).
func (c *SenderCheck) Flush(ctx context.Context) error {
	err := c.confirmGroups(ctx, func(t jobs.Target, ok []int64) error {
		sort.Slice(ok, func(i, j int) bool { return ok[i] < ok[j] })
		c.Confirmed += len(ok)
		c.okGroups[t] = append(c.okGroups[t], ok...)
		return c.Next.AddGroup(ctx, t, ok...)
	})
	if err != nil {
		return err
	}
	okC2C, err := c.confirmC2C(ctx)
	if err != nil {
		return err
	}
	clear(c.groups)
	clear(c.c2c)
	for _, t := range sortedTargets(okC2C) {
		c.peers[t.To] = true
		ok := okC2C[t]
		sort.Strings(ok)
		c.Confirmed += len(ok)
		c.okC2C[t] = append(c.okC2C[t], ok...)
		for _, k := range ok {
			if err := c.Next.AddC2C(ctx, t, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// page is one group_msg_get_simple read: the messages at and below top,
// for the seqs it was read for (top and those less than 20 below it).
type page struct {
	t    jobs.Target
	top  int64
	seqs []int64
	low  int64 // the lowest seq the page covers
	msgs map[int64]tim.GroupMsg
	// refused: IM refused the read for good (tim.TargetRefused).
	refused bool
}

// pagesPerSlice is how many pages are read before what they confirm is
// handed on: about a second at the history cap.
const pagesPerSlice = 200

// confirmGroups reads, in rounds, one page per window of 20 seqs below each
// target's highest unconfirmed seq, and hands what each slice of pages
// confirms to emit (one goroutine: emit need not be safe for concurrent
// use). A seq a short page did not reach waits for the next round; every
// round decides at least each window's top seq.
func (c *SenderCheck) confirmGroups(ctx context.Context, emit func(jobs.Target, []int64) error) error {
	pending := map[jobs.Target][]int64{}
	for t, m := range c.groups {
		seqs := make([]int64, 0, len(m))
		for s := range m {
			seqs = append(seqs, s)
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] > seqs[j] })
		pending[t] = seqs
	}
	for len(pending) > 0 {
		var pages []*page
		for _, t := range sortedTargets(pending) {
			seqs := pending[t]
			for i := 0; i < len(seqs); {
				p := &page{t: t, top: seqs[i]}
				for i < len(seqs) && seqs[i] > p.top-tim.MaxGetSimpleMsgs {
					p.seqs = append(p.seqs, seqs[i])
					i++
				}
				pages = append(pages, p)
			}
		}
		next := map[jobs.Target][]int64{}
		for start := 0; start < len(pages); start += pagesPerSlice {
			slice := pages[start:min(start+pagesPerSlice, len(pages))]
			c.Calls += len(slice)
			err := forEach(ctx, c.concurrency(), len(slice), func(ctx context.Context, i int) error {
				p := slice[i]
				msgs, err := c.groupPage(ctx, p.t, p.top)
				if tim.TargetRefused(err) {
					// No history to read there (no such group or topic, a
					// group type without one): nothing of it is confirmed,
					// and the other targets go on.
					p.refused = true
					return nil
				}
				if err != nil {
					return err
				}
				p.low, p.msgs = p.top, make(map[int64]tim.GroupMsg, len(msgs))
				if len(msgs) == 0 {
					// Nothing at or below top: the window holds nothing.
					p.low = p.top - tim.MaxGetSimpleMsgs + 1
				}
				for _, m := range msgs {
					p.low = min(p.low, m.MsgSeq)
					p.msgs[m.MsgSeq] = m
				}
				return nil
			})
			if err != nil {
				return err
			}
			ok := map[jobs.Target][]int64{}
			for _, p := range slice {
				for _, s := range p.seqs {
					m, found := p.msgs[s]
					switch {
					case p.refused:
						c.Refused++
					case s < p.low:
						next[p.t] = append(next[p.t], s)
					case found && m.FromAccount == c.User && m.IsPlaceMsg != tim.PlaceMsgDeleted && c.Window.contains(m.MsgTimeStamp):
						ok[p.t] = append(ok[p.t], s)
					default:
						c.Refused++
					}
				}
			}
			for _, t := range sortedTargets(ok) {
				if err := emit(t, ok[t]); err != nil {
					return err
				}
			}
		}
		pending = next
	}
	return nil
}

// groupPage reads the (up to) 20 messages at and below seq.
func (c *SenderCheck) groupPage(ctx context.Context, t jobs.Target, seq int64) ([]tim.GroupMsg, error) {
	req := tim.GroupMsgGetSimpleRequest{GroupID: t.GroupID, TopicID: t.TopicID, ReqMsgSeq: seq, ReqMsgNumber: tim.MaxGetSimpleMsgs, WithRecalledMsg: 1}
	for page, err := range c.IM.GroupMsgPages(ctx, req) {
		if err != nil {
			return nil, fmt.Errorf("confirming senders in %s: %w", t, err)
		}
		return page.RspMsgList, nil
	}
	return nil, nil
}

// confirmC2C reads each peer's chat with User over the time span of the
// indexed MsgKeys: one paged read per peer from User's side, and one from
// the peer's side when User's lacks some of them.
func (c *SenderCheck) confirmC2C(ctx context.Context) (map[jobs.Target][]string, error) {
	peers := make([]string, 0, len(c.c2c))
	for p := range c.c2c {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	type result struct {
		ok             []string
		refused, calls int
	}
	results := make([]result, len(peers))
	err := forEach(ctx, c.concurrency(), len(peers), func(ctx context.Context, i int) error {
		r := &results[i]
		want := map[string]bool{}
		var lo, hi int64
		for k := range c.c2c[peers[i]] {
			ts, ok := msgKeyTime(k)
			if !ok {
				r.refused++
				continue
			}
			want[k] = true
			if lo == 0 || ts < lo {
				lo = ts
			}
			hi = max(hi, ts)
		}
		if len(want) == 0 {
			return nil
		}
		// The sender's side first, then the peer's for what it lacks: a
		// sender who cleared their side (or sent without syncing to it)
		// hides messages the peer still has, and a recall reaches them.
		for _, side := range [][2]string{{c.User, peers[i]}, {peers[i], c.User}} {
			if len(want) == 0 {
				break
			}
			req := tim.AdminGetRoamMsgRequest{OperatorAccount: side[0], PeerAccount: side[1], MaxCnt: 100, MinTime: lo, MaxTime: hi}
			for page, err := range c.IM.RoamMsgPages(ctx, req) {
				r.calls++
				if tim.TargetRefused(err) {
					break // no such account (or no readable side): it confirms nothing
				}
				if err != nil {
					return fmt.Errorf("confirming senders in the chat of %s with %s, as %s: %w", c.User, peers[i], side[0], err)
				}
				for _, m := range page.MsgList {
					if !want[m.MsgKey] {
						continue
					}
					if m.FromAccount == c.User && c.Window.contains(m.MsgTimeStamp) {
						r.ok = append(r.ok, m.MsgKey)
					} else {
						r.refused++ // someone else's message, or sent outside the window
					}
					delete(want, m.MsgKey)
				}
			}
		}
		r.refused += len(want)
		return nil
	})
	if err != nil {
		return nil, err
	}
	ok := map[jobs.Target][]string{}
	for i, r := range results {
		c.Refused += r.refused
		c.Calls += r.calls
		if len(r.ok) > 0 {
			ok[jobs.Target{From: c.User, To: peers[i]}] = r.ok
		}
	}
	return ok, nil
}

func (c *SenderCheck) concurrency() int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	return 16
}

// forEach runs fn(i) for i in [0, n) with at most par at once; the first
// error cancels the rest and is returned.
func forEach(ctx context.Context, par, n int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(max(par, 1), max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			i = n
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// msgKeyTime is the MsgTimeStamp of a MsgKey {MsgSeq}_{MsgRandom}_{MsgTimeStamp}.
func msgKeyTime(k string) (int64, bool) {
	i := strings.LastIndexByte(k, '_')
	if i < 0 {
		return 0, false
	}
	ts, err := strconv.ParseInt(k[i+1:], 10, 64)
	if err != nil || ts <= 0 || ts > time.Now().Add(24*time.Hour).Unix() {
		return 0, false
	}
	return ts, true
}
