package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Event is one audit record: who did what to which job.
type Event struct {
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	JobID  string    `json:"job_id,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// auditMax bounds the audit stream (approximately); job records themselves
// keep who asked and why for as long as they exist.
const auditMax = 1_000_000

// Audit appends e to the audit stream. Failing to write the audit trail is
// not silent: the error is returned for callers that must refuse to act
// without it, and the event's time is set by the store.
func (s *Store) Audit(ctx context.Context, e Event) error {
	if e.At.IsZero() {
		e.At = s.now().UTC()
	}
	err := s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: s.auditKey(),
		MaxLen: auditMax,
		Approx: true,
		Values: map[string]any{
			"at": e.At.Format(time.RFC3339Nano), "actor": e.Actor, "action": e.Action,
			"job_id": e.JobID, "detail": e.Detail,
		},
	}).Err()
	if err != nil {
		return fmt.Errorf("writing audit event %s %s: %w", e.Action, e.JobID, err)
	}
	return nil
}

// AuditLog returns up to n of the newest audit events, oldest first.
func (s *Store) AuditLog(ctx context.Context, n int64) ([]Event, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, s.auditKey(), "+", "-", n).Result()
	if err != nil {
		return nil, fmt.Errorf("reading audit log: %w", err)
	}
	out := make([]Event, 0, len(msgs))
	for i := len(msgs) - 1; i >= 0; i-- {
		v := msgs[i].Values
		str := func(k string) string { s, _ := v[k].(string); return s }
		at, _ := time.Parse(time.RFC3339Nano, str("at"))
		out = append(out, Event{At: at, Actor: str("actor"), Action: str("action"), JobID: str("job_id"), Detail: str("detail")})
	}
	return out, nil
}

// DeadLetters calls fn for every dead letter of a job, in no particular
// order, streaming (HSCAN) so that a million dead letters need no memory.
func (s *Store) DeadLetters(ctx context.Context, jobID string, fn func(DeadLetter) error) error {
	if err := ValidID(jobID); err != nil {
		return err
	}
	iter := s.rdb.HScan(ctx, s.deadKey(jobID), 0, "", 1000).Iterator()
	field := true
	for iter.Next(ctx) {
		if field {
			field = false
			continue
		}
		field = true
		var d DeadLetter
		if err := json.Unmarshal([]byte(iter.Val()), &d); err != nil {
			return fmt.Errorf("decoding a dead letter of job %s: %w", jobID, err)
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("listing dead letters of job %s: %w", jobID, err)
	}
	return nil
}

// Requeue moves the given dead letters of one target back to planned and
// returns the items moved; the caller enqueues them again (with a new
// generation, see NextGeneration) and then calls ConfirmRequeued. Until
// then each moved item is in the job's re-queue journal, so that a re-queue
// interrupted between the two steps can be finished (RequeueJournal). A
// cancelled job is refused with a *StatusError; the job's status otherwise
// follows the state table (a job still planning stays planning). A dead
// letter of one of the UnansweredCodes moves back as sent and unanswered,
// not as planned: its earlier call may have recalled it unheard, and the
// next delivery checks the history before it counts a 10030 or 20023 as
// gone before the job.
func (s *Store) Requeue(ctx context.Context, jobID string, t Target, items []string) ([]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	argv := make([]any, 0, 1+2*len(items))
	argv = append(argv, callToken())
	for _, it := range items {
		argv = append(argv, it, deadField(t, it))
	}
	keys := s.stateKeys(jobID, t, items, s.jobKey(jobID), s.stateKey(jobID, t), s.deadKey(jobID), s.requeueKey(jobID))
	return replyStrings(s.runScript(ctx, requeueScript, jobID, "re-queueing dead letters of "+t.String(), keys, argv...))
}

// NextGeneration increments and returns the job's generation, which makes
// the task IDs of a re-queue distinct from the first run's.
func (s *Store) NextGeneration(ctx context.Context, jobID string) (int, error) {
	n, err := s.rdb.HIncrBy(ctx, s.jobKey(jobID), "generation", 1).Result()
	if err != nil {
		return 0, fmt.Errorf("job %s: next generation: %w", jobID, err)
	}
	return int(n), nil
}

// Recount is a job's counts recomputed from the per-message states, for
// proving that the counters are exact.
type Recount struct {
	Planned      int64            `json:"planned"`
	Recalled     int64            `json:"recalled"`
	DeadLettered int64            `json:"dead_lettered"`
	Pending      int64            `json:"pending"`
	DeadByCode   map[string]int64 `json:"dead_lettered_by_code,omitempty"`
	DeadRecords  int64            `json:"dead_letter_records"`
	// RecalledUnattributed is the part of Recalled in state "u".
	RecalledUnattributed int64 `json:"recalled_unattributed,omitempty"`
}

// Recount walks every message state of a job. It reads the whole job, so it
// is for checks and reports, not hot paths.
func (s *Store) Recount(ctx context.Context, jobID string) (Recount, error) {
	var rc Recount
	targets, err := s.rdb.SMembers(ctx, s.targetsKey(jobID)).Result()
	if err != nil {
		return rc, fmt.Errorf("recounting job %s: %w", jobID, err)
	}
	for _, suf := range targets {
		t, err := targetFromSuffix(suf)
		if err != nil {
			return rc, fmt.Errorf("recounting job %s: %w", jobID, err)
		}
		err = s.walkStates(ctx, jobID, t, func(_, v string) error {
			rc.Planned++
			switch {
			case v == "r":
				rc.Recalled++
			case v == "u":
				rc.Recalled++
				rc.RecalledUnattributed++
			case strings.HasPrefix(v, "d:"):
				rc.DeadLettered++
				if rc.DeadByCode == nil {
					rc.DeadByCode = map[string]int64{}
				}
				rc.DeadByCode[v[2:]]++
			default:
				rc.Pending++
			}
			return nil
		})
		if err != nil {
			return rc, fmt.Errorf("recounting job %s: %w", jobID, err)
		}
	}
	n, err := s.rdb.HLen(ctx, s.deadKey(jobID)).Result()
	if err != nil {
		return rc, fmt.Errorf("recounting job %s dead letters: %w", jobID, err)
	}
	rc.DeadRecords = n
	return rc, nil
}

// Matches reports whether the recount agrees with the job's counters.
func (rc Recount) Matches(c Counts) error { return rc.Between(c, c) }

// Between reports whether rc, recounted while the counters went from a to
// b (workers recording outcomes meanwhile), agrees with them: every count
// lies between its values before and after (pending within the messages
// planned meanwhile too), since each message's state and the counters move
// together. With a equal to b it is Matches: every count exact.
func (rc Recount) Between(a, b Counts) error {
	var diffs []string
	chk := func(name string, got, x, y, slack int64) {
		lo, hi := min(x, y)-slack, max(x, y)+slack
		switch {
		case got >= lo && got <= hi:
		case lo == hi:
			diffs = append(diffs, fmt.Sprintf("%s: counter %d, states %d", name, lo, got))
		default:
			diffs = append(diffs, fmt.Sprintf("%s: counter %d to %d while recounted, states %d", name, lo, hi, got))
		}
	}
	chk("planned", rc.Planned, a.Planned, b.Planned, 0)
	chk("recalled", rc.Recalled, a.Recalled, b.Recalled, 0)
	chk("recalled_unattributed", rc.RecalledUnattributed, a.RecalledUnattributed, b.RecalledUnattributed, 0)
	chk("dead_lettered", rc.DeadLettered, a.DeadLettered, b.DeadLettered, 0)
	chk("pending", rc.Pending, a.Pending, b.Pending, abs(b.Planned-a.Planned))
	chk("dead letter records", rc.DeadRecords, a.DeadLettered, b.DeadLettered, 0)
	codes := map[string]int64{}
	for _, m := range []map[string]int64{rc.DeadByCode, a.DeadByCode, b.DeadByCode} {
		for code := range m {
			codes[code] = 0
		}
	}
	for _, code := range sortedCodes(codes) {
		chk("dead_lettered["+code+"]", rc.DeadByCode[code], a.DeadByCode[code], b.DeadByCode[code], 0)
	}
	if len(diffs) > 0 {
		return fmt.Errorf("counts do not reconcile: %s", strings.Join(diffs, "; "))
	}
	return nil
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}
