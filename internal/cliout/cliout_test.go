package cliout

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
)

func TestFlagErrorWordsTheFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		fe   *imrecall.FieldError
		want string
	}{
		{&imrecall.FieldError{Field: "GroupId", Reason: "required"}, "--group: required"},
		{&imrecall.FieldError{Field: "category", Value: "x", Reason: "want needs_attention"}, `--category "x": want needs_attention`},
		{&imrecall.FieldError{Field: "file", Reason: "no messages"}, "no messages"},
		{&imrecall.FieldError{Field: "since", Value: "9d", Reason: "after", Other: "until", OtherValue: "1d"}, `--since "9d": after --until 1d`},
	} {
		err := FlagError{FE: tc.fe}
		if got := err.Error(); got != tc.want {
			t.Errorf("FlagError(%+v) = %q, want %q", *tc.fe, got, tc.want)
		}
		var fe *imrecall.FieldError
		if !errors.As(err, &fe) || fe != tc.fe {
			t.Errorf("FlagError(%+v) does not unwrap to its FieldError", *tc.fe)
		}
	}
	// A field with no flag keeps the request's own wording.
	fe := &imrecall.FieldError{Field: "nosuch", Reason: "bad"}
	if got, want := (FlagError{FE: fe}).Error(), fe.Error(); got != want {
		t.Errorf("unknown field: %q, want %q", got, want)
	}
}

func TestCountsAndJobTable(t *testing.T) {
	t.Parallel()
	j := jobs.Job{ID: "20261122T230512Z-9f3a1c2b", Kind: "recall", Status: jobs.StatusDone, RequestedBy: "ops",
		CreatedAt: time.Date(2026, 11, 22, 23, 5, 12, 0, time.UTC),
		Counts:    jobs.Counts{Planned: 12, Recalled: 10, DeadLettered: 2, DeadByCode: map[string]int64{"10030": 2}}}
	var b bytes.Buffer
	Counts(&b, j)
	want := "job 20261122T230512Z-9f3a1c2b done: planned 12, recalled 10, dead-lettered 2, pending 0\n  dead letters 10030: 2\n"
	if b.String() != want {
		t.Errorf("Counts:\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	j.Paused = true
	if err := JobTable(&b, []jobs.Job{j}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[1], "done (paused)") {
		t.Errorf("JobTable:\n%s", b.String())
	}
}

func TestDescribeCode(t *testing.T) {
	t.Parallel()
	for code, want := range map[string]string{
		jobs.CodeCancelled: "job cancelled before the call",
		jobs.CodeTimeout:   "no answer within the client timeout",
		"http_502":         "HTTP status 502",
		"nonsense":         "",
	} {
		if got := DescribeCode(code); got != want {
			t.Errorf("DescribeCode(%q) = %q, want %q", code, got, want)
		}
	}
	if DescribeCode("10030") == "" {
		t.Error("DescribeCode(10030): no meaning for a documented IM code")
	}
}

func TestCreated(t *testing.T) {
	t.Parallel()
	c := imrecall.Created{Job: jobs.Job{ID: "J1", Queue: "incident", HeldForApproval: true}, Planned: 3, Duplicates: 1, Tasks: 1,
		Plan: imrecall.Plan{Messages: 3, GroupCalls: 1, C2CCalls: 1, SecondsAtCap: 0.005}}
	var out, errw bytes.Buffer
	if err := Created(&out, &errw, c, false, 2, "alice"); err != nil {
		t.Fatal(err)
	}
	if out.String() != "J1\n" {
		t.Errorf("standard output %q, want the job id", out.String())
	}
	want := "job J1: more than 2 messages: it waits for approval by someone other than alice (imrecall jobs approve J1)\n" +
		"job J1: 3 messages planned (1 duplicates removed) in 1 tasks on queue incident\n" +
		"job J1: 1 group calls, 1 one-to-one calls; about 0 s at the cap\n"
	if errw.String() != want {
		t.Errorf("standard error:\n%q\nwant\n%q", errw.String(), want)
	}
	out.Reset()
	if err := Created(&out, &bytes.Buffer{}, c, true, 2, "alice"); err != nil {
		t.Fatal(err)
	}
	// The plan's figures, as its dry run gives them (a purge by index
	// created with --yes included).
	if got := out.String(); !strings.Contains(got, `"job_id": "J1"`) || !strings.Contains(got, `"planned": 3`) ||
		!strings.Contains(got, `"messages": 3`) || !strings.Contains(got, `"group_calls": 1`) || !strings.Contains(got, `"c2c_calls": 1`) {
		t.Errorf("JSON: %s", got)
	}
}

// TestSchedulesSaysRefusedCommandLines: a schedule stored as a command
// line is shown refused (it never fires); a typed one with its next due
// time, in UTC whatever the zone of its spec.
func TestSchedulesSaysRefusedCommandLines(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 9, 30, 0, 0, time.UTC)
	var b bytes.Buffer
	err := Schedules(&b, []producer.ScheduleView{
		producer.Schedule{Name: "old", Cron: "@daily", Args: []string{"purge", "user", "--user", "u1"}}.View(now),
		producer.Schedule{Name: "new", Cron: "CRON_TZ=Asia/Shanghai 0 3 * * *", Request: &producer.JobRequest{Kind: producer.KindPurgeUser, User: "u2"}, CreatedBy: "ops", Reason: "retention"}.View(now),
	})
	if err != nil {
		t.Fatal(err)
	}
	s := b.String()
	if !strings.Contains(s, "REFUSED (a command line: imrecall purge user --user u1)") || !strings.Contains(s, `"user":"u2"`) {
		t.Errorf("Schedules:\n%s", s)
	}
	if !strings.Contains(s, "2026-12-03 19:00:00") || strings.Count(s, "never") != 1 {
		t.Errorf("Schedules: want the next due time of new (03:00 in Shanghai, 19:00 UTC) and none for old:\n%s", s)
	}
}

func TestLoggerNamesTheBadFlag(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	log, err := Logger(&b, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "job_id", "J1")
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, `"job_id":"J1"`) {
		t.Errorf("warn-level JSON logger wrote %q", s)
	}
	if _, err := Logger(&b, "loud", "text"); err == nil || !strings.HasPrefix(err.Error(), `--log-level "loud"`) {
		t.Errorf("bad level: %v", err)
	}
	if _, err := Logger(&b, "info", "xml"); err == nil || !strings.HasPrefix(err.Error(), `--log-format "xml"`) {
		t.Errorf("bad format: %v", err)
	}
}

// TestNotePlanSaysTheJobWaitsForApproval: a dry run above the approval
// threshold says the job will wait for a second person; below it, nothing.
func TestNotePlanSaysTheJobWaitsForApproval(t *testing.T) {
	var above, below bytes.Buffer
	NotePlan(&above, imrecall.Plan{Messages: 5, ApprovalAbove: 3})
	NotePlan(&below, imrecall.Plan{Messages: 2})
	if !strings.Contains(above.String(), "more than 3 messages") || !strings.Contains(above.String(), "jobs approve") {
		t.Errorf("dry run above the threshold says %q", above.String())
	}
	if below.Len() != 0 {
		t.Errorf("dry run below the threshold says %q", below.String())
	}
}
