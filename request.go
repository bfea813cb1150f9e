package imrecall

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// Request is a typed job request: one type per kind of job. Kind names the
// job record's kind; Validate checks what needs neither Redis nor the IM
// API and returns a *FieldError naming the request's field (its JSON name).
type Request interface {
	Kind() string
	Validate() error
}

// MessageRef names one message, with Tencent's field names (as in a list
// file or an after-send callback).
type MessageRef = producer.MessageRef

// Sources of a user purge.
const (
	SourceAuto  = producer.SourceAuto  // the index if it covers the range, else a history scan
	SourceIndex = producer.SourceIndex // the callback index
	SourceScan  = producer.SourceScan  // the groups' and chats' histories
	SourceList  = "list"               // the request lists its messages (recalls)
)

// FieldError is a bad field of a request: Field names it by its JSON name
// ("user", "groups", "messages[3]", "seqs"), Value shows the bad value when
// there is one, Err is the cause. It is the planner's type: every layer
// returns the same error for bad input (see producer.FieldError).
type FieldError = producer.FieldError

// CancelledError is Create's error when a person cancelled the job while it
// was being planned (Created.Job is the cancelled job). It is their
// decision, not a failure: a caller that retries failed requests must not
// create the job again.
type CancelledError = producer.CancelledError

