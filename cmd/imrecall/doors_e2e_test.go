package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/tasks"
)

const e2eReadToken = "e2e-read-token-0123456789abcdef"

// doors is a serve process with an admin and a read token, a worker, and a
// second HTTP server standing for "another host" that counts what reaches it.
type doors struct {
	*e2e
	base      string
	elsewhere *httptest.Server
	hits      atomic.Int64
}

func newDoors(t *testing.T) *doors {
	d := &doors{e2e: newE2E(t, emulator.Config{Rate: 200})}
	d.elsewhere = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.hits.Add(1)
		http.Error(w, "not Tencent", http.StatusTeapot)
	}))
	t.Cleanup(d.elsewhere.Close)
	tokens := filepath.Join(t.TempDir(), "tokens")
	writeTestFile(t, tokens, "auditor:read:"+e2eReadToken+"\n")
	addr := freeAddr(t)
	// The confirmer is off: TestForgedCallbacksRecallNothingOfOthers is a
	// purge by index before confirmation.
	d.serveProc(addr, "--tokens-file", tokens, "--confirm-rate", "0")
	d.base = "http://" + addr
	return d
}

// call sends a request; header pairs are added as given. It returns the
// status and the body.
func (d *doors) call(method, path, body string, header ...string) (int, string) {
	d.t.Helper()
	code, b := httpCall(d.t, method, d.base+path, body, header...)
	return code, string(b)
}

var (
	asAdmin = bearer(e2eAPIToken)
	asJSON  = []string{"Content-Type", "application/json"}
)

func with(hs ...[]string) []string { return slices.Concat(hs...) }

// TestServeRefusesCrossSiteAndNonBearerRequests is issue 13's CSRF door,
// through serve: a text/plain POST (what an HTML form can send), a POST
// from another site's page (Origin, Sec-Fetch-Site), and Basic auth outside
// /monitor/ are refused, and none of them creates a job; a read token
// cannot change anything through the dashboard.
func TestServeRefusesCrossSiteAndNonBearerRequests(t *testing.T) {
	d := newDoors(t)
	job := `{"kind":"recall","reason":"csrf","messages":[{"GroupId":"@TGS#x","MsgSeq":1}]}`
	basicAdmin := "Basic " + basic("x", e2eAPIToken)
	for _, c := range []struct {
		name   string
		header []string
		want   int
	}{
		{"text/plain", with(asAdmin, []string{"Content-Type", "text/plain"}), http.StatusUnsupportedMediaType},
		{"form", with(asAdmin, []string{"Content-Type", "application/x-www-form-urlencoded"}), http.StatusUnsupportedMediaType},
		{"no content type", asAdmin, http.StatusUnsupportedMediaType},
		{"cross-site Origin", with(asAdmin, asJSON, []string{"Origin", "https://evil.example"}), http.StatusForbidden},
		{"Origin null", with(asAdmin, asJSON, []string{"Origin", "null"}), http.StatusForbidden},
		{"Sec-Fetch-Site cross-site", with(asAdmin, asJSON, []string{"Sec-Fetch-Site", "cross-site"}), http.StatusForbidden},
		{"Basic auth", with(asJSON, []string{"Authorization", basicAdmin}), http.StatusUnauthorized},
		{"token in the query", asJSON, http.StatusUnauthorized},
	} {
		path := "/v1/jobs"
		if c.name == "token in the query" {
			path += "?access_token=" + e2eAPIToken
		}
		if got, body := d.call("POST", path, job, c.header...); got != c.want {
			t.Errorf("%s: HTTP %d %s, want %d", c.name, got, body, c.want)
		}
	}
	if got, _ := d.call("GET", "/v1/jobs", "", "Authorization", basicAdmin); got != http.StatusUnauthorized {
		t.Errorf("Basic auth on GET /v1/jobs: HTTP %d, want 401", got)
	}
	if list, err := d.store.List(t.Context(), 10); err != nil || len(list) != 0 {
		t.Fatalf("refused requests created jobs: %v %v", list, err)
	}
	// The same request, same-origin and JSON, is accepted.
	if got, body := d.call("POST", "/v1/jobs", job, with(asAdmin, asJSON, []string{"Origin", d.base, "Sec-Fetch-Site", "same-origin"})...); got != http.StatusCreated {
		t.Fatalf("a same-origin JSON POST: HTTP %d %s", got, body)
	}
	// Cancel with an empty body needs JSON too (a form can send an empty body).
	if got, _ := d.call("POST", "/v1/jobs/20261122T230512Z-9f3a1c2b/cancel", "", with(asAdmin, []string{"Content-Type", "text/plain"})...); got != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain cancel: HTTP %d, want 415", got)
	}

	// The dashboard: Basic auth works there (browsers); a read token reads
	// but cannot change anything; an admin cannot be made to change
	// anything from another site.
	basicRead := "Basic " + basic("auditor", e2eReadToken)
	if got, _ := d.call("GET", "/monitor/", "", "Authorization", basicRead); got != http.StatusOK {
		t.Errorf("read token on /monitor/: HTTP %d, want 200", got)
	}
	if got, _ := d.call("GET", "/monitor/api/queues", "", "Authorization", basicRead); got != http.StatusOK {
		t.Errorf("read token on /monitor/api/queues: HTTP %d, want 200", got)
	}
	// Something to delete: a pending task on the backfill queue.
	task := asynq.NewTask("probe:task", []byte(`{}`), asynq.Queue(tasks.QueueBackfill), asynq.TaskID("probe"))
	cl := asynq.NewClient(asynq.RedisClientOpt{Addr: d.redis.Addr()})
	defer cl.Close()
	if _, err := cl.Enqueue(task); err != nil {
		t.Fatal(err)
	}
	del := "/monitor/api/queues/" + tasks.QueueBackfill + "/pending_tasks/probe"
	for _, c := range []struct {
		name   string
		header []string
	}{
		{"read token, Basic", []string{"Authorization", basicRead}},
		{"read token, Bearer", []string{"Authorization", "Bearer " + e2eReadToken}},
		{"admin, cross-site", []string{"Authorization", basicAdmin, "Origin", "https://evil.example"}},
		{"admin, Sec-Fetch-Site", []string{"Authorization", basicAdmin, "Sec-Fetch-Site", "cross-site"}},
	} {
		if got, body := d.call("DELETE", del, "", c.header...); got < 400 {
			t.Errorf("%s deleting a task through /monitor: HTTP %d %s", c.name, got, body)
		}
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: d.redis.Addr()})
	defer insp.Close()
	if _, err := insp.GetTaskInfo(tasks.QueueBackfill, "probe"); err != nil {
		t.Fatalf("the task was deleted through the dashboard: %v", err)
	}
	if got, body := d.call("DELETE", del, "", "Authorization", basicAdmin); got >= 300 {
		t.Fatalf("the admin deleting a task, same-site: HTTP %d %s", got, body)
	}
}

