package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Swept is what one retention sweep deleted.
type Swept struct {
	Jobs        int   `json:"jobs"`
	Keys        int   `json:"keys"`
	AuditEvents int64 `json:"audit_events"`
}

// Sweep applies a retention of keep to the records: it deletes every
// finished job (terminal, nothing pending) that finished more than keep ago,
// with all its keys (record, message states, dead letters), and trims the
// audit log to the events of the last keep. Jobs still running are kept
// whatever their age. keep ≤ 0 keeps everything (the default). Running it
// from several processes at once is harmless.
func (s *Store) Sweep(ctx context.Context, keep time.Duration) (Swept, error) {
	var out Swept
	if keep <= 0 {
		return out, nil
	}
	cutoff := s.now().Add(-keep)
	ids, err := s.rdb.ZRangeByScore(ctx, s.indexKey(), &redis.ZRangeBy{Min: "-inf", Max: "(" + strconv.FormatInt(cutoff.UnixMilli(), 10)}).Result()
	if err != nil {
		return out, fmt.Errorf("retention: listing jobs: %w", err)
	}
	for _, id := range ids {
		j, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) || ValidID(id) != nil {
			// A record already gone (or never valid): drop it from the list.
			if err := s.rdb.ZRem(ctx, s.indexKey(), id).Err(); err != nil {
				return out, fmt.Errorf("retention: job %s: %w", id, err)
			}
			continue
		}
		if err != nil {
			return out, err
		}
		end := j.CreatedAt
		if j.FinishedAt != nil {
			end = *j.FinishedAt
		}
		if !j.Finished() || !end.Before(cutoff) {
			continue
		}
		n, err := s.deleteJobKeys(ctx, id)
		if err != nil {
			return out, err
		}
		if err := s.rdb.ZRem(ctx, s.indexKey(), id).Err(); err != nil {
			return out, fmt.Errorf("retention: job %s: %w", id, err)
		}
		out.Jobs++
		out.Keys += n
	}
	// Stream IDs are milliseconds: MINID drops every event before cutoff.
	trimmed, err := s.rdb.XTrimMinID(ctx, s.auditKey(), strconv.FormatInt(cutoff.UnixMilli(), 10)).Result()
	if err != nil {
		return out, fmt.Errorf("retention: trimming the audit log: %w", err)
	}
	out.AuditEvents = trimmed
	if out.Jobs > 0 || out.AuditEvents > 0 {
		err = s.Audit(ctx, Event{Actor: "retention", Action: "retention_sweep",
			Detail: fmt.Sprintf("kept %s: deleted %d finished jobs (%d keys) and %d audit events", keep, out.Jobs, out.Keys, out.AuditEvents)})
	}
	return out, err
}

// deleteJobKeys deletes every key of a job: they share its hash tag, so
// they live on one node; SCAN finds them there.
func (s *Store) deleteJobKeys(ctx context.Context, id string) (int, error) {
	match := s.jobKey(id) + "*"
	n := 0
	del := func(ctx context.Context, c redis.UniversalClient) error {
		iter := c.Scan(ctx, 0, match, 500).Iterator()
		var batch []string
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 500 {
				if err := c.Unlink(ctx, batch...).Err(); err != nil {
					return err
				}
				n, batch = n+len(batch), batch[:0]
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		if len(batch) > 0 {
			if err := c.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
			n += len(batch)
		}
		return nil
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return del(ctx, c) })
	} else {
		err = del(ctx, s.rdb)
	}
	if err != nil {
		return n, fmt.Errorf("retention: deleting job %s: %w", id, err)
	}
	return n, nil
}

// RunRetention sweeps (Sweep) now and every interval until ctx ends,
// logging what it deleted. keep ≤ 0 returns at once.
func (s *Store) RunRetention(ctx context.Context, keep, interval time.Duration, log *slog.Logger) {
	if keep <= 0 {
		return
	}
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := s.Sweep(ctx, keep)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("retention sweep failed", "err", err)
		case res.Jobs > 0 || res.AuditEvents > 0:
			log.Info("retention sweep", "jobs", res.Jobs, "keys", res.Keys, "audit_events", res.AuditEvents, "keep", keep.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
