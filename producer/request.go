package producer

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// Job kinds a JobRequest can ask for.
const (
	KindRecall     = "recall"      // the listed messages
	KindPurgeUser  = "purge_user"  // everything a user sent
	KindPurgeGroup = "purge_group" // messages of some groups in a range
)

// Sources of a user purge.
const (
	SourceAuto  = "auto"  // the index if it covers the range, else a history scan
	SourceIndex = "index" // the callback index
	SourceScan  = "scan"  // the groups' and chats' histories
)

// MessageRef names one message, with Tencent's field names (as in a list
// file or an after-send callback): the fields of jobs.Ref.
type MessageRef jobs.Ref

// Message is the planner's form of the reference.
func (m MessageRef) Message() Message {
	return Message{GroupID: m.GroupID, TopicID: m.TopicID, MsgSeq: m.MsgSeq, From: m.From, To: m.To, MsgKey: m.MsgKey}
}

// JobRequest asks for a job: what the job is (kind, user, groups, ranges,
// queue, reason), never how a worker connects (API base, admin identity,
// credentials, files). The HTTP API's POST /v1/jobs takes it, and a schedule
// holds one. Which fields apply depends on Kind.
type JobRequest struct {
	Kind string `json:"kind"`
	// Reason is why (recorded in the job and the audit log); required.
	Reason string `json:"reason"`
	// Actor is on whose behalf, recorded next to the token's name.
	Actor string `json:"actor,omitempty"`
	// Queue: incident, purge or backfill; the default depends on Kind.
	Queue string `json:"queue,omitempty"`
	// DryRun reports what would be recalled and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Confirm is required for jobs above the server's confirmation
	// threshold and for purges by history scan (their size is unknown
	// until scanned: dry-run first).
	Confirm bool `json:"confirm,omitempty"`

	// recall
	Messages []MessageRef `json:"messages,omitempty"`

	// purge_user
	User   string   `json:"user,omitempty"`
	Peers  []string `json:"peers,omitempty"`
	Source string   `json:"source,omitempty"`

	// purge_group
	Groups  []string `json:"groups,omitempty"`
	Topic   string   `json:"topic,omitempty"`
	Senders []string `json:"senders,omitempty"`
	SeqFrom int64    `json:"seq_from,omitempty"`
	SeqTo   int64    `json:"seq_to,omitempty"`

	// purge_user and purge_group: RFC 3339, a date, or an age (90d, 2h).
	Since string `json:"since,omitempty"`
	Until string `json:"until,omitempty"`
}

// FieldError is a bad field of a request: the one error type for bad
// input from the planner up to the root package (imrecall.FieldError is
// this type). Field is the request's JSON name ("user", "groups",
// "messages[3]", "request.api_base"); a CLI maps it to its flag, an HTTP
// API returns it as is. Value is the bad value when there is one to show;
// Other, when set, is the field it conflicts with and OtherValue that
// field's value. Err, if set, is the underlying error (errors.Is and
// errors.As reach it).
//
// It reads "Field: Reason" or "Field \"Value\": Reason", with
// " Other OtherValue" after the reason when set ("until:
// 2026-11-01T00:00:00Z is before since 2026-11-02T00:00:00Z").
type FieldError struct {
	Field      string
	Value      string
	Reason     string
	Other      string
	OtherValue string
	Err        error
}

func (e *FieldError) Error() string {
	msg := e.Reason
	if e.Other != "" {
		msg += " " + e.Other + " " + e.OtherValue
	}
	field := e.Field
	if e.Value != "" {
		field = e.Field + " " + tasks.Quote(e.Value)
	}
	if field == "" {
		return msg
	}
	return field + ": " + msg
}

func (e *FieldError) Unwrap() error { return e.Err }

// ConnectionSettings are the names a request may carry only to redirect a
// worker: its network, identity, credentials or files. A request naming one
// is refused (ErrConnectionSetting), whatever its value: a job says what to
// recall, the worker alone decides how it connects.
var ConnectionSettings = []string{
	"api_base", "api-base", "apibase", "base_url", "url", "endpoint", "host", "region", "proxy",
	"sdkappid", "app_id", "appid", "admin", "identifier", "user_sig", "usersig", "sig",
	"secret_key", "secret-key", "secretkey", "secret_key_file", "secret-key-file", "key",
	"redis", "key_prefix", "key-prefix", "timeout", "cap", "cap_of", "margin",
	"peers_file", "peers-file", "file", "path", "list_file", "tokens_file", "callback_token", "token", "args",
}

