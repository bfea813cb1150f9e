package console_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/api"
	"github.com/imrecall/imrecall/console"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/redis/go-redis/v9"
)

// Test tokens.
var (
	admin  = api.Token{Name: "ops", Role: api.RoleAdmin, Secret: "console-admin-secret-0123456789"}
	admin2 = api.Token{Name: "bob", Role: api.RoleAdmin, Secret: "console-admin2-secret-012345678"}
	reader = api.Token{Name: "viewer", Role: api.RoleRead, Secret: "console-read-secret-0123456789"}
)

// bundle is a console mounted on the API, as serve mounts it, over a
// private redis-server.
type bundle struct {
	url    string
	rdb    *redis.Client
	store  *jobs.Store
	client *imrecall.Client
}

func setup(t *testing.T) *bundle { t.Helper(); return setupWith(t, imrecall.Config{}) }

// setupWith is setup with the Client's settings in cfg (Redis, Queue and
// AppID are set here).
func setupWith(t *testing.T, cfg imrecall.Config) *bundle {
	t.Helper()
	r := redistest.Start(t)
	rdb := r.Client()
	store := jobs.NewStore(rdb, "")
	enq := asynq.NewClient(asynq.RedisClientOpt{Addr: r.Addr()})
	t.Cleanup(func() { enq.Close() })
	tokens := []api.Token{admin, reader, admin2}
	cfg.Redis, cfg.Queue, cfg.AppID = rdb, enq, imtest.AppID
	client, err := imrecall.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Client: client, AppID: imtest.AppID, Schedules: producer.NewSchedules(rdb, ""), Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	h := srv.Handler()
	con, err := console.New(console.Config{Backend: console.NewClientBackend(client, h, tokens), Redis: rdb, Authenticate: srv.Authenticate,
		CapOf: func(string) int { return 200 }})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(con.Mount(h))
	t.Cleanup(hs.Close)
	return &bundle{url: hs.URL, rdb: rdb, store: store, client: client}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string // the last page's CSRF token
}

func (b *bundle) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: b.url, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request and returns the status and body; it remembers the
// page's CSRF token.
func (br *browser) do(method, path string, form url.Values, header ...[2]string) (int, string, *http.Response) {
	br.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, br.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, h := range header {
		req.Header.Set(h[0], h[1])
	}
	return br.send(req)
}

