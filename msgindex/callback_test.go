package msgindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/imrecall/imrecall/internal/redisproxy"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

const (
	testApp   = 1400000001
	testToken = "callback-token-0123456789"
)

type bundle struct {
	idx     *Index
	cb      *Callbacks
	srv     *httptest.Server
	mr      *miniredis.Miniredis
	now     time.Time
	entries func(user string) []Entry
}

func setup(t *testing.T, token string) *bundle {
	t.Helper()
	mr, rdb := redistest.Mini(t)
	b := &bundle{mr: mr, now: time.Unix(1_800_000_000, 0)}
	b.idx = New(rdb, "", 30*24*time.Hour)
	b.idx.now = func() time.Time { return b.now }
	b.cb = &Callbacks{Index: b.idx, SDKAppID: testApp, Token: token, Counter: NewCallbackCounter(), Now: func() time.Time { return b.now }}
	b.srv = httptest.NewServer(b.cb)
	t.Cleanup(b.srv.Close)
	b.entries = func(user string) []Entry {
		var out []Entry
		if err := b.idx.Lookup(context.Background(), testApp, user, time.Time{}, time.Time{}, func(e Entry) error {
			out = append(out, e)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	return b
}

// post sends a callback the way Tencent does: query parameters on the URL,
// JSON body. requestTime 0 leaves Sign and RequestTime out.
func (b *bundle) post(t *testing.T, app int64, command string, requestTime int64, sign string, body string) (int, reply) {
	t.Helper()
	q := url.Values{"SdkAppid": {strconv.FormatInt(app, 10)}, "CallbackCommand": {command},
		"contenttype": {"json"}, "ClientIP": {"10.0.0.1"}, "OptPlatform": {"RESTAPI"}}
	if requestTime != 0 {
		q.Set("RequestTime", strconv.FormatInt(requestTime, 10))
		q.Set("Sign", sign)
	}
	resp, err := http.Post(b.srv.URL+"/callback?"+q.Encode(), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep reply
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("callback answer %q: %v", raw, err)
	}
	return resp.StatusCode, rep
}

func groupBody(from, group string, seq, msgTime int64) string {
	return fmt.Sprintf(`{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":%q,"Type":"Public","From_Account":%q,
"Operator_Account":%q,"Random":123,"MsgSeq":%d,"MsgTime":%d,"OnlineOnlyFlag":0,
"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}],"CloudCustomData":"","EventTime":%d}`,
		group, from, from, seq, msgTime, msgTime*1000)
}

func c2cBody(from, to, key string, msgTime int64, result int) string {
	return fmt.Sprintf(`{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":%q,"To_Account":%q,"MsgSeq":48374,
"MsgRandom":2837546,"MsgTime":%d,"MsgKey":%q,"MsgId":"x","OnlineOnlyFlag":0,"SendMsgResult":%d,"ErrorInfo":"",
"UnreadMsgNum":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}],"CloudCustomData":""}`,
		from, to, msgTime, key, result)
}

func TestSignMatchesTencentsExample(t *testing.T) {
	// doc/32431: Token xxxxyyyy, RequestTime 1669872112.
	got := Sign("xxxxyyyy", "1669872112")
	if !strings.HasPrefix(got, "17773bc3") || !strings.HasSuffix(got, "4061") {
		t.Fatalf("Sign = %s, want 17773bc3…4061 as in Tencent's example", got)
	}
	if !ValidSign("xxxxyyyy", "1669872112", strings.ToUpper(got)) || ValidSign("xxxxyyyz", "1669872112", got) {
		t.Fatal("ValidSign does not check the token")
	}
}

func TestCallbacksIndexSignedAfterSendCallbacks(t *testing.T) {
	b := setup(t, testToken)
	rt := b.now.Unix()
	sign := Sign(testToken, strconv.FormatInt(rt, 10))
	msgTime := b.now.Add(-time.Hour).Unix()
	for i, body := range []string{
		groupBody("spammer", "@TGS#1", 10, msgTime),
		groupBody("spammer", "@TGS#1", 11, msgTime+1),
		c2cBody("spammer", "alice", "5_77_"+strconv.FormatInt(msgTime, 10), msgTime+2, 0),
		groupBody("alice", "@TGS#1", 12, msgTime+3),
	} {
		command := CommandGroupAfterSend
		if strings.Contains(body, "C2C.") {
			command = CommandC2CAfterSend
		}
		status, rep := b.post(t, testApp, command, rt, sign, body)
		if status != http.StatusOK || rep != (reply{ActionStatus: "OK"}) {
			t.Fatalf("callback %d: HTTP %d %+v, want 200 OK", i, status, rep)
		}
	}
	want := []Entry{
		{From: "spammer", Time: time.Unix(msgTime, 0), GroupID: "@TGS#1", MsgSeq: 10, Unconfirmed: true},
		{From: "spammer", Time: time.Unix(msgTime+1, 0), GroupID: "@TGS#1", MsgSeq: 11, Unconfirmed: true},
		{From: "spammer", Time: time.Unix(msgTime+2, 0), To: "alice", MsgKey: "5_77_" + strconv.FormatInt(msgTime, 10), Unconfirmed: true},
	}
	if diff := cmp.Diff(want, b.entries("spammer")); diff != "" {
		t.Fatalf("index of spammer (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(b.cb.Counter.WithLabelValues(CommandGroupAfterSend, ResultIndexed)); got != 3 {
		t.Fatalf("indexed group callbacks = %v, want 3", got)
	}
	cov, err := b.idx.Coverage(context.Background(), testApp)
	if err != nil || !cov.Since.Equal(b.now) || cov.Entries != 4 {
		t.Fatalf("coverage = %+v, %v; want since %v, 4 entries", cov, err, b.now)
	}
}

func TestCallbacksRefuseBadSignStaleTimeOtherAppAndReplays(t *testing.T) {
	b := setup(t, testToken)
	msgTime := b.now.Unix()
	rt := b.now.Unix()
	good := Sign(testToken, strconv.FormatInt(rt, 10))
	cases := []struct {
		name        string
		app         int64
		requestTime int64
		sign        string
		wantStatus  int
		wantResult  string
	}{
		{"wrong sign", testApp, rt, Sign("another-token", strconv.FormatInt(rt, 10)), http.StatusUnauthorized, ResultBadSign},
		{"no sign", testApp, 0, "", http.StatusUnauthorized, ResultStale},
		{"stale", testApp, rt - 61, Sign(testToken, strconv.FormatInt(rt-61, 10)), http.StatusUnauthorized, ResultStale},
		{"future", testApp, rt + 61, Sign(testToken, strconv.FormatInt(rt+61, 10)), http.StatusUnauthorized, ResultStale},
		{"sign of another time", testApp, rt, Sign(testToken, strconv.FormatInt(rt-1, 10)), http.StatusUnauthorized, ResultBadSign},
		{"other app", testApp + 1, rt, good, http.StatusForbidden, ResultBadApp},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, rep := b.post(t, c.app, CommandGroupAfterSend, c.requestTime, c.sign, groupBody("spammer", "@TGS#1", int64(100+i), msgTime))
			if status != c.wantStatus || rep.ActionStatus != "FAIL" {
				t.Fatalf("HTTP %d %+v, want %d FAIL", status, rep, c.wantStatus)
			}
			if got := testutil.ToFloat64(b.cb.Counter.WithLabelValues(CommandGroupAfterSend, c.wantResult)); got < 1 {
				t.Fatalf("no %s counted", c.wantResult)
			}
		})
	}
	if got := b.entries("spammer"); len(got) != 0 {
		t.Fatalf("refused callbacks were indexed: %+v", got)
	}

	// Within the window, a replay of an accepted callback is refused.
	body := groupBody("spammer", "@TGS#1", 7, msgTime)
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, good, body); status != http.StatusOK {
		t.Fatalf("first delivery: HTTP %d", status)
	}
	if status, rep := b.post(t, testApp, CommandGroupAfterSend, rt, good, body); status != http.StatusConflict || rep.ActionStatus != "FAIL" {
		t.Fatalf("replay: HTTP %d %+v, want 409 FAIL", status, rep)
	}
	// A different message in the same second (same Sign) is not a replay.
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, good, groupBody("spammer", "@TGS#1", 8, msgTime)); status != http.StatusOK {
		t.Fatalf("second message in the same second: HTTP %d", status)
	}
	// Past the window, the same callback is stale.
	b.now = b.now.Add(2 * time.Minute)
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, good, groupBody("spammer", "@TGS#1", 9, msgTime)); status != http.StatusUnauthorized {
		t.Fatalf("stale replay: HTTP %d, want 401", status)
	}
	if got := len(b.entries("spammer")); got != 2 {
		t.Fatalf("index holds %d entries, want 2", got)
	}
}

