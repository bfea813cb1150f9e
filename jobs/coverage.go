package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Kinds of coverage gap: what a purge could not reach, and why.
const (
	// GapAVChatRoom: an AVChatRoom keeps no history and cannot be recalled.
	GapAVChatRoom = "avchatroom"
	// GapOneToOne: no one-to-one chat was read (no peers given, and the
	// callback index was not used).
	GapOneToOne = "one_to_one"
	// GapGroupsLeft: a scan lists only the groups the user is in now; groups
	// they left or were removed from are not read (Groups names those the
	// callback index knows of).
	GapGroupsLeft = "groups_left"
	// GapRoaming: history older than the app's roaming (storage) period is
	// gone from Tencent's side: no scan reads it, no recall reaches it.
	GapRoaming = "roaming"
	// GapIndex: the callback index has a hole in the range (serve down,
	// callbacks failed), or begins after the range starts.
	GapIndex = "index"
	// GapTopics: IM refused to list the topics of a Community (get_topic
	// answered an error other than "no topics" or "no such group"), or to
	// describe some of them (a topic's entry carried an ErrorCode other
	// than "no such topic"): the messages in those topics are not read;
	// Groups names the Communities, Topics the topics refused one by one.
	GapTopics = "topics"
)

// Gap is one thing a purge could not reach.
type Gap struct {
	Kind string `json:"kind"`
	What string `json:"what"`
	// Groups names the groups concerned, when known.
	Groups []string `json:"groups,omitempty"`
	// Topics names the topics concerned, when known (GapTopics: those
	// get_topic refused one by one; a Community in Groups none of whose
	// topics is here was refused whole, none of its topics is read).
	Topics []string `json:"topics,omitempty"`
}

// TargetCoverage is what discovery read of one target: for a group (or
// topic) the seq range read, for a one-to-one chat the time range and the
// sides read (sender, peer).
type TargetCoverage struct {
	Target Target `json:"target"`
	Type   string `json:"type,omitempty"`
	// FirstSeq and LastSeq: the oldest and newest MsgSeq read (groups).
	FirstSeq int64 `json:"first_seq,omitempty"`
	LastSeq  int64 `json:"last_seq,omitempty"`
	// FirstTime and LastTime: the oldest and newest message read (unix
	// seconds; one-to-one chats).
	FirstTime int64    `json:"first_time,omitempty"`
	LastTime  int64    `json:"last_time,omitempty"`
	Sides     []string `json:"sides,omitempty"`
	// Pages and Scanned count what was read; Found the messages of the
	// subject on those pages (a one-to-one message seen from both sides
	// counts twice; the job plans it once).
	Pages   int `json:"pages"`
	Scanned int `json:"scanned"`
	Found   int `json:"found"`
	// Done: the history was read to its end (or the range's start).
	Done bool `json:"done"`
}

// Coverage is a purge job's scope and what its discovery reached: the
// subject, the time range (absolute), the peers, the sources used, each
// target read with its range, and the gaps. The scope is written when the
// job is created, each target as its discovery finishes.
type Coverage struct {
	Subject string     `json:"subject,omitempty"`
	Since   *time.Time `json:"since,omitempty"`
	Until   *time.Time `json:"until,omitempty"`
	// Peers are the one-to-one peers read: those given, or for a purge by
	// index those of the chats the index named (a verification re-scans
	// them).
	Peers   []string         `json:"peers,omitempty"`
	Sources []string         `json:"sources,omitempty"`
	Gaps    []Gap            `json:"gaps,omitempty"`
	Targets []TargetCoverage `json:"targets,omitempty"`
}

// Complete reports whether the coverage names no gap.
func (c Coverage) Complete() bool { return len(c.Gaps) == 0 }

// Window sets the time range from since and until (zero: open).
func (c *Coverage) Window(since, until time.Time) {
	if !since.IsZero() {
		s := since.UTC()
		c.Since = &s
	}
	if !until.IsZero() {
		u := until.UTC()
		c.Until = &u
	}
}

// The fields of a job's coverage hash: the scope, and one per target.
const (
	coverageScope  = "scope"
	coverageTarget = "target" + sep
)

func (s *Store) coverageKey(id string) string { return s.jobKey(id) + ":coverage" }

func targetField(t Target) string { return coverageTarget + t.suffix() }