var connectionSetting = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range ConnectionSettings {
		m[k] = true
	}
	return m
}()

// IsConnectionSetting reports whether name (a JSON field or a flag without
// its dashes) is a connection setting, case-insensitively.
func IsConnectionSetting(name string) bool {
	return connectionSetting[strings.ToLower(strings.TrimLeft(name, "-"))]
}

// ErrConnectionSetting is wrapped by the FieldError of a request that names
// a connection setting.
var ErrConnectionSetting = errors.New("a job request says what a job is, never how a worker connects (API base, admin identity, credentials, files); workers use their own settings")

// NewConnectionSettingError is the error for a connection setting named
// field (a JSON path or a flag): a *FieldError that matches
// ErrConnectionSetting.
func NewConnectionSettingError(field string) error {
	return &FieldError{Field: field, Reason: ErrConnectionSetting.Error(), Err: ErrConnectionSetting}
}

// CheckNoConnectionSettings refuses a raw JSON object (a request as sent)
// that has a connection setting among its keys; prefix names it in the
// error ("request."). A body that is not an object is left to the decoder.
func CheckNoConnectionSettings(raw json.RawMessage, prefix string) error {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if IsConnectionSetting(k) {
			return NewConnectionSettingError(prefix + k)
		}
	}
	return nil
}

// Check validates everything a request says that does not need Redis or
// the IM API, as of now (relative times): the kind, the queue, the fields
// of its kind, the time range. Errors are *FieldError naming the JSON field.
func (r JobRequest) Check(now time.Time) error {
	bad := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if strings.TrimSpace(r.Reason) == "" {
		return bad("reason", "required (why, for the audit record)")
	}
	if err := CheckWhoAndWhy(r.Actor, r.Reason); err != nil {
		return err
	}
	if r.Queue != "" {
		if err := CheckQueue(r.Queue); err != nil {
			return err
		}
	}
	switch r.Source {
	case "", SourceAuto, SourceIndex, SourceScan:
	default:
		return &FieldError{Field: "source", Value: r.Source, Reason: fmt.Sprintf("want %s, %s or %s", SourceAuto, SourceIndex, SourceScan)}
	}
	if err := r.checkFieldsOfKind(); err != nil {
		return err
	}
	w, err := ParseWindow(r.Since, r.Until, now)
	if err != nil {
		return err
	}
	switch r.Kind {
	case KindRecall:
		if len(r.Messages) == 0 {
			return bad("messages", "at least one required for kind %s", KindRecall)
		}
		for i, m := range r.Messages {
			if err := m.Message().Validate(); err != nil {
				return &FieldError{Field: fmt.Sprintf("messages[%d]", i), Reason: err.Error(), Err: err}
			}
		}
	case KindPurgeUser:
		if err := (UserPurge{User: r.User, Peers: r.Peers, Window: w}).Validate(); err != nil {
			return err
		}
	case KindPurgeGroup:
		p := GroupPurge{Groups: r.Groups, Topic: r.Topic, Senders: r.Senders, GroupFilter: GroupFilter{Window: w, SeqFrom: r.SeqFrom, SeqTo: r.SeqTo}}
		if err := p.Validate(); err != nil {
			return err
		}
	default:
		return &FieldError{Field: "kind", Value: r.Kind, Reason: fmt.Sprintf("want %s, %s or %s", KindRecall, KindPurgeUser, KindPurgeGroup)}
	}
	return nil
}

// The longest actor and reason a job records: an audit line, not a
// document (a 5 MB reason made a 10 MB audit event).
const (
	MaxActorLen  = 256
	MaxReasonLen = 4096
)

