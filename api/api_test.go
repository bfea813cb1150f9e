package api

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/verify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.yaml.in/yaml/v3"
)

const (
	adminSecret = "admin-secret-0123456789abcdef"
	readSecret  = "read-secret-0123456789abcdef"
)

// bundle is a server over real HTTP on miniredis, with the emulator as the
// IM API.
type bundle struct {
	t         *testing.T
	url       string
	srv       *Server
	store     *jobs.Store
	index     *msgindex.Index
	env       *imtest.Env
	mr        *miniredis.Miniredis
	inspector *asynq.Inspector
}

func setup(t *testing.T, mod func(*Config)) *bundle {
	t.Helper()
	return setupClient(t, nil, mod)
}

// setupClient is setup with the Client's config changed by cmod first.
func setupClient(t *testing.T, cmod func(*imrecall.Config), mod func(*Config)) *bundle {
	t.Helper()
	mr, rdb := redistest.Mini(t)
	enq := asynq.NewClient(asynq.RedisClientOpt{Addr: mr.Addr()})
	t.Cleanup(func() { _ = enq.Close() })
	env := imtest.Start(t, emulator.Config{})
	b := &bundle{t: t, store: jobs.NewStore(rdb, ""), index: msgindex.New(rdb, "", 7*24*time.Hour), env: env, mr: mr,
		inspector: asynq.NewInspector(asynq.RedisClientOpt{Addr: mr.Addr()})}
	t.Cleanup(func() { _ = b.inspector.Close() })
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewJobCollector(b.store))
	ccfg := imrecall.Config{Redis: rdb, Queue: enq, AppID: imtest.AppID, IM: env.Client, Index: b.index, ConfirmAbove: 5}
	if cmod != nil {
		cmod(&ccfg)
	}
	client, err := imrecall.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Client: client, Store: b.store, Schedules: producer.NewSchedules(rdb, ""), IM: env.Client, Index: b.index,
		AppID:   imtest.AppID,
		Tokens:  []Token{{Name: "ops", Role: RoleAdmin, Secret: adminSecret}, {Name: "auditor", Role: RoleRead, Secret: readSecret}},
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Ready:   func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		Monitor: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "full dashboard") }),
		MonitorReadOnly: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "read-only dashboard")
		}),
		Callbacks: &msgindex.Callbacks{Index: b.index, SDKAppID: imtest.AppID},
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.srv = srv
	t.Cleanup(srv.Close) // runs after the HTTP server closes, before Redis and the emulator stop
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	b.url = hs.URL
	return b
}

