package producer

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// IM is what discovery needs of the Tencent IM client; *tim.Client has it.
// Every call waits on the shared limiter (the discovery APIs have budgets of
// their own).
type IM interface {
	JoinedGroupPages(ctx context.Context, req tim.GetJoinedGroupListRequest) iter.Seq2[*tim.GetJoinedGroupListResponse, error]
	GetGroupInfo(ctx context.Context, req tim.GetGroupInfoRequest) (*tim.GetGroupInfoResponse, error)
	GetTopic(ctx context.Context, req tim.GetTopicRequest) (*tim.GetTopicResponse, error)
	GroupMsgPages(ctx context.Context, req tim.GroupMsgGetSimpleRequest) iter.Seq2[*tim.GroupMsgGetSimpleResponse, error]
	RoamMsgPages(ctx context.Context, req tim.AdminGetRoamMsgRequest) iter.Seq2[*tim.AdminGetRoamMsgResponse, error]
}

// Sink receives what discovery finds: a Batcher for a real run, a Tally for
// a dry run.
type Sink interface {
	AddGroup(ctx context.Context, t jobs.Target, seqs ...int64) error
	AddC2C(ctx context.Context, t jobs.Target, msgKey string) error
}

// Group types, as Tencent names them.
const (
	TypePublic     = "Public"
	TypePrivate    = "Private"
	TypeWork       = "Work"
	TypeChatRoom   = "ChatRoom"
	TypeMeeting    = "Meeting"
	TypeAVChatRoom = "AVChatRoom"
	TypeCommunity  = "Community"
)

// Recallable reports whether group_msg_recall supports the group type.
func Recallable(groupType string) bool { return groupType != TypeAVChatRoom }

// Window selects messages by time (MsgTimeStamp, inclusive; zero = open).
type Window struct {
	Since, Until time.Time
}

// Validate refuses an inverted range.
func (w Window) Validate() error {
	if !w.Since.IsZero() && !w.Until.IsZero() && w.Until.Before(w.Since) {
		return &FieldError{Field: "until", Reason: w.Until.Format(time.RFC3339) + " is before", Other: "since", OtherValue: w.Since.Format(time.RFC3339)}
	}
	return nil
}

func (w Window) contains(unix int64) bool {
	if !w.Since.IsZero() && unix < w.Since.Unix() {
		return false
	}
	if !w.Until.IsZero() && unix > w.Until.Unix() {
		return false
	}
	return true
}

// GroupFilter selects messages of a group scan.
type GroupFilter struct {
	Window
	SeqFrom, SeqTo int64           // inclusive; 0 = open
	Senders        map[string]bool // nil = every sender
}

// TargetReport is what discovery found in one group, topic or conversation.
type TargetReport struct {
	Target   jobs.Target `json:"target"`
	Type     string      `json:"type,omitempty"`
	Messages int         `json:"messages"`
	Calls    int         `json:"calls"`
	Scanned  int         `json:"scanned"` // messages read from history
	// FirstSeq and LastSeq: the oldest and newest MsgSeq read (groups);
	// FirstTime and LastTime: the oldest and newest MsgTimeStamp read, and
	// Sides the sides read (one-to-one chats).
	FirstSeq  int64    `json:"first_seq,omitempty"`
	LastSeq   int64    `json:"last_seq,omitempty"`
	FirstTime int64    `json:"first_time,omitempty"`
	LastTime  int64    `json:"last_time,omitempty"`
	Sides     []string `json:"sides,omitempty"`
}

// Unsupported is a group that cannot be recalled from, with why.
type Unsupported struct {
	GroupID string `json:"GroupId"`
	Type    string `json:"type,omitempty"`
	Reason  string `json:"reason"`
}

// Report is a discovery's result: per target, totals, and groups skipped
// with their reason (never silently).
type Report struct {
	Targets     []TargetReport `json:"targets"`
	Unsupported []Unsupported  `json:"unsupported,omitempty"`
	// Gaps name what the purge cannot reach (see jobs.Gap): a dry run
	// warns of each, and the job records them in its coverage.
	Gaps         []jobs.Gap `json:"gaps,omitempty"`
	GroupMsgs    int        `json:"group_messages"`
	C2CMsgs      int        `json:"c2c_messages"`
	GroupCalls   int        `json:"group_calls"`
	C2CCalls     int        `json:"c2c_calls"`
	SecondsAtCap float64    `json:"seconds_at_cap"`

	mu sync.Mutex
}

func (r *Report) add(tr TargetReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Targets = append(r.Targets, tr)
	if tr.Target.IsGroup() {
		r.GroupMsgs += tr.Messages
		r.GroupCalls += tr.Calls
	} else {
		r.C2CMsgs += tr.Messages
		r.C2CCalls += tr.Calls
	}
	r.SecondsAtCap = float64(max(r.GroupCalls, r.C2CCalls)) / float64(tim.DefaultRateLimit)
}

