package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
)

// Scope is what a job was asked to cover, read back from its record: whose
// messages (for a user purge), and what a re-scan cannot reach.
type Scope struct {
	// Subject is the user whose messages a user purge recalls; empty for
	// other kinds.
	Subject string
	// Gaps name what neither the job nor a re-scan of its scope reaches.
	Gaps []string
	// List lists the scope's areas as they are now; nil when the job has no
	// scope (a recall of a list of messages).
	List ScopeList
}

// params are the fields of a job's recorded parameters that describe its
// scope. They are read from every record any version wrote, so they are not
// the request's type: older CLI records hold peers as a count, and older
// recall-file records a count under "messages" (not read here).
type params struct {
	User    string          `json:"user"`
	Peers   json.RawMessage `json:"peers"` // a list; older CLI records hold a count
	Source  string          `json:"source"`
	Since   string          `json:"since"`
	Until   string          `json:"until"`
	Groups  []string        `json:"groups"`
	Topic   string          `json:"topic"`
	Senders []string        `json:"senders"`
	SeqFrom int64           `json:"seq_from"`
	SeqTo   int64           `json:"seq_to"`
}

// ScopeOfRecorded is ScopeOf with the coverage the job recorded (its
// gaps as discovery saw them: groups the user left that the index knows,
// AVChatRoom groups, one-to-one chats not read, the roaming period), read
// from store; a job that recorded none gets ScopeOf's.
func ScopeOfRecorded(ctx context.Context, store *jobs.Store, job jobs.Job, im producer.IM) (*Scope, error) {
	cov, err := store.Coverage(ctx, job.ID)
	if err != nil {
		return nil, err
	}
	return ScopeWith(job, cov, im)
}

// ScopeOf reads a job's scope from its record. Relative times (--since
// 30d) are taken relative to when the job was created, as the job took them.
//
// The Scope is returned by pointer: a re-scan adds the groups it could not
// read to its Gaps.
func ScopeOf(job jobs.Job, im producer.IM) (*Scope, error) { return ScopeWith(job, nil, im) }

// ScopeWith is ScopeOf with the job's recorded coverage (nil: none): when
// present, its gaps are the scope's, instead of those guessed from the
// job's parameters.
func ScopeWith(job jobs.Job, cov *jobs.Coverage, im producer.IM) (*Scope, error) {
	s, err := scopeOf(job, cov, im)
	if err != nil || cov == nil || job.Kind != "purge:user" && job.Kind != "purge:group" {
		return s, err
	}
	var p params
	_ = json.Unmarshal(job.Params, &p) // read by scopeOf already
	s.Gaps = nil
	if p.Source == "index" {
		s.Gaps = append(s.Gaps, indexGap)
	}
	for _, g := range cov.Gaps {
		s.Gaps = append(s.Gaps, gapLine(g))
	}
	return s, nil
}

// gapLine is a coverage gap as a scope's gaps name it: what, and the
// groups concerned.
func gapLine(g jobs.Gap) string {
	if len(g.Groups) == 0 {
		return g.What
	}
	return g.What + ": " + strings.Join(g.Groups, ", ")
}

// deletedGap is the gap of a re-scan of a purge whose user IM no longer
// knows.
const deletedGap = "the user's account no longer exists: the groups it was in cannot be listed; its planned messages there are read back one by one, visible messages it did not plan are not sought there"

// indexGap is the gap of a re-scan of a purge by index.
const indexGap = "the job found its messages in the callback index; the re-scan reads the groups the user is in now and the one-to-one chats the index named (both sides)"

