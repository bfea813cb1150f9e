package imrecall_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
)

// newClient is a Client on miniredis with the emulator as the IM API (no
// worker: the jobs stay queued).
func newClient(t *testing.T, confirmAbove int) (*imrecall.Client, *imrecalltest.Env) {
	t.Helper()
	env := imrecalltest.Start(t, imrecalltest.Options{NoWorker: true})
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client, ConfirmAbove: confirmAbove})
	if err != nil {
		t.Fatal(err)
	}
	return c, env
}

func TestValidateNamesTheField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		req   imrecall.Request
		field string
	}{
		{imrecall.GroupRecall{Seqs: []int64{1}}, "GroupId"},
		{imrecall.GroupRecall{GroupID: "g"}, "seqs"},
		{imrecall.GroupRecall{GroupID: "g", Seqs: []int64{0}}, "seqs"},
		{imrecall.C2CRecall{To: "b", MsgKey: "1_2_3"}, "From_Account"},
		{imrecall.C2CRecall{From: "a", To: "b", MsgKey: "x"}, "MsgKey"},
		{imrecall.ListRecall{}, "messages"},
		{imrecall.ListRecall{Messages: []imrecall.MessageRef{{GroupID: "g"}}}, "messages[0]"},
		{imrecall.UserPurge{}, "user"},
		{imrecall.UserPurge{User: "u", Source: "cache"}, "source"},
		{imrecall.UserPurge{User: "u", Since: "yesterday"}, "since"},
		{imrecall.UserPurge{User: "u", Since: "1d", Until: "2d"}, "until"},
		{imrecall.GroupPurge{}, "groups"},
		{imrecall.GroupPurge{Groups: []string{"a", "b"}, Topic: "t"}, "topic"},
		{imrecall.GroupPurge{Groups: []string{"g"}, SeqFrom: 9, SeqTo: 3}, "seq_from"},
		// IDs a task's JSON payload would change (invalid UTF-8) or that
		// no app has (control characters), and empty names in lists.
		{imrecall.GroupRecall{GroupID: "@TGS#1\xff", Seqs: []int64{1}}, "GroupId"},
		{imrecall.GroupRecall{GroupID: "g", TopicID: "t\n", Seqs: []int64{1}}, "TopicId"},
		// Refused in a list file (a CSV cell's spaces are its writer's):
		// refused here too, not sent to IM as another group's ID.
		{imrecall.GroupRecall{GroupID: " @TGS#1", Seqs: []int64{1}}, "GroupId"},
		{imrecall.C2CRecall{From: "a\xff", To: "b", MsgKey: "1_2_3"}, "From_Account"},
		{imrecall.C2CRecall{From: "a", To: "b\x00", MsgKey: "1_2_3"}, "To_Account"},
		{imrecall.ListRecall{Messages: []imrecall.MessageRef{{GroupID: "g\xff", MsgSeq: 1}}}, "messages[0]"},
		{imrecall.UserPurge{User: "u\xff"}, "user"},
		{imrecall.UserPurge{User: "u", Peers: []string{"v", "w\r"}}, "peers"},
		{imrecall.GroupPurge{Groups: []string{"g\xff"}}, "groups"},
		{imrecall.GroupPurge{Groups: []string{"g"}, Senders: []string{" "}}, "senders"},
		{imrecall.GroupPurge{Groups: []string{"g"}, Senders: []string{"s\xff"}}, "senders"},
		{imrecall.GroupPurge{Groups: []string{"g"}, Topic: "t\xff"}, "topic"},
		// Ages past the date arithmetic named a time after now (a purge
		// "older than forever" recalled everything), the zero instant no
		// bound at all.
		{imrecall.GroupPurge{Groups: []string{"g"}, Until: "9223372036854775807d"}, "until"},
		{imrecall.UserPurge{User: "u", Until: "0001-01-01T00:00:00Z"}, "until"},
	}
	for _, tc := range cases {
		var fe *imrecall.FieldError
		if err := tc.req.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%T %+v: Validate() = %v, want a *FieldError for %q", tc.req, tc.req, err, tc.field)
		}
	}
	// One group named twice is one group: a topic of it is fine.
	if err := (imrecall.GroupPurge{Groups: []string{"g", "g"}, Topic: "t"}).Validate(); err != nil {
		t.Errorf("a topic of one group named twice: %v", err)
	}
	var fe *imrecall.FieldError
	if _, err := imrecall.RequestOf(producer.JobRequest{Kind: "erase", Reason: "x"}); !errors.As(err, &fe) || fe.Field != "kind" {
		t.Errorf("RequestOf(kind erase) = %v", err)
	}
	if _, err := imrecall.RequestOf(producer.JobRequest{Kind: producer.KindPurgeUser, User: "u"}); !errors.As(err, &fe) || fe.Field != "reason" {
		t.Errorf("RequestOf(no reason) = %v", err)
	}
	// An audit line, not a document: a reason or an actor past its bound.
	long := producer.JobRequest{Kind: producer.KindPurgeUser, User: "u", Reason: strings.Repeat("r", producer.MaxReasonLen+1)}
	if _, err := imrecall.RequestOf(long); !errors.As(err, &fe) || fe.Field != "reason" {
		t.Errorf("RequestOf(a %d-byte reason) = %v", len(long.Reason), err)
	}
	long.Reason, long.Actor = "test", strings.Repeat("a", producer.MaxActorLen+1)
	if _, err := imrecall.RequestOf(long); !errors.As(err, &fe) || fe.Field != "actor" {
		t.Errorf("RequestOf(a %d-byte actor) = %v", len(long.Actor), err)
	}
	// One audit event is one line of jobs audit: a line break in a reason
	// or an actor wrote a second, forged line, and an escape sequence
	// rewrote the operator's terminal.
	for _, who := range []struct{ actor, reason, field string }{
		{"alice", "spam\n2026-12-03 15:00:00  mallory  approve  JOB", "reason"},
		{"alice", "spam \x1b[2K", "reason"},
		{"alice", "spam\u009b2K", "reason"},
		{"bob\rmallory", "spam", "actor"},
		{"alice", "spam\u2028forged", "reason"},       // a line separator
		{"alice\u202egnp.exe", "spam", "actor"},       // text shown right to left
		{"alice", "INC-1 \u2066spam\u2069", "reason"}, // an isolate
	} {
		req := producer.JobRequest{Kind: producer.KindPurgeUser, User: "u", Actor: who.actor, Reason: who.reason}
		if _, err := imrecall.RequestOf(req); !errors.As(err, &fe) || fe.Field != who.field || !strings.Contains(err.Error(), "character") {
			t.Errorf("RequestOf(actor %q, reason %q) = %v, want a *FieldError for %s", who.actor, who.reason, err, who.field)
		}
	}
	// A field its kind does not take is refused, not ignored: a purge_group
	// given "user" would have recalled everyone's messages in the group.
	for _, tc := range []struct {
		req   producer.JobRequest
		field string
	}{
		{producer.JobRequest{Kind: producer.KindPurgeGroup, Groups: []string{"g"}, User: "spammer"}, "user"},
		{producer.JobRequest{Kind: producer.KindPurgeUser, User: "u", Groups: []string{"g"}, Source: "scan"}, "groups"},
		{producer.JobRequest{Kind: producer.KindPurgeUser, User: "u", SeqFrom: 3}, "seq_from"},
		{producer.JobRequest{Kind: producer.KindRecall, Messages: []producer.MessageRef{{GroupID: "g", MsgSeq: 1}}, Peers: []string{"p"}}, "peers"},
		{producer.JobRequest{Kind: producer.KindRecall, Messages: []producer.MessageRef{{GroupID: "g", MsgSeq: 1}}, Since: "1d"}, "since"},
		{producer.JobRequest{Kind: producer.KindPurgeGroup, Groups: []string{"g"}, Source: "index"}, "source"},
	} {
		tc.req.Reason = "test"
		if _, err := imrecall.RequestOf(tc.req); !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), "not a field of kind") {
			t.Errorf("RequestOf(%+v) = %v, want a *FieldError for %q, not a field of its kind", tc.req, err, tc.field)
		}
	}
}

