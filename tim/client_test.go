package tim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"
)

const (
	testAppID = 1400000001
	testAdmin = "administrator"
	testKey   = "s3cr3t-k3y-never-printed-0123456789abcdef"
)

// testConfig returns a valid Config for base.
func testConfig(base string) Config {
	return Config{SDKAppID: testAppID, Admin: testAdmin, SecretKey: testKey, BaseURL: base}
}

// newTestClient returns a client for base, after applying mods to its Config.
func newTestClient(t *testing.T, base string, mods ...func(*Config)) *Client {
	t.Helper()
	cfg := testConfig(base)
	for _, m := range mods {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// seen is one request a scripted server received.
type seen struct {
	Path  string
	Query map[string]string
	Body  string
}

// scripted serves answers in turn (the last one repeats) and records requests.
type scripted struct {
	t       *testing.T
	mu      sync.Mutex
	answers []func(w http.ResponseWriter)
	reqs    []seen
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	q := map[string]string{}
	for k := range r.URL.Query() {
		q[k] = r.URL.Query().Get(k)
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, seen{Path: r.URL.Path, Query: q, Body: string(body)})
	i := min(len(s.reqs), len(s.answers)) - 1
	answer := s.answers[i]
	s.mu.Unlock()
	if r.Method != http.MethodPost {
		s.t.Errorf("method %s, want POST", r.Method)
	}
	answer(w)
}

func (s *scripted) requests() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.reqs...)
}

// body answers status with the given body.
func body(status int, b string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, b)
	}
}