// send sends req and returns the status and body; it remembers the page's
// CSRF token.
func (br *browser) send(req *http.Request) (int, string, *http.Response) {
	br.t.Helper()
	resp, err := br.c.Do(req)
	if err != nil {
		br.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if m := csrfField.FindStringSubmatch(string(b)); m != nil {
		br.csrf = m[1]
	}
	return resp.StatusCode, string(b), resp
}

func (br *browser) signIn(secret string) int {
	br.t.Helper()
	br.do("GET", "/login", nil)
	st, _, _ := br.do("POST", "/login", url.Values{"csrf": {br.csrf}, "token": {secret}, "next": {"/jobs"}})
	if st == http.StatusSeeOther {
		br.do("GET", "/jobs", nil)
	}
	return st
}

// TestSignInSessionsAndRoles: a wrong token is refused; a session cookie is
// HttpOnly, SameSite=Strict and holds neither the token nor anything Redis
// keeps in clear; read tokens see but cannot act (refused server-side);
// admins dry-run, then create; signing out ends the session.
func TestSignInSessionsAndRoles(t *testing.T) {
	b := setup(t)
	anon := b.browser(t)
	if st, _, resp := anon.do("GET", "/jobs", nil); st != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("GET /jobs signed out: %d %s, want a redirect to /login", st, resp.Header.Get("Location"))
	}
	if st := anon.signIn("not-a-token-at-all-0123"); st != http.StatusUnauthorized {
		t.Fatalf("sign in with a wrong token: %d, want 401", st)
	}

	rd := b.browser(t)
	rd.do("GET", "/login", nil)
	st, _, resp := rd.do("POST", "/login", url.Values{"csrf": {rd.csrf}, "token": {reader.Secret}})
	if st != http.StatusSeeOther {
		t.Fatalf("sign in: %d", st)
	}
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "imrecall_session" && c.Value != "" {
			sc = c
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/" || sc.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP", sc)
	}
	if strings.Contains(sc.Value, reader.Secret) {
		t.Fatal("the session cookie holds the token")
	}
	// serve listens in plain HTTP behind a proxy that terminates TLS: the
	// proxy's word makes every console cookie Secure, or the browser would
	// send the session over any http:// URL of the host.
	for _, h := range [][2]string{{"X-Forwarded-Proto", "https"}, {"Forwarded", `for=192.0.2.1;proto=https`}} {
		tl := b.browser(t)
		_, _, resp := tl.do("GET", "/login", nil, h)
		st, _, resp2 := tl.do("POST", "/login", url.Values{"csrf": {tl.csrf}, "token": {reader.Secret}}, h)
		if st != http.StatusSeeOther {
			t.Fatalf("sign in behind a TLS proxy (%s): %d", h[0], st)
		}
		for _, c := range append(resp.Cookies(), resp2.Cookies()...) {
			if !c.Secure {
				t.Errorf("behind a TLS proxy (%s: %s): cookie %s is not Secure", h[0], h[1], c.Name)
			}
		}
	}
	keys, _ := b.rdb.Keys(context.Background(), "*console*").Result()
	for _, k := range keys {
		h, _ := b.rdb.HGetAll(context.Background(), k).Result()
		if strings.Contains(k, sc.Value) || strings.Contains(fmt.Sprint(h), reader.Secret) {
			t.Fatalf("Redis holds the session id or the token: %s %v", k, h)
		}
		if ttl, _ := b.rdb.TTL(context.Background(), k).Result(); ttl <= 0 {
			t.Fatalf("session %s has no TTL", k)
		}
	}
	if st, body, _ := rd.do("GET", "/new", nil); st != 200 || !strings.Contains(body, "Read tokens cannot create jobs") || strings.Contains(body, `id="dryrun"`) {
		t.Fatalf("GET /new as a read token: %d, want the form hidden", st)
	}
	form := url.Values{"csrf": {rd.csrf}, "kind": {"recall"}, "reason": {"INC-1"}, "messages": {`{"GroupId":"g1","MsgSeq":1}`}}
	if st, body, _ := rd.do("POST", "/new", form); st != http.StatusForbidden || !strings.Contains(body, "only admin tokens act") {
		t.Fatalf("POST /new as a read token: %d, want 403", st)
	}

	ad := b.browser(t)
	if st := ad.signIn(admin.Secret); st != http.StatusSeeOther {
		t.Fatalf("admin sign in: %d", st)
	}
	list := "{\"GroupId\":\"g1\",\"MsgSeq\":1}\n{\"GroupId\":\"g1\",\"MsgSeq\":2}\n{\"From_Account\":\"a\",\"To_Account\":\"b\",\"MsgKey\":\"1_2_3\"}\n"
	ad.do("GET", "/new", nil)
	st, body, _ := ad.do("POST", "/new", url.Values{"csrf": {ad.csrf}, "kind": {"recall"}, "reason": {"INC-1"}, "messages": {list}, "step": {"dryrun"}})
	if st != 200 || !strings.Contains(body, `<b id="p-messages">3</b>`) {
		t.Fatalf("dry run: %d\n%s", st, body)
	}
	// A listed recall's dry run says its calls (one group call for both
	// seqs, one one-to-one call) and their time at the cap.
	if !strings.Contains(body, `<b id="p-calls">2</b>`) || !strings.Contains(body, `<b id="p-time">1s</b>`) {
		t.Fatalf("dry run without its calls and time at the cap:\n%s", body)
	}
	if page, _ := b.store.Page(context.Background(), jobs.PageFilter{}, 0, 10); len(page.Jobs) != 0 {
		t.Fatalf("a dry run created %d jobs", len(page.Jobs))
	}
	m := regexp.MustCompile(`name="request" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no request in the dry run's confirmation form")
	}
	req := strings.NewReplacer("&#34;", `"`, "&quot;", `"`).Replace(m[1])
	st, _, resp = ad.do("POST", "/new", url.Values{"csrf": {ad.csrf}, "step": {"create"}, "request": {req}})
	loc := resp.Header.Get("Location")
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/jobs/") {
		t.Fatalf("create: %d %q", st, loc)
	}
	j, err := b.store.Get(context.Background(), strings.TrimPrefix(loc, "/jobs/"))
	if err != nil || j.Counts.Planned != 3 || j.RequestedBy != "token:ops" || j.Reason != "INC-1" {
		t.Fatalf("created job %+v, %v", j, err)
	}
	if st, body, _ := ad.do("GET", loc, nil); st != 200 || !strings.Contains(body, `id="act-cancel"`) {
		t.Fatalf("job page as admin: %d, want a cancel button", st)
	}
	if st, body, _ := rd.do("GET", loc, nil); st != 200 || strings.Contains(body, `id="act-cancel"`) || !strings.Contains(body, `id="n-planned">3<`) {
		t.Fatalf("job page as a read token: %d, want the report without actions", st)
	}
	if st, _, _ := rd.do("POST", loc+"/cancel", url.Values{"csrf": {rd.csrf}, "confirmed": {"yes"}}); st != http.StatusForbidden {
		t.Fatalf("cancel as a read token: %d, want 403", st)
	}
	// The cancel asks first, saying what it will do; then does it.
	if st, body, _ := ad.do("POST", loc+"/cancel", url.Values{"csrf": {ad.csrf}}); st != 200 || !strings.Contains(body, "dead-lettered as &#34;cancelled&#34;") {
		t.Fatalf("cancel without confirmation: %d\n%s", st, body)
	}
	if j, _ := b.store.Get(context.Background(), j.ID); j.Status == jobs.StatusCancelled {
		t.Fatal("cancelled before the confirmation")
	}
	if st, _, _ := ad.do("POST", loc+"/cancel", url.Values{"csrf": {ad.csrf}, "confirmed": {"yes"}, "reason": {"wrong list"}}); st != http.StatusSeeOther {
		t.Fatalf("confirmed cancel: %d", st)
	}
	if j, _ := b.store.Get(context.Background(), j.ID); j.Status != jobs.StatusCancelled {
		t.Fatalf("status %s after the confirmed cancel", j.Status)
	}

	if st, _, _ := ad.do("POST", "/logout", url.Values{"csrf": {ad.csrf}}); st != http.StatusSeeOther {
		t.Fatalf("sign out: %d", st)
	}
	if st, _, _ := ad.do("GET", "/jobs", nil); st != http.StatusSeeOther {
		t.Fatalf("GET /jobs after signing out: %d, want a redirect to sign in", st)
	}
}

// TestForgedPostsRefused: a POST without the session's CSRF token, or from
// another site's page (Origin, Sec-Fetch-Site), changes nothing; the API's
// routes stay where they were.
func TestForgedPostsRefused(t *testing.T) {
	b := setup(t)
	ad := b.browser(t)
	ad.signIn(admin.Secret)
	add := url.Values{"kind": {"purge_user"}, "user": {"u1"}, "reason": {"weekly"}, "name": {"nightly"}, "cron": {"@daily"}}
	cases := []struct {
		name   string
		form   url.Values
		header [][2]string
		want   string
	}{
		{"no csrf", add, nil, "CSRF token is missing or stale"},
		{"wrong csrf", withCSRF(add, "forged"), nil, "CSRF token is missing or stale"},
		{"other origin", withCSRF(add, ad.csrf), [][2]string{{"Origin", "http://evil.example"}}, "cross-site request refused"},
		{"cross-site fetch", withCSRF(add, ad.csrf), [][2]string{{"Sec-Fetch-Site", "cross-site"}}, "cross-site request refused"},
	}
	for _, tc := range cases {
		st, body, _ := ad.do("POST", "/schedules", tc.form, tc.header...)
		if st != http.StatusForbidden || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d, want 403 %q", tc.name, st, tc.want)
		}
	}
	if list, _ := producer.NewSchedules(b.rdb, "").List(context.Background()); len(list) != 0 {
		t.Fatalf("a forged post added %d schedules", len(list))
	}
	// The form's dry run says when the schedule would fire, adds nothing,
	// and keeps the form as it was.
	dry := withCSRF(add, ad.csrf)
	dry.Set("step", "dryrun")
	st, body, _ := ad.do("POST", "/schedules", dry)
	if st != http.StatusOK || !regexp.MustCompile(`id="preview">Dry run, nothing added: <b>nightly</b> \(@daily\) would fire next at (\d{4}-\d\d-\d\d 00:00:00(, | UTC)){3}`).MatchString(body) || !strings.Contains(body, `value="weekly"`) {
		t.Fatalf("schedule dry run: %d, want its next three due times and the form kept:\n%s", st, body)
	}
	if list, _ := producer.NewSchedules(b.rdb, "").List(context.Background()); len(list) != 0 {
		t.Fatalf("a dry run added %d schedules", len(list))
	}
	if st, _, _ := ad.do("POST", "/schedules", withCSRF(add, ad.csrf)); st != http.StatusSeeOther {
		t.Fatalf("add schedule: %d", st)
	}
	if list, _ := producer.NewSchedules(b.rdb, "").List(context.Background()); len(list) != 1 || list[0].CreatedBy != "token:ops" {
		t.Fatalf("schedules %+v", list)
	}
	// The page says when it fires next: @daily, at midnight UTC.
	if st, body, _ := ad.do("GET", "/schedules", nil); st != http.StatusOK || !regexp.MustCompile(`<td class="next">\d{4}-\d\d-\d\d 00:00:00</td>`).MatchString(body) {
		t.Fatalf("GET /schedules: %d, want the next due time at midnight UTC:\n%s", st, body)
	}
	// Removing it asks why, and the audit trail says who and why.
	if st, _, _ := ad.do("POST", "/schedules/nightly/remove", withCSRF(url.Values{"confirmed": {"yes"}, "reason": {"replaced by a weekly one"}}, ad.csrf)); st != http.StatusSeeOther {
		t.Fatalf("remove schedule: %d", st)
	}
	evs, err := jobs.NewStore(b.rdb, "").AuditLog(t.Context(), 10)
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Action != "schedule_remove" || evs[len(evs)-1].Actor != "token:ops" || evs[len(evs)-1].Detail != "nightly; replaced by a weekly one" {
		t.Fatalf("audit trail after removing: %+v (%v)", evs, err)
	}
	// The API is still the API: JSON, bearer tokens.
	req, _ := http.NewRequest("GET", b.url+"/v1/jobs", nil)
	req.Header.Set("Authorization", "Bearer "+reader.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /v1/jobs: %v %v", resp, err)
	}
	resp.Body.Close()
}

func withCSRF(v url.Values, token string) url.Values {
	out := url.Values{"csrf": {token}}
	for k, vs := range v {
		out[k] = vs
	}
	return out
}

// TestPagesFastWith10000Jobs: with 10,000 jobs in Redis, the jobs page (the
// first, a deep one, and a filter that matches nothing, which reads every
// job's status) answers in under a second.
func TestPagesFastWith10000Jobs(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 10,000 jobs")
	}
	b := setup(t)
	ctx := context.Background()
	const n = 10_000
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				if _, err := b.store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: "incident", AppID: imtest.AppID, RequestedBy: "token:ops", Reason: fmt.Sprint("job ", i)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ad := b.browser(t)
	ad.signIn(admin.Secret)
	for _, path := range []string{"/jobs", "/jobs?from=9950", "/jobs?status=failed", "/jobs?kind=purge:user"} {
		var worst time.Duration
		for range 3 {
			start := time.Now()
			st, body, _ := ad.do("GET", path, nil)
			took := time.Since(start)
			if st != 200 || !strings.Contains(body, "10000 jobs in all") {
				t.Fatalf("GET %s: %d", path, st)
			}
			worst = max(worst, took)
		}
		t.Logf("GET %s with %d jobs: %s (worst of 3)", path, n, worst.Round(time.Millisecond))
		if worst > time.Second {
			t.Errorf("GET %s took %s, want under a second", path, worst)
		}
	}
}

// postFile posts a multipart form with fields and one file, as the new-job
// form's upload does.
func (br *browser) postFile(path string, fields url.Values, file, content string) (int, string) {
	br.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, vs := range fields {
		for _, v := range vs {
			mw.WriteField(k, v)
		}
	}
	fw, err := mw.CreateFormFile("file", file)
	if err != nil {
		br.t.Fatal(err)
	}
	io.WriteString(fw, content)
	mw.Close()
	req, _ := http.NewRequest("POST", br.base+path, &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	st, body, _ := br.send(req)
	return st, body
}

// createFromDryRun confirms the dry run shown in body and returns the new
// job's page.
func (br *browser) createFromDryRun(body string) string {
	br.t.Helper()
	m := regexp.MustCompile(`name="request" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		br.t.Fatalf("no request in the dry run's confirmation form:\n%s", body)
	}
	req := strings.NewReplacer("&#34;", `"`, "&quot;", `"`).Replace(m[1])
	st, _, resp := br.do("POST", "/new", url.Values{"csrf": {br.csrf}, "step": {"create"}, "request": {req}})
	loc := resp.Header.Get("Location")
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/jobs/") {
		br.t.Fatalf("create: %d %q", st, loc)
	}
	return loc
}