func TestCallbacksSkipWhatCannotBeRecalledAndRejectBadBodies(t *testing.T) {
	b := setup(t, "")
	now := b.now.Unix()
	skipped := []struct{ command, body string }{
		{CommandC2CAfterSend, c2cBody("u", "v", "1_2_3", now, 1)}, // delivery failed
		{CommandGroupAfterSend, strings.Replace(groupBody("u", "@TGS#1", 5, now), `"OnlineOnlyFlag":0`, `"OnlineOnlyFlag":1`, 1)},
		{CommandGroupAfterSend, strings.Replace(groupBody("u", "@TGS#av", 5, now), `"Public"`, `"AVChatRoom"`, 1)},
	}
	for _, s := range skipped {
		if status, rep := b.post(t, testApp, s.command, 0, "", s.body); status != http.StatusOK || rep.ActionStatus != "OK" {
			t.Fatalf("HTTP %d %+v for %s", status, rep, s.body)
		}
	}
	if status, _ := b.post(t, testApp, "Group.CallbackAfterNewMemberJoin", 0, "", `{"GroupId":"@TGS#1"}`); status != http.StatusOK {
		t.Fatalf("another command: HTTP %d, want 200 (ignored)", status)
	}
	bad := []struct{ body, wantInError string }{
		{`{"GroupId":"@TGS#1","From_Account":"u","MsgSeq":"5","MsgTime":1}`, "MsgSeq"},
		{`{"GroupId":"@TGS#1","From_Account":"u","MsgSeq":0,"MsgTime":1}`, "MsgSeq 0"},
		{`{"GroupId":"@TGS#1","MsgSeq":3,"MsgTime":1}`, "From_Account: required"},
		{`{"GroupId":"@TGS#1\u001f","From_Account":"u","MsgSeq":3,"MsgTime":1}`, "GroupId"},
		{`{"GroupId":"@TGS#1","From_Account":"u","MsgSeq":3,"MsgTime":1`, "unexpected end"},
		{`{"CallbackCommand":"C2C.CallbackAfterSendMsg","GroupId":"@TGS#1","From_Account":"u","MsgSeq":3,"MsgTime":1}`, "does not match"},
	}
	for _, c := range bad {
		status, rep := b.post(t, testApp, CommandGroupAfterSend, 0, "", c.body)
		if status != http.StatusBadRequest || !strings.Contains(rep.ErrorInfo, c.wantInError) {
			t.Fatalf("body %s: HTTP %d %q, want 400 naming %q", c.body, status, rep.ErrorInfo, c.wantInError)
		}
	}
	huge := groupBody("u", "@TGS#1", 1, now)
	huge = strings.Replace(huge, `"hi"`, `"`+strings.Repeat("x", MaxCallbackBytes)+`"`, 1)
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, 0, "", huge); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("huge body: HTTP %d, want 413", status)
	}
	resp, err := http.Get(b.srv.URL + "/callback?SdkAppid=" + strconv.Itoa(testApp))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: HTTP %d, want 405", resp.StatusCode)
	}
	if got := b.entries("u"); len(got) != 0 {
		t.Fatalf("indexed %+v, want nothing", got)
	}
}

