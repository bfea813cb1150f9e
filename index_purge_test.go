package imrecall_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/verify"
)

// TestIndexPurgeReadsBothSidesOfAChat: alice cleared her side of her chat
// with bob and sent one more message without syncing it to her side; bob
// still sees all four, the callback index holds them. A fifth message was
// sent with the after-send callback forbidden, so the index never heard of
// it. A purge by index confirms the four from bob's side and recalls them;
// the job records bob's chat in its scope, so the verification re-scans it
// and finds the fifth (residue), rather than passing.
//
// The job is created counted first (a dry run's check replayed) and, in a
// second app, confirmed up front (senders confirmed as the job plans).
func TestIndexPurgeReadsBothSidesOfAChat(t *testing.T) {
	t.Parallel()
	for _, confirmed := range []bool{false, true} {
		t.Run(map[bool]string{false: "counted", true: "confirmed"}[confirmed], func(t *testing.T) {
			t.Parallel()
			indexPurgeOfAClearedChat(t, confirmed)
		})
	}
}

func indexPurgeOfAClearedChat(t *testing.T, confirmed bool) {
	env := imrecalltest.Start(t, imrecalltest.Options{})
	ctx := t.Context()
	env.IM.Accounts(t, "alice", "bob")
	keys := env.IM.SendC2C(t, "alice", "bob", 3)
	if _, err := env.IM.Client.DeleteC2CMsgRamble(ctx, tim.DeleteC2CMsgRambleRequest{OperatorAccount: "alice", PeerAccount: "bob", MsgKeyList: keys}); err != nil {
		t.Fatal(err)
	}
	send := func(req tim.SendMsgRequest) string {
		req.FromAccount, req.ToAccount, req.MsgBody = "alice", "bob", tim.TextBody("more")
		resp, err := env.IM.Client.SendMsg(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.MsgKey
	}
	keys = append(keys, send(tim.SendMsgRequest{SyncOtherMachine: tim.NoSyncToSender}))
	unindexed := send(tim.SendMsgRequest{ForbidCallbackControl: []string{"ForbidAfterSendMsgCallback"}})

	idx := msgindex.New(env.Redis, "", 7*24*time.Hour)
	var entries []msgindex.Entry
	for _, m := range env.IM.Emu.C2CMessages("alice", "bob") {
		if slices.Contains(keys, m.MsgKey) {
			entries = append(entries, msgindex.Entry{From: "alice", To: "bob", MsgKey: m.MsgKey, Time: time.Unix(m.Time, 0)})
		}
	}
	if len(entries) != 4 {
		t.Fatalf("%d index entries, want 4", len(entries))
	}
	// And a forged entry naming an account that does not exist: no chat of
	// the scope, no failure of the purge or of its verification.
	entries = append(entries, msgindex.Entry{From: "alice", To: "ghost", MsgKey: "1_2_" + fmt.Sprint(time.Now().Unix()), Time: time.Now()})
	if err := idx.Add(ctx, imrecalltest.AppID, entries...); err != nil {
		t.Fatal(err)
	}
	if err := idx.RestartCoverage(ctx, imrecalltest.AppID, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client, Index: idx, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	req := imrecall.UserPurge{User: "alice", Since: "1h"}
	plan, err := c.Plan(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "not recalled: 1") {
		t.Fatalf("plan warnings %q, want one saying 1 index entry is not recalled", plan.Warnings)
	}
	if plan.Source != imrecall.SourceIndex || plan.Messages != 4 || plan.SenderUnconfirmed != 1 || plan.Scope == nil || !slices.Equal(plan.Scope.Peers, []string{"bob"}) {
		t.Fatalf("plan: source %s, %d messages, %d unconfirmed, scope %+v; want the index's 4, the forged one unconfirmed, bob's chat named", plan.Source, plan.Messages, plan.SenderUnconfirmed, plan.Scope)
	}
	created, err := c.Create(ctx, req, imrecall.CreateOptions{Actor: "dpo", Reason: "erasure request", Confirmed: confirmed,
		Confirm: func(context.Context, *imrecall.ConfirmationRequired) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.Wait(ctx, created.Job.ID, nil)
	if err != nil || job.Status != jobs.StatusDone || job.Counts.Recalled != 4 || job.Counts.DeadLettered != 0 {
		t.Fatalf("job %s %+v, %v; want done, the 4 recalled", job.Status, job.Counts, err)
	}
	cov, err := env.Store.Coverage(ctx, job.ID)
	if err != nil || !slices.Equal(cov.Peers, []string{"bob"}) {
		t.Fatalf("recorded scope %+v, %v: want bob's chat", cov, err)
	}
	// A chat with an account that no longer exists shows nothing: the
	// verification reads on (a scope recorded before peers were confirmed
	// could name one).
	cov.Peers = append(cov.Peers, "ghost")
	if err := env.Store.SaveCoverage(ctx, job.ID, *cov); err != nil {
		t.Fatal(err)
	}
	res, err := verify.RunJob(ctx, env.Store, env.Client, job, verify.JobOptions{Actor: "dpo"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed || res.Residue != 1 || len(res.ResidueSample) != 1 || res.ResidueSample[0].Item != unindexed {
		t.Fatalf("verification passed %v, residue %d %+v; want it failed on the unindexed message %s", res.Passed, res.Residue, res.ResidueSample, unindexed)
	}
	for _, m := range env.IM.Emu.C2CMessages("alice", "bob") {
		if m.Recalled != slices.Contains(keys, m.MsgKey) {
			t.Errorf("message %s recalled %v", m.MsgKey, m.Recalled)
		}
	}
}

// TestIndexPurgeKeepsToItsTimeRange: a purge by index of what alice sent
// between 3 and 1 hours ago. The index holds an entry claiming that a
// message she sent just now was sent 2 hours ago (a body replayed on a
// signed URL: Sign does not cover MsgTime). The history confirms she sent
// it, and it used to be recalled: the purge reached outside the range it
// was asked for. The history's time decides now, in the dry run and in the
// job.
func TestIndexPurgeKeepsToItsTimeRange(t *testing.T) {
	env := imrecalltest.Start(t, imrecalltest.Options{})
	ctx := t.Context()
	env.IM.Accounts(t, "alice", "bob")
	g := env.IM.Group(t, "Public", "@TGS#range", "alice", "bob")
	seq := env.IM.SendGroup(t, g, "", 1, "alice")[0]
	idx := msgindex.New(env.Redis, "", 7*24*time.Hour)
	if err := idx.Add(ctx, imrecalltest.AppID, msgindex.Entry{From: "alice", GroupID: g, MsgSeq: seq, Time: time.Now().Add(-2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := idx.RestartCoverage(ctx, imrecalltest.AppID, time.Now().Add(-4*time.Hour)); err != nil {
		t.Fatal(err)
	}
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client, Index: idx, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	req := imrecall.UserPurge{User: "alice", Source: imrecall.SourceIndex, Since: "3h", Until: "1h"}
	plan, err := c.Plan(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Messages != 0 || plan.SenderUnconfirmed != 1 {
		t.Fatalf("dry run: %d messages, %d not confirmed; want none planned, the entry refused", plan.Messages, plan.SenderUnconfirmed)
	}
	created, err := c.Create(ctx, req, imrecall.CreateOptions{Actor: "dpo", Reason: "incident", Confirmed: true,
		Confirm: func(context.Context, *imrecall.ConfirmationRequired) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.Wait(ctx, created.Job.ID, nil)
	if err != nil || job.Counts.Planned != 0 {
		t.Fatalf("job %s %+v, %v; want nothing planned", job.Status, job.Counts, err)
	}
	if m := env.IM.Emu.GroupMessages(g, ""); len(m) != 1 || m[0].Recalled {
		t.Fatalf("alice's message of just now: %+v, want it not recalled", m)
	}
}

// TestForgedEntryCannotFailAPurgeByIndex: the index holds alice's real
// message and two entries in her name that no history can be read for: a
// topic of a group without topics, and an AVChatRoom group (a body replayed
// on a signed URL can name anything). Confirming them answered IM's refusal
// (10004, 10007) and the whole purge failed: one forged callback stopped an
// erasure. They are refused; her message is recalled.
func TestForgedEntryCannotFailAPurgeByIndex(t *testing.T) {
	env := imrecalltest.Start(t, imrecalltest.Options{})
	ctx := t.Context()
	env.IM.Accounts(t, "alice", "bob")
	g := env.IM.Group(t, "Public", "@TGS#real", "alice", "bob")
	live := env.IM.Group(t, "AVChatRoom", "@TGS#live", "alice", "bob")
	seq := env.IM.SendGroup(t, g, "", 1, "alice")[0]
	idx := msgindex.New(env.Redis, "", 7*24*time.Hour)
	now := time.Now()
	if err := idx.Add(ctx, imrecalltest.AppID,
		msgindex.Entry{From: "alice", GroupID: g, MsgSeq: seq, Time: now},
		msgindex.Entry{From: "alice", GroupID: g, TopicID: g + "@TOPIC#_forged", MsgSeq: 1, Time: now},
		msgindex.Entry{From: "alice", GroupID: live, MsgSeq: 1, Time: now}); err != nil {
		t.Fatal(err)
	}
	if err := idx.RestartCoverage(ctx, imrecalltest.AppID, now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client, Index: idx, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	req := imrecall.UserPurge{User: "alice", Source: imrecall.SourceIndex, Since: "1h"}
	created, err := c.Create(ctx, req, imrecall.CreateOptions{Actor: "dpo", Reason: "erasure", Confirmed: true,
		Confirm: func(context.Context, *imrecall.ConfirmationRequired) error { return nil }})
	if err != nil {
		t.Fatalf("a purge by index with forged entries naming unreadable histories: %v", err)
	}
	job, err := c.Wait(ctx, created.Job.ID, nil)
	if err != nil || job.Status != jobs.StatusDone || job.Counts.Recalled != 1 || created.Plan.SenderUnconfirmed != 2 {
		t.Fatalf("job %s %+v (%v), %d refused; want alice's message recalled, the 2 forged refused", job.Status, job.Counts, err, created.Plan.SenderUnconfirmed)
	}
}

// TestIndexSettleZeroIsAGap: a purge by index whose range reaches now and
// that waits for no callback in flight (IndexSettle negative, the CLI's
// --index-settle 0) misses a message whose callback had not arrived; its
// coverage says so in an index gap rather than claiming the range whole.
// A range that ended long before, or the default settle, has no such gap.
func TestIndexSettleZeroIsAGap(t *testing.T) {
	env := imrecalltest.Start(t, imrecalltest.Options{})
	ctx := t.Context()
	idx := msgindex.New(env.Redis, "", 7*24*time.Hour)
	if err := idx.RestartCoverage(ctx, imrecalltest.AppID, time.Now().Add(-4*time.Hour)); err != nil {
		t.Fatal(err)
	}
	settleGap := func(settle time.Duration, req imrecall.UserPurge) bool {
		t.Helper()
		c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client, Index: idx, IndexSettle: settle})
		if err != nil {
			t.Fatal(err)
		}
		plan, err := c.Plan(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range plan.Scope.Gaps {
			if g.Kind == jobs.GapIndex && strings.Contains(g.What, "index settle 0") {
				return true
			}
		}
		return false
	}
	toNow := imrecall.UserPurge{User: "alice", Source: imrecall.SourceIndex, Since: "3h"}
	longAgo := imrecall.UserPurge{User: "alice", Source: imrecall.SourceIndex, Since: "3h", Until: "2h"}
	if !settleGap(-1, toNow) {
		t.Error("settle 0, range reaching now: no gap; want an index gap naming the settle")
	}
	if settleGap(-1, longAgo) {
		t.Error("settle 0, range ended 2 h ago: a settle gap; want none (no callback of it is in flight)")
	}
	if settleGap(0, toNow) {
		t.Error("default settle: a settle gap; want none")
	}
}
