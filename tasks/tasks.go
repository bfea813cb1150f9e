// Package tasks is imrecall's wire contract: the asynq task type names, their
// typed payloads, the queues and their priorities. It does no I/O.
//
// Task type names and JSON field names are part of the wire format: never
// rename them in place. Fields that mirror Tencent's API keep Tencent's
// spelling (GroupId, From_Account); imrecall's own are snake_case.
package tasks

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hibiken/asynq"
)

// Task type names. Wire format: do not rename.
const (
	// TypeGroupRecall recalls 1 to 10 messages of one group (or one topic of a
	// Community) with one group_msg_recall call.
	TypeGroupRecall = "recall:group"
	// TypeC2CWithdraw recalls one one-to-one message with admin_msgwithdraw.
	TypeC2CWithdraw = "recall:c2c"
)

// MaxSeqsPerCall is the most MsgSeq one group_msg_recall call accepts.
const MaxSeqsPerCall = 10

// Queue names. A higher priority queue is always served first (the worker
// runs asynq with strict priority), so an incident cleanup overtakes a purge,
// and a purge overtakes a backfill.
const (
	QueueIncident = "incident"
	QueuePurge    = "purge"
	QueueBackfill = "backfill"
)

// Queues maps every queue to its priority, highest first.
var Queues = map[string]int{
	QueueIncident: 6,
	QueuePurge:    3,
	QueueBackfill: 1,
}

// Lanes. A task holds its worker slot while it waits for its API's share of
// the cap, so tasks of APIs with caps of their own must not share slots: a
// backlog of one-to-one withdrawals waiting for admin_msgwithdraw would
// otherwise take every slot while group_msg_recall sat idle, and discovery
// scans, which hold a slot for a whole history, would take the slots of the
// recall tasks they produce. So each kind of task has a lane: a queue per
// priority, and slots of its own in every worker. Group recall tasks (and
// schedule firings) use Queues themselves; one-to-one withdrawals and
// discovery use the queues below.

// C2CQueue is the queue of the one-to-one withdraw tasks of jobs on queue q.
func C2CQueue(q string) string { return "c2c-" + q }

// DiscoveryQueue is the queue of the discovery tasks of jobs on queue q.
func DiscoveryQueue(q string) string { return "discover-" + q }

// C2CQueues maps every one-to-one withdraw queue to its priority.
var C2CQueues = laneQueues(C2CQueue)

// DiscoveryQueues maps every discovery queue to its priority.
var DiscoveryQueues = laneQueues(DiscoveryQueue)

func laneQueues(name func(string) string) map[string]int {
	m := make(map[string]int, len(Queues))
	for q, prio := range Queues {
		m[name(q)] = prio
	}
	return m
}

// AllQueues lists every queue a worker serves: group recall, one-to-one
// withdraw and discovery, each lane highest priority first.
func AllQueues() []string {
	var out []string
	for _, name := range []func(string) string{func(q string) string { return q }, C2CQueue, DiscoveryQueue} {
		for _, q := range []string{QueueIncident, QueuePurge, QueueBackfill} {
			out = append(out, name(q))
		}
	}
	return out
}

// ValidQueue reports whether q is one of Queues, with an error naming it if not.
func ValidQueue(q string) error {
	if _, ok := Queues[q]; ok {
		return nil
	}
	return fmt.Errorf("queue %q: must be one of %s, %s, %s", q, QueueIncident, QueuePurge, QueueBackfill)
}

// DefaultTimeout bounds one task's run (asynq's own default is 30 minutes).
// A task makes at most a few calls, each bounded by the client's timeout, plus
// retry back-off and limiter waits.
const DefaultTimeout = 5 * time.Minute

// GroupRecall is the payload of TypeGroupRecall.
type GroupRecall struct {
	JobID   string  `json:"job_id"`
	AppID   int64   `json:"sdkappid"`
	GroupID string  `json:"GroupId"`
	TopicID string  `json:"TopicId,omitempty"`
	Seqs    []int64 `json:"seqs"` // 1..10 distinct MsgSeq, each > 0
}