func TestIndexRetentionCoverageAndPlan(t *testing.T) {
	b := setup(t, "")
	ctx := context.Background()
	day := 24 * time.Hour
	old := Entry{From: "u", Time: b.now.Add(-40 * day), GroupID: "@TGS#1", MsgSeq: 1}
	recent := []Entry{
		{From: "u", Time: b.now.Add(-2 * day), GroupID: "@TGS#1", MsgSeq: 2},
		{From: "u", Time: b.now.Add(-day), GroupID: "@TGS#1", TopicID: "@TGS#1@TOPIC#a", MsgSeq: 1},
		{From: "u", Time: b.now.Add(-day), To: "v", MsgKey: "1_2_3"},
		{From: "u", Time: b.now.Add(-time.Hour), To: "w", MsgKey: "4_5_6"},
	}
	if err := b.idx.Add(ctx, testApp, append([]Entry{old}, recent...)...); err != nil {
		t.Fatal(err)
	}
	if got := b.entries("u"); len(got) != len(recent) {
		t.Fatalf("after trimming: %d entries, want %d (the 40-day-old one is past the 30-day retention)", len(got), len(recent))
	}
	if ttl := b.mr.TTL(b.idx.userKey(testApp, "u", kindGroupUnconf)); ttl != 30*day {
		t.Fatalf("key TTL %v, want the retention", ttl)
	}
	var tally planSink
	c, err := b.idx.Plan(ctx, testApp, "u", b.now.Add(-36*time.Hour), time.Time{}, &tally)
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counts{GroupMessages: 1, C2CMessages: 2, Groups: 1, Peers: 2, Unconfirmed: 3}) || len(tally) != 3 {
		t.Fatalf("plan counts %+v, sink %v", c, tally)
	}

	cov, _ := b.idx.Coverage(ctx, testApp)
	if !cov.Covers(b.now, b.now) || cov.Covers(b.now.Add(-time.Second), b.now) {
		t.Fatalf("coverage since %v: wrong Covers", cov.Since)
	}
	if cov.Covers(time.Time{}, b.now) {
		t.Fatal("a day-old index cannot cover the whole 30-day retention")
	}
	if !cov.Covers(time.Time{}, b.now.Add(31*day)) {
		t.Fatal("an index older than the retention covers the whole retention")
	}
	if err := b.idx.RestartCoverage(ctx, testApp, b.now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if cov, _ := b.idx.Coverage(ctx, testApp); cov.Covers(b.now, b.now.Add(2*time.Hour)) {
		t.Fatal("a restarted coverage still covers the time before the restart")
	}
	if err := b.idx.Add(ctx, testApp, Entry{From: "u", Time: b.now, GroupID: "g", MsgSeq: -1}); err == nil || !strings.Contains(err.Error(), "MsgSeq -1") {
		t.Fatalf("bad entry: %v", err)
	}
}

