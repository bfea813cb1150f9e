package verify

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tim"
)

// setup seeds a group where alice and bob alternate (alice has the odd
// seqs) and a one-to-one chat alice → bob, and plans every message of
// alice's into a job.
type bundle struct {
	env      *imtest.Env
	store    *jobs.Store
	job      jobs.Job
	group    jobs.Target
	chat     jobs.Target
	aliceSeq []int64
	keys     []string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice", "bob")
	gid := env.Group(t, "Public", "g1", "alice", "bob")
	seqs := env.SendGroup(t, gid, "", 200, "alice", "bob")
	keys := env.SendC2C(t, "alice", "bob", 30)
	_, rdb := redistest.Mini(t)
	store := jobs.NewStore(rdb, "")
	ctx := t.Context()
	job, err := store.Create(ctx, jobs.Spec{Kind: "purge:user", Queue: "purge", AppID: imtest.AppID, RequestedBy: "dpo", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{env: env, store: store, job: job, group: jobs.Target{GroupID: gid}, chat: jobs.Target{From: "alice", To: "bob"}, keys: keys}
	for i, s := range seqs {
		if i%2 == 0 {
			b.aliceSeq = append(b.aliceSeq, s)
		}
	}
	if _, err := store.PlanGroup(ctx, job.ID, b.group, b.aliceSeq); err != nil {
		t.Fatal(err)
	}
	if _, err := store.PlanC2C(ctx, job.ID, b.chat, keys); err != nil {
		t.Fatal(err)
	}
	return b
}

// recall recalls messages on the emulator and records them recalled.
func (b *bundle) recall(t *testing.T, seqs []int64, keys []string) {
	t.Helper()
	b.env.Recall(t, b.store, b.job.ID, b.group, seqs, b.chat, keys)
}

// aliceScope is the scope of a purge of alice: the group, and her chat
// with bob.
func (b *bundle) aliceScope(context.Context) ([]Area, error) {
	return []Area{
		{Target: b.group, Filter: producer.GroupFilter{Senders: map[string]bool{"alice": true}}},
		{Target: b.chat},
	}, nil
}

func TestVerifyClassifiesEveryPlannedMessageAndFindsResidue(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	// Everything but the last 10 group and last 5 one-to-one messages.
	b.recall(t, b.aliceSeq[:90], b.keys[:25])

	seen := map[string]Verdict{}
	res, err := Run(ctx, b.store, b.env.Client, b.job.ID, Options{
		Scope: b.aliceScope,
		OnFinding: func(f Finding) error {
			seen[f.Target.String()+"/"+f.Item] = f.Verdict
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Planned != 130 || res.Verified != 115 || res.StillVisible != 15 || res.Gone != 0 || res.Residue != 0 {
		t.Fatalf("result = %+v, want planned 130, verified 115, still visible 15, residue 0", res)
	}
	if res.Passed() || !res.ScopeChecked || len(res.StillVisibleSample) != 15 {
		t.Fatalf("result = %+v", res)
	}
	if len(seen) != 130 {
		t.Fatalf("OnFinding saw %d messages, want 130", len(seen))
	}
	if v := seen[b.group.String()+"/"+strconv.FormatInt(b.aliceSeq[95], 10)]; v != StillVisible {
		t.Fatalf("an unrecalled seq: %s", v)
	}
	if v := seen[b.chat.String()+"/"+b.keys[0]]; v != Recalled {
		t.Fatalf("a recalled MsgKey: %s", v)
	}
	// One pass over the scope checks and finds residue at once: 200 seqs
	// of group history in calls of 20, and one page of the chat from each
	// side.
	if res.HistoryCalls > 10+2 {
		t.Fatalf("%d history calls, want ≤ 12", res.HistoryCalls)
	}

	// The rest recalled: passes. Then alice posts again: residue.
	b.recall(t, b.aliceSeq[90:], b.keys[25:])
	res, err = Run(ctx, b.store, b.env.Client, b.job.ID, Options{Scope: b.aliceScope})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed() || res.Verified != 130 {
		t.Fatalf("after recalling everything: %+v", res)
	}
	b.env.SendGroup(t, b.group.GroupID, "", 3, "alice", "bob")
	res, err = Run(ctx, b.store, b.env.Client, b.job.ID, Options{Scope: b.aliceScope})
	if err != nil {
		t.Fatal(err)
	}
	if res.Residue != 2 || res.Passed() || len(res.ResidueSample) != 2 {
		t.Fatalf("after alice posted twice more: %+v, want residue 2", res)
	}
}

func TestVerifySeesWhatTheSenderClearedFromTheirSide(t *testing.T) {
	// alice deleted ten of her messages from her own side: bob still sees
	// them, so they are still visible, not gone.
	b := setup(t)
	b.recall(t, b.aliceSeq, b.keys[10:])
	if _, err := b.env.Client.DeleteC2CMsgRamble(t.Context(), tim.DeleteC2CMsgRambleRequest{
		OperatorAccount: "alice", PeerAccount: "bob", MsgKeyList: b.keys[:10]}); err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), b.store, b.env.Client, b.job.ID, Options{Scope: b.aliceScope})
	if err != nil {
		t.Fatal(err)
	}
	if res.StillVisible != 10 || res.Gone != 0 || res.Verified != 120 {
		t.Fatalf("result = %+v, want 10 still visible (on bob's side), 0 gone", res)
	}
}

func TestVerifyOutsideTheScopeReadsAroundThePlannedMessages(t *testing.T) {
	// Without a scope (a recall of a list), each planned message is read
	// back around itself: alice's 100 seqs among 200 in calls of 20.
	b := setup(t)
	b.recall(t, b.aliceSeq[:50], b.keys)
	res, err := Run(t.Context(), b.store, b.env.Client, b.job.ID, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified != 80 || res.StillVisible != 50 || res.ScopeChecked || res.Residue != 0 {
		t.Fatalf("result = %+v, want verified 80, still visible 50", res)
	}
	if res.HistoryCalls > 10+2 {
		t.Fatalf("%d history calls, want ≤ 12", res.HistoryCalls)
	}
}

func TestVerifyBeforeAnyRecallFindsEverythingVisible(t *testing.T) {
	// The emulator keeps one copy of a conversation for both sides, so what
	// this test can check is that a key the sender's side no longer shows
	// is looked up from the peer's side rather than called gone at once.
	b := setup(t)
	res, err := Run(t.Context(), b.store, b.env.Client, b.job.ID, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.StillVisible != 130 || res.ScopeChecked {
		t.Fatalf("nothing recalled yet: %+v", res)
	}
}

func TestMsgKeyTime(t *testing.T) {
	for key, want := range map[string]int64{"31906_833502_1572869830": 1572869830, "x": 0, "1_2_": 0, "1_2_-5": 0} {
		got, ok := msgKeyTime(key)
		if got != want && ok {
			t.Errorf("msgKeyTime(%q) = %d", key, got)
		}
		if ok != (want > 0) {
			t.Errorf("msgKeyTime(%q) ok = %v", key, ok)
		}
	}
}

// TestVerifyOfAGroupOrAccountNoLongerThere: a job recalled messages of a
// group since dismissed and of a chat with an account since deleted (as an
// erasure request often ends). IM answers their histories with "no such
// group" (10010) or "no such account": nothing of them can be seen. The
// verification used to fail on the first such answer, and the job could
// never be certified; those messages are gone.
func TestVerifyOfAGroupOrAccountNoLongerThere(t *testing.T) {
	b := setup(t)
	b.recall(t, b.aliceSeq, b.keys)
	ctx := t.Context()
	dismissed := jobs.Target{GroupID: "@TGS#dismissed"}
	deleted := jobs.Target{From: "alice", To: "deleted-account"}
	if _, err := b.store.PlanGroup(ctx, b.job.ID, dismissed, []int64{3, 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.PlanC2C(ctx, b.job.ID, deleted, []string{b.keys[0][:len(b.keys[0])-1] + "9"}); err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, b.store, b.env.Client, b.job.ID, Options{Scope: b.aliceScope})
	if err != nil {
		t.Fatalf("verifying a job with a dismissed group and a deleted account: %v", err)
	}
	if res.Planned != 133 || res.Verified != 130 || res.Gone != 3 || !res.Passed() {
		t.Fatalf("result = %+v, want the 130 recalled verified and the 3 gone", res)
	}
}

// TestVerifyOfAPurgeWhoseSubjectWasDeleted: an erasure request often ends
// with the account deleted. The groups of an account that no longer exists
// cannot be listed (70107), and the verification of its purge used to fail
// on it: the job could never be certified. Its planned messages are read
// back where they are, its chats from the peer's side, and the groups
// it was in are named among the gaps.
func TestVerifyOfAPurgeWhoseSubjectWasDeleted(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	params, _ := json.Marshal(map[string]any{"user": "carol", "peers": []string{"bob"}, "source": "scan"})
	job, err := b.store.Create(ctx, jobs.Spec{Kind: "purge:user", Queue: "purge", AppID: imtest.AppID, RequestedBy: "dpo", Reason: "erasure", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	// carol's messages, as the purge planned and recalled them before her
	// account was deleted (the emulator never knew her).
	if _, err := b.store.PlanGroup(ctx, job.ID, b.group, b.aliceSeq[:5]); err != nil {
		t.Fatal(err)
	}
	b.env.Recall(t, b.store, job.ID, b.group, b.aliceSeq[:5], jobs.Target{}, nil)
	res, err := RunJob(ctx, b.store, b.env.Client, job, JobOptions{Actor: "dpo"})
	if err != nil {
		t.Fatalf("verifying the purge of a deleted account: %v", err)
	}
	if res.Planned != 5 || res.Verified != 5 || !res.ScopeChecked || !slices.ContainsFunc(res.Gaps, func(g string) bool { return strings.Contains(g, "no longer exists") }) {
		t.Fatalf("result = %+v, want the 5 verified and the account's groups among the gaps", res)
	}
}

// TestVerifyOfAGroupPurgeWithAGroupDismissed: a spam wave purged from two
// groups, one dismissed since. Its scope could no longer be listed
// (get_group_info: no such group) and the verification failed; the
// dismissed group's planned messages are gone, the other group is re-scanned.
func TestVerifyOfAGroupPurgeWithAGroupDismissed(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	dismissed := jobs.Target{GroupID: "@TGS#dismissed"}
	params, _ := json.Marshal(map[string]any{"groups": []string{b.group.GroupID, dismissed.GroupID}, "senders": []string{"alice"}})
	job, err := b.store.Create(ctx, jobs.Spec{Kind: "purge:group", Queue: "purge", AppID: imtest.AppID, RequestedBy: "ops", Reason: "spam", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.PlanGroup(ctx, job.ID, b.group, b.aliceSeq); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.PlanGroup(ctx, job.ID, dismissed, []int64{3, 4}); err != nil {
		t.Fatal(err)
	}
	b.env.Recall(t, b.store, job.ID, b.group, b.aliceSeq, jobs.Target{}, nil)
	// Until the job has finished its verification does not pass.
	res, err := RunJob(ctx, b.store, b.env.Client, job, JobOptions{Actor: "ops"})
	if err != nil || res.Passed || res.JobFinished || res.JobStatus != jobs.StatusPlanning || res.StillVisible != 0 {
		t.Fatalf("verifying while the job plans = %+v, %v; want not passed, the job planning, nothing visible", res, err)
	}
	// The worker dead-letters the dismissed group's messages (10010: no
	// such group) and planning ends.
	if _, err := b.store.Record(ctx, job.ID, dismissed, []jobs.Outcome{{Item: "3", Code: "10010", Attempts: 1}, {Item: "4", Code: "10010", Attempts: 1}}); err != nil {
		t.Fatal(err)
	}
	if st, err := b.store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); err != nil || st != jobs.StatusDone {
		t.Fatalf("closing planning: %s, %v; want done", st, err)
	}
	res, err = RunJob(ctx, b.store, b.env.Client, job, JobOptions{Actor: "ops"})
	if err != nil {
		t.Fatalf("verifying a group purge with a dismissed group: %v", err)
	}
	if res.Verified != int64(len(b.aliceSeq)) || res.Gone != 2 || res.Residue != 0 || !res.Passed ||
		!slices.ContainsFunc(res.Gaps, func(g string) bool { return strings.Contains(g, dismissed.GroupID) }) {
		t.Fatalf("result = %+v, want alice's verified, the dismissed group's 2 gone and named among the gaps", res)
	}
}