// TestApprovalInConsole: with approval above 2 and a cool-off, a list of 3
// messages uploaded by admin ops is created awaiting approval, its page
// naming the requester; ops's own approval is refused (403) and changes
// nothing; bob approves it, recorded as token:bob, and in the cool-off the
// page says when it starts and offers Cancel, which stops it.
func TestApprovalInConsole(t *testing.T) {
	b := setupWith(t, imrecall.Config{ApprovalAbove: 2, ApprovalDelay: time.Hour})
	ctx := context.Background()
	ops := b.browser(t)
	ops.signIn(admin.Secret)
	ops.do("GET", "/new", nil)
	list := "{\"GroupId\":\"g1\",\"MsgSeq\":1}\n{\"GroupId\":\"g1\",\"MsgSeq\":2}\n{\"GroupId\":\"g1\",\"MsgSeq\":3}\n"
	st, body := ops.postFile("/new", url.Values{"csrf": {ops.csrf}, "kind": {"recall"}, "reason": {"INC-7"}}, "list.jsonl", list)
	if st != 200 || !strings.Contains(body, `<b id="p-messages">3</b>`) {
		t.Fatalf("dry run of an uploaded list: %d\n%s", st, body)
	}
	loc := ops.createFromDryRun(body)
	id := strings.TrimPrefix(loc, "/jobs/")
	j, err := b.store.Get(ctx, id)
	if err != nil || j.Status != jobs.StatusAwaitingApproval || j.Requester != "token:ops" || j.Counts.Planned != 3 {
		t.Fatalf("job of 3 messages above 2: %+v, %v; want awaiting_approval, requested by token:ops", j, err)
	}
	if st, body, _ := ops.do("GET", loc, nil); st != 200 || !strings.Contains(body, `id="requester">token:ops<`) || !strings.Contains(body, `id="act-approve"`) {
		t.Fatalf("awaiting job's page: %d, want the requester and an approve button\n%s", st, body)
	}
	if st, body, _ := ops.do("GET", "/jobs?status=awaiting_approval", nil); st != 200 || !strings.Contains(body, id) {
		t.Fatalf("jobs filtered by awaiting_approval: %d, want %s listed", st, id)
	}
	if st, body, _ := ops.do("POST", loc+"/approve", url.Values{"csrf": {ops.csrf}}); st != 200 || !strings.Contains(body, "another admin") {
		t.Fatalf("approve without confirmation: %d, want the confirmation page\n%s", st, body)
	}
	st, body, _ = ops.do("POST", loc+"/approve", url.Values{"csrf": {ops.csrf}, "confirmed": {"yes"}, "reason": {"mine"}})
	if st != http.StatusForbidden || !strings.Contains(body, "cannot approve it too") {
		t.Fatalf("the requester's own approval: %d, want 403\n%s", st, body)
	}
	if j, _ := b.store.Get(ctx, id); j.Status != jobs.StatusAwaitingApproval || j.ApprovedBy != "" {
		t.Fatalf("after the refused approval: %s approved by %q", j.Status, j.ApprovedBy)
	}

	bob := b.browser(t)
	bob.signIn(admin2.Secret)
	bob.do("GET", loc, nil)
	if st, _, _ := bob.do("POST", loc+"/approve", url.Values{"csrf": {bob.csrf}, "confirmed": {"yes"}, "reason": {"checked"}}); st != http.StatusSeeOther {
		t.Fatalf("bob's approval: %d", st)
	}
	j, _ = b.store.Get(ctx, id)
	if j.Status != jobs.StatusApproved || j.ApprovedBy != "token:bob" || j.StartsAt == nil {
		t.Fatalf("after bob's approval: %+v; want approved by token:bob with a cool-off", j)
	}
	st, body, _ = bob.do("GET", loc, nil)
	if st != 200 || !strings.Contains(body, `id="approved-by">token:bob<`) || !strings.Contains(body, `id="cooloff"`) || !strings.Contains(body, `id="act-cancel"`) {
		t.Fatalf("approved job's page: %d, want the approver, the cool-off and a cancel button\n%s", st, body)
	}
	if st, _, _ := bob.do("POST", loc+"/cancel", url.Values{"csrf": {bob.csrf}, "confirmed": {"yes"}, "reason": {"changed my mind"}}); st != http.StatusSeeOther {
		t.Fatalf("cancel in the cool-off: %d", st)
	}
	if j, _ := b.store.Get(ctx, id); j.Status != jobs.StatusCancelled {
		t.Fatalf("after cancelling in the cool-off: %s", j.Status)
	}
	evs, _ := b.store.AuditLog(ctx, 100)
	who := map[string]string{}
	for _, e := range evs {
		if e.JobID == id {
			who[e.Action] = e.Actor
		}
	}
	if who["approve"] != "token:bob" || who["cancel"] != "token:bob" {
		t.Fatalf("audit trail of %s: %v; want approve and cancel by token:bob", id, who)
	}
}

