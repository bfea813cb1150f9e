package jobs

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Status is a job's lifecycle state.
type Status string

// Job statuses.
const (
	// StatusPlanning: discovery is still finding messages; workers may already
	// be recalling what was planned.
	StatusPlanning Status = "planning"
	// StatusRunning: planning is over; messages are pending.
	StatusRunning Status = "running"
	// StatusDone: every planned message is recalled or dead-lettered.
	StatusDone Status = "done"
	// StatusCancelled: cancelled by a person; pending messages are dropped
	// (dead-lettered with code "cancelled") without calling the API.
	StatusCancelled Status = "cancelled"
	// StatusFailed: planning failed (or one of its discovery targets did);
	// what was planned is still recalled and accounted for.
	StatusFailed Status = "failed"
	// StatusAwaitingApproval: the job was created held (Spec.HoldForApproval)
	// and waits for Store.Approve by someone other than its requester.
	// Nothing is sent: its recall tasks are parked as a paused job's are.
	// Discovery (reads only) goes on, so that the approver sees how many
	// messages the job will recall. Job.Phase says where planning is.
	StatusAwaitingApproval Status = "awaiting_approval"
	// StatusApproved: approved with a cool-off (Job.StartsAt); nothing is
	// sent before StartsAt, and Cancel still stops the job. At StartsAt a
	// worker's unparker releases it (Store.StartDue) and it runs.
	StatusApproved Status = "approved"
)

// Terminal reports whether no further change of status is expected without
// a person's action (a re-queue reopens a done job). The transitions are
// the table in docs/ACCOUNTING.md ("Job states").
func (s Status) Terminal() bool {
	return s == StatusDone || s == StatusCancelled || s == StatusFailed
}

// Dead-letter codes that are not Tencent error codes.
const (
	CodeCancelled = "cancelled" // the job was cancelled before the message was tried
	CodeTimeout   = "timeout"   // no answer within the client's timeout
	CodeTransport = "transport" // connection failure or a non-200 HTTP status
	CodeExhausted = "exhausted" // the task was archived after its last attempt (Redis down, timeouts, crashes)
)

// UnansweredCodes are the dead-letter codes that may hide a call the
// server acted on without our hearing the answer (a response lost to a
// timeout or a broken connection, a task archived mid-call). A re-queue
// moves such a message back as sent and unanswered, so that its next
// delivery checks it against the history first (see Store.Requeue).
var UnansweredCodes = []string{CodeTimeout, CodeTransport, CodeExhausted}

// unansweredLua is UnansweredCodes as the fields of a Lua table
// constructor: ["timeout"]=true, ...
var unansweredLua = func() string {
	var b strings.Builder
	for i, c := range UnansweredCodes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "[%q]=true", c)
	}
	return b.String()
}()

// Counts are a job's message counts. Pending is derived:
// Planned = Recalled + DeadLettered + Pending.
type Counts struct {
	Planned      int64            `json:"planned"`
	Recalled     int64            `json:"recalled"`
	DeadLettered int64            `json:"dead_lettered"`
	Pending      int64            `json:"pending"`
	DeadByCode   map[string]int64 `json:"dead_lettered_by_code,omitempty"`
	// RecalledUnattributed counts the recalled messages (a part of
	// Recalled) found recalled after a call of the job whose answer was lost:
	// gone for certain, but whether this job's call or someone before it
	// recalled them, no one can tell.
	RecalledUnattributed int64 `json:"recalled_unattributed,omitempty"`
}

