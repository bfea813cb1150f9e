package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"
)

const (
	testApp    = 1400000001
	testAdmin  = "administrator"
	testSecret = "emulator-test-secret"
)

// harness drives an emulator over real HTTP with hand-written requests.
type harness struct {
	t   *testing.T
	emu *Server
	url string
	sig string
}

func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	cfg.SDKAppID, cfg.Admin, cfg.SecretKey = testApp, testAdmin, testSecret
	emu, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, emu, emu)
}

// serve answers over real HTTP with h, a handler that calls emu, on an
// ArrivalListener.
func serve(t *testing.T, emu *Server, h http.Handler) *harness {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ArrivalListener(srv.Listener)
	srv.Config.ConnContext = ConnContext
	srv.Start()
	t.Cleanup(srv.Close)
	sig, err := tencentyun.GenUserSig(testApp, testSecret, testAdmin, 3600)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, emu: emu, url: srv.URL, sig: sig}
}

type answer struct {
	Status int
	Raw    map[string]any
	Code   int
}

// post calls path with body as the admin; query overrides URL parameters.
func (h *harness) post(path string, body any, query ...string) answer {
	h.t.Helper()
	q := map[string]string{"sdkappid": fmt.Sprint(testApp), "identifier": testAdmin, "usersig": h.sig, "random": "12345", "contenttype": "json"}
	for i := 0; i+1 < len(query); i += 2 {
		q[query[i]] = query[i+1]
	}
	var parts []string
	for k, v := range q {
		parts = append(parts, k+"="+v)
	}
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	resp, err := http.Post(h.url+"/v4/"+path+"?"+strings.Join(parts, "&"), "application/json", rd)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode}
	if json.Unmarshal(raw, &a.Raw) == nil {
		if c, ok := a.Raw["ErrorCode"].(float64); ok {
			a.Code = int(c)
		}
		if a.Code == 0 && a.Raw["ActionStatus"] != "OK" {
			h.t.Fatalf("%s: ErrorCode 0 with ActionStatus %v", path, a.Raw["ActionStatus"])
		}
	}
	return a
}

func (h *harness) want(path string, body any, code int, query ...string) answer {
	h.t.Helper()
	a := h.post(path, body, query...)
	if a.Status != 200 || a.Code != code {
		h.t.Fatalf("%s %v: HTTP %d code %d (%v), want HTTP 200 code %d", path, body, a.Status, a.Code, a.Raw["ErrorInfo"], code)
	}
	return a
}

// seed makes users a, b, a Public group with 12 messages from a, an
// AVChatRoom, a Community with one topic, and 3 one-to-one messages a→b.
func (h *harness) seed() (group, av, community, topicID string, keys []string) {
	h.want("im_open_login_svc/multiaccount_import", map[string]any{"Accounts": []string{"a", "b"}}, 0)
	group = h.want("group_open_http_svc/create_group", map[string]any{"Type": "Public", "Name": "g", "MemberList": []map[string]string{{"Member_Account": "a"}}}, 0).Raw["GroupId"].(string)
	av = h.want("group_open_http_svc/create_group", map[string]any{"Type": "AVChatRoom", "Name": "av"}, 0).Raw["GroupId"].(string)
	community = h.want("group_open_http_svc/create_group", map[string]any{"Type": "Community", "Name": "c", "SupportTopic": 1}, 0).Raw["GroupId"].(string)
	topicID = h.want("million_group_open_http_svc/create_topic", map[string]any{"GroupId": community, "TopicName": "t"}, 0).Raw["TopicId"].(string)
	body := []map[string]any{{"MsgType": "TIMTextElem", "MsgContent": map[string]string{"Text": "hi"}}}
	for i := range 12 {
		a := h.want("group_open_http_svc/send_group_msg", map[string]any{"GroupId": group, "Random": i, "From_Account": "a", "MsgBody": body}, 0)
		if seq := a.Raw["MsgSeq"].(float64); int(seq) != i+1 {
			h.t.Fatalf("MsgSeq %v, want %d", seq, i+1)
		}
	}
	if a := h.want("group_open_http_svc/send_group_msg", map[string]any{"GroupId": community, "TopicId": topicID, "Random": 1, "From_Account": "a", "MsgBody": body}, 0); a.Raw["MsgSeq"].(float64) != 1 {
		h.t.Fatalf("topic seqs must start at 1: %v", a.Raw)
	}
	for i := range 3 {
		k := h.want("openim/sendmsg", map[string]any{"From_Account": "a", "To_Account": "b", "MsgRandom": 100 + i, "MsgBody": body}, 0).Raw["MsgKey"].(string)
		if parts := strings.Split(k, "_"); len(parts) != 3 || parts[0] != fmt.Sprint(i+1) || parts[1] != fmt.Sprint(100+i) {
			h.t.Fatalf("MsgKey %q: want {seq}_{random}_{time}", k)
		}
		keys = append(keys, k)
	}
	return
}

