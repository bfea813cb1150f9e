package msgindex

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// History reads the histories the confirmer checks entries against (a
// *tim.Client has these methods; give it the shared limiter's gate).
type History interface {
	GroupMsgPages(ctx context.Context, req tim.GroupMsgGetSimpleRequest) iter.Seq2[*tim.GroupMsgGetSimpleResponse, error]
	RoamMsgPages(ctx context.Context, req tim.AdminGetRoamMsgRequest) iter.Seq2[*tim.AdminGetRoamMsgResponse, error]
}

// Results of the confirmer, the label of imrecall_index_confirmations_total.
const (
	ConfirmConfirmed = "confirmed" // moved into the index proper
	ConfirmForged    = "forged"    // the history shows another sender or message there: dropped
	ConfirmGone      = "gone"      // the claimed sender's message, already recalled or deleted: dropped
	ConfirmMissing   = "missing"   // not in the history after the grace period: dropped
)

// NewConfirmCounter returns the imrecall_index_confirmations_total counter.
func NewConfirmCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imrecall_index_confirmations_total",
		Help: "Callback index entries checked against the history, by result (confirmed, forged, gone, missing).",
	}, []string{"result"})
}

// Confirmer moves callback entries from unconfirmed into the index proper
// once the history shows them, and drops those the history contradicts.
// Tencent's Sign covers only the callback token and RequestTime, so a
// signed URL seen once accepts any body for its validity window: an entry
// is only a claim until the history backs it.
//
// Group entries are checked with one group_msg_get_simple (WithRecalledMsg
// 1) per window of 20 seqs, shared by every sender of a pass; one-to-one
// entries with admin_getroammsg over the time span of each conversation's
// entries. Calls are paced at Rate on top of the shared limiter, so the
// confirmer takes a bounded share of the history APIs' cap.
//
// Decisions: the claimed sender's message, live → confirmed; another
// sender's message at that seq (or MsgKey) → forged; the claimed sender's
// message already recalled or deleted → gone (nothing is left to recall,
// so it is dropped rather than confirmed); not in the history → kept
// unconfirmed for Grace (a page may lag a send), then dropped as missing;
// so is an entry naming a group or an account that does not exist.
type Confirmer struct {
	// Index holds the entries. Required.
	Index *Index
	// IM reads the histories. Required.
	IM History
	// SDKAppID is the app. Required.
	SDKAppID int64
	// Rate is history calls per second; zero or less does not pace (the
	// IM client's limiter still caps).
	Rate float64
	// Senders is how many senders a pass takes; zero: 100.
	Senders int
	// Grace is how long an entry the history does not show stays
	// unconfirmed before it is dropped; zero: 10 minutes.
	Grace time.Duration
	// Retry is when a sender whose entries were kept (or whose pass
	// failed) is due again; zero: a minute.
	Retry time.Duration
	// Counter, if set, counts decisions by result.
	Counter *prometheus.CounterVec
	// Log; nil discards.
	Log *slog.Logger

	pace *rate.Limiter
}

// ConfirmStats is what one pass did.
type ConfirmStats struct {
	Senders                          int
	Confirmed, Forged, Gone, Missing int
	Kept                             int // left unconfirmed for a later pass
	Calls                            int
}

// maxPerSender bounds the entries of one sender a pass reads; the rest
// wait for the next pass.
const maxPerSender = 10000

// pendingEntry is an unconfirmed entry as stored.
type pendingEntry struct {
	e      Entry
	member string
	score  float64
}

// Run confirms a pass of senders every interval until ctx ends; a pass that
// took a full batch is followed at once by the next.
func (c *Confirmer) Run(ctx context.Context, every time.Duration) {
	for {
		st, err := c.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			c.log().Warn("confirming index entries", "err", err)
		}
		if err == nil && st.Senders >= c.batch() {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func (c *Confirmer) batch() int {
	if c.Senders > 0 {
		return c.Senders
	}
	return 100
}

func (c *Confirmer) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

func (c *Confirmer) wait(ctx context.Context) error {
	if c.Rate <= 0 {
		return nil
	}
	if c.pace == nil {
		c.pace = rate.NewLimiter(rate.Limit(c.Rate), 1)
	}
	return c.pace.Wait(ctx)
}

// Senders with unconfirmed entries wait in a sorted set scored by when they
// are due (unix ms). Index.Add makes a sender due now. A pass claims due
// senders by setting their score to a lease's end (one script, so two
// confirmers never claim the same sender); when it is done it removes a
// sender whose score is still its lease, or makes it due again later if
// entries were kept. A sender with a new entry meanwhile was made due by Add
// and stays; a pass that dies leaves its senders due when the lease ends.
var (
	claimScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, u in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], u) end
return due`)
	releaseScript = redis.NewScript(`
for i = 3, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[1]) then
    if ARGV[i+1] == '1' then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i]) else redis.call('ZREM', KEYS[1], ARGV[i]) end
  end