// TestBackendActsOnlyForCurrentAdmins: a session outlives a restart with
// other tokens, so the backend checks the token each time: one the server
// no longer has, or has as a read token now, is refused (403) and the job
// is left as it was; a current admin's cancel is recorded as its principal.
func TestBackendActsOnlyForCurrentAdmins(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	be := console.NewClientBackend(b.client, http.NotFoundHandler(), []api.Token{admin, {Name: "bob", Role: api.RoleRead, Secret: admin2.Secret}})
	resp, err := be.Create(ctx, admin.Name, producer.JobRequest{Kind: producer.KindRecall, Reason: "INC-8", Confirm: true,
		Messages: []producer.MessageRef{{GroupID: "g1", MsgSeq: 1}}})
	if err != nil || resp.Job == nil || resp.Job.Requester != "token:ops" {
		t.Fatalf("create as ops: %+v, %v", resp.Job, err)
	}
	id := resp.Job.ID
	for _, who := range []string{"bob", "gone"} {
		var be2 *console.Error
		if err := be.Act(ctx, who, id, console.ActionCancel, "x"); !errors.As(err, &be2) || be2.Status != http.StatusForbidden {
			t.Fatalf("cancel as %s: %v, want a 403 refusal", who, err)
		}
	}
	if j, _ := b.store.Get(ctx, id); j.Status == jobs.StatusCancelled {
		t.Fatal("a refused cancel cancelled the job")
	}
	if err := be.Act(ctx, admin.Name, id, console.ActionCancel, "wrong list"); err != nil {
		t.Fatal(err)
	}
	if j, _ := b.store.Get(ctx, id); j.Status != jobs.StatusCancelled {
		t.Fatalf("after ops's cancel: %s", j.Status)
	}
	evs, _ := b.store.AuditLog(ctx, 10)
	var by []string
	for _, e := range evs {
		if e.JobID == id && e.Action == "cancel" {
			by = append(by, e.Actor)
		}
	}
	if len(by) != 1 || by[0] != "token:ops" {
		t.Fatalf("cancels recorded: %v, want one by token:ops", by)
	}
}