func (r *Report) skip(u Unsupported) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Unsupported = append(r.Unsupported, u)
}

func (r *Report) sort() {
	sort.Slice(r.Targets, func(i, j int) bool { return r.Targets[i].Target.String() < r.Targets[j].Target.String() })
	sort.Slice(r.Unsupported, func(i, j int) bool { return r.Unsupported[i].GroupID < r.Unsupported[j].GroupID })
}

// Tally is a Sink that only counts, for dry runs. It removes duplicates as a
// real run would, per target.
type Tally struct {
	mu   sync.Mutex
	seen map[jobs.Target]map[string]bool
}

// AddGroup implements Sink.
func (t *Tally) AddGroup(_ context.Context, tg jobs.Target, seqs ...int64) error {
	for _, s := range seqs {
		t.add(tg, fmt.Sprint(s))
	}
	return nil
}

// AddC2C implements Sink.
func (t *Tally) AddC2C(_ context.Context, tg jobs.Target, key string) error {
	t.add(tg, key)
	return nil
}

func (t *Tally) add(tg jobs.Target, item string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen == nil {
		t.seen = map[jobs.Target]map[string]bool{}
	}
	if t.seen[tg] == nil {
		t.seen[tg] = map[string]bool{}
	}
	t.seen[tg][item] = true
}

// Count returns the distinct messages added.
func (t *Tally) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, m := range t.seen {
		n += len(m)
	}
	return n
}

// Calls returns the recall calls the distinct messages added take: up to
// tim.MaxRecallSeqs seqs of one group (or topic) a call, one call a
// one-to-one message.
func (t *Tally) Calls() (group, c2c int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for tg, m := range t.seen {
		if tg.IsGroup() {
			group += (len(m) + tim.MaxRecallSeqs - 1) / tim.MaxRecallSeqs
		} else {
			c2c += len(m)
		}
	}
	return group, c2c
}

// scanGroup reads a group's (or topic's) history backwards and hands the
// seqs that match f and are not already recalled or deleted to emit, a page
// at a time: recall can start while a long history is still being read. It
// returns how many it handed over and how many messages it read.
func scanGroup(ctx context.Context, im IM, t jobs.Target, f GroupFilter, emit func([]int64) error) (found, scanned int, span [2]int64, err error) {
	err = scanGroupFrom(ctx, im, t, f, 0, func(seqs []int64, n int, _ int64, sp [2]int64) (bool, error) {
		span = widen(span, sp)
		scanned += n
		if len(seqs) == 0 {
			return false, nil
		}
		if err := emit(seqs); err != nil {
			return true, err
		}
		found += len(seqs)
		return false, nil
	})
	return found, scanned, span, err
}

// widen returns the range a (oldest, newest) widened by b; zero is empty.
func widen(a, b [2]int64) [2]int64 {
	switch {
	case b[1] == 0:
		return a
	case a[1] == 0:
		return b
	}
	return [2]int64{min(a[0], b[0]), max(a[1], b[1])}
}

// scanC2C hands the MsgKeys of the messages user sent to peer (not already
// recalled) within w to emit, a page at a time, and returns how many it
// handed over and how many messages it read. It reads the conversation
// from both sides, the sender's and the peer's (a sender who cleared their
// side hides messages the peer still has), and hands each message once.
func scanC2C(ctx context.Context, im IM, user, peer string, w Window, emit func([]string) error) (found, scanned int, span [2]int64, err error) {
	seen := map[string]bool{}
	for _, side := range [][2]string{{user, peer}, {peer, user}} {
		err = scanC2CFrom(ctx, im, side[0], side[1], user, w, 0, "", func(keys []string, n int, _ int64, _ string, _ bool, sp [2]int64) (bool, error) {
			scanned += n
			span = widen(span, sp)
			fresh := keys[:0:0]
			for _, k := range keys {
				if !seen[k] {
					seen[k] = true
					fresh = append(fresh, k)
				}
			}
			if len(fresh) == 0 {
				return false, nil
			}
			if err := emit(fresh); err != nil {
				return true, err
			}
			found += len(fresh)
			return false, nil
		})
		if err != nil {
			return found, scanned, span, err
		}
	}
	return found, scanned, span, nil
}

