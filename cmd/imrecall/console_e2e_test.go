package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
)

const consoleReadToken = "console-read-token-0123456789abcdef"

// chromium returns the headless browser the console's tests drive: Debian's
// /usr/bin/chromium (or IMRECALL_CHROMIUM). Without one the test skips,
// unless IMRECALL_REQUIRE_BROWSER is set (CI sets it): then it fails.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("IMRECALL_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("IMRECALL_REQUIRE_BROWSER") != "" {
		t.Fatal("chromium not found and IMRECALL_REQUIRE_BROWSER is set (apt-get install -y chromium)")
	}
	t.Skip("chromium not found; set IMRECALL_REQUIRE_BROWSER=1 to fail instead")
	return ""
}

// browserCtx starts headless Chromium for the test.
func browserCtx(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.Headless,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	ctx, cancelT := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(cancelT)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// screenshot writes the page as docs/console/NAME.png when
// IMRECALL_SCREENSHOTS names a directory (relative to the module's root).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("IMRECALL_SCREENSHOTS")
	if dir == "" {
		return
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join("..", "..", dir) // tests run in cmd/imrecall
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs steps in the browser; on an error it fails with the page's text.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("%s: %v\npage:\n%s", what, err, body)
	}
}

// value runs one action that returns a value.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// textOf reads the visible text of the first element sel matches, waiting
// for it to exist. The query and the read are one evaluation in the page: a
// live page reloads itself on every change of its job (console.js), and a
// node found by one call could be gone at the next. A reload in the middle
// of the evaluation destroys its context; textOf then reads again.
func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	q, err := json.Marshal(sel)
	if err != nil {
		t.Fatal(err)
	}
	read := chromedp.Poll[struct{ Text string }](
		fmt.Sprintf(`(() => { const e = document.querySelector(%s); return e ? {Text: e.innerText} : null })()`, q),
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))
	for try := 1; ; try++ {
		v, err := chromedp.Run(ctx, read)
		if err == nil {
			return strings.TrimSpace(v.Text)
		}
		if try == 5 || ctx.Err() != nil || errors.Is(err, chromedp.ErrPollingTimeout) {
			t.Fatalf("reading %s: %v", sel, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// signIn signs in through the form with secret.
func signIn(t *testing.T, ctx context.Context, base, secret string) {
	t.Helper()
	run(t, ctx, "sign in", chromedp.Navigate(base+"/jobs"), chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), secret), chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#jobs")))
}

// signOut signs out with the button of the jobs page.
func signOut(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	run(t, ctx, "sign out", chromedp.Navigate(base+"/jobs"), chromedp.WaitVisible(chromedp.CSS("#signout")),
		chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#token")))
}

// dryRun fills the new-job form of kind (field, the subject, and the
// reason), runs its dry run and checks it counts messages.
func dryRun(t *testing.T, ctx context.Context, base, kind, field, subject, reason, messages string) {
	t.Helper()
	run(t, ctx, "dry run", chromedp.Navigate(base+"/new?kind="+kind), chromedp.WaitVisible(chromedp.CSS(field)),
		chromedp.SendKeys(chromedp.CSS(field), subject), chromedp.SendKeys(chromedp.CSS("#reason"), reason),
		chromedp.Click(chromedp.CSS("#dryrun")), chromedp.WaitVisible(chromedp.CSS("#preview")))
	if got := textOf(t, ctx, "#p-messages"); got != messages {
		t.Fatalf("dry run: %s messages, want %s", got, messages)
	}
}

// TestConsoleInBrowser drives the console of a real `imrecall serve` in
// headless Chromium, with a worker and the emulator: an admin signs in,
// runs a dry run of a group purge (messages per target, calls, time at the
// cap), creates the job, and watches it to done on its page; the report
// reconciles and matches the emulator; a form posted from another site's
// page is refused; a read token sees no action and is refused one
// server-side. Screenshots of each page go to IMRECALL_SCREENSHOTS.
func TestConsoleInBrowser(t *testing.T) {
	chromium(t) // skip early without a browser
	e := newE2E(t, emulator.Config{Rate: 20})
	groups := []string{"@TGS#con001", "@TGS#con002", "@TGS#con003", "@TGS#con004"}
	e.env.Accounts(t, "spam", "u1")
	for _, g := range groups {
		e.env.Group(t, "Public", g, "spam", "u1")
		e.env.SendGroup(t, g, "", 150, "spam", "u1")
	}
	tokensFile := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokensFile, []byte("viewer:read:"+consoleReadToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	e.serveProc(addr, "--tokens-file", tokensFile, "--cap", "20")
	e.worker("w1", "--cap", "20")
	base := "http://" + addr
	ctx := browserCtx(t)

	// Sign in; the jobs page is empty.
	run(t, ctx, "login page", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	screenshot(t, ctx, "login")
	signIn(t, ctx, base, e2eAPIToken)
	if who := textOf(t, ctx, "#who"); who != "ops (admin)" {
		t.Fatalf("signed in as %q", who)
	}

	// The dry run, before anything exists.
	dryRun(t, ctx, base, "purge_group", "#groups", strings.Join(groups, ", "), "INC-42 spam wave", "600")
	if rows := textOf(t, ctx, "#targets"); !strings.Contains(rows, groups[3]) || !strings.Contains(rows, "150") {
		t.Fatalf("dry run per target:\n%s", rows)
	}
	if page, _ := e.store.Page(t.Context(), jobs.PageFilter{}, 0, 10); len(page.Jobs) != 0 {
		t.Fatalf("the dry run created %d jobs", len(page.Jobs))
	}
	screenshot(t, ctx, "new-job-dry-run")

	// Create it and watch it on its page until it is done.
	run(t, ctx, "create", chromedp.Click(chromedp.CSS("#create")), chromedp.WaitVisible(chromedp.CSS("#report")))
	loc := value(t, ctx, "location", chromedp.Location())
	id := loc[strings.LastIndex(loc, "/")+1:]
	screenshot(t, ctx, "job-running")
	run(t, ctx, "watch to done", chromedp.WaitVisible(chromedp.CSS("#settled")))
	j, err := e.store.Get(t.Context(), id)
	if err != nil || j.Status != jobs.StatusDone || j.Counts.Recalled != 600 || j.Counts.Pending != 0 {
		t.Fatalf("job %s: %+v %v", id, j.Counts, err)
	}
	if got := textOf(t, ctx, "#n-recalled"); got != "600" {
		t.Fatalf("the page says %s recalled", got)
	}
	if got := textOf(t, ctx, "#reconcile"); !strings.Contains(got, "reconcile with the recount") {
		t.Fatalf("report: %s", got)
	}
	for _, g := range groups {
		for _, m := range e.env.Emu.GroupMessages(g, "") {
			if !m.Recalled {
				t.Fatalf("%s #%d not recalled on the emulator", g, m.Seq)
			}
		}
	}
	screenshot(t, ctx, "job-report")
	run(t, ctx, "jobs page", chromedp.Navigate(base+"/jobs"), chromedp.WaitVisible(chromedp.CSS(`tr[data-job="`+id+`"]`)))
	// The job's calls/s, next to the cap: for a finished job its calls over
	// its run time, about the cap of 20 here. (The run time starts at the
	// first answer, so a job of a few seconds can show a little more; the
	// cap itself is the emulator's to check.)
	calls := textOf(t, ctx, `tr[data-job="`+id+`"] [data-f="calls"]`)
	if n, err := strconv.ParseFloat(strings.TrimSuffix(calls, " calls/s"), 64); err != nil || n <= 0 || n > 30 {
		t.Fatalf("the jobs page shows %q calls/s for the job; want some, at most the cap of 20", calls)
	}
	if caps := textOf(t, ctx, "#filters"); !strings.Contains(caps, "group_msg_recall 20 calls/s") {
		t.Fatalf("the jobs page shows no cap: %q", caps)
	}
	screenshot(t, ctx, "jobs")

	// A schedule, added with the same form; the index page.
	run(t, ctx, "add schedule", chromedp.Navigate(base+"/schedules?kind=purge_user"), chromedp.WaitVisible(chromedp.CSS("#user")),
		chromedp.SendKeys(chromedp.CSS("#name"), "nightly"), chromedp.SendKeys(chromedp.CSS("#cron"), "@daily"),
		chromedp.SendKeys(chromedp.CSS("#user"), "spam"), chromedp.SendKeys(chromedp.CSS("#since"), "1d"),
		chromedp.SendKeys(chromedp.CSS("#reason"), "daily sweep"),
		chromedp.Click(chromedp.CSS("#add")), chromedp.WaitVisible(chromedp.CSS("#flash")))
	if got := textOf(t, ctx, "#schedules"); !strings.Contains(got, "nightly") {
		t.Fatalf("schedules:\n%s", got)
	}
	screenshot(t, ctx, "schedules")
	run(t, ctx, "index page", chromedp.Navigate(base+"/index"), chromedp.WaitVisible(chromedp.CSS("#coverage")))
	screenshot(t, ctx, "index")

	// Another site's page posts a form to the console: refused, nothing removed.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/schedules/nightly/remove"><input name="confirmed" value="yes"></form><script>document.getElementById("f").submit()</script>`, base)
	}))
	defer evil.Close()
	run(t, ctx, "cross-site post", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS("#error")))
	if got := textOf(t, ctx, "#error"); !strings.Contains(got, "cross-site request refused") {
		t.Fatalf("cross-site post answered: %s", got)
	}
	if list, _ := producer.NewSchedules(e.redis.Client(), e.store.Prefix()).List(t.Context()); len(list) != 1 {
		t.Fatalf("after the cross-site post: %d schedules", len(list))
	}

	// A read token sees, cannot act: no buttons, and a POST is refused.
	signOut(t, ctx, base)
	signIn(t, ctx, base, consoleReadToken)
	run(t, ctx, "job page as reader", chromedp.Navigate(base+"/jobs/"+id), chromedp.WaitVisible(chromedp.CSS("#report")))
	if !value(t, ctx, "actions", chromedp.Evaluate[bool](`document.querySelector("#actions") === null`)) {
		t.Fatal("a read token's job page shows actions")
	}
	status := value(t, ctx, "POST as reader", chromedp.Evaluate[int](`fetch("/schedules/nightly/remove", {method: "POST",
		headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: "confirmed=yes&csrf=" + encodeURIComponent(document.querySelector("input[name=csrf]").value)}).then(r => r.status)`,
		chromedp.EvalAwaitPromise))
	if status != http.StatusForbidden {
		t.Fatalf("remove as a read token: %d, want 403", status)
	}
	if list, _ := producer.NewSchedules(e.redis.Client(), e.store.Prefix()).List(t.Context()); len(list) != 1 {
		t.Fatalf("after the read token's post: %d schedules", len(list))
	}
	run(t, ctx, "new as reader", chromedp.Navigate(base+"/new"))
	newPage := textOf(t, ctx, "main")
	if !strings.Contains(newPage, "Read tokens cannot create jobs") || bytes.Contains([]byte(newPage), []byte("Dry run ")) {
		t.Fatalf("new job page as a read token:\n%s", newPage)
	}
}

// bobToken is the second admin's token of approvalServe.
const bobToken = "e2e-bob-token-0123456789abcdef"

// approvalServe starts `serve --approval-above 3` with two admin tokens
// (ops: e2eAPIToken, bob: bobToken) and a worker, over the emulator with a
// group of 5 messages from spammer; it returns the listen address, the
// group and its messages as JSON lines of a list.
func approvalServe(t *testing.T, group string) (e *e2e, addr, g string, msgs []string) {
	t.Helper()
	e = newE2E(t, emulator.Config{Rate: 200})
	addr = freeAddr(t)
	e.serveProc(addr, "--api-tokens", "ops:admin:"+e2eAPIToken+",bob:admin:"+bobToken, "--approval-above", "3")
	e.worker("w1")
	e.env.Accounts(t, "spammer", "u1")
	g = e.env.Group(t, "Public", group, "spammer", "u1")
	for _, s := range e.env.SendGroup(t, g, "", 5, "spammer") {
		msgs = append(msgs, fmt.Sprintf(`{"GroupId":%q,"MsgSeq":%d}`, g, s))
	}
	return e, addr, g, msgs
}

// TestConsoleApprovalInBrowser drives the console of `imrecall serve
// --approval-above 3` with two admin tokens in headless Chromium, with a
// worker and the emulator: admin ops creates a recall of 5 messages in the
// page; it waits in awaiting_approval and nothing is sent; ops's own
// approval is refused and changes nothing; admin bob signs in, approves it
// in the page, and it runs to done with a report that reconciles. The
// approval page's screenshot goes to IMRECALL_SCREENSHOTS.
func TestConsoleApprovalInBrowser(t *testing.T) {
	chromium(t) // skip early without a browser
	e, addr, g, list := approvalServe(t, "@TGS#conappr")
	recallCalls := func() int64 { return e.env.Emu.Stats()["group_msg_recall"].Calls }
	base := "http://" + addr
	ctx := browserCtx(t)

	// ops creates the job in the page: dry run, then create.
	signIn(t, ctx, base, e2eAPIToken)
	dryRun(t, ctx, base, "recall", "#messages", strings.Join(list, "\n"), "INC-77 spam", "5")
	if got := textOf(t, ctx, "#p-approval"); !strings.Contains(got, "approval threshold of 3 messages") {
		t.Fatalf("the dry run does not say the job will wait for approval: %q", got)
	}
	run(t, ctx, "create", chromedp.Click(chromedp.CSS("#create")), chromedp.WaitVisible(chromedp.CSS("#approval")))
	loc := value(t, ctx, "location", chromedp.Location())
	id := loc[strings.LastIndex(loc, "/")+1:]
	if got := textOf(t, ctx, "#status"); got != string(jobs.StatusAwaitingApproval) {
		t.Fatalf("status on the page: %q, want awaiting_approval", got)
	}
	if got := textOf(t, ctx, "#requester"); got != "token:ops" {
		t.Fatalf("requester on the page: %q", got)
	}
	if got := textOf(t, ctx, "#approval"); !strings.Contains(got, "5 messages planned") {
		t.Fatalf("approval on the page: %q, want the count", got)
	}

	// ops's own approval: the confirmation, then the refusal; nothing changes.
	run(t, ctx, "approve as requester", chromedp.Click(chromedp.CSS("#act-approve")), chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.SendKeys(chromedp.CSS("#reason"), "looks fine to me"),
		chromedp.Click(chromedp.CSS("#do")), chromedp.WaitVisible(chromedp.CSS("#error")))
	if got := textOf(t, ctx, "#error"); !strings.Contains(got, "cannot approve it too") {
		t.Fatalf("the requester's approval answered: %s", got)
	}
	if j, err := e.store.Get(t.Context(), id); err != nil || j.Status != jobs.StatusAwaitingApproval || j.ApprovedBy != "" || j.Counts.Recalled != 0 {
		t.Fatalf("after the requester's approval: %+v %v", j, err)
	}
	if n := recallCalls(); n != 0 {
		t.Fatalf("%d recall calls while the job awaits approval, want 0", n)
	}

	// bob signs in, sees the job waiting, approves it; it runs to done.
	signOut(t, ctx, base)
	signIn(t, ctx, base, bobToken)
	run(t, ctx, "filter awaiting approval", chromedp.Navigate(base+"/jobs?status=awaiting_approval"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-job="`+id+`"]`)))
	run(t, ctx, "job page as bob", chromedp.Navigate(base+loc[strings.Index(loc, "/jobs/"):]), chromedp.WaitVisible(chromedp.CSS("#act-approve")))
	screenshot(t, ctx, "job-awaiting-approval")
	run(t, ctx, "approve as bob", chromedp.Click(chromedp.CSS("#act-approve")), chromedp.WaitVisible(chromedp.CSS("#confirm")))
	screenshot(t, ctx, "approve-confirm")
	run(t, ctx, "confirm approval", chromedp.SendKeys(chromedp.CSS("#reason"), "checked the list"),
		chromedp.Click(chromedp.CSS("#do")), chromedp.WaitVisible(chromedp.CSS("#approved-by")))
	if got := textOf(t, ctx, "#approved-by"); got != "token:bob" {
		t.Fatalf("approved by %q on the page", got)
	}
	j := e.waitDone(id, time.Minute)
	if j.Status != jobs.StatusDone || j.Counts.Recalled != 5 || j.ApprovedBy != "token:bob" || j.Requester != "token:ops" {
		t.Fatalf("approved job: %s, recalled %d, approved by %q, requested by %q", j.Status, j.Counts.Recalled, j.ApprovedBy, j.Requester)
	}
	run(t, ctx, "report", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#settled")))
	if got := textOf(t, ctx, "#reconcile"); !strings.Contains(got, "reconcile with the recount") {
		t.Fatalf("report: %s", got)
	}
	if got := textOf(t, ctx, "#n-recalled"); got != "5" {
		t.Fatalf("the page says %s recalled", got)
	}
	for _, m := range e.env.Emu.GroupMessages(g, "") {
		if !m.Recalled {
			t.Fatalf("%s #%d not recalled on the emulator", g, m.Seq)
		}
	}
	if got := textOf(t, ctx, "#audit"); !strings.Contains(got, "token:bob") || !strings.Contains(got, "approve") {
		t.Fatalf("audit trail:\n%s", got)
	}
}
