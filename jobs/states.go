package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// StatusError is returned when a command does not apply to a job in its
// current status, such as re-queueing the dead letters of a cancelled job.
type StatusError struct {
	JobID  string
	Status Status
	Action string // what was asked, e.g. "re-queueing dead letters of group g1"
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s: job %s is %s", e.Action, e.JobID, e.Status)
	if e.Status == StatusCancelled {
		msg += ": a cancelled job stays cancelled (start a new job to recall its messages)"
	}
	return msg
}

func (s *Store) requeueKey(id string) string { return s.jobKey(id) + ":requeue" }
func (s *Store) parkedKey(id string) string  { return s.jobKey(id) + ":parked" }
func (s *Store) scanKey(id string) string    { return s.jobKey(id) + ":scan" }
func (s *Store) parkedIndexKey() string      { return s.prefix + ":parked" }

// Trip pauses a job on behalf of a worker's breaker (an app-wide error such
// as a wrong SecretKey), with a reason a person can act on; resuming
// (SetPaused false) clears it. A cancelled or done job, or one already
// paused, is left as it is. It reports whether it paused the job.
func (s *Store) Trip(ctx context.Context, jobID, reason string) (bool, error) {
	n, err := s.pause(ctx, jobID, "pausing", "trip", reason)
	if err != nil {
		return false, err
	}
	if n == 1 {
		if err := s.Audit(ctx, Event{Actor: "worker", Action: "pause", JobID: jobID, Detail: reason}); err != nil {
			return true, err
		}
	}
	return n == 1, nil
}

// pause runs pauseScript in mode ("pause", "trip" or "resume") as one
// call, named by a token of its own (see callKey): what says what was
// asked, for the error. It returns 1 if the pause flag changed, else 0.
func (s *Store) pause(ctx context.Context, jobID, what, mode, reason string) (int64, error) {
	keys := []string{s.jobKey(jobID), s.callKey(jobID, callToken())}
	return replyInt(s.runScript(ctx, pauseScript, jobID, what, keys, mode, reason, s.stamp(), callAnswerMillis))
}

// ResumedAt returns when the job was last resumed (zero if never), by
// Redis's clock (Clock): a worker compares it with when its breaker
// tripped, and the resuming host's clock may be off from the worker's. A
// resume recorded by an earlier version has only the resuming host's time.
func (s *Store) ResumedAt(ctx context.Context, jobID string) (time.Time, error) {
	h, err := s.rdb.HMGet(ctx, s.jobKey(jobID), "resumed_at_us", "resumed_at").Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("reading job %s: %w", jobID, err)
	}
	if us, _ := h[0].(string); us != "" {
		if n, err := strconv.ParseInt(us, 10, 64); err == nil {
			return time.UnixMicro(n), nil
		}
	}
	v, _ := h[1].(string)
	if v == "" {
		return time.Time{}, nil
	}
	t, _ := time.Parse(time.RFC3339Nano, v)
	return t, nil
}

// Clock returns Redis's time: the one clock every process sharing the
// store reads alike (ResumedAt is on it).
func (s *Store) Clock(ctx context.Context) (time.Time, error) {
	t, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("reading Redis's clock: %w", err)
	}
	return t, nil
}

// ParkedTask is a paused job's task, stored aside until the job is resumed
// or cancelled. Requeue it with its type, payload and queue under TaskID.
type ParkedTask struct {
	Type     string    `json:"type"`
	Payload  []byte    `json:"payload"`
	Queue    string    `json:"queue"`
	TaskID   string    `json:"task_id"` // a fresh ID: the original's with the park number
	ParkedAt time.Time `json:"parked_at"`

	raw string // the list entry, for DropParked
}

