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

// ErrNotFound is returned for a job id that has no record.
var ErrNotFound = errors.New("job not found")

// ErrClosed is returned when planning more messages into a job that is no
// longer planning (cancelled, failed, or its planning was closed).
var ErrClosed = errors.New("job is not planning")

// DefaultPrefix is the prefix of every key the store writes.
const DefaultPrefix = "imrecall"

// RootPlanner is the planning unit every job opens at creation; the producer
// that created the job closes it when it has planned everything it knows of.
const RootPlanner = "root"

// Store reads and writes job records. It is safe for concurrent use.
type Store struct {
	rdb      redis.UniversalClient
	prefix   string
	now      func() time.Time
	leaseTTL time.Duration // see SetLeaseTTL
}

// NewStore returns a store on rdb. An empty prefix means DefaultPrefix.
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{rdb: rdb, prefix: prefix, now: time.Now, leaseTTL: DefaultLeaseTTL}
}

func (s *Store) indexKey() string        { return s.prefix + ":jobs" }
func (s *Store) auditKey() string        { return s.prefix + ":audit" }
func (s *Store) jobKey(id string) string { return s.prefix + ":job:{" + id + "}" }
func (s *Store) plannersKey(id string) string {
	return s.jobKey(id) + ":planners"
}
func (s *Store) targetsKey(id string) string { return s.jobKey(id) + ":targets" }
func (s *Store) deadKey(id string) string    { return s.jobKey(id) + ":dl" }
func (s *Store) stateKey(id string, t Target) string {
	return s.jobKey(id) + ":" + t.suffix()
}

func (s *Store) stamp() string { return s.now().UTC().Format(time.RFC3339Nano) }

// Create records a new job in status planning, with the root planning unit
// open, and writes an audit event. With spec.HoldForApproval the job is
// held: its status reads awaiting_approval until Approve (see
// StatusAwaitingApproval).
func (s *Store) Create(ctx context.Context, spec Spec) (Job, error) {
	if err := spec.Validate(); err != nil {
		return Job{}, err
	}
	now := s.now()
	id := newID(now)
	fields := map[string]any{
		"id":            id,
		"kind":          spec.Kind,
		"queue":         spec.Queue,
		"sdkappid":      spec.AppID,
		"requested_by":  spec.RequestedBy,
		"reason":        spec.Reason,
		"params":        string(spec.Params),
		"status":        string(StatusPlanning),
		"created_at":    now.UTC().Format(time.RFC3339Nano),
		"planned":       0,
		"recalled":      0,
		"dead_lettered": 0,
		"generation":    0,
		"requester":     spec.requester(),
		"layout":        layoutBuckets,
	}
	detail := strings.TrimSpace(spec.Kind + " " + spec.Reason)
	if spec.Backlog > 0 {
		fields["backlog"] = spec.Backlog
	}
	if spec.HoldForApproval {
		fields[holdField] = holdApproval
		fields["held"] = "1"
		detail += " (held for approval)"
	}
	// The audit event goes first: no job exists that the audit trail misses.
	if err := s.Audit(ctx, Event{Actor: spec.RequestedBy, Action: "create", JobID: id, Detail: detail}); err != nil {
		return Job{}, err
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.jobKey(id), fields)
		p.SAdd(ctx, s.plannersKey(id), RootPlanner)
		s.renewIn(ctx, p, id, RootPlanner) // the root planner's lease: see Hold
		return nil
	})
	if err != nil {
		return Job{}, fmt.Errorf("creating job record: %w", err)
	}
	if err := s.rdb.ZAdd(ctx, s.indexKey(), redis.Z{Score: float64(now.UnixMilli()), Member: id}).Err(); err != nil {
		return Job{}, fmt.Errorf("indexing job %s: %w", id, err)
	}
	if err := s.MarkOpen(ctx, id); err != nil {
		return Job{}, err
	}
	return s.Get(ctx, id)
}