func fieldErr(field, value, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// GroupRecall recalls messages of one group (or one topic of a Community)
// by MsgSeq.
type GroupRecall struct {
	GroupID string  `json:"GroupId"`
	TopicID string  `json:"TopicId,omitempty"`
	Seqs    []int64 `json:"seqs"`
}

// Kind is "recall:group".
func (GroupRecall) Kind() string { return "recall:group" }

// Validate names the first bad field.
func (r GroupRecall) Validate() error {
	if strings.TrimSpace(r.GroupID) == "" {
		return fieldErr("GroupId", "", "required")
	}
	if err := idErr("GroupId", r.GroupID); err != nil {
		return err
	}
	if strings.TrimSpace(r.GroupID) != r.GroupID {
		return fieldErr("GroupId", r.GroupID, "surrounding spaces") // as in a list file
	}
	if err := idErr("TopicId", r.TopicID); err != nil {
		return err
	}
	if len(r.Seqs) == 0 {
		return fieldErr("seqs", "", "at least one MsgSeq required")
	}
	for _, s := range r.Seqs {
		if s <= 0 {
			return fieldErr("seqs", strconv.FormatInt(s, 10), "a MsgSeq must be positive")
		}
	}
	return nil
}

// idErr is the *FieldError of a bad ID (tasks.ValidID), or nil.
func idErr(field, id string) error {
	if err := tasks.ValidID(id); err != nil {
		return &FieldError{Field: field, Value: id, Reason: err.Error(), Err: err}
	}
	return nil
}

func (r GroupRecall) messages() []producer.Message {
	out := make([]producer.Message, len(r.Seqs))
	for i, s := range r.Seqs {
		out[i] = producer.Message{GroupID: r.GroupID, TopicID: r.TopicID, MsgSeq: s}
	}
	return out
}

// C2CRecall recalls one one-to-one message by MsgKey.
type C2CRecall struct {
	From   string `json:"From_Account"`
	To     string `json:"To_Account"`
	MsgKey string `json:"MsgKey"`
}

// Kind is "recall:c2c".
func (C2CRecall) Kind() string { return "recall:c2c" }

// Validate names the first bad field.
func (r C2CRecall) Validate() error {
	switch {
	case strings.TrimSpace(r.From) == "":
		return fieldErr("From_Account", "", "required (the sender)")
	case strings.TrimSpace(r.To) == "":
		return fieldErr("To_Account", "", "required (the receiver)")
	}
	if err := idErr("From_Account", r.From); err != nil {
		return err
	}
	if err := idErr("To_Account", r.To); err != nil {
		return err
	}
	if err := tasks.ValidMsgKey(r.MsgKey); err != nil {
		return &FieldError{Field: "MsgKey", Reason: err.Error(), Err: err}
	}
	return nil
}

// ListRecall recalls the listed messages: given in Messages, or read from
// File (JSON Lines or CSV, on the machine that plans the job), never both.
type ListRecall struct {
	Messages []MessageRef `json:"messages,omitempty"`
	File     string       `json:"file,omitempty"`
}

// Kind is "recall:file" for a list read from a file, "recall:api" for a
// list given in the request.
func (r ListRecall) Kind() string {
	if r.File != "" {
		return "recall:file"
	}
	return "recall:api"
}

// Validate names the first bad field (a file is read by Plan and Create).
func (r ListRecall) Validate() error {
	switch {
	case r.File != "" && len(r.Messages) > 0:
		return fieldErr("messages", "", "give messages or a file, not both")
	case r.File == "" && len(r.Messages) == 0:
		return fieldErr("messages", "", "at least one required")
	}
	for i, m := range r.Messages {
		if err := m.Message().Validate(); err != nil {
			return &FieldError{Field: fmt.Sprintf("messages[%d]", i), Reason: err.Error(), Err: err}
		}
	}
	return nil
}

// UserPurge recalls everything a user sent: in every group they belong to
// and in their one-to-one chats with Peers, found through the callback index
// or the histories (Source: auto, index or scan; empty is auto). Since and
// Until are RFC 3339, a date, a date and minute, or an age before now (90d,
// 2h), taken when the job is planned.
type UserPurge struct {
	User   string   `json:"user"`
	Peers  []string `json:"peers,omitempty"`
	Source string   `json:"source,omitempty"`
	Since  string   `json:"since,omitempty"`
	Until  string   `json:"until,omitempty"`
}

// Kind is "purge:user".
func (UserPurge) Kind() string { return "purge:user" }

// Validate names the first bad field.
func (r UserPurge) Validate() error {
	switch r.Source {
	case "", SourceAuto, SourceIndex, SourceScan:
	default:
		return fieldErr("source", r.Source, "want %s, %s or %s", SourceAuto, SourceIndex, SourceScan)
	}
	w, err := producer.ParseWindow(r.Since, r.Until, time.Now())
	if err != nil {
		return err
	}
	return r.spec(w, 0).Validate()
}

func (r UserPurge) spec(w producer.Window, concurrency int) producer.UserPurge {
	return producer.UserPurge{User: r.User, Peers: r.Peers, Window: w, Concurrency: concurrency}
}

// GroupPurge recalls the messages of some groups in a time range (Since,
// Until, as in UserPurge) or a seq range (SeqFrom, SeqTo), optionally only
// those of some Senders; Topic narrows one Community group to one topic.
type GroupPurge struct {
	Groups  []string `json:"groups"`
	Topic   string   `json:"topic,omitempty"`
	Senders []string `json:"senders,omitempty"`
	SeqFrom int64    `json:"seq_from,omitempty"`
	SeqTo   int64    `json:"seq_to,omitempty"`
	Since   string   `json:"since,omitempty"`
	Until   string   `json:"until,omitempty"`
}

// Kind is "purge:group".
func (GroupPurge) Kind() string { return "purge:group" }

// Validate names the first bad field.
func (r GroupPurge) Validate() error {
	w, err := producer.ParseWindow(r.Since, r.Until, time.Now())
	if err != nil {
		return err
	}
	return r.spec(w, 0).Validate()
}

func (r GroupPurge) spec(w producer.Window, concurrency int) producer.GroupPurge {
	return producer.GroupPurge{Groups: r.Groups, Topic: r.Topic, Senders: r.Senders, Concurrency: concurrency,
		GroupFilter: producer.GroupFilter{Window: w, SeqFrom: r.SeqFrom, SeqTo: r.SeqTo}}
}

// RequestOf turns the stored and HTTP form of a request (what a schedule
// holds, what POST /v1/jobs takes) into its typed request, after checking
// it (errors are *FieldError). Its Reason, Actor, Queue, DryRun and
// Confirm are the caller's to pass on as CreateOptions.
func RequestOf(r producer.JobRequest) (Request, error) {
	if err := r.Check(time.Now()); err != nil {
		return nil, err
	}
	var req Request
	switch r.Kind {
	case producer.KindRecall:
		req = ListRecall{Messages: r.Messages}
	case producer.KindPurgeUser:
		req = UserPurge{User: r.User, Peers: r.Peers, Source: r.Source, Since: r.Since, Until: r.Until}
	case producer.KindPurgeGroup:
		req = GroupPurge{Groups: r.Groups, Topic: r.Topic, Senders: r.Senders, SeqFrom: r.SeqFrom, SeqTo: r.SeqTo, Since: r.Since, Until: r.Until}
	default:
		return nil, fieldErr("kind", r.Kind, "want %s, %s or %s", producer.KindRecall, producer.KindPurgeUser, producer.KindPurgeGroup)
	}
	return req, req.Validate()
}
