package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// UserPurge asks for every message a user sent: in every group they belong
// to (Community topics included) and in their one-to-one chats with Peers.
type UserPurge struct {
	User  string
	Peers []string
	Window
	// Concurrency is how many histories are read at once (the limiter
	// still caps the calls). Zero: 16.
	Concurrency int
}

// Validate names the first bad field.
func (p UserPurge) Validate() error {
	if strings.TrimSpace(p.User) == "" {
		return &FieldError{Field: "user", Reason: "required"}
	}
	if err := tasks.ValidID(p.User); err != nil {
		return &FieldError{Field: "user", Value: p.User, Reason: err.Error(), Err: err}
	}
	if err := checkIDs("peers", p.Peers); err != nil {
		return err
	}
	return p.Window.Validate()
}

// UserScans lists what a user purge must scan: every group the user belongs
// to (each topic of a Community), and each one-to-one chat with the peers.
// AVChatRoom groups (no history, no recall) are reported as unsupported, not
// silently skipped. An unknown user is an error (a *FieldError wrapping
// ErrUnknownUser).
func UserScans(ctx context.Context, im IM, p UserPurge) ([]Scan, *Report, error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	rep := &Report{}
	var scans []Scan
	filter := GroupFilter{Window: p.Window, Senders: map[string]bool{p.User: true}}
	groups, err := joinedGroups(ctx, im, p.User)
	if err != nil {
		return nil, nil, err
	}
	for _, g := range groups {
		if !Recallable(g.Type) {
			rep.skip(Unsupported{GroupID: g.GroupID, Type: g.Type, Reason: "group_msg_recall does not support " + g.Type + " (10033); it keeps no history"})
			continue
		}
		ts, err := expandTopics(ctx, im, g.GroupID, g.Type, p.User, rep)
		if err != nil {
			return nil, nil, err
		}
		for _, t := range ts {
			scans = append(scans, Scan{Target: t, Type: g.Type, Filter: filter})
		}
	}
	scans = append(scans, PeerScans(p)...)
	userGaps(rep, p)
	return scans, rep, nil
}

// joinedGroupsPage is how many groups one get_joined_group_list call asks for.
const joinedGroupsPage = 1000

// maxGroupListPasses bounds how often joinedGroups reads a list of more than
// one page that keeps changing.
const maxGroupListPasses = 5

// joinedGroups lists the groups user is in, each once. get_joined_group_list
// pages by offset: a group the user leaves (or is kicked out of) while its
// pages are read moves every later group up one place, and the group that
// crosses a page's end is in neither page. A list of more than one page is
// therefore read again until a whole pass finds no group the earlier ones
// missed. A group moves to an earlier place only when one before it goes,
// so it crosses each page's start once: it is missed by at most as many
// passes as the list has pages less one. A list that still grows after
// maxGroupListPasses passes is an error (ErrGroupListUnsettled).
func joinedGroups(ctx context.Context, im IM, user string) ([]tim.JoinedGroup, error) {
	var groups []tim.JoinedGroup
	seen := map[string]bool{}
	for pass := 1; ; pass++ {
		paged, added := false, 0
		for page, err := range im.JoinedGroupPages(ctx, tim.GetJoinedGroupListRequest{
			MemberAccount: user, Limit: joinedGroupsPage, WithHugeGroups: 1, WithNoActiveGroups: 1,
			ResponseFilter: &tim.ResponseFilter{GroupBaseInfoFilter: []string{"Type", "NextMsgSeq"}},
		}) {
			if err != nil {
				var te *tim.Error
				if errors.As(err, &te) && (te.Code == 70107 || te.Code == 10004) {
					return nil, &FieldError{Field: "user", Reason: fmt.Sprintf("%q: unknown user (%d %s)", user, te.Code, te.Info), Err: ErrUnknownUser}
				}
				return nil, fmt.Errorf("listing the groups of %s: %w", user, err)
			}
			paged = paged || page.TotalCount > joinedGroupsPage
			for _, g := range page.GroupIDList {
				if !seen[g.GroupID] {
					seen[g.GroupID] = true
					groups = append(groups, g)
					added++
				}
			}
		}
		switch {
		case !paged || (pass > 1 && added == 0):
			return groups, nil
		case pass == maxGroupListPasses:
			return nil, fmt.Errorf("listing the groups of %s: %w after %d passes", user, ErrGroupListUnsettled, pass)
		}
	}
}