func seqs(n ...int) []map[string]int {
	out := []map[string]int{}
	for _, s := range n {
		out = append(out, map[string]int{"MsgSeq": s})
	}
	return out
}

func TestGroupMsgRecall(t *testing.T) {
	h := start(t, Config{})
	g, av, c, topicID, _ := h.seed()
	path := "group_open_http_svc/group_msg_recall"
	a := h.want(path, map[string]any{"GroupId": g, "MsgSeqList": seqs(1, 2, 99)}, 0)
	got := fmt.Sprint(a.Raw["RecallRetList"])
	if got != "[map[MsgSeq:1 RetCode:0] map[MsgSeq:2 RetCode:0] map[MsgSeq:99 RetCode:10030]]" {
		t.Fatalf("RecallRetList = %s", got)
	}
	a = h.want(path, map[string]any{"GroupId": g, "MsgSeqList": seqs(2, 3)}, 0)
	if got := fmt.Sprint(a.Raw["RecallRetList"]); got != "[map[MsgSeq:2 RetCode:10030] map[MsgSeq:3 RetCode:0]]" {
		t.Fatalf("already recalled: RecallRetList = %s", got)
	}
	h.want(path, map[string]any{"GroupId": g, "MsgSeqList": seqs(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)}, 10004)
	h.want(path, map[string]any{"GroupId": g, "MsgSeqList": seqs()}, 10004)
	h.want(path, map[string]any{"GroupId": "@TGS#nope", "MsgSeqList": seqs(1)}, 10010)
	h.want(path, map[string]any{"GroupId": "bad id", "MsgSeqList": seqs(1)}, 10015)
	h.want(path, map[string]any{"GroupId": av, "MsgSeqList": seqs(1)}, 10033)
	h.want(path, map[string]any{"GroupId": c, "TopicId": topicID, "MsgSeqList": seqs(1)}, 0)
	h.want(path, map[string]any{"GroupId": c, "TopicId": "nope", "MsgSeqList": seqs(1)}, 10004)
	h.want(path, `{"GroupId":`, 60003)

	truth := h.emu.GroupMessages(g, "")
	if !truth[0].Recalled || !truth[2].Recalled || truth[3].Recalled || truth[1].RecallRequests != 1 {
		t.Fatalf("ground truth = %+v", truth[:4])
	}
	if tr := h.emu.Truth(); tr.DoubleRecalls != 1 || tr.GroupRecalled != 4 {
		t.Fatalf("Truth = %+v", tr)
	}

	// History: recalled messages are left out, or flagged IsPlaceMsg 2.
	get := "group_open_http_svc/group_msg_get_simple"
	a = h.want(get, map[string]any{"GroupId": g, "ReqMsgNumber": 5, "ReqMsgSeq": 4}, 0)
	if list := a.Raw["RspMsgList"].([]any); len(list) != 1 || list[0].(map[string]any)["MsgSeq"].(float64) != 4 {
		t.Fatalf("history without recalled = %v", list)
	}
	a = h.want(get, map[string]any{"GroupId": g, "ReqMsgNumber": 5, "ReqMsgSeq": 4, "WithRecalledMsg": 1}, 0)
	list := a.Raw["RspMsgList"].([]any)
	if len(list) != 4 || list[0].(map[string]any)["MsgSeq"].(float64) != 4 || list[1].(map[string]any)["IsPlaceMsg"].(float64) != 2 {
		t.Fatalf("history with recalled = %v", list)
	}
	a = h.want(get, map[string]any{"GroupId": g, "ReqMsgNumber": 20}, 0)
	if list := a.Raw["RspMsgList"].([]any); len(list) != 9 || list[0].(map[string]any)["MsgSeq"].(float64) != 12 {
		t.Fatalf("newest page = %d messages starting %v", len(list), list[0])
	}
	h.want(get, map[string]any{"GroupId": g, "ReqMsgNumber": 21}, 10004)
	h.want(get, map[string]any{"GroupId": av, "ReqMsgNumber": 1}, 10007)
}

