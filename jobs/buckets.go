package jobs

import (
	"context"
	"fmt"
	"hash/crc32"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Message states are stored densely (layout 2, see docs/REDIS.md "Memory per
// message"): a target's messages are spread over small hashes, its buckets,
// so that each stays a Redis listpack (a few bytes per field) instead of one
// big hashtable per target (60–80 B per field).
//
//   - A group target's seq q lives in bucket q>>7 (q/128, rounded down) under
//     the field q&127, a small integer: a bucket never holds more than 128
//     fields, hash-max-listpack-entries' default.
//   - A one-to-one target's MsgKey lives in bucket crc32(MsgKey) mod 32 under
//     the field MsgKey; so does a group item that is not a seq written in
//     decimal (no planner writes one, but the store has always taken any
//     string): its field is not a number, so readers tell the two apart.
//
// A bucket's key is the target's state key, sep, and the bucket number; the
// target's bucket index (the state key, sep, "b") is the set of its bucket
// numbers, so readers walk a target without SCAN. Every key carries the
// job's hash tag.
//
// A job records its layout in its hash (field "layout"). Jobs planned before
// buckets have none: their states stay in one hash per target (stateKey),
// where the scripts keep reading and writing them, and readers walk both
// places, so they report, re-queue and are deleted (retention deletes every
// key with the job's tag) as before: no migration is needed.
const (
	// layoutBuckets is the value of the job hash's "layout" field for jobs
	// whose states live in buckets.
	layoutBuckets = "2"
	// groupBucketBits is log2 of a group bucket's width.
	groupBucketBits = 7
	// c2cBuckets is the number of buckets of a one-to-one target.
	c2cBuckets = 32
)

// bucketLua locates message states for the scripts. Every script that takes
// it is given KEYS[1] = job hash, KEYS[2] = the target's layout-1 state hash
// (stateKey), KEYS[base] = the target's bucket index and KEYS[base + i] = the
// bucket of its i-th item (see Store.stateKeys). KEYS[2] is KEYS[1], ":" and
// the target's suffix, which starts with "g:" for a group.
const bucketLua = `
local grp = string.sub(KEYS[2], #KEYS[1] + 2, #KEYS[1] + 3) == 'g:'
-- slot returns the bucket and field of item i.
local function slot(base, i, item)
  local f, q = item, tonumber(item)
  if grp and q and math.abs(q) < 2^53 and q == math.floor(q) and string.format('%d', q) == item then
    f = string.format('%d', q % 128)
  end
  return KEYS[base + i], f
end
-- where returns the key and field that hold item i's state, and the state
-- (nil if the item is not planned: then the bucket and field it would take).
local function where(base, i, item)
  local k, f = slot(base, i, item)
  local v = redis.call('HGET', k, f)
  if v then return k, f, v end
  v = redis.call('HGET', KEYS[2], item)
  if v then return KEYS[2], item, v end
  return k, f, nil
end
-- plant marks item i planned if it is not: in its bucket for a job of
-- layout 2 (noting the bucket in the index), else in the layout-1 hash.
-- Returns true if it was not planned.
local function plant(base, i, item, buckets)
  if not buckets then return redis.call('HSETNX', KEYS[2], item, 'p') == 1 end
  local k, f = slot(base, i, item)
  if redis.call('HSETNX', k, f, 'p') == 0 then return false end
  redis.call('SADD', KEYS[base], string.sub(k, #KEYS[2] + 2))
  return true
end
`

// bucketIndexKey is the set of a target's bucket numbers.
func (s *Store) bucketIndexKey(id string, t Target) string {
	return s.stateKey(id, t) + sep + "b"
}

// bucketKey is the key of bucket n of a target.
func (s *Store) bucketKey(id string, t Target, n int64) string {
	return s.stateKey(id, t) + sep + strconv.FormatInt(n, 10)
}

// bucketOf returns the bucket number of item of t.
func bucketOf(t Target, item string) int64 {
	if q, ok := seqItem(t, item); ok {
		return q >> groupBucketBits
	}
	return int64(crc32.ChecksumIEEE([]byte(item)) % c2cBuckets)
}

// maxSeqItem bounds the seqs bucketLua reads as numbers (Lua's numbers are
// doubles).
const maxSeqItem = 1 << 53

// seqItem returns the seq a group item names, if it is one written as
// strconv.FormatInt writes it (and as bucketLua checks).
func seqItem(t Target, item string) (int64, bool) {
	if !t.IsGroup() {
		return 0, false
	}
	q, err := strconv.ParseInt(item, 10, 64)
	if err != nil || q >= maxSeqItem || q <= -maxSeqItem || strconv.FormatInt(q, 10) != item {
		return 0, false
	}
	return q, true
}

// stateKeys returns fixed followed by what bucketLua expects after them: the
// target's bucket index, then the bucket of each item. fixed must start with
// the job hash and the target's state hash.
func (s *Store) stateKeys(id string, t Target, items []string, fixed ...string) []string {
	keys := make([]string, 0, len(fixed)+1+len(items))
	keys = append(keys, fixed...)
	keys = append(keys, s.bucketIndexKey(id, t))
	for _, it := range items {
		keys = append(keys, s.bucketKey(id, t, bucketOf(t, it)))
	}
	return keys
}

// walkStates calls fn with every message state of one target, in no
// particular order, and at most once per message: those of a job of layout
// 1 (one hash) and those in buckets.
func (s *Store) walkStates(ctx context.Context, jobID string, t Target, fn func(item, state string) error) error {
	seen := map[string]bool{} // HSCAN may return a field twice
	err := s.hscan(ctx, s.stateKey(jobID, t), func(item, v string) error {
		if seen[item] {
			return nil
		}
		seen[item] = true
		return fn(item, v)
	})
	if err != nil {
		return fmt.Errorf("reading states of job %s, %s: %w", jobID, t, err)
	}
	bs := s.rdb.SScan(ctx, s.bucketIndexKey(jobID, t), 0, "", 1000).Iterator()
	done := map[int64]bool{} // SSCAN may return a member twice
	var batch []int64
	for bs.Next(ctx) {
		n, err := strconv.ParseInt(bs.Val(), 10, 64)
		if err != nil || done[n] {
			continue
		}
		done[n] = true
		if batch = append(batch, n); len(batch) == 100 {
			if err := s.walkBuckets(ctx, jobID, t, batch, fn); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := bs.Err(); err != nil {
		return fmt.Errorf("reading buckets of job %s, %s: %w", jobID, t, err)
	}
	return s.walkBuckets(ctx, jobID, t, batch, fn)
}

// hscan calls fn with each field and value of the hash at key, streaming
// (HSCAN: a field may come twice).
func (s *Store) hscan(ctx context.Context, key string, fn func(field, value string) error) error {
	iter := s.rdb.HScan(ctx, key, 0, "", 1000).Iterator()
	var field string
	odd := true
	for iter.Next(ctx) {
		if odd {
			field, odd = iter.Val(), false
			continue
		}
		odd = true
		if err := fn(field, iter.Val()); err != nil {
			return err
		}
	}
	return iter.Err()
}

// walkBuckets reads the given buckets of a target in one round trip and
// calls fn with each state.
func (s *Store) walkBuckets(ctx context.Context, jobID string, t Target, ns []int64, fn func(item, state string) error) error {
	if len(ns) == 0 {
		return nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(ns))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range ns {
			cmds[i] = p.HGetAll(ctx, s.bucketKey(jobID, t, n))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading states of job %s, %s: %w", jobID, t, err)
	}
	for i, c := range cmds {
		for f, v := range c.Val() {
			item := f
			if off, ok := seqItem(t, f); ok && off >= 0 && off < 1<<groupBucketBits {
				item = strconv.FormatInt(ns[i]<<groupBucketBits|off, 10)
			}
			if err := fn(item, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// States calls fn with the stored state of every planned message of a job
// (p, s<n>, a<n>, r, u, d:<code>: docs/ACCOUNTING.md), target by target, in
// either layout. It reads the whole job: it is for tests and diagnostics.
func (s *Store) States(ctx context.Context, jobID string, fn func(t Target, item, state string) error) error {
	ts, err := s.Targets(ctx, jobID)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if err := s.walkStates(ctx, jobID, t, func(item, st string) error { return fn(t, item, st) }); err != nil {
			return err
		}
	}
	return nil
}