// Validate reports the first problem with p, naming the field. An invalid
// payload is never retried.
func (p GroupRecall) Validate() error {
	if err := validJobApp(p.JobID, p.AppID); err != nil {
		return err
	}
	if strings.TrimSpace(p.GroupID) == "" {
		return errors.New("GroupId: required")
	}
	if n := len(p.Seqs); n < 1 || n > MaxSeqsPerCall {
		return fmt.Errorf("seqs: %d given, want 1 to %d", n, MaxSeqsPerCall)
	}
	seen := make(map[int64]bool, len(p.Seqs))
	for _, s := range p.Seqs {
		if s <= 0 {
			return fmt.Errorf("seqs: MsgSeq %d must be positive", s)
		}
		if seen[s] {
			return fmt.Errorf("seqs: MsgSeq %d given twice", s)
		}
		seen[s] = true
	}
	return nil
}

// C2CWithdraw is the payload of TypeC2CWithdraw.
type C2CWithdraw struct {
	JobID  string `json:"job_id"`
	AppID  int64  `json:"sdkappid"`
	From   string `json:"From_Account"`
	To     string `json:"To_Account"`
	MsgKey string `json:"MsgKey"`
}

// Validate reports the first problem with p, naming the field.
func (p C2CWithdraw) Validate() error {
	if err := validJobApp(p.JobID, p.AppID); err != nil {
		return err
	}
	if strings.TrimSpace(p.From) == "" {
		return errors.New("From_Account: required")
	}
	if strings.TrimSpace(p.To) == "" {
		return errors.New("To_Account: required")
	}
	if err := ValidMsgKey(p.MsgKey); err != nil {
		return err
	}
	return nil
}

// MaxIDLen bounds an account, group or topic ID, far above any Tencent
// issues: a 10 MB GroupId in a list file was planned (and its keys filled
// Redis) before the first recall failed.
const MaxIDLen = 1024

// ValidID checks an account, group or topic ID: at most MaxIDLen bytes,
// valid UTF-8 (a task's JSON payload would carry U+FFFD for the bad bytes,
// so the worker would meet another ID than the one planned) and no control
// character (NUL, a line break). It is the one ID check of every request
// and list.
func ValidID(id string) error {
	if len(id) > MaxIDLen {
		return fmt.Errorf("%d bytes, longer than %d", len(id), MaxIDLen)
	}
	if !utf8.ValidString(id) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return fmt.Errorf("holds a control character (%U)", r)
		}
	}
	return nil
}

// Quote is s as %q writes it, for an error that names a bad value; a value
// longer than 128 bytes is cut to its first 64 (on a character's edge)
// and its length, so that an error does not repeat a megabyte of input.
func Quote(s string) string {
	if len(s) <= 128 {
		return strconv.Quote(s)
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:cut], len(s))
}

// MaxMsgKeyLen is the documented bound of a MsgKey (sendmsg's answer:
// "MsgKey String, at most 50 characters"; ../shared/reference). Every
// MsgKey imrecall takes (tasks, recall lists, the message index) is checked
// against it by ValidMsgKey.
const MaxMsgKeyLen = 50

// ValidMsgKey checks the documented MsgKey shape {MsgSeq}_{MsgRandom}_{MsgTimeStamp},
// at most MaxMsgKeyLen characters. It is the one MsgKey check.
func ValidMsgKey(k string) error {
	if k == "" {
		return errors.New("MsgKey: required")
	}
	if len(k) > MaxMsgKeyLen {
		return fmt.Errorf("MsgKey %s: longer than %d characters", Quote(k), MaxMsgKeyLen)
	}
	parts := strings.Split(k, "_")
	if len(parts) != 3 {
		return fmt.Errorf("MsgKey %s: want {MsgSeq}_{MsgRandom}_{MsgTimeStamp}", Quote(k))
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 64); err != nil {
			return fmt.Errorf("MsgKey %s: want {MsgSeq}_{MsgRandom}_{MsgTimeStamp} of whole numbers", Quote(k))
		}
	}
	return nil
}

func validJobApp(jobID string, app int64) error {
	if jobID == "" {
		return errors.New("job_id: required")
	}
	if app <= 0 {
		return fmt.Errorf("sdkappid: %d must be positive", app)
	}
	return nil
}

// NewGroupRecallTask validates p and builds its task. The task ID is derived
// from the job, the target and generation, so enqueueing the same chunk twice
// is reported by asynq as a conflict ("already queued"), not run twice.
// Generation distinguishes a re-queue of dead letters from the first run.
func NewGroupRecallTask(p GroupRecall, queue string, generation int) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("group recall task: %w", err)
	}
	seqs := make([]string, len(p.Seqs))
	for i, s := range p.Seqs {
		seqs[i] = strconv.FormatInt(s, 10)
	}
	id := taskID(p.JobID, "g", generation, p.GroupID, p.TopicID, strings.Join(seqs, ","))
	return newTask(TypeGroupRecall, p, queue, queue, id)
}

