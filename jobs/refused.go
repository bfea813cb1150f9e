package jobs

import (
	"context"
	"fmt"
)

// Reasons a producer refused to plan a message it was given.
const (
	// RefusedSenderUnconfirmed: a purge by index was given a message (by
	// the callback index) that the history does not show the user sent:
	// another user's message, or none (a forged callback).
	RefusedSenderUnconfirmed = "sender_unconfirmed"
)

func (s *Store) refusedKey(id string) string { return s.jobKey(id) + ":refused" }

// AddRefused counts n messages of a job that were never planned, for
// reason (Refused*). They are outside the job's accounting (planned =
// recalled + dead_lettered + pending holds without them); the report lists
// them.
func (s *Store) AddRefused(ctx context.Context, jobID, reason string, n int64) error {
	if n <= 0 {
		return nil
	}
	if err := s.rdb.HIncrBy(ctx, s.refusedKey(jobID), reason, n).Err(); err != nil {
		return fmt.Errorf("job %s: counting refused messages: %w", jobID, err)
	}
	return nil
}

// Refused returns the counts of AddRefused by reason (nil: none).
func (s *Store) Refused(ctx context.Context, jobID string) (map[string]int64, error) {
	h, err := s.rdb.HGetAll(ctx, s.refusedKey(jobID)).Result()
	if err != nil {
		return nil, fmt.Errorf("job %s: reading refused messages: %w", jobID, err)
	}
	var out map[string]int64
	for k, v := range h {
		var n int64
		if _, err := fmt.Sscan(v, &n); err == nil && n > 0 {
			if out == nil {
				out = map[string]int64{}
			}
			out[k] = n
		}
	}
	return out, nil
}
