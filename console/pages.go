package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/imrecall/imrecall/api"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
)

// Statuses and kinds offered by the jobs page's filters.
var (
	filterStatuses = []jobs.Status{jobs.StatusPlanning, jobs.StatusRunning, jobs.StatusAwaitingApproval, jobs.StatusApproved, jobs.StatusDone, jobs.StatusCancelled, jobs.StatusFailed}
	filterKinds    = []string{"recall:list", "purge:user", "purge:group"}
)

// progress is a job's live figures, rendered in the page and sent as an
// event: the bar's shares of planned, the rate and the time left.
type progress struct {
	ID          string      `json:"id"`
	Status      jobs.Status `json:"status"`
	Paused      bool        `json:"paused"`
	Planned     int64       `json:"planned"`
	Recalled    int64       `json:"recalled"`
	Dead        int64       `json:"dead_lettered"`
	Pending     int64       `json:"pending"`
	PctRecalled string      `json:"pct_recalled"`
	PctDead     string      `json:"pct_dead"`
	Rate        string      `json:"rate"`  // messages settled per second
	Calls       string      `json:"calls"` // recall calls started per second
	ETA         string      `json:"eta"`
	Finished    bool        `json:"finished"`
}

// sample is a job's settled count and calls at a time, for the rates.
type sample struct {
	at      time.Time
	settled int64
	calls   int64
}

// sampleOf is j's sample at now.
func sampleOf(j jobs.Job, now time.Time) sample {
	return sample{at: now, settled: j.Counts.Recalled + j.Counts.DeadLettered, calls: j.Calls}
}

// progressOf computes a job's progress; prev (zero: none) gives the rate
// over the last interval, else it is the average since the job started.
func progressOf(j jobs.Job, now time.Time, prev sample) progress {
	c := j.Counts
	p := progress{ID: j.ID, Status: j.Status, Paused: j.Paused, Planned: c.Planned, Recalled: c.Recalled, Dead: c.DeadLettered,
		Pending: c.Pending, PctRecalled: pct(c.Recalled, c.Planned),
		PctDead: pct(c.DeadLettered, c.Planned), Finished: j.Finished(), Rate: "—", Calls: "—", ETA: "—"}
	settled := c.Recalled + c.DeadLettered
	start := j.CreatedAt
	if j.StartedAt != nil {
		start = *j.StartedAt
	}
	end := now
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	var rate, calls float64
	if !prev.at.IsZero() && now.Sub(prev.at) > 0 && !p.Finished {
		rate = float64(settled-prev.settled) / now.Sub(prev.at).Seconds()
		calls = float64(j.Calls-prev.calls) / now.Sub(prev.at).Seconds()
	} else if d := end.Sub(start).Seconds(); d > 0 {
		rate, calls = float64(settled)/d, float64(j.Calls)/d
	}
	if calls > 0 {
		p.Calls = fmt.Sprintf("%.0f calls/s", calls)
	}
	if rate > 0 {
		p.Rate = fmt.Sprintf("%.0f/s", rate)
		if !p.Finished && c.Pending > 0 {
			p.ETA = (time.Duration(float64(c.Pending)/rate) * time.Second).Round(time.Second).String()
		}
	}
	if p.Finished {
		p.ETA = "done"
	}
	return p
}

// jobRow is a job in the list.
type jobRow struct {
	Job      jobs.Job
	Subject  string
	Progress progress
}

// subject says what a job is about, from its recorded parameters.
func subject(j jobs.Job) string {
	var req producer.JobRequest
	if json.Unmarshal(j.Params, &req) != nil {
		return ""
	}
	switch {
	case req.User != "":
		return "user " + req.User
	case len(req.Groups) > 0:
		s := "groups " + strings.Join(req.Groups[:min(3, len(req.Groups))], ", ")
		if len(req.Groups) > 3 {
			s += fmt.Sprintf(" (+%d)", len(req.Groups)-3)
		}
		return s
	case len(req.Messages) > 0:
		return fmt.Sprintf("%d listed messages", len(req.Messages))
	}
	return ""
}

// caps is the rate cap of the recall APIs, for the pages.
func (c *Console) caps() string {
	if c.cfg.CapOf == nil {
		return ""
	}
	return fmt.Sprintf("cap: group_msg_recall %d calls/s, admin_msgwithdraw %d calls/s",
		c.cfg.CapOf("group_msg_recall"), c.cfg.CapOf("admin_msgwithdraw"))
}

