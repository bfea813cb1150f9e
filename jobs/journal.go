package jobs

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The plan journal of a job holds the messages a planner has planned and not
// yet confirmed queued, each under the planner's token ("<lease>|<call>").
// A planner confirms them once their tasks are queued (piggybacked on its
// next plan call). What a planner leaves there when it dies (its lease
// lapses) a reconciler queues: a planned message is always either queued,
// journaled, or queued again by a reconciler.

// tokenSep separates a journal token's lease from the call it names.
const tokenSep = "|"

// Token is a journal token for call n of the planner holding lease.
func Token(lease, call string) string { return lease + tokenSep + call }

// JournalField is the journal's field for one message.
func JournalField(t Target, item string) string { return deadField(t, item) }

// PlanJournaled records items of target t as planned and returns those that
// were not planned before (in the order given), journaling them under token
// until the planner confirms them; it first removes the confirmed fields
// (see JournalField) from the journal. The call is idempotent: repeated with
// the same token (go-redis retries a script whose answer was lost) it
// returns the same items. An empty token journals nothing.
func (s *Store) PlanJournaled(ctx context.Context, jobID string, t Target, items []string, token string, confirmed []string) ([]string, error) {
	if len(items) == 0 && len(confirmed) == 0 {
		return nil, nil
	}
	argv := make([]any, 0, 3+len(confirmed)+len(items))
	argv = append(argv, t.suffix(), token, len(confirmed))
	for _, f := range confirmed {
		argv = append(argv, f)
	}
	for _, it := range items {
		argv = append(argv, it)
	}
	keys := []string{s.jobKey(jobID), s.stateKey(jobID, t), s.targetsKey(jobID), s.journalKey(jobID)}
	return replyStrings(s.runScript(ctx, planScript, jobID, "planning "+t.String(), keys, argv...))
}

// Confirm removes journal fields of messages whose tasks are queued.
func (s *Store) Confirm(ctx context.Context, jobID string, fields []string) error {
	for len(fields) > 0 {
		n := min(len(fields), 1000)
		if err := s.rdb.HDel(ctx, s.journalKey(jobID), fields[:n]...).Err(); err != nil {
			return fmt.Errorf("confirming queued messages of job %s: %w", jobID, err)
		}
		fields = fields[n:]
	}
	return nil
}

// JournalEntry is one message a planner planned and did not confirm queued.
type JournalEntry struct {
	Target Target
	Item   string
	Token  string
}

// Lease is the lease of the planner that journaled the entry.
func (e JournalEntry) Lease() string {
	l, _, _ := strings.Cut(e.Token, tokenSep)
	return l
}

// Field is the entry's journal field.
func (e JournalEntry) Field() string { return JournalField(e.Target, e.Item) }

// Journal reads a job's plan journal (small: what planners hold between
// planning and queueing).
func (s *Store) Journal(ctx context.Context, jobID string) ([]JournalEntry, error) {
	var out []JournalEntry
	iter := s.rdb.HScan(ctx, s.journalKey(jobID), 0, "", 1000).Iterator()
	var field string
	odd := true
	for iter.Next(ctx) {
		if odd {
			field, odd = iter.Val(), false
			continue
		}
		odd = true
		i := strings.LastIndex(field, sep)
		if i < 0 {
			continue
		}
		t, err := targetFromSuffix(field[:i])
		if err != nil {
			continue
		}
		out = append(out, JournalEntry{Target: t, Item: field[i+len(sep):], Token: iter.Val()})
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("reading the plan journal of job %s: %w", jobID, err)
	}
	return out, nil
}

// takeScript moves journal entries to a new token if they still have the
// token read. KEYS: journal. ARGV: new token, then pairs of field and old
// token. Returns the fields moved.
var takeScript = redis.NewScript(`
local moved = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
    moved[#moved + 1] = ARGV[i]
  end
end
return moved
`)

// TakeJournal moves the entries (as read by Journal) to token, the taker's
// own, unless a planner changed them since, and returns those taken: the
// taker queues them and confirms, and if it dies first, they lapse with its
// lease in turn.
func (s *Store) TakeJournal(ctx context.Context, jobID string, entries []JournalEntry, token string) ([]JournalEntry, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	argv := make([]any, 0, 1+2*len(entries))
	argv = append(argv, token)
	byField := make(map[string]JournalEntry, len(entries))
	for _, e := range entries {
		argv = append(argv, e.Field(), e.Token)
		byField[e.Field()] = e
	}
	moved, err := takeScript.Run(ctx, s.rdb, []string{s.journalKey(jobID)}, argv...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("taking over the plan journal of job %s: %w", jobID, err)
	}
	out := make([]JournalEntry, 0, len(moved))
	for _, f := range moved {
		e := byField[f]
		e.Token = token
		out = append(out, e)
	}
	return out, nil
}

// Unsettled calls fn with the messages of each target of a job that are not
// in a terminal state (planned, or sent with no outcome recorded), a batch of
// at most 1000 at a time.
func (s *Store) Unsettled(ctx context.Context, jobID string, fn func(Target, []string) error) error {
	targets, err := s.rdb.SMembers(ctx, s.targetsKey(jobID)).Result()
	if err != nil {
		return fmt.Errorf("reading targets of job %s: %w", jobID, err)
	}
	for _, suf := range targets {
		t, err := targetFromSuffix(suf)
		if err != nil {
			return fmt.Errorf("job %s: %w", jobID, err)
		}
		var batch []string
		seen := map[string]bool{} // HSCAN may return an entry twice
		iter := s.rdb.HScan(ctx, s.stateKey(jobID, t), 0, "", 1000).Iterator()
		var item string
		odd := true
		for iter.Next(ctx) {
			if odd {
				item, odd = iter.Val(), false
				continue
			}
			odd = true
			if v := iter.Val(); v != "r" && v != "u" && !strings.HasPrefix(v, "d:") && !seen[item] {
				seen[item] = true
				batch = append(batch, item)
			}
			if len(batch) >= 1000 {
				if err := fn(t, batch); err != nil {
					return err
				}
				batch = nil
			}
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("reading states of job %s, %s: %w", jobID, t, err)
		}
		if len(batch) > 0 {
			if err := fn(t, batch); err != nil {
				return err
			}
		}
	}
	return nil
}