// TestRevokedTokenEndsSession: serve restarts without the read token a
// session signed in with, with the first admin's secret rotated, and with
// the second admin demoted to read. The rotated secret's session ends too. The
// read session's next page, whichever, sends it to sign in (its session
// removed); the demoted one reads in its new role and its actions are
// refused. A helper's attack reproduced the reads: a revoked token's
// session read jobs, exports and schedules for the rest of its 12 hours.
func TestRevokedTokenEndsSession(t *testing.T) {
	b := setup(t)
	viewer, demoted := b.browser(t), b.browser(t)
	if st := viewer.signIn(reader.Secret); st != http.StatusSeeOther {
		t.Fatalf("sign in: HTTP %d", st)
	}
	if st := demoted.signIn(admin2.Secret); st != http.StatusSeeOther {
		t.Fatalf("sign in: HTTP %d", st)
	}
	rotated := b.browser(t)
	if st := rotated.signIn(admin.Secret); st != http.StatusSeeOther {
		t.Fatalf("sign in: HTTP %d", st)
	}
	// ops keeps its name with a new secret (its old one leaked).
	tokens := []api.Token{{Name: admin.Name, Role: api.RoleAdmin, Secret: "rotated-" + admin.Secret}, {Name: admin2.Name, Role: api.RoleRead, Secret: admin2.Secret}}
	srv, err := api.New(api.Config{Client: b.client, AppID: imtest.AppID, Schedules: producer.NewSchedules(b.rdb, ""), Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	h, err := console.MountOn(srv, b.client, tokens, b.rdb, "", func(string) int { return 200 }, nil)
	if err != nil {
		t.Fatal(err)
	}
	restarted := httptest.NewServer(h)
	t.Cleanup(restarted.Close)
	viewer.base, demoted.base, rotated.base = restarted.URL, restarted.URL, restarted.URL
	if st, _, resp := rotated.do("GET", "/jobs", nil); st != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Errorf("GET /jobs with a session of a rotated secret: HTTP %d to %q, want a redirect to sign in", st, resp.Header.Get("Location"))
	}

	for _, path := range []string{"/jobs", "/schedules", "/index", "/new"} {
		st, _, resp := viewer.do("GET", path, nil)
		if st != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
			t.Errorf("GET %s with a revoked token's session: HTTP %d to %q, want a redirect to sign in", path, st, resp.Header.Get("Location"))
		}
	}
	if st, _, _ := viewer.do("GET", "/jobs/stream", nil); st != http.StatusUnauthorized {
		t.Errorf("the live stream with a revoked token's session: HTTP %d, want 401", st)
	}
	if keys, _ := b.rdb.Keys(t.Context(), "*console:session:*").Result(); len(keys) != 1 {
		t.Errorf("sessions kept: %d, want only the demoted admin's", len(keys))
	}
	st, body, _ := demoted.do("GET", "/jobs", nil)
	if st != http.StatusOK || !strings.Contains(body, admin2.Name+" (read)") {
		t.Fatalf("the demoted admin's page: HTTP %d, want it to show role read", st)
	}
	if st, _, _ := demoted.do("POST", "/schedules", url.Values{"csrf": {demoted.csrf}, "name": {"x"}}); st != http.StatusForbidden {
		t.Fatalf("the demoted admin adding a schedule: HTTP %d, want 403", st)
	}
}