// Park stores a task of jobID aside if the job is paused (and not
// cancelled), and reports whether it did: the caller then completes the
// task, which thus stops cycling through the queue. origID is the task's
// ID; the parked task gets origID + ":p" + the park number, so that it
// cannot collide with the task being completed. One call parks the task at
// most once, even when go-redis sends the script again (its answer lost).
func (s *Store) Park(ctx context.Context, jobID, typ string, payload []byte, queue, origID string) (bool, error) {
	rec, err := json.Marshal(ParkedTask{Type: typ, Payload: payload, Queue: queue, TaskID: origID, ParkedAt: s.now().UTC()})
	if err != nil {
		return false, fmt.Errorf("encoding a parked task: %w", err)
	}
	// The index goes first: a worker that drops an index entry checks the
	// list afterwards (see ParkedJobs), so no parked list is left unindexed.
	if err := s.rdb.SAdd(ctx, s.parkedIndexKey(), jobID).Err(); err != nil {
		return false, fmt.Errorf("parking a task of job %s: %w", jobID, err)
	}
	keys := []string{s.jobKey(jobID), s.parkedKey(jobID), s.callKey(jobID, callToken())}
	n, err := replyInt(s.runScript(ctx, parkScript, jobID, "parking a task", keys, string(rec), callAnswerMillis))
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// ParkedJobs returns the jobs that may have parked tasks.
func (s *Store) ParkedJobs(ctx context.Context) ([]string, error) {
	ids, err := s.rdb.SMembers(ctx, s.parkedIndexKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("listing jobs with parked tasks: %w", err)
	}
	return ids, nil
}

// Parked returns up to n of the oldest parked tasks of a job.
func (s *Store) Parked(ctx context.Context, jobID string, n int) ([]ParkedTask, error) {
	raw, err := s.rdb.LRange(ctx, s.parkedKey(jobID), 0, int64(n-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading parked tasks of job %s: %w", jobID, err)
	}
	out := make([]ParkedTask, 0, len(raw))
	for _, r := range raw {
		num, rec, _ := strings.Cut(r, "|")
		var p ParkedTask
		if err := json.Unmarshal([]byte(rec), &p); err != nil {
			return nil, fmt.Errorf("decoding a parked task of job %s: %w", jobID, err)
		}
		p.TaskID += ":p" + num
		p.raw = r
		out = append(out, p)
	}
	return out, nil
}

// DropParked removes parked tasks (as Parked returned them) of a job once
// they are queued again; each entry is unique, so two workers dropping the
// same tasks remove them once and nothing else. When none is left, the job
// leaves the index (and comes back if a task was parked meanwhile).
func (s *Store) DropParked(ctx context.Context, jobID string, done []ParkedTask) error {
	if len(done) > 0 {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, t := range done {
				p.LRem(ctx, s.parkedKey(jobID), 1, t.raw)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("dropping parked tasks of job %s: %w", jobID, err)
		}
	}
	return s.unindexParked(ctx, jobID)
}

func (s *Store) unindexParked(ctx context.Context, jobID string) error {
	n, err := s.rdb.LLen(ctx, s.parkedKey(jobID)).Result()
	if err != nil || n > 0 {
		return err
	}
	// Drop the entry first, then look again: a task parked meanwhile
	// (Park indexes before it pushes) puts it back, or is seen here.
	if err := s.rdb.SRem(ctx, s.parkedIndexKey(), jobID).Err(); err != nil {
		return err
	}
	if n, err = s.rdb.LLen(ctx, s.parkedKey(jobID)).Result(); err != nil || n == 0 {
		return err
	}
	return s.rdb.SAdd(ctx, s.parkedIndexKey(), jobID).Err()
}

// ParkedCount returns how many tasks of a job are parked.
func (s *Store) ParkedCount(ctx context.Context, jobID string) (int64, error) {
	return s.rdb.LLen(ctx, s.parkedKey(jobID)).Result()
}

// FailPlanner closes a planning unit that failed for good (a discovery
// target whose history could not be read) and records cause on the job:
// the other units go on planning, and the job ends failed once planning is
// over. Closing a unit twice counts it once. It returns the job's status.
func (s *Store) FailPlanner(ctx context.Context, jobID, unit string, cause error) (Status, error) {
	st, err := replyString(s.runScript(ctx, failPlannerScript, jobID, "failing planner "+unit,
		[]string{s.jobKey(jobID), s.plannersKey(jobID)}, s.stamp(), unit, cause.Error()))
	return Status(st), err
}

// ScanCheckpoint returns the checkpoint saved for a planning unit (a
// discovery scan), or "" if none.
func (s *Store) ScanCheckpoint(ctx context.Context, jobID, unit string) (string, error) {
	v, err := s.rdb.HGet(ctx, s.scanKey(jobID), unit).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the checkpoint of %s, job %s: %w", unit, jobID, err)
	}
	return v, nil
}

// SaveScanCheckpoint saves a planning unit's checkpoint (opaque to the
// store): where a retried or continued discovery task resumes.
func (s *Store) SaveScanCheckpoint(ctx context.Context, jobID, unit, cp string) error {
	if err := s.rdb.HSet(ctx, s.scanKey(jobID), unit, cp).Err(); err != nil {
		return fmt.Errorf("saving the checkpoint of %s, job %s: %w", unit, jobID, err)
	}
	return nil
}

// Status reads a job's status and pause flag (one small read, for loops
// that check a job often). The status is the one under a hold (see
// Job.Phase) and paused does not count a hold: discovery, which only reads,
// goes on while a job awaits approval. Held says whether a job is held.
func (s *Store) Status(ctx context.Context, jobID string) (Status, bool, error) {
	h, err := s.rdb.HMGet(ctx, s.jobKey(jobID), "status", "paused").Result()
	if err != nil {
		return "", false, fmt.Errorf("reading the status of job %s: %w", jobID, err)
	}
	st, _ := h[0].(string)
	if st == "" {
		return "", false, fmt.Errorf("job %s: %w", jobID, ErrNotFound)
	}
	p, _ := h[1].(string)
	return Status(st), p == "1", nil
}

// RequeueJournal calls fn with the items of each target that a re-queue
// moved back to planned but has not confirmed queued (ConfirmRequeued): a
// re-queue interrupted in between. Items already terminal again are
// included; the handler skips them.
func (s *Store) RequeueJournal(ctx context.Context, jobID string, fn func(Target, []string) error) error {
	fields, err := s.rdb.HKeys(ctx, s.requeueKey(jobID)).Result()
	if err != nil {
		return fmt.Errorf("reading the re-queue journal of job %s: %w", jobID, err)
	}
	by := map[Target][]string{}
	for _, f := range fields {
		suf, item, ok := strings.Cut(f, sep)
		if !ok {
			continue
		}
		// A target suffix holds one separator itself: g:<group>\x1f<topic>.
		topic, it, ok2 := strings.Cut(item, sep)
		if !ok2 {
			continue
		}
		t, err := targetFromSuffix(suf + sep + topic)
		if err != nil {
			return fmt.Errorf("re-queue journal of job %s: %w", jobID, err)
		}
		by[t] = append(by[t], it)
	}
	for t, items := range by {
		if err := fn(t, items); err != nil {
			return err
		}
	}
	return nil
}

// ConfirmRequeued removes items of a target from the re-queue journal once
// their tasks are queued.
func (s *Store) ConfirmRequeued(ctx context.Context, jobID string, t Target, items []string) error {
	if len(items) == 0 {
		return nil
	}
	fields := make([]string, len(items))
	for i, it := range items {
		fields[i] = deadField(t, it)
	}
	if err := s.rdb.HDel(ctx, s.requeueKey(jobID), fields...).Err(); err != nil {
		return fmt.Errorf("confirming re-queued messages of job %s: %w", jobID, err)
	}
	return nil
}