// ErrGroupListUnsettled is wrapped by UserScans's error when every one of
// maxGroupListPasses readings of the user's groups found a group the
// earlier ones had not: some group may be missing from the list.
var ErrGroupListUnsettled = errors.New("the list of groups kept changing while it was read")

// ErrUnknownUser is wrapped by UserScans's error for a user IM does not know
// (never imported, or deleted).
var ErrUnknownUser = errors.New("unknown user")

// PeerScans lists the one-to-one chats of a user purge: the user's with each
// peer, once however often the peer is named.
func PeerScans(p UserPurge) []Scan {
	peers := Distinct(p.Peers)
	scans := make([]Scan, 0, len(peers))
	for _, peer := range peers {
		scans = append(scans, Scan{Target: jobs.Target{From: p.User, To: peer}, Filter: GroupFilter{Window: p.Window}})
	}
	return scans
}

// PlanUserPurge discovers the user's messages in this process and hands
// them to sink (a Tally for a dry run).
func PlanUserPurge(ctx context.Context, im IM, p UserPurge, sink Sink) (*Report, error) {
	scans, rep, err := UserScans(ctx, im, p)
	if err != nil {
		return nil, err
	}
	return rep, RunScans(ctx, im, scans, concurrency(p.Concurrency), sink, rep)
}

// GroupPurge asks for the messages of some groups in a time or seq range,
// optionally only from some senders: an incident cleanup.
type GroupPurge struct {
	Groups  []string
	Topic   string // only this topic (one Community group)
	Senders []string
	GroupFilter
	Concurrency int
}

// Validate names the first bad field.
func (p GroupPurge) Validate() error {
	if len(p.Groups) == 0 {
		return &FieldError{Field: "groups", Reason: "at least one required"}
	}
	if err := checkIDs("groups", p.Groups); err != nil {
		return err
	}
	if err := checkIDs("senders", p.Senders); err != nil {
		return err
	}
	if err := tasks.ValidID(p.Topic); err != nil {
		return &FieldError{Field: "topic", Value: p.Topic, Reason: err.Error(), Err: err}
	}
	if p.Topic != "" && len(Distinct(p.Groups)) != 1 {
		return &FieldError{Field: "topic", Reason: "only with exactly one group"}
	}
	if p.SeqFrom < 0 || p.SeqTo < 0 {
		return &FieldError{Field: "seq_from", Reason: fmt.Sprintf("seq range %d..%d must not be negative", p.SeqFrom, p.SeqTo)}
	}
	if p.SeqTo > 0 && p.SeqFrom > p.SeqTo {
		return &FieldError{Field: "seq_from", Reason: fmt.Sprintf("%d is after", p.SeqFrom), Other: "seq_to", OtherValue: fmt.Sprint(p.SeqTo)}
	}
	if (p.SeqFrom > 0 || p.SeqTo > 0) && (!p.Since.IsZero() || !p.Until.IsZero()) {
		return &FieldError{Field: "seq_from", Reason: "give a time range (since/until) or a seq range (seq_from/seq_to), not both"}
	}
	return p.Window.Validate()
}

