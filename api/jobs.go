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

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
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
	DryRun   bool      `json:"dry_run"`
	Job      *jobs.Job `json:"job,omitempty"`
	Source   string    `json:"source,omitempty"`
	Messages int64     `json:"messages"`
	// Planned and Tasks are known at once for listed and indexed messages;
	// a purge by scan plans as its discovery tasks run (follow the job).
	Planned    int64            `json:"planned"`
	Duplicates int64            `json:"duplicates"`
	Tasks      int64            `json:"tasks"`
	Scans      int              `json:"scans,omitempty"`
	Report     *producer.Report `json:"report,omitempty"`
	Index      *msgindex.Counts `json:"index,omitempty"`
	// SenderUnconfirmed counts index entries left out because the history
	// does not show the user sent them (forged callbacks, others' messages).
	SenderUnconfirmed int64              `json:"sender_unconfirmed,omitempty"`
	Coverage          *msgindex.Coverage `json:"coverage,omitempty"`
	// Scope is the purge's scope and gaps (with, for a dry run by scan,
	// each target read); the job records it. Warnings say, one per gap,
	// why the purge cannot be complete.
	Scope    *jobs.Coverage `json:"scope,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
}

// purgeScope is what a purge covers, for the job's coverage.
type purgeScope struct {
	subject string
	window  producer.Window
	peers   []string
	// user is a user purge's spec: the callback index may know groups the
	// scan does not list (groups the user left); they are added to it.
	user *producer.UserPurge
}

// withScope sets the response's scope and warnings from cov.
func (r *CreateJobResponse) withScope(cov jobs.Coverage) {
	r.Scope, r.Warnings = &cov, producer.Warnings(cov.Gaps)
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
	resp, status, err := s.create(r.Context(), req, who.principal())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if status == http.StatusConflict {
		msg := fmt.Sprintf("confirmation required: %d messages would be recalled, and recalled messages cannot be restored; repeat with \"confirm\": true", resp.Messages)
		if resp.Messages < 0 {
			msg = "confirmation required: a purge by history scan learns its size only as it scans (send \"dry_run\": true to see it); repeat with \"confirm\": true"
		}
		writeJSON(w, status, confirmationRequired{Error: msg, Messages: resp.Messages})
		return
	}
	writeJSON(w, status, resp)
}

func queueOf(req CreateJobRequest, def string) (string, error) {
	if req.Queue == "" {
		return def, nil
	}
	if err := tasks.ValidQueue(req.Queue); err != nil {
		return "", badf("queue: %v", err)
	}
	return req.Queue, nil
}

// create plans the job a request asks for, on behalf of principal: the one
// path behind POST /v1/jobs and every schedule's firing. Its status is 200
// (dry run), 201 (created) or 409 (confirmation required).
func (s *Server) create(ctx context.Context, req CreateJobRequest, who string) (CreateJobResponse, int, error) {
	if strings.TrimSpace(req.Reason) == "" {
		return CreateJobResponse{}, 0, badf("reason: required (why, for the audit record)")
	}
	switch req.Kind {
	case KindRecall:
		return s.createRecall(ctx, req, who)
	case KindPurgeUser:
		return s.createUserPurge(ctx, req, who)
	case KindPurgeGroup:
		return s.createGroupPurge(ctx, req, who)
	}
	return CreateJobResponse{}, 0, badf("kind %q: want %s, %s or %s", req.Kind, KindRecall, KindPurgeUser, KindPurgeGroup)
}

// spec is the job record of a request.
func (s *Server) spec(req CreateJobRequest, who string, kind, queue string) jobs.Spec {
	params := req
	params.Messages = nil // the record keeps the count, not the list
	raw, _ := json.Marshal(struct {
		CreateJobRequest
		MessageCount int `json:"message_count,omitempty"`
	}{params, len(req.Messages)})
	return jobs.Spec{Kind: kind, Queue: queue, AppID: s.cfg.AppID, RequestedBy: actor(who, req.Actor), Reason: req.Reason, Params: raw}
}

// auditDryRun records that someone looked: a dry run changes nothing but is
// part of who asked for what.
func (s *Server) auditDryRun(ctx context.Context, req CreateJobRequest, who string, messages int64) {
	_ = s.cfg.Store.Audit(ctx, jobs.Event{Actor: actor(who, req.Actor), Action: "dry_run",
		Detail: fmt.Sprintf("%s: %d messages; %s", req.Kind, messages, req.Reason)})
}

func (s *Server) createRecall(ctx context.Context, req CreateJobRequest, who string) (CreateJobResponse, int, error) {
	queue, err := queueOf(req, tasks.QueueIncident)
	if err != nil {
		return CreateJobResponse{}, 0, err
	}
	if len(req.Messages) == 0 {
		return CreateJobResponse{}, 0, badf("messages: at least one required for kind %s", KindRecall)
	}
	msgs := make([]producer.Message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = producer.Message{GroupID: m.GroupID, TopicID: m.TopicID, MsgSeq: m.MsgSeq, From: m.From, To: m.To, MsgKey: m.MsgKey}
		if err := msgs[i].Validate(); err != nil {
			return CreateJobResponse{}, 0, badf("messages[%d]: %v", i, err)
		}
	}
	resp := CreateJobResponse{DryRun: req.DryRun, Messages: int64(len(msgs))}
	if req.DryRun {
		s.auditDryRun(ctx, req, who, resp.Messages)
		return resp, http.StatusOK, nil
	}
	if len(msgs) > s.cfg.ConfirmAbove && !req.Confirm {
		return resp, http.StatusConflict, nil
	}
	job, b, err := producer.NewJob(context.WithoutCancel(ctx), s.cfg.Store, s.cfg.Queue, s.spec(req, who, "recall:api", queue),
		func(ctx context.Context, _ jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
			for _, m := range msgs {
				if err := b.AddMessage(ctx, m); err != nil {
					return err
				}
			}
			return nil
		})
	return s.created(ctx, resp, job, b, err)
}

func (s *Server) created(ctx context.Context, resp CreateJobResponse, job jobs.Job, b *producer.Batcher, err error) (CreateJobResponse, int, error) {
	if err != nil {
		return resp, 0, err
	}
	if j, gerr := s.cfg.Store.Get(ctx, job.ID); gerr == nil {
		job = j
	}
	resp.Job = &job
	if b != nil {
		resp.Planned, resp.Duplicates, resp.Tasks = b.Planned, b.Seen-b.Planned, b.Tasks
	}
	return resp, http.StatusCreated, nil
}

func (s *Server) window(req CreateJobRequest) (producer.Window, error) {
	now := s.now()
	var w producer.Window
	var err error
	if w.Since, err = producer.ParseTime(req.Since, now); err != nil {
		return w, badf("since: %v", err)
	}
	if w.Until, err = producer.ParseTime(req.Until, now); err != nil {
		return w, badf("until: %v", err)
	}
	if err := w.Validate(); err != nil {
		return w, badf("%v", err)
	}
	return w, nil
}

func (s *Server) createUserPurge(ctx context.Context, req CreateJobRequest, who string) (CreateJobResponse, int, error) {
	queue, err := queueOf(req, tasks.QueuePurge)
	if err != nil {
		return CreateJobResponse{}, 0, err
	}
	w, err := s.window(req)
	if err != nil {
		return CreateJobResponse{}, 0, err
	}
	spec := producer.UserPurge{User: req.User, Peers: req.Peers, Window: w, Concurrency: s.cfg.DiscoveryConcurrency}
	if err := spec.Validate(); err != nil {
		return CreateJobResponse{}, 0, badf("%s", apiField(err))
	}
	source := req.Source
	if source == "" {
		source = SourceAuto
	}
	resp := CreateJobResponse{DryRun: req.DryRun}
	switch source {
	case SourceAuto, SourceIndex:
		if s.cfg.Index == nil {
			if source == SourceIndex {
				return resp, 0, badf("source index: this server keeps no callback index (start serve with --index)")
			}
			source = SourceScan
			break
		}
		cov, err := s.cfg.Index.Coverage(ctx, s.cfg.AppID)
		if err != nil {
			return resp, 0, err
		}
		resp.Coverage = &cov
		if source == SourceAuto {
			source = SourceScan
			if cov.Covers(w.Since, s.now()) {
				source = SourceIndex
			}
		}
	case SourceScan:
	default:
		return resp, 0, badf("source %q: want %s, %s or %s", req.Source, SourceAuto, SourceIndex, SourceScan)
	}
	resp.Source = source
	if source == SourceIndex {
		return s.purgeByIndex(ctx, req, who, queue, resp, w)
	}
	if s.cfg.IM == nil {
		return resp, 0, badf("source scan: this server has no IM credentials")
	}
	scope := purgeScope{subject: req.User, window: w, peers: req.Peers, user: &spec}
	return s.purgeByScan(ctx, req, who, "purge:user", queue, resp, scope, func() ([]producer.Scan, *producer.Report, error) {
		return producer.UserScans(ctx, s.cfg.IM, spec)
	})
}

func (s *Server) purgeByIndex(ctx context.Context, req CreateJobRequest, who string, queue string, resp CreateJobResponse, w producer.Window) (CreateJobResponse, int, error) {
	if s.cfg.IM == nil {
		return resp, 0, badf("source index: this server has no IM credentials to confirm the senders of indexed messages")
	}
	rep := &producer.Report{}
	if resp.Coverage != nil {
		if why := resp.Coverage.Why(w.Since, s.now()); why != "" {
			rep.AddGap(jobs.Gap{Kind: jobs.GapIndex, What: "the callback index does not cover the whole range: " + why})
		}
	}
	producer.RoamingGap(rep, w, s.now())
	cov := producer.Coverage(req.User, w, nil, []string{producer.SourceNameIndex}, rep)
	resp.withScope(cov)
	// The index holds what callbacks claimed; Sign does not cover their
	// bodies. Only what the history shows the user sent is recalled.
	if req.Confirm && !req.DryRun {
		// Confirmed up front: plan as senders are confirmed, so that
		// recalls start while later history pages are read.
		var counts msgindex.Counts
		job, b, err := producer.NewJob(context.WithoutCancel(ctx), s.cfg.Store, s.cfg.Queue, s.spec(req, who, "purge:user", queue),
			func(ctx context.Context, job jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
				if err := s.cfg.Store.SaveCoverage(ctx, job.ID, cov); err != nil {
					return err
				}
				check := producer.NewSenderCheck(s.cfg.IM, req.User, b)
				var err error
				if counts, err = s.cfg.Index.Plan(ctx, s.cfg.AppID, req.User, w.Since, w.Until, check); err != nil {
					return err
				}
				if err := check.Flush(ctx); err != nil {
					return err
				}
				resp.SenderUnconfirmed = int64(check.Refused)
				return s.cfg.Store.AddRefused(ctx, job.ID, jobs.RefusedSenderUnconfirmed, int64(check.Refused))
			})
		resp.Index = &counts
		if b != nil {
			resp.Messages = b.Seen
		}
		return s.created(ctx, resp, job, b, err)
	}
	tally := &producer.Tally{}
	check := producer.NewSenderCheck(s.cfg.IM, req.User, tally)
	counts, err := s.cfg.Index.Plan(ctx, s.cfg.AppID, req.User, w.Since, w.Until, check)
	if err == nil {
		err = check.Flush(ctx)
	}
	if err != nil {
		return resp, 0, err
	}
	resp.Index, resp.Messages, resp.SenderUnconfirmed = &counts, int64(tally.Count()), int64(check.Refused)
	if req.DryRun {
		s.auditDryRun(ctx, req, who, resp.Messages)
		return resp, http.StatusOK, nil
	}
	if resp.Messages > int64(s.cfg.ConfirmAbove) && !req.Confirm {
		return resp, http.StatusConflict, nil
	}
	job, b, err := producer.NewJob(context.WithoutCancel(ctx), s.cfg.Store, s.cfg.Queue, s.spec(req, who, "purge:user", queue),
		func(ctx context.Context, job jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
			if err := s.cfg.Store.SaveCoverage(ctx, job.ID, cov); err != nil {
				return err
			}
			if err := check.Replay(ctx, b); err != nil {
				return err
			}
			return s.cfg.Store.AddRefused(ctx, job.ID, jobs.RefusedSenderUnconfirmed, int64(check.Refused))
		})
	return s.created(ctx, resp, job, b, err)
}

func (s *Server) purgeByScan(ctx context.Context, req CreateJobRequest, who string, kind, queue string, resp CreateJobResponse, scope purgeScope, list func() ([]producer.Scan, *producer.Report, error)) (CreateJobResponse, int, error) {
	scans, rep, err := list()
	if err != nil {
		if strings.HasPrefix(err.Error(), "--") {
			return resp, 0, badf("%s", apiField(err))
		}
		return resp, 0, err
	}
	if scope.user != nil && s.cfg.Index != nil {
		// Groups the user left are not listed; the index may know them.
		indexed := map[string]bool{}
		err := s.cfg.Index.Lookup(ctx, s.cfg.AppID, scope.subject, scope.window.Since, scope.window.Until, func(e msgindex.Entry) error {
			if e.IsGroup() {
				indexed[e.GroupID] = true
			}
			return nil
		})
		if err != nil {
			return resp, 0, err
		}
		if scans, err = producer.AddIndexedGroups(ctx, s.cfg.IM, *scope.user, scans, rep, indexed); err != nil {
			return resp, 0, err
		}
	}
	resp.Scans = len(scans)
	cov := producer.Coverage(scope.subject, scope.window, scope.peers, producer.ScanSources(len(scope.peers)), rep)
	resp.withScope(cov)
	if req.DryRun {
		tally := &producer.Tally{}
		if err := producer.RunScans(ctx, s.cfg.IM, scans, s.cfg.DiscoveryConcurrency, tally, rep); err != nil {
			return resp, 0, err
		}
		cov.Targets = rep.TargetCoverage()
		resp.withScope(cov)
		resp.Messages, resp.Report = int64(tally.Count()), rep
		s.auditDryRun(ctx, req, who, resp.Messages)
		return resp, http.StatusOK, nil
	}
	if !req.Confirm {
		resp.Messages = -1 // unknown until scanned
		return resp, http.StatusConflict, nil
	}
	job, _, err := producer.NewJob(context.WithoutCancel(ctx), s.cfg.Store, s.cfg.Queue, s.spec(req, who, kind, queue),
		func(ctx context.Context, job jobs.Job, q producer.Enqueuer, _ *producer.Batcher) error {
			if err := s.cfg.Store.SaveCoverage(ctx, job.ID, cov); err != nil {
				return err
			}
			_, err := producer.EnqueueScans(ctx, s.cfg.Store, q, job, scans)
			return err
		})
	return s.created(ctx, resp, job, nil, err)
}

func (s *Server) createGroupPurge(ctx context.Context, req CreateJobRequest, who string) (CreateJobResponse, int, error) {
	queue, err := queueOf(req, tasks.QueueIncident)
	if err != nil {
		return CreateJobResponse{}, 0, err
	}
	w, err := s.window(req)
	if err != nil {
		return CreateJobResponse{}, 0, err
	}
	spec := producer.GroupPurge{Groups: req.Groups, Topic: req.Topic, Senders: req.Senders, Concurrency: s.cfg.DiscoveryConcurrency,
		GroupFilter: producer.GroupFilter{Window: w, SeqFrom: req.SeqFrom, SeqTo: req.SeqTo}}
	if err := spec.Validate(); err != nil {
		return CreateJobResponse{}, 0, badf("%s", apiField(err))
	}
	if s.cfg.IM == nil {
		return CreateJobResponse{}, 0, badf("purge_group: this server has no IM credentials")
	}
	resp := CreateJobResponse{DryRun: req.DryRun, Source: SourceScan}
	scope := purgeScope{window: w}
	if len(req.Senders) == 1 {
		scope.subject = req.Senders[0]
	}
	return s.purgeByScan(ctx, req, who, "purge:group", queue, resp, scope, func() ([]producer.Scan, *producer.Report, error) {
		return producer.GroupScans(ctx, s.cfg.IM, spec)
	})
}

// apiField turns the CLI's flag names in a validation error into the API's
// field names.
func apiField(err error) string {
	r := strings.NewReplacer("--user", "user", "--peers", "peers", "--group", "groups", "--topic", "topic",
		"--seq-from", "seq_from", "--seq-to", "seq_to", "--since", "since", "--until", "until", "--sender", "senders")
	return r.Replace(err.Error())
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request, _ Token) {
	limit, err := intParam(r, "limit", 50, 1, 1000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	list, err := s.cfg.Store.List(r.Context(), limit)
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
		if j, err = s.cfg.Store.Get(r.Context(), id); err == nil {
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
		if rep, err = s.cfg.Store.BuildReport(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, rep)
			return
		}
	}
	s.fail(w, r, err)
}

// reasonRequest is the body of cancel, pause, resume and re-queue.
type reasonRequest struct {
	Reason   string `json:"reason,omitempty"`
	Actor    string `json:"actor,omitempty"`
	Code     string `json:"code,omitempty"`
	Category string `json:"category,omitempty"`
}

// optionalBody decodes a body that may be empty.
func optionalBody(w http.ResponseWriter, r *http.Request, v *reasonRequest) error {
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
		if _, err = s.cfg.Store.Get(r.Context(), id); err == nil {
			if _, err = s.cfg.Store.Cancel(r.Context(), id, actor(who.principal(), req.Actor), req.Reason); err == nil {
				s.getJob(w, r, who)
				return
			}
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
			if err = s.cfg.Store.SetPaused(r.Context(), id, actor(who.principal(), req.Actor), pause); err == nil {
				s.getJob(w, r, who)
				return
			}
		}
		s.fail(w, r, err)
	}
}

// dlqMatch builds the dead-letter filter of code and category.
func dlqMatch(code, category string) (func(jobs.DeadLetter) bool, error) {
	switch jobs.Category(category) {
	case "", jobs.AlreadyRecalled, jobs.NotFound, jobs.Cancelled, jobs.NeedsAttention:
	default:
		return nil, badf("category %q: want already_recalled, not_found, cancelled or needs_attention", category)
	}
	return func(d jobs.DeadLetter) bool {
		return (code == "" || d.Code == code) && (category == "" || string(d.Category) == category)
	}, nil
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request, _ Token) {
	q := r.URL.Query()
	id, err := jobID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	match, err := dlqMatch(q.Get("code"), q.Get("category"))
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

func (s *Server) requeue(w http.ResponseWriter, r *http.Request, who Token) {
	var req reasonRequest
	id, err := jobID(r)
	if err == nil {
		err = optionalBody(w, r, &req)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Code == "" && req.Category == "" {
		req.Category = string(jobs.NeedsAttention)
	}
	match, err := dlqMatch(req.Code, req.Category)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := producer.RequeueDeadLetters(r.Context(), s.cfg.Store, s.cfg.Queue, id, match, actor(who.principal(), req.Actor),
		fmt.Sprintf("code=%q category=%q %s", req.Code, req.Category, req.Reason))
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
}

// readBody reads a body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return nil, errTooLarge{limit}
	}
	return raw, err
}

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
			for i := range list {
				list[i] = list[i].Public()
			}
			writeJSON(w, http.StatusOK, list)
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
	sched := producer.Schedule{Name: req.Name, Cron: req.Cron, Request: req.Request, CreatedBy: actor(who.principal(), req.Actor), Reason: req.Reason, CreatedAt: s.now().UTC()}
	if err := sched.Validate(); err != nil {
		s.fail(w, r, badf("%v", err))
		return
	}
	detail, _ := json.Marshal(sched.Request)
	if err := s.cfg.Store.Audit(r.Context(), jobs.Event{Actor: sched.CreatedBy, Action: "schedule_add",
		Detail: fmt.Sprintf("%s %q: %s; %s", sched.Name, sched.Cron, detail, sched.Reason)}); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := sc.Add(r.Context(), sched); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, sched)
}

func (s *Server) removeSchedule(w http.ResponseWriter, r *http.Request, who Token) {
	sc, err := s.schedules()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	list, err := sc.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	found := false
	for _, x := range list {
		found = found || x.Name == name
	}
	if !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("schedule %q not found", name))
		return
	}
	if err := s.cfg.Store.Audit(r.Context(), jobs.Event{Actor: actor(who.principal(), r.URL.Query().Get("actor")), Action: "schedule_remove", Detail: name}); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := sc.Remove(r.Context(), name); err != nil {
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
