// Package cliout prints what the imrecall command shows people: job tables
// and records, dry-run plans, progress, verifications and schedules. It
// only formats; cmd/imrecall decides what to print and where.
package cliout

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/verify"
	"github.com/schollz/progressbar/v3"
)

// JSON writes v as indented JSON.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Progress shows a job's progress on out: a bar on a terminal (tty), a log
// line every few seconds otherwise. Its Update is the callback of
// imrecall.Client.Wait; Finish ends the bar.
type Progress struct {
	out           io.Writer
	id            string
	tty           bool
	bar           *progressbar.ProgressBar
	lastLog       time.Time
	start         time.Time
	startRecalled int64
}

// NewProgress returns the progress display of job id.
func NewProgress(out io.Writer, id string, tty bool) *Progress {
	return &Progress{out: out, id: id, tty: tty, start: time.Now(), startRecalled: -1}
}

// Update shows j.
func (p *Progress) Update(j jobs.Job) {
	c := j.Counts
	done := c.Recalled + c.DeadLettered
	if p.startRecalled < 0 {
		p.startRecalled = done
	}
	if p.tty {
		if p.bar == nil || p.bar.GetMax64() != c.Planned {
			if p.bar != nil {
				_ = p.bar.Close()
			}
			p.bar = progressbar.NewOptions64(max(c.Planned, 1),
				progressbar.OptionSetWriter(p.out),
				progressbar.OptionSetDescription("job "+p.id),
				progressbar.OptionShowCount(),
				progressbar.OptionShowIts(),
				progressbar.OptionSetItsString("msg"),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(200*time.Millisecond),
			)
		}
		_ = p.bar.Set64(done)
	} else if time.Since(p.lastLog) >= 5*time.Second || j.Finished() {
		p.lastLog = time.Now()
		rate := float64(done-p.startRecalled) / max(time.Since(p.start).Seconds(), 0.001)
		fmt.Fprintf(p.out, "job %s %s: planned %d recalled %d dead-lettered %d pending %d (%.0f msg/s)\n",
			p.id, j.Status, c.Planned, c.Recalled, c.DeadLettered, c.Pending, rate)
	}
}

// Finish ends the bar, if one is shown.
func (p *Progress) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.out)
	}
}

// Counts prints a finished job's counts and dead letters by code.
func Counts(w io.Writer, j jobs.Job) {
	c := j.Counts
	fmt.Fprintf(w, "job %s %s: planned %d, recalled %d, dead-lettered %d, pending %d\n",
		j.ID, j.Status, c.Planned, c.Recalled, c.DeadLettered, c.Pending)
	for code, n := range c.DeadByCode {
		fmt.Fprintf(w, "  dead letters %s: %s\n", code, strconv.FormatInt(n, 10))
	}
}

// NotePlan prints what a plan cannot do or chose: groups that cannot
// recall, why the index was not used, unconfirmed senders and the scope's
// gaps.
func NotePlan(w io.Writer, p imrecall.Plan) {
	if p.SourceWhy != "" {
		fmt.Fprintf(w, "%s; scanning histories\n", p.SourceWhy)
	}
	if p.Report != nil {
		for _, u := range p.Report.Unsupported {
			fmt.Fprintf(w, "unsupported: %s (%s): %s\n", u.GroupID, u.Type, u.Reason)
		}
	}
	if p.SenderUnconfirmed > 0 {
		fmt.Fprintf(w, "%d indexed messages are not confirmed as the user's by the history (forged callbacks or others' messages): left out\n", p.SenderUnconfirmed)
	}
	for _, line := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", line)
	}
	if p.ApprovalAbove > 0 {
		fmt.Fprintf(w, "approval: more than %d messages: once created, the job waits for someone other than its requester to approve it (imrecall jobs approve)\n", p.ApprovalAbove)
	}
}

// Prompt is the question put to the person at the terminal before a job
// that needs confirmation.
func Prompt(req imrecall.Request, need *imrecall.ConfirmationRequired) string {
	p := need.Plan
	switch {
	case p.Summary != nil:
		s := p.Summary
		return fmt.Sprintf("About to recall %d messages (%d group, %d one-to-one) listed in %s.", s.Messages, s.GroupMsgs, s.C2CMsgs, req.(imrecall.ListRecall).File)
	case p.Source == imrecall.SourceIndex:
		return fmt.Sprintf("About to recall %d messages of %s found in the callback index.", need.Messages, req.(imrecall.UserPurge).User)
	case p.Source == imrecall.SourceScan && p.Report != nil:
		return fmt.Sprintf("found %d messages in %d targets\nAbout to recall %d messages.", need.Messages, len(p.Report.Targets), need.Messages)
	}
	return fmt.Sprintf("About to recall %d messages.", need.Messages)
}

