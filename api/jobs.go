package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
)

// Job kinds a request can ask for (see producer.JobRequest).
const (
	KindRecall     = producer.KindRecall
	KindPurgeUser  = producer.KindPurgeUser
	KindPurgeGroup = producer.KindPurgeGroup
)

// Sources of a user purge.
const (
	SourceAuto  = producer.SourceAuto
	SourceIndex = producer.SourceIndex
	SourceScan  = producer.SourceScan
)

// MessageRef names one message, with Tencent's field names.
type MessageRef = producer.MessageRef

// CreateJobRequest asks for a job: the typed request schedules hold too.
type CreateJobRequest = producer.JobRequest

// CreateJobResponse answers a job request (201) or a dry run (200).
type CreateJobResponse struct {
	DryRun bool      `json:"dry_run"`
	Job    *jobs.Job `json:"job,omitempty"`
	// Plan is what the request plans, as imrecall.Client.Plan says it:
	// the source, the messages found (-1: unknown, a purge by scan that
	// has not scanned), the recall calls they take and their time at the
	// cap, the index's counts and coverage, the scope, its warnings.
	imrecall.Plan
	// Planned and Tasks are known at once for listed and indexed messages;
	// a purge by scan plans as its discovery tasks run (follow the job).
	Planned    int64 `json:"planned"`
	Duplicates int64 `json:"duplicates"`
	Tasks      int64 `json:"tasks"`
	// Planning: the job's planning waits for its workers (serve
	// --backlog) and goes on after this answer; Planned and Tasks are the
	// counts so far. Follow the job.
	Planning bool `json:"planning,omitempty"`
}

// confirmationRequired answers 409 with the size of the job.
type confirmationRequired struct {
	Error    string `json:"error"`
	Messages int64  `json:"messages"`
}

// actor is who asked: the principal (token:NAME, schedule:NAME), and on
// whose behalf if the request says.
func actor(principal, onBehalf string) string {
	onBehalf = strings.TrimSpace(onBehalf)
	if onBehalf == "" {
		return principal
	}
	return onBehalf + " (" + principal + ")"
}

// principal names a token as who asked.
func (t Token) principal() string { return "token:" + t.Name }