type planSink []string

func (s *planSink) AddGroup(_ context.Context, t jobs.Target, seqs ...int64) error {
	for _, q := range seqs {
		*s = append(*s, t.String()+"#"+strconv.FormatInt(q, 10))
	}
	return nil
}

func (s *planSink) AddC2C(_ context.Context, t jobs.Target, key string) error {
	*s = append(*s, t.String()+"#"+key)
	return nil
}

// TestCallbackThatCannotBeIndexedRecordsAGap: Tencent does not retry a
// callback, so one that Redis refuses to index (here a key of the wrong
// type) is answered 503 and recorded as a gap, and the index no longer
// claims to cover a range that includes it.
func TestCallbackThatCannotBeIndexedRecordsAGap(t *testing.T) {
	b := setup(t, testToken)
	ctx := context.Background()
	rt := b.now.Unix()
	sign := Sign(testToken, strconv.FormatInt(rt, 10))
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, sign, groupBody("spammer", "@TGS#1", 10, rt-10)); status != http.StatusOK {
		t.Fatalf("first callback: HTTP %d", status)
	}
	b.now = b.now.Add(time.Minute)
	if cov, err := b.idx.Coverage(ctx, testApp); err != nil || !cov.Covers(b.now.Add(-30*time.Second), b.now) {
		t.Fatalf("before the failure: coverage %+v (%v), want it to cover the last 30 s", cov, err)
	}
	if err := b.mr.Set(b.idx.userKey(testApp, "victim", kindGroupUnconf), "not a sorted set"); err != nil {
		t.Fatal(err)
	}
	rt = b.now.Unix()
	sign = Sign(testToken, strconv.FormatInt(rt, 10))
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, sign, groupBody("victim", "@TGS#1", 11, rt)); status != http.StatusServiceUnavailable {
		t.Fatalf("callback Redis refused: HTTP %d, want 503", status)
	}
	if got := testutil.ToFloat64(b.cb.Counter.WithLabelValues(CommandGroupAfterSend, ResultError)); got != 1 {
		t.Fatalf("error callbacks = %v, want 1", got)
	}
	cov, err := b.idx.Coverage(ctx, testApp)
	if err != nil {
		t.Fatal(err)
	}
	if len(cov.Gaps) != 1 || cov.Gaps[0].Reason != "a callback could not be indexed" || !cov.Gaps[0].To.Equal(b.now) {
		t.Fatalf("gaps %+v, want the failed callback's", cov.Gaps)
	}
	if why := cov.Why(cov.Since.Add(time.Second), b.now); !strings.Contains(why, "gap") {
		t.Fatalf("Why = %q, want the gap", why)
	}
}