func (c *Console) jobList(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	f := jobs.PageFilter{Status: jobs.Status(q.Get("status")), Kind: q.Get("kind")}
	offset, _ := strconv.ParseInt(q.Get("from"), 10, 64)
	offset = max(offset, 0)
	page, err := c.cfg.Backend.Jobs(r.Context(), f, offset, c.cfg.PageSize)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	now := time.Now()
	rows := make([]jobRow, len(page.Jobs))
	var live []string
	for i, j := range page.Jobs {
		rows[i] = jobRow{Job: j, Subject: subject(j), Progress: progressOf(j, now, sample{})}
		if !j.Finished() {
			live = append(live, j.ID)
		}
	}
	next := ""
	if page.Next > 0 {
		v := filterValues(f)
		v.Set("from", strconv.FormatInt(page.Next, 10))
		next = "/jobs?" + v.Encode()
	}
	c.render(w, r, http.StatusOK, "jobs", s, view{Title: "Jobs", Nav: "jobs", Data: map[string]any{
		"Rows": rows, "Filter": f, "Statuses": filterStatuses, "Kinds": filterKinds, "Next": next,
		"Total": page.Total, "First": offset == 0, "Live": strings.Join(live, ","), "Caps": c.caps()}})
}

// stream sends the progress of the jobs named by id parameters as
// server-sent events ("progress"), every Poll, until each has finished
// or the client goes.
func (c *Console) stream(w http.ResponseWriter, r *http.Request, s *session) {
	ids := r.URL.Query()["id"]
	if len(ids) == 1 {
		ids = strings.Split(ids[0], ",")
	}
	if len(ids) == 0 || len(ids) > 200 {
		c.refuse(w, r, s, http.StatusBadRequest, "name 1 to 200 jobs (id=...)")
		return
	}
	for _, id := range ids {
		if err := jobs.ValidID(id); err != nil {
			c.refuse(w, r, s, http.StatusBadRequest, err.Error())
			return
		}
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		c.refuse(w, r, s, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	prev := map[string]sample{}
	done := map[string]bool{}
	t := time.NewTicker(c.cfg.Poll)
	defer t.Stop()
	for {
		now := time.Now()
		for _, id := range ids {
			if done[id] {
				continue
			}
			j, err := c.cfg.Backend.Job(r.Context(), id)
			if err != nil {
				done[id] = true
				continue
			}
			p := progressOf(j, now, prev[id])
			prev[id] = sampleOf(j, now)
			done[id] = p.Finished
			b, _ := json.Marshal(p)
			fmt.Fprintf(w, "event: progress\ndata: %s\n\n", b)
		}
		fl.Flush()
		if len(done) == len(ids) && allTrue(done) {
			fmt.Fprint(w, "event: end\ndata: {}\n\n")
			fl.Flush()
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		// The stream lasts as long as the session: signed out, or its token
		// revoked or rotated, it ends (the browser's reconnection is then
		// refused) rather than streaming until the jobs finish.
		if _, err := c.current(r); err != nil {
			return
		}
	}
}

// filterValues is the query of a filter.
func filterValues(f jobs.PageFilter) url.Values {
	v := url.Values{}
	if f.Status != "" {
		v.Set("status", string(f.Status))
	}
	if f.Kind != "" {
		v.Set("kind", f.Kind)
	}
	return v
}

func allTrue(m map[string]bool) bool {
	for _, v := range m {
		if !v {
			return false
		}
	}
	return true
}

// deadGroup is the dead letters of one category.
type deadGroup struct {
	Category jobs.Category
	Letters  []jobs.DeadLetter
}

// deadLetterShown bounds the dead letters listed on a job page; the
// exports hold them all.
const deadLetterShown = 500

// confirmations say what each action will do, on its confirmation page.
var confirmations = map[Action]string{
	ActionCancel:  "Cancel the job: discovery stops, and every message still pending is dead-lettered as \"cancelled\" without calling Tencent. A cancelled job cannot be re-queued.",
	ActionPause:   "Pause the job: workers park its tasks and make no call for it until it is resumed.",
	ActionResume:  "Resume the job: its parked tasks are queued again and workers recall what is pending.",
	ActionRequeue: "Re-queue the dead letters that need attention (throttled, timeouts, transport and other retryable failures): they are tried again; already recalled, not found and cancelled messages are left as they are.",
	ActionApprove: "Approve the job: it was held because it is above the approval threshold; once approved (after the cool-off, if the server has one), workers recall its messages, and your approval is recorded in the job, the audit trail and its certificate. You cannot approve a job you asked for: another admin must.",
}

// actionsOf lists what an admin may do to a job in its state.
func (c *Console) actionsOf(j jobs.Job, r jobs.Report) []Action {
	var out []Action
	if j.Status == jobs.StatusAwaitingApproval {
		out = append(out, ActionApprove)
	}
	if !j.Status.Terminal() {
		if j.Paused {
			out = append(out, ActionResume)
		} else {
			out = append(out, ActionPause)
		}
		out = append(out, ActionCancel)
	}
	if r.NeedsAttention > 0 && j.Status != jobs.StatusCancelled {
		out = append(out, ActionRequeue)
	}
	return out
}

func (c *Console) jobPage(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	ctx := r.Context()
	rep, err := c.cfg.Backend.Report(ctx, id)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	dls, err := c.cfg.Backend.DeadLetters(ctx, id, deadLetterShown)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	byCat := map[jobs.Category][]jobs.DeadLetter{}
	for _, d := range dls {
		byCat[d.Category] = append(byCat[d.Category], d)
	}
	var groups []deadGroup
	for _, cat := range []jobs.Category{jobs.NeedsAttention, jobs.AlreadyRecalled, jobs.NotFound, jobs.Cancelled} {
		if len(byCat[cat]) > 0 {
			groups = append(groups, deadGroup{cat, byCat[cat]})
		}
	}
	events, err := c.cfg.Backend.Audit(ctx, 2000)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	var trail []jobs.Event
	for _, e := range events {
		if e.JobID == id {
			trail = append(trail, e)
		}
	}
	sort.Slice(trail, func(a, b int) bool { return trail[a].At.Before(trail[b].At) })
	verification, err := c.cfg.Backend.Verification(ctx, id)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	cert, err := c.cfg.Backend.Certificate(ctx, id)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	j := rep.Job
	c.render(w, r, http.StatusOK, "job", s, view{Title: "Job " + id, Nav: "jobs", Flash: r.URL.Query().Get("done"), Data: map[string]any{
		"Report": rep, "Job": j, "Subject": subject(j), "Progress": progressOf(j, time.Now(), sample{}),
		"Dead": groups, "DeadShown": len(dls), "Trail": trail, "Verification": pretty(verification),
		"Certificate": pretty(cert), "Actions": c.actionsOf(j, rep), "Params": pretty(j.Params), "Caps": c.caps()}})
}

// pretty indents JSON for a <pre>; "" for none.
func pretty(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if json.Indent(&buf, raw, "", "  ") != nil {
		return string(raw)
	}
	return buf.String()
}

func (c *Console) export(w http.ResponseWriter, r *http.Request, s *session) {
	id, format := r.PathValue("id"), r.PathValue("format")
	if format != "jsonl" && format != "csv" {
		c.refuse(w, r, s, http.StatusNotFound, "export as jsonl or csv")
		return
	}
	if _, err := c.cfg.Backend.Job(r.Context(), id); err != nil {
		c.fail(w, r, s, err)
		return
	}
	ct := "application/x-ndjson"
	if format == "csv" {
		ct = "text/csv; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+"-dead-letters."+format))
	if err := c.cfg.Backend.ExportDeadLetters(r.Context(), id, format, w); err != nil {
		c.log.ErrorContext(r.Context(), "console export", "job_id", id, "err", err) // the body is cut short
	}
}

// act confirms an action (a page saying what it will do), then, posted
// again with confirmed=yes, does it.
func (c *Console) act(w http.ResponseWriter, r *http.Request, s *session) {
	id, a := r.PathValue("id"), Action(r.PathValue("action"))
	what, ok := confirmations[a]
	if !ok {
		c.refuse(w, r, s, http.StatusNotFound, fmt.Sprintf("no action %q", a))
		return
	}
	if r.FormValue("confirmed") != "yes" {
		j, err := c.cfg.Backend.Job(r.Context(), id)
		if err != nil {
			c.fail(w, r, s, err)
			return
		}
		c.render(w, r, http.StatusOK, "job", s, view{Title: "Confirm: " + string(a), Nav: "jobs", Data: map[string]any{
			"Confirm": a, "What": what, "Job": j, "Subject": subject(j), "Progress": progressOf(j, time.Now(), sample{})}})
		return
	}
	if err := c.cfg.Backend.Act(r.Context(), s.Name, id, a, r.FormValue("reason")); err != nil {
		c.fail(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/jobs/"+id+"?done="+string(a), http.StatusSeeOther)
}

// formData is the new-job and schedule forms' values, to fill them again.
type formData struct {
	Kind string
	Req  producer.JobRequest
	Text string // the pasted list
	File string // the uploaded list's name
	Name string // schedules
	Cron string
}

func (c *Console) newForm(w http.ResponseWriter, r *http.Request, s *session) {
	kind := r.URL.Query().Get("kind")
	if kind == "" {
		kind = producer.KindRecall
	}
	c.render(w, r, http.StatusOK, "new", s, view{Title: "New job", Nav: "new", Data: map[string]any{"Form": formData{Kind: kind, Req: producer.JobRequest{Kind: kind}}}})
}

// splitList splits a form field of names on commas, spaces and new lines.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// requestOf reads the job request of a new-job or schedule form: the
// pasted list and the uploaded file together for a recall.
func requestOf(r *http.Request) (formData, error) {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			return formData{}, &Error{Status: http.StatusBadRequest, Message: "reading the form: " + err.Error()}
		}
	}
	fd := formData{Kind: r.FormValue("kind"), Text: r.FormValue("messages"), Name: r.FormValue("name"), Cron: r.FormValue("cron")}
	req := producer.JobRequest{Kind: fd.Kind, Reason: strings.TrimSpace(r.FormValue("reason")), Queue: r.FormValue("queue"),
		Since: strings.TrimSpace(r.FormValue("since")), Until: strings.TrimSpace(r.FormValue("until"))}
	switch fd.Kind {
	case producer.KindRecall:
		add := func(name string, rd io.Reader) error {
			return producer.ReadList(r.Context(), rd, name, func(_ int, m producer.Message) error {
				req.Messages = append(req.Messages, producer.MessageRef{GroupID: m.GroupID, TopicID: m.TopicID, MsgSeq: m.MsgSeq, From: m.From, To: m.To, MsgKey: m.MsgKey})
				return nil
			})
		}
		if strings.TrimSpace(fd.Text) != "" {
			if err := add("the pasted list", strings.NewReader(fd.Text)); err != nil {
				return fd, &Error{Status: http.StatusBadRequest, Message: err.Error()}
			}
		}
		if f, h, err := r.FormFile("file"); err == nil {
			fd.File = h.Filename
			err = add(h.Filename, f)
			f.Close()
			if err != nil {
				return fd, &Error{Status: http.StatusBadRequest, Message: err.Error()}
			}
		}
	case producer.KindPurgeUser:
		req.User = strings.TrimSpace(r.FormValue("user"))
		req.Peers = splitList(r.FormValue("peers"))
		req.Source = r.FormValue("source")
	case producer.KindPurgeGroup:
		req.Groups = splitList(r.FormValue("groups"))
		req.Topic = strings.TrimSpace(r.FormValue("topic"))
		req.Senders = splitList(r.FormValue("senders"))
		for name, p := range map[string]*int64{"seq_from": &req.SeqFrom, "seq_to": &req.SeqTo} {
			if v := strings.TrimSpace(r.FormValue(name)); v != "" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return fd, &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("%s %q: want a number", name, v)}
				}
				*p = n
			}
		}
	default:
		return fd, &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("kind %q: want recall, purge_user or purge_group", fd.Kind)}
	}
	fd.Req = req
	return fd, nil
}