// NewC2CWithdrawTask validates p and builds its task (see NewGroupRecallTask).
func NewC2CWithdrawTask(p C2CWithdraw, queue string, generation int) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("c2c withdraw task: %w", err)
	}
	id := taskID(p.JobID, "c", generation, p.From, p.To, p.MsgKey)
	return newTask(TypeC2CWithdraw, p, queue, C2CQueue(queue), id)
}

// newTask builds a task of a job on queue, queued on lane (queue's
// counterpart in the task's lane).
func newTask(typ string, payload any, queue, lane, id string) (*asynq.Task, error) {
	if err := ValidQueue(queue); err != nil {
		return nil, err
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encoding %s payload: %w", typ, err)
	}
	return asynq.NewTask(typ, b,
		asynq.Queue(lane),
		asynq.TaskID(id),
		asynq.Timeout(DefaultTimeout),
		asynq.MaxRetry(25),
	), nil
}

// taskID is "<job>:<kind>:<generation>:<hash of the target>": unique per chunk
// and short whatever the group names are.
func taskID(job, kind string, generation int, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return fmt.Sprintf("%s:%s:%d:%s", job, kind, generation, hex.EncodeToString(h.Sum(nil)[:12]))
}

// DecodeGroupRecall decodes and validates a TypeGroupRecall payload. Failures
// wrap asynq.SkipRetry: a malformed payload never gets better.
func DecodeGroupRecall(t *asynq.Task) (GroupRecall, error) {
	var p GroupRecall
	if err := decode(t, TypeGroupRecall, &p); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%s payload: %v: %w", TypeGroupRecall, err, asynq.SkipRetry)
	}
	return p, nil
}

// DecodeC2CWithdraw decodes and validates a TypeC2CWithdraw payload.
func DecodeC2CWithdraw(t *asynq.Task) (C2CWithdraw, error) {
	var p C2CWithdraw
	if err := decode(t, TypeC2CWithdraw, &p); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%s payload: %v: %w", TypeC2CWithdraw, err, asynq.SkipRetry)
	}
	return p, nil
}

func decode(t *asynq.Task, want string, v any) error {
	if t.Type() != want {
		return fmt.Errorf("task type %q, want %q: %w", t.Type(), want, asynq.SkipRetry)
	}
	if err := json.Unmarshal(t.Payload(), v); err != nil {
		return fmt.Errorf("%s payload: %v: %w", want, err, asynq.SkipRetry)
	}
	return nil
}

// TypeScheduleRun runs one firing of a schedule: a typed job request that
// a worker plans with its own settings. Wire format: do not rename.
const TypeScheduleRun = "schedule:run"

// ScheduleRun is the payload of TypeScheduleRun.
type ScheduleRun struct {
	Name string `json:"name"`
	// Due is the firing's due time (one firing per schedule and due time).
	Due time.Time `json:"due,omitzero"`
	// Request is the job request (producer.JobRequest as JSON): what the
	// job is, never how a worker connects.
	Request json.RawMessage `json:"request,omitempty"`
	// Args is the command line of a schedule from before typed requests:
	// decoded only so that a worker can refuse it by name; never run.
	Args []string `json:"args,omitempty"`
	// ApprovalAbove and Requester are the schedule's (producer.Schedule):
	// the approval threshold where it was added, and who added it.
	ApprovalAbove int    `json:"approval_above,omitempty"`
	Requester     string `json:"requester,omitempty"`
}

// ScheduleRunID is the task ID of a schedule's firing at due: the same for
// every scheduler, so a firing is queued once.
func ScheduleRunID(name string, due time.Time) string {
	return fmt.Sprintf("schedule:%s:%d", name, due.Unix())
}

// ScheduleRunTimeout bounds a schedule's firing: it plans its job under a
// bound on queued work (jobs.Spec.Backlog), so planning lasts about as long
// as the job; a firing still planning after this is an interrupted plan.
const ScheduleRunTimeout = 24 * time.Hour

// ScheduleRunQueue is the queue of schedules' firings.
const ScheduleRunQueue = QueueBackfill