// SaveCoverage records a job's scope (c without its Targets, which replace
// any recorded before) and the targets c holds.
func (s *Store) SaveCoverage(ctx context.Context, jobID string, c Coverage) error {
	scope := c
	scope.Targets = nil
	b, err := json.Marshal(scope)
	if err != nil {
		return fmt.Errorf("encoding the coverage of job %s: %w", jobID, err)
	}
	fields := []any{coverageScope, string(b)}
	for _, tc := range c.Targets {
		tb, err := json.Marshal(tc)
		if err != nil {
			return fmt.Errorf("encoding the coverage of job %s: %w", jobID, err)
		}
		fields = append(fields, targetField(tc.Target), string(tb))
	}
	if err := s.rdb.HSet(ctx, s.coverageKey(jobID), fields...).Err(); err != nil {
		return fmt.Errorf("saving the coverage of job %s: %w", jobID, err)
	}
	return nil
}

// SaveTargetCoverage records what discovery read of one target of a job.
func (s *Store) SaveTargetCoverage(ctx context.Context, jobID string, tc TargetCoverage) error {
	b, err := json.Marshal(tc)
	if err != nil {
		return fmt.Errorf("encoding the coverage of %s, job %s: %w", tc.Target, jobID, err)
	}
	if err := s.rdb.HSet(ctx, s.coverageKey(jobID), targetField(tc.Target), string(b)).Err(); err != nil {
		return fmt.Errorf("saving the coverage of %s, job %s: %w", tc.Target, jobID, err)
	}
	return nil
}

// Coverage reads a job's recorded coverage; nil when the job recorded none
// (a recall of a list, or a job from before coverage was recorded).
func (s *Store) Coverage(ctx context.Context, jobID string) (*Coverage, error) {
	h, err := s.rdb.HGetAll(ctx, s.coverageKey(jobID)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the coverage of job %s: %w", jobID, err)
	}
	if len(h) == 0 {
		return nil, nil
	}
	c := &Coverage{}
	if raw, ok := h[coverageScope]; ok {
		if err := json.Unmarshal([]byte(raw), c); err != nil {
			return nil, fmt.Errorf("decoding the coverage of job %s: %w", jobID, err)
		}
	}
	c.Targets = nil
	for f, raw := range h {
		if !strings.HasPrefix(f, coverageTarget) {
			continue
		}
		var tc TargetCoverage
		if err := json.Unmarshal([]byte(raw), &tc); err != nil {
			return nil, fmt.Errorf("decoding the coverage of job %s: %w", jobID, err)
		}
		c.Targets = append(c.Targets, tc)
	}
	sort.Slice(c.Targets, func(i, j int) bool { return c.Targets[i].Target.String() < c.Targets[j].Target.String() })
	return c, nil
}

// WriteText writes the coverage for a person: scope, targets, gaps.
func (c Coverage) WriteText(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("scope:")
	if c.Subject != "" {
		p(" subject %s;", c.Subject)
	}
	p(" from %s to %s", timeOrOpen(c.Since, "the oldest history"), timeOrOpen(c.Until, "the newest"))
	if len(c.Peers) > 0 {
		p("; peers %s", strings.Join(c.Peers, ", "))
	}
	if len(c.Sources) > 0 {
		p("\nsources: %s", strings.Join(c.Sources, "; "))
	}
	p("\n")
	if len(c.Targets) > 0 {
		p("targets read: %d\n", len(c.Targets))
		for _, t := range c.Targets {
			p("  %-40s", t.Target.String())
			switch {
			case t.Target.IsGroup() && t.LastSeq > 0:
				p(" seq %d..%d", t.FirstSeq, t.LastSeq)
			case !t.Target.IsGroup() && t.LastTime > 0:
				p(" %s..%s", time.Unix(t.FirstTime, 0).UTC().Format(time.RFC3339), time.Unix(t.LastTime, 0).UTC().Format(time.RFC3339))
			}
			if len(t.Sides) > 0 {
				p(" sides %s", strings.Join(t.Sides, "+"))
			}
			p(" read %d, found %d", t.Scanned, t.Found)
			if !t.Done {
				p(" (not read to its end)")
			}
			p("\n")
		}
	}
	if c.Complete() {
		p("gaps: none known\n")
		return
	}
	p("GAPS: what this purge could not reach\n")
	for _, g := range c.Gaps {
		p("  - %s", g.What)
		if len(g.Groups) > 0 {
			p(": %s", strings.Join(g.Groups, ", "))
		}
		p("\n")
	}
}

func timeOrOpen(t *time.Time, open string) string {
	if t == nil {
		return open
	}
	return t.Format(time.RFC3339)
}
