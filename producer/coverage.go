package producer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// The sides of a one-to-one chat that discovery reads.
const (
	SideSender = "sender" // Operator_Account = the user
	SidePeer   = "peer"   // Operator_Account = the peer
)

// RoamingPeriod is how long Tencent keeps one-to-one history by default
// (7 days; longer with a paid plan): older messages cannot be read or
// recalled by anyone.
const RoamingPeriod = 7 * 24 * time.Hour

// Sources of messages, as a job's coverage names them.
const (
	SourceNameGroups = "group histories (group_msg_get_simple), the groups listed at the start"
	SourceNameC2C    = "one-to-one histories (admin_getroammsg) of the given peers, from both sides"
	SourceNameIndex  = "the callback index kept by imrecall serve, each sender confirmed by the history"
)

func (r *Report) gap(g jobs.Gap) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Gaps = append(r.Gaps, g)
}

// AddGap records a gap in the report: something the purge cannot reach.
func (r *Report) AddGap(g jobs.Gap) { r.gap(g) }

// codeNoTopics is what get_topic answers for a Community without topics
// (10004, invalid parameter: the API "applies only to topic-enabled
// communities").
const codeNoTopics = 10004

// topicsUnread adds to the report's topics gap the topics of group that IM
// refused, with code, to list (topics nil: get_topic refused the call, none
// of them is read) or to describe (get_topic answered code on each of
// topics' entries). A topic refused without its TopicId is named "(no
// TopicId)".
func (r *Report) topicsUnread(group string, topics []string, code int) {
	var named []string
	for _, t := range topics {
		if t == "" {
			t = "(no TopicId)"
		}
		named = append(named, t)
	}
	what := fmt.Sprintf("%s: %d (%s)", group, code, tim.Describe(code))
	if len(named) > 0 {
		what = fmt.Sprintf("%s topics %s: %d (%s)", group, strings.Join(named, ", "), code, tim.Describe(code))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, g := range r.Gaps {
		if g.Kind == jobs.GapTopics {
			if !slices.Contains(g.Groups, group) {
				r.Gaps[i].Groups = append(g.Groups, group)
			}
			r.Gaps[i].Topics = append(g.Topics, named...)
			r.Gaps[i].What += "; " + what
			return
		}
	}
	r.Gaps = append(r.Gaps, jobs.Gap{Kind: jobs.GapTopics, Groups: []string{group}, Topics: named, What: "Community topics IM refused to list or to describe (get_topic): " +
		"the messages in those topics are neither read nor recalled, the groups' own are; " + what})
}

// userGaps adds the gaps of a user purge by scan to rep.
func userGaps(rep *Report, p UserPurge) {
	var avc []string
	for _, u := range rep.Unsupported {
		if u.Type == TypeAVChatRoom {
			avc = append(avc, u.GroupID)
		}
	}
	if len(avc) > 0 {
		rep.gap(jobs.Gap{Kind: jobs.GapAVChatRoom, What: "AVChatRoom groups keep no history and cannot be recalled", Groups: avc})
	}
	if len(p.Peers) == 0 {
		rep.gap(jobs.Gap{Kind: jobs.GapOneToOne, What: "one-to-one chats: no peers were given and the callback index was not used, so no one-to-one chat is read"})
	}
	rep.gap(GroupsLeftGap(nil))
	RoamingGap(rep, p.Window, time.Now())
}

// RoamingGap adds to rep the gap of history beyond the roaming period when the
// window reaches back past it (or is open).
func RoamingGap(rep *Report, w Window, now time.Time) {
	if w.Since.IsZero() || w.Since.Before(now.Add(-RoamingPeriod)) {
		rep.gap(jobs.Gap{Kind: jobs.GapRoaming, What: fmt.Sprintf(
			"history beyond the roaming period: Tencent keeps one-to-one history %d days by default (group history per the app's plan); older messages are neither read nor recalled", int(RoamingPeriod.Hours()/24))})
	}
}

// GroupsLeftGap is the gap of a user purge by scan: the groups the user has
// left or was removed from, naming those the callback index knows of
// (indexed: groups with entries of the user that the scan does not list).
func GroupsLeftGap(indexed []string) jobs.Gap {
	g := jobs.Gap{Kind: jobs.GapGroupsLeft, What: "groups the user has left or was removed from: a scan lists only the groups the user is in now"}
	if len(indexed) > 0 {
		g.What += "; the callback index holds messages of the user in these groups, which the scan does not read"
		g.Groups = indexed
	}
	return g
}

// NotScanned returns the groups among indexed that no scan reads, sorted.
func NotScanned(scans []Scan, indexed map[string]bool) []string {
	scanned := map[string]bool{}
	for _, s := range scans {
		if s.Target.IsGroup() {
			scanned[s.Target.GroupID] = true
		}
	}
	var out []string
	for g := range indexed {
		if !scanned[g] {
			out = append(out, g)
		}
	}
	sort.Strings(out)
	return out
}

// SetGroupsLeft replaces the report's groups-left gap: added are the
// groups the callback index knew of that were added to the scan, missed
// those it knew of that cannot be read (named in the gap).
func (r *Report) SetGroupsLeft(added, missed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, g := range r.Gaps {
		if g.Kind != jobs.GapGroupsLeft {
			continue
		}
		g = GroupsLeftGap(missed)
		if len(added) > 0 {
			g.What += fmt.Sprintf("; %d groups the callback index holds messages of the user in were added to the scan: %s",
				len(added), strings.Join(added, ", "))
		}
		r.Gaps[i] = g
	}
}

// AddIndexedGroups adds to scans the groups among indexed (groups in which
// the callback index holds messages of the user) that the scan does not
// list, because the user left them or was removed: each that still exists
// and can be recalled is scanned (its topics included) for the user's
// messages in p's window. The report's groups-left gap then names those
// added and those that cannot be read (dismissed, or AVChatRoom).
func AddIndexedGroups(ctx context.Context, im IM, p UserPurge, scans []Scan, rep *Report, indexed map[string]bool) ([]Scan, error) {
	left := NotScanned(scans, indexed)
	if len(left) == 0 {
		return scans, nil
	}
	filter := GroupFilter{Window: p.Window, Senders: map[string]bool{p.User: true}}
	var added, missed []string
	for i := 0; i < len(left); i += tim.MaxGroupInfoIDs {
		batch := left[i:min(i+tim.MaxGroupInfoIDs, len(left))]
		resp, err := im.GetGroupInfo(ctx, tim.GetGroupInfoRequest{GroupIDList: batch,
			ResponseFilter: &tim.ResponseFilter{GroupBaseInfoFilter: []string{"Type"}}})
		if err != nil {
			var te *tim.Error
			if errors.As(err, &te) && te.Code != 0 && tim.Classify(te.Code) == tim.ClassPermanent {
				missed = append(missed, batch...) // none of them exists
				continue
			}
			return scans, fmt.Errorf("reading the groups the callback index knows %s sent to: %w", p.User, err)
		}
		answered := map[string]bool{}
		for _, gi := range resp.GroupInfo {
			answered[gi.GroupID] = true
			if gi.ErrorCode != 0 || !Recallable(gi.Type) {
				missed = append(missed, gi.GroupID)
				continue
			}
			ts, err := expandTopics(ctx, im, gi.GroupID, gi.Type, "", rep)
			if err != nil {
				return scans, err
			}
			for _, t := range ts {
				scans = append(scans, Scan{Target: t, Type: gi.Type, Filter: filter})
			}
			added = append(added, gi.GroupID)
		}
		for _, g := range batch {
			if !answered[g] {
				missed = append(missed, g)
			}
		}
	}
	sort.Strings(added)
	sort.Strings(missed)
	rep.SetGroupsLeft(added, missed)
	return scans, nil
}

// Coverage is the job coverage a purge starts with: its scope (subject,
// absolute time range, peers each once, sources) and the gaps discovery knows of
// before reading anything. Discovery adds each target as it finishes.
func Coverage(subject string, w Window, peers []string, sources []string, rep *Report) jobs.Coverage {
	c := jobs.Coverage{Subject: subject, Peers: Distinct(peers), Sources: sources}
	c.Window(w.Since, w.Until)
	if rep != nil {
		c.Gaps = append(c.Gaps, rep.Gaps...)
	}
	return c
}

// ScanSources names the sources of a purge by scan with peers.
func ScanSources(peers int) []string {
	if peers == 0 {
		return []string{SourceNameGroups}
	}
	return []string{SourceNameGroups, SourceNameC2C}
}

// Warnings are the lines a dry run prints before a purge that cannot be
// complete: one per gap.
func Warnings(gaps []jobs.Gap) []string {
	out := make([]string, 0, len(gaps))
	for _, g := range gaps {
		line := "this purge cannot be complete: " + g.What
		if len(g.Groups) > 0 {
			line += ": " + strings.Join(g.Groups, ", ")
		}
		out = append(out, line)
	}
	return out
}

// coverage is the target's coverage as an in-process scan read it.
func (tr TargetReport) coverage() jobs.TargetCoverage {
	return jobs.TargetCoverage{Target: tr.Target, Type: tr.Type, FirstSeq: tr.FirstSeq, LastSeq: tr.LastSeq,
		FirstTime: tr.FirstTime, LastTime: tr.LastTime, Sides: tr.Sides, Scanned: tr.Scanned, Found: tr.Messages, Done: true}
}

// TargetCoverage lists what the report's scans read, as a job's coverage
// records it.
func (r *Report) TargetCoverage() []jobs.TargetCoverage {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]jobs.TargetCoverage, len(r.Targets))
	for i, tr := range r.Targets {
		out[i] = tr.coverage()
	}
	return out
}