// TestNoWayOutOfTheConsole: the static files are served, the templates
// beside them are not (an encoded "..", which a helper's attack used to
// read them), and a sign-in's next page is one of the console's: a tab or
// a backslash that a browser would turn into another site is refused.
func TestNoWayOutOfTheConsole(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	if st, body, _ := br.do("GET", "/static/console.css", nil); st != http.StatusOK || body == "" {
		t.Fatalf("GET /static/console.css: HTTP %d", st)
	}
	for _, path := range []string{"/static/%2e%2e/templates/login.html", "/static/%2E%2E/templates/layout.html", "/static/..%2ftemplates/login.html"} {
		req, _ := http.NewRequest("GET", b.url+path, nil)
		if st, body, _ := br.send(req); st == http.StatusOK || strings.Contains(body, "{{") {
			t.Errorf("GET %s: HTTP %d, a template served", path, st)
		}
	}
	for _, next := range []string{"/\t/evil.example/x", "/\n/evil.example", "/\\evil.example", "/jobs\\..\\..\\x", "//evil.example", "https://evil.example"} {
		br.do("GET", "/login", nil)
		st, _, resp := br.do("POST", "/login", url.Values{"csrf": {br.csrf}, "token": {reader.Secret}, "next": {next}})
		if st != http.StatusSeeOther || resp.Header.Get("Location") != "/jobs" {
			t.Errorf("sign in with next %q: HTTP %d to %q, want /jobs", next, st, resp.Header.Get("Location"))
		}
	}
}