// newJob runs a dry run of the form's request and shows it, with a form to
// confirm; posted again with step=create (and the request shown), it
// creates the job.
func (c *Console) newJob(w http.ResponseWriter, r *http.Request, s *session) {
	if r.FormValue("step") == "create" {
		var req producer.JobRequest
		dec := json.NewDecoder(strings.NewReader(r.FormValue("request")))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			c.refuse(w, r, s, http.StatusBadRequest, "the confirmed request is not valid: run the dry run again")
			return
		}
		req.DryRun, req.Confirm = false, true
		resp, err := c.cfg.Backend.Create(r.Context(), s.Name, req)
		if err != nil {
			c.fail(w, r, s, err)
			return
		}
		if resp.Job == nil {
			c.refuse(w, r, s, http.StatusInternalServerError, "no job was created")
			return
		}
		http.Redirect(w, r, "/jobs/"+resp.Job.ID, http.StatusSeeOther)
		return
	}
	fd, err := requestOf(r)
	if err == nil {
		fd.Req.DryRun = true
		var resp api.CreateJobResponse
		if resp, err = c.cfg.Backend.Create(r.Context(), s.Name, fd.Req); err == nil {
			fd.Req.DryRun = false
			raw, _ := json.Marshal(fd.Req)
			c.render(w, r, http.StatusOK, "preview", s, view{Title: "Dry run", Nav: "new", Data: map[string]any{
				"Form": fd, "Resp": resp, "Request": string(raw), "Minutes": c.atCap(resp), "Calls": calls(resp)}})
			return
		}
	}
	c.formError(w, r, s, "new", "New job", fd, err)
}

