// Package console is imrecall's operator's console: server-rendered pages
// (html/template, every asset embedded) served by `imrecall serve` at /,
// with a few lines of plain JavaScript that follow jobs live over
// server-sent events. Operators sign in with an API token (read tokens see,
// admin tokens act); the session is a random id in an HttpOnly,
// SameSite=Strict cookie, kept in Redis with the token's name and role,
// never the token. Every form carries a CSRF token, and every POST from
// another site's page is refused as the API refuses it.
//
// The console reaches the application through Backend, the interface it
// defines with only the methods it needs.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/imrecall/imrecall/api"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
	"github.com/redis/go-redis/v9"
)

//go:embed templates/*.html static/*
var assets embed.FS

// staticFiles is the static directory of assets, served under /static/.
var staticFiles = func() fs.FS {
	sub, err := fs.Sub(assets, "static")
	if err != nil {
		panic(err) // "static" is a valid name: fs.Sub cannot refuse it
	}
	return sub
}()

// Action is something an admin does to a job from its page.
type Action string

// The actions of a job page.
const (
	ActionCancel  Action = "cancel"
	ActionPause   Action = "pause"
	ActionResume  Action = "resume"
	ActionRequeue Action = "requeue"
	ActionApprove Action = "approve"
)

// Backend is what the console needs of the application. who is the name of
// the signed-in token, recorded as who asked.
type Backend interface {
	// Jobs returns a page of jobs, newest first, from offset.
	Jobs(ctx context.Context, f jobs.PageFilter, offset int64, n int) (jobs.JobPage, error)
	Job(ctx context.Context, id string) (jobs.Job, error)
	Report(ctx context.Context, id string) (jobs.Report, error)
	// DeadLetters returns up to limit dead letters of a job.
	DeadLetters(ctx context.Context, id string, limit int) ([]jobs.DeadLetter, error)
	// ExportDeadLetters streams every dead letter of a job as format
	// (jsonl or csv).
	ExportDeadLetters(ctx context.Context, id, format string, w io.Writer) error
	// Audit returns the latest n audit events, newest first.
	Audit(ctx context.Context, n int) ([]jobs.Event, error)
	// Verification and Certificate return a job's last verification and its
	// certificate of erasure as JSON, or nil when there is none.
	Verification(ctx context.Context, id string) (json.RawMessage, error)
	Certificate(ctx context.Context, id string) (json.RawMessage, error)
	// Create plans the job req asks for (or only a dry run of it).
	Create(ctx context.Context, who string, req producer.JobRequest) (api.CreateJobResponse, error)
	// Act applies an action to a job.
	Act(ctx context.Context, who, id string, a Action, reason string) error
	Schedules(ctx context.Context) ([]producer.ScheduleView, error)
	// AddSchedule adds a schedule, or with s.DryRun only checks it; both
	// answer it with its next due times.
	AddSchedule(ctx context.Context, who string, s api.ScheduleRequest) (producer.ScheduleView, error)
	RemoveSchedule(ctx context.Context, who, name, reason string) error
	// Index returns the callback index's coverage; nil when the server keeps
	// no index.
	Index(ctx context.Context) (*msgindex.Coverage, error)
}

// Error is a refusal of the backend: Status is the HTTP status the API
// answers it with (400 bad request, 403 not allowed, 404 not found, 409 the
// job's state forbids it); Message says why, for the operator.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Config configures a Console. Backend, Redis and Authenticate are required.
type Config struct {
	Backend Backend
	// Redis keeps the sessions, under Prefix+":console:session:".
	Redis  redis.UniversalClient
	Prefix string
	// Authenticate finds the token of a secret typed into the sign-in form
	// (api.Server.Authenticate).
	Authenticate func(secret string) (api.Token, bool)
	// Current finds a token by name as the server accepts it now: a
	// session whose token it does not find ends, and a session acts in its
	// token's current role. Nil: sessions are trusted as signed in.
	Current func(name string) (api.Token, bool)
	// SessionTTL is how long a session lasts; zero is 12 hours.
	SessionTTL time.Duration
	// CapOf is the calls/s cap of an API (group_msg_recall,
	// admin_msgwithdraw), shown next to a job's rate; nil: not shown.
	CapOf func(api string) int
	// PageSize is the number of jobs per page; zero is 50.
	PageSize int
	// Poll is how often live pages are updated; zero is one second.
	Poll time.Duration
	// Log; nil discards.
	Log *slog.Logger
}