end
return 0`)
)

// claimLease is how long a pass holds its senders.
const claimLease = 15 * time.Minute

// RunOnce claims a batch of due senders and decides their unconfirmed
// entries. A Confirmer is not safe for concurrent use; confirmers of several
// processes share the work (a sender is claimed by one at a time).
func (c *Confirmer) RunOnce(ctx context.Context) (ConfirmStats, error) {
	var st ConfirmStats
	x, app := c.Index, c.SDKAppID
	now := x.now()
	lease := now.Add(claimLease).UnixMilli()
	users, err := claimScript.Run(ctx, x.rdb, []string{x.pendingKey(app)}, now.UnixMilli(), lease, c.batch()).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return st, fmt.Errorf("claiming the senders to confirm: %w", err)
	}
	st.Senders = len(users)
	if len(users) == 0 {
		return st, nil
	}
	keep := map[string]bool{}
	release := func() {
		retry := c.Retry
		if retry <= 0 {
			retry = time.Minute
		}
		args := []any{lease, x.now().Add(retry).UnixMilli()}
		for _, u := range users {
			k := "0"
			if keep[u] {
				k = "1"
			}
			args = append(args, u, k)
		}
		if err := releaseScript.Run(context.WithoutCancel(ctx), x.rdb, []string{x.pendingKey(app)}, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
			c.log().Warn("releasing the senders of a confirmer pass (they are due again when the lease ends)", "err", err)
		}
	}
	fail := func(err error) (ConfirmStats, error) {
		for _, u := range users {
			keep[u] = true
		}
		release()
		return st, err
	}
	var entries []pendingEntry
	for _, u := range users {
		for _, kind := range []string{kindGroupUnconf, kindC2CUnconf} {
			zs, err := x.rdb.ZRangeWithScores(ctx, x.userKey(app, u, kind), 0, maxPerSender-1).Result()
			if err != nil {
				return fail(fmt.Errorf("reading the unconfirmed entries of %s: %w", u, err))
			}
			if len(zs) == maxPerSender {
				keep[u] = true
			}
			for _, z := range zs {
				m := z.Member.(string)
				e, err := parseMember(kind, m)
				if err != nil {
					continue
				}
				e.From, e.Time, e.Unconfirmed = u, time.Unix(int64(z.Score), 0), true
				entries = append(entries, pendingEntry{e: e, member: m, score: z.Score})
			}
		}
	}
	decided := make([]decision, len(entries)) // per entry; a zero result keeps it
	if err := c.confirmGroups(ctx, entries, decided, &st); err != nil {
		return fail(err)
	}
	if err := c.confirmC2C(ctx, entries, decided, &st); err != nil {
		return fail(err)
	}
	grace := c.Grace
	if grace <= 0 {
		grace = 10 * time.Minute
	}
	now = x.now()
	pipe := x.rdb.TxPipeline()
	touched := map[string]bool{}
	type removal struct {
		res string
		cmd *redis.IntCmd
		e   Entry
	}
	var removed []removal
	for i, p := range entries {
		res := decided[i].res
		if res == ConfirmMissing && now.Sub(p.e.Time) < grace {
			res = ""
		}
		if res == "" {
			st.Kept++
			keep[p.e.From] = true
			continue
		}
		if res == ConfirmConfirmed {
			// At the time the history gives, not the one the callback
			// claimed (Sign does not cover MsgTime).
			score := p.score
			if decided[i].at > 0 {
				score = float64(decided[i].at)
			}
			key := x.userKey(app, p.e.From, confirmedKind(p.e))
			pipe.ZAdd(ctx, key, redis.Z{Score: score, Member: p.member})
			touched[key] = true
		}
		removed = append(removed, removal{res, pipe.ZRem(ctx, x.userKey(app, p.e.From, pendingKind(p.e)), p.member), p.e})
	}
	x.trim(ctx, pipe, touched, now)
	if _, err := pipe.Exec(ctx); err != nil {
		return fail(fmt.Errorf("recording confirmed index entries: %w", err))
	}
	// Count what this pass moved: an entry another pass moved first (a
	// sender made due again mid-pass) is not counted twice.
	counts := map[string]int64{}
	for _, r := range removed {
		if r.cmd.Val() == 0 {
			continue
		}
		counts[r.res]++
		if r.res == ConfirmForged {
			c.log().Warn("dropped a forged index entry: the history shows another message there",
				"from", r.e.From, "group", r.e.GroupID, "seq", r.e.MsgSeq, "to", r.e.To)
		}
	}
	if len(counts) > 0 {
		cp := x.rdb.Pipeline()
		for res, n := range counts {
			cp.HIncrBy(ctx, x.metaKey(app), res, n)
		}
		if _, err := cp.Exec(ctx); err != nil {
			c.log().Warn("counting confirmed index entries", "err", err)
		}
	}
	release()
	st.Confirmed, st.Forged, st.Gone, st.Missing = int(counts[ConfirmConfirmed]), int(counts[ConfirmForged]), int(counts[ConfirmGone]), int(counts[ConfirmMissing])
	if c.Counter != nil {
		for res, n := range counts {
			c.Counter.WithLabelValues(res).Add(float64(n))
		}
	}
	return st, nil
}

// decision is what the history says of an entry: the result ("" keeps it
// unconfirmed) and the message's time in the history (unix seconds; 0 if
// not known).
type decision struct {
	res string
	at  int64
}

// confirmGroups decides the group entries: per target, a page of 20 seqs at
// the highest undecided seq, until every seq is decided.
func (c *Confirmer) confirmGroups(ctx context.Context, entries []pendingEntry, decided []decision, st *ConfirmStats) error {
	bySeq := map[jobs.Target]map[int64][]int{}
	for i, p := range entries {
		if !p.e.IsGroup() {
			continue
		}
		t := jobs.Target{GroupID: p.e.GroupID, TopicID: p.e.TopicID}
		if bySeq[t] == nil {
			bySeq[t] = map[int64][]int{}
		}
		bySeq[t][p.e.MsgSeq] = append(bySeq[t][p.e.MsgSeq], i)
	}
	targets := make([]jobs.Target, 0, len(bySeq))
	for t := range bySeq {
		targets = append(targets, t)
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].String() < targets[j].String() })
	for _, t := range targets {
		seqs := make([]int64, 0, len(bySeq[t]))
		for s := range bySeq[t] {
			seqs = append(seqs, s)
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] > seqs[j] })
		for len(seqs) > 0 {
			top := seqs[0]
			if err := c.wait(ctx); err != nil {
				return err
			}
			st.Calls++
			msgs, err := groupPage(ctx, c.IM, t, top)
			if tim.IsGone(tim.CodeOf(err)) {
				// No such group: nothing of it can be recalled (an entry
				// naming a made-up group must not stall the confirmer).
				for _, s := range seqs {
					for _, i := range bySeq[t][s] {
						decided[i] = decision{res: ConfirmMissing}
					}
				}
				break
			}
			if tim.TargetRefused(err) {
				// No readable history there (no such topic, a group type
				// without one): its entries stay unconfirmed, and the other
				// targets go on. A purge confirms (and refuses) them itself.
				c.log().Warn("index entries name a history IM refuses to read; they stay unconfirmed", "group", t.GroupID, "topic", t.TopicID, "err", err)
				break
			}
			if err != nil {
				return err
			}
			// The page decides the seqs down to the lowest it holds (all of
			// its window if it is empty); a page cut short leaves the seqs
			// below it for the next read.
			low := top
			if len(msgs) == 0 {
				low = top - tim.MaxGetSimpleMsgs + 1
			}
			page := make(map[int64]tim.GroupMsg, len(msgs))
			for _, m := range msgs {
				low = min(low, m.MsgSeq)
				page[m.MsgSeq] = m
			}
			var rest []int64
			for _, s := range seqs {
				if s < low {
					rest = append(rest, s)
					continue
				}
				m, found := page[s]
				for _, i := range bySeq[t][s] {
					decided[i] = decision{decideGroup(entries[i].e, m, found), m.MsgTimeStamp}
				}
			}
			seqs = rest
		}
	}
	return nil
}

func decideGroup(e Entry, m tim.GroupMsg, found bool) string {
	switch {
	case !found:
		return ConfirmMissing
	case m.FromAccount != "" && m.FromAccount != e.From:
		return ConfirmForged
	case m.IsPlaceMsg != tim.PlaceMsgNormal:
		return ConfirmGone
	case m.FromAccount == e.From:
		return ConfirmConfirmed
	}
	return ConfirmMissing
}

// groupPage reads the (up to) 20 messages at and below seq, recalled ones
// included.
func groupPage(ctx context.Context, im History, t jobs.Target, seq int64) ([]tim.GroupMsg, error) {
	req := tim.GroupMsgGetSimpleRequest{GroupID: t.GroupID, TopicID: t.TopicID, ReqMsgSeq: seq, ReqMsgNumber: tim.MaxGetSimpleMsgs, WithRecalledMsg: 1}
	for page, err := range im.GroupMsgPages(ctx, req) {
		if err != nil {
			return nil, fmt.Errorf("confirming index entries in %s: %w", t, err)
		}
		return page.RspMsgList, nil
	}
	return nil, nil
}

// confirmC2C decides the one-to-one entries: per conversation, one paged
// admin_getroammsg over the time span of its entries.
func (c *Confirmer) confirmC2C(ctx context.Context, entries []pendingEntry, decided []decision, st *ConfirmStats) error {
	type chat struct{ from, to string }
	byChat := map[chat][]int{}
	for i, p := range entries {
		if !p.e.IsGroup() {
			k := chat{p.e.From, p.e.To}
			byChat[k] = append(byChat[k], i)
		}
	}
	chats := make([]chat, 0, len(byChat))
	for k := range byChat {
		chats = append(chats, k)
	}
	sort.Slice(chats, func(i, j int) bool { return chats[i].from+sep+chats[i].to < chats[j].from+sep+chats[j].to })
	for _, k := range chats {
		idx := byChat[k]
		var lo, hi int64
		for _, i := range idx {
			for _, ts := range []int64{entries[i].e.Time.Unix(), keyTime(entries[i].e.MsgKey)} {
				if ts <= 0 {
					continue
				}
				if lo == 0 || ts < lo {
					lo = ts
				}
				hi = max(hi, ts)
			}
		}
		// The sender's side first, then the peer's for what it lacks: a
		// sender who cleared their side (or sent without syncing to it)
		// hides messages the peer still has, and a recall reaches them.
		found := map[string]tim.C2CMsg{}
		unreadable := false // IM refused a side for another reason than no such account
		for _, side := range [][2]string{{k.from, k.to}, {k.to, k.from}} {
			if unreadable || !lacks(found, entries, idx) {
				break
			}
			req := tim.AdminGetRoamMsgRequest{OperatorAccount: side[0], PeerAccount: side[1], MaxCnt: 100, MinTime: lo, MaxTime: hi}
			if err := c.wait(ctx); err != nil {
				return err
			}
			for page, err := range c.IM.RoamMsgPages(ctx, req) {
				st.Calls++
				if tim.IsGone(tim.CodeOf(err)) {
					break // no such account: its side holds nothing
				}
				if tim.TargetRefused(err) {
					// Its entries stay unconfirmed; the other chats go on.
					unreadable = true
					c.log().Warn("index entries name a chat IM refuses to read; they stay unconfirmed", "from", k.from, "to", k.to, "err", err)
					break
				}
				if err != nil {
					return fmt.Errorf("confirming index entries in the chat of %s with %s, as %s: %w", k.from, k.to, side[0], err)
				}
				for _, m := range page.MsgList {
					found[m.MsgKey] = m
				}
				if err := c.wait(ctx); err != nil {
					return err
				}
			}
		}
		for _, i := range idx {
			if unreadable {
				continue // kept
			}
			m, ok := found[entries[i].e.MsgKey]
			decided[i].at = m.MsgTimeStamp
			switch {
			case !ok:
				decided[i].res = ConfirmMissing
			case m.FromAccount != k.from:
				decided[i].res = ConfirmForged
			case m.Recalled():
				decided[i].res = ConfirmGone
			default:
				decided[i].res = ConfirmConfirmed
			}
		}
	}
	return nil
}

// lacks reports whether found lacks one of the entries at idx.
func lacks(found map[string]tim.C2CMsg, entries []pendingEntry, idx []int) bool {
	for _, i := range idx {
		if _, ok := found[entries[i].e.MsgKey]; !ok {
			return true
		}
	}
	return false
}

// keyTime is the MsgTimeStamp of a MsgKey {MsgSeq}_{MsgRandom}_{MsgTimeStamp}.
func keyTime(k string) int64 {
	i := strings.LastIndexByte(k, '_')
	if i < 0 {
		return 0
	}
	ts, _ := strconv.ParseInt(k[i+1:], 10, 64)
	return ts
}