func okBody(extra string) func(http.ResponseWriter) {
	if extra != "" {
		extra = "," + extra
	}
	return body(200, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0`+extra+`}`)
}

func failBody(code int) func(http.ResponseWriter) {
	return body(200, fmt.Sprintf(`{"ActionStatus":"FAIL","ErrorInfo":"scripted %d","ErrorCode":%d}`, code, code))
}

func startScripted(t *testing.T, answers ...func(http.ResponseWriter)) (*scripted, *httptest.Server) {
	s := &scripted{t: t, answers: answers}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, field string
		mod         func(*Config)
	}{
		{"ok", "", func(*Config) {}},
		{"no app", "SDKAppID", func(c *Config) { c.SDKAppID = 0 }},
		{"app too big", "SDKAppID", func(c *Config) { c.SDKAppID = 1 << 40 }},
		{"no admin", "Admin", func(c *Config) { c.Admin = " " }},
		{"no key", "SecretKey", func(c *Config) { c.SecretKey = "" }},
		{"no base", "BaseURL", func(c *Config) { c.BaseURL = "" }},
		{"bad base", "BaseURL", func(c *Config) { c.BaseURL = "atlantis" }},
		{"neg timeout", "Timeout", func(c *Config) { c.Timeout = -time.Second }},
		{"short ttl", "SigTTL", func(c *Config) { c.SigTTL = time.Second }},
		{"region", "", func(c *Config) { c.BaseURL = "singapore"; c.SigTTL = time.Hour }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("http://127.0.0.1:1")
			tt.mod(&cfg)
			err := cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "Config."+tt.field) {
				t.Fatalf("Validate() = %v, want an error naming Config.%s", err, tt.field)
			}
			if _, err := New(cfg); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

func TestWireFormat(t *testing.T) {
	t.Parallel()
	s, srv := startScripted(t, okBody(`"RecallRetList":[{"MsgSeq":100,"RetCode":10030},{"MsgSeq":101,"RetCode":0}]`))
	c := newTestClient(t, srv.URL)
	resp, err := c.GroupMsgRecall(t.Context(), GroupMsgRecallRequest{
		GroupID: "@TGS#2J4SZEAEL", MsgSeqList: []MsgSeqItem{{100}, {101}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []ItemResult{{MsgSeq: 100, RetCode: 10030}, {MsgSeq: 101, RetCode: 0}}
	if diff := cmp.Diff(want, resp.RecallRetList); diff != "" {
		t.Errorf("RecallRetList (-want +got):\n%s", diff)
	}
	if _, err := c.AccountImport(t.Context(), AccountImportRequest{UserID: "u1"}); err != nil {
		t.Fatal(err)
	}
	reqs := s.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	r := reqs[0]
	if r.Path != "/v4/group_open_http_svc/group_msg_recall" {
		t.Errorf("path %q", r.Path)
	}
	if diff := cmp.Diff(`{"GroupId":"@TGS#2J4SZEAEL","MsgSeqList":[{"MsgSeq":100},{"MsgSeq":101}]}`, r.Body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	for k, want := range map[string]string{"sdkappid": strconv.Itoa(testAppID), "identifier": testAdmin, "contenttype": "json"} {
		if r.Query[k] != want {
			t.Errorf("query %s = %q, want %q", k, r.Query[k], want)
		}
	}
	if err := tencentyun.VerifyUserSig(testAppID, testKey, testAdmin, r.Query["usersig"], time.Now()); err != nil {
		t.Errorf("usersig does not verify: %v", err)
	}
	r1, err1 := strconv.ParseUint(r.Query["random"], 10, 32)
	r2, err2 := strconv.ParseUint(reqs[1].Query["random"], 10, 32)
	if err1 != nil || err2 != nil {
		t.Errorf("random is not a uint32: %q, %q", r.Query["random"], reqs[1].Query["random"])
	}
	if r1 == r2 {
		t.Errorf("random repeated: %d", r1) // 1 in 2^32
	}
	if reqs[1].Query["usersig"] != r.Query["usersig"] {
		t.Error("UserSig was not cached between calls")
	}
}

func TestEmptyRequestSendsBraces(t *testing.T) {
	t.Parallel()
	s, srv := startScripted(t, okBody(""))
	c := newTestClient(t, srv.URL)
	var resp Response
	if err := c.call(t.Context(), AccountImport, nil, &resp, callOpts{}); err != nil {
		t.Fatal(err)
	}
	if got := s.requests()[0].Body; got != "{}" {
		t.Errorf("body %q, want {}", got)
	}
}

func TestBadAnswers(t *testing.T) {
	t.Parallel()
	huge := func(w http.ResponseWriter) {
		w.WriteHeader(200)
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"`)
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 80 { // 5 MiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, `"}`)
	}
	tests := []struct {
		name     string
		answer   func(http.ResponseWriter)
		sentinel error
		code     int
		status   int
		class    Class
	}{
		{"not json", body(200, `<html>oops</html>`), ErrMalformedResponse, 0, 200, ClassRetry},
		{"truncated", body(200, `{"ActionStatus":"OK","ErrorCode":0,"RecallRetList":[{"MsgSeq":1`), ErrMalformedResponse, 0, 200, ClassRetry},
		{"wrong type", okBody(`"RecallRetList":"nope"`), ErrMalformedResponse, 0, 200, ClassRetry},
		{"wrong item type", okBody(`"RecallRetList":[{"MsgSeq":"1","RetCode":0}]`), ErrMalformedResponse, 0, 200, ClassRetry},
		{"null", body(200, `null`), ErrMalformedResponse, 0, 200, ClassRetry},
		{"empty object", body(200, `{}`), ErrMalformedResponse, 0, 200, ClassRetry},
		{"empty body", body(200, ``), ErrMalformedResponse, 0, 200, ClassRetry},
		{"FAIL without code", body(200, `{"ActionStatus":"FAIL","ErrorCode":0}`), ErrMalformedResponse, 0, 200, ClassRetry},
		{"error code with mistyped payload", body(200, `{"ActionStatus":"FAIL","ErrorCode":10010,"ErrorInfo":"gone","RecallRetList":7}`), nil, 10010, 200, ClassPermanent},
		{"huge", huge, ErrBodyTooLarge, 0, 200, ClassPermanent},
		{"502", body(502, `<html>bad gateway</html>`), ErrHTTPStatus, 0, 502, ClassRetry},
		{"500 json", body(500, `{"ActionStatus":"FAIL","ErrorCode":0}`), ErrHTTPStatus, 0, 500, ClassRetry},
		{"404", body(404, `not found`), ErrHTTPStatus, 0, 404, ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, srv := startScripted(t, tt.answer)
			c := newTestClient(t, srv.URL)
			resp, err := c.GroupMsgRecall(t.Context(), GroupMsgRecallRequest{GroupID: "g", MsgSeqList: []MsgSeqItem{{1}}})
			if err == nil {
				t.Fatalf("no error; resp = %+v", resp)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not a *Error: %v", err, err)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("error %v, want one wrapping %v", err, tt.sentinel)
			}
			if e.API != "group_msg_recall" || e.Code != tt.code || e.HTTPStatus != tt.status {
				t.Errorf("Error{API %q, Code %d, HTTPStatus %d}, want {group_msg_recall, %d, %d}", e.API, e.Code, e.HTTPStatus, tt.code, tt.status)
			}
			if got := ClassOf(err); got != tt.class {
				t.Errorf("ClassOf = %v, want %v", got, tt.class)
			}
		})
	}
}

