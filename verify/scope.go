package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

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
	// Scan finds the subject's visible messages in the scope now; nil when
	// the job has no scope to re-scan (a recall of a list of messages).
	Scan ScopeScan
}

// params are the fields of a job's recorded parameters that describe its
// scope, as the CLI and the HTTP API record them.
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

// ScopeOf reads a job's scope from its record. Relative times (--since
// 30d) are taken relative to when the job was created, as the job took them.
// concurrency bounds the histories a re-scan reads at once.
//
// The Scope is returned by pointer: a re-scan adds the groups it could not
// read to its Gaps.
func ScopeOf(job jobs.Job, im producer.IM, concurrency int) (*Scope, error) {
	var p params
	if len(job.Params) > 0 {
		if err := json.Unmarshal(job.Params, &p); err != nil {
			return nil, fmt.Errorf("job %s: reading its parameters: %w", job.ID, err)
		}
	}
	var w producer.Window
	var err error
	if w.Since, err = producer.ParseTime(p.Since, job.CreatedAt); err != nil {
		return nil, fmt.Errorf("job %s: since %q: %w", job.ID, p.Since, err)
	}
	if w.Until, err = producer.ParseTime(p.Until, job.CreatedAt); err != nil {
		return nil, fmt.Errorf("job %s: until %q: %w", job.ID, p.Until, err)
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
			s.Gaps = append(s.Gaps, "the job found its messages in the callback index; the re-scan reads the groups the user is in now and the given peers")
		}
		s.Gaps = append(s.Gaps, "groups the user has left or was removed from: a history scan cannot list them")
		spec := producer.UserPurge{User: p.User, Peers: peers, Window: w, Concurrency: concurrency}
		s.Scan = scanOf(im, concurrency, func(ctx context.Context) ([]producer.Scan, *producer.Report, error) {
			return producer.UserScans(ctx, im, spec)
		}, s)
		return s, nil
	case "purge:group":
		spec := producer.GroupPurge{Groups: p.Groups, Topic: p.Topic, Senders: p.Senders, Concurrency: concurrency,
			GroupFilter: producer.GroupFilter{Window: w, SeqFrom: p.SeqFrom, SeqTo: p.SeqTo}}
		s := &Scope{}
		if len(p.Senders) == 1 {
			s.Subject = p.Senders[0]
		}
		s.Scan = scanOf(im, concurrency, func(ctx context.Context) ([]producer.Scan, *producer.Report, error) {
			return producer.GroupScans(ctx, im, spec)
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

// scanOf runs a purge's discovery as a dry run into add, and notes the
// groups it could not scan among the scope's gaps.
func scanOf(im producer.IM, concurrency int, list func(ctx context.Context) ([]producer.Scan, *producer.Report, error), s *Scope) ScopeScan {
	return func(ctx context.Context, add func(Ref) error) error {
		scans, rep, err := list(ctx)
		if err != nil {
			return err
		}
		for _, u := range rep.Unsupported {
			s.Gaps = append(s.Gaps, fmt.Sprintf("group %s (%s): %s", u.GroupID, u.Type, u.Reason))
		}
		return producer.RunScans(ctx, im, scans, max(concurrency, 1), refSink(add), rep)
	}
}

// refSink hands what a scan finds to add.
type refSink func(Ref) error

func (f refSink) AddGroup(_ context.Context, t jobs.Target, seqs ...int64) error {
	for _, s := range seqs {
		if err := f(Ref{Target: t, Item: strconv.FormatInt(s, 10)}); err != nil {
			return err
		}
	}
	return nil
}

func (f refSink) AddC2C(_ context.Context, t jobs.Target, key string) error {
	return f(Ref{Target: t, Item: key})
}
