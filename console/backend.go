package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/api"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
)

// ClientBackend is the Backend over the root package's Client: jobs are
// created, cancelled, paused, resumed, re-queued and approved by calling
// the Client on behalf of the signed-in token, recorded as its principal
// ("token:NAME", api.Token.Principal, as the API records it), so the audit
// trail and approval know who clicked; the Client's checks (confirmation,
// approval above its threshold, the requester's own approval refused)
// apply as they do to the API. Reads go to the Client and its store.
// What the Client does not do (schedules, verification, certificates, the
// index's coverage) goes through the API's own handler, called in process
// as the signed-in token, which it finds by name among the server's
// tokens (held in memory, never in a session).
type ClientBackend struct {
	client *imrecall.Client
	store  *jobs.Store
	api    http.Handler
	tokens map[string]api.Token
	// reads is the token reads are made with (any token may read): the
	// first read token given, else the first token.
	reads string
}

// NewClientBackend returns a backend over client, the API's handler
// (api.Server.Handler) and the server's tokens.
func NewClientBackend(client *imrecall.Client, handler http.Handler, tokens []api.Token) *ClientBackend {
	b := &ClientBackend{client: client, store: client.Store(), api: handler, tokens: map[string]api.Token{}}
	for _, t := range tokens {
		b.tokens[t.Name] = t
		if b.reads == "" || t.Role == api.RoleRead && b.tokens[b.reads].Role != api.RoleRead {
			b.reads = t.Name
		}
	}
	return b
}

// reader is the token reads are made with.
func (b *ClientBackend) reader() string { return b.reads }

// principal is who the token named who acts as; a token the server no
// longer accepts, or no longer as an admin (a session outlives a restart
// with other tokens), is refused, as the API would refuse it.
func (b *ClientBackend) principal(who string) (string, error) {
	t, ok := b.tokens[who]
	switch {
	case !ok:
		return "", &Error{Status: http.StatusForbidden, Message: fmt.Sprintf("token %s is no longer accepted: sign in again", who)}
	case t.Role != api.RoleAdmin:
		return "", &Error{Status: http.StatusForbidden, Message: fmt.Sprintf("token %s has role %s now: only admin tokens act", who, t.Role)}
	}
	return t.Principal(), nil
}

// refusal turns the Client's refusals into an *Error with the status the
// API answers them with; other errors are returned as they are.
func refusal(err error) error {
	var (
		self *jobs.SelfApprovalError
		fe   *imrecall.FieldError
		se   *jobs.StatusError
		need *imrecall.ConfirmationRequired
		ce   *imrecall.CancelledError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return &Error{Status: http.StatusConflict, Message: ce.Error()}
	case errors.As(err, &self):
		return &Error{Status: http.StatusForbidden, Message: self.Error()}
	case errors.As(err, &fe):
		return &Error{Status: http.StatusBadRequest, Message: fe.Error()}
	case errors.As(err, &se), errors.Is(err, jobs.ErrBusy):
		return &Error{Status: http.StatusConflict, Message: err.Error()}
	case errors.As(err, &need):
		return &Error{Status: http.StatusConflict, Message: need.Error() + ": run the dry run, then confirm"}
	case errors.Is(err, jobs.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Message: err.Error()}
	case errors.Is(err, imrecall.ErrNotConfigured):
		return &Error{Status: http.StatusNotImplemented, Message: err.Error()}
	}
	return err
}

// call sends one request to the API as who and decodes a JSON answer into
// out (when not nil); an answer of 300 or more is an *Error.
func (b *ClientBackend) call(ctx context.Context, who, method, path string, body, out any) error {
	t, ok := b.tokens[who]
	if !ok {
		return &Error{Status: http.StatusForbidden, Message: fmt.Sprintf("token %s is no longer accepted: sign in again", who)}
	}
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req := httptest.NewRequestWithContext(ctx, method, path, rd)
	req.Header.Set("Authorization", "Bearer "+t.Secret)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	b.api.ServeHTTP(rec, req)
	if rec.Code >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if e.Error == "" {
			e.Error = http.StatusText(rec.Code)
		}
		return &Error{Status: rec.Code, Message: e.Error}
	}
	if out != nil {
		if w, ok := out.(io.Writer); ok {
			_, err := w.Write(rec.Body.Bytes())
			return err
		}
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			return fmt.Errorf("console: decoding %s %s: %w", method, path, err)
		}
	}
	return nil
}

// notFound turns a 404 of an optional document into "none".
func notFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

func jobPath(id string, rest string) string { return "/v1/jobs/" + url.PathEscape(id) + rest }

// Jobs implements Backend.
func (b *ClientBackend) Jobs(ctx context.Context, f jobs.PageFilter, offset int64, n int) (jobs.JobPage, error) {
	return b.store.Page(ctx, f, offset, n)
}

// Job implements Backend.
func (b *ClientBackend) Job(ctx context.Context, id string) (jobs.Job, error) {
	j, err := b.client.Job(ctx, id)
	return j, refusal(err)
}

// Report implements Backend.
func (b *ClientBackend) Report(ctx context.Context, id string) (jobs.Report, error) {
	r, err := b.client.Report(ctx, id)
	return r, refusal(err)
}