func (s *Server) createJob(w http.ResponseWriter, r *http.Request, who Token) {
	var req CreateJobRequest
	if err := decodeRequest(w, r, MaxJobBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	resp, err := s.create(r.Context(), req, who.principal())
	var need *imrecall.ConfirmationRequired
	switch {
	case errors.As(err, &need):
		msg := fmt.Sprintf("confirmation required: %d messages would be recalled, and recalled messages cannot be restored; repeat with \"confirm\": true", need.Messages)
		if need.Messages < 0 {
			msg = "confirmation required: a purge by history scan learns its size only as it scans (send \"dry_run\": true to see it); repeat with \"confirm\": true"
		}
		writeJSON(w, http.StatusConflict, confirmationRequired{Error: msg, Messages: need.Messages})
	case err != nil:
		s.fail(w, r, err)
	case resp.DryRun:
		writeJSON(w, http.StatusOK, resp)
	default:
		writeJSON(w, http.StatusCreated, resp)
	}
}

// create runs a request through the Client on behalf of principal: a dry
// run (Plan) or a job (Create), whose confirmation the Client decides.
func (s *Server) create(ctx context.Context, jr CreateJobRequest, principal string) (CreateJobResponse, error) {
	req, err := imrecall.RequestOf(jr)
	if err != nil {
		return CreateJobResponse{}, err
	}
	who := actor(principal, jr.Actor)
	if jr.DryRun {
		p, err := s.client.Plan(ctx, req)
		if err != nil {
			return CreateJobResponse{}, err
		}
		_ = s.client.Audit(ctx, jobs.Event{Actor: who, Action: "dry_run", Detail: fmt.Sprintf("%s: %d messages; %s", jr.Kind, p.Messages, jr.Reason)})
		resp := responseOf(p)
		resp.DryRun = true
		return resp, nil
	}
	// The job outlives a client that drops the request while it is
	// planned; with a bound on queued work, planning that waits for the
	// workers goes on in the background (the response says planning).
	c, err := s.client.Create(context.WithoutCancel(ctx), req, imrecall.CreateOptions{Actor: who, Requester: principal, Reason: jr.Reason, Queue: jr.Queue,
		Confirmed: jr.Confirm, InBackground: true})
	if err != nil {
		return CreateJobResponse{}, err
	}
	return CreatedResponse(c), nil
}

// CreatedResponse is a created job in the API's shape.
func CreatedResponse(c imrecall.Created) CreateJobResponse {
	resp := responseOf(c.Plan)
	resp.Report = nil // a dry run's per-target count
	resp.Job, resp.Planned, resp.Duplicates, resp.Tasks, resp.Planning = &c.Job, c.Planned, c.Duplicates, c.Tasks, c.Planning
	return resp
}

// responseOf is a plan in the API's shape.
func responseOf(p imrecall.Plan) CreateJobResponse { return CreateJobResponse{Plan: p} }

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request, _ Token) {
	limit, err := intParam(r, "limit", 50, 1, 1000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	list, err := s.client.Jobs(r.Context(), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if list == nil {
		list = []jobs.Job{}
	}
	writeJSON(w, http.StatusOK, list)
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, badf("%s %q: want a whole number from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

// jobID reads and checks the {id} of the path.
func jobID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if err := jobs.ValidID(id); err != nil {
		return "", badf("%v", err)
	}
	return id, nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request, _ Token) {
	id, err := jobID(r)
	if err == nil {
		var j jobs.Job
		if j, err = s.client.Job(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, j)
			return
		}
	}
	s.fail(w, r, err)
}

func (s *Server) jobReport(w http.ResponseWriter, r *http.Request, _ Token) {
	id, err := jobID(r)
	if err == nil {
		var rep jobs.Report
		if rep, err = s.client.Report(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, rep)
			return
		}
	}
	s.fail(w, r, err)
}

// reasonRequest is the body of cancel, approve, pause and resume (and
// part of a re-queue's).
type reasonRequest struct {
	Reason string `json:"reason,omitempty"`
	Actor  string `json:"actor,omitempty"`
}

// optionalBody decodes a body that may be empty.
func optionalBody(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return decode(w, r, MaxSmallBody, v)
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request, who Token) {
	var req reasonRequest
	id, err := jobID(r)
	if err == nil {
		err = optionalBody(w, r, &req)
	}
	if err == nil {
		if _, _, err = s.client.Cancel(r.Context(), id, actor(who.principal(), req.Actor), req.Reason); err == nil {
			s.getJob(w, r, who)
			return
		}
	}
	s.fail(w, r, err)
}

func (s *Server) pauseJob(pause bool) func(http.ResponseWriter, *http.Request, Token) {
	return func(w http.ResponseWriter, r *http.Request, who Token) {
		var req reasonRequest
		id, err := jobID(r)
		if err == nil {
			err = optionalBody(w, r, &req)
		}
		if err == nil {
			by := actor(who.principal(), req.Actor)
			if pause {
				err = s.client.Pause(r.Context(), id, by, req.Reason)
			} else {
				_, err = s.client.Resume(r.Context(), id, by, req.Reason)
			}
			if err == nil {
				s.getJob(w, r, who)
				return
			}
		}
		s.fail(w, r, err)
	}
}

// approveJob approves a job held for approval: the approver is the
// token's principal, refused (403) when it is the requester's.
func (s *Server) approveJob(w http.ResponseWriter, r *http.Request, who Token) {
	var req reasonRequest
	id, err := jobID(r)
	if err == nil {
		err = optionalBody(w, r, &req)
	}
	if err == nil {
		var j jobs.Job
		if j, err = s.client.Approve(r.Context(), id, who.principal(), req.Reason); err == nil {
			writeJSON(w, http.StatusOK, j)
			return
		}
	}
	s.fail(w, r, err)
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request, _ Token) {
	q := r.URL.Query()
	id, err := jobID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	match, err := imrecall.DeadLetterFilter{Code: q.Get("code"), Category: q.Get("category")}.Match()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := s.cfg.Store.Get(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	switch format := q.Get("format"); format {
	case "", "json":
		limit, err := intParam(r, "limit", 1000, 1, 100_000)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		list := []jobs.DeadLetter{}
		err = s.cfg.Store.DeadLetters(r.Context(), id, func(d jobs.DeadLetter) error {
			if match(d) && len(list) < limit {
				list = append(list, d)
			}
			return nil
		})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, list)
	case "jsonl", "csv":
		ct := "application/x-ndjson"
		if format == "csv" {
			ct = "text/csv; charset=utf-8"
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+"-dead-letters."+format))
		// Streamed: an error midway can only cut the body short.
		if _, err := s.cfg.Store.ExportDeadLetters(r.Context(), id, match, format, w); err != nil {
			s.log.ErrorContext(r.Context(), "exporting dead letters", "job_id", id, "err", err)
		}
	default:
		s.fail(w, r, badf("format %q: want json, jsonl or csv", format))
	}
}