// Console serves the operator's console.
type Console struct {
	cfg      Config
	sessions *sessions
	pages    map[string]*pageTemplate
	log      *slog.Logger
}

// New validates cfg and parses the templates.
func New(cfg Config) (*Console, error) {
	switch {
	case cfg.Backend == nil:
		return nil, errors.New("console: Backend is required")
	case cfg.Redis == nil:
		return nil, errors.New("console: Redis is required (sessions)")
	case cfg.Authenticate == nil:
		return nil, errors.New("console: Authenticate is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = jobs.DefaultPrefix
	}
	cfg.SessionTTL = positiveOr(cfg.SessionTTL, 12*time.Hour)
	cfg.PageSize = positiveOr(cfg.PageSize, 50)
	cfg.Poll = positiveOr(cfg.Poll, time.Second)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return &Console{cfg: cfg, sessions: &sessions{rdb: cfg.Redis, prefix: cfg.Prefix + ":console:session:", ttl: cfg.SessionTTL},
		pages: pages, log: cfg.Log}, nil
}

// positiveOr is v, or def when v is not positive.
func positiveOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Paths are the path patterns (http.ServeMux, without a method) the console
// serves; a server mounts the console on each and keeps the rest (/v1/,
// /monitor/, /healthz, …) for the API.
var Paths = []string{"/{$}", "/login", "/logout", "/jobs", "/jobs/", "/new", "/schedules", "/schedules/", "/index", "/static/"}

// Mount returns a handler that serves the console on Paths and everything
// else with other (the API's handler).
func (c *Console) Mount(other http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", other)
	h := c.Handler()
	for _, p := range Paths {
		mux.Handle(p, h)
	}
	return mux
}

// Handler returns the console's handler.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	// Only the static directory: an encoded "/static/%2e%2e/" must not reach
	// the templates.
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(staticFiles)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/jobs", http.StatusSeeOther) })
	mux.HandleFunc("GET /login", c.loginForm)
	mux.HandleFunc("POST /login", c.login)
	// Every other page needs a session; those that change something, an
	// admin's.
	for _, rt := range []struct {
		pattern string
		need    api.Role
		h       handlerFunc
	}{
		{"POST /logout", api.RoleRead, c.logout},
		{"GET /jobs", api.RoleRead, c.jobList},
		{"GET /jobs/stream", api.RoleRead, c.stream},
		{"GET /jobs/{id}", api.RoleRead, c.jobPage},
		{"GET /jobs/{id}/export/{format}", api.RoleRead, c.export},
		{"POST /jobs/{id}/{action}", api.RoleAdmin, c.act},
		{"GET /new", api.RoleRead, c.newForm},
		{"POST /new", api.RoleAdmin, c.newJob},
		{"GET /schedules", api.RoleRead, c.scheduleList},
		{"POST /schedules", api.RoleAdmin, c.addSchedule},
		{"POST /schedules/{name}/remove", api.RoleAdmin, c.removeSchedule},
		{"GET /index", api.RoleRead, c.indexPage},
	} {
		mux.HandleFunc(rt.pattern, c.signedIn(rt.need, rt.h))
	}
	return secureHeaders(mux)
}

// secureHeaders sets the headers of every console answer: no framing, no
// sniffing, scripts and styles from this server only.
func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "same-origin")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
		h.ServeHTTP(w, r)
	})
}