// TestCallbackIndexedWhenTencentHangsUp: Tencent waits for a callback's
// answer only so long; with Redis a few ms away and busy it hangs up while
// the receiver writes. The message was sent all the same and Tencent never
// sends its callback again: it used to be neither indexed (the writes ran
// on the request's context, cancelled by the hang-up) nor recorded as a gap,
// so a purge by index missed it while the index claimed to cover its time.
// The writes now outlive the request.
func TestCallbackIndexedWhenTencentHangsUp(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	idx := New(redistest.Start(t).Client(), "", 24*time.Hour)
	idx.now = func() time.Time { return now }
	cb := &Callbacks{Index: idx, SDKAppID: testApp, Token: testToken, Now: func() time.Time { return now }}
	rt := strconv.FormatInt(now.Unix(), 10)
	q := url.Values{"SdkAppid": {strconv.Itoa(testApp)}, "CallbackCommand": {CommandGroupAfterSend}, "RequestTime": {rt}, "Sign": {Sign(testToken, rt)}}

	ctx, hangUp := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/callback?"+q.Encode(), strings.NewReader(groupBody("spammer", "@TGS#1", 7, now.Unix()-1)))
	hangUp() // Tencent gave up waiting before the receiver reached Redis
	cb.ServeHTTP(httptest.NewRecorder(), req)

	var got []Entry
	if err := idx.Lookup(context.Background(), testApp, "spammer", time.Time{}, time.Time{}, func(e Entry) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cov, err := idx.Coverage(context.Background(), testApp)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].GroupID != "@TGS#1" || got[0].MsgSeq != 7 {
		t.Fatalf("entries of spammer %+v (coverage since %v, gaps %+v), want seq 7 of @TGS#1", got, cov.Since, cov.Gaps)
	}
}

