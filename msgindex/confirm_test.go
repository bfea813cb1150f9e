package msgindex_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tim"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const confirmToken = "confirm-callback-token-0123456789"

// TestConfirmerDropsForgedBodiesOnASignedURL is issue 13's callback door:
// the emulator delivers real, signed callbacks over HTTP; one signed URL is
// replayed with a forged body (mallory claims bob's seq), which the
// receiver accepts since Sign does not cover the body. Before the confirmer
// runs, the entry is in the index marked unconfirmed and a purge plan by
// index (through producer.SenderCheck) takes only mallory's own message;
// after it runs, the forged entry is gone from the index, the counters say
// 1 forged, the real entries are confirmed, and a message recalled before
// confirmation is dropped as gone.
func TestConfirmerDropsForgedBodiesOnASignedURL(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	idx := msgindex.New(rdb, "", 7*24*time.Hour)
	cb := &msgindex.Callbacks{Index: idx, SDKAppID: imtest.AppID, Token: confirmToken, Counter: msgindex.NewCallbackCounter()}
	var mu sync.Mutex
	var signedURL string // the first group callback's URL, as an eavesdropper would see it
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if signedURL == "" && strings.Contains(r.URL.RawQuery, msgindex.CommandGroupAfterSend) {
			signedURL = r.URL.String()
		}
		mu.Unlock()
		cb.ServeHTTP(w, r)
	}))
	defer srv.Close()
	env := imtest.Start(t, emulator.Config{Callbacks: emulator.CallbackConfig{URL: srv.URL + "/callback", Token: confirmToken}})
	env.Accounts(t, "alice", "bob", "mallory")
	g := env.Group(t, "Public", "@TGS#confirm", "alice", "bob", "mallory")
	bobSeqs := env.SendGroup(t, g, "", 3, "bob")
	malSeqs := env.SendGroup(t, g, "", 1, "mallory")
	recalledSeq := env.SendGroup(t, g, "", 1, "alice")[0]
	keys := env.SendC2C(t, "alice", "bob", 2)
	if err := env.Emu.WaitCallbacks(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.RecallGroup(ctx, g, "", []int64{recalledSeq}); err != nil {
		t.Fatal(err)
	}

	// The forged body on the signed URL: accepted (Sign covers no body).
	forged := fmt.Sprintf(`{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":%q,"Type":"Public","From_Account":"mallory","MsgSeq":%d,"MsgTime":%d}`,
		g, bobSeqs[1], time.Now().Unix())
	resp, err := http.Post(srv.URL+signedURL, "application/json", strings.NewReader(forged))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("replayed signed URL with a forged body: HTTP %d %s, want it accepted (what the confirmer is for)", resp.StatusCode, body)
	}
	lookup := func(user string) []msgindex.Entry {
		var out []msgindex.Entry
		if err := idx.Lookup(ctx, imtest.AppID, user, time.Time{}, time.Time{}, func(e msgindex.Entry) error {
			out = append(out, e)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := lookup("mallory")
	if len(before) != 2 || !before[0].Unconfirmed || !before[1].Unconfirmed {
		t.Fatalf("before confirmation mallory's index holds %+v, want her message and the forged one, both unconfirmed", before)
	}
	// A purge by index before confirmation confirms senders itself.
	tally := &producer.Tally{}
	check := producer.NewSenderCheck(env.Client, "mallory", tally)
	counts, err := idx.Plan(ctx, imtest.AppID, "mallory", time.Time{}, time.Time{}, check)
	if err == nil {
		err = check.Flush(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	if counts.Unconfirmed != 2 || tally.Count() != 1 || check.Refused != 1 {
		t.Fatalf("purge plan before confirmation: counts %+v, planned %d, refused %d; want 2 unconfirmed, 1 planned (mallory's), 1 refused", counts, tally.Count(), check.Refused)
	}

	counter := msgindex.NewConfirmCounter()
	cf := &msgindex.Confirmer{Index: idx, IM: env.Client, SDKAppID: imtest.AppID, Counter: counter}
	st, err := cf.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// bob 3 + mallory 1 group, alice 2 one-to-one; alice's recalled one is gone.
	if st.Confirmed != 6 || st.Forged != 1 || st.Gone != 1 || st.Missing != 0 || st.Kept != 0 {
		t.Fatalf("confirmer pass %+v: want 6 confirmed, 1 forged, 1 gone", st)
	}
	if st.Calls > 3 {
		t.Fatalf("confirmer made %d history calls, want at most 3 (one group page of 20, one chat)", st.Calls)
	}
	after := lookup("mallory")
	if len(after) != 1 || after[0].Unconfirmed || after[0].MsgSeq != malSeqs[0] {
		t.Fatalf("after confirmation mallory's index holds %+v, want only her own message %d, confirmed", after, malSeqs[0])
	}
	for _, e := range lookup("bob") {
		if e.Unconfirmed {
			t.Errorf("bob's entry %+v still unconfirmed", e)
		}
	}
	if n := len(lookup("bob")); n != 3 {
		t.Errorf("bob has %d entries, want 3", n)
	}
	aliceKeys := map[string]bool{}
	for _, e := range lookup("alice") {
		if e.IsGroup() || e.Unconfirmed {
			t.Errorf("alice's entry %+v: want only her confirmed one-to-one messages (the recalled group message is gone)", e)
		}
		aliceKeys[e.MsgKey] = true
	}
	if !aliceKeys[keys[0]] || !aliceKeys[keys[1]] {
		t.Errorf("alice's one-to-one messages %v not confirmed: %v", keys, aliceKeys)
	}
	if got := testutil.ToFloat64(counter.WithLabelValues(msgindex.ConfirmForged)); got != 1 {
		t.Errorf("forged counter %v, want 1", got)
	}
	cov, err := idx.Coverage(ctx, imtest.AppID)
	if err != nil {
		t.Fatal(err)
	}
	if want := (msgindex.Confirmation{Confirmed: 6, Forged: 1, Gone: 1}); cov.Confirmation != want {
		t.Errorf("coverage confirmation %+v, want %+v", cov.Confirmation, want)
	}
	// Nothing left: a second pass has no sender to take.
	if st, err := cf.RunOnce(ctx); err != nil || st.Senders != 0 {
		t.Fatalf("second pass %+v, %v: want nothing to do", st, err)
	}
}

// TestConfirmerForgedOneToOneAndMissingEntries: a one-to-one entry naming a
// message the peer sent in that chat is forged; entries the history does not
// show (a seq above the group's newest, a MsgKey from another chat, a group
// or an account that does not exist) stay unconfirmed, and in lookups,
// through the grace period, then are dropped as missing; none of them stalls
// the pass.
func TestConfirmerForgedOneToOneAndMissingEntries(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	idx := msgindex.New(rdb, "", 0)
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice", "bob", "mallory")
	g := env.Group(t, "Public", "@TGS#missing", "alice", "mallory")
	seqs := env.SendGroup(t, g, "", 3, "alice")
	toMallory := env.SendC2C(t, "alice", "mallory", 1)
	toBob := env.SendC2C(t, "alice", "bob", 2) // the second: a MsgKey not in the chat with mallory
	now := time.Now()
	forgedEntries := []msgindex.Entry{
		{From: "mallory", Time: now, To: "alice", MsgKey: toMallory[0]}, // alice's message in their chat
		{From: "mallory", Time: now, To: "alice", MsgKey: toBob[1]},     // from another chat
		{From: "mallory", Time: now, GroupID: g, MsgSeq: seqs[2] + 50},  // above the newest seq
		{From: "mallory", Time: now, GroupID: "@TGS#nosuch", MsgSeq: 1}, // a group that does not exist
		{From: "mallory", Time: now, To: "nobody", MsgKey: "1_1_1"},     // an account that does not exist
		{From: "alice", Time: now, GroupID: g, MsgSeq: seqs[0]},         // real
	}
	if err := idx.Add(ctx, imtest.AppID, forgedEntries...); err != nil {
		t.Fatal(err)
	}
	cf := &msgindex.Confirmer{Index: idx, IM: env.Client, SDKAppID: imtest.AppID, Grace: time.Hour, Retry: time.Nanosecond}
	st, err := cf.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Confirmed != 1 || st.Forged != 1 || st.Missing != 0 || st.Kept != 4 {
		t.Fatalf("first pass %+v: want 1 confirmed, 1 forged, 4 kept within the grace period", st)
	}
	var pending []msgindex.Entry
	_ = idx.Lookup(ctx, imtest.AppID, "mallory", time.Time{}, time.Time{}, func(e msgindex.Entry) error {
		pending = append(pending, e)
		return nil
	})
	if len(pending) != 4 {
		t.Fatalf("mallory's entries within the grace period: %+v, want the 4 missing ones", pending)
	}
	for _, e := range pending {
		if !e.Unconfirmed {
			t.Fatalf("entry %+v: want it unconfirmed", e)
		}
	}
	cf.Grace = time.Nanosecond
	if st, err = cf.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if st.Senders != 1 || st.Missing != 4 || st.Kept != 0 {
		t.Fatalf("second pass %+v: want mallory's 4 entries dropped as missing", st)
	}
	cov, err := idx.Coverage(ctx, imtest.AppID)
	if err != nil {
		t.Fatal(err)
	}
	if want := (msgindex.Confirmation{Confirmed: 1, Forged: 1, Missing: 4}); cov.Confirmation != want {
		t.Fatalf("coverage confirmation %+v, want %+v", cov.Confirmation, want)
	}
}

// TestConfirmerReadsThePeersSide: alice cleared her side of her chat with
// bob, and sent one more message without syncing it to her side
// (tim.NoSyncToSender); bob still sees all of them, and a recall reaches
// them. The confirmer reads the chat from bob's side for what alice's
// lacks, so it keeps every entry (confirmed), drops none as missing.
func TestConfirmerReadsThePeersSide(t *testing.T) {
	ctx := t.Context()
	idx := msgindex.New(redistest.Start(t).Client(), "", 0)
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice", "bob")
	keys := env.SendC2C(t, "alice", "bob", 3)
	if _, err := env.Client.DeleteC2CMsgRamble(ctx, tim.DeleteC2CMsgRambleRequest{OperatorAccount: "alice", PeerAccount: "bob", MsgKeyList: keys}); err != nil {
		t.Fatal(err)
	}
	unsynced, err := env.Client.SendMsg(ctx, tim.SendMsgRequest{FromAccount: "alice", ToAccount: "bob", SyncOtherMachine: tim.NoSyncToSender,
		MsgBody: tim.TextBody("not on alice's side")})
	if err != nil {
		t.Fatal(err)
	}
	keys = append(keys, unsynced.MsgKey)
	var entries []msgindex.Entry
	for _, m := range env.Emu.C2CMessages("alice", "bob") {
		entries = append(entries, msgindex.Entry{From: "alice", To: "bob", MsgKey: m.MsgKey, Time: time.Unix(m.Time, 0)})
	}
	if len(entries) != 4 {
		t.Fatalf("the chat holds %d messages, want 4", len(entries))
	}
	if err := idx.Add(ctx, imtest.AppID, entries...); err != nil {
		t.Fatal(err)
	}
	alices, err := env.Client.AdminGetRoamMsg(ctx, tim.AdminGetRoamMsgRequest{OperatorAccount: "alice", PeerAccount: "bob", MaxCnt: 100})
	if err != nil || len(alices.MsgList) != 0 {
		t.Fatalf("alice's side holds %d messages (%v): the fixture proves nothing", len(alices.MsgList), err)
	}
	cf := &msgindex.Confirmer{Index: idx, IM: env.Client, SDKAppID: imtest.AppID, Grace: time.Nanosecond}
	st, err := cf.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Confirmed != 4 || st.Missing != 0 || st.Forged != 0 {
		t.Fatalf("confirmer %+v: want alice's 4 entries confirmed from bob's side", st)
	}
	n := 0
	_ = idx.Lookup(ctx, imtest.AppID, "alice", time.Time{}, time.Time{}, func(e msgindex.Entry) error {
		if e.Unconfirmed {
			t.Errorf("entry %s still unconfirmed", e.MsgKey)
		}
		n++
		return nil
	})
	if n != 4 {
		t.Fatalf("the index holds %d of alice's 4 messages to bob", n)
	}
}

// TestConfirmerConfirmsADatasetInFewCalls: the emulator replays the
// after-send callbacks of a generated dataset to the receiver over HTTP;
// one confirmer pass confirms every indexed entry, drops none, and reads
// each group's history once per window of 20 seqs (shared by all senders)
// and each chat once per page.
func TestConfirmerConfirmsADatasetInFewCalls(t *testing.T) {
	ctx := context.Background()
	idx := msgindex.New(redistest.Start(t).Client(), "", 0)
	cb := &msgindex.Callbacks{Index: idx, SDKAppID: imtest.AppID, Token: confirmToken, Counter: msgindex.NewCallbackCounter()}
	srv := httptest.NewServer(cb)
	defer srv.Close()
	env := imtest.Start(t, emulator.Config{Callbacks: emulator.CallbackConfig{URL: srv.URL + "/callback", Token: confirmToken}})
	ds, err := env.Emu.Generate(emulator.DatasetSpec{Groups: 12, Users: 80, GroupMessages: 3000, C2CMessages: 300, Peers: 10, Topics: 2, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	env.Emu.ReplayCallbacks()
	if err := env.Emu.WaitCallbacks(ctx); err != nil {
		t.Fatal(err)
	}
	indexed := 0
	for _, cmd := range []string{msgindex.CommandGroupAfterSend, msgindex.CommandC2CAfterSend} {
		indexed += int(testutil.ToFloat64(cb.Counter.WithLabelValues(cmd, msgindex.ResultIndexed)))
	}
	if indexed < 2000 {
		t.Fatalf("%d callbacks indexed of %d group and %d one-to-one messages", indexed, ds.GroupMessages, ds.C2CMessages)
	}
	before := env.Emu.Stats()
	cf := &msgindex.Confirmer{Index: idx, IM: env.Client, SDKAppID: imtest.AppID, Senders: 1000}
	st, err := cf.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := env.Emu.Stats()
	groupCalls := after["group_msg_get_simple"].Calls - before["group_msg_get_simple"].Calls
	roamCalls := after["admin_getroammsg"].Calls - before["admin_getroammsg"].Calls
	if st.Confirmed != indexed || st.Forged+st.Gone+st.Missing+st.Kept != 0 {
		t.Fatalf("pass %+v: want all %d indexed entries confirmed", st, indexed)
	}
	if int64(st.Calls) != groupCalls+roamCalls {
		t.Errorf("the confirmer counted %d calls, the emulator saw %d + %d", st.Calls, groupCalls, roamCalls)
	}
	// A window of 20 seqs per call, plus one short window per group or topic.
	if limit := int64(indexed/20 + 3*len(ds.Groups) + 2*ds.C2CMessages/10); groupCalls+roamCalls > limit {
		t.Errorf("%d history calls for %d entries, want at most %d", groupCalls+roamCalls, indexed, limit)
	}
	t.Logf("%d entries confirmed with %d group_msg_get_simple and %d admin_getroammsg calls", st.Confirmed, groupCalls, roamCalls)
	if st, err := cf.RunOnce(ctx); err != nil || st.Senders != 0 {
		t.Fatalf("second pass %+v, %v: want nothing left", st, err)
	}
}

// TestForgedTimeCannotHideAMessage: a signed URL replayed with the body of
// a real callback but another MsgTime (the member is the same, its score
// the claimed time) used to move the real entry: beyond the retention it
// was trimmed on the spot, earlier in time it fell out of a purge's --since,
// and once confirmed it kept the forged time. A purge by index then missed
// the message. The first claim of a message stands until the confirmer
// puts the history's time on it.
func TestForgedTimeCannotHideAMessage(t *testing.T) {
	ctx := context.Background()
	idx := msgindex.New(redistest.Start(t).Client(), "", 7*24*time.Hour)
	cb := &msgindex.Callbacks{Index: idx, SDKAppID: imtest.AppID, Token: confirmToken}
	var mu sync.Mutex
	var signedURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if signedURL == "" {
			signedURL = r.URL.String()
		}
		mu.Unlock()
		cb.ServeHTTP(w, r)
	}))
	defer srv.Close()
	env := imtest.Start(t, emulator.Config{Callbacks: emulator.CallbackConfig{URL: srv.URL + "/callback", Token: confirmToken}})
	env.Accounts(t, "alice", "bob")
	g := env.Group(t, "Public", "@TGS#when", "alice", "bob")
	seqs := env.SendGroup(t, g, "", 2, "alice")
	if err := env.Emu.WaitCallbacks(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forge := func(seq int64, at time.Time) {
		t.Helper()
		body := fmt.Sprintf(`{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":%q,"Type":"Public","From_Account":"alice","MsgSeq":%d,"MsgTime":%d}`, g, seq, at.Unix())
		resp, err := http.Post(srv.URL+signedURL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	since := now.Add(-24 * time.Hour) // purge user --since 1d
	inRange := func(when string) {
		t.Helper()
		got := map[int64]bool{}
		if err := idx.Lookup(ctx, imtest.AppID, "alice", since, time.Time{}, func(e msgindex.Entry) error {
			got[e.MsgSeq] = true
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, s := range seqs {
			if !got[s] {
				t.Fatalf("%s: a lookup of alice's last day misses her seq %d (found %v)", when, s, got)
			}
		}
	}
	forge(seqs[0], now.Add(-8*24*time.Hour)) // beyond the retention
	forge(seqs[1], now.Add(-2*24*time.Hour)) // before the purge's range
	inRange("after forged times, unconfirmed")

	cf := &msgindex.Confirmer{Index: idx, IM: env.Client, SDKAppID: imtest.AppID}
	if _, err := cf.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	inRange("confirmed")
	forge(seqs[1], now.Add(-3*24*time.Hour)) // after confirmation: confirmed again, at the forged time
	if _, err := cf.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	inRange("a forged time confirmed")
}

// TestConfirmerGoesOnPastAnUnreadableTarget: an entry in alice's name for
// a topic of a group without topics, and one for an AVChatRoom group (no
// history): IM refuses their reads for good (10004, 10007). The pass used
// to fail on them and confirm nothing, every minute again for as long as
// they were kept: one forged body stopped the confirmer for every sender
// claimed with her. They stay unconfirmed; the rest is decided.
func TestConfirmerGoesOnPastAnUnreadableTarget(t *testing.T) {
	ctx := context.Background()
	idx := msgindex.New(redistest.Start(t).Client(), "", 7*24*time.Hour)
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice", "bob")
	g := env.Group(t, "Public", "@TGS#ok", "alice", "bob")
	live := env.Group(t, "AVChatRoom", "@TGS#av", "alice", "bob")
	seq := env.SendGroup(t, g, "", 1, "bob")[0]
	now := time.Now()
	if err := idx.Add(ctx, imtest.AppID,
		msgindex.Entry{From: "alice", GroupID: g, TopicID: g + "@TOPIC#_forged", MsgSeq: 1, Time: now},
		msgindex.Entry{From: "alice", GroupID: live, MsgSeq: 1, Time: now},
		msgindex.Entry{From: "bob", GroupID: g, MsgSeq: seq, Time: now}); err != nil {
		t.Fatal(err)
	}
	cf := &msgindex.Confirmer{Index: idx, IM: env.Client, SDKAppID: imtest.AppID}
	st, err := cf.RunOnce(ctx)
	if err != nil {
		t.Fatalf("a pass with entries of unreadable histories: %v", err)
	}
	if st.Confirmed != 1 || st.Kept != 2 {
		t.Fatalf("pass: %+v, want bob's entry confirmed and alice's 2 kept", st)
	}
}