// TestCreateAsksForConfirmation: above the threshold Create changes
// nothing and says how many; confirmed, it plans; a purge by scan without
// someone to ask needs confirmation whatever its size.
func TestCreateAsksForConfirmation(t *testing.T) {
	t.Parallel()
	c, env := newClient(t, 2)
	mr := env.Miniredis
	ctx := t.Context()
	req := imrecall.GroupRecall{GroupID: "@TGS#1", Seqs: []int64{1, 2, 3, 3}}
	_, err := c.Create(ctx, req, imrecall.CreateOptions{Actor: "alice", Reason: "test"})
	var need *imrecall.ConfirmationRequired
	if !errors.As(err, &need) || need.Messages != 4 || need.Above != 2 {
		t.Fatalf("Create above the threshold = %v", err)
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Fatalf("an unconfirmed job wrote to Redis: %v", keys)
	}
	// Who asks and why are recorded with every job: a blank reason is a
	// *FieldError naming it, before anything is asked or written.
	for _, reason := range []string{"", " \t"} {
		_, err = c.Create(ctx, req, imrecall.CreateOptions{Actor: "alice", Reason: reason, Confirmed: true})
		if fe := (*imrecall.FieldError)(nil); !errors.As(err, &fe) || fe.Field != "reason" {
			t.Fatalf("Create with reason %q = %v, want a *FieldError for reason", reason, err)
		}
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Fatalf("a job without a reason wrote to Redis: %v", keys)
	}
	asked := int64(0)
	created, err := c.Create(ctx, req, imrecall.CreateOptions{Actor: "alice", Reason: "test",
		Confirm: func(_ context.Context, n *imrecall.ConfirmationRequired) error { asked = n.Messages; return nil }})
	if err != nil || asked != 4 || created.Planned != 3 || created.Duplicates != 1 || created.Job.Kind != "recall:group" || created.Job.RequestedBy != "alice" {
		t.Fatalf("Create with consent = %+v, %v (asked %d)", created, err, asked)
	}
	j, err := c.Job(ctx, created.Job.ID)
	if err != nil || j.Counts.Planned != 3 || j.Queue != "incident" {
		t.Fatalf("Job = %+v, %v", j, err)
	}

	env.IM.Accounts(t, "spammer", "bob")
	g := env.IM.Group(t, "Public", "@TGS#spam", "spammer", "bob")
	env.IM.SendGroup(t, g, "", 1, "spammer")
	purge := imrecall.GroupPurge{Groups: []string{g}, Senders: []string{"spammer"}}
	if _, err := c.Create(ctx, purge, imrecall.CreateOptions{Actor: "alice", Reason: "test"}); !errors.As(err, &need) || need.Messages != -1 {
		t.Fatalf("unconfirmed purge by scan = %v, want Messages -1", err)
	}
	p, err := c.Plan(ctx, purge)
	if err != nil || p.Messages != 1 || p.Source != imrecall.SourceScan || p.Scans != 1 {
		t.Fatalf("Plan = %+v, %v", p, err)
	}
	var fe *imrecall.FieldError
	if _, err := c.Plan(ctx, imrecall.GroupPurge{Groups: []string{"@TGS#nosuch"}}); !errors.As(err, &fe) || fe.Field != "groups" {
		t.Fatalf("Plan of an unknown group = %v, want a *FieldError for groups", err)
	}
	if st, _, err := c.Cancel(ctx, created.Job.ID, "alice", "test over"); err != nil || st != jobs.StatusCancelled {
		t.Fatalf("Cancel = %s, %v", st, err)
	}
}