func TestValidationSendsNothing(t *testing.T) {
	t.Parallel()
	s, srv := startScripted(t, okBody(""))
	c := newTestClient(t, srv.URL)
	ctx := t.Context()
	seqs := func(n int) []MsgSeqItem {
		l := make([]MsgSeqItem, n)
		for i := range l {
			l[i] = MsgSeqItem{int64(i + 1)}
		}
		return l
	}
	calls := map[string]func() error{
		"recall 0 seqs": func() error { _, err := c.GroupMsgRecall(ctx, GroupMsgRecallRequest{GroupID: "g"}); return err },
		"recall 11 seqs": func() error {
			_, err := c.GroupMsgRecall(ctx, GroupMsgRecallRequest{GroupID: "g", MsgSeqList: seqs(11)})
			return err
		},
		"recall no group": func() error {
			_, err := c.GroupMsgRecall(ctx, GroupMsgRecallRequest{MsgSeqList: seqs(1)})
			return err
		},
		"recall dup": func() error {
			_, err := c.GroupMsgRecall(ctx, GroupMsgRecallRequest{GroupID: "g", MsgSeqList: []MsgSeqItem{{3}, {3}}})
			return err
		},
		"recall seq 0": func() error {
			_, err := c.GroupMsgRecall(ctx, GroupMsgRecallRequest{GroupID: "g", MsgSeqList: []MsgSeqItem{{0}}})
			return err
		},
		"get simple 21": func() error {
			_, err := c.GroupMsgGetSimple(ctx, GroupMsgGetSimpleRequest{GroupID: "g", ReqMsgNumber: 21})
			return err
		},
		"group info 51": func() error {
			_, err := c.GetGroupInfo(ctx, GetGroupInfoRequest{GroupIDList: make([]string, 51)})
			return err
		},
		"withdraw no key": func() error {
			_, err := c.AdminMsgWithdraw(ctx, AdminMsgWithdrawRequest{FromAccount: "a", ToAccount: "b"})
			return err
		},
		"roam no cnt": func() error {
			_, err := c.AdminGetRoamMsg(ctx, AdminGetRoamMsgRequest{OperatorAccount: "a", PeerAccount: "b"})
			return err
		},
		"import 101": func() error {
			_, err := c.MultiAccountImport(ctx, MultiAccountImportRequest{Accounts: make([]string, 101)})
			return err
		},
		"send empty": func() error { _, err := c.SendMsg(ctx, SendMsgRequest{ToAccount: "b"}); return err },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, ErrInvalidRequest) || ClassOf(err) != ClassPermanent {
			t.Errorf("%s: error %v, want ErrInvalidRequest (permanent)", name, err)
		}
	}
	if n := len(s.requests()); n != 0 {
		t.Errorf("%d requests sent for invalid input", n)
	}
}

// recordingGate records Wait and Throttled calls and can refuse.
type recordingGate struct {
	mu        sync.Mutex
	waits     []string
	throttled []string
	refuse    error
}

func (g *recordingGate) Wait(_ context.Context, api string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waits = append(g.waits, api)
	return g.refuse
}

func (g *recordingGate) Throttled(_ context.Context, api string, code int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.throttled = append(g.throttled, fmt.Sprintf("%s:%d", api, code))
}

func (g *recordingGate) counts() (waits, throttled []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.waits...), append([]string(nil), g.throttled...)
}

func TestGateAndRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		answers       []func(http.ResponseWriter)
		wantCode      int
		wantRequests  int
		wantThrottled []string
		wantSigGens   int64
	}{
		{"ok", []func(http.ResponseWriter){okBody("")}, 0, 1, nil, 1},
		{"throttled: no retry", []func(http.ResponseWriter){failBody(60007), okBody("")}, 60007, 1, []string{"admin_msgwithdraw:60007"}, 1},
		{"retryable: no retry", []func(http.ResponseWriter){failBody(91000), okBody("")}, 91000, 1, nil, 1},
		{"auth: renew and retry once", []func(http.ResponseWriter){failBody(70001), okBody("")}, 0, 2, nil, 2},
		{"auth twice: give up", []func(http.ResponseWriter){failBody(70003), failBody(70003), okBody("")}, 70003, 2, nil, 2},
		{"auth then throttled", []func(http.ResponseWriter){failBody(60004), failBody(60018)}, 60018, 2, []string{"admin_msgwithdraw:60018"}, 2},
	}
	// Paced: the caller waited on its limiter for the first try; the
	// client's own second try after an auth code waits on the Gate.
	for _, paced := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/paced=%v", tt.name, paced), func(t *testing.T) {
				t.Parallel()
				s, srv := startScripted(t, tt.answers...)
				g := &recordingGate{}
				c := newTestClient(t, srv.URL, func(c *Config) { c.Gate = g })
				if paced {
					c = c.Paced()
				}
				wantWaits := tt.wantRequests
				if paced {
					wantWaits--
				}
				_, err := c.AdminMsgWithdraw(t.Context(), AdminMsgWithdrawRequest{FromAccount: "a", ToAccount: "b", MsgKey: "1_2_3"})
				if got := CodeOf(err); got != tt.wantCode {
					t.Errorf("code %d (err %v), want %d", got, err, tt.wantCode)
				}
				if (err == nil) != (tt.wantCode == 0) {
					t.Errorf("err = %v", err)
				}
				reqs := s.requests()
				waits, throttled := g.counts()
				if len(reqs) != tt.wantRequests || len(waits) != wantWaits {
					t.Errorf("%d requests, %d gate waits, want %d and %d", len(reqs), len(waits), tt.wantRequests, wantWaits)
				}
				for _, w := range waits {
					if w != "admin_msgwithdraw" {
						t.Errorf("gate waited for %q", w)
					}
				}
				if diff := cmp.Diff(tt.wantThrottled, throttled); diff != "" {
					t.Errorf("Throttled calls (-want +got):\n%s", diff)
				}
				if got := c.sigs.gen.Load(); got != tt.wantSigGens {
					t.Errorf("%d UserSig generations, want %d", got, tt.wantSigGens)
				}
			})
		}
	}
}

