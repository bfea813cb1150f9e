// Package api is imrecall's HTTP API, served by `imrecall serve`: JSON
// routes for everything the CLI does (create a job of any plan, with a dry
// run; follow, cancel, pause and resume it; list, export and re-queue its
// dead letters; verify it and issue its certificate of erasure, in the
// background; manage schedules), behind bearer tokens; Tencent's callbacks
// at /callback; the asynq dashboard at /monitor; /metrics, /healthz and
// /readyz. The routes are described in openapi.yaml, served at
// /openapi.yaml and checked against the server by the tests.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
)

// OpenAPI is the API's description (OpenAPI 3.0, YAML).
//
//go:embed openapi.yaml
var OpenAPI []byte

// Body limits.
const (
	// MaxJobBody bounds a job request: about 100,000 listed messages.
	MaxJobBody = 16 << 20
	// MaxSmallBody bounds every other request body.
	MaxSmallBody = 64 << 10
)

// Config configures a Server. Client, AppID and Tokens are required.
type Config struct {
	// Client creates, plans and acts on jobs: every job route is an
	// adapter over it (it decides index or scan, dry runs, confirmation).
	Client *imrecall.Client
	// Store is the job store of the read routes; nil is Client.Store().
	Store     *jobs.Store
	Schedules *producer.Schedules
	// IM reads histories for verifications; nil refuses them.
	IM producer.IM
	// Index is the callback index (GET /v1/index); nil: none.
	Index *msgindex.Index
	// AppID is the Tencent SDKAppID jobs are for.
	AppID int64
	// Tokens are the accepted bearer tokens; at least one.
	Tokens []Token
	// Callbacks serves POST /callback; nil: not served.
	Callbacks http.Handler
	// Monitor and MonitorReadOnly serve the asynq dashboard under /monitor/
	// to admin and read tokens; nil: not served.
	Monitor, MonitorReadOnly http.Handler
	// Metrics serves /metrics; nil: not served.
	Metrics http.Handler
	// Ready reports whether dependencies answer (/readyz); nil: always.
	Ready func(context.Context) error
	// DiscoveryConcurrency is how many histories a verification reads at
	// once; zero is 16.
	DiscoveryConcurrency int
	// Certificates configures POST and GET /v1/jobs/{id}/certificate; nil:
	// the routes answer 501.
	Certificates *Certificates
	// VerifyTimeout bounds a verification or certificate run in the
	// background; zero is one hour.
	VerifyTimeout time.Duration
	// Log; nil discards.
	Log *slog.Logger
}

// Server is the HTTP API.
type Server struct {
	cfg    Config
	client *imrecall.Client
	auth   *authenticator
	log    *slog.Logger
	now    func() time.Time
	bg     *background
}

// New validates cfg and returns a server.
func New(cfg Config) (*Server, error) {
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("api: no tokens: give at least one (IMRECALL_API_TOKENS or --tokens-file)")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, client: cfg.Client, auth: newAuthenticator(cfg.Tokens), log: cfg.Log, now: time.Now, bg: newBackground()}, nil
}

// withDefaults checks the required fields (Client, AppID) and fills in the
// defaults of the others.
func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.Client == nil:
		return cfg, errors.New("api: Client is required")
	case cfg.AppID <= 0:
		return cfg, fmt.Errorf("api: AppID %d: want the app's SDKAppID", cfg.AppID)
	}
	if cfg.Store == nil {
		cfg.Store = cfg.Client.Store()
	}
	if cfg.DiscoveryConcurrency <= 0 {
		cfg.DiscoveryConcurrency = 16
	}
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// Route is one route of the API. Role is empty for public routes.
type Route struct {
	Method, Path string
	Role         Role
	handler      func(w http.ResponseWriter, r *http.Request, who Token)
}

// Routes lists the JSON routes (not /monitor/, which is asynqmon's).
func (s *Server) Routes() []Route {
	rs := []Route{
		{"GET", "/healthz", "", s.healthz},
		{"GET", "/readyz", "", s.readyz},
		{"GET", "/openapi.yaml", "", s.openapi},
		{"GET", "/v1/jobs", RoleRead, s.listJobs},
		{"POST", "/v1/jobs", RoleAdmin, s.createJob},
		{"GET", "/v1/jobs/{id}", RoleRead, s.getJob},
		{"GET", "/v1/jobs/{id}/report", RoleRead, s.jobReport},
		{"POST", "/v1/jobs/{id}/verify", RoleAdmin, s.startVerify},
		{"GET", "/v1/jobs/{id}/verify", RoleRead, s.lastVerify},
		{"POST", "/v1/jobs/{id}/certificate", RoleAdmin, s.startCertificate},
		{"GET", "/v1/jobs/{id}/certificate", RoleRead, s.getCertificate},
		{"GET", "/v1/jobs/{id}/certificate.sig", RoleRead, s.getCertificatePart("sig")},
		{"GET", "/v1/jobs/{id}/certificate.rows.jsonl", RoleRead, s.getCertificatePart("rows")},
		{"POST", "/v1/jobs/{id}/cancel", RoleAdmin, s.cancelJob},
		{"POST", "/v1/jobs/{id}/approve", RoleAdmin, s.approveJob},
		{"POST", "/v1/jobs/{id}/pause", RoleAdmin, s.pauseJob(true)},
		{"POST", "/v1/jobs/{id}/resume", RoleAdmin, s.pauseJob(false)},
		{"GET", "/v1/jobs/{id}/dead-letters", RoleRead, s.deadLetters},
		{"POST", "/v1/jobs/{id}/dead-letters/requeue", RoleAdmin, s.requeue},
		{"GET", "/v1/audit", RoleRead, s.audit},
		{"GET", "/v1/schedules", RoleRead, s.listSchedules},
		{"POST", "/v1/schedules", RoleAdmin, s.addSchedule},
		{"DELETE", "/v1/schedules/{name}", RoleAdmin, s.removeSchedule},
		{"GET", "/v1/index", RoleRead, s.indexCoverage},
		{"POST", "/v1/index/restart-coverage", RoleAdmin, s.restartCoverage},
	}
	if s.cfg.Callbacks != nil {
		rs = append(rs, Route{"POST", "/callback", "", func(w http.ResponseWriter, r *http.Request, _ Token) {
			s.cfg.Callbacks.ServeHTTP(w, r)
		}})
	}
	if s.cfg.Metrics != nil {
		rs = append(rs, Route{"GET", "/metrics", "", func(w http.ResponseWriter, r *http.Request, _ Token) {
			s.cfg.Metrics.ServeHTTP(w, r)
		}})
	}
	return rs
}

