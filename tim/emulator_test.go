package tim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"

	"github.com/imrecall/imrecall/emulator"
)

// emuBundle is an emulator served over real HTTP and a client for it.
type emuBundle struct {
	emu    *emulator.Server
	srv    *httptest.Server
	client *Client
}

// setupEmulator starts an emulator (cfg fills in the app, admin and key) and
// a client for it, after applying mods to the client's Config.
func setupEmulator(t *testing.T, cfg emulator.Config, mods ...func(*Config)) *emuBundle {
	t.Helper()
	cfg.SDKAppID, cfg.Admin, cfg.SecretKey = testAppID, testAdmin, testKey
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatalf("emulator.New: %v", err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return &emuBundle{emu: emu, srv: srv, client: newTestClient(t, srv.URL, mods...)}
}

// seedGroup imports users, creates a group of typ with them and sends n
// messages from the first user; it returns the group ID and the seqs sent.
func (b *emuBundle) seedGroup(t *testing.T, typ string, users []string, n int) (string, []int64) {
	t.Helper()
	ctx := t.Context()
	if _, err := b.client.MultiAccountImport(ctx, MultiAccountImportRequest{Accounts: users}); err != nil {
		t.Fatalf("multiaccount_import: %v", err)
	}
	members := make([]Member, 0, len(users)-1)
	for _, u := range users[1:] {
		members = append(members, Member{MemberAccount: u})
	}
	g, err := b.client.CreateGroup(ctx, CreateGroupRequest{OwnerAccount: users[0], Type: typ, Name: "g-" + typ, MemberList: members})
	if err != nil {
		t.Fatalf("create_group: %v", err)
	}
	if g.GroupID == "" {
		t.Fatal("create_group returned no GroupId")
	}
	var seqs []int64
	for i := range n {
		r, err := b.client.SendGroupMsg(ctx, SendGroupMsgRequest{GroupID: g.GroupID, FromAccount: users[0], MsgBody: TextBody(fmt.Sprintf("m%d", i))})
		if err != nil {
			t.Fatalf("send_group_msg: %v", err)
		}
		seqs = append(seqs, r.MsgSeq)
	}
	return g.GroupID, seqs
}

func TestEmulatorGroupRecallAndHistory(t *testing.T) {
	t.Parallel()
	b := setupEmulator(t, emulator.Config{})
	ctx := t.Context()
	gid, seqs := b.seedGroup(t, GroupTypePublic, []string{"alice", "bob"}, 25)
	if !slices.IsSorted(seqs) || seqs[0] < 1 {
		t.Fatalf("seqs not increasing from 1: %v", seqs)
	}

	// add_group_member
	if _, err := b.client.AccountImport(ctx, AccountImportRequest{UserID: "carol", Nick: "Carol"}); err != nil {
		t.Fatal(err)
	}
	added, err := b.client.AddGroupMember(ctx, AddGroupMemberRequest{GroupID: gid, MemberList: []Member{{MemberAccount: "carol"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(added.MemberList) != 1 || added.MemberList[0].MemberAccount != "carol" || added.MemberList[0].Result != 1 {
		t.Errorf("add_group_member MemberList = %+v", added.MemberList)
	}

	// group_msg_get_simple: the newest 20, descending.
	page, err := b.client.GroupMsgGetSimple(ctx, GroupMsgGetSimpleRequest{GroupID: gid, ReqMsgNumber: 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.RspMsgList) != 20 || page.RspMsgList[0].MsgSeq != seqs[24] || page.RspMsgList[19].MsgSeq != seqs[5] {
		t.Fatalf("first page: %d msgs, first %v", len(page.RspMsgList), page.RspMsgList[0].MsgSeq)
	}
	if m := page.RspMsgList[0]; m.FromAccount != "alice" || len(m.MsgBody) == 0 || m.MsgTimeStamp == 0 {
		t.Errorf("message fields: %+v", m)
	}

	// Paging backwards collects every seq once, newest first.
	var all []int64
	pages := 0
	for p, err := range b.client.GroupMsgPages(ctx, GroupMsgGetSimpleRequest{GroupID: gid, ReqMsgNumber: 7}) {
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, m := range p.RspMsgList {
			all = append(all, m.MsgSeq)
		}
	}
	want := slices.Clone(seqs)
	slices.Reverse(want)
	if diff := cmp.Diff(want, all); diff != "" || pages != 4 {
		t.Fatalf("paged seqs in %d pages (-want +got):\n%s", pages, diff)
	}

	// Recall three messages and one that never existed: per-seq results.
	missing := seqs[24] + 1000
	got, err := b.client.RecallGroup(ctx, gid, "", []int64{seqs[0], seqs[1], seqs[2], missing})
	if err != nil {
		t.Fatal(err)
	}
	wantRes := []ItemResult{{MsgSeq: seqs[0]}, {MsgSeq: seqs[1]}, {MsgSeq: seqs[2]}, {MsgSeq: missing, RetCode: 10030}}
	if diff := cmp.Diff(wantRes, got); diff != "" {
		t.Errorf("recall results (-want +got):\n%s", diff)
	}
	if got[3].Class() != ClassPermanent || !IsNotFound(got[3].RetCode) {
		t.Errorf("missing seq: class %v", got[3].Class())
	}

	// Recalling again: not found (the documented code for groups).
	again, err := b.client.GroupMsgRecall(ctx, GroupMsgRecallRequest{GroupID: gid, MsgSeqList: []MsgSeqItem{{seqs[0]}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(again.RecallRetList) != 1 || again.RecallRetList[0].RetCode != 10030 {
		t.Errorf("second recall: %+v", again.RecallRetList)
	}

	// History leaves recalled messages out, unless asked (IsPlaceMsg 2).
	oldest, err := b.client.GroupMsgGetSimple(ctx, GroupMsgGetSimpleRequest{GroupID: gid, ReqMsgNumber: 5, ReqMsgSeq: seqs[4]})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range oldest.RspMsgList {
		if m.MsgSeq <= seqs[2] {
			t.Errorf("recalled seq %d returned without WithRecalledMsg", m.MsgSeq)
		}
	}
	withRecalled, err := b.client.GroupMsgGetSimple(ctx, GroupMsgGetSimpleRequest{GroupID: gid, ReqMsgNumber: 5, ReqMsgSeq: seqs[4], WithRecalledMsg: 1})
	if err != nil {
		t.Fatal(err)
	}
	recalled := 0
	for _, m := range withRecalled.RspMsgList {
		if m.IsPlaceMsg == PlaceMsgRecalled {
			recalled++
		}
	}
	if recalled != 3 {
		t.Errorf("WithRecalledMsg: %d messages with IsPlaceMsg 2, want 3: %+v", recalled, withRecalled.RspMsgList)
	}

	// An unknown group is a top-level error with API, code and info.
	_, err = b.client.GroupMsgRecall(ctx, GroupMsgRecallRequest{GroupID: "@TGS#nosuchgroup", MsgSeqList: []MsgSeqItem{{1}}})
	var e *Error
	if !errors.As(err, &e) || e.API != "group_msg_recall" || e.Code != 10010 || e.Info == "" || e.HTTPStatus != 200 {
		t.Fatalf("unknown group: %#v", err)
	}
	if ClassOf(err) != ClassPermanent {
		t.Errorf("unknown group: class %v", ClassOf(err))
	}
}

func TestEmulatorGroupDiscovery(t *testing.T) {
	t.Parallel()
	b := setupEmulator(t, emulator.Config{})
	ctx := t.Context()
	users := []string{"owner", "member"}
	var gids []string
	for _, typ := range []string{GroupTypePublic, GroupTypePrivate, GroupTypeChatRoom, GroupTypeAVChatRoom} {
		gid, _ := b.seedGroup(t, typ, users, 2)
		gids = append(gids, gid)
	}

	// get_joined_group_list, paged one group at a time; AVChatRoom only with WithHugeGroups.
	collect := func(huge int) []string {
		var ids []string
		req := GetJoinedGroupListRequest{MemberAccount: "member", Limit: 1, WithHugeGroups: huge,
			ResponseFilter: &ResponseFilter{GroupBaseInfoFilter: []string{"Type", "NextMsgSeq"}}}
		for p, err := range b.client.JoinedGroupPages(ctx, req) {
			if err != nil {
				t.Fatal(err)
			}
			if len(p.GroupIDList) != 1 {
				t.Errorf("page of %d groups with Limit 1", len(p.GroupIDList))
			}
			for _, g := range p.GroupIDList {
				if g.Type == "" {
					t.Errorf("group %s without the filtered Type", g.GroupID)
				}
				ids = append(ids, g.GroupID)
			}
		}
		slices.Sort(ids)
		return ids
	}
	wantAll := slices.Sorted(slices.Values(gids))
	if diff := cmp.Diff(wantAll, collect(1)); diff != "" {
		t.Errorf("joined groups with huge (-want +got):\n%s", diff)
	}
	if got := collect(0); len(got) != 3 || slices.Contains(got, gids[3]) {
		t.Errorf("joined groups without huge: %v (AVChatRoom %s)", got, gids[3])
	}

	// get_group_info: per-group ErrorCode.
	info, err := b.client.GetGroupInfo(ctx, GetGroupInfoRequest{GroupIDList: []string{gids[0], "@TGS#nosuchgroup"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(info.GroupInfo) != 2 {
		t.Fatalf("GroupInfo: %+v", info.GroupInfo)
	}
	byID := map[string]GroupInfo{}
	for _, g := range info.GroupInfo {
		byID[g.GroupID] = g
	}
	if g := byID[gids[0]]; g.ErrorCode != 0 || g.Type != GroupTypePublic || g.NextMsgSeq != 3 || g.MemberNum != 2 {
		t.Errorf("existing group info: %+v", g)
	}
	if g := byID["@TGS#nosuchgroup"]; g.ErrorCode != 10010 && g.ErrorCode != 10015 {
		t.Errorf("missing group info: %+v", g)
	}

	// AVChatRoom does not support recall.
	_, err = b.client.RecallGroup(ctx, gids[3], "", []int64{1})
	if c := CodeOf(err); c != 10033 {
		t.Errorf("recall in AVChatRoom: %v, want 10033", err)
	}
}

func TestEmulatorTopics(t *testing.T) {
	t.Parallel()
	b := setupEmulator(t, emulator.Config{})
	ctx := t.Context()
	if _, err := b.client.MultiAccountImport(ctx, MultiAccountImportRequest{Accounts: []string{"o", "m"}}); err != nil {
		t.Fatal(err)
	}
	g, err := b.client.CreateGroup(ctx, CreateGroupRequest{OwnerAccount: "o", Type: GroupTypeCommunity, Name: "c",
		SupportTopic: 1, MemberList: []Member{{MemberAccount: "m"}}})
	if err != nil {
		t.Fatal(err)
	}
	topic, err := b.client.CreateTopic(ctx, CreateTopicRequest{GroupID: g.GroupID, TopicName: "news", FromAccount: "o"})
	if err != nil {
		t.Fatal(err)
	}
	if topic.TopicID == "" {
		t.Fatal("create_topic returned no TopicId")
	}
	var seqs []int64
	for i := range 3 {
		r, err := b.client.SendGroupMsg(ctx, SendGroupMsgRequest{GroupID: g.GroupID, TopicID: topic.TopicID, FromAccount: "m", MsgBody: TextBody(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, r.MsgSeq)
	}
	topics, err := b.client.GetTopic(ctx, GetTopicRequest{GroupID: g.GroupID, FromAccount: "o"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ts := range topics.TopicAndSelfInfo {
		if ts.TopicInfo.TopicID == topic.TopicID {
			found = ts.ErrorCode == 0 && ts.TopicInfo.TopicName == "news"
		}
	}
	if !found {
		t.Errorf("get_topic: %+v", topics.TopicAndSelfInfo)
	}
	h, err := b.client.GroupMsgGetSimple(ctx, GroupMsgGetSimpleRequest{GroupID: g.GroupID, TopicID: topic.TopicID, ReqMsgNumber: 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.RspMsgList) != 3 {
		t.Errorf("topic history: %d messages, want 3", len(h.RspMsgList))
	}
	res, err := b.client.RecallGroup(ctx, g.GroupID, topic.TopicID, seqs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.RetCode != 0 {
			t.Errorf("topic recall: %+v", res)
		}
	}
	if _, err := b.client.RecallGroup(ctx, g.GroupID, "no-such-topic", seqs[:1]); ClassOf(err) != ClassPermanent {
		t.Errorf("recall in unknown topic: %v", err)
	}
}

func TestEmulatorC2C(t *testing.T) {
	t.Parallel()
	b := setupEmulator(t, emulator.Config{})
	ctx := t.Context()
	if _, err := b.client.MultiAccountImport(ctx, MultiAccountImportRequest{Accounts: []string{"vinson", "dramon"}}); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := range 12 {
		r, err := b.client.SendMsg(ctx, SendMsgRequest{FromAccount: "vinson", ToAccount: "dramon", MsgBody: TextBody(fmt.Sprint("hi ", i))})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(r.MsgKey, "_") != 2 || r.MsgTime == 0 {
			t.Fatalf("sendmsg answer: %+v", r)
		}
		keys = append(keys, r.MsgKey)
	}
	now := time.Now().Unix()
	// Paging with a small MaxCnt walks every message once.
	seen := map[string]bool{}
	pages := 0
	for p, err := range b.client.RoamMsgPages(ctx, AdminGetRoamMsgRequest{OperatorAccount: "vinson", PeerAccount: "dramon",
		MaxCnt: 5, MinTime: now - 3600, MaxTime: now + 3600}) {
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, m := range p.MsgList {
			if seen[m.MsgKey] {
				t.Errorf("MsgKey %s seen twice", m.MsgKey)
			}
			seen[m.MsgKey] = true
		}
	}
	if len(seen) != len(keys) || pages < 3 {
		t.Errorf("roam paging: %d messages in %d pages, want %d in ≥3", len(seen), pages, len(keys))
	}

	// admin_msgwithdraw: ok, then already recalled (done), then bad keys.
	w := AdminMsgWithdrawRequest{FromAccount: "vinson", ToAccount: "dramon", MsgKey: keys[0]}
	if _, err := b.client.AdminMsgWithdraw(ctx, w); err != nil {
		t.Fatal(err)
	}
	_, err := b.client.AdminMsgWithdraw(ctx, w)
	if CodeOf(err) != 20023 || ClassOf(err) != ClassDone {
		t.Errorf("second withdraw: %v, want 20023 (done)", err)
	}
	p := strings.SplitN(keys[1], "_", 2)
	unknown := "999999_" + p[1]
	for key, want := range map[string]int{unknown: 20022, "not-a-key": 90054} {
		_, err := b.client.AdminMsgWithdraw(ctx, AdminMsgWithdrawRequest{FromAccount: "vinson", ToAccount: "dramon", MsgKey: key})
		if CodeOf(err) != want || ClassOf(err) != ClassPermanent {
			t.Errorf("withdraw %q: %v, want %d", key, err, want)
		}
	}
	_, err = b.client.AdminMsgWithdraw(ctx, AdminMsgWithdrawRequest{FromAccount: "vinson", ToAccount: "nobody", MsgKey: keys[2]})
	if CodeOf(err) != 90003 {
		t.Errorf("withdraw to unknown account: %v, want 90003", err)
	}

	// The recalled message is flagged in roaming history.
	r, err := b.client.AdminGetRoamMsg(ctx, AdminGetRoamMsgRequest{OperatorAccount: "vinson", PeerAccount: "dramon",
		MaxCnt: 100, MinTime: now - 3600, MaxTime: now + 3600})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.MsgList {
		if m.Recalled() != (m.MsgKey == keys[0]) {
			t.Errorf("message %s: MsgFlagBits %d", m.MsgKey, m.MsgFlagBits)
		}
	}
}

func TestEmulatorThrottle(t *testing.T) {
	t.Parallel()
	// A low cap makes the outcome independent of how fast this machine is:
	// 400 calls cannot all fit in windows of 20 per second.
	b := setupEmulator(t, emulator.Config{RateOf: map[string]int{"group_msg_recall": 20}})
	const calls = 400
	var wg sync.WaitGroup
	var mu sync.Mutex
	classes := map[Class]int{}
	codes := map[int]int{}
	start := make(chan struct{})
	for range calls {
		wg.Go(func() {
			<-start
			_, err := b.client.GroupMsgRecall(t.Context(), GroupMsgRecallRequest{GroupID: "@TGS#nosuchgroup", MsgSeqList: []MsgSeqItem{{1}}})
			mu.Lock()
			defer mu.Unlock()
			classes[ClassOf(err)]++
			codes[CodeOf(err)]++
		})
	}
	close(start)
	wg.Wait()
	// Accepted calls fail with 10010 (no such group); throttled ones with 60007.
	if codes[60007] == 0 || classes[ClassThrottled] != codes[60007] {
		t.Errorf("classes %v, codes %v: want some 60007, all classified throttled", classes, codes)
	}
	if codes[10010]+codes[60007] != calls {
		t.Errorf("codes %v: want only 10010 and 60007", codes)
	}
}

// logBuffer is a concurrency-safe buffer for a JSON slog handler.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// codes returns the "code" of every logged call, in order.
func (l *logBuffer) codes(t *testing.T) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for line := range strings.Lines(l.buf.String()) {
		var rec struct {
			Code int `json:"code"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec.Code)
	}
	return out
}

func TestEmulatorAuthRenewal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		first    func() (string, error) // the first sig the client uses
		wantCode int                    // the server's answer to it
	}{
		{"expired", func() (string, error) { return tencentyun.GenUserSig(testAppID, testKey, testAdmin, -60) }, 70001},
		{"garbage", func() (string, error) { return "bm90LWEtc2ln", nil }, 70003},
		{"empty", func() (string, error) { return "", nil }, 70002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := &recordingGate{}
			logs := &logBuffer{}
			b := setupEmulator(t, emulator.Config{}, func(c *Config) {
				c.Gate = g
				c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			real := b.client.sigs.generate
			b.client.sigs.generate = func(ttl time.Duration) (string, error) {
				if b.client.sigs.gen.Load() == 0 {
					return tt.first()
				}
				return real(ttl)
			}
			if _, err := b.client.AccountImport(t.Context(), AccountImportRequest{UserID: "u1"}); err != nil {
				t.Fatalf("call with a bad first sig: %v", err)
			}
			if diff := cmp.Diff([]int{tt.wantCode, 0}, logs.codes(t)); diff != "" {
				t.Errorf("codes of the attempts (-want +got):\n%s", diff)
			}
			waits, _ := g.counts()
			if gens := b.client.sigs.gen.Load(); gens != 2 || len(waits) != 2 {
				t.Errorf("%d sig generations, %d gate waits; want 2 and 2 (renew and retry once)", gens, len(waits))
			}
			// Later calls reuse the good sig.
			if _, err := b.client.AccountImport(t.Context(), AccountImportRequest{UserID: "u2"}); err != nil || b.client.sigs.gen.Load() != 2 {
				t.Errorf("second call: %v, %d generations", err, b.client.sigs.gen.Load())
			}
		})
	}
}

func TestEmulatorAuthFailure(t *testing.T) {
	t.Parallel()
	// A client with the wrong key: renewal cannot help; one retry, then ClassAuth.
	g := &recordingGate{}
	b := setupEmulator(t, emulator.Config{}, func(c *Config) { c.Gate = g; c.SecretKey = "wrong-key" })
	_, err := b.client.AccountImport(t.Context(), AccountImportRequest{UserID: "u"})
	if ClassOf(err) != ClassAuth {
		t.Fatalf("wrong key: %v (class %v), want auth", err, ClassOf(err))
	}
	if waits, _ := g.counts(); len(waits) != 2 {
		t.Errorf("%d attempts, want 2", len(waits))
	}
	if strings.Contains(err.Error(), "wrong-key") {
		t.Errorf("error shows the key: %v", err)
	}
}

func TestEmulatorFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		faults emulator.Faults
		check  func(t *testing.T, err error)
	}{
		{"502", emulator.Faults{HTTP502: 1}, func(t *testing.T, err error) {
			var e *Error
			if !errors.As(err, &e) || e.HTTPStatus != 502 || !errors.Is(err, ErrHTTPStatus) || ClassOf(err) != ClassRetry {
				t.Errorf("502: %v, want HTTP 502, retry", err)
			}
		}},
		{"hang", emulator.Faults{Hang: 1, HangFor: 30 * time.Second}, func(t *testing.T, err error) {
			var e *Error
			if !errors.As(err, &e) || !e.Timeout() || ClassOf(err) != ClassRetry {
				t.Errorf("hang: %v, want a timeout, retry", err)
			}
		}},
		{"91000", emulator.Faults{Codes: map[int]float64{91000: 1}}, func(t *testing.T, err error) {
			if CodeOf(err) != 91000 || ClassOf(err) != ClassRetry {
				t.Errorf("code fault: %v, want 91000, retry", err)
			}
		}},
		{"60007", emulator.Faults{Codes: map[int]float64{60007: 1}}, func(t *testing.T, err error) {
			if CodeOf(err) != 60007 || ClassOf(err) != ClassThrottled {
				t.Errorf("code fault: %v, want 60007, throttled", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupEmulator(t, emulator.Config{}, func(c *Config) { c.Timeout = 300 * time.Millisecond })
			gid, seqs := b.seedGroup(t, GroupTypePublic, []string{"a", "b"}, 1)
			b.emu.SetFaults(tt.faults)
			_, err := b.client.RecallGroup(t.Context(), gid, "", seqs)
			if err == nil {
				t.Fatal("no error under a certain fault")
			}
			tt.check(t, err)
			b.emu.SetFaults(emulator.Faults{})
			// The fault had no effect: the message is still recallable.
			res, err := b.client.RecallGroup(t.Context(), gid, "", seqs)
			if err != nil || res[0].RetCode != 0 {
				t.Errorf("after the fault: %v, %+v", err, res)
			}
		})
	}
}

func TestEmulatorItemFaults(t *testing.T) {
	t.Parallel()
	b := setupEmulator(t, emulator.Config{})
	gid, seqs := b.seedGroup(t, GroupTypePublic, []string{"a", "b"}, 4)
	b.emu.SetFaults(emulator.Faults{ItemCodes: map[int]float64{10002: 1}})
	res, err := b.client.RecallGroup(t.Context(), gid, "", seqs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.RetCode != 10002 || r.Class() != ClassRetry {
			t.Errorf("item %+v: want RetCode 10002, retry", r)
		}
	}
}

// BenchmarkRecallParallel measures group_msg_recall calls per second through
// the client against the in-process emulator (no rate cap, no latency): the
// client's own overhead (JSON, UserSig cache, connection pool).
func BenchmarkRecallParallel(b *testing.B) {
	emu, err := emulator.New(emulator.Config{SDKAppID: testAppID, Admin: testAdmin, SecretKey: testKey, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	c, err := New(testConfig(srv.URL))
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			// An unknown group: a full round trip that changes nothing.
			_, err := c.GroupMsgRecall(ctx, GroupMsgRecallRequest{GroupID: "@TGS#bench", MsgSeqList: []MsgSeqItem{{1}, {2}, {3}}})
			if CodeOf(err) != 10010 {
				b.Fatalf("unexpected: %v", err)
			}
		}
	})
}
