package jobs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultLeaseTTL is how long a planner's lease lasts without a heartbeat
// (Store.SetLeaseTTL changes it). A holder renews it every third of that.
const DefaultLeaseTTL = 30 * time.Second

// SetLeaseTTL sets the lease time of the planners this store starts (the
// root planner of the jobs it creates, the discovery units it opens, the
// leases it holds); d ≤ 0 keeps the current one. Call it before use.
func (s *Store) SetLeaseTTL(d time.Duration) {
	if d > 0 {
		s.leaseTTL = d
	}
}

// LeaseTTL returns the store's lease time (see SetLeaseTTL).
func (s *Store) LeaseTTL() time.Duration { return s.leaseTTL }

// Prefix returns the prefix of the store's keys.
func (s *Store) Prefix() string { return s.prefix }

func (s *Store) leasesKey(id string) string  { return s.jobKey(id) + ":leases" }
func (s *Store) journalKey(id string) string { return s.jobKey(id) + ":journal" }
func (s *Store) openKey() string             { return s.prefix + ":jobs:open" }

// taskField is the leases-hash field naming the discovery task of a unit.
const taskField = "task:"

// renewLua sets a lease's expiry to Redis's clock plus a TTL (milliseconds),
// so that the clocks of the hosts never matter. KEYS: job hash, leases hash.
// ARGV: lease id, ttl ms. Returns 0 if the job does not exist.
const renewLua = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[2]))
return 1
`

var renewScript = redis.NewScript(renewLua)

// leasesScript reads a job's leases with Redis's clock. KEYS: leases hash.
// Returns {now ms, field, value, ...}.
var leasesScript = redis.NewScript(`
local t = redis.call('TIME')
local out = {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h do out[#out + 1] = h[i] end
return out
`)

// openTaskScript opens a planning unit carried by a queued task: the unit,
// a first lease (which covers the time until the task is queued) and the
// task's queue and id, by which a reconciler finds whether the task still
// exists. KEYS: job hash, planners set, leases hash. ARGV: unit, ttl ms,
// "queue<sep>task id".
var openTaskScript = redis.NewScript(replyLua + `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nojob() end
if status ~= 'planning' then return closed(status) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[3], ARGV[1], now + tonumber(ARGV[2]), 'task:' .. ARGV[1], ARGV[3])
return reply(redis.call('SADD', KEYS[2], ARGV[1]))
`)

// interruptScript closes a planning unit whose planner is gone and records
// that planning was interrupted, with how far it had got; the job then ends
// failed once no unit is left (settle). KEYS: job hash, planners set, leases
// hash, the call's key (callKey). ARGV: now, unit, why, callAnswerTTL in
// ms. Returns the status afterwards, or "" if the unit was not open. The
// answer is kept under the call's key: a run that finds it (the same call
// sent again by go-redis, its first answer lost) answers it and changes
// nothing, so that a retried interruption is still reported as one.
var interruptScript = redis.NewScript(replyLua + callAnswerLua + settleLua + `
local prior = kept(KEYS[4])
if prior then return reply(prior) end -- run again: its answer was lost
local function answer(v) return keep(KEYS[4], ARGV[4], v) end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nojob() end
if redis.call('SREM', KEYS[2], ARGV[2]) == 0 then return answer('') end
redis.call('HDEL', KEYS[3], ARGV[2], 'task:' .. ARGV[2])
local prev = redis.call('HGET', KEYS[1], 'planning_interrupted')
local planned = redis.call('HGET', KEYS[1], 'planned') or '0'
if not prev then
  redis.call('HSET', KEYS[1], 'planning_interrupted', ARGV[2], 'interrupted_planned', planned, 'interrupted_at', ARGV[1])
elseif string.len(prev) < 2000 then
  redis.call('HSET', KEYS[1], 'planning_interrupted', prev .. '; ' .. ARGV[2])
end
if status == 'planning' then
  redis.call('HSET', KEYS[1], 'error', 'planning interrupted (' .. ARGV[2] .. ': ' .. ARGV[3] .. ') with ' ..
    planned .. ' messages planned: run the same command again to finish')
end
settle(KEYS[1], KEYS[2], ARGV[1])
return answer(redis.call('HGET', KEYS[1], 'status'))
`)

func (s *Store) renewIn(ctx context.Context, c redis.Scripter, jobID, lease string) *redis.Cmd {
	return renewScript.Eval(ctx, c, []string{s.jobKey(jobID), s.leasesKey(jobID)}, lease, s.leaseTTL.Milliseconds())
}

// Renew extends a planner's lease by the store's lease time from now. It
// returns ErrNotFound if the job does not exist.
func (s *Store) Renew(ctx context.Context, jobID, lease string) error {
	n, err := renewScript.Run(ctx, s.rdb, []string{s.jobKey(jobID), s.leasesKey(jobID)}, lease, s.leaseTTL.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("renewing lease %s of job %s: %w", lease, jobID, err)
	}
	if n == 0 {
		return fmt.Errorf("renewing lease %s: job %s: %w", lease, jobID, ErrNotFound)
	}
	return nil
}

// Lease is a planner's lease on a job, renewed in the background until it
// is released or abandoned. A planner whose lease has lapsed is taken for
// gone: a reconciler settles its unit and queues what it had journaled.
type Lease struct {
	store  *Store
	jobID  string
	id     string
	stop   context.CancelFunc
	done   chan struct{}
	closed sync.Once
}

// ID is the lease's id (the unit, or the journal token's prefix).
func (l *Lease) ID() string { return l.id }

// Hold takes (or renews) the lease id on job and keeps it alive every third
// of the lease time, until Release or Abandon; a cancelled ctx does not stop
// it (a planner interrupted by a signal still finishes what it planned).
func (s *Store) Hold(ctx context.Context, jobID, id string) (*Lease, error) {
	if strings.Contains(id, tokenSep) {
		return nil, fmt.Errorf("lease id %q: must not contain %q", id, tokenSep)
	}
	if err := s.Renew(ctx, jobID, id); err != nil {
		return nil, err
	}
	return s.Keep(ctx, jobID, id), nil
}

// Keep keeps alive a lease already taken (Create takes the root planner's),
// like Hold without its first renewal.
func (s *Store) Keep(ctx context.Context, jobID, id string) *Lease {
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l := &Lease{store: s, jobID: jobID, id: id, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(max(s.leaseTTL/3, 10*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-tick.C:
				_ = s.Renew(hctx, jobID, id) // a missed beat is made up by the next; three lapse the lease
			}
		}
	}()
	return l
}

// Abandon stops renewing the lease and leaves it to lapse: what the planner
// journaled and did not confirm is then queued by a reconciler.
func (l *Lease) Abandon() {
	l.closed.Do(func() {
		l.stop()
		<-l.done
	})
}

// Release stops renewing the lease and deletes it: the planner is done.
func (l *Lease) Release(ctx context.Context) error {
	l.Abandon()
	if err := l.store.rdb.HDel(ctx, l.store.leasesKey(l.jobID), l.id).Err(); err != nil {
		return fmt.Errorf("releasing lease %s of job %s: %w", l.id, l.jobID, err)
	}
	return nil
}

// ScanUnit is the planning unit of a discovery scan of t.
func ScanUnit(t Target) string { return "scan " + t.String() }

// TaskRef names a queued task by its queue and id.
type TaskRef struct{ Queue, ID string }

// Leases is a job's leases as read at Now (Redis's clock).
type Leases struct {
	Now    time.Time
	Expiry map[string]time.Time // by lease id (a unit, or a journal token's lease)
	Tasks  map[string]TaskRef   // by unit: the task that carries it
}

// Alive reports whether lease id is held and not lapsed.
func (l Leases) Alive(id string) bool {
	e, ok := l.Expiry[id]
	return ok && e.After(l.Now)
}

// ReadLeases reads a job's leases and Redis's clock.
func (s *Store) ReadLeases(ctx context.Context, jobID string) (Leases, error) {
	res, err := leasesScript.Run(ctx, s.rdb, []string{s.leasesKey(jobID)}).Slice()
	if err != nil || len(res) == 0 {
		return Leases{}, fmt.Errorf("reading leases of job %s: %w", jobID, err)
	}
	now, _ := res[0].(int64)
	l := Leases{Now: time.UnixMilli(now), Expiry: map[string]time.Time{}, Tasks: map[string]TaskRef{}}
	for i := 1; i+1 < len(res); i += 2 {
		k, v := fmt.Sprint(res[i]), fmt.Sprint(res[i+1])
		if unit, ok := strings.CutPrefix(k, taskField); ok {
			q, id, _ := strings.Cut(v, sep)
			l.Tasks[unit] = TaskRef{Queue: q, ID: id}
			continue
		}
		ms, _ := strconv.ParseInt(v, 10, 64)
		l.Expiry[k] = time.UnixMilli(ms)
	}
	return l, nil
}

// OpenTaskPlanner opens a planning unit carried by a queued task (a
// discovery task): with a first lease of the store's lease time, which
// covers the moments until the task is queued, and the task's queue and id,
// so that a reconciler keeps the unit open while the task exists in asynq
// (asynq delivers it again after a crash) and closes it once it does not.
func (s *Store) OpenTaskPlanner(ctx context.Context, jobID, unit string, task TaskRef) error {
	_, err := s.runScript(ctx, openTaskScript, jobID, "opening planner "+unit, []string{s.jobKey(jobID), s.plannersKey(jobID), s.leasesKey(jobID)},
		unit, s.leaseTTL.Milliseconds(), task.Queue+sep+task.ID)
	return err
}

// Planners returns the job's open planning units.
func (s *Store) Planners(ctx context.Context, jobID string) ([]string, error) {
	units, err := s.rdb.SMembers(ctx, s.plannersKey(jobID)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading planners of job %s: %w", jobID, err)
	}
	return units, nil
}

// InterruptPlanner closes a planning unit whose planner is gone (its lease
// lapsed, its task no longer exists) and records that planning was
// interrupted and how far it had got. Messages planned before are still
// recalled; the job ends failed, with an error saying to run the command
// again. It returns the job's status afterwards, or "" if the unit was not
// open.
func (s *Store) InterruptPlanner(ctx context.Context, jobID, unit, why string) (Status, error) {
	keys := []string{s.jobKey(jobID), s.plannersKey(jobID), s.leasesKey(jobID), s.callKey(jobID, callToken())}
	st, err := replyString(s.runScript(ctx, interruptScript, jobID, "interrupting planner "+unit, keys, s.stamp(), unit, why, callAnswerMillis))
	return Status(st), err
}

// Interruption says that a job's planning was interrupted, and how far it
// had got.
type Interruption struct {
	// Units are the planning units that stopped ("root": the command or API
	// call that created the job; "scan …": a discovery task).
	Units string `json:"units"`
	// Planned is how many messages were planned when the first unit stopped.
	Planned int64      `json:"planned_then"`
	At      *time.Time `json:"at,omitempty"`
}

func parseInterruption(h map[string]string) *Interruption {
	if h["planning_interrupted"] == "" {
		return nil
	}
	in := &Interruption{Units: h["planning_interrupted"]}
	in.Planned, _ = strconv.ParseInt(h["interrupted_planned"], 10, 64)
	if t, err := time.Parse(time.RFC3339Nano, h["interrupted_at"]); err == nil {
		in.At = &t
	}
	return in
}

// MarkOpen adds a job to the set of jobs a reconciler watches; Create does,
// and so should anything that reopens a job (a re-queue).
func (s *Store) MarkOpen(ctx context.Context, jobID string) error {
	if err := s.rdb.SAdd(ctx, s.openKey(), jobID).Err(); err != nil {
		return fmt.Errorf("marking job %s open: %w", jobID, err)
	}
	return nil
}

// OpenJobs returns the jobs a reconciler watches.
func (s *Store) OpenJobs(ctx context.Context) ([]string, error) {
	ids, err := s.rdb.SMembers(ctx, s.openKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("reading open jobs: %w", err)
	}
	return ids, nil
}

// MarkSettled removes a job from the set of jobs a reconciler watches, and
// its planner leases (a settled job has no planner).
func (s *Store) MarkSettled(ctx context.Context, jobID string) error {
	if err := s.rdb.Del(ctx, s.leasesKey(jobID)).Err(); err != nil {
		return fmt.Errorf("dropping the leases of job %s: %w", jobID, err)
	}
	if err := s.rdb.SRem(ctx, s.openKey(), jobID).Err(); err != nil {
		return fmt.Errorf("marking job %s settled: %w", jobID, err)
	}
	return nil
}