// TestCallbackLostWhileRedisDownIsAGap: Redis restarted (it keeps its data)
// within two heartbeats. A callback that came meanwhile could be neither
// indexed nor recorded as a gap, and the heartbeat saw no silence: the index
// claimed to cover the lost message's time, and a purge by index missed it.
// The gap is kept and recorded once Redis answers again: by the next
// callback indexed (here) or serve's next heartbeat (Callbacks.RecordLost).
func TestCallbackLostWhileRedisDownIsAGap(t *testing.T) {
	srv := redistest.Start(t, redistest.WithAOF())
	b := setup(t, testToken)
	b.idx.rdb = srv.Client()
	ctx := context.Background()
	const beat = 10 * time.Second
	post := func(seq int64) int {
		rt := b.now.Unix()
		status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, Sign(testToken, strconv.FormatInt(rt, 10)), groupBody("spammer", "@TGS#1", seq, rt))
		return status
	}
	if status := post(1); status != http.StatusOK {
		t.Fatalf("first callback: HTTP %d", status)
	}
	if _, _, err := b.cb.Beat(ctx, beat); err != nil {
		t.Fatal(err)
	}
	start := b.now

	srv.Kill()
	b.now = b.now.Add(2 * time.Second)
	lost := b.now
	if status := post(2); status != http.StatusServiceUnavailable {
		t.Fatalf("callback while Redis is down: HTTP %d, want 503", status)
	}
	srv.Restart()
	b.now = b.now.Add(3 * time.Second) // the next beat: within two of the last
	if _, gap, err := b.cb.Beat(ctx, beat); err != nil || gap != nil {
		t.Fatalf("heartbeat after the restart: gap %+v (%v), want none: the silence was short", gap, err)
	}
	if status := post(3); status != http.StatusOK {
		t.Fatalf("callback after the restart: HTTP %d", status)
	}
	cov, err := b.idx.Coverage(ctx, testApp)
	if err != nil {
		t.Fatal(err)
	}
	if cov.Covers(start, b.now) {
		t.Fatalf("the index claims to cover %s..%s (gaps %+v); seq 2 of @TGS#1, sent at %s, is not in it", start, b.now, cov.Gaps, lost)
	}
}

// TestCallbackLostAheadOfOurClockIsInItsGap: a callback whose MsgTime is a
// few seconds ahead of the receiver's clock (Tencent's clock and ours
// differ) is lost while Redis is down. Its gap must reach the message's
// time: a purge by index from just after the receiver's "now" would
// otherwise be told the index covers a message it does not hold.
func TestCallbackLostAheadOfOurClockIsInItsGap(t *testing.T) {
	b := setup(t, testToken)
	ctx := context.Background()
	post := func(seq, msgTime int64) int {
		rt := b.now.Unix()
		status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, Sign(testToken, strconv.FormatInt(rt, 10)), groupBody("spammer", "@TGS#1", seq, msgTime))
		return status
	}
	if status := post(1, b.now.Unix()); status != http.StatusOK {
		t.Fatalf("first callback: HTTP %d", status)
	}
	b.now = b.now.Add(time.Second)
	sent := b.now.Add(5 * time.Second)
	b.mr.SetError("LOADING Redis is loading the dataset in memory")
	if status := post(2, sent.Unix()); status != http.StatusServiceUnavailable {
		t.Fatalf("callback while Redis is down: HTTP %d, want 503", status)
	}
	b.mr.SetError("")
	if _, err := b.cb.RecordLost(ctx); err != nil {
		t.Fatal(err)
	}
	cov, err := b.idx.Coverage(ctx, testApp)
	if err != nil {
		t.Fatal(err)
	}
	if from := b.now.Add(time.Second); cov.Covers(from, sent.Add(time.Minute)) {
		t.Fatalf("the index claims to cover %s.. (gaps %+v); seq 2 of @TGS#1, sent at %s, is not in it", from, cov.Gaps, sent)
	}
}