func TestAdminMsgWithdraw(t *testing.T) {
	h := start(t, Config{})
	_, _, _, _, keys := h.seed()
	path := "openim/admin_msgwithdraw"
	h.want(path, map[string]any{"From_Account": "a", "To_Account": "b", "MsgKey": keys[0]}, 0)
	h.want(path, map[string]any{"From_Account": "a", "To_Account": "b", "MsgKey": keys[0]}, 20023)
	h.want(path, map[string]any{"From_Account": "a", "To_Account": "b", "MsgKey": "99_1_1"}, 20022)
	h.want(path, map[string]any{"From_Account": "b", "To_Account": "a", "MsgKey": keys[1]}, 20022) // b did not send it
	h.want(path, map[string]any{"From_Account": "a", "To_Account": "b", "MsgKey": "garbage"}, 90054)
	h.want(path, map[string]any{"From_Account": "a", "MsgKey": keys[1]}, 90003)
	h.want(path, map[string]any{"To_Account": "b", "MsgKey": keys[1]}, 90008)
	h.want(path, `{"From_Account":`, 90001)

	// Not the admin: 90009 (with a valid sig for that user).
	h.want("im_open_login_svc/account_import", map[string]any{"UserID": "c"}, 0)
	sig, _ := tencentyun.GenUserSig(testApp, testSecret, "c", 3600)
	h.want(path, map[string]any{"From_Account": "a", "To_Account": "b", "MsgKey": keys[1]}, 90009, "identifier", "c", "usersig", sig)
	h.want("group_open_http_svc/get_group_info", map[string]any{"GroupIdList": []string{"x"}}, 60010, "identifier", "c", "usersig", sig)

	// Roaming history flags the recalled message.
	roam := "openim/admin_getroammsg"
	a := h.want(roam, map[string]any{"Operator_Account": "a", "Peer_Account": "b", "MaxCnt": 2, "MinTime": 0, "MaxTime": 4102444800}, 0)
	if a.Raw["Complete"].(float64) != 0 || len(a.Raw["MsgList"].([]any)) != 2 {
		t.Fatalf("first roam page = %v", a.Raw)
	}
	a = h.want(roam, map[string]any{"Operator_Account": "a", "Peer_Account": "b", "MaxCnt": 2, "MinTime": 0,
		"MaxTime": a.Raw["LastMsgTime"], "LastMsgKey": a.Raw["LastMsgKey"]}, 0)
	list := a.Raw["MsgList"].([]any)
	if a.Raw["Complete"].(float64) != 1 || len(list) != 1 || list[0].(map[string]any)["MsgKey"] != keys[0] || list[0].(map[string]any)["MsgFlagBits"].(float64) != 8 {
		t.Fatalf("second roam page = %v", a.Raw)
	}
	// The old field names still work.
	h.want(roam, map[string]any{"From_Account": "a", "To_Account": "b", "MaxCnt": 10, "MinTime": 0, "MaxTime": 4102444800}, 0)
	h.want(roam, map[string]any{"Operator_Account": "zz", "Peer_Account": "b", "MaxCnt": 10}, 90008)
}

func TestAuthAndConventions(t *testing.T) {
	h := start(t, Config{})
	path := "group_open_http_svc/get_group_info"
	body := map[string]any{"GroupIdList": []string{"x"}}
	expired, _ := tencentyun.GenUserSig(testApp, testSecret, testAdmin, -10)
	wrongKey, _ := tencentyun.GenUserSig(testApp, "another key", testAdmin, 3600)
	otherApp, _ := tencentyun.GenUserSig(1400000002, testSecret, testAdmin, 3600)
	h.want(path, body, 70002, "usersig", "")
	h.want(path, body, 70001, "usersig", expired)
	h.want(path, body, 70003, "usersig", wrongKey)
	h.want(path, body, 70003, "usersig", "not-a-sig")
	h.want(path, body, 70014, "usersig", otherApp)
	h.want(path, body, 70013, "identifier", "someone")
	h.want(path, body, 60006, "sdkappid", "42")
	h.want(path, body, 60012, "sdkappid", "")
	h.want(path, body, 60002, "random", "99999999999")
	h.want(path, body, 60002, "contenttype", "xml")
	h.want("group_open_http_svc/no_such_command", body, 60009)
	a := h.want(path, body, 0)
	if info := a.Raw["GroupInfo"].([]any)[0].(map[string]any); info["ErrorCode"].(float64) != 10010 {
		t.Fatalf("per-group ErrorCode = %v", info)
	}
	resp, err := http.Get(h.url + "/v4/" + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET: HTTP %d, want 200 with an ErrorCode", resp.StatusCode)
	}
}