// scopeOf reads the scope from the job's parameters; cov (nil: none) adds,
// for a purge by index, the peers of the chats the index named.
func scopeOf(job jobs.Job, cov *jobs.Coverage, im producer.IM) (*Scope, error) {
	var p params
	if len(job.Params) > 0 {
		if err := json.Unmarshal(job.Params, &p); err != nil {
			return nil, fmt.Errorf("job %s: reading its parameters: %w", job.ID, err)
		}
	}
	// The range the purge covered is the one its coverage recorded,
	// resolved when the job was created (a local time in that process's
	// zone, an age from that moment); the parameters are read again only
	// for a job that recorded none.
	var w producer.Window
	var err error
	if w.Since, err = producer.ParseTime(p.Since, job.CreatedAt); err != nil {
		return nil, fmt.Errorf("job %s: since %q: %w", job.ID, p.Since, err)
	}
	if w.Until, err = producer.ParseTime(p.Until, job.CreatedAt); err != nil {
		return nil, fmt.Errorf("job %s: until %q: %w", job.ID, p.Until, err)
	}
	if cov != nil && cov.Since != nil {
		w.Since = *cov.Since
	}
	if cov != nil && cov.Until != nil {
		w.Until = *cov.Until
	}
	switch job.Kind {
	case "purge:user":
		peers, known := peerList(p.Peers)
		s := &Scope{Subject: p.User}
		if !known {
			s.Gaps = append(s.Gaps, "one-to-one chats: the job recorded how many peers it had, not who; the re-scan covers groups only")
		} else if len(peers) == 0 && p.Source != "index" {
			s.Gaps = append(s.Gaps, "one-to-one chats: no peers were given, so no one-to-one chat was scanned")
		}
		if p.Source == "index" {
			s.Gaps = append(s.Gaps, indexGap)
			if cov != nil {
				peers = producer.Distinct(append(peers, cov.Peers...))
			}
		}
		s.Gaps = append(s.Gaps, "groups the user has left or was removed from: a history scan cannot list them")
		spec := producer.UserPurge{User: p.User, Peers: peers, Window: w}
		s.List = areasOf(func(ctx context.Context) ([]producer.Scan, *producer.Report, error) {
			scans, rep, err := producer.UserScans(ctx, im, spec)
			if errors.Is(err, producer.ErrUnknownUser) {
				// The account was deleted since (as an erasure often ends):
				// its planned messages are read back where they are.
				s.Gaps = append(s.Gaps, deletedGap)
				return producer.PeerScans(spec), &producer.Report{}, nil
			}
			return scans, rep, err
		}, s)
		return s, nil
	case "purge:group":
		spec := producer.GroupPurge{Groups: p.Groups, Topic: p.Topic, Senders: p.Senders,
			GroupFilter: producer.GroupFilter{Window: w, SeqFrom: p.SeqFrom, SeqTo: p.SeqTo}}
		s := &Scope{}
		if len(p.Senders) == 1 {
			s.Subject = p.Senders[0]
		}
		s.List = areasOf(func(ctx context.Context) ([]producer.Scan, *producer.Report, error) {
			scans, rep, err := producer.GroupScans(ctx, im, spec)
			var gone *producer.UnknownGroupsError
			if !errors.As(err, &gone) {
				return scans, rep, err
			}
			// Groups dismissed since: nobody sees their messages, and the
			// planned ones are read back where they were.
			s.Gaps = append(s.Gaps, "groups that no longer exist (dismissed): "+strings.Join(gone.Groups, ", "))
			rest := spec
			rest.Groups = slices.DeleteFunc(slices.Clone(spec.Groups), func(g string) bool { return slices.Contains(gone.Groups, g) })
			if len(rest.Groups) == 0 {
				return nil, &producer.Report{}, nil
			}
			return producer.GroupScans(ctx, im, rest)
		}, s)
		return s, nil
	}
	return &Scope{}, nil
}

// peerList reads the recorded peers: a list, or (older records) a count,
// in which case the peers are unknown.
func peerList(raw json.RawMessage) (peers []string, known bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	if err := json.Unmarshal(raw, &peers); err == nil {
		return peers, true
	}
	if n, err := strconv.Atoi(string(raw)); err == nil && n == 0 {
		return nil, true
	}
	return nil, false
}

// areasOf lists a purge's scans as areas, and notes among the scope's gaps
// the groups that cannot be scanned and the Community topics IM refused to
// list or describe to the re-scan (a topics gap), unless the job's recorded
// coverage names them already.
func areasOf(list func(ctx context.Context) ([]producer.Scan, *producer.Report, error), s *Scope) ScopeList {
	return func(ctx context.Context) ([]Area, error) {
		scans, rep, err := list(ctx)
		if err != nil {
			return nil, err
		}
		recorded := strings.Join(s.Gaps, "\n")
		for _, u := range rep.Unsupported {
			if strings.Contains(recorded, u.GroupID) {
				continue // named by the job's recorded coverage already
			}
			s.Gaps = append(s.Gaps, fmt.Sprintf("group %s (%s): %s", u.GroupID, u.Type, u.Reason))
		}
		for _, g := range rep.Gaps {
			if g.Kind != jobs.GapTopics {
				continue // the others are the scope's already (recorded, or guessed from the parameters)
			}
			named := slices.Concat(g.Groups, g.Topics)
			if !slices.ContainsFunc(named, func(id string) bool { return !strings.Contains(recorded, id) }) {
				continue // named by the job's recorded coverage already
			}
			s.Gaps = append(s.Gaps, gapLine(g))
		}
		areas := make([]Area, len(scans))
		for i, sc := range scans {
			areas[i] = Area{Target: sc.Target, Filter: sc.Filter}
		}
		return areas, nil
	}
}
