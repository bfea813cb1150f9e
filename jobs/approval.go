package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A held job (created with Spec.HoldForApproval) carries a "hold" field
// beside its status: "approval" until Approve, then "cooloff" until its
// StartsAt if Approve was given a delay. The status field itself keeps
// following planning (planning → running → done), so that discovery, which
// only reads, goes on under the hold and the approver sees the job's count;
// Get shows the hold as the status (awaiting_approval, approved) and the
// status under it as Job.Phase. beginScript and parkScript treat a hold as a
// pause: every recall task of the job is parked, and nothing is sent. A
// cancel clears the hold (the parked tasks come back and are dead-lettered
// as cancelled); a resume does not (only Approve and the cool-off's end do).
const (
	holdField    = "hold"
	holdApproval = "approval"
	holdCoolOff  = "cooloff"
)

// heldStatus is the status Get shows for a job whose status field is st and
// whose hold is hold. approveScript computes the same.
func heldStatus(st Status, hold string) Status {
	if st == StatusCancelled || st == StatusDone {
		return st
	}
	switch hold {
	case holdApproval:
		return StatusAwaitingApproval
	case holdCoolOff:
		return StatusApproved
	}
	return st
}

func parseApproval(h map[string]string, j *Job, ts func(string) *time.Time) {
	j.Requester = h["requester"]
	j.HeldForApproval = h["held"] == "1"
	j.ApprovedBy = h["approved_by"]
	j.ApprovedAt = ts("approved_at")
	j.ApprovalReason = h["approval_reason"]
	j.StartsAt = ts("starts_at")
	if st := heldStatus(j.Status, h[holdField]); st != j.Status {
		j.Phase, j.Status = j.Status, st
	}
}

// coolOffKey is the sorted set of jobs in a cool-off, scored by their start
// in Unix milliseconds (Redis's clock). Its members are "JOB NONCE", one per
// approval with a delay (the job's hash names its approval's member in
// coolOffMember), or "JOB" alone (written by versions before the nonce).
//
// The index cannot be written by approveScript: it is one key for every job
// and a job's keys share its own hash tag, so on Redis Cluster they are in
// other slots (no script or MULTI spans them). The script decides alone
// which approval wins; each approval indexes its own member first (so that
// a job in a cool-off is always found by StartDue) and removes it when the
// script refuses it, which leaves no other approval's entry changed.
func (s *Store) coolOffKey() string { return s.prefix + ":cooloff" }

// coolOffMember is the job hash field naming its approval's cool-off index
// member (the scripts spell it out).
const coolOffMember = "cooloff_member"

// newCoolOffMember is the cool-off index member of one approval of jobID.
func newCoolOffMember(jobID string) string {
	return jobID + " " + callToken()
}

// parseCoolOffMember returns the job a cool-off index member names and its
// member as the job's hash records it ("" for a member of an older version,
// which names the job alone).
func parseCoolOffMember(m string) (jobID, approval string) {
	if id, _, ok := strings.Cut(m, " "); ok {
		return id, m
	}
	return m, ""
}

// approveScript approves a job awaiting approval, unless the approver is
// its requester. KEYS: job hash. ARGV: approver, reason, approved_at,
// starts_at ("" = start now), starts_at in Unix ms, the approval's cool-off
// index member. Returns the job's status afterwards, as Get shows it.
// A run that finds this very approval made (same approver, time and
// member: go-redis sends a script again when its answer was lost) answers
// as the first run did, rather than refusing the job as approved already.
var approveScript = redis.NewScript(replyLua + `
local h = redis.call('HMGET', KEYS[1], 'status', 'hold', 'requester', 'requested_by', 'approved_by', 'approved_at', 'cooloff_member')
if not h[1] then return nojob() end
if h[5] == ARGV[1] and h[6] == ARGV[3] and (h[7] or '') == ARGV[6] then
  if ARGV[4] ~= '' then return reply('approved') end
  return reply(h[1])
end
local shown = h[1]
if h[1] ~= 'cancelled' and h[1] ~= 'done' then
  if h[2] == 'approval' then shown = 'awaiting_approval' elseif h[2] == 'cooloff' then shown = 'approved' end
end
if shown ~= 'awaiting_approval' then return refused(shown) end
local req = h[3]
if not req or req == '' then req = h[4] end
if req == ARGV[1] then return selfapproval(req) end
redis.call('HSET', KEYS[1], 'approved_by', ARGV[1], 'approved_at', ARGV[3], 'approval_reason', ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'hold', 'cooloff', 'starts_at', ARGV[4], 'starts_at_ms', ARGV[5], 'cooloff_member', ARGV[6])
  return reply('approved')
end
redis.call('HDEL', KEYS[1], 'hold')
return reply(h[1])
`)