func TestJoinedGroupsAndTopics(t *testing.T) {
	h := start(t, Config{})
	g, av, c, topicID, _ := h.seed()
	h.want("group_open_http_svc/add_group_member", map[string]any{"GroupId": av, "MemberList": []map[string]string{{"Member_Account": "a"}}}, 0)
	h.want("group_open_http_svc/add_group_member", map[string]any{"GroupId": c, "MemberList": []map[string]string{{"Member_Account": "a"}}}, 0)
	path := "group_open_http_svc/get_joined_group_list"
	a := h.want(path, map[string]any{"Member_Account": "a"}, 0)
	if a.Raw["TotalCount"].(float64) != 2 {
		t.Fatalf("without huge groups: %v", a.Raw)
	}
	a = h.want(path, map[string]any{"Member_Account": "a", "WithHugeGroups": 1, "Limit": 1, "Offset": 1,
		"ResponseFilter": map[string]any{"GroupBaseInfoFilter": []string{"Type"}}}, 0)
	list := a.Raw["GroupIdList"].([]any)
	if a.Raw["TotalCount"].(float64) != 3 || len(list) != 1 || list[0].(map[string]any)["Type"] != "AVChatRoom" {
		t.Fatalf("page 2 with huge groups = %v", a.Raw)
	}
	_ = g
	h.want(path, map[string]any{"Member_Account": "nobody"}, 70107)
	a = h.want("million_group_open_http_svc/get_topic", map[string]any{"GroupId": c, "From_Account": "a"}, 0)
	if ts := a.Raw["TopicAndSelfInfo"].([]any); len(ts) != 1 || ts[0].(map[string]any)["TopicInfo"].(map[string]any)["TopicId"] != topicID {
		t.Fatalf("get_topic = %v", a.Raw)
	}
	h.want("million_group_open_http_svc/get_topic", map[string]any{"GroupId": g, "From_Account": "a"}, 10004)
	// From_Account is documented as required.
	h.want("million_group_open_http_svc/get_topic", map[string]any{"GroupId": c}, 10003)
}

// TestTopicCodes: Faults.TopicCodes answers get_topic with ErrorCode and
// ErrorInfo on the named topic's entry (its TopicInfo naming only the topic
// and its group), the call itself and the other topics as usual; a fault
// without a TopicId or a code is refused.
func TestTopicCodes(t *testing.T) {
	h := start(t, Config{})
	_, _, c, topicID, _ := h.seed()
	other := h.want("million_group_open_http_svc/create_topic", map[string]any{"GroupId": c, "TopicName": "u"}, 0).Raw["TopicId"].(string)
	h.emu.SetFaults(Faults{TopicCodes: map[string]int{topicID: 10007}})
	a := h.want("million_group_open_http_svc/get_topic", map[string]any{"GroupId": c, "From_Account": "a"}, 0)
	ts := a.Raw["TopicAndSelfInfo"].([]any)
	if len(ts) != 2 {
		t.Fatalf("get_topic = %v, want two entries", a.Raw)
	}
	refused, fine := ts[0].(map[string]any), ts[1].(map[string]any)
	info := refused["TopicInfo"].(map[string]any)
	if refused["ErrorCode"] != float64(10007) || refused["ErrorInfo"] == "" || info["TopicId"] != topicID || info["GroupID"] != c || info["TopicName"] != nil {
		t.Fatalf("the refused topic's entry = %v, want ErrorCode 10007, an ErrorInfo and only its TopicId and GroupID", refused)
	}
	if fine["ErrorCode"] != float64(0) || fine["TopicInfo"].(map[string]any)["TopicId"] != other {
		t.Fatalf("the other topic's entry = %v, want it described", fine)
	}
	base := Config{SDKAppID: testApp, Admin: testAdmin, SecretKey: testSecret}
	for _, bad := range []map[string]int{{"": 10007}, {topicID: 0}} {
		cfg := base
		cfg.Faults.TopicCodes = bad
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "TopicCodes") {
			t.Fatalf("Faults.TopicCodes %v: %v, want it refused", bad, err)
		}
	}
}