// atCap estimates how long a dry run's calls take at the caps: each API
// has its own, and the group and one-to-one lanes run side by side.
func (c *Console) atCap(resp api.CreateJobResponse) string {
	secs := resp.SecondsAtCap // at the default cap
	if c.cfg.CapOf != nil && c.cfg.CapOf("group_msg_recall") > 0 && c.cfg.CapOf("admin_msgwithdraw") > 0 {
		secs = max(float64(resp.GroupCalls)/float64(c.cfg.CapOf("group_msg_recall")), float64(resp.C2CCalls)/float64(c.cfg.CapOf("admin_msgwithdraw")))
	}
	if secs <= 0 {
		return ""
	}
	return (time.Duration(math.Ceil(secs)) * time.Second).String()
}

// calls is the number of recall calls a dry run foresees.
func calls(resp api.CreateJobResponse) int64 { return int64(resp.GroupCalls + resp.C2CCalls) }

// formError shows a form again with the backend's refusal, or fails.
func (c *Console) formError(w http.ResponseWriter, r *http.Request, s *session, page, title string, fd formData, err error) {
	be, ok := err.(*Error)
	if !ok || be.Status != http.StatusBadRequest && be.Status != http.StatusConflict {
		c.fail(w, r, s, err)
		return
	}
	v := view{Title: title, Nav: page, Error: be.Message, Data: map[string]any{"Form": fd}}
	if page == "schedules" {
		if list, lerr := c.cfg.Backend.Schedules(r.Context()); lerr == nil {
			v.Data = map[string]any{"Form": fd, "List": list}
		}
	}
	c.render(w, r, be.Status, page, s, v)
}