// requeueRequest is a re-queue's body: a reasonRequest, the dead letters
// it moves (Code, Category; by default those that need attention), and
// DryRun to count them and change nothing.
type requeueRequest struct {
	reasonRequest
	Code     string `json:"code,omitempty"`
	Category string `json:"category,omitempty"`
	DryRun   bool   `json:"dry_run,omitempty"`
	// Confirm is required to re-queue more dead letters than the server's
	// confirmation threshold.
	Confirm bool `json:"confirm,omitempty"`
}

// RequeueDryRun answers a re-queue's dry run: how many dead letters it
// would move.
type RequeueDryRun struct {
	DryRun   bool `json:"dry_run"`
	Messages int  `json:"messages"`
}

func (s *Server) requeue(w http.ResponseWriter, r *http.Request, who Token) {
	var req requeueRequest
	id, err := jobID(r)
	if err == nil {
		err = optionalBody(w, r, &req)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if req.DryRun {
		n, err := s.client.CountDeadLetters(r.Context(), id, imrecall.DeadLetterFilter{Code: req.Code, Category: req.Category})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, RequeueDryRun{DryRun: true, Messages: n})
		return
	}
	res, err := s.client.RequeueInBackground(r.Context(), id, imrecall.DeadLetterFilter{Code: req.Code, Category: req.Category},
		imrecall.RequeueOptions{Actor: actor(who.principal(), req.Actor), Reason: req.Reason, Confirmed: req.Confirm})
	var need *imrecall.ConfirmationRequired
	if errors.As(err, &need) {
		writeJSON(w, http.StatusConflict, confirmationRequired{Messages: need.Messages,
			Error: fmt.Sprintf("confirmation required: %d dead letters would be re-queued (more than %d), and recalled messages cannot be restored; repeat with \"confirm\": true", need.Messages, need.Above)})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, _ Token) {
	limit, err := intParam(r, "limit", 100, 1, 10_000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs, err := s.cfg.Store.AuditLog(r.Context(), int64(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if evs == nil {
		evs = []jobs.Event{}
	}
	writeJSON(w, http.StatusOK, evs)
}

// ScheduleRequest adds (or replaces) a schedule: a name, a cron spec and
// the typed job request each firing creates. A request names what a job is,
// never how a worker connects: a connection setting (api_base, admin,
// secret_key, peers_file, …) anywhere in the body is refused, naming it.
type ScheduleRequest struct {
	Name    string            `json:"name"`
	Cron    string            `json:"cron"`
	Request *CreateJobRequest `json:"request"`
	Reason  string            `json:"reason,omitempty"`
	Actor   string            `json:"actor,omitempty"`
	// DryRun checks the schedule and answers it with its next due times,
	// adding nothing (the request's own dry_run is refused: a scheduled
	// dry run would do nothing).
	DryRun bool `json:"dry_run,omitempty"`
}

// ScheduleView is a schedule as the API answers it, with its next due
// times.
type ScheduleView = producer.ScheduleView

// decodeRequest reads a job request, refusing a connection setting (API
// base, admin, credentials, files) by name before the strict decode (which
// would only say "unknown field").
func decodeRequest(w http.ResponseWriter, r *http.Request, limit int64, req *CreateJobRequest) error {
	raw, err := readBody(w, r, limit)
	if err != nil {
		return err
	}
	if err := producer.CheckNoConnectionSettings(raw, ""); err != nil {
		return badf("%v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	return decode(w, r, limit, req)
}

// decodeSchedule reads a ScheduleRequest, refusing connection settings by
// name before the strict decode (which would only say "unknown field").
func decodeSchedule(w http.ResponseWriter, r *http.Request) (ScheduleRequest, error) {
	var req ScheduleRequest
	raw, err := readBody(w, r, MaxSmallBody)
	if err != nil {
		return req, err
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) == nil {
		if _, ok := top["args"]; ok {
			return req, badf("args: a schedule holds a typed job request (\"request\": {\"kind\": ...}), not a command line")
		}
		if err := producer.CheckNoConnectionSettings(raw, ""); err != nil {
			return req, badf("%v", err)
		}
		if err := producer.CheckNoConnectionSettings(top["request"], "request."); err != nil {
			return req, badf("%v", err)
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	err = decode(w, r, MaxSmallBody, &req)
	return req, err
}

func (s *Server) schedules() (*producer.Schedules, error) {
	if s.cfg.Schedules == nil {
		return nil, badf("schedules are not configured on this server")
	}
	return s.cfg.Schedules, nil
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request, _ Token) {
	sc, err := s.schedules()
	if err == nil {
		var list []producer.Schedule
		if list, err = sc.List(r.Context()); err == nil {
			views := make([]ScheduleView, len(list))
			for i := range list {
				views[i] = list[i].View(s.now())
			}
			writeJSON(w, http.StatusOK, views)
			return
		}
	}
	s.fail(w, r, err)
}

func (s *Server) addSchedule(w http.ResponseWriter, r *http.Request, who Token) {
	sc, err := s.schedules()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req, err := decodeSchedule(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// A firing is held for approval as the same request sent to POST
	// /v1/jobs would be: the worker that fires it has no threshold of its
	// own, so the schedule carries this server's, and who added it.
	sched := producer.Schedule{Name: req.Name, Cron: req.Cron, Request: req.Request, CreatedBy: actor(who.principal(), req.Actor), Reason: req.Reason, CreatedAt: s.now().UTC(),
		ApprovalAbove: s.client.ApprovalAbove(), Requester: who.principal()}
	if err := sched.Validate(); err != nil {
		s.fail(w, r, badf("%v", err))
		return
	}
	view := sched.View(s.now())
	if req.DryRun {
		view.DryRun = true
		writeJSON(w, http.StatusOK, view)
		return
	}
	if err := sc.Add(r.Context(), sched); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, view)
}

func (s *Server) removeSchedule(w http.ResponseWriter, r *http.Request, who Token) {
	sc, err := s.schedules()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	err = sc.Remove(r.Context(), name, actor(who.principal(), r.URL.Query().Get("actor")), r.URL.Query().Get("reason"))
	if errors.Is(err, producer.ErrNoSchedule) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("schedule %q not found", name))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) indexCoverage(w http.ResponseWriter, r *http.Request, _ Token) {
	if s.cfg.Index == nil {
		writeError(w, http.StatusNotFound, "this server keeps no callback index")
		return
	}
	cov, err := s.cfg.Index.Coverage(r.Context(), s.cfg.AppID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cov)
}

// RestartCoverageRequest declares the index complete only from At (default now).
type RestartCoverageRequest struct {
	At     string `json:"at,omitempty"`
	Reason string `json:"reason"`
	Actor  string `json:"actor,omitempty"`
}

func (s *Server) restartCoverage(w http.ResponseWriter, r *http.Request, who Token) {
	if s.cfg.Index == nil {
		writeError(w, http.StatusNotFound, "this server keeps no callback index")
		return
	}
	var req RestartCoverageRequest
	if err := decode(w, r, MaxSmallBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	at := s.now()
	if req.At != "" {
		t, err := time.Parse(time.RFC3339, req.At)
		if err != nil {
			s.fail(w, r, badf("at %q: want RFC 3339", req.At))
			return
		}
		at = t
	}
	if strings.TrimSpace(req.Reason) == "" {
		s.fail(w, r, badf("reason: required"))
		return
	}
	if err := s.cfg.Store.Audit(r.Context(), jobs.Event{Actor: actor(who.principal(), req.Actor), Action: "index_restart_coverage",
		Detail: at.UTC().Format(time.RFC3339) + "; " + req.Reason}); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.Index.RestartCoverage(r.Context(), s.cfg.AppID, at); err != nil {
		s.fail(w, r, err)
		return
	}
	s.indexCoverage(w, r, who)
}