// call sends a request with token (empty: none) and decodes a JSON answer
// into out (if not nil).
func (b *bundle) call(method, path, token string, body any, out any) int {
	b.t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		raw, _ := json.Marshal(v)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, b.url+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			b.t.Fatalf("%s %s: HTTP %d, answer %q: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

// concrete fills the {id} and {name} of a route pattern.
func concrete(path string) string {
	return strings.NewReplacer("{id}", "20261122T230512Z-9f3a1c2b", "{name}", "nightly").Replace(path)
}

func TestEveryProtectedRouteRefusesMissingAndWrongTokens(t *testing.T) {
	b := setup(t, nil)
	protected := 0
	for _, rt := range b.srv.Routes() {
		if rt.Role == "" {
			continue
		}
		protected++
		for _, token := range []string{"", "not-a-token-at-all-000000", adminSecret + "x"} {
			var e apiError
			if got := b.call(rt.Method, concrete(rt.Path), token, nil, &e); got != http.StatusUnauthorized || e.Error == "" {
				t.Errorf("%s %s with token %q: HTTP %d %q, want 401", rt.Method, rt.Path, token, got, e.Error)
			}
		}
		if rt.Role == RoleAdmin {
			var e apiError
			if got := b.call(rt.Method, concrete(rt.Path), readSecret, `{}`, &e); got != http.StatusForbidden || !strings.Contains(e.Error, "auditor") {
				t.Errorf("%s %s with a read token: HTTP %d %q, want 403 naming the token", rt.Method, rt.Path, got, e.Error)
			}
		}
	}
	if protected < 15 {
		t.Fatalf("only %d protected routes", protected)
	}
	// Public routes answer without a token.
	for _, p := range []string{"/healthz", "/readyz", "/openapi.yaml", "/metrics"} {
		if got := b.call("GET", p, "", nil, nil); got != http.StatusOK {
			t.Errorf("GET %s: HTTP %d, want 200", p, got)
		}
	}
	// The dashboard: 401 with a Basic challenge, read-only for read tokens.
	resp, err := http.Get(b.url + "/monitor/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("GET /monitor/ without a token: HTTP %d, challenge %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	for secret, want := range map[string]string{adminSecret: "full dashboard", readSecret: "read-only dashboard"} {
		req, _ := http.NewRequest("GET", b.url+"/monitor/", nil)
		req.SetBasicAuth("anyone", secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Fatalf("monitor with Basic auth: %q, want %q", body, want)
		}
		// Another site's page must not frame it (clickjacking with the
		// browser's Basic credentials), nor a browser sniff its answers.
		if xfo, csp := resp.Header.Get("X-Frame-Options"), resp.Header.Get("Content-Security-Policy"); xfo != "DENY" || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: X-Frame-Options %q, Content-Security-Policy %q: want DENY and frame-ancestors 'none'", want, xfo, csp)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q, want nosniff", want, got)
		}
	}
}

func TestReadyzFollowsRedis(t *testing.T) {
	b := setup(t, nil)
	if got := b.call("GET", "/readyz", "", nil, nil); got != http.StatusOK {
		t.Fatalf("readyz: %d", got)
	}
	addr := b.mr.Addr()
	b.mr.Close()
	var st map[string]string
	if got := b.call("GET", "/readyz", "", nil, &st); got != http.StatusServiceUnavailable || st["error"] == "" {
		t.Fatalf("readyz with Redis down: HTTP %d %v, want 503 with the error", got, st)
	}
	// Anyone may ask: the answer does not name where Redis is.
	if host, port, _ := net.SplitHostPort(addr); strings.Contains(st["error"], host) || strings.Contains(st["error"], port) {
		t.Fatalf("readyz tells anyone Redis's address: %q", st["error"])
	}
	if got := b.call("GET", "/healthz", "", nil, nil); got != http.StatusOK {
		t.Fatalf("healthz with Redis down: %d, want 200 (alive)", got)
	}
}

func TestOpenAPIDocumentMatchesTheRoutes(t *testing.T) {
	b := setup(t, nil)
	var doc struct {
		Paths      map[string]map[string]any `yaml:"paths"`
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `yaml:"properties"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	// The document the server serves is the one in the repository.
	resp, err := http.Get(b.url + "/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(served, OpenAPI) {
		t.Fatal("GET /openapi.yaml differs from api/openapi.yaml")
	}
	if err := yaml.Unmarshal(served, &doc); err != nil {
		t.Fatal(err)
	}
	var documented, served2 []string
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	for _, rt := range b.srv.Routes() {
		served2 = append(served2, rt.Method+" "+rt.Path)
	}
	served2 = append(served2, "GET /monitor/") // asynqmon's subtree
	sort.Strings(documented)
	sort.Strings(served2)
	if !slices.Equal(documented, served2) {
		t.Fatalf("OpenAPI paths and server routes differ:\ndocumented: %v\nserved:     %v", documented, served2)
	}
	// Request bodies: the schemas list exactly the fields the server decodes.
	for schema, v := range map[string]any{
		"CreateJobRequest": CreateJobRequest{}, "MessageRef": MessageRef{}, "ReasonRequest": reasonRequest{}, "RequeueRequest": requeueRequest{}, "RequeueDryRun": RequeueDryRun{},
		"ScheduleRequest": ScheduleRequest{}, "RestartCoverageRequest": RestartCoverageRequest{},
		"Job": jobs.Job{}, "DeadLetter": jobs.DeadLetter{}, "Schedule": ScheduleView{}, "Coverage": msgindex.Coverage{},
		"CreateJobResponse": CreateJobResponse{}, "Requeued": producer.Requeued{}, "Event": jobs.Event{},
		"VerifyRequest": VerifyRequest{}, "CertificateRequest": CertificateRequest{}, "RunStatus": RunStatus{},
		"Verification": verify.JobResult{},
		"Report":       jobs.Report{}, "JobCoverage": jobs.Coverage{}, "TargetCoverage": jobs.TargetCoverage{},
	} {
		var want []string
		for name := range doc.Components.Schemas[schema].Properties {
			want = append(want, name)
		}
		got := jsonFields(reflect.TypeOf(v))
		sort.Strings(want)
		if !slices.Equal(want, got) {
			t.Errorf("schema %s documents %v; the Go type has %v", schema, want, got)
		}
	}
}

func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...) // encoding/json flattens it
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

func TestCreateRecallJobDryRunConfirmAndFollow(t *testing.T) {
	b := setup(t, nil)
	msgs := []MessageRef{{GroupID: "@TGS#1", MsgSeq: 1}, {GroupID: "@TGS#1", MsgSeq: 2}, {GroupID: "@TGS#1", MsgSeq: 2},
		{From: "a", To: "b", MsgKey: "1_2_3"}}
	req := CreateJobRequest{Kind: KindRecall, Reason: "INC-1 spam", Actor: "alice", Messages: msgs, DryRun: true}

	var dry CreateJobResponse
	if got := b.call("POST", "/v1/jobs", adminSecret, req, &dry); got != http.StatusOK || !dry.DryRun || dry.Messages != 4 || dry.Job != nil {
		t.Fatalf("dry run: HTTP %d %+v", got, dry)
	}
	// The dry run says the calls the messages take and their time at the
	// cap, as the CLI's does: one group call (10 seqs a call), one
	// one-to-one call.
	if dry.Source != imrecall.SourceList || dry.GroupCalls != 1 || dry.C2CCalls != 1 || dry.SecondsAtCap <= 0 {
		t.Fatalf("dry run plan: %+v", dry.Plan)
	}
	var list []jobs.Job
	if b.call("GET", "/v1/jobs", readSecret, nil, &list); len(list) != 0 {
		t.Fatalf("a dry run created a job: %+v", list)
	}

	req.DryRun = false
	var created CreateJobResponse
	if got := b.call("POST", "/v1/jobs", adminSecret, req, &created); got != http.StatusCreated {
		t.Fatalf("create: HTTP %d %+v", got, created)
	}
	if created.Job == nil || created.Planned != 3 || created.Duplicates != 1 || created.Tasks != 2 {
		t.Fatalf("create: %+v, want 3 planned (1 duplicate) in 2 tasks", created)
	}
	j := *created.Job
	if j.RequestedBy != "alice (token:ops)" || j.Reason != "INC-1 spam" || j.Counts.Planned != 3 || j.Status != jobs.StatusRunning {
		t.Fatalf("job %+v", j)
	}
	// One group call on the incident queue, one withdrawal on its one-to-one lane.
	for _, q := range []string{tasks.QueueIncident, tasks.C2CQueue(tasks.QueueIncident)} {
		if n, _ := b.inspector.GetQueueInfo(q); n == nil || n.Pending != 1 {
			t.Fatalf("queue %s: %+v, want 1 pending task", q, n)
		}
	}
	var got jobs.Job
	if code := b.call("GET", "/v1/jobs/"+j.ID, readSecret, nil, &got); code != http.StatusOK || got.ID != j.ID {
		t.Fatalf("get: HTTP %d %+v", code, got)
	}
	var rep jobs.Report
	if code := b.call("GET", "/v1/jobs/"+j.ID+"/report", readSecret, nil, &rep); code != http.StatusOK || !rep.Reconciled {
		t.Fatalf("report: HTTP %d %+v", code, rep)
	}
	if code := b.call("POST", "/v1/jobs/"+j.ID+"/pause", adminSecret, nil, &got); code != http.StatusOK || !got.Paused {
		t.Fatalf("pause: HTTP %d %+v", code, got)
	}
	got = jobs.Job{}
	if code := b.call("POST", "/v1/jobs/"+j.ID+"/resume", adminSecret, nil, &got); code != http.StatusOK || got.Paused {
		t.Fatalf("resume: HTTP %d %+v", code, got)
	}
	if code := b.call("POST", "/v1/jobs/"+j.ID+"/cancel", adminSecret, map[string]string{"reason": "wrong group"}, &got); code != http.StatusOK || got.Status != jobs.StatusCancelled {
		t.Fatalf("cancel: HTTP %d %+v", code, got)
	}
	var e apiError
	if code := b.call("GET", "/v1/jobs/20200101T000000Z-00000000", readSecret, nil, &e); code != http.StatusNotFound {
		t.Fatalf("unknown job: HTTP %d %q, want 404", code, e.Error)
	}
	var events []jobs.Event
	b.call("GET", "/v1/audit?limit=10", readSecret, nil, &events)
	var actions []string
	for _, ev := range events {
		actions = append(actions, ev.Action+" by "+ev.Actor)
	}
	for _, want := range []string{"dry_run by alice (token:ops)", "create by alice (token:ops)", "pause by token:ops", "cancel by token:ops"} {
		if !slices.Contains(actions, want) {
			t.Errorf("audit log %v lacks %q", actions, want)
		}
	}

	// Above the server's threshold (5), the job needs "confirm": true.
	big := CreateJobRequest{Kind: KindRecall, Reason: "big", Messages: make([]MessageRef, 6)}
	for i := range big.Messages {
		big.Messages[i] = MessageRef{GroupID: "@TGS#2", MsgSeq: int64(i + 1)}
	}
	var cr confirmationRequired
	if code := b.call("POST", "/v1/jobs", adminSecret, big, &cr); code != http.StatusConflict || cr.Messages != 6 || !strings.Contains(cr.Error, "confirm") {
		t.Fatalf("unconfirmed big job: HTTP %d %+v, want 409", code, cr)
	}
	big.Confirm = true
	if code := b.call("POST", "/v1/jobs", adminSecret, big, &created); code != http.StatusCreated || created.Planned != 6 {
		t.Fatalf("confirmed big job: HTTP %d %+v", code, created)
	}
}

func TestBadRequestsNameTheFieldAndChangeNothing(t *testing.T) {
	b := setup(t, nil)
	cases := []struct {
		body       string
		wantStatus int
		wantError  string
	}{
		{`{"kind":"recall","reason":"x","messages":[{"GroupId":"g","MsgSeq":0}]}`, 400, "messages[0]: MsgSeq 0"},
		{`{"kind":"recall","reason":"x","messages":[{"GroupId":"g","MsgSeq":"7"}]}`, 400, "field messages[0].MsgSeq"},
		{`{"kind":"recall","reason":"x","messages":[{"From_Account":"a","To_Account":"b","MsgKey":"nope"}]}`, 400, `messages[0]: MsgKey "nope"`},
		{`{"kind":"recall","reason":"x","mesages":[]}`, 400, `unknown field "mesages"`},
		{`{"kind":"recall","messages":[{"GroupId":"g","MsgSeq":1}]}`, 400, "reason: required"},
		{`{"kind":"erase","reason":"x"}`, 400, `kind "erase"`},
		{`{"kind":"recall","reason":"x","queue":"urgent","messages":[{"GroupId":"g","MsgSeq":1}]}`, 400, `queue "urgent": want incident, purge or backfill`},
		{`{"kind":"purge_user","reason":"x"}`, 400, "user: required"},
		{`{"kind":"purge_user","reason":"x","user":"u","since":"yesterday"}`, 400, `since: "yesterday"`},
		{`{"kind":"purge_user","reason":"x","user":"u","source":"cache"}`, 400, `source "cache"`},
		{`{"kind":"purge_group","reason":"x","groups":["g"],"seq_from":9,"seq_to":3}`, 400, "seq_from: 9 is after seq_to 3"},
		{`{"kind":"purge_group","reason":"x","groups":["g"],"source":"bogus"}`, 400, `source "bogus": want auto, index or scan`},
		{`{"kind":"recall","reason":"x"} {"again":1}`, 400, "data after"},
		{`{"kind":"recall",`, 400, "request body"},
		{``, 400, "empty"},
		{`{"kind":"recall","reason":"` + strings.Repeat("x", MaxJobBody) + `"}`, 413, "larger than"},
	}
	for _, c := range cases {
		var e apiError
		got := b.call("POST", "/v1/jobs", adminSecret, c.body, &e)
		if got != c.wantStatus || !strings.Contains(e.Error, c.wantError) {
			short := c.body
			if len(short) > 80 {
				short = short[:80] + "…"
			}
			t.Errorf("POST %s: HTTP %d %q, want %d naming %q", short, got, e.Error, c.wantStatus, c.wantError)
		}
	}
	var list []jobs.Job
	if b.call("GET", "/v1/jobs", readSecret, nil, &list); len(list) != 0 {
		t.Fatalf("bad requests created jobs: %+v", list)
	}
	var e apiError
	if got := b.call("GET", "/v1/jobs?limit=0", readSecret, nil, &e); got != 400 || !strings.Contains(e.Error, "limit") {
		t.Fatalf("limit=0: HTTP %d %q", got, e.Error)
	}
	if got := b.call("GET", "/v1/jobs/..%2Fetc", readSecret, nil, &e); got != 400 && got != 404 {
		t.Fatalf("bad id: HTTP %d", got)
	}
}

func TestPurgesByIndexAndByScan(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	env := b.env
	env.Accounts(t, "spammer", "alice", "bob")
	g1 := env.Group(t, "Public", "g1", "spammer", "alice")
	g2 := env.Group(t, "Private", "g2", "spammer", "bob")
	env.SendGroup(t, g1, "", 4, "spammer", "alice") // 2 each
	env.SendGroup(t, g2, "", 3, "spammer")
	keys := env.SendC2C(t, "spammer", "alice", 2)

	// Scan: group purge dry run finds the spammer's 5 group messages.
	var dry CreateJobResponse
	req := CreateJobRequest{Kind: KindPurgeGroup, Reason: "INC-2", Groups: []string{g1, g2}, Senders: []string{"spammer"}, DryRun: true}
	if code := b.call("POST", "/v1/jobs", adminSecret, req, &dry); code != 200 || dry.Messages != 5 || dry.Report == nil {
		t.Fatalf("purge_group dry run: HTTP %d %+v", code, dry)
	}
	// A purge by scan is confirmed explicitly: its size is unknown until scanned.
	req.DryRun = false
	var cr confirmationRequired
	if code := b.call("POST", "/v1/jobs", adminSecret, req, &cr); code != http.StatusConflict || cr.Messages != -1 {
		t.Fatalf("unconfirmed purge by scan: HTTP %d %+v", code, cr)
	}
	req.Confirm = true
	var created CreateJobResponse
	if code := b.call("POST", "/v1/jobs", adminSecret, req, &created); code != http.StatusCreated || created.Scans != 2 || created.Job.Kind != "purge:group" {
		t.Fatalf("purge_group: HTTP %d %+v", code, created)
	}

	// The index is empty: auto scans; forcing the index finds nothing.
	ureq := CreateJobRequest{Kind: KindPurgeUser, Reason: "GDPR #9", User: "spammer", Peers: []string{"alice"}, DryRun: true}
	if code := b.call("POST", "/v1/jobs", adminSecret, ureq, &dry); code != 200 || dry.Source != SourceScan || dry.Messages != 7 {
		t.Fatalf("purge_user auto with an empty index: HTTP %d %+v, want a scan finding 7", code, dry)
	}
	// Feed the index (as serve's /callback does) with what was sent.
	for _, seq := range []int64{1, 3} {
		if err := b.index.Add(ctx, imtest.AppID, msgindex.Entry{From: "spammer", Time: time.Now(), GroupID: g1, MsgSeq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		if err := b.index.Add(ctx, imtest.AppID, msgindex.Entry{From: "spammer", Time: time.Now(), To: "alice", MsgKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	ureq.Source, ureq.Peers = SourceIndex, nil
	if code := b.call("POST", "/v1/jobs", adminSecret, ureq, &dry); code != 200 || dry.Source != SourceIndex || dry.Messages != 4 || dry.Index.Peers != 1 {
		t.Fatalf("purge_user by index, dry run: HTTP %d %+v", code, dry)
	}
	before := env.Emu.Stats()["group_msg_get_simple"].Calls
	ureq.DryRun = false
	if code := b.call("POST", "/v1/jobs", adminSecret, ureq, &created); code != http.StatusCreated || created.Planned != 4 || created.Source != SourceIndex {
		t.Fatalf("purge_user by index: HTTP %d %+v", code, created)
	}
	// Senders are confirmed from the history: seqs 1 and 3 are one page.
	if after := env.Emu.Stats()["group_msg_get_simple"].Calls; after-before != 1 || created.SenderUnconfirmed != 0 {
		t.Fatalf("a purge by index of 2 seqs of one group read %d history pages, refused %d", after-before, created.SenderUnconfirmed)
	}
	var cov msgindex.Coverage
	if code := b.call("GET", "/v1/index", readSecret, nil, &cov); code != 200 || cov.Entries != 4 || cov.RetentionSeconds != 7*86400 {
		t.Fatalf("index coverage: HTTP %d %+v", code, cov)
	}
	var e apiError
	if code := b.call("POST", "/v1/index/restart-coverage", adminSecret, map[string]string{"at": "yesterday"}, &e); code != 400 {
		t.Fatalf("restart-coverage with a bad time: HTTP %d", code)
	}
	if code := b.call("POST", "/v1/index/restart-coverage", adminSecret, map[string]string{"reason": "serve was down 02:00-03:10"}, &cov); code != 200 || cov.Since.IsZero() {
		t.Fatalf("restart-coverage: HTTP %d %+v", code, cov)
	}
}

func TestDeadLettersListExportAndRequeue(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	var created CreateJobResponse
	req := CreateJobRequest{Kind: KindRecall, Reason: "x", Messages: []MessageRef{{GroupID: "@TGS#1", MsgSeq: 1}, {GroupID: "@TGS#1", MsgSeq: 2}}}
	if code := b.call("POST", "/v1/jobs", adminSecret, req, &created); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	id, target := created.Job.ID, jobs.Target{GroupID: "@TGS#1"}
	if _, err := b.store.BeginGroup(ctx, id, target, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Record(ctx, id, target, []jobs.Outcome{
		{Item: "1", Code: "10002", ErrorInfo: "internal error", Attempts: 8},
		{Item: "2", Code: "10030", ErrorInfo: "not found", Attempts: 1},
	}); err != nil {
		t.Fatal(err)
	}
	var dl []jobs.DeadLetter
	if code := b.call("GET", "/v1/jobs/"+id+"/dead-letters?category=needs_attention", readSecret, nil, &dl); code != 200 || len(dl) != 1 || dl[0].MsgSeq != 1 {
		t.Fatalf("dead letters: HTTP %d %+v", code, dl)
	}
	resp, err := http.NewRequest("GET", b.url+"/v1/jobs/"+id+"/dead-letters?format=csv", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Set("Authorization", "Bearer "+readSecret)
	r, err := http.DefaultClient.Do(resp)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(r.Body).ReadAll()
	r.Body.Close()
	if err != nil || len(rows) != 3 || rows[0][1] != "GroupId" || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv export: %v %v %q", rows, err, r.Header.Get("Content-Type"))
	}
	var e apiError
	if code := b.call("GET", "/v1/jobs/"+id+"/dead-letters?format=xml", readSecret, nil, &e); code != 400 || !strings.Contains(e.Error, "format") {
		t.Fatalf("bad format: %d %q", code, e.Error)
	}
	// While another re-queue of the job runs (here: a CLI's), the API's is
	// refused, naming who runs it, and changes nothing.
	other, err := b.store.LockRequeue(ctx, id, "alice (imrecall dlq requeue)")
	if err != nil {
		t.Fatal(err)
	}
	if code := b.call("POST", "/v1/jobs/"+id+"/dead-letters/requeue", adminSecret, map[string]string{"reason": "Tencent incident over"}, &e); code != http.StatusConflict || !strings.Contains(e.Error, "a re-queue by alice (imrecall dlq requeue) is running") {
		t.Fatalf("requeue while another runs: HTTP %d %q", code, e.Error)
	}
	if j, _ := b.store.Get(ctx, id); j.Counts.DeadLettered != 2 {
		t.Fatalf("the refused re-queue changed the job: %+v", j.Counts)
	}
	if err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// A dry run counts what a re-queue would move (by default those that
	// need attention; or a category, a code) and changes nothing.
	for _, c := range []struct {
		body string
		want int
	}{
		{`{"dry_run":true}`, 1},
		{`{"dry_run":true,"category":"not_found"}`, 1},
		{`{"dry_run":true,"code":"10030"}`, 1},
		{`{"dry_run":true,"category":"already_recalled"}`, 0},
	} {
		var dr RequeueDryRun
		if code := b.call("POST", "/v1/jobs/"+id+"/dead-letters/requeue", adminSecret, c.body, &dr); code != 200 || !dr.DryRun || dr.Messages != c.want {
			t.Fatalf("requeue %s: HTTP %d %+v, want a dry run of %d", c.body, code, dr, c.want)
		}
	}
	if code := b.call("POST", "/v1/jobs/"+id+"/dead-letters/requeue", adminSecret, `{"dry_run":true,"category":"bogus"}`, &e); code != 400 || !strings.Contains(e.Error, "bogus") {
		t.Fatalf("dry run with a bad category: HTTP %d %q", code, e.Error)
	}
	if code := b.call("POST", "/v1/jobs/"+id+"/dead-letters/requeue", readSecret, `{"dry_run":true}`, &e); code != http.StatusForbidden {
		t.Fatalf("dry run with a read token: HTTP %d", code)
	}
	if j, _ := b.store.Get(ctx, id); j.Counts.DeadLettered != 2 || j.Counts.Pending != 0 {
		t.Fatalf("a dry run changed the job: %+v", j.Counts)
	}
	var rq producer.Requeued
	if code := b.call("POST", "/v1/jobs/"+id+"/dead-letters/requeue", adminSecret, map[string]string{"reason": "Tencent incident over"}, &rq); code != 200 || rq.Messages != 1 || rq.Tasks != 1 {
		t.Fatalf("requeue: HTTP %d %+v", code, rq)
	}
	j, err := b.store.Get(ctx, id)
	if err != nil || j.Counts.Pending != 1 || j.Counts.DeadLettered != 1 {
		t.Fatalf("after requeue: %+v %v", j.Counts, err)
	}
}

// TestLargeRequeueNeedsConfirm: a re-queue of more dead letters than the
// server's confirmation threshold is answered 409 with their number and
// moves nothing until repeated with "confirm": true, as a job of as many
// messages is; it re-sent them all at once.
func TestLargeRequeueNeedsConfirm(t *testing.T) {
	b := setup(t, nil) // ConfirmAbove 5
	ctx := t.Context()
	job, err := b.store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: "purge", AppID: imtest.AppID, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	g := jobs.Target{GroupID: "@TGS#dead"}
	var out []jobs.Outcome
	for i := 1; i <= 6; i++ {
		out = append(out, jobs.Outcome{Item: strconv.Itoa(i), Code: "10002"})
	}
	if _, err := b.store.PlanGroup(ctx, job.ID, g, []int64{1, 2, 3, 4, 5, 6}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Record(ctx, job.ID, g, out); err != nil {
		t.Fatal(err)
	}
	path := "/v1/jobs/" + job.ID + "/dead-letters/requeue"
	var need confirmationRequired
	if code := b.call("POST", path, adminSecret, `{"reason":"Tencent incident over"}`, &need); code != http.StatusConflict || need.Messages != 6 || !strings.Contains(need.Error, `"confirm": true`) {
		t.Fatalf("unconfirmed re-queue of 6 above 5: HTTP %d %+v, want 409 for 6", code, need)
	}
	if j, _ := b.store.Get(ctx, job.ID); j.Counts.DeadLettered != 6 || j.Counts.Pending != 0 {
		t.Fatalf("the unconfirmed re-queue changed the job: %+v", j.Counts)
	}
	var rq producer.Requeued
	if code := b.call("POST", path, adminSecret, `{"reason":"Tencent incident over","confirm":true}`, &rq); code != 200 || rq.Messages != 6 {
		t.Fatalf("confirmed re-queue: HTTP %d %+v, want 6 moved", code, rq)
	}
}

func TestSchedulesAndMetrics(t *testing.T) {
	b := setup(t, nil)
	var e apiError
	if code := b.call("POST", "/v1/schedules", adminSecret, `{"name":"nightly","cron":"0 3 * * *","args":["worker"]}`, &e); code != 400 || !strings.Contains(e.Error, "args") {
		t.Fatalf("a command line: HTTP %d %q", code, e.Error)
	}
	purge := &CreateJobRequest{Kind: KindPurgeGroup, Groups: []string{"g"}, Until: "90d"}
	if code := b.call("POST", "/v1/schedules", adminSecret, ScheduleRequest{Name: "nightly", Cron: "at three", Request: purge}, &e); code != 400 || !strings.Contains(e.Error, "cron") {
		t.Fatalf("bad cron: HTTP %d %q", code, e.Error)
	}
	if code := b.call("POST", "/v1/schedules", adminSecret, ScheduleRequest{Name: "nightly", Cron: "0 3 * * *", Request: &CreateJobRequest{Kind: KindPurgeGroup, Reason: "r"}}, &e); code != 400 || !strings.Contains(e.Error, "groups") {
		t.Fatalf("a request without groups: HTTP %d %q", code, e.Error)
	}
	// A dry run answers the schedule and when it would fire, and adds
	// nothing: no schedule, no audit record.
	b.srv.now = func() time.Time { return time.Date(2026, 12, 3, 9, 30, 0, 0, time.UTC) }
	nextDue := []time.Time{time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC), time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC), time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)}
	var sc ScheduleView
	if code := b.call("POST", "/v1/schedules", adminSecret, ScheduleRequest{Name: "nightly", Cron: "0 3 * * *", Request: purge, Reason: "retention", DryRun: true}, &sc); code != 200 || !sc.DryRun || !slices.Equal(sc.Next, nextDue) {
		t.Fatalf("dry run: HTTP %d %+v, want 200, dry_run, next %v", code, sc, nextDue)
	}
	var list []ScheduleView
	if code := b.call("GET", "/v1/schedules", readSecret, nil, &list); code != 200 || len(list) != 0 {
		t.Fatalf("after a dry run: HTTP %d %+v, want no schedule", code, list)
	}
	if evs, err := b.store.AuditLog(t.Context(), 100); err != nil || slices.ContainsFunc(evs, func(e jobs.Event) bool { return e.Action == "schedule_add" }) {
		t.Fatalf("after a dry run the audit log holds %+v (%v), want no schedule_add", evs, err)
	}
	sc = ScheduleView{}
	if code := b.call("POST", "/v1/schedules", adminSecret, ScheduleRequest{Name: "nightly", Cron: "0 3 * * *", Request: purge, Reason: "retention"}, &sc); code != 201 || sc.DryRun || sc.CreatedBy != "token:ops" || sc.Request == nil || sc.Request.Groups[0] != "g" || !slices.Equal(sc.Next, nextDue) {
		t.Fatalf("add: HTTP %d %+v", code, sc)
	}
	if code := b.call("GET", "/v1/schedules", readSecret, nil, &list); code != 200 || len(list) != 1 || list[0].Name != "nightly" || !slices.Equal(list[0].Next, nextDue) {
		t.Fatalf("list: HTTP %d %+v", code, list)
	}
	// Adding it again replaces it, and the trail says so.
	if code := b.call("POST", "/v1/schedules", adminSecret, ScheduleRequest{Name: "nightly", Cron: "30 3 * * *", Request: purge, Reason: "retention, later"}, nil); code != 201 {
		t.Fatalf("replace: HTTP %d", code)
	}
	if code := b.call("DELETE", "/v1/schedules/nightly?reason="+url.QueryEscape("retention moved to 180 days"), adminSecret, nil, nil); code != http.StatusNoContent {
		t.Fatalf("remove: HTTP %d", code)
	}
	if code := b.call("DELETE", "/v1/schedules/nightly", adminSecret, nil, &e); code != http.StatusNotFound {
		t.Fatalf("remove again: HTTP %d", code)
	}
	// All are on record, with who and why; the refused removal is not.
	evs, err := b.store.AuditLog(t.Context(), 100)
	var trail []string
	for _, ev := range evs {
		if strings.HasPrefix(ev.Action, "schedule_") {
			trail = append(trail, ev.Action+" by "+ev.Actor+": "+ev.Detail)
		}
	}
	if want := []string{
		`schedule_add by token:ops: nightly "0 3 * * *": {"kind":"purge_group","reason":"","groups":["g"],"until":"90d"}; retention`,
		`schedule_replace by token:ops: nightly "30 3 * * *": {"kind":"purge_group","reason":"","groups":["g"],"until":"90d"}; retention, later`,
		"schedule_remove by token:ops: nightly; retention moved to 180 days",
	}; err != nil || !slices.Equal(trail, want) {
		t.Fatalf("audit trail of schedules: %q (%v), want %q", trail, err, want)
	}

	var created CreateJobResponse
	b.call("POST", "/v1/jobs", adminSecret, CreateJobRequest{Kind: KindRecall, Reason: "x", Messages: []MessageRef{{GroupID: "g", MsgSeq: 1}}}, &created)
	resp, err := http.Get(b.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf(`imrecall_job_messages{job_id=%q,kind="recall:api",state="pending"} 1`, created.Job.ID)
	if !strings.Contains(string(body), want) {
		t.Fatalf("metrics lack %s:\n%s", want, body)
	}
}

func TestParseTokens(t *testing.T) {
	ts, err := ParseTokens(strings.NewReader("# ops\nops:admin:"+adminSecret+"\n\nci:read:"+readSecret+", bot:read:bot-secret-0123456789\n"), "tokens.txt")
	if err != nil || len(ts) != 3 || ts[2].Name != "bot" || ts[0].Role != RoleAdmin {
		t.Fatalf("%v %v", ts, err)
	}
	for in, want := range map[string]string{
		"ops:root:" + adminSecret: "tokens.txt:1: token ops: role \"root\"",
		"ops:admin:short":         "tokens.txt:1: token ops: secret shorter than 16",
		"ops-admin":               "tokens.txt:1: want NAME:ROLE:SECRET",
		"a:read:" + readSecret + ",a:read:" + adminSecret: "tokens.txt:1: entry 2: token a: name given twice",
	} {
		_, err := ParseTokens(strings.NewReader(in), "tokens.txt")
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
		if err != nil && (strings.Contains(err.Error(), adminSecret) || strings.Contains(err.Error(), "admin:short")) {
			t.Errorf("error %q shows a secret", err)
		}
	}
	if s := fmt.Sprint(Token{Name: "ops", Role: RoleAdmin, Secret: adminSecret}); strings.Contains(s, adminSecret) {
		t.Fatalf("Token prints its secret: %s", s)
	}
	if _, err := New(Config{}); err == nil || errors.Is(err, nil) {
		t.Fatal("New accepted an empty config")
	}
}

func fixedNow() time.Time { return time.Date(2026, 11, 22, 14, 0, 0, 0, time.UTC) }

// TestMutationsNeedJSONSameSiteAndBearer: what an HTML form on another site
// could send with a browser's credentials is refused before it is read, and
// a job request naming a connection setting is refused naming it.
func TestMutationsNeedJSONSameSiteAndBearer(t *testing.T) {
	b := setup(t, nil)
	body := `{"kind":"recall","reason":"x","messages":[{"GroupId":"@TGS#1","MsgSeq":1}]}`
	send := func(method, path string, header ...string) int {
		req, _ := http.NewRequest(method, b.url+path, strings.NewReader(body))
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	bearer := "Bearer " + adminSecret
	for _, c := range []struct {
		name   string
		header []string
		want   int
	}{
		{"text/plain", []string{"Authorization", bearer, "Content-Type", "text/plain"}, http.StatusUnsupportedMediaType},
		{"multipart", []string{"Authorization", bearer, "Content-Type", "multipart/form-data; boundary=x"}, http.StatusUnsupportedMediaType},
		{"cross-site Origin", []string{"Authorization", bearer, "Content-Type", "application/json", "Origin", "https://evil.example"}, http.StatusForbidden},
		{"same-site", []string{"Authorization", bearer, "Content-Type", "application/json", "Sec-Fetch-Site", "same-site"}, http.StatusForbidden},
		{"Basic", []string{"Authorization", "Basic " + basicAuth("ops", adminSecret), "Content-Type", "application/json"}, http.StatusUnauthorized},
		{"same origin", []string{"Authorization", bearer, "Content-Type", "application/json; charset=utf-8", "Origin", b.url, "Sec-Fetch-Site", "same-origin"}, http.StatusCreated},
	} {
		if got := send("POST", "/v1/jobs", c.header...); got != c.want {
			t.Errorf("%s: HTTP %d, want %d", c.name, got, c.want)
		}
	}
	if got := send("GET", "/v1/jobs", "Authorization", "Basic "+basicAuth("ops", readSecret)); got != http.StatusUnauthorized {
		t.Errorf("Basic auth on the API: HTTP %d, want 401", got)
	}
	if got := send("GET", "/monitor/", "Authorization", "Basic "+basicAuth("ops", readSecret)); got != http.StatusOK {
		t.Errorf("Basic auth on the dashboard: HTTP %d, want 200", got)
	}
	if got := send("DELETE", "/monitor/api/queues/purge", "Authorization", "Bearer "+readSecret); got != http.StatusForbidden {
		t.Errorf("a read token deleting through the dashboard: HTTP %d, want 403", got)
	}
	var e apiError
	if code := b.call("POST", "/v1/jobs", adminSecret, `{"kind":"purge_user","user":"u","reason":"x","api_base":"http://203.0.113.9"}`, &e); code != 400 || !strings.HasPrefix(e.Error, "api_base:") {
		t.Errorf("a job naming api_base: HTTP %d %q", code, e.Error)
	}
}

func basicAuth(user, pass string) string {
	req, _ := http.NewRequest("GET", "http://x", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// TestPurgeScopeAndGaps: a purge's dry run shows its scope and warns of
// what it cannot reach (no peers and no index: no one-to-one chat; groups
// the user left, naming those the index knows); the job records them and
// its report shows them.
func TestPurgeScopeAndGaps(t *testing.T) {
	b := setup(t, nil)
	env := b.env
	env.Accounts(t, "spammer", "alice")
	g1 := env.Group(t, "Public", "g1", "spammer", "alice")
	env.SendGroup(t, g1, "", 4, "spammer", "alice")
	env.SendC2C(t, "spammer", "alice", 3)
	// The index saw the spammer in a group the scan does not list.
	if err := b.index.Add(t.Context(), imtest.AppID, msgindex.Entry{From: "spammer", Time: time.Now(), GroupID: "@TGS#left", MsgSeq: 9}); err != nil {
		t.Fatal(err)
	}
	req := CreateJobRequest{Kind: KindPurgeUser, Reason: "GDPR #10", User: "spammer", Source: SourceScan, Since: "2d", DryRun: true}
	var dry CreateJobResponse
	if code := b.call("POST", "/v1/jobs", adminSecret, req, &dry); code != 200 || dry.Messages != 2 || dry.Scope == nil {
		t.Fatalf("purge_user dry run: HTTP %d %+v", code, dry)
	}
	kinds := map[string]jobs.Gap{}
	for _, g := range dry.Scope.Gaps {
		kinds[g.Kind] = g
	}
	if _, ok := kinds[jobs.GapOneToOne]; !ok || len(dry.Warnings) != len(dry.Scope.Gaps) {
		t.Fatalf("a purge without peers or index does not warn of one-to-one chats: %+v %q", dry.Scope.Gaps, dry.Warnings)
	}
	if g := kinds[jobs.GapGroupsLeft]; len(g.Groups) != 1 || g.Groups[0] != "@TGS#left" {
		t.Fatalf("groups-left gap = %+v, want it to name @TGS#left", g)
	}
	if _, ok := kinds[jobs.GapRoaming]; ok {
		t.Fatalf("a 2-day range has a roaming gap: %+v", dry.Scope.Gaps)
	}
	if dry.Scope.Subject != "spammer" || dry.Scope.Since == nil || len(dry.Scope.Targets) != 1 ||
		dry.Scope.Targets[0].FirstSeq != 1 || dry.Scope.Targets[0].LastSeq != 4 {
		t.Fatalf("dry run scope = %+v", dry.Scope)
	}
	req.DryRun, req.Confirm = false, true
	var created CreateJobResponse
	if code := b.call("POST", "/v1/jobs", adminSecret, req, &created); code != http.StatusCreated || created.Job == nil {
		t.Fatalf("purge_user: HTTP %d %+v", code, created)
	}
	var rep jobs.Report
	if code := b.call("GET", "/v1/jobs/"+created.Job.ID+"/report", readSecret, nil, &rep); code != 200 || rep.Coverage == nil ||
		rep.Coverage.Subject != "spammer" || len(rep.Coverage.Gaps) != len(dry.Scope.Gaps) {
		t.Fatalf("report coverage: HTTP %d %+v", code, rep.Coverage)
	}
}

// TestTypedErrorsAnswerTheirStatus: each typed error of the Client answers
// its status, wrapped or not; a job cancelled while it was planned is a
// conflict (409), not a failure (500) that a client retrying 5xx would
// answer by creating the job again.
func TestTypedErrorsAnswerTheirStatus(t *testing.T) {
	b := setup(t, nil)
	for _, c := range []struct {
		err  error
		want int
	}{
		{&imrecall.CancelledError{JobID: "20261203T000000Z-00000000"}, http.StatusConflict},
		{fmt.Errorf("creating: %w", &imrecall.CancelledError{JobID: "j"}), http.StatusConflict},
		{&imrecall.FieldError{Field: "user", Reason: "required"}, http.StatusBadRequest},
		{&jobs.StatusError{JobID: "j", Status: jobs.StatusCancelled, Action: "re-queueing"}, http.StatusConflict},
		{jobs.ErrNotFound, http.StatusNotFound},
		{errors.New("redis: connection refused"), http.StatusInternalServerError},
	} {
		rec := httptest.NewRecorder()
		b.srv.fail(rec, httptest.NewRequest("POST", "/v1/jobs", nil), c.err)
		if rec.Code != c.want {
			t.Errorf("%v: HTTP %d, want %d", c.err, rec.Code, c.want)
		}
	}
}