// Get reads a job record.
func (s *Store) Get(ctx context.Context, id string) (Job, error) {
	if err := ValidID(id); err != nil {
		return Job{}, err
	}
	h, err := s.rdb.HGetAll(ctx, s.jobKey(id)).Result()
	if err != nil {
		return Job{}, fmt.Errorf("reading job %s: %w", id, err)
	}
	if len(h) == 0 {
		return Job{}, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	return parseJob(h)
}

func parseJob(h map[string]string) (Job, error) {
	num := func(k string) int64 { n, _ := strconv.ParseInt(h[k], 10, 64); return n }
	ts := func(k string) *time.Time {
		if h[k] == "" {
			return nil
		}
		t, err := time.Parse(time.RFC3339Nano, h[k])
		if err != nil {
			return nil
		}
		return &t
	}
	j := Job{
		ID:          h["id"],
		Kind:        h["kind"],
		Queue:       h["queue"],
		AppID:       num("sdkappid"),
		RequestedBy: h["requested_by"],
		Reason:      h["reason"],
		Status:      Status(h["status"]),
		Paused:      h["paused"] == "1",
		PauseReason: h["pause_reason"],
		FailedUnits: int(num("failed_units")),
		Error:       h["error"],
		StartedAt:   ts("started_at"),
		FinishedAt:  ts("finished_at"),
		Generation:  int(num("generation")),
		Backlog:     num("backlog"),
		Calls:       num("calls"),
		Counts: Counts{
			Planned:              num("planned"),
			Recalled:             num("recalled"),
			RecalledUnattributed: num("recalled_unattributed"),
			DeadLettered:         num("dead_lettered"),
		},
	}
	j.PlanningInterrupted = parseInterruption(h)
	parseApproval(h, &j, ts)
	if h["params"] != "" {
		j.Params = json.RawMessage(h["params"])
	}
	if c := ts("created_at"); c != nil {
		j.CreatedAt = *c
	}
	j.Counts.Pending = j.Counts.Planned - j.Counts.Recalled - j.Counts.DeadLettered
	for k, v := range h {
		if code, ok := strings.CutPrefix(k, "dl:"); ok {
			if n, _ := strconv.ParseInt(v, 10, 64); n > 0 {
				if j.Counts.DeadByCode == nil {
					j.Counts.DeadByCode = map[string]int64{}
				}
				j.Counts.DeadByCode[code] = n
			}
		}
	}
	return j, nil
}

// List returns up to limit jobs, newest first (limit ≤ 0 means 50).
func (s *Store) List(ctx context.Context, limit int) ([]Job, error) {
	if limit <= 0 {
		limit = 50
	}
	ids, err := s.rdb.ZRevRange(ctx, s.indexKey(), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	out := make([]Job, 0, len(ids))
	for _, id := range ids {
		j, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// PlanGroup records seqs of a group target as planned and returns those that
// were not planned before, in the order given: the caller enqueues only
// those, so duplicates (in a file, or across discovery passes) are removed.
func (s *Store) PlanGroup(ctx context.Context, jobID string, t Target, seqs []int64) ([]int64, error) {
	items := make([]string, len(seqs))
	for i, q := range seqs {
		items[i] = strconv.FormatInt(q, 10)
	}
	fresh, err := s.plan(ctx, jobID, t, items)
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(fresh))
	for i, f := range fresh {
		out[i], _ = strconv.ParseInt(f, 10, 64)
	}
	return out, nil
}

// PlanC2C records MsgKeys of a one-to-one target as planned and returns the
// new ones (see PlanGroup).
func (s *Store) PlanC2C(ctx context.Context, jobID string, t Target, keys []string) ([]string, error) {
	return s.plan(ctx, jobID, t, keys)
}

func (s *Store) plan(ctx context.Context, jobID string, t Target, items []string) ([]string, error) {
	return s.PlanJournaled(ctx, jobID, t, items, "", nil)
}

// OpenPlanner opens a planning unit (such as one discovery task): the job
// stays in planning until every unit is closed. Opening twice is harmless.
func (s *Store) OpenPlanner(ctx context.Context, jobID, unit string) error {
	_, err := s.runScript(ctx, openPlannerScript, jobID, "opening planner "+unit, []string{s.jobKey(jobID), s.plannersKey(jobID)}, unit)
	return err
}

// ClosePlanner closes a planning unit; closing the last one ends planning.
// Closing twice is harmless. It returns the job's status afterwards.
func (s *Store) ClosePlanner(ctx context.Context, jobID, unit string) (Status, error) {
	st, err := replyString(s.runScript(ctx, closePlannerScript, jobID, "closing planner "+unit,
		[]string{s.jobKey(jobID), s.plannersKey(jobID)}, s.stamp(), unit))
	return Status(st), err
}

// ItemState is what Begin found for one message.
type ItemState int

// Item states other than a count of earlier sends (0 = never sent).
const (
	ItemRecalled     ItemState = -1
	ItemDeadLettered ItemState = -2
	ItemUnplanned    ItemState = -3
)

// Terminal reports whether the message needs no more work.
func (s ItemState) Terminal() bool { return s < 0 }

// Begin is what Begin found: the job's status and each message's state.
type Begin struct {
	Status Status
	Paused bool
	// States has one entry per item: the number of sends before this one
	// (0 = fresh), or a terminal state. Sends are counted only if the job is
	// neither cancelled nor paused.
	States []ItemState
	// Answered[i] is true when every earlier send of item i was answered
	// (see MarkAnswered); false with States[i] > 0 means the last send's
	// outcome is unknown (the worker died, or the call timed out).
	Answered []bool
}

// BeginGroup is called right before a group_msg_recall call for seqs, once
// the limiter has let the call go: it counts the send. A worker stopped
// before this has sent nothing that a later delivery must suspect.
func (s *Store) BeginGroup(ctx context.Context, jobID string, t Target, seqs []int64) (Begin, error) {
	return s.begin(ctx, jobID, t, seqItems(seqs), true)
}

// BeginC2C is called right before an admin_msgwithdraw call for key (see
// BeginGroup).
func (s *Store) BeginC2C(ctx context.Context, jobID string, t Target, key string) (Begin, error) {
	return s.begin(ctx, jobID, t, []string{key}, true)
}

// PeekGroup reads what BeginGroup would, without counting a send: a worker
// looks before it waits for the limiter, so that a cancelled or paused job,
// or messages already settled, take none of the cap.
func (s *Store) PeekGroup(ctx context.Context, jobID string, t Target, seqs []int64) (Begin, error) {
	return s.begin(ctx, jobID, t, seqItems(seqs), false)
}

// PeekC2C reads what BeginC2C would, without counting a send (see PeekGroup).
func (s *Store) PeekC2C(ctx context.Context, jobID string, t Target, key string) (Begin, error) {
	return s.begin(ctx, jobID, t, []string{key}, false)
}

func seqItems(seqs []int64) []string {
	items := make([]string, len(seqs))
	for i, q := range seqs {
		items[i] = strconv.FormatInt(q, 10)
	}
	return items
}

func (s *Store) begin(ctx context.Context, jobID string, t Target, items []string, count bool) (Begin, error) {
	flag := "0"
	if count {
		flag = "1"
	}
	argv := make([]any, 0, len(items)+1)
	argv = append(argv, flag)
	for _, it := range items {
		argv = append(argv, it)
	}
	res, err := replyList(s.runScript(ctx, beginScript, jobID, "starting a call for "+t.String(),
		s.stateKeys(jobID, t, items, s.jobKey(jobID), s.stateKey(jobID, t)), argv...))
	if err != nil {
		return Begin{}, err
	}
	if len(res) != len(items)+2 {
		return Begin{}, fmt.Errorf("starting a call for %s: job %s: script returned %d values for %d items", t, jobID, len(res), len(items))
	}
	b := Begin{Status: Status(fmt.Sprint(res[0])), Paused: fmt.Sprint(res[1]) == "1"}
	for _, v := range res[2:] {
		n, _ := v.(int64)
		answered := n >= answeredMark
		if answered {
			n -= answeredMark
		}
		b.States = append(b.States, ItemState(n))
		b.Answered = append(b.Answered, answered)
	}
	return b, nil
}

// answeredMark is how beginScript flags an answered state.
const answeredMark = 1000000

// Answer names one send of a message whose answer came and did not recall
// it (see MarkAnswered).
type Answer struct {
	Item string // the seq (decimal) or the MsgKey
	Send int    // which send: the n-th that Begin counted for the message (States + 1)
}

// MarkAnswered notes that each answer's send was answered without recalling
// the message, so a later delivery of its task need not check the history.
// A send that is no longer the message's last is left alone: the later send
// (another delivery of the same task, counted meanwhile) may have recalled
// the message unheard, and stays unanswered.
func (s *Store) MarkAnswered(ctx context.Context, jobID string, t Target, answers []Answer) error {
	if len(answers) == 0 {
		return nil
	}
	items := make([]string, len(answers))
	argv := make([]any, 0, 2*len(answers))
	for i, a := range answers {
		items[i] = a.Item
		argv = append(argv, a.Item, strconv.Itoa(a.Send))
	}
	if err := answeredScript.Run(ctx, s.rdb, s.stateKeys(jobID, t, items, s.jobKey(jobID), s.stateKey(jobID, t)), argv...).Err(); err != nil {
		return fmt.Errorf("noting answers for %s: job %s: %w", t, jobID, err)
	}
	return nil
}

// Outcome is the terminal outcome of one message.
type Outcome struct {
	Item     string // the seq (decimal) or the MsgKey
	Recalled bool
	// Unattributed marks a recall found after a call whose answer was lost
	// (see Counts.RecalledUnattributed).
	Unattributed bool
	Code         string // dead-letter code when not recalled: a Tencent code or Code*
	ErrorInfo    string
	Attempts     int
	// InDoubt marks a dead letter whose earlier call went unanswered (it
	// may have recalled the message unheard): re-queued, it goes back as
	// sent and unanswered, as the UnansweredCodes do (DeadLetter.InDoubt).
	InDoubt bool
}

// Record moves messages of one target to their terminal states and returns
// how many changed (messages already terminal are left as they are). Dead
// letters are written durably in the same step.
func (s *Store) Record(ctx context.Context, jobID string, t Target, outcomes []Outcome) (int, error) {
	if len(outcomes) == 0 {
		return 0, nil
	}
	now := s.now()
	argv := make([]any, 0, 1+5*len(outcomes))
	argv = append(argv, now.UTC().Format(time.RFC3339Nano))
	for _, o := range outcomes {
		if o.Recalled {
			state := "r"
			if o.Unattributed {
				state = "u"
			}
			argv = append(argv, o.Item, state, "", "", "")
			continue
		}
		if o.Code == "" {
			return 0, fmt.Errorf("recording %s item %s: a dead letter needs a code", t, o.Item)
		}
		dl := DeadLetter{
			JobID: jobID, Ref: Ref{GroupID: t.GroupID, TopicID: t.TopicID, From: t.From, To: t.To},
			Code: o.Code, ErrorInfo: o.ErrorInfo, Category: CategoryOf(o.Code), Attempts: o.Attempts, At: now.UTC(),
			InDoubt: o.InDoubt,
		}
		if t.IsGroup() {
			dl.MsgSeq, _ = strconv.ParseInt(o.Item, 10, 64)
		} else {
			dl.MsgKey = o.Item
		}
		rec, err := json.Marshal(dl)
		if err != nil {
			return 0, fmt.Errorf("encoding dead letter: %w", err)
		}
		argv = append(argv, o.Item, "d", o.Code, deadField(t, o.Item), string(rec))
	}
	items := make([]string, len(outcomes))
	for i, o := range outcomes {
		items[i] = o.Item
	}
	keys := s.stateKeys(jobID, t, items, s.jobKey(jobID), s.stateKey(jobID, t), s.deadKey(jobID), s.plannersKey(jobID))
	n, err := recordScript.Run(ctx, s.rdb, keys, argv...).Int()
	if err != nil {
		return 0, fmt.Errorf("recording outcomes for %s: job %s: %w", t, jobID, err)
	}
	return n, nil
}

func deadField(t Target, item string) string { return t.suffix() + sep + item }

// Cancel cancels a job that is planning, running or failed: planning stops
// (every planning unit is closed; discovery tasks stop at their next page),
// a pause is lifted, and workers drop its pending messages, parked ones
// included, without calling the API, dead-lettering them as "cancelled".
// A held job (awaiting approval, or approved in its cool-off) is cancelled
// alike: its hold ends, and its parked tasks come back to be dead-lettered.
// A done or cancelled job keeps its status, which is returned.
func (s *Store) Cancel(ctx context.Context, jobID, actor, reason string) (Status, error) {
	if err := s.Audit(ctx, Event{Actor: actor, Action: "cancel", JobID: jobID, Detail: reason}); err != nil {
		return "", err
	}
	st, err := s.setStatus(ctx, jobID, StatusCancelled, "")
	if err == nil && st == StatusCancelled {
		// No longer in a cool-off, if it was (StartDue would drop it too).
		members := []any{jobID}
		if m, _ := s.rdb.HGet(ctx, s.jobKey(jobID), coolOffMember).Result(); m != "" {
			members = append(members, m)
		}
		_ = s.rdb.ZRem(ctx, s.coolOffKey(), members...).Err()
	}
	return st, err
}

// Fail marks a job failed (planning could not finish) if it is planning or
// running. Messages already planned are still recalled and accounted for.
func (s *Store) Fail(ctx context.Context, jobID string, cause error) (Status, error) {
	return s.setStatus(ctx, jobID, StatusFailed, cause.Error())
}

func (s *Store) setStatus(ctx context.Context, jobID string, st Status, msg string) (Status, error) {
	res, err := replyString(s.runScript(ctx, setStatusScript, jobID, "setting status "+string(st),
		[]string{s.jobKey(jobID), s.plannersKey(jobID)}, s.stamp(), string(st), msg))
	return Status(res), err
}

// SetPaused pauses or resumes a job. Workers park a paused job's tasks
// (store them aside, see Park) instead of running them, and queue them again
// once it is resumed. A cancelled job cannot be paused (*StatusError);
// resuming clears the pause and its reason (see Trip). The audit record
// holds actor and reason (why, as the operator gave it; may be empty).
func (s *Store) SetPaused(ctx context.Context, jobID, actor, reason string, paused bool) error {
	if _, err := s.Get(ctx, jobID); err != nil {
		return err
	}
	mode, action := "resume", "resume"
	if paused {
		mode, action = "pause", "pause"
	}
	if err := s.Audit(ctx, Event{Actor: actor, Action: action, JobID: jobID, Detail: reason}); err != nil {
		return err
	}
	_, err := s.pause(ctx, jobID, action, mode, "")
	return err
}
