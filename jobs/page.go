package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// PageFilter selects jobs for Store.Page; empty fields match every job.
type PageFilter struct {
	Status Status
	Kind   string
}

// JobPage is one page of jobs, newest first.
type JobPage struct {
	Jobs []Job
	// Next is the offset of the next page in the index of all jobs; zero
	// when there is none.
	Next int64
	// Total counts every job in the index (before the filter).
	Total int64
}

// pageChunk is how many job ids Page reads (and filters) per round trip.
const pageChunk = 200

// Page returns up to n jobs (newest first) matching f, starting at offset
// in the index of all jobs. It reads the index in chunks and only the
// status and kind of each job until the page is full, then the records of
// the page: a page costs the same whether Redis holds a hundred jobs or a
// hundred thousand, when the filter matches often.
func (s *Store) Page(ctx context.Context, f PageFilter, offset int64, n int) (JobPage, error) {
	if n <= 0 {
		n = 50
	}
	total, err := s.rdb.ZCard(ctx, s.indexKey()).Result()
	if err != nil {
		return JobPage{}, fmt.Errorf("listing jobs: %w", err)
	}
	page := JobPage{Total: total}
	var ids []string
	pos := offset
	for pos < total && len(ids) < n {
		chunk, err := s.rdb.ZRevRange(ctx, s.indexKey(), pos, pos+pageChunk-1).Result()
		if err != nil {
			return JobPage{}, fmt.Errorf("listing jobs: %w", err)
		}
		if len(chunk) == 0 {
			break
		}
		cmds := make([]*redis.SliceCmd, len(chunk))
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range chunk {
				cmds[i] = p.HMGet(ctx, s.jobKey(id), "status", "kind", holdField)
			}
			return nil
		}); err != nil {
			return JobPage{}, fmt.Errorf("listing jobs: %w", err)
		}
		for i, id := range chunk {
			pos++
			v := cmds[i].Val()
			st, _ := v[0].(string)
			kind, _ := v[1].(string)
			hold, _ := v[2].(string)
			if st != "" {
				st = string(heldStatus(Status(st), hold)) // as Get shows it
			}
			if st == "" || f.Status != "" && Status(st) != f.Status || f.Kind != "" && kind != f.Kind {
				continue
			}
			ids = append(ids, id)
			if len(ids) == n {
				break
			}
		}
	}
	if pos < total {
		page.Next = pos
	}
	for _, id := range ids {
		j, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted by retention since
		}
		if err != nil {
			return JobPage{}, err
		}
		page.Jobs = append(page.Jobs, j)
	}
	return page, nil
}
