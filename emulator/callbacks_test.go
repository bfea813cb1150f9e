package emulator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// receiver records the callbacks it is sent.
type receiver struct {
	mu    sync.Mutex
	got   []map[string]any
	query []map[string]string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	q := map[string]string{}
	for k, v := range r.URL.Query() {
		q[k] = v[0]
	}
	rc.mu.Lock()
	rc.got, rc.query = append(rc.got, m), append(rc.query, q)
	rc.mu.Unlock()
	_, _ = w.Write([]byte(`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`))
}

// hiBody is a one-element MsgBody for the sends of these tests.
var hiBody = []map[string]any{{"MsgType": "TIMTextElem", "MsgContent": map[string]string{"Text": "hi"}}}

// startWithReceiver starts an emulator that sends its callbacks (token
// "tok") to a receiver, with users a and b and a Public group of a.
func startWithReceiver(t *testing.T) (*harness, *receiver, string) {
	rc := &receiver{}
	rs := httptest.NewServer(rc)
	t.Cleanup(rs.Close)
	h := start(t, Config{Callbacks: CallbackConfig{URL: rs.URL + "/callback", Token: "tok"}})
	t.Cleanup(func() { h.emu.Close() })
	h.want("im_open_login_svc/multiaccount_import", map[string]any{"Accounts": []string{"a", "b"}}, 0)
	group := h.want("group_open_http_svc/create_group", map[string]any{"Type": "Public", "Name": "g", "MemberList": []map[string]string{{"Member_Account": "a"}}}, 0).Raw["GroupId"].(string)
	return h, rc, group
}

func TestCallbacksAfterSendAreDeliveredSigned(t *testing.T) {
	h, rc, group := startWithReceiver(t)
	seq := h.want("group_open_http_svc/send_group_msg", map[string]any{"GroupId": group, "Random": 7, "From_Account": "a", "MsgBody": hiBody}, 0).Raw["MsgSeq"].(float64)
	key := h.want("openim/sendmsg", map[string]any{"From_Account": "a", "To_Account": "b", "MsgRandom": 9, "MsgBody": hiBody}, 0).Raw["MsgKey"].(string)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.emu.WaitCallbacks(ctx); err != nil {
		t.Fatal(err)
	}
	if st := h.emu.CallbackStats(); st.Delivered != 2 || st.Pending != 0 {
		t.Fatalf("stats %+v, want 2 delivered", st)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	byCommand := map[string]map[string]any{}
	for i, q := range rc.query {
		sum := sha256.Sum256([]byte("tok" + q["RequestTime"]))
		if q["Sign"] != hex.EncodeToString(sum[:]) || q["SdkAppid"] != "1400000001" || q["contenttype"] != "json" {
			t.Fatalf("callback %d query %v: not signed as Tencent signs", i, q)
		}
		byCommand[q["CallbackCommand"]] = rc.got[i]
	}
	g := byCommand["Group.CallbackAfterSendMsg"]
	if g["GroupId"] != group || g["MsgSeq"].(float64) != seq || g["From_Account"] != "a" || g["Type"] != "Public" {
		t.Fatalf("group callback %v", g)
	}
	c := byCommand["C2C.CallbackAfterSendMsg"]
	if c["MsgKey"] != key || c["From_Account"] != "a" || c["To_Account"] != "b" || c["SendMsgResult"].(float64) != 0 {
		t.Fatalf("c2c callback %v", c)
	}
}

// TestSendOptionsOfTheDocs: a send whose ForbidCallbackControl names
// ForbidAfterSendMsgCallback delivers no after-send callback (group and
// one-to-one), and a sendmsg with SyncOtherMachine 2 is on the receiver's
// side of the chat only.
func TestSendOptionsOfTheDocs(t *testing.T) {
	h, _, group := startWithReceiver(t)
	forbid := []string{"ForbidBeforeSendMsgCallback", "ForbidAfterSendMsgCallback"}
	h.want("group_open_http_svc/send_group_msg", map[string]any{"GroupId": group, "Random": 1, "From_Account": "a", "MsgBody": hiBody, "ForbidCallbackControl": forbid}, 0)
	h.want("openim/sendmsg", map[string]any{"From_Account": "a", "To_Account": "b", "MsgRandom": 2, "MsgBody": hiBody, "ForbidCallbackControl": forbid[1:]}, 0)
	unsynced := h.want("openim/sendmsg", map[string]any{"From_Account": "a", "To_Account": "b", "MsgRandom": 3, "MsgBody": hiBody,
		"SyncOtherMachine": 2, "ForbidCallbackControl": forbid[:1]}, 0).Raw["MsgKey"].(string)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.emu.WaitCallbacks(ctx); err != nil {
		t.Fatal(err)
	}
	if st := h.emu.CallbackStats(); st.Delivered != 1 {
		t.Fatalf("callback stats %+v, want 1 delivered (the send that forbade only the before-send callback)", st)
	}
	sides := map[string]int{}
	for _, op := range []string{"a", "b"} {
		peer := map[string]string{"a": "b", "b": "a"}[op]
		list := h.want("openim/admin_getroammsg", map[string]any{"Operator_Account": op, "Peer_Account": peer, "MaxCnt": 100, "MinTime": 0, "MaxTime": time.Now().Unix() + 1}, 0).Raw["MsgList"].([]any)
		for _, m := range list {
			if m.(map[string]any)["MsgKey"] == unsynced {
				sides[op]++
			}
		}
		if want := map[string]int{"a": 1, "b": 2}[op]; len(list) != want {
			t.Errorf("%s's side of the chat holds %d messages, want %d", op, len(list), want)
		}
	}
	if sides["a"] != 0 || sides["b"] != 1 {
		t.Fatalf("the SyncOtherMachine 2 message is on the sides %v, want b's only", sides)
	}
}

func TestReplayCallbacksCoversTheGeneratedHistory(t *testing.T) {
	rc := &receiver{}
	rs := httptest.NewServer(rc)
	defer rs.Close()
	h := start(t, Config{Callbacks: CallbackConfig{URL: rs.URL}})
	defer h.emu.Close()
	ds, err := h.emu.Generate(DatasetSpec{Groups: 20, Users: 50, GroupMessages: 2000, C2CMessages: 300, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	n := h.emu.ReplayCallbacks()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.emu.WaitCallbacks(ctx); err != nil {
		t.Fatal(err)
	}
	if want := ds.GroupMessages + ds.C2CMessages; n != want {
		t.Fatalf("replayed %d callbacks, want %d (every stored message)", n, want)
	}
	if st := h.emu.CallbackStats(); st.Delivered != int64(n) {
		t.Fatalf("stats %+v, want %d delivered", st, n)
	}
}