// TestStreamEndsWithTheSession: a job page's live stream ends at the next
// poll after its session does (signed out in another tab), rather than
// streaming the job's progress until the job finishes (a helper's attack:
// it read on after logout). The browser's reconnection is refused.
func TestStreamEndsWithTheSession(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	created, err := b.client.Create(ctx, imrecall.GroupRecall{GroupID: "@TGS#1", Seqs: []int64{1}},
		imrecall.CreateOptions{Actor: "t", Reason: "stream test", Confirmed: true})
	if err != nil {
		t.Fatal(err)
	}
	ad := b.browser(t)
	if st := ad.signIn(admin.Secret); st != http.StatusSeeOther {
		t.Fatalf("sign in: HTTP %d", st)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", b.url+"/jobs/stream?id="+created.Job.ID, nil)
	resp, err := ad.c.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); err != nil || line != "event: progress\n" {
		t.Fatalf("the stream's first line: %q %v", line, err)
	}
	if st, _, _ := ad.do("POST", "/logout", url.Values{"csrf": {ad.csrf}}); st != http.StatusSeeOther {
		t.Fatalf("logout: HTTP %d", st)
	}
	// The job never finishes (no worker): the stream ends only because the
	// session did. The timer only bounds a failing test.
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, rd); ended <- err }()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("the stream failed rather than ended: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream outlived its session")
	}
	if st, _, _ := ad.do("GET", "/jobs/stream?id="+created.Job.ID, nil); st != http.StatusUnauthorized {
		t.Fatalf("reconnecting after logout: HTTP %d, want 401", st)
	}
}