func TestGateRefusal(t *testing.T) {
	t.Parallel()
	s, srv := startScripted(t, okBody(""))
	refuse := fmt.Errorf("limiter: wait 9s over budget: %w", ErrThrottled)
	g := &recordingGate{refuse: refuse}
	c := newTestClient(t, srv.URL, func(c *Config) { c.Gate = g })
	_, err := c.AccountImport(t.Context(), AccountImportRequest{UserID: "u"})
	if !errors.Is(err, refuse) || ClassOf(err) != ClassThrottled {
		t.Fatalf("error %v (class %v), want the gate's error, throttled", err, ClassOf(err))
	}
	if n := len(s.requests()); n != 0 {
		t.Errorf("%d requests sent after the gate refused", n)
	}
}

// gatedWithdraw returns a client of url whose calls pass g, and a call of
// admin_msgwithdraw made with it.
func gatedWithdraw(t *testing.T, url string, g Gate) (*Client, func(context.Context) error) {
	c := newTestClient(t, url, func(c *Config) { c.Gate = g })
	return c, func(ctx context.Context) error {
		_, err := c.AdminMsgWithdraw(ctx, AdminMsgWithdrawRequest{FromAccount: "a", ToAccount: "b", MsgKey: "1_2_3"})
		return err
	}
}