// Job is a job record.
type Job struct {
	ID          string          `json:"id"`
	Kind        string          `json:"kind"`
	Queue       string          `json:"queue"`
	AppID       int64           `json:"sdkappid"`
	RequestedBy string          `json:"requested_by"`
	Reason      string          `json:"reason,omitempty"`
	Params      json.RawMessage `json:"params,omitempty"`
	Status      Status          `json:"status"`
	Paused      bool            `json:"paused,omitempty"`
	// PauseReason says why a worker paused the job (an app-wide error such
	// as a wrong SecretKey) and what to fix before resuming it; empty for
	// a pause by a person.
	PauseReason string `json:"pause_reason,omitempty"`
	// FailedUnits counts discovery targets whose history could not be read
	// for good; the job ends failed (Error says why).
	FailedUnits int        `json:"failed_units,omitempty"`
	Error       string     `json:"error,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	Generation  int        `json:"generation"`
	Counts      Counts     `json:"counts"`
	// PlanningInterrupted is set when a planner of the job stopped before it
	// had planned everything (see Store.InterruptPlanner); such a job ends
	// failed, and running the same command again finishes the work.
	PlanningInterrupted *Interruption `json:"planning_interrupted,omitempty"`
	// Requester is the principal that asked for the job (an API token's
	// name, a CLI user): the one who cannot approve it. RequestedBy may add
	// on whose behalf. Jobs of earlier versions leave it empty.
	Requester string `json:"requester,omitempty"`
	// HeldForApproval is set when the job was created held
	// (Spec.HoldForApproval), and stays set once it is approved.
	HeldForApproval bool `json:"held_for_approval,omitempty"`
	// Phase is where a held job (awaiting_approval or approved) stands
	// under the hold: planning, running, or failed (a discovery target
	// failed). Empty when the job is not held.
	Phase Status `json:"phase,omitempty"`
	// ApprovedBy, ApprovedAt (Redis's clock) and ApprovalReason record the
	// approval of a held job.
	ApprovedBy     string     `json:"approved_by,omitempty"`
	ApprovedAt     *time.Time `json:"approved_at,omitempty"`
	ApprovalReason string     `json:"approval_reason,omitempty"`
	// StartsAt is when an approved job's cool-off ends and it starts.
	StartsAt *time.Time `json:"starts_at,omitempty"`
	// Backlog bounds the job's planned work queued ahead of the workers
	// (Spec.Backlog); 0: no bound.
	Backlog int64 `json:"backlog,omitempty"`
	// Calls counts the recall calls the job's workers started (both
	// APIs; a send counted before each call), for its rate against the
	// cap. Jobs of earlier versions count none.
	Calls int64 `json:"calls"`
}

// Held reports whether the job waits for an approval or a cool-off:
// nothing of it is sent while it does.
func (j Job) Held() bool {
	return j.Status == StatusAwaitingApproval || j.Status == StatusApproved
}

// Finished reports whether the job has ended and nothing is pending.
func (j Job) Finished() bool { return j.Status.Terminal() && j.Counts.Pending == 0 }

// Spec is what a producer asks for when it creates a job.
type Spec struct {
	Kind        string          // e.g. "recall:list", "purge:user"
	Queue       string          // tasks.Queue*
	AppID       int64           // the Tencent SDKAppID
	RequestedBy string          // who asked (audit); required
	Reason      string          // why (audit)
	Params      json.RawMessage // the plan's parameters, for the record
	// Requester is the principal that asked (an API token's name such as
	// "token:alice", or the CLI's user), compared with the approver of a
	// held job. Empty means RequestedBy.
	Requester string
	// HoldForApproval creates the job in status awaiting_approval: nothing
	// is sent until Store.Approve by a principal other than Requester.
	HoldForApproval bool
	// Backlog, if positive, is the most messages of the job planned and
	// not yet settled (Counts.Pending) before its planners wait for the
	// workers to drain them: every planner of the job reads it from the
	// record (producer.Batcher). Zero: the whole plan is queued at once.
	Backlog int64
}

// requester is the principal that cannot approve the job.
func (s Spec) requester() string {
	if r := strings.TrimSpace(s.Requester); r != "" {
		return r
	}
	return strings.TrimSpace(s.RequestedBy)
}

// Validate names the first missing field.
func (s Spec) Validate() error {
	switch {
	case s.Kind == "":
		return errors.New("job kind: required")
	case s.Queue == "":
		return errors.New("job queue: required")
	case s.AppID <= 0:
		return fmt.Errorf("job sdkappid: %d must be positive", s.AppID)
	case strings.TrimSpace(s.RequestedBy) == "":
		return errors.New("job requested_by: required (who asked, for the audit record)")
	case s.Backlog < 0:
		return fmt.Errorf("job backlog: %d must not be negative", s.Backlog)
	}
	return nil
}

// Target is where messages live: a group (optionally one topic of a
// Community), or a one-to-one conversation seen from From's side.
type Target struct {
	GroupID string `json:"GroupId,omitempty"`
	TopicID string `json:"TopicId,omitempty"`
	From    string `json:"From_Account,omitempty"`
	To      string `json:"To_Account,omitempty"`
}

// IsGroup reports whether t is a group target.
func (t Target) IsGroup() bool { return t.GroupID != "" }

func (t Target) String() string {
	if t.IsGroup() {
		if t.TopicID != "" {
			return "group " + t.GroupID + " topic " + t.TopicID
		}
		return "group " + t.GroupID
	}
	return "c2c " + t.From + "→" + t.To
}

// CompareTargets orders targets: groups before one-to-one chats, then by
// GroupId, TopicId, From_Account, To_Account. Every sorted list of targets
// uses it.
func CompareTargets(a, b Target) int {
	if a.IsGroup() != b.IsGroup() {
		if a.IsGroup() {
			return -1
		}
		return 1
	}
	return cmp.Or(cmp.Compare(a.GroupID, b.GroupID), cmp.Compare(a.TopicID, b.TopicID),
		cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
}

// sep separates the parts of a target inside a key; it cannot appear in an
// IM identifier.
const sep = "\x1f"

// suffix is the target's part of its state key.
func (t Target) suffix() string {
	if t.IsGroup() {
		return "g:" + t.GroupID + sep + t.TopicID
	}
	return "c:" + t.From + sep + t.To
}

func targetFromSuffix(s string) (Target, error) {
	if len(s) < 2 {
		return Target{}, fmt.Errorf("target key %q: too short", s)
	}
	a, b, ok := strings.Cut(s[2:], sep)
	if !ok {
		return Target{}, fmt.Errorf("target key %q: no separator", s)
	}
	switch s[:2] {
	case "g:":
		return Target{GroupID: a, TopicID: b}, nil
	case "c:":
		return Target{From: a, To: b}, nil
	}
	return Target{}, fmt.Errorf("target key %q: unknown kind", s)
}

// Ref names one message with Tencent's field names: GroupId, TopicId and
// MsgSeq for a group message, From_Account, To_Account and MsgKey for a
// one-to-one one. A list file, a dead letter and a certificate row name
// their message with it (producer.MessageRef is a type of the same fields).
type Ref struct {
	GroupID string `json:"GroupId,omitempty"`
	TopicID string `json:"TopicId,omitempty"`
	MsgSeq  int64  `json:"MsgSeq,omitempty"`
	From    string `json:"From_Account,omitempty"`
	To      string `json:"To_Account,omitempty"`
	MsgKey  string `json:"MsgKey,omitempty"`
}

// DeadLetter is the durable record of one message that was not recalled.
type DeadLetter struct {
	JobID string `json:"job_id"`
	Ref
	Code      string    `json:"code"`
	ErrorInfo string    `json:"error_info,omitempty"`
	Category  Category  `json:"category"`
	Attempts  int       `json:"attempts"`
	At        time.Time `json:"at"`
	// InDoubt: an earlier call for the message went unanswered and may
	// have recalled it unheard. A re-queue moves it back as sent and
	// unanswered (as a code of UnansweredCodes), so that its next delivery
	// checks the history before taking it for gone before the job.
	InDoubt bool `json:"in_doubt,omitempty"`
}

// Target is the dead letter's target.
func (d DeadLetter) Target() Target {
	return Target{GroupID: d.GroupID, TopicID: d.TopicID, From: d.From, To: d.To}
}

// Item is the message's identity within its target: the seq or the MsgKey.
func (d DeadLetter) Item() string {
	if d.GroupID != "" {
		return strconv.FormatInt(d.MsgSeq, 10)
	}
	return d.MsgKey
}

// Category sorts dead letters for the report.
type Category string

// Dead-letter categories. Only NeedsAttention asks a person to act.
const (
	AlreadyRecalled Category = "already_recalled" // 20023: gone before this job
	NotFound        Category = "not_found"        // 10030, 20022: missing, expired, or already recalled (group)
	Cancelled       Category = "cancelled"        // dropped by a cancel
	NeedsAttention  Category = "needs_attention"  // everything else
)

// CategoryOf returns the report category of a dead-letter code.
func CategoryOf(code string) Category {
	switch code {
	case "20023":
		return AlreadyRecalled
	case "10030", "20022":
		return NotFound
	case CodeCancelled:
		return Cancelled
	}
	return NeedsAttention
}

// newID returns a time-sortable job id such as 20261122T230512Z-9f3a1c2b.
func newID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// ValidID checks the shape of a job id given by a person, naming it: at
// most 64 letters, digits, '-', '_' and '.', not starting with '.'. An id
// names Redis keys and files (a certificate is {dir}/{id}.json), so a path
// separator or a leading dot must never pass.
func ValidID(id string) error {
	if id == "" {
		return errors.New("job id: required")
	}
	if len(id) > 64 || id[0] == '.' || strings.IndexFunc(id, notIDRune) >= 0 {
		return fmt.Errorf("job id %q: not a job id (letters, digits, '-', '_' and '.', at most 64)", id)
	}
	return nil
}

func notIDRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
}

// sortedCodes returns the codes of m in a stable order, biggest count first.
func sortedCodes(m map[string]int64) []string {
	codes := make([]string, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool {
		if m[codes[i]] != m[codes[j]] {
			return m[codes[i]] > m[codes[j]]
		}
		return codes[i] < codes[j]
	})
	return codes
}