// DeadLetters implements Backend.
func (b *ClientBackend) DeadLetters(ctx context.Context, id string, limit int) ([]jobs.DeadLetter, error) {
	if _, err := b.Job(ctx, id); err != nil {
		return nil, err
	}
	var out []jobs.DeadLetter
	err := b.store.DeadLetters(ctx, id, func(d jobs.DeadLetter) error {
		if len(out) < limit {
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// ExportDeadLetters implements Backend with the store's export, streamed.
func (b *ClientBackend) ExportDeadLetters(ctx context.Context, id, format string, w io.Writer) error {
	_, err := b.store.ExportDeadLetters(ctx, id, func(jobs.DeadLetter) bool { return true }, format, w)
	return err
}

// Audit implements Backend.
func (b *ClientBackend) Audit(ctx context.Context, n int) ([]jobs.Event, error) {
	return b.store.AuditLog(ctx, int64(n))
}

// optional reads a JSON document that may not exist (404, or 501 when the
// server issues no certificates).
func (b *ClientBackend) optional(ctx context.Context, path string) (json.RawMessage, error) {
	var buf bytes.Buffer
	err := b.call(ctx, b.reader(), "GET", path, nil, &buf)
	var e *Error
	if notFound(err) || errors.As(err, &e) && e.Status == http.StatusNotImplemented {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(buf.Bytes()), nil
}

// Verification implements Backend.
func (b *ClientBackend) Verification(ctx context.Context, id string) (json.RawMessage, error) {
	return b.optional(ctx, jobPath(id, "/verify"))
}

// Certificate implements Backend.
func (b *ClientBackend) Certificate(ctx context.Context, id string) (json.RawMessage, error) {
	return b.optional(ctx, jobPath(id, "/certificate"))
}

// Create implements Backend: a dry run (Plan, recorded in the audit log)
// or a job (Create), on behalf of the token named who. A request above the
// confirmation threshold without "confirm" is an *Error with status 409;
// one above the approval threshold is created awaiting approval.
func (b *ClientBackend) Create(ctx context.Context, who string, jr producer.JobRequest) (api.CreateJobResponse, error) {
	principal, err := b.principal(who)
	if err != nil {
		return api.CreateJobResponse{}, err
	}
	req, err := imrecall.RequestOf(jr)
	if err != nil {
		return api.CreateJobResponse{}, refusal(err)
	}
	if jr.DryRun {
		p, err := b.client.Plan(ctx, req)
		if err != nil {
			return api.CreateJobResponse{}, refusal(err)
		}
		if err := b.client.Audit(ctx, jobs.Event{Actor: principal, Action: "dry_run", Detail: fmt.Sprintf("%s: %d messages; %s", jr.Kind, p.Messages, jr.Reason)}); err != nil {
			return api.CreateJobResponse{}, err
		}
		resp := api.ResponseOf(p)
		resp.DryRun = true
		return resp, nil
	}
	// The job outlives a browser that drops the request while it is
	// planned, and planning that waits for the workers goes on (serve
	// --backlog).
	c, err := b.client.Create(context.WithoutCancel(ctx), req, imrecall.CreateOptions{Actor: principal, Requester: principal,
		Reason: jr.Reason, Queue: jr.Queue, Confirmed: jr.Confirm, InBackground: true})
	if err != nil {
		return api.CreateJobResponse{}, refusal(err)
	}
	return api.CreatedResponse(c), nil
}

// Act implements Backend: the action, by the Client, on behalf of the token
// named who. Re-queueing takes the dead letters that need attention.
func (b *ClientBackend) Act(ctx context.Context, who, id string, a Action, reason string) error {
	principal, err := b.principal(who)
	if err != nil {
		return err
	}
	// Cancel and Resume queue the job's parked tasks at once; what they
	// cannot queue, the workers' unparkers do.
	switch a {
	case ActionCancel:
		_, _, err = b.client.Cancel(ctx, id, principal, reason)
	case ActionPause:
		err = b.client.Pause(ctx, id, principal, reason)
	case ActionResume:
		_, err = b.client.Resume(ctx, id, principal, reason)
	case ActionRequeue:
		// The action's confirmation page was the question.
		_, err = b.client.RequeueInBackground(ctx, id, imrecall.DeadLetterFilter{}, imrecall.RequeueOptions{Actor: principal, Reason: reason, Confirmed: true})
	case ActionApprove:
		_, err = b.client.Approve(ctx, id, principal, reason)
	default:
		return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no action %q", a)}
	}
	return refusal(err)
}

// Schedules implements Backend.
func (b *ClientBackend) Schedules(ctx context.Context) ([]producer.ScheduleView, error) {
	var out []producer.ScheduleView
	err := b.call(ctx, b.reader(), "GET", "/v1/schedules", nil, &out)
	return out, err
}

// AddSchedule implements Backend.
func (b *ClientBackend) AddSchedule(ctx context.Context, who string, s api.ScheduleRequest) (producer.ScheduleView, error) {
	var out producer.ScheduleView
	err := b.call(ctx, who, "POST", "/v1/schedules", s, &out)
	return out, err
}

// RemoveSchedule implements Backend.
func (b *ClientBackend) RemoveSchedule(ctx context.Context, who, name, reason string) error {
	return b.call(ctx, who, "DELETE", "/v1/schedules/"+url.PathEscape(name)+"?"+url.Values{"reason": {reason}}.Encode(), nil, nil)
}

// Index implements Backend.
func (b *ClientBackend) Index(ctx context.Context) (*msgindex.Coverage, error) {
	var c msgindex.Coverage
	err := b.call(ctx, b.reader(), "GET", "/v1/index", nil, &c)
	if notFound(err) {
		return nil, nil
	}
	c.Retention = secondsDuration(c.RetentionSeconds)
	return &c, err
}

func secondsDuration(s int64) time.Duration { return time.Duration(s) * time.Second }