func (c *Console) scheduleList(w http.ResponseWriter, r *http.Request, s *session) {
	list, err := c.cfg.Backend.Schedules(r.Context())
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	kind := r.URL.Query().Get("kind")
	if kind == "" {
		kind = producer.KindPurgeUser
	}
	c.render(w, r, http.StatusOK, "schedules", s, view{Title: "Schedules", Nav: "schedules", Flash: r.URL.Query().Get("done"),
		Data: map[string]any{"List": list, "Form": formData{Kind: kind, Req: producer.JobRequest{Kind: kind}}}})
}

// addSchedule adds the form's schedule, or on its dry run shows when it
// would fire, the form kept as it was, adding nothing.
func (c *Console) addSchedule(w http.ResponseWriter, r *http.Request, s *session) {
	fd, err := requestOf(r)
	dryRun := r.FormValue("step") == "dryrun"
	var added producer.ScheduleView
	if err == nil {
		req := fd.Req
		added, err = c.cfg.Backend.AddSchedule(r.Context(), s.Name, api.ScheduleRequest{Name: fd.Name, Cron: fd.Cron, Request: &req, Reason: req.Reason, DryRun: dryRun})
	}
	var list []producer.ScheduleView
	if err == nil && dryRun {
		list, err = c.cfg.Backend.Schedules(r.Context())
	}
	switch {
	case err != nil:
		c.formError(w, r, s, "schedules", "Schedules", fd, err)
	case dryRun:
		if fd.File != "" {
			// A browser does not send a file again: the form keeps the
			// whole list (pasted and uploaded) as text, so that adding
			// the schedule next adds what the dry run checked.
			fd.Text = listText(fd.Req.Messages)
		}
		c.render(w, r, http.StatusOK, "schedules", s, view{Title: "Schedules", Nav: "schedules",
			Data: map[string]any{"List": list, "Form": fd, "Preview": added}})
	default:
		http.Redirect(w, r, "/schedules?done=added", http.StatusSeeOther)
	}
}

func (c *Console) removeSchedule(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	if r.FormValue("confirmed") != "yes" {
		c.render(w, r, http.StatusOK, "schedules", s, view{Title: "Remove schedule", Nav: "schedules", Data: map[string]any{"Remove": name}})
		return
	}
	if err := c.cfg.Backend.RemoveSchedule(r.Context(), s.Name, name, r.FormValue("reason")); err != nil {
		c.fail(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/schedules?done=removed", http.StatusSeeOther)
}

func (c *Console) indexPage(w http.ResponseWriter, r *http.Request, s *session) {
	cov, err := c.cfg.Backend.Index(r.Context())
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	c.render(w, r, http.StatusOK, "index", s, view{Title: "Message index", Nav: "index", Data: cov})
}

// listText is messages as a JSON Lines list, one message a line, in the
// form recall file and the console's list field read.
func listText(messages []producer.MessageRef) string {
	var b strings.Builder
	for _, m := range messages {
		line, _ := json.Marshal(m)
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}