// Distinct is ids without repeats, in their first order (a new slice).
func Distinct(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// checkIDs names the first empty or bad ID of a list field.
func checkIDs(field string, ids []string) error {
	for i, id := range ids {
		if strings.TrimSpace(id) == "" {
			return &FieldError{Field: field, Reason: fmt.Sprintf("element %d is empty", i+1)}
		}
		if err := tasks.ValidID(id); err != nil {
			return &FieldError{Field: field, Value: id, Reason: fmt.Sprintf("element %d %v", i+1, err), Err: err}
		}
	}
	return nil
}

// GroupScans checks every group first (unknown groups and group types that
// cannot recall are errors before anything is planned) and lists what must be
// scanned.
func GroupScans(ctx context.Context, im IM, p GroupPurge) ([]Scan, *Report, error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	// A group named twice is scanned once (and named once in an error).
	p.Groups = Distinct(p.Groups)
	types, err := groupTypes(ctx, im, p.Groups)
	if err != nil {
		return nil, nil, err
	}
	f := p.GroupFilter
	if len(p.Senders) > 0 {
		f.Senders = map[string]bool{}
		for _, s := range p.Senders {
			f.Senders[s] = true
		}
	}
	var scans []Scan
	rep := &Report{}
	for _, g := range p.Groups {
		if p.Topic != "" {
			scans = append(scans, Scan{Target: jobs.Target{GroupID: g, TopicID: p.Topic}, Type: types[g], Filter: f})
			continue
		}
		ts, err := expandTopics(ctx, im, g, types[g], "", rep)
		if err != nil {
			return nil, nil, err
		}
		for _, t := range ts {
			scans = append(scans, Scan{Target: t, Type: types[g], Filter: f})
		}
	}
	RoamingGap(rep, p.Window, time.Now())
	return scans, rep, nil
}

// PlanGroupPurge discovers in this process and hands the matches to sink.
func PlanGroupPurge(ctx context.Context, im IM, p GroupPurge, sink Sink) (*Report, error) {
	scans, rep, err := GroupScans(ctx, im, p)
	if err != nil {
		return nil, err
	}
	return rep, RunScans(ctx, im, scans, concurrency(p.Concurrency), sink, rep)
}

// UnknownGroupsError is wrapped by GroupScans's error for groups IM does not
// know (never created, or dismissed).
type UnknownGroupsError struct{ Groups []string }

func (e *UnknownGroupsError) Error() string { return "unknown groups: " + strings.Join(e.Groups, ", ") }

// groupTypes asks get_group_info (≤ 50 a call) for every group's type and
// refuses unknown groups and types that cannot be recalled, naming them all.
func groupTypes(ctx context.Context, im IM, groups []string) (map[string]string, error) {
	types := map[string]string{}
	var unknown, unsupported, unknownIDs []string
	for i := 0; i < len(groups); i += tim.MaxGroupInfoIDs {
		batch := groups[i:min(i+tim.MaxGroupInfoIDs, len(groups))]
		resp, err := im.GetGroupInfo(ctx, tim.GetGroupInfoRequest{
			GroupIDList:    batch,
			ResponseFilter: &tim.ResponseFilter{GroupBaseInfoFilter: []string{"Type", "NextMsgSeq"}},
		})
		if err != nil {
			return nil, fmt.Errorf("reading group info: %w", err)
		}
		for _, gi := range resp.GroupInfo {
			switch {
			case gi.ErrorCode != 0:
				unknown = append(unknown, fmt.Sprintf("%s (%d %s)", gi.GroupID, gi.ErrorCode, tim.Describe(gi.ErrorCode)))
				unknownIDs = append(unknownIDs, gi.GroupID)
			case !Recallable(gi.Type):
				unsupported = append(unsupported, gi.GroupID+" ("+gi.Type+")")
			default:
				types[gi.GroupID] = gi.Type
			}
		}
	}
	if err := joinErr("unknown groups: ", unknown); err != nil {
		return nil, &FieldError{Field: "groups", Reason: err.Error(), Err: &UnknownGroupsError{Groups: unknownIDs}}
	}
	if err := joinErr("group types that cannot recall messages: ", unsupported); err != nil {
		return nil, &FieldError{Field: "groups", Reason: err.Error()}
	}
	for _, g := range groups {
		if _, ok := types[g]; !ok {
			return nil, &FieldError{Field: "groups", Reason: g + ": get_group_info did not answer for it"}
		}
	}
	return types, nil
}

func concurrency(n int) int {
	if n <= 0 {
		return 16
	}
	return n
}