// Plan prints a dry run in the shape of each kind of request.
func Plan(w io.Writer, asJSON bool, req imrecall.Request, p imrecall.Plan) error {
	switch {
	case p.Summary != nil:
		abs, _ := filepath.Abs(req.(imrecall.ListRecall).File)
		return dryRun(w, asJSON, map[string]any{"file": abs, "summary": p.Summary, "seconds_at_cap": p.SecondsAtCap})
	case p.Source == imrecall.SourceList:
		return dryRun(w, asJSON, map[string]any{"messages": p.Messages, "params": req})
	case p.Source == imrecall.SourceIndex:
		return indexPlan(w, asJSON, p)
	}
	return discovery(w, asJSON, p)
}

func dryRun(w io.Writer, asJSON bool, report map[string]any) error {
	report["dry_run"] = true
	if asJSON {
		return JSON(w, report)
	}
	b, _ := json.MarshalIndent(report, "", "  ")
	fmt.Fprintf(w, "dry run: nothing was changed\n%s\n", b)
	return nil
}

// discovery prints the dry run of a purge by scan.
func discovery(w io.Writer, asJSON bool, p imrecall.Plan) error {
	rep, cov := p.Report, *p.Scope
	if asJSON {
		return JSON(w, map[string]any{"dry_run": true, "messages": p.Messages, "report": rep,
			"scope": cov, "warnings": producer.Warnings(cov.Gaps)})
	}
	fmt.Fprintln(w, "dry run: nothing was changed")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tTYPE\tSCANNED\tMESSAGES\tCALLS")
	for _, t := range rep.Targets {
		if t.Messages == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", t.Target, t.Type, t.Scanned, t.Messages, t.Calls)
	}
	_ = tw.Flush()
	for _, u := range rep.Unsupported {
		fmt.Fprintf(w, "unsupported: %s (%s): %s\n", u.GroupID, u.Type, u.Reason)
	}
	fmt.Fprintf(w, "total: %d messages (%d group in %d calls, %d one-to-one in %d calls); about %.0f s at the cap\n",
		p.Messages, rep.GroupMsgs, rep.GroupCalls, rep.C2CMsgs, rep.C2CCalls, rep.SecondsAtCap)
	fmt.Fprintln(w)
	cov.WriteText(w)
	return nil
}

// indexPlan prints the dry run of a purge by index.
func indexPlan(w io.Writer, asJSON bool, p imrecall.Plan) error {
	scope := *p.Scope
	if asJSON {
		return JSON(w, map[string]any{"dry_run": true, "source": "index", "messages": p.Messages, "index": p.Index,
			"group_calls": p.GroupCalls, "c2c_calls": p.C2CCalls, "seconds_at_cap": p.SecondsAtCap, "coverage": p.IndexCoverage, "sender_unconfirmed": p.SenderUnconfirmed, "scope": scope, "warnings": p.Warnings})
	}
	counts := p.Index
	fmt.Fprintf(w, "dry run: nothing was changed\nfrom the callback index: %d messages (%d group in %d groups, %d one-to-one with %d peers); about %.0f s at the cap\n",
		p.Messages, counts.GroupMessages, counts.Groups, counts.C2CMessages, counts.Peers, p.SecondsAtCap)
	fmt.Fprintln(w)
	scope.WriteText(w)
	return nil
}