// NewScheduleRunTask builds a schedule's task, on ScheduleRunQueue, with
// the task ID of its due time.
func NewScheduleRunTask(p ScheduleRun) (*asynq.Task, error) {
	if p.Name == "" || len(p.Request) == 0 || p.Due.IsZero() {
		return nil, errors.New("schedule run task: name, request and due time required")
	}
	b, err := json.Marshal(ScheduleRun{Name: p.Name, Due: p.Due, Request: p.Request, ApprovalAbove: p.ApprovalAbove, Requester: p.Requester})
	if err != nil {
		return nil, fmt.Errorf("encoding schedule run: %w", err)
	}
	return asynq.NewTask(TypeScheduleRun, b, asynq.Queue(ScheduleRunQueue), asynq.Timeout(ScheduleRunTimeout), asynq.MaxRetry(3),
		asynq.TaskID(ScheduleRunID(p.Name, p.Due)), asynq.Retention(time.Hour)), nil
}

// DecodeScheduleRun decodes a TypeScheduleRun payload.
func DecodeScheduleRun(t *asynq.Task) (ScheduleRun, error) {
	var p ScheduleRun
	if err := decode(t, TypeScheduleRun, &p); err != nil {
		return p, err
	}
	if p.Name == "" || len(p.Request) == 0 && len(p.Args) == 0 {
		return p, fmt.Errorf("%s payload: name and request required: %w", TypeScheduleRun, asynq.SkipRetry)
	}
	return p, nil
}

// TypeDiscover scans one group (or topic) or one one-to-one conversation for
// the messages a purge job recalls, and plans them into the job. Wire
// format: do not rename.
const TypeDiscover = "discover:target"

// Discover is the payload of TypeDiscover.
type Discover struct {
	JobID     string   `json:"job_id"`
	AppID     int64    `json:"sdkappid"`
	GroupID   string   `json:"GroupId,omitempty"`
	TopicID   string   `json:"TopicId,omitempty"`
	GroupType string   `json:"type,omitempty"`
	From      string   `json:"From_Account,omitempty"` // one-to-one: the user whose messages go
	To        string   `json:"To_Account,omitempty"`   // one-to-one: the peer
	Since     int64    `json:"since,omitempty"`        // unix seconds, 0 = open
	Until     int64    `json:"until,omitempty"`
	SeqFrom   int64    `json:"seq_from,omitempty"`
	SeqTo     int64    `json:"seq_to,omitempty"`
	Senders   []string `json:"senders,omitempty"` // group scans: only these senders (nil = all)
	// Part numbers the tasks of one scan: a task scans for a bounded budget
	// of pages and time, saves where it stopped in the job's records, and
	// queues part + 1 to go on from there. 0 is the first.
	Part int `json:"part,omitempty"`
}

// Validate names the first bad field.
func (p Discover) Validate() error {
	if err := validJobApp(p.JobID, p.AppID); err != nil {
		return err
	}
	if (p.GroupID == "") == (p.From == "" || p.To == "") {
		return errors.New("target: want GroupId, or From_Account and To_Account")
	}
	if p.Part < 0 {
		return fmt.Errorf("part: %d must not be negative", p.Part)
	}
	return nil
}

// NewDiscoverTask builds a discovery task; its ID is derived from the job,
// the target and the part, so each part of a target's scan is one task.
func NewDiscoverTask(p Discover, queue string) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("discover task: %w", err)
	}
	if err := ValidQueue(queue); err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encoding discover payload: %w", err)
	}
	id := DiscoverTaskID(p)
	return asynq.NewTask(TypeDiscover, b, asynq.Queue(DiscoveryQueue(queue)), asynq.TaskID(id), asynq.Timeout(DiscoverTimeout), asynq.MaxRetry(DiscoverMaxRetry)), nil
}

// DiscoverTaskID is the asynq task ID of the discovery task p (one per job,
// target and part). A parked task runs under this ID + ":p<n>".
func DiscoverTaskID(p Discover) string {
	return taskID(p.JobID, "d", p.Part, p.GroupID, p.TopicID, p.From, p.To)
}

// DecodeDiscover decodes and validates a TypeDiscover payload.
func DecodeDiscover(t *asynq.Task) (Discover, error) {
	var p Discover
	if err := decode(t, TypeDiscover, &p); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%s payload: %v: %w", TypeDiscover, err, asynq.SkipRetry)
	}
	return p, nil
}