// TestScheduleDryRunKeepsTheUploadedList: a browser does not send a file
// again, so the dry run of a recall schedule puts the uploaded list in the
// form's text; adding the schedule next, without the file, adds the
// messages the dry run checked.
func TestScheduleDryRunKeepsTheUploadedList(t *testing.T) {
	b := setup(t)
	ops := b.browser(t)
	ops.signIn(admin.Secret)
	fields := url.Values{"csrf": {ops.csrf}, "kind": {"recall"}, "reason": {"hourly sweep"}, "name": {"sweep"}, "cron": {"@hourly"}, "step": {"dryrun"}}
	st, body := ops.postFile("/schedules", fields, "list.jsonl", `{"GroupId":"@TGS#1","MsgSeq":7}`+"\n"+`{"From_Account":"a","To_Account":"b","MsgKey":"1_2_3"}`+"\n")
	if st != http.StatusOK || !strings.Contains(body, "The messages of list.jsonl are in the list below.") {
		t.Fatalf("dry run: %d\n%s", st, body)
	}
	m := regexp.MustCompile(`(?s)<textarea id="messages" name="messages">(.*?)</textarea>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no list in the form after the dry run:\n%s", body)
	}
	text := html.UnescapeString(m[1])
	fields.Del("step")
	fields.Set("messages", text)
	if st, _, _ := ops.do("POST", "/schedules", fields); st != http.StatusSeeOther {
		t.Fatalf("add after the dry run: %d", st)
	}
	list, err := producer.NewSchedules(b.rdb, "").List(t.Context())
	if err != nil || len(list) != 1 || list[0].Request == nil || len(list[0].Request.Messages) != 2 || list[0].Request.Messages[1].MsgKey != "1_2_3" {
		t.Fatalf("schedules %+v (%v), want sweep with the uploaded two messages", list, err)
	}
}