// TestAwaitPermitsOneCall: Await waits on the Gate once, and the next call
// of that API made with its context goes without waiting again; any other
// call waits as usual. A refusal is the error the call would have had.
func TestAwaitPermitsOneCall(t *testing.T) {
	t.Parallel()
	s, srv := startScripted(t, okBody(""), okBody(""), okBody(""), okBody(""))
	g := &recordingGate{}
	c, withdraw := gatedWithdraw(t, srv.URL, g)
	ctx, err := c.Await(t.Context(), AdminMsgWithdraw)
	if err != nil {
		t.Fatal(err)
	}
	if waits, _ := g.counts(); len(waits) != 1 || waits[0] != "admin_msgwithdraw" {
		t.Fatalf("gate waits after Await: %v", waits)
	}
	for range 2 { // the permit, then a call that waits again
		if err := withdraw(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.AccountImport(ctx, AccountImportRequest{UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	waits, _ := g.counts()
	if want := []string{"admin_msgwithdraw", "admin_msgwithdraw", "account_import"}; !slices.Equal(waits, want) {
		t.Errorf("gate waits %v, want %v: one for Await, one for the second call, one for another API", waits, want)
	}
	if n := len(s.requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}

	// A permit does not expire: used late, it still goes without a wait
	// (a Gate that can be late reserves, below).
	late, err := c.Await(t.Context(), AdminMsgWithdraw)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := withdraw(late); err != nil {
		t.Fatal(err)
	}
	waits, _ = g.counts()
	if want := []string{"admin_msgwithdraw", "admin_msgwithdraw", "account_import", "admin_msgwithdraw"}; !slices.Equal(waits, want) {
		t.Errorf("gate waits %v, want %v: a permit used late waits no more", waits, want)
	}

	refuse := fmt.Errorf("limiter down: %w", ErrThrottled)
	c2 := newTestClient(t, srv.URL, func(c *Config) { c.Gate = &recordingGate{refuse: refuse} })
	if _, err := c2.Await(t.Context(), AdminMsgWithdraw); !errors.Is(err, refuse) || !errors.Is(err, ErrGate) || ClassOf(err) != ClassThrottled {
		t.Fatalf("Await refused: %v (class %v), want the gate's error, ErrGate, throttled", err, ClassOf(err))
	}
}

// reservingGate is a recordingGate that can reserve: it records Reserve
// calls and the waits of the slots it hands out, and can refuse either.
type reservingGate struct {
	recordingGate
	reserves, slotWaits []string
	waitSlots           []string
	slots               []*reportingSlot // in the order waited
	refuseSlot          error
}

func (g *reservingGate) Reserve(_ context.Context, api string) (Slot, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reserves = append(g.reserves, api)
	if g.refuse != nil {
		return nil, g.refuse
	}
	return &reportingSlot{g: g, api: api}, nil
}

// WaitSlot makes reservingGate a SlotWaiter: it records the call and hands
// back a slot already waited for.
func (g *reservingGate) WaitSlot(_ context.Context, api string) (Slot, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waitSlots = append(g.waitSlots, api)
	s := &reportingSlot{g: g, api: api}
	g.slots = append(g.slots, s)
	return s, g.refuse
}

// reportingSlot records its wait in its gate, and when its call was
// written.
type reportingSlot struct {
	g    *reservingGate
	api  string
	sent []time.Time
}

func (s *reportingSlot) Wait(context.Context) error {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	s.g.slotWaits = append(s.g.slotWaits, s.api)
	s.g.slots = append(s.g.slots, s)
	return s.g.refuseSlot
}

func (s *reportingSlot) Sent(at time.Time) {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	s.sent = append(s.sent, at)
}

// TestAwaitReserves: with a Gate that reserves, Await reserves the slot and
// the call made with its context waits out that slot (Slot.Wait) instead of
// waiting on the Gate: one limiter wait per call. A second call waits for
// a slot of its own (SlotWaiter.WaitSlot). Each slot is told once when its
// call was written (SentReporter), between the call's start and the
// server's answer. A refused reservation or slot is ErrGate, and nothing
// is sent.
func TestAwaitReserves(t *testing.T) {
	t.Parallel()
	s, srv := startScripted(t, okBody(""), okBody(""), okBody(""))
	g := &reservingGate{}
	c, withdraw := gatedWithdraw(t, srv.URL, g)
	ctx, err := c.Await(t.Context(), AdminMsgWithdraw)
	if err != nil {
		t.Fatal(err)
	}
	var spans [][2]time.Time
	for range 2 {
		before := time.Now()
		if err := withdraw(ctx); err != nil {
			t.Fatal(err)
		}
		spans = append(spans, [2]time.Time{before, time.Now()})
	}
	g.mu.Lock()
	reserves, slotWaits, waitSlots, waits, slots := slices.Clone(g.reserves), slices.Clone(g.slotWaits), slices.Clone(g.waitSlots), slices.Clone(g.waits), slices.Clone(g.slots)
	g.mu.Unlock()
	one := []string{"admin_msgwithdraw"}
	if !slices.Equal(reserves, one) || !slices.Equal(slotWaits, one) || !slices.Equal(waitSlots, one) || len(waits) != 0 || len(slots) != 2 {
		t.Errorf("reserves %v, slot waits %v, WaitSlot %v, gate waits %v; want Await's slot waited out, the second call's from WaitSlot, no Gate.Wait", reserves, slotWaits, waitSlots, waits)
	}
	for i, sl := range slots {
		g.mu.Lock()
		sent := slices.Clone(sl.sent)
		g.mu.Unlock()
		if len(sent) != 1 || sent[0].Before(spans[i][0]) || sent[0].After(spans[i][1]) {
			t.Errorf("slot %d told it was sent at %v, want once within its call (%v – %v)", i, sent, spans[i][0], spans[i][1])
		}
	}
	if n := len(s.requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}

	refuse := fmt.Errorf("limiter down: %w", ErrThrottled)
	g.refuseSlot = refuse
	ctx, err = c.Await(t.Context(), AdminMsgWithdraw)
	if err != nil {
		t.Fatal(err)
	}
	if err := withdraw(ctx); !errors.Is(err, refuse) || !errors.Is(err, ErrGate) {
		t.Fatalf("call on a refused slot: %v, want the gate's error and ErrGate", err)
	}
	if n := len(s.requests()); n != 2 {
		t.Errorf("%d requests after a refused slot, want still 2", n)
	}
	g.refuse = refuse
	if _, err := c.Await(t.Context(), AdminMsgWithdraw); !errors.Is(err, refuse) || !errors.Is(err, ErrGate) || ClassOf(err) != ClassThrottled {
		t.Fatalf("Await refused: %v (class %v), want the gate's error, ErrGate, throttled", err, ClassOf(err))
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c := newTestClient(t, srv.URL, func(c *Config) { c.Timeout = 50 * time.Millisecond })
	_, err := c.GroupMsgRecall(t.Context(), GroupMsgRecallRequest{GroupID: "g", MsgSeqList: []MsgSeqItem{{1}}})
	var e *Error
	if !errors.As(err, &e) || !e.Timeout() || ClassOf(err) != ClassRetry {
		t.Fatalf("error %v, want a *Error that timed out, ClassRetry", err)
	}
	sig, _ := c.sigs.get()
	if msg := err.Error(); strings.Contains(msg, sig) || !strings.Contains(msg, "usersig=%5BREDACTED%5D") {
		t.Errorf("error text does not redact the UserSig: %v", err)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	cfg := testConfig("http://127.0.0.1:1") // nothing listens on port 1
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := c.sigs.get()
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	c.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, callErr := c.AccountImport(t.Context(), AccountImportRequest{UserID: "u"})
	if callErr == nil {
		t.Fatal("call to a closed port succeeded")
	}
	if ClassOf(callErr) != ClassRetry {
		t.Errorf("connection refused: class %v, want retry", ClassOf(callErr))
	}

	var out bytes.Buffer
	fmt.Fprintf(&out, "%v|%+v|%#v|%s|%q|%x|%v|%+v|%#v\n", cfg, cfg, cfg, cfg.SecretKey, cfg.SecretKey, cfg.SecretKey, callErr, callErr, callErr)
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(js)
	logger := slog.New(slog.NewJSONHandler(&out, nil))
	logger.Info("cfg", "cfg", cfg, "key", cfg.SecretKey, "err", callErr)
	slog.New(slog.NewTextHandler(&out, nil)).Info("cfg", "cfg", cfg, "err", callErr)
	out.Write(logs.Bytes())

	text := out.String()
	for name, secret := range map[string]string{"SecretKey": testKey, "UserSig": sig} {
		if strings.Contains(text, secret) {
			t.Errorf("%s leaked into output:\n%s", name, text)
		}
	}
	if !strings.Contains(text, redacted) {
		t.Errorf("no %s marker in output:\n%s", redacted, text)
	}
	if !strings.Contains(logs.String(), `"api":"account_import"`) {
		t.Errorf("no debug record of the call: %s", logs.String())
	}
}

func TestFlexString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    FlexString
		wantErr bool
	}{
		{`"549396494_2578554_1584669680"`, "549396494_2578554_1584669680", false},
		{`1584669680`, "1584669680", false},
		{`12345678901234567890123`, "12345678901234567890123", false},
		{`null`, "", false},
		{`""`, "", false},
		{`true`, "", true},
		{`{}`, "", true},
		{`[1]`, "", true},
	}
	for _, tt := range tests {
		var got struct {
			K FlexString `json:"LastMsgKey"`
		}
		err := json.Unmarshal([]byte(`{"LastMsgKey":`+tt.in+`}`), &got)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: error %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if got.K != tt.want {
			t.Errorf("%s: %q, want %q", tt.in, got.K, tt.want)
		}
	}
}

// responseTypes returns a fresh value of every response type.
func responseTypes() []response {
	return []response{
		&Response{}, &GroupMsgRecallResponse{}, &GroupMsgGetSimpleResponse{}, &AdminGetRoamMsgResponse{},
		&GetJoinedGroupListResponse{}, &GetGroupInfoResponse{}, &GetTopicResponse{},
		&MultiAccountImportResponse{}, &CreateGroupResponse{}, &AddGroupMemberResponse{},
		&CreateTopicResponse{}, &SendGroupMsgResponse{}, &SendMsgResponse{},
	}
}

func FuzzDecodeResponse(f *testing.F) {
	for _, seed := range []string{
		`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"RecallRetList":[{"MsgSeq":100,"RetCode":10030},{"MsgSeq":101,"RetCode":0}]}`,
		`{"ActionStatus":"FAIL","ErrorInfo":"Fail to Parse json data of body, Please check it","ErrorCode":90001}`,
		`{"ActionStatus":"OK","ErrorCode":0,"Complete":0,"LastMsgKey":1584669680,"LastMsgTime":1584669680,"MsgList":[{"MsgKey":"1_2_3","MsgFlagBits":8}]}`,
		`{"ActionStatus":"OK","ErrorCode":0,"GroupId":"@TGS#1","IsFinished":1,"RspMsgList":[{"MsgSeq":7,"IsPlaceMsg":2,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}]}`,
		`{"ActionStatus":"OK","ErrorCode":10010,"GroupInfo":[{"GroupId":"g","ErrorCode":10010}]}`,
		`null`, `[]`, `"OK"`, `{"ErrorCode":"1"}`, `{"LastMsgKey":[1]}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, resp := range responseTypes() {
			opts := callOpts{}
			if r, ok := resp.(*GetGroupInfoResponse); ok {
				opts.itemized = func() bool { return len(r.GroupInfo) > 0 }
			}
			err := decodeResponse(raw, resp, opts)
			var e *Error
			switch {
			case err == nil:
				if b := resp.base(); b.ErrorCode == 0 && b.ActionStatus != "OK" {
					t.Fatalf("%T: accepted ActionStatus %q", resp, b.ActionStatus)
				}
			case errors.As(err, &e):
				if e.Code == 0 {
					t.Fatalf("%T: code error with code 0: %v", resp, err)
				}
			case !errors.Is(err, ErrMalformedResponse):
				t.Fatalf("%T: error %v is neither a code nor malformed", resp, err)
			}
		}
	})
}

func TestDecodeResetsResponse(t *testing.T) {
	t.Parallel()
	var resp GroupMsgRecallResponse
	_ = decodeResponse([]byte(`{"ActionStatus":"FAIL","ErrorCode":70001,"RecallRetList":[{"MsgSeq":1,"RetCode":5}]}`), &resp, callOpts{})
	if err := decodeResponse([]byte(`{"ActionStatus":"OK","ErrorCode":0}`), &resp, callOpts{}); err != nil {
		t.Fatal(err)
	}
	if len(resp.RecallRetList) != 0 {
		t.Errorf("stale RecallRetList %v survived a second decode", resp.RecallRetList)
	}
}

func TestGetGroupInfoItemized(t *testing.T) {
	t.Parallel()
	_, srv := startScripted(t,
		body(200, `{"ActionStatus":"FAIL","ErrorCode":10015,"ErrorInfo":"x","GroupInfo":[{"GroupId":"a","ErrorCode":0,"Type":"Public","NextMsgSeq":5},{"GroupId":"b","ErrorCode":10015}]}`),
		failBody(10004))
	c := newTestClient(t, srv.URL)
	resp, err := c.GetGroupInfo(t.Context(), GetGroupInfoRequest{GroupIDList: []string{"a", "b"}})
	if err != nil {
		t.Fatalf("top-level code with per-group results: %v", err)
	}
	if len(resp.GroupInfo) != 2 || resp.GroupInfo[1].ErrorCode != 10015 || resp.GroupInfo[0].NextMsgSeq != 5 {
		t.Errorf("GroupInfo = %+v", resp.GroupInfo)
	}
	if _, err := c.GetGroupInfo(t.Context(), GetGroupInfoRequest{GroupIDList: []string{"a"}}); CodeOf(err) != 10004 {
		t.Errorf("top-level code without groups: %v, want 10004", err)
	}
}

func TestRecallGroupIncomplete(t *testing.T) {
	t.Parallel()
	_, srv := startScripted(t, okBody(`"RecallRetList":[{"MsgSeq":2,"RetCode":0}]`))
	c := newTestClient(t, srv.URL)
	got, err := c.RecallGroup(t.Context(), "g", "", []int64{1, 2, 3})
	if !errors.Is(err, ErrIncompleteResult) || ClassOf(err) != ClassRetry {
		t.Fatalf("error %v, want ErrIncompleteResult", err)
	}
	want := []ItemResult{{MsgSeq: 1, RetCode: -1}, {MsgSeq: 2}, {MsgSeq: 3, RetCode: -1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
}

func TestConcurrentCallsShareSig(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		okBody("")(w)
	}))
	t.Cleanup(srv.Close)
	c := newTestClient(t, srv.URL)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if _, err := c.AccountImport(t.Context(), AccountImportRequest{UserID: "u"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n.Load() != 100 || c.sigs.gen.Load() != 1 {
		t.Errorf("%d requests, %d sig generations; want 100 and 1", n.Load(), c.sigs.gen.Load())
	}
}

// TestThrottledReadAskedAgain: a read answered with a throttle code is
// reported to the Gate and asked again through it, up to
// throttledReadTries times in all; a recall is not asked again (its
// caller settles it), and neither is a read made without a Gate (nothing
// would pause it).
func TestThrottledReadAskedAgain(t *testing.T) {
	t.Parallel()
	read := func(c *Client) error {
		_, err := c.GroupMsgGetSimple(t.Context(), GroupMsgGetSimpleRequest{GroupID: "g", ReqMsgNumber: 20})
		return err
	}
	withdraw := func(c *Client) error {
		_, err := c.AdminMsgWithdraw(t.Context(), AdminMsgWithdrawRequest{FromAccount: "a", ToAccount: "b", MsgKey: "1_2_3"})
		return err
	}
	tests := []struct {
		name         string
		call         func(*Client) error
		noGate       bool
		answers      []func(http.ResponseWriter)
		wantCode     int
		wantRequests int
	}{
		{"read: throttled once, then answered", read, false, []func(http.ResponseWriter){failBody(60007), okBody("")}, 0, 2},
		{"read: throttled every time", read, false, []func(http.ResponseWriter){failBody(60007), failBody(60011), failBody(60007), failBody(60007), okBody("")}, 60007, throttledReadTries},
		{"read: auth, then throttled, then answered", read, false, []func(http.ResponseWriter){failBody(70001), failBody(60007), okBody("")}, 0, 3},
		{"read without a Gate", read, true, []func(http.ResponseWriter){failBody(60007), okBody("")}, 60007, 1},
		{"recall: not asked again", withdraw, false, []func(http.ResponseWriter){failBody(60007), okBody("")}, 60007, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, srv := startScripted(t, tt.answers...)
			g := &recordingGate{}
			c := newTestClient(t, srv.URL, func(c *Config) {
				if !tt.noGate {
					c.Gate = g
				}
			})
			err := tt.call(c)
			if got := CodeOf(err); got != tt.wantCode || (err == nil) != (tt.wantCode == 0) {
				t.Fatalf("code %d (err %v), want %d", got, err, tt.wantCode)
			}
			if n := len(s.requests()); n != tt.wantRequests {
				t.Errorf("%d requests, want %d", n, tt.wantRequests)
			}
			waits, throttled := g.counts()
			if !tt.noGate && len(waits) != tt.wantRequests {
				t.Errorf("%d gate waits, want one a request (%d)", len(waits), tt.wantRequests)
			}
			for _, th := range throttled {
				if !strings.HasSuffix(th, ":60007") && !strings.HasSuffix(th, ":60011") {
					t.Errorf("Throttled %q", th)
				}
			}
		})
	}
}

// TestEchoedQueryRedacted: an answer whose ErrorInfo echoes the request's
// query (a gateway's error page, a proxy in front of the API base) quotes
// the UserSig percent-encoded, as it was sent; the error must not carry it
// in any form.
func TestEchoedQueryRedacted(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, _ := json.Marshal("bad request " + r.URL.RawQuery + " lower " + strings.ToLower(r.URL.RawQuery) + " path " + r.URL.Path + "/" + r.URL.Query().Get("usersig"))
		fmt.Fprintf(w, `{"ActionStatus":"FAIL","ErrorCode":70003,"ErrorInfo":%s}`, info)
	}))
	t.Cleanup(srv.Close)
	c := newTestClient(t, srv.URL)
	sig, err := c.sigs.get()
	if err != nil {
		t.Fatal(err)
	}
	// About one sig in 25 has no '*' (nothing a URL escapes): the escaped
	// forms are then the sig itself. TestRedactSigForms covers them always.
	_, callErr := c.AccountImport(t.Context(), AccountImportRequest{UserID: "u"})
	if callErr == nil {
		t.Fatal("an answer with ErrorCode 70003 was not an error")
	}
	text := callErr.Error()
	lowerHex := regexp.MustCompile(`%[0-9A-F]{2}`).ReplaceAllStringFunc(url.QueryEscape(sig), strings.ToLower)
	for name, form := range map[string]string{"as is": sig, "query-escaped": url.QueryEscape(sig), "path-escaped": url.PathEscape(sig), "lower-case escapes": lowerHex} {
		if strings.Contains(text, form) {
			t.Errorf("the UserSig (%s) leaked into the error: %s", name, text)
		}
	}
	if !strings.Contains(text, redacted) {
		t.Errorf("no %s marker in the error: %s", redacted, text)
	}
}

// TestRedactSigForms: the UserSig is redacted as it is, query-escaped,
// path-escaped, and with the hex of its escapes in lower case (a gateway
// that re-encodes), wherever it stands in a text.
func TestRedactSigForms(t *testing.T) {
	const sig = "eJw1jV*tg-Q_x*a1"
	lower := strings.ReplaceAll(url.QueryEscape(sig), "%2A", "%2a")
	for _, form := range []string{sig, url.QueryEscape(sig), url.PathEscape(sig), lower} {
		text := "usersig=" + form + "&identifier=admin"
		got := redactSig(text, sig)
		if strings.Contains(got, form) || got != "usersig="+redacted+"&identifier=admin" {
			t.Errorf("redactSig(%q) = %q", text, got)
		}
	}
	if got := redactSig("nothing here", sig); got != "nothing here" {
		t.Errorf("redactSig of a text without the sig = %q", got)
	}
}