// TestOperatorActionsRecordWhy: pause, resume and cancel put the
// operator's reason in the audit record, not only in a log line; a reason
// too long for an audit line is a *FieldError, and the job is left as it
// was.
func TestOperatorActionsRecordWhy(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t, 100)
	ctx := t.Context()
	created, err := c.Create(ctx, imrecall.GroupRecall{GroupID: "@TGS#1", Seqs: []int64{1}}, imrecall.CreateOptions{Actor: "alice", Reason: "INC-7"})
	if err != nil {
		t.Fatal(err)
	}
	id := created.Job.ID
	long := strings.Repeat("x", producer.MaxReasonLen+1)
	var fe *imrecall.FieldError
	if err := c.Pause(ctx, id, "bob", long); !errors.As(err, &fe) || fe.Field != "reason" {
		t.Fatalf("Pause with a %d-byte reason = %v, want a *FieldError for reason", len(long), err)
	}
	if _, _, err := c.Cancel(ctx, id, "bob", long); !errors.As(err, &fe) || fe.Field != "reason" {
		t.Fatalf("Cancel with a %d-byte reason = %v, want a *FieldError for reason", len(long), err)
	}
	forged := "x\n2026-12-03 15:00:00  mallory  approve  " + id
	if _, _, err := c.Cancel(ctx, id, "bob", forged); !errors.As(err, &fe) || fe.Field != "reason" {
		t.Fatalf("Cancel with a reason of two lines = %v, want a *FieldError for reason", err)
	}
	if err := c.Pause(ctx, id, "bob\x1b[2K", "x"); !errors.As(err, &fe) || fe.Field != "actor" {
		t.Fatalf("Pause by an actor with an escape = %v, want a *FieldError for actor", err)
	}
	if j, err := c.Job(ctx, id); err != nil || j.Paused || j.Status == jobs.StatusCancelled {
		t.Fatalf("after refused actions the job is %+v (%v), want it as it was", j, err)
	}
	if err := c.Pause(ctx, id, "bob", "Tencent status page: degraded"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resume(ctx, id, "carol", "incident over"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Cancel(ctx, id, "carol", "wrong group"); err != nil {
		t.Fatal(err)
	}
	evs, err := c.Store().AuditLog(ctx, 10)
	var trail []string
	for _, e := range evs {
		trail = append(trail, e.Action+" by "+e.Actor+": "+e.Detail)
	}
	want := []string{"pause by bob: Tencent status page: degraded", "resume by carol: incident over", "cancel by carol: wrong group"}
	if err != nil || len(trail) != 4 || !slices.Equal(trail[1:], want) {
		t.Fatalf("audit trail %q (%v), want create then %q", trail, err, want)
	}
}

// TestAPeerNamedTwiceIsOneChat: a user purge given the same peer twice
// reads that chat once, as a group named twice is one group. It was two
// scans: the dry run counted each message's call twice (6 calls for 3
// messages) and listed the chat twice, and the job queued two discovery
// tasks reading the same history.
func TestAPeerNamedTwiceIsOneChat(t *testing.T) {
	t.Parallel()
	c, env := newClient(t, 100)
	env.IM.Accounts(t, "spammer", "bob")
	env.IM.SendC2C(t, "spammer", "bob", 3)
	req := imrecall.UserPurge{User: "spammer", Peers: []string{"bob", "bob"}, Source: imrecall.SourceScan}
	p, err := c.Plan(t.Context(), req)
	if err != nil || p.Scans != 1 || p.Messages != 3 || p.C2CCalls != 3 || len(p.Report.Targets) != 1 {
		t.Fatalf("Plan = scans %d, messages %d, calls %d, %d targets (%v); want 1, 3, 3, 1", p.Scans, p.Messages, p.C2CCalls, len(p.Report.Targets), err)
	}
	created, err := c.Create(t.Context(), req, imrecall.CreateOptions{Actor: "alice", Reason: "test", Confirmed: true})
	if err != nil || created.Plan.Scans != 1 || created.Plan.Scope == nil || !slices.Equal(created.Plan.Scope.Peers, []string{"bob"}) {
		t.Fatalf("Create queued %d scans, scope %+v (%v), want 1 scan, peers [bob]", created.Plan.Scans, created.Plan.Scope, err)
	}
}