func basic(user, pass string) string {
	req, _ := http.NewRequest("GET", "http://x", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// TestScheduleConnectionSettingsNeverReachAWorker is issue 13's first door,
// through serve: a schedule naming an API base, an admin identity, a file or
// a command line is refused with 400 naming the field; a schedule stored as
// a command line before (as an old deployment has it) and an old firing
// still queued are refused by the scheduler and the worker, and no worker
// ever calls the other host, while a typed schedule fires and runs.
func TestScheduleConnectionSettingsNeverReachAWorker(t *testing.T) {
	d := newDoors(t)
	other := d.elsewhere.URL
	for _, c := range []struct{ body, field string }{
		{`{"name":"s","cron":"@every 1s","request":{"kind":"purge_group","groups":["@TGS#1"],"reason":"x","api_base":"` + other + `"}}`, "request.api_base"},
		{`{"name":"s","cron":"@every 1s","request":{"kind":"purge_user","user":"u","reason":"x","admin":"someoneelse"}}`, "request.admin"},
		{`{"name":"s","cron":"@every 1s","request":{"kind":"purge_user","user":"u","reason":"x","peers_file":"/proc/self/environ"}}`, "request.peers_file"},
		{`{"name":"s","cron":"@every 1s","secret_key":"x","request":{"kind":"purge_user","user":"u","reason":"x"}}`, "secret_key"},
		{`{"name":"s","cron":"@every 1s","args":["purge","group","--group","@TGS#1","--api-base","` + other + `"]}`, "args"},
	} {
		got, body := d.call("POST", "/v1/schedules", c.body, with(asAdmin, asJSON)...)
		var e struct{ Error string }
		_ = json.Unmarshal([]byte(body), &e)
		if got != http.StatusBadRequest || !strings.HasPrefix(e.Error, c.field+":") {
			t.Errorf("schedule with %s: HTTP %d %s; want 400 naming %s", c.field, got, body, c.field)
		}
	}
	rdb := d.redis.Client()
	ctx := t.Context()
	// What an old deployment holds: a command-line schedule and a queued firing.
	legacy, _ := json.Marshal(map[string]any{"name": "legacy", "cron": "@every 1s", "created_by": "old", "created_at": time.Now(),
		"args": []string{"purge", "group", "--group", "@TGS#1", "--api-base", other, "--admin", "someoneelse"}})
	if err := rdb.HSet(ctx, "imrecall:schedules", "legacy", legacy).Err(); err != nil {
		t.Fatal(err)
	}
	old, _ := json.Marshal(map[string]any{"name": "legacy-queued", "args": []string{"purge", "user", "--user", "u", "--api-base", other, "--peers-file", "/proc/self/environ"}})
	cl := asynq.NewClient(asynq.RedisClientOpt{Addr: d.redis.Addr()})
	defer cl.Close()
	if _, err := cl.Enqueue(asynq.NewTask(tasks.TypeScheduleRun, old, asynq.Queue(tasks.QueueBackfill), asynq.TaskID("legacy-queued"))); err != nil {
		t.Fatal(err)
	}
	// A typed schedule, through the API.
	ok := `{"name":"typed","cron":"@every 1s","reason":"doors","request":{"kind":"recall","messages":[{"GroupId":"@TGS#none","MsgSeq":1}]}}`
	if got, body := d.call("POST", "/v1/schedules", ok, with(asAdmin, asJSON)...); got != http.StatusCreated {
		t.Fatalf("typed schedule: HTTP %d %s", got, body)
	}
	d.worker("w")
	logPath := filepath.Join(t.TempDir(), "scheduler.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	sched := imrecallCommand(context.Background(), d.bin, "scheduler", "--sync", "200ms")
	sched.Env = d.environ()
	sched.Stdout, sched.Stderr = f, f
	if err := sched.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sched.Process.Signal(syscall.SIGTERM); _ = sched.Wait(); f.Close() })

	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: d.redis.Addr()})
	defer insp.Close()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		list, err := d.store.List(wctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		typed := 0
		for _, j := range list {
			if j.RequestedBy != "schedule:typed" {
				t.Fatalf("job %s requested by %q", j.ID, j.RequestedBy)
			}
			typed++
		}
		info, _ := insp.GetTaskInfo(tasks.QueueBackfill, "legacy-queued")
		if typed >= 2 && info != nil && info.State == asynq.TaskStateArchived {
			if !strings.Contains(info.LastErr, "legacy-queued") || strings.Contains(info.LastErr, other) {
				t.Errorf("the old firing's error: %q", info.LastErr)
			}
			break
		}
		select {
		case <-wctx.Done():
			t.Fatalf("after a minute: %d typed jobs, the old firing %+v\n%s", typed, info, tail(logPath, 3000))
		case <-time.After(200 * time.Millisecond):
		}
	}
	if log := tail(logPath, 1<<20); !strings.Contains(log, "schedule legacy holds a command line") {
		t.Errorf("the scheduler did not name the refused schedule:\n%s", log)
	}
	if n := d.hits.Load(); n != 0 {
		t.Fatalf("the other host received %d requests", n)
	}
}