// startScript ends a job's cool-off once its start is due by Redis's clock.
// KEYS: job hash. ARGV: the cool-off index member ("" for an older
// version's, naming the job alone), the call's token (callToken, kept in
// start_call). Returns 1 if it started the job, or if this call did
// already (run again by go-redis, its first answer lost); 0 if the start
// is not due yet; -1 if the job is gone, no longer in a cool-off
// (cancelled, or started by another call) or in another approval's (the
// member is stale).
var startScript = redis.NewScript(replyLua + `
local h = redis.call('HMGET', KEYS[1], 'status', 'hold', 'starts_at_ms', 'cooloff_member', 'start_call')
if h[1] and h[2] ~= 'cooloff' and ARGV[2] ~= '' and h[5] == ARGV[2] then return reply(1) end -- run again: its answer was lost
if not h[1] or h[2] ~= 'cooloff' then return reply(-1) end
if ARGV[1] ~= '' and h[4] ~= ARGV[1] then return reply(-1) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(h[3] or '0') > now then return reply(0) end
redis.call('HDEL', KEYS[1], 'hold')
redis.call('HSET', KEYS[1], 'start_call', ARGV[2])
return reply(1)
`)

// Approve approves a job awaiting approval on behalf of approver (a
// principal, compared with the job's Requester), for reason. It records
// ApprovedBy, ApprovedAt (Redis's clock) and the reason on the job and
// writes an "approve" audit event. With delay 0 the job's parked tasks are
// released at once (by the workers' unparkers) and it runs; with delay > 0
// it enters a cool-off (status approved, Job.StartsAt) in which nothing is
// sent and Cancel still stops it, and StartDue releases it at StartsAt.
//
// It refuses with *SelfApprovalError when approver is the requester, and
// with *StatusError when the job is not awaiting approval (never held,
// already approved, cancelled, done, ...).
func (s *Store) Approve(ctx context.Context, jobID, approver, reason string, delay time.Duration) (Job, error) {
	approver = strings.TrimSpace(approver)
	switch {
	case approver == "":
		return Job{}, errors.New("approver: required (who approves, for the audit record)")
	case delay < 0:
		return Job{}, fmt.Errorf("approval delay: %s must not be negative", delay)
	}
	j, err := s.Get(ctx, jobID)
	if err != nil {
		return Job{}, err
	}
	// The refusals are checked here before the audit event is written, and
	// again atomically by the script.
	if j.Status != StatusAwaitingApproval {
		return Job{}, &StatusError{JobID: jobID, Status: j.Status, Action: "approving"}
	}
	if req := cmpRequester(j); req == approver {
		return Job{}, &SelfApprovalError{JobID: jobID, Requester: req}
	}
	now, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return Job{}, fmt.Errorf("approving job %s: reading Redis's clock: %w", jobID, err)
	}
	detail := reason
	startsAt, startsMs, member := "", int64(0), ""
	if delay > 0 {
		starts := now.Add(delay).UTC()
		startsAt, startsMs, member = starts.Format(time.RFC3339Nano), starts.UnixMilli(), newCoolOffMember(jobID)
		detail = strings.TrimSpace(detail + " (starts at " + starts.Format(time.RFC3339) + ")")
		// Indexed first: a job in a cool-off is always found by StartDue
		// (which drops entries of jobs that are not, or of another
		// approval).
		if err := s.rdb.ZAdd(ctx, s.coolOffKey(), redis.Z{Score: float64(startsMs), Member: member}).Err(); err != nil {
			return Job{}, fmt.Errorf("approving job %s: %w", jobID, err)
		}
	}
	if err := s.Audit(ctx, Event{Actor: approver, Action: "approve", JobID: jobID, Detail: detail}); err != nil {
		return Job{}, err
	}
	_, err = s.runScript(ctx, approveScript, jobID, "approving", []string{s.jobKey(jobID)},
		approver, reason, now.UTC().Format(time.RFC3339Nano), startsAt, startsMs, member)
	if err != nil {
		// Refused after all (another approval, or a cancel, came first):
		// the trail says so next to the approval it recorded, and this
		// approval's start leaves the index (the winner's stays). On any
		// other error the script may have run: the entry stays, and
		// StartDue drops it if it is stale.
		var se *StatusError
		var self *SelfApprovalError
		refused := errors.As(err, &se) || errors.As(err, &self) || errors.Is(err, ErrNotFound)
		if refused && member != "" {
			_ = s.rdb.ZRem(context.WithoutCancel(ctx), s.coolOffKey(), member).Err()
		}
		if se != nil {
			_ = s.Audit(context.WithoutCancel(ctx), Event{Actor: approver, Action: "approve_refused", JobID: jobID, Detail: err.Error()})
		}
		return Job{}, err
	}
	return s.Get(ctx, jobID)
}