// CheckWhoAndWhy refuses an actor or a reason longer than MaxActorLen or
// MaxReasonLen bytes, not valid UTF-8, or holding a control character (a
// line break, a tab, an escape), a line or paragraph separator, or a
// bidirectional formatting character: a *FieldError naming it. An audit
// event is one line of jobs audit and of a job's page, read as written; a
// line break in a reason wrote a second, forged event there, an escape
// sequence rewrote the operator's terminal, and a right-to-left override
// shows a line's text in another order than it holds.
func CheckWhoAndWhy(actor, reason string) error {
	for _, f := range []struct {
		field, value string
		max          int
	}{{"actor", actor, MaxActorLen}, {"reason", reason, MaxReasonLen}} {
		switch {
		case len(f.value) > f.max:
			return &FieldError{Field: f.field, Reason: fmt.Sprintf("%d bytes, longer than %d", len(f.value), f.max)}
		case !utf8.ValidString(f.value):
			return &FieldError{Field: f.field, Reason: "not valid UTF-8"}
		}
		if i := strings.IndexFunc(f.value, notOnALine); i >= 0 {
			r, _ := utf8.DecodeRuneInString(f.value[i:])
			return &FieldError{Field: f.field, Reason: fmt.Sprintf("holds a control character (%U) at byte %d: an audit record is one line, read as written", r, i)}
		}
	}
	return nil
}

// notOnALine reports whether r may not be in one line of an audit record:
// a control character, a line or paragraph separator, or a bidirectional
// formatting character (U+200E, U+200F, U+061C, U+202A-U+202E,
// U+2066-U+2069).
func notOnALine(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) || unicode.Is(unicode.Bidi_Control, r)
}

// fieldsOfKind are the scope fields each kind takes; hints say what to use
// instead of a field a kind does not take, where a user may mean something.
var (
	fieldsOfKind = map[string][]string{
		KindRecall:     {"messages"},
		KindPurgeUser:  {"user", "peers", "source", "since", "until"},
		KindPurgeGroup: {"groups", "topic", "senders", "seq_from", "seq_to", "since", "until"},
	}
	fieldHints = map[string]string{
		KindPurgeGroup + "/user":   " (senders names whose messages to recall)",
		KindPurgeUser + "/groups":  " (a user purge reads every group of the user; purge_group purges groups)",
		KindPurgeUser + "/senders": " (user names whose messages to recall)",
	}
)

// checkFieldsOfKind refuses a scope field the request's kind does not take
// (a purge_group with "user" would recall everyone's messages in the
// groups, not the user's): a *FieldError naming it. An unknown kind is left
// to Check.
func (r JobRequest) checkFieldsOfKind() error {
	takes, known := fieldsOfKind[r.Kind]
	if !known {
		return nil
	}
	set := []struct {
		field string
		set   bool
	}{
		{"messages", len(r.Messages) > 0}, {"user", r.User != ""}, {"peers", len(r.Peers) > 0}, {"source", r.Source != ""},
		{"groups", len(r.Groups) > 0}, {"topic", r.Topic != ""}, {"senders", len(r.Senders) > 0},
		{"seq_from", r.SeqFrom != 0}, {"seq_to", r.SeqTo != 0}, {"since", r.Since != ""}, {"until", r.Until != ""},
	}
	for _, f := range set {
		if f.set && !slices.Contains(takes, f.field) {
			return &FieldError{Field: f.field, Reason: fmt.Sprintf("not a field of kind %s%s", r.Kind, fieldHints[r.Kind+"/"+f.field])}
		}
	}
	return nil
}

// CheckQueue refuses a queue that is not one of tasks.Queues with a
// *FieldError naming it ("queue \"x\": want incident, purge or
// backfill").
func CheckQueue(queue string) error {
	if err := tasks.ValidQueue(queue); err != nil {
		return &FieldError{Field: "queue", Value: queue, Reason: fmt.Sprintf("want %s, %s or %s", tasks.QueueIncident, tasks.QueuePurge, tasks.QueueBackfill), Err: err}
	}
	return nil
}

// ParseWindow parses a request's since and until (RFC 3339, a date, or an
// age such as 90d) as of now; a bad one is a *FieldError naming it.
func ParseWindow(since, until string, now time.Time) (Window, error) {
	var w Window
	var err error
	if w.Since, err = ParseTime(since, now); err != nil {
		return w, &FieldError{Field: "since", Reason: err.Error(), Err: err}
	}
	if w.Until, err = ParseTime(until, now); err != nil {
		return w, &FieldError{Field: "until", Reason: err.Error(), Err: err}
	}
	return w, w.Validate()
}