// TestCallbackRetriedAfterATimeoutIsNotAReplay: Redis a few seconds away
// for a moment (the latency proxy holds the receiver's first write past
// go-redis's read timeout, then the path is quick again). go-redis sends
// the replay check (SET NX of the callback's digest) again on a new
// connection, where it finds the key its own first try set: the callback
// was answered 409 "already received", neither indexed nor recorded as a
// gap, and a purge by index missed its message while the index claimed to
// cover its time.
func TestCallbackRetriedAfterATimeoutIsNotAReplay(t *testing.T) {
	srv := redistest.Start(t)
	proxy, err := redisproxy.Start(srv.Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr()}) // go-redis's defaults: read timeout 3 s, 3 retries
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := t.Context()
	idx := New(rdb, "", 24*time.Hour)
	cb := &Callbacks{Index: idx, SDKAppID: testApp, Token: testToken}
	hs := httptest.NewServer(cb)
	t.Cleanup(hs.Close)
	b := &bundle{idx: idx, cb: cb, srv: hs}
	post := func(seq int64) int {
		rt := time.Now().Unix()
		status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, Sign(testToken, strconv.FormatInt(rt, 10)), groupBody("spammer", "@TGS#1", seq, rt))
		return status
	}
	if status := post(1); status != http.StatusOK {
		t.Fatalf("first callback: HTTP %d", status)
	}
	since := time.Now()

	proxy.SetDelay(4 * time.Second) // a round trip of 8 s: the first try times out
	done := make(chan int, 1)
	go func() { done <- post(2) }()
	time.Sleep(5500 * time.Millisecond) // the retry is on its way, slow
	proxy.SetDelay(0)                   // its answer comes back in time
	status := <-done

	var indexed bool
	if err := idx.Lookup(ctx, testApp, "spammer", time.Time{}, time.Time{}, func(e Entry) error {
		indexed = indexed || e.MsgSeq == 2
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cov, err := idx.Coverage(ctx, testApp)
	if err != nil {
		t.Fatal(err)
	}
	if !indexed && cov.Covers(since, time.Now()) {
		t.Fatalf("callback of seq 2: HTTP %d, not indexed, yet the index claims to cover its time (gaps %+v)", status, cov.Gaps)
	}
	t.Logf("callback of seq 2: HTTP %d, indexed %v, gaps %+v", status, indexed, cov.Gaps)
}

// holdSeen is a go-redis hook that holds the replay check of a callback
// (the seen script) until release is closed, as a Redis too slow for
// serve's shutdown would.
type holdSeen struct {
	held    chan struct{}
	release chan struct{}
}

func (h holdSeen) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h holdSeen) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h holdSeen) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.Contains(fmt.Sprint(cmd.Args()...), ":seen:") {
			h.held <- struct{}{}
			<-h.release
			return errors.New("redis: the process ended") // as if it had died mid-call
		}
		return next(ctx, cmd)
	}
}