// cmpRequester is the principal a job's approver must differ from.
func cmpRequester(j Job) string {
	if j.Requester != "" {
		return j.Requester
	}
	return j.RequestedBy
}

// StartDue ends the cool-off of every approved job whose StartsAt has come
// (by Redis's clock) and returns their ids: their parked tasks are then
// released by Unpark. Workers' unparkers call it; two at once start a job
// once.
func (s *Store) StartDue(ctx context.Context) ([]string, error) {
	now, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("starting approved jobs: reading Redis's clock: %w", err)
	}
	ids, err := s.rdb.ZRangeByScore(ctx, s.coolOffKey(), &redis.ZRangeBy{
		Min: "-inf", Max: fmt.Sprint(now.UnixMilli()), Count: 100,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("listing approved jobs due to start: %w", err)
	}
	var started []string
	for _, m := range ids {
		id, approval := parseCoolOffMember(m)
		n, err := replyInt(s.runScript(ctx, startScript, id, "starting after the cool-off", []string{s.jobKey(id)}, approval, callToken()))
		if err != nil {
			return started, err
		}
		if n == 0 {
			continue // Redis's clock and the score disagree by a millisecond: next time
		}
		if n == 1 {
			started = append(started, id)
			if err := s.Audit(ctx, Event{Actor: "imrecall", Action: "start", JobID: id, Detail: "cool-off over"}); err != nil {
				return started, err
			}
		}
		if err := s.rdb.ZRem(ctx, s.coolOffKey(), m).Err(); err != nil {
			return started, fmt.Errorf("starting job %s after the cool-off: %w", id, err)
		}
	}
	return started, nil
}

// Held reports whether a job is held (awaiting approval, or in its
// cool-off): its tasks are parked and nothing of it is sent. Store.Status
// does not count a hold as a pause (discovery goes on under a hold).
func (s *Store) Held(ctx context.Context, jobID string) (bool, error) {
	h, err := s.rdb.HMGet(ctx, s.jobKey(jobID), "status", holdField).Result()
	if err != nil {
		return false, fmt.Errorf("reading the hold of job %s: %w", jobID, err)
	}
	st, _ := h[0].(string)
	if st == "" {
		return false, fmt.Errorf("job %s: %w", jobID, ErrNotFound)
	}
	hold, _ := h[1].(string)
	return heldStatus(Status(st), hold) != Status(st), nil
}