// TestForgedCallbacksRecallNothingOfOthers is issue 13's callback door,
// through serve: an unsigned callback and one with a wrong Sign are not
// indexed; a callback reusing a valid signed URL with a forged body (Sign
// does not cover the body) is indexed, but the purge by index confirms
// senders from the history, so mallory's purge recalls her messages and
// nothing of alice's, and the report counts the refused entries.
func TestForgedCallbacksRecallNothingOfOthers(t *testing.T) {
	d := newDoors(t)
	env := d.env
	env.Accounts(t, "alice", "mallory")
	g := env.Group(t, "Public", "@TGS#doors", "alice", "mallory")
	aliceSeqs := env.SendGroup(t, g, "", 4, "alice")
	mallorySeqs := env.SendGroup(t, g, "", 2, "mallory")
	aliceKeys := env.SendC2C(t, "alice", "mallory", 2)

	now := time.Now().Unix()
	rt := strconv.FormatInt(now, 10)
	post := func(sign, command, body string) int {
		q := url.Values{"SdkAppid": {strconv.FormatInt(imtest.AppID, 10)}, "CallbackCommand": {command}, "contenttype": {"json"}, "RequestTime": {rt}}
		if sign != "" {
			q.Set("Sign", sign)
		}
		got, _ := d.call("POST", "/callback?"+q.Encode(), body, asJSON...)
		return got
	}
	groupCB := func(from string, seq int64) string {
		return fmt.Sprintf(`{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":%q,"Type":"Public","From_Account":%q,"MsgSeq":%d,"MsgTime":%d}`, g, from, seq, now)
	}
	good := msgindex.Sign(e2eCallbackToken, rt)
	// Unsigned and wrongly signed: refused, not indexed.
	if got := post("", msgindex.CommandGroupAfterSend, groupCB("mallory", aliceSeqs[0])); got != http.StatusUnauthorized {
		t.Fatalf("unsigned callback: HTTP %d", got)
	}
	if got := post(msgindex.Sign("guess", rt), msgindex.CommandGroupAfterSend, groupCB("mallory", aliceSeqs[1])); got != http.StatusUnauthorized {
		t.Fatalf("wrongly signed callback: HTTP %d", got)
	}
	idx := msgindex.New(d.redis.Client(), "", 0)
	count := func() int {
		n := 0
		_ = idx.Lookup(t.Context(), imtest.AppID, "mallory", time.Time{}, time.Time{}, func(msgindex.Entry) error { n++; return nil })
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("refused callbacks indexed %d entries", n)
	}
	// mallory's real messages, then forged bodies on the same signed URL.
	for _, s := range mallorySeqs {
		if got := post(good, msgindex.CommandGroupAfterSend, groupCB("mallory", s)); got != http.StatusOK {
			t.Fatalf("callback: HTTP %d", got)
		}
	}
	if got := post(good, msgindex.CommandGroupAfterSend, groupCB("mallory", aliceSeqs[2])); got != http.StatusOK {
		t.Fatalf("forged group callback: HTTP %d", got)
	}
	c2c := fmt.Sprintf(`{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"mallory","To_Account":"alice","MsgKey":%q,"MsgTime":%d}`, aliceKeys[0], now)
	if got := post(good, msgindex.CommandC2CAfterSend, c2c); got != http.StatusOK {
		t.Fatalf("forged one-to-one callback: HTTP %d", got)
	}
	if n := count(); n != 4 {
		t.Fatalf("index holds %d entries of mallory, want 4 (2 real, 2 forged)", n)
	}

	d.worker("w")
	body := `{"kind":"purge_user","user":"mallory","source":"index","reason":"forged index","confirm":true}`
	got, out := d.call("POST", "/v1/jobs", body, with(asAdmin, asJSON)...)
	if got != http.StatusCreated {
		t.Fatalf("purge by index: HTTP %d %s", got, out)
	}
	var created struct {
		Job               jobs.Job `json:"job"`
		SenderUnconfirmed int      `json:"sender_unconfirmed"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.SenderUnconfirmed != 2 {
		t.Fatalf("purge answer %s (%v): want sender_unconfirmed 2", out, err)
	}
	j := d.waitDone(created.Job.ID, time.Minute)
	if j.Counts.Planned != 2 || j.Counts.Recalled != 2 {
		t.Fatalf("job counts %+v: want mallory's 2 messages planned and recalled", j.Counts)
	}
	for _, m := range env.Emu.GroupMessages(g, "") {
		if m.Recalled != (m.From == "mallory") {
			t.Errorf("seq %d of %s: recalled %v", m.Seq, m.From, m.Recalled)
		}
	}
	for _, m := range env.Emu.C2CMessages("alice", "mallory") {
		if m.Recalled {
			t.Errorf("alice's one-to-one message %s was recalled", m.MsgKey)
		}
	}
	_, rep := d.call("GET", "/v1/jobs/"+created.Job.ID+"/report", "", asAdmin...)
	var report jobs.Report
	if err := json.Unmarshal([]byte(rep), &report); err != nil || report.Refused[jobs.RefusedSenderUnconfirmed] != 2 || !report.Reconciled {
		t.Fatalf("report %s (%v): want 2 refused and reconciled", rep, err)
	}
	text, err := d.run("jobs", "report", created.Job.ID)
	if err != nil || !strings.Contains(text, "sender not confirmed") {
		t.Fatalf("jobs report does not show the refusal (%v):\n%s", err, text)
	}
}