// JobTable prints jobs as a table, newest first as given.
func JobTable(w io.Writer, list []jobs.Job) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATUS\tPLANNED\tRECALLED\tDEAD\tPENDING\tREQUESTED BY\tCREATED")
	for _, j := range list {
		st := string(j.Status)
		if j.Paused {
			st += " (paused)"
		}
		if j.PlanningInterrupted != nil {
			st += " (planning interrupted)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", j.ID, j.Kind, st, j.Counts.Planned,
			j.Counts.Recalled, j.Counts.DeadLettered, j.Counts.Pending, j.RequestedBy, j.CreatedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

// Job prints one job record.
func Job(w io.Writer, j jobs.Job) {
	fmt.Fprintf(w, "job          %s\nkind         %s\nstatus       %s", j.ID, j.Kind, j.Status)
	if j.Paused {
		fmt.Fprint(w, " (paused)")
	}
	if j.PauseReason != "" {
		fmt.Fprintf(w, "\n             %s", j.PauseReason)
	}
	fmt.Fprintf(w, "\nqueue        %s\nsdkappid     %d\nrequested by %s\nreason       %s\ncreated      %s\n",
		j.Queue, j.AppID, j.RequestedBy, j.Reason, j.CreatedAt.Format(time.RFC3339))
	if j.FinishedAt != nil {
		fmt.Fprintf(w, "finished     %s\n", j.FinishedAt.Format(time.RFC3339))
	}
	c2 := j.Counts
	fmt.Fprintf(w, "planned      %d\nrecalled     %d\ndead-letters %d\npending      %d\n", c2.Planned, c2.Recalled, c2.DeadLettered, c2.Pending)
	for code, n := range c2.DeadByCode {
		fmt.Fprintf(w, "  %-10s %8d  %s\n", code, n, DescribeCode(code))
	}
	if j.Error != "" {
		fmt.Fprintf(w, "error        %s\n", j.Error)
	}
	if in := j.PlanningInterrupted; in != nil {
		fmt.Fprintf(w, "interrupted  planning stopped (%s) with %d messages planned: run the same command again\n", in.Units, in.Planned)
	}
}

// Audit prints audit events, one a line.
func Audit(w io.Writer, evs []jobs.Event) {
	for _, e := range evs {
		fmt.Fprintf(w, "%s  %-24s %-8s %s %s\n", e.At.Local().Format(time.DateTime), e.Actor, e.Action, e.JobID, e.Detail)
	}
}

// DeadLetter prints one dead letter as a line of `dlq list`.
func DeadLetter(w io.Writer, d jobs.DeadLetter) {
	fmt.Fprintf(w, "%-40s %-24s %-10s %-16s attempts=%d  %s\n", d.Target().String(), d.Item(), d.Code, d.Category, d.Attempts, d.ErrorInfo)
}

// DescribeCode is the documented meaning of a dead-letter code.
func DescribeCode(code string) string {
	switch code {
	case jobs.CodeCancelled:
		return "job cancelled before the call"
	case jobs.CodeTimeout:
		return "no answer within the client timeout"
	case jobs.CodeTransport:
		return "connection failure"
	}
	if n, err := strconv.Atoi(code); err == nil {
		return tim.Describe(n)
	}
	if len(code) > 5 && code[:5] == "http_" {
		return "HTTP status " + code[5:]
	}
	return ""
}

// Verification prints a job's verification.
func Verification(w io.Writer, v verify.JobResult) {
	fmt.Fprintf(w, "verification of job %s at %s (%d history calls)\n", v.JobID, v.At.Format("2006-01-02 15:04:05Z"), v.HistoryCalls)
	fmt.Fprintf(w, "  planned          %10d\n", v.Planned)
	fmt.Fprintf(w, "  recalled, seen   %10d\n", v.Verified)
	fmt.Fprintf(w, "  gone             %10d  (expired or deleted)\n", v.Gone)
	fmt.Fprintf(w, "  still visible    %10d\n", v.StillVisible)
	if v.ScopeChecked {
		subject := v.Subject
		if subject == "" {
			subject = "the senders"
		}
		fmt.Fprintf(w, "  residue          %10d  (visible messages of %s in the scope that the job did not plan)\n", v.Residue, subject)
	} else {
		fmt.Fprintln(w, "  residue                   —  (a list of messages has no scope to re-scan)")
	}
	for _, r := range v.StillVisibleSample {
		fmt.Fprintf(w, "    still visible: %s %s\n", r.Target, r.Item)
	}
	for _, r := range v.ResidueSample {
		fmt.Fprintf(w, "    residue: %s %s\n", r.Target, r.Item)
	}
	for _, g := range v.Gaps {
		fmt.Fprintf(w, "  not covered: %s\n", g)
	}
	fmt.Fprintln(w, VerificationVerdict(v))
}

// VerificationVerdict is a verification's last line: passed, failed (what
// remains visible), or not passed because the job has not finished.
func VerificationVerdict(v verify.JobResult) string {
	switch {
	case v.Passed:
		return "passed: nothing the job planned is visible, and the scope holds nothing it missed"
	case v.StillVisible > 0 || v.Residue > 0:
		return fmt.Sprintf("FAILED: messages remain visible (%d planned messages still visible, residue %d)", v.StillVisible, v.Residue)
	default:
		return fmt.Sprintf("NOT PASSED: the job is %s and has not finished (it may plan or recall more); verify again when it has", v.JobStatus)
	}
}

// Schedules prints schedules as a table.
func Schedules(w io.Writer, list []producer.ScheduleView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCRON\tNEXT (UTC)\tJOB\tCREATED BY\tREASON")
	for _, s := range list {
		job, next := "REFUSED (a command line: imrecall "+strings.Join(s.Args, " ")+")", "never"
		if s.Request != nil {
			job = Request(*s.Request)
			if len(s.Next) > 0 {
				next = s.Next[0].Format(time.DateTime)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Cron, next, job, s.CreatedBy, s.Reason)
	}
	return tw.Flush()
}

// ScheduleAdded says what `schedule add` added (or, on a dry run, would
// add) and its next due times.
func ScheduleAdded(w io.Writer, s producer.ScheduleView) error {
	if s.DryRun {
		fmt.Fprint(w, "dry run, nothing added: ")
	}
	fmt.Fprintf(w, "schedule %s: %s: %s\n", s.Name, s.Cron, Request(*s.Request))
	var due []string
	for _, d := range s.Next {
		due = append(due, d.Format(time.DateTime))
	}
	_, err := fmt.Fprintf(w, "next due (UTC): %s\n", strings.Join(due, ", "))
	return err
}

// Request is a one-line summary of a schedule's request.
func Request(req producer.JobRequest) string {
	b, _ := json.Marshal(req)
	return string(b)
}

// flagOf maps a request's fields (imrecall.FieldError.Field) to the flags
// that set them; "" is a positional argument.
var flagOf = map[string]string{
	"GroupId": "--group", "TopicId": "--topic", "seqs": "--seqs",
	"From_Account": "--from", "To_Account": "--to", "MsgKey": "--msgkey", "file": "",
	"user": "--user", "peers": "--peers", "source": "--source", "since": "--since", "until": "--until",
	"groups": "--group", "topic": "--topic", "senders": "--sender", "seq_from": "--seq-from", "seq_to": "--seq-to",
	"queue": "--queue", "actor": "--actor", "reason": "--reason", "id": "", "code": "--code", "category": "--category",
}

// FlagError is a request's FieldError worded with the flag that sets it.
type FlagError struct{ FE *imrecall.FieldError }

func (e FlagError) Error() string {
	flag, ok := flagOf[e.FE.Field]
	other, otherOK := flagOf[e.FE.Other]
	if !ok || e.FE.Other != "" && !otherOK {
		return e.FE.Error()
	}
	reason := e.FE.Reason
	if e.FE.Other != "" {
		reason += " " + other + " " + e.FE.OtherValue
	}
	switch {
	case flag == "":
		return reason
	case e.FE.Value != "":
		return fmt.Sprintf("%s %s: %s", flag, tasks.Quote(e.FE.Value), reason)
	}
	return flag + ": " + reason
}

func (e FlagError) Unwrap() error { return e.FE }

// Created prints a created job: its id on out (or JSON with asJSON), and on
// errw whether it waits for approval (by someone other than actor, above
// approvalAbove messages), its scans and what was planned.
func Created(out, errw io.Writer, created imrecall.Created, asJSON bool, approvalAbove int, actor string) error {
	job := created.Job
	if job.HeldForApproval {
		fmt.Fprintf(errw, "job %s: more than %d messages: it waits for approval by someone other than %s (imrecall jobs approve %s)\n",
			job.ID, approvalAbove, actor, job.ID)
	}
	if created.Plan.Source == imrecall.SourceScan {
		fmt.Fprintf(errw, "job %s: %d scans queued for the workers\n", job.ID, created.Plan.Scans)
	}
	p := created.Plan
	if asJSON {
		v := map[string]any{"job_id": job.ID, "planned": created.Planned, "tasks": created.Tasks}
		if p.Messages >= 0 {
			// What a dry run says too (a purge by scan learns it as it scans).
			v["messages"], v["group_calls"], v["c2c_calls"], v["seconds_at_cap"] = p.Messages, p.GroupCalls, p.C2CCalls, p.SecondsAtCap
		}
		return JSON(out, v)
	}
	fmt.Fprintln(out, job.ID)
	if seen := created.Planned + created.Duplicates; seen > 0 {
		fmt.Fprintf(errw, "job %s: %d messages planned (%d duplicates removed) in %d tasks on queue %s\n",
			job.ID, created.Planned, created.Duplicates, created.Tasks, job.Queue)
	}
	if p.GroupCalls+p.C2CCalls > 0 {
		fmt.Fprintf(errw, "job %s: %d group calls, %d one-to-one calls; about %.0f s at the cap\n", job.ID, p.GroupCalls, p.C2CCalls, p.SecondsAtCap)
	}
	return nil
}