// TestRateCap sends 400 concurrent recall calls: at most 200 are accepted in
// the sliding second, the rest get 60007 and have no effect.
func TestRateCap(t *testing.T) {
	h := start(t, Config{Rate: 200})
	g, _, _, _, _ := h.seed()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := h.post("group_open_http_svc/group_msg_recall", map[string]any{"GroupId": g, "MsgSeqList": seqs(500)})
			mu.Lock()
			codes[a.Code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	st := h.emu.Stats()["group_msg_recall"]
	if codes[0] > 200 || codes[0]+codes[60007] != 400 || st.Max1s > 200 || st.Throttled != int64(codes[60007]) {
		t.Fatalf("codes %v, stats %+v", codes, st)
	}
	if codes[60007] == 0 {
		t.Fatalf("400 calls in a burst were all accepted: %v", codes)
	}
	var sum int64
	for _, n := range st.PerSecond {
		sum += n
	}
	if sum != st.Accepted || st.Calls != 400 {
		t.Fatalf("per_second sums to %d, accepted %d, calls %d", sum, st.Accepted, st.Calls)
	}
	// Over HTTP too.
	resp, err := http.Get(h.url + "/emulator/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || m["group_msg_recall"]["max_1s"] == nil || m["group_msg_recall"]["per_second"] == nil {
		t.Fatalf("/emulator/stats = %v, %v", m, err)
	}
}

func TestFaults(t *testing.T) {
	h := start(t, Config{})
	g, _, _, _, keys := h.seed()
	h.emu.SetFaults(Faults{Codes: map[int]float64{91000: 1}})
	h.want("openim/admin_msgwithdraw", map[string]any{"From_Account": "a", "To_Account": "b", "MsgKey": keys[0]}, 91000)
	if h.emu.C2CMessages("a", "b")[0].Recalled {
		t.Fatal("a faulted call had an effect")
	}
	h.emu.SetFaults(Faults{ItemCodes: map[int]float64{10002: 1}})
	a := h.want("group_open_http_svc/group_msg_recall", map[string]any{"GroupId": g, "MsgSeqList": seqs(5, 6)}, 0)
	if got := fmt.Sprint(a.Raw["RecallRetList"]); got != "[map[MsgSeq:5 RetCode:10002] map[MsgSeq:6 RetCode:10002]]" {
		t.Fatalf("item faults: %s", got)
	}
	h.emu.SetFaults(Faults{HTTP502: 1})
	if a := h.post("group_open_http_svc/group_msg_recall", map[string]any{"GroupId": g, "MsgSeqList": seqs(5)}); a.Status != 502 {
		t.Fatalf("HTTP %d, want 502", a.Status)
	}
	h.emu.SetFaults(Faults{})
	h.want("group_open_http_svc/group_msg_recall", map[string]any{"GroupId": g, "MsgSeqList": seqs(5)}, 0)
	if st := h.emu.Stats()["group_msg_recall"]; st.Faults != 3 {
		t.Fatalf("faults counted %d, want 3 (2 seqs + 1 502)", st.Faults)
	}
	if _, err := New(Config{SDKAppID: 1, Admin: "a", SecretKey: "k", Faults: Faults{HTTP502: 2}}); err == nil {
		t.Fatal("a probability of 2 was accepted")
	}
}

func TestGenerate(t *testing.T) {
	a, _ := New(Config{SDKAppID: 1, Admin: "admin", SecretKey: "k"})
	b, _ := New(Config{SDKAppID: 1, Admin: "admin", SecretKey: "k"})
	spec := DatasetSpec{Groups: 30, Users: 200, GroupMessages: 20000, C2CMessages: 2000, HeavyGroups: 20, Peers: 10, Seed: 42}
	da, err := a.Generate(spec)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := b.Generate(spec)
	if da.GroupMessages != 20000 || da.C2CMessages != 2000 || da.GroupsByType["Community"] == 0 || da.GroupsByType["AVChatRoom"] == 0 {
		t.Fatalf("dataset = %+v", da)
	}
	if fmt.Sprint(a.Truth()) != fmt.Sprint(b.Truth()) || da.HeavyMessages != db.HeavyMessages || da.HeavyMessages == 0 {
		t.Fatalf("not deterministic: %+v vs %+v", da, db)
	}
	spammer := da.HeavySenders[0]
	inGroups := 0
	for _, g := range a.Groups() {
		for _, m := range g.Members {
			if m == spammer {
				inGroups++
			}
		}
	}
	if inGroups != 20 || len(da.PeersOf[spammer]) != 10 {
		t.Fatalf("spammer in %d groups with %d peers", inGroups, len(da.PeersOf[spammer]))
	}
	if _, err := a.Generate(DatasetSpec{Groups: 3, HeavyGroups: 5}); err == nil {
		t.Fatal("HeavyGroups > Groups accepted")
	}
}

func BenchmarkGenerateMillion(b *testing.B) {
	for range b.N {
		s, _ := New(Config{SDKAppID: 1, Admin: "admin", SecretKey: "k"})
		if _, err := s.Generate(DatasetSpec{Groups: 1000, Users: 10000, GroupMessages: 1_000_000, C2CMessages: 50000}); err != nil {
			b.Fatal(err)
		}
	}
}