// Handler returns the HTTP handler of every route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.Routes() {
		mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	if s.cfg.Monitor != nil {
		mux.Handle("/monitor/", s.monitor())
		mux.Handle("GET /monitor", http.RedirectHandler("/monitor/", http.StatusMovedPermanently))
	}
	return mux
}

// statusWriter remembers the status for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streamed exports reach the client as they are written.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		var who Token
		if rt.Role != "" && mutating(r.Method) {
			// A browser may hold credentials for this server; a page of
			// another site must not be able to use them.
			if why := crossSite(r); why != "" {
				writeError(sw, http.StatusForbidden, "cross-site request refused: "+why)
				s.access(r, sw.status, start, "")
				return
			}
			if r.Method != http.MethodDelete && !jsonContent(r) {
				writeError(sw, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: want application/json", r.Header.Get("Content-Type")))
				s.access(r, sw.status, start, "")
				return
			}
		}
		if rt.Role != "" {
			t, ok := s.auth.find(r, false)
			switch {
			case !ok:
				sw.Header().Set("WWW-Authenticate", `Bearer realm="imrecall"`)
				writeError(sw, http.StatusUnauthorized, "a valid bearer token is required (Authorization: Bearer TOKEN)")
			case !t.Role.allows(rt.Role):
				writeError(sw, http.StatusForbidden, fmt.Sprintf("token %s has role %s; %s %s needs %s", t.Name, t.Role, rt.Method, rt.Path, rt.Role))
			default:
				who = t
			}
			if !ok || !t.Role.allows(rt.Role) {
				s.access(r, sw.status, start, t.Name)
				return
			}
		}
		rt.handler(sw, r, who)
		if rt.Path != "/metrics" && rt.Path != "/healthz" && rt.Path != "/readyz" {
			s.access(r, sw.status, start, who.Name)
		}
	})
}

// access logs a request: never its headers (tokens) nor its query (Sign).
func (s *Server) access(r *http.Request, status int, start time.Time, token string) {
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "api request", slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.Int("status", status), slog.String("token", token),
		slog.Duration("took", time.Since(start)))
}

// monitor serves asynqmon: the full dashboard to admin tokens, a read-only
// one to read tokens (which may not send anything but GET). Browsers
// authenticate with Basic auth (any user name, the token as password), here
// only; changes from another site's page are refused, and no other site may
// frame the dashboard: the browser sends its Basic credentials with a
// framed page too, whose own requests come from this site, so a page that
// framed it could lead an admin into clicking its buttons (delete, archive,
// run tasks).
func (s *Server) monitor() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if mutating(r.Method) {
			if why := crossSite(r); why != "" {
				writeError(w, http.StatusForbidden, "cross-site request refused: "+why)
				return
			}
		}
		t, ok := s.auth.find(r, true)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="imrecall monitor"`)
			writeError(w, http.StatusUnauthorized, "a valid token is required (Bearer, or Basic with the token as password)")
			return
		}
		h := s.cfg.Monitor
		if t.Role != RoleAdmin {
			if s.cfg.MonitorReadOnly == nil {
				writeError(w, http.StatusForbidden, "the dashboard needs an admin token")
				return
			}
			if mutating(r.Method) {
				writeError(w, http.StatusForbidden, fmt.Sprintf("token %s has role %s: the dashboard is read-only for it", t.Name, t.Role))
				return
			}
			h = s.cfg.MonitorReadOnly
		}
		h.ServeHTTP(w, r)
	})
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// fail answers err with the status its kind calls for.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var br badRequest
	var tl errTooLarge
	var se *jobs.StatusError
	var fe *imrecall.FieldError
	var sa *jobs.SelfApprovalError
	var ce *imrecall.CancelledError
	switch {
	case errors.As(err, &sa):
		writeError(w, http.StatusForbidden, sa.Error())
	case errors.As(err, &ce):
		// Not a failure to retry: a client that retries a 5xx would
		// create the job the operator cancelled again.
		writeError(w, http.StatusConflict, ce.Error())
	case errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, fe.Error())
	case errors.As(err, &se), errors.Is(err, jobs.ErrBusy):
		writeError(w, http.StatusConflict, err.Error()) // e.g. re-queueing a cancelled job, or one being re-queued
	case errors.As(err, &br):
		writeError(w, http.StatusBadRequest, br.msg)
	case errors.As(err, &tl):
		writeError(w, http.StatusRequestEntityTooLarge, tl.Error())
	case errors.Is(err, jobs.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, context.Canceled):
		writeError(w, 499, "request cancelled")
	default:
		s.log.ErrorContext(r.Context(), "api request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request, _ Token) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ Token) {
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			// Unauthenticated: the cause (which names Redis's address) goes
			// to the log, the answer says only what is not ready.
			s.log.WarnContext(r.Context(), "not ready", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "Redis does not answer (the server's log says why)"})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request, _ Token) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(OpenAPI)
}
