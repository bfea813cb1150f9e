package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
)

// TestConsoleApprovalInBrowser drives the console of `imrecall serve
// --approval-above 3` with two admin tokens in headless Chromium, with a
// worker and the emulator: admin ops creates a recall of 5 messages in the
// page; it waits in awaiting_approval and nothing is sent; ops's own
// approval is refused and changes nothing; admin bob signs in, approves it
// in the page, and it runs to done with a report that reconciles. The
// approval page's screenshot goes to IMRECALL_SCREENSHOTS.
func TestConsoleApprovalInBrowser(t *testing.T) {
	chromium(t) // skip early without a browser
	e := newE2E(t, emulator.Config{Rate: 200})
	const bobToken = "console-bob-token-0123456789abcdef"
	tokensFile := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokensFile, []byte("bob:admin:"+bobToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	e.serveProc(addr, "--tokens-file", tokensFile, "--approval-above", "3")
	e.worker("w1")
	e.env.Accounts(t, "spammer", "u1")
	g := e.env.Group(t, "Public", "@TGS#conappr", "spammer", "u1")
	var list []string
	for _, s := range e.env.SendGroup(t, g, "", 5, "spammer") {
		list = append(list, fmt.Sprintf(`{"GroupId":%q,"MsgSeq":%d}`, g, s))
	}
	recallCalls := func() int64 { return e.env.Emu.Stats()["group_msg_recall"].Calls }
	base := "http://" + addr
	ctx := browserCtx(t)

	// ops creates the job in the page: dry run, then create.
	signIn(t, ctx, base, e2eAPIToken)
	run(t, ctx, "dry run", chromedp.Navigate(base+"/new?kind=recall"), chromedp.WaitVisible(chromedp.CSS("#messages")),
		chromedp.SendKeys(chromedp.CSS("#messages"), strings.Join(list, "\n")),
		chromedp.SendKeys(chromedp.CSS("#reason"), "INC-77 spam"),
		chromedp.Click(chromedp.CSS("#dryrun")), chromedp.WaitVisible(chromedp.CSS("#preview")))
	if got := textOf(t, ctx, "#p-messages"); got != "5" {
		t.Fatalf("dry run: %s messages, want 5", got)
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
	run(t, ctx, "sign out", chromedp.Navigate(base+"/jobs"), chromedp.WaitVisible(chromedp.CSS("#signout")),
		chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#token")))
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
