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
	"strconv"
	"time"

	"github.com/imrecall/imrecall/api"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
)

// APIBackend is the Backend over the HTTP API's own handler, called in
// process: every action goes through the same routes, checks, audit
// events and answers as a request to /v1/ (the console adds nothing the
// API does not do), on behalf of the signed-in token, which it finds by
// name among the server's tokens (held in memory, never in a session).
// Lists of jobs page through the store, as the API lists only the newest.
//
// It is the one file to switch when the root package's Client arrives.
type APIBackend struct {
	api    http.Handler
	store  *jobs.Store
	tokens map[string]api.Token
	// reads is the token reads are made with (any token may read): the
	// first read token given, else the first token.
	reads string
	// Approvals tells whether the API has POST /v1/jobs/{id}/approve.
	Approvals bool
}

// NewAPIBackend returns a backend over handler (api.Server.Handler), store
// and the server's tokens.
func NewAPIBackend(handler http.Handler, store *jobs.Store, tokens []api.Token) *APIBackend {
	b := &APIBackend{api: handler, store: store, tokens: map[string]api.Token{}}
	for _, t := range tokens {
		b.tokens[t.Name] = t
		if b.reads == "" || t.Role == api.RoleRead && b.tokens[b.reads].Role != api.RoleRead {
			b.reads = t.Name
		}
	}
	return b
}

// reader is the token reads are made with.
func (b *APIBackend) reader() string { return b.reads }

// call sends one request to the API as who and decodes a JSON answer into
// out (when not nil); an answer of 300 or more is an *Error.
func (b *APIBackend) call(ctx context.Context, who, method, path string, body, out any) error {
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
func (b *APIBackend) Jobs(ctx context.Context, f jobs.PageFilter, offset int64, n int) (jobs.JobPage, error) {
	return b.store.Page(ctx, f, offset, n)
}

// Job implements Backend.
func (b *APIBackend) Job(ctx context.Context, id string) (jobs.Job, error) {
	var j jobs.Job
	err := b.call(ctx, b.reader(), "GET", jobPath(id, ""), nil, &j)
	return j, err
}

// Report implements Backend.
func (b *APIBackend) Report(ctx context.Context, id string) (jobs.Report, error) {
	var r jobs.Report
	err := b.call(ctx, b.reader(), "GET", jobPath(id, "/report"), nil, &r)
	return r, err
}

// DeadLetters implements Backend.
func (b *APIBackend) DeadLetters(ctx context.Context, id string, limit int) ([]jobs.DeadLetter, error) {
	var out []jobs.DeadLetter
	err := b.call(ctx, b.reader(), "GET", jobPath(id, "/dead-letters?limit="+strconv.Itoa(limit)), nil, &out)
	return out, err
}

// ExportDeadLetters implements Backend with the store's export, streamed.
func (b *APIBackend) ExportDeadLetters(ctx context.Context, id, format string, w io.Writer) error {
	_, err := b.store.ExportDeadLetters(ctx, id, func(jobs.DeadLetter) bool { return true }, format, w)
	return err
}

// Audit implements Backend.
func (b *APIBackend) Audit(ctx context.Context, n int) ([]jobs.Event, error) {
	var out []jobs.Event
	err := b.call(ctx, b.reader(), "GET", "/v1/audit?limit="+strconv.Itoa(n), nil, &out)
	return out, err
}

// optional reads a JSON document that may not exist (404, or 501 when the
// server issues no certificates).
func (b *APIBackend) optional(ctx context.Context, path string) (json.RawMessage, error) {
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
func (b *APIBackend) Verification(ctx context.Context, id string) (json.RawMessage, error) {
	return b.optional(ctx, jobPath(id, "/verify"))
}

// Certificate implements Backend.
func (b *APIBackend) Certificate(ctx context.Context, id string) (json.RawMessage, error) {
	return b.optional(ctx, jobPath(id, "/certificate"))
}

// Create implements Backend. A request above the confirmation threshold
// without "confirm" is an *Error with status 409.
func (b *APIBackend) Create(ctx context.Context, who string, req producer.JobRequest) (api.CreateJobResponse, error) {
	var resp api.CreateJobResponse
	err := b.call(ctx, who, "POST", "/v1/jobs", req, &resp)
	return resp, err
}

// Act implements Backend.
func (b *APIBackend) Act(ctx context.Context, who, id string, a Action, reason string) error {
	path := map[Action]string{ActionCancel: "/cancel", ActionPause: "/pause", ActionResume: "/resume",
		ActionRequeue: "/dead-letters/requeue", ActionApprove: "/approve"}[a]
	if path == "" || a == ActionApprove && !b.Approvals {
		return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no action %q", a)}
	}
	return b.call(ctx, who, "POST", jobPath(id, path), map[string]string{"reason": reason}, nil)
}

// CanApprove implements Backend.
func (b *APIBackend) CanApprove() bool { return b.Approvals }

// Schedules implements Backend.
func (b *APIBackend) Schedules(ctx context.Context) ([]producer.Schedule, error) {
	var out []producer.Schedule
	err := b.call(ctx, b.reader(), "GET", "/v1/schedules", nil, &out)
	return out, err
}

// AddSchedule implements Backend.
func (b *APIBackend) AddSchedule(ctx context.Context, who string, s api.ScheduleRequest) error {
	return b.call(ctx, who, "POST", "/v1/schedules", s, nil)
}

// RemoveSchedule implements Backend.
func (b *APIBackend) RemoveSchedule(ctx context.Context, who, name string) error {
	return b.call(ctx, who, "DELETE", "/v1/schedules/"+url.PathEscape(name), nil, nil)
}

// Index implements Backend.
func (b *APIBackend) Index(ctx context.Context) (*msgindex.Coverage, error) {
	var c msgindex.Coverage
	err := b.call(ctx, b.reader(), "GET", "/v1/index", nil, &c)
	if notFound(err) {
		return nil, nil
	}
	c.Retention = secondsDuration(c.RetentionSeconds)
	return &c, err
}

func secondsDuration(s int64) time.Duration { return time.Duration(s) * time.Second }
