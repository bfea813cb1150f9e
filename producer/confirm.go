package producer

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// SenderCheck is a Sink that confirms, from the history, that each message
// handed to it was sent by User before it hands it on to Next. The callback
// index records what callbacks claimed, and Tencent's Sign does not cover a
// callback's body: a forged entry may name another user's message. A purge
// by index therefore recalls only what the history shows User sent.
//
// It buffers what it is given; Flush confirms and hands on. Group messages
// are confirmed with one group_msg_get_simple call per page of 20 seqs
// around them (the highest unconfirmed seq and the 19 below it), one-to-one
// messages with admin_getroammsg over the time span of their MsgKeys, one
// paged read per peer. Every call goes through the IM client, so through
// the shared limiter at the history APIs' cap. A SenderCheck is not safe
// for concurrent use.
type SenderCheck struct {
	IM   IM
	User string
	Next Sink

	// Confirmed and Refused count the messages handed on, and those the
	// history does not show as User's (sent by someone else, or not there:
	// forged, deleted or expired). Calls counts history calls.
	Confirmed, Refused, Calls int

	groups map[jobs.Target]map[int64]bool
	c2c    map[string]map[string]bool // peer → MsgKeys

	// What was confirmed, for Replay.
	okGroups map[jobs.Target][]int64
	okC2C    map[jobs.Target][]string
}

// NewSenderCheck returns a check of user's messages in front of next.
func NewSenderCheck(im IM, user string, next Sink) *SenderCheck {
	return &SenderCheck{IM: im, User: user, Next: next, groups: map[jobs.Target]map[int64]bool{}, c2c: map[string]map[string]bool{},
		okGroups: map[jobs.Target][]int64{}, okC2C: map[jobs.Target][]string{}}
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

// Flush confirms everything buffered and hands what the history shows as
// User's to Next; the rest is counted in Refused.
func (c *SenderCheck) Flush(ctx context.Context) error {
	targets := make([]jobs.Target, 0, len(c.groups))
	for t := range c.groups {
		targets = append(targets, t)
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].String() < targets[j].String() })
	for _, t := range targets {
		if err := c.flushGroup(ctx, t); err != nil {
			return err
		}
		delete(c.groups, t)
	}
	peers := make([]string, 0, len(c.c2c))
	for p := range c.c2c {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, p := range peers {
		if err := c.flushC2C(ctx, p); err != nil {
			return err
		}
		delete(c.c2c, p)
	}
	return nil
}

func (c *SenderCheck) flushGroup(ctx context.Context, t jobs.Target) error {
	seqs := make([]int64, 0, len(c.groups[t]))
	for s := range c.groups[t] {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] > seqs[j] })
	var ok []int64
	for len(seqs) > 0 {
		top := seqs[0]
		page, err := c.groupPage(ctx, t, top)
		if err != nil {
			return err
		}
		low := top
		for _, m := range page {
			low = min(low, m.MsgSeq)
		}
		bySeq := make(map[int64]tim.GroupMsg, len(page))
		for _, m := range page {
			bySeq[m.MsgSeq] = m
		}
		for len(seqs) > 0 && seqs[0] >= low {
			m, found := bySeq[seqs[0]]
			if found && m.FromAccount == c.User && m.IsPlaceMsg != tim.PlaceMsgDeleted {
				ok = append(ok, seqs[0])
			} else {
				c.Refused++
			}
			seqs = seqs[1:]
		}
	}
	if len(ok) == 0 {
		return nil
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i] < ok[j] })
	c.Confirmed += len(ok)
	c.okGroups[t] = append(c.okGroups[t], ok...)
	return c.Next.AddGroup(ctx, t, ok...)
}

// groupPage reads the (up to) 20 messages at and below seq.
func (c *SenderCheck) groupPage(ctx context.Context, t jobs.Target, seq int64) ([]tim.GroupMsg, error) {
	c.Calls++
	req := tim.GroupMsgGetSimpleRequest{GroupID: t.GroupID, TopicID: t.TopicID, ReqMsgSeq: seq, ReqMsgNumber: tim.MaxGetSimpleMsgs, WithRecalledMsg: 1}
	for page, err := range c.IM.GroupMsgPages(ctx, req) {
		if err != nil {
			return nil, fmt.Errorf("confirming senders in %s: %w", t, err)
		}
		return page.RspMsgList, nil
	}
	return nil, nil
}

func (c *SenderCheck) flushC2C(ctx context.Context, peer string) error {
	want := c.c2c[peer]
	var lo, hi int64
	for k := range want {
		ts, ok := msgKeyTime(k)
		if !ok {
			c.Refused++
			delete(want, k)
			continue
		}
		if lo == 0 || ts < lo {
			lo = ts
		}
		hi = max(hi, ts)
	}
	if len(want) == 0 {
		return nil
	}
	var ok []string
	req := tim.AdminGetRoamMsgRequest{OperatorAccount: c.User, PeerAccount: peer, MaxCnt: 100, MinTime: lo, MaxTime: hi}
	for page, err := range c.IM.RoamMsgPages(ctx, req) {
		c.Calls++
		if err != nil {
			return fmt.Errorf("confirming senders in the chat of %s with %s: %w", c.User, peer, err)
		}
		for _, m := range page.MsgList {
			if want[m.MsgKey] && m.FromAccount == c.User {
				ok = append(ok, m.MsgKey)
				delete(want, m.MsgKey)
			}
		}
	}
	c.Refused += len(want)
	sort.Strings(ok)
	t := jobs.Target{From: c.User, To: peer}
	for _, k := range ok {
		if err := c.Next.AddC2C(ctx, t, k); err != nil {
			return err
		}
	}
	c.Confirmed += len(ok)
	c.okC2C[t] = append(c.okC2C[t], ok...)
	return nil
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