// expandTopics returns the targets of a group: itself, or for a Community
// with topics, the group (its topic-less messages) and each topic. A
// Community without topics answers get_topic 10004 (invalid parameter),
// one dismissed meanwhile "no such group": the group alone. Any other
// refusal for good (no permission, say) leaves its topics unread and says
// so in rep's topics gap, never as "no topics"; a transient error is the
// error.
//
// get_topic also answers each topic with its own ErrorCode. A topic
// refused for good is left unread and named in rep's topics gap, with the
// code; one IM says no longer exists (10010, 10015) is left out without a
// gap, as a group dismissed meanwhile is: its history went with it, no one
// can read or recall anything there, and no client shows it; a transient
// code (an internal error, a frequency limit) fails the listing with a
// *tim.Error of that code, to be retried as a refusal of the whole call is.
func expandTopics(ctx context.Context, im IM, groupID, groupType, asUser string, rep *Report) ([]jobs.Target, error) {
	targets := []jobs.Target{{GroupID: groupID}}
	if groupType != TypeCommunity {
		return targets, nil
	}
	resp, err := im.GetTopic(ctx, tim.GetTopicRequest{GroupID: groupID, FromAccount: asUser})
	if err != nil {
		var te *tim.Error
		if !errors.As(err, &te) || te.Code == 0 || tim.Classify(te.Code) != tim.ClassPermanent {
			return nil, fmt.Errorf("listing topics of %s: %w", groupID, err)
		}
		if te.Code != codeNoTopics && !tim.IsGone(te.Code) {
			rep.topicsUnread(groupID, nil, te.Code)
		}
		return targets, nil
	}
	refused := map[int][]string{} // code → topics refused with it
	for _, ti := range resp.TopicAndSelfInfo {
		id, code := ti.TopicInfo.TopicID, ti.ErrorCode
		switch {
		case code == 0:
			if id != "" {
				targets = append(targets, jobs.Target{GroupID: groupID, TopicID: id})
			}
		case tim.IsGone(code):
			// Destroyed since it was listed: nothing of it to recall.
		case tim.Classify(code) != tim.ClassPermanent:
			return nil, fmt.Errorf("listing topics of %s: topic %q: %w", groupID, id,
				&tim.Error{API: tim.GetTopic.Name(), Code: code, Info: ti.ErrorInfo})
		default:
			refused[code] = append(refused[code], id)
		}
	}
	for _, code := range slices.Sorted(maps.Keys(refused)) {
		rep.topicsUnread(groupID, refused[code], code)
	}
	return targets, nil
}

// parallel runs fn for each target with at most n at once, feeding results
// to one sink goroutine (sinks are not safe for concurrent use). The first
// error stops the rest.
func parallel(ctx context.Context, n int, targets []jobs.Target, fn func(context.Context, jobs.Target) (func() error, error)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan jobs.Target)
	results := make(chan func() error)
	var wg sync.WaitGroup
	for range max(n, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				emit, err := fn(ctx, t)
				if err != nil {
					cancel(err)
					return
				}
				select {
				case results <- emit:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		defer close(work)
		for _, t := range targets {
			select {
			case work <- t:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	for emit := range results {
		if err := emit(); err != nil {
			cancel(err)
			for range results {
			}
			break
		}
	}
	return context.Cause(ctx)
}

func joinErr(prefix string, items []string) error {
	if len(items) == 0 {
		return nil
	}
	if len(items) > 10 {
		items = append(items[:10:10], fmt.Sprintf("and %d more", len(items)-10))
	}
	return errors.New(prefix + strings.Join(items, ", "))
}

// zonelessLayouts are the absolute times ParseTime reads in the local zone.
var zonelessLayouts = []string{"2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02"}

// PinZone returns s as RFC 3339 in loc when it is an absolute time without
// a zone (a date, or a date and minute), and s unchanged otherwise (RFC
// 3339, an age, empty, or not a time at all: ParseTime says why). A stored
// request pins its bounds where it is written, so that whoever reads it
// later, in whatever zone, reads the same instants.
func PinZone(s string, loc *time.Location) string {
	for _, layout := range zonelessLayouts {
		if t, err := time.ParseInLocation(layout, strings.TrimSpace(s), loc); err == nil {
			return t.Format(time.RFC3339)
		}
	}
	return s
}

// MaxAgeDays is the longest age ParseTime takes in days: the longest it
// takes in hours (time.Duration's 2562047h), about 292 years. Past some
// 10^14 days the date arithmetic wraps around and names another time, even
// one after now.
const MaxAgeDays = 106751

// ParseTime parses a time bound as the CLI and the API accept it: RFC 3339,
// a date, a date and minute (local time), or an age before now (90d, 36h,
// 15m; at most MaxAgeDays days). Empty is the zero time (open); a time
// that is the zero instant (0001-01-01T00:00:00Z) is refused, since a
// Window would take it for no bound.
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range append([]string{time.RFC3339}, zonelessLayouts...) {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			if t.IsZero() {
				return time.Time{}, fmt.Errorf("%q: the zero time, which means no bound; leave it out or give a later time", s)
			}
			return t, nil
		}
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.ParseInt(n, 10, 64); err == nil && days >= 0 {
			if days > MaxAgeDays {
				return time.Time{}, fmt.Errorf("%q: an age of at most %dd (about 292 years)", s, MaxAgeDays)
			}
			return now.AddDate(0, 0, -int(days)), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-11-22T14:00:00+08:00), a date (2026-11-22), a date and time (2026-11-22 14:00) or an age (90d, 2h)", s)
}
