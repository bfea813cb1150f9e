package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Final is a message's state as a report or a certificate names it.
type Final string

// Final states. Pending covers every state that is not terminal (planned,
// sent, answered without a recall).
const (
	FinalRecalled             Final = "recalled"
	FinalRecalledUnattributed Final = "recalled_unattributed"
	FinalDeadLettered         Final = "dead_lettered"
	FinalPending              Final = "pending"
)

// Message is one planned message of a job and its state.
type Message struct {
	Target Target
	Item   string // the seq (decimal) or the MsgKey
	State  Final
	Code   string // the dead letter's code, for FinalDeadLettered
}

// Gone reports whether the message is recalled by this job's account (a
// recall, or a dead letter that says it was recalled before).
func (m Message) Gone() bool {
	return m.State == FinalRecalled || m.State == FinalRecalledUnattributed ||
		(m.State == FinalDeadLettered && CategoryOf(m.Code) == AlreadyRecalled)
}

// Targets returns the targets a job planned messages in, sorted.
func (s *Store) Targets(ctx context.Context, jobID string) ([]Target, error) {
	sufs, err := s.rdb.SMembers(ctx, s.targetsKey(jobID)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading job %s targets: %w", jobID, err)
	}
	ts := make([]Target, 0, len(sufs))
	for _, suf := range sufs {
		t, err := targetFromSuffix(suf)
		if err != nil {
			return nil, fmt.Errorf("job %s: %w", jobID, err)
		}
		ts = append(ts, t)
	}
	slices.SortFunc(ts, CompareTargets)
	return ts, nil
}

// WalkTarget calls fn for every planned message of one target of a job, in
// no particular order. It reads the target's whole state, so it is for
// verification and certificates, not hot paths.
func (s *Store) WalkTarget(ctx context.Context, jobID string, t Target, fn func(Message) error) error {
	return s.walkStates(ctx, jobID, t, func(item, v string) error {
		m := Message{Target: t, Item: item, State: FinalPending}
		switch {
		case v == "r":
			m.State = FinalRecalled
		case v == "u":
			m.State = FinalRecalledUnattributed
		case strings.HasPrefix(v, "d:"):
			m.State, m.Code = FinalDeadLettered, v[2:]
		}
		return fn(m)
	})
}

// verificationKey holds the last verification of a job, as JSON.
func (s *Store) verificationKey(id string) string { return s.jobKey(id) + ":verification" }

// SaveVerification keeps the result of the job's latest verification (JSON,
// as the verify package writes it) beside the job record, and audits it.
func (s *Store) SaveVerification(ctx context.Context, jobID, actor string, result []byte, passed bool) error {
	if err := s.rdb.Set(ctx, s.verificationKey(jobID), result, 0).Err(); err != nil {
		return fmt.Errorf("saving the verification of job %s: %w", jobID, err)
	}
	detail := "passed: nothing of the job remains visible"
	if !passed {
		detail = "failed: messages remain visible"
	}
	return s.Audit(ctx, Event{Actor: actor, Action: "verify", JobID: jobID, Detail: detail})
}

// LastVerification returns the JSON of the job's latest verification, or
// nil when it was never verified.
func (s *Store) LastVerification(ctx context.Context, jobID string) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.verificationKey(jobID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the verification of job %s: %w", jobID, err)
	}
	return b, nil
}