// TestReceiverLeavesOnlyWhenNoCallbackIsInFlight: serve stops (SIGTERM)
// while a callback is still being indexed (Redis slow, the shutdown's
// 10 s passed). It used to leave the receivers' record all the same and
// exit: the callback, never indexed, left no gap, and the other replica's
// beats hid the rest. Now it stays while a callback is in flight, and its
// silence is recorded as a gap by the next beat after its deadline.
func TestReceiverLeavesOnlyWhenNoCallbackIsInFlight(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	const beat = time.Second
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	hold := holdSeen{held: make(chan struct{}), release: make(chan struct{})}
	rdb.AddHook(hold)
	stopping := &Callbacks{Index: New(rdb, "", 24*time.Hour), SDKAppID: testApp, Token: testToken, Replica: "a"}
	other := &Callbacks{Index: New(srv.Client(), "", 24*time.Hour), SDKAppID: testApp, Token: testToken, Replica: "b"}
	for _, cb := range []*Callbacks{stopping, other} {
		if _, _, err := cb.Beat(ctx, beat); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Index.Add(ctx, testApp, Entry{From: "spammer", Time: time.Now(), GroupID: "@TGS#1", MsgSeq: 1}); err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	hs := httptest.NewServer(stopping)
	t.Cleanup(hs.Close)
	var once sync.Once
	release := func() { once.Do(func() { close(hold.release) }) }
	t.Cleanup(release) // before the server closes: its handler is held
	b := &bundle{srv: hs}
	go func() {
		rt := time.Now().Unix()
		b.post(t, testApp, CommandGroupAfterSend, rt, Sign(testToken, strconv.FormatInt(rt, 10)), groupBody("spammer", "@TGS#1", 2, rt))
	}()
	<-hold.held
	lctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := stopping.Leave(lctx)
	cancel()
	t.Logf("leave with a callback in flight: %v", err)
	// The process ends: the callback is neither indexed nor its gap kept.

	// The other replica beats on time, past the stopped one's deadline.
	for end := time.Now().Add(2*beat + 1100*time.Millisecond); time.Now().Before(end); time.Sleep(beat / 2) {
		if _, _, err := other.Beat(ctx, beat); err != nil {
			t.Fatal(err)
		}
	}
	cov, err := other.Index.Coverage(ctx, testApp)
	if err != nil {
		t.Fatal(err)
	}
	if cov.Covers(since, time.Now()) {
		t.Fatalf("a callback was in flight when the receiver left and exited, yet the index claims to cover its time (gaps %+v)", cov.Gaps)
	}
}

// TestRedisThatLostWritesIsAGap: Redis comes back with an older state (a
// failover to a replica behind, a restart from an older snapshot: here a
// real redis-server saved, written to, killed and started again from its
// save). The index entry written since is gone, while the coverage
// (since, the heartbeats) came back intact: a purge by index missed the
// message and was told the index covered it. The receiver's next beat
// finds its record older than its last beat and records a gap.
func TestRedisThatLostWritesIsAGap(t *testing.T) {
	srv := redistest.Start(t) // no AOF: a restart loads the last save
	ctx := t.Context()
	const beat = 10 * time.Second
	rdb := srv.Client()
	cb := &Callbacks{Index: New(rdb, "", 24*time.Hour), SDKAppID: testApp, Replica: "r"}
	if err := cb.Index.Add(ctx, testApp, Entry{From: "spammer", Time: time.Now(), GroupID: "@TGS#1", MsgSeq: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cb.Beat(ctx, beat); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	time.Sleep(1100 * time.Millisecond) // the next beat in another second of Redis's clock
	if _, _, err := cb.Beat(ctx, beat); err != nil {
		t.Fatal(err)
	}
	if err := cb.Index.Add(ctx, testApp, Entry{From: "spammer", Time: time.Now(), GroupID: "@TGS#1", MsgSeq: 2}); err != nil {
		t.Fatal(err)
	}
	srv.Restart() // back as it was at the save: seq 2 is gone

	_, silence, err := cb.Beat(ctx, beat)
	if err != nil {
		t.Fatal(err)
	}
	cov, err := cb.Index.Coverage(ctx, testApp)
	if err != nil {
		t.Fatal(err)
	}
	if cov.Covers(since, time.Now()) {
		t.Fatalf("Redis lost seq 2 of @TGS#1, yet the index claims to cover its time (beat's gap %+v, gaps %+v)", silence, cov.Gaps)
	}
}

// TestSignedStaleCallbackIsAGap: the receiver's clock is five minutes
// off (NTP stopped on its host), so every signed callback is refused as
// stale. Nothing recorded that: the heartbeats go by Redis's clock and
// went on, and the index claimed to cover the messages it refused. A
// callback refused as stale whose Sign is ours now records a gap over its
// time (an old signed URL replayed can only make a purge read the history).
func TestSignedStaleCallbackIsAGap(t *testing.T) {
	b := setup(t, testToken)
	ctx := t.Context()
	rt := b.now.Unix()
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, Sign(testToken, strconv.FormatInt(rt, 10)), groupBody("spammer", "@TGS#1", 1, rt)); status != http.StatusOK {
		t.Fatalf("first callback: HTTP %d", status)
	}
	since := b.now.Add(time.Second)
	sent := b.now.Add(time.Minute)
	b.now = sent.Add(5 * time.Minute) // the receiver's clock runs five minutes ahead
	rt = sent.Unix()
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, Sign(testToken, strconv.FormatInt(rt, 10)), groupBody("spammer", "@TGS#1", 2, rt)); status != http.StatusUnauthorized {
		t.Fatalf("callback five minutes off: HTTP %d, want 401", status)
	}
	// Unsigned (or signed with another token) and stale: refused, no gap.
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, Sign("another-token", strconv.FormatInt(rt, 10)), groupBody("spammer", "@TGS#1", 3, rt)); status != http.StatusUnauthorized {
		t.Fatalf("badly signed stale callback: HTTP %d, want 401", status)
	}
	cov, err := b.idx.Coverage(ctx, testApp)
	if err != nil {
		t.Fatal(err)
	}
	if cov.Covers(since, sent.Add(time.Second)) {
		t.Fatalf("seq 2 of @TGS#1, sent at %s, was refused, yet the index claims to cover it (gaps %+v)", sent, cov.Gaps)
	}
	if len(cov.Gaps) != 1 {
		t.Fatalf("gaps %+v, want the signed callback's only", cov.Gaps)
	}
}
