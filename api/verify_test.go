package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"iter"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/certificate"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/verify"
)

// finishedPurge seeds a group where alice and bob alternate and a chat
// alice → bob on the emulator, records a purge of alice's messages with
// everything planned, recalls them all on the emulator and records that:
// a finished job that verification should pass. It returns the job and the
// group.
func finishedPurge(t *testing.T, b *bundle) (jobs.Job, string) {
	t.Helper()
	ctx := t.Context()
	b.env.Accounts(t, "alice", "bob")
	gid := b.env.Group(t, "Public", "gv1", "alice", "bob")
	seqs := b.env.SendGroup(t, gid, "", 40, "alice", "bob")
	keys := b.env.SendC2C(t, "alice", "bob", 6)
	params, _ := json.Marshal(map[string]any{"user": "alice", "peers": []string{"bob"}, "source": "scan"})
	job, err := b.store.Create(ctx, jobs.Spec{Kind: "purge:user", Queue: "purge", AppID: b.srv.cfg.AppID, RequestedBy: "dpo", Reason: "erasure request 881", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	group, chat := jobs.Target{GroupID: gid}, jobs.Target{From: "alice", To: "bob"}
	var alice []int64
	for i, s := range seqs {
		if i%2 == 0 {
			alice = append(alice, s)
		}
	}
	if _, err := b.store.PlanGroup(ctx, job.ID, group, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.PlanC2C(ctx, job.ID, chat, keys); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); err != nil {
		t.Fatal(err)
	}
	b.env.Recall(t, b.store, job.ID, group, alice, chat, keys)
	if job, err = b.store.Get(ctx, job.ID); err != nil || !job.Finished() {
		t.Fatalf("job %+v not finished (%v)", job, err)
	}
	return job, gid
}

// await polls path until it answers something other than 202; each poll
// waits for the server, not for a clock.
func (b *bundle) await(path, token string, out any) int {
	b.t.Helper()
	for range 2000 {
		var st RunStatus
		code := b.call("GET", path, token, nil, &st)
		if code != http.StatusAccepted {
			return b.call("GET", path, token, nil, out)
		}
		if st.Status != "running" || st.StatusURL != path {
			b.t.Fatalf("GET %s: 202 with %+v", path, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.t.Fatalf("GET %s: still running after 2000 polls", path)
	return 0
}

// TestVerifyOverHTTP: POST /v1/jobs/{id}/verify runs imrecall verify's
// verification in the background; GET answers the kept result: passed for
// a finished purge, then residue once alice posts again.
func TestVerifyOverHTTP(t *testing.T) {
	b := setup(t, nil)
	job, gid := finishedPurge(t, b)
	path := "/v1/jobs/" + job.ID + "/verify"

	var e apiError
	if code := b.call("GET", path, readSecret, nil, &e); code != http.StatusNotFound || !strings.Contains(e.Error, "never verified") {
		t.Fatalf("GET before any verification: HTTP %d %q, want 404", code, e.Error)
	}
	if code := b.call("POST", "/v1/jobs/20261122T230512Z-9f3a1c2b/verify", adminSecret, nil, &e); code != http.StatusNotFound {
		t.Fatalf("POST for an unknown job: HTTP %d %q, want 404", code, e.Error)
	}
	if code := b.call("POST", path, adminSecret, `{"actr":"x"}`, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, "actr") {
		t.Fatalf("POST with an unknown field: HTTP %d %q, want 400 naming it", code, e.Error)
	}
	req, _ := http.NewRequest("POST", b.url+path, strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST verify from another site's page: %v %v, want 403", resp, err)
	} else {
		resp.Body.Close()
	}
	var st RunStatus
	if code := b.call("POST", path, adminSecret, `{"actor":"dpo@example.com"}`, &st); code != http.StatusAccepted || st.StatusURL != path || st.JobID != job.ID || st.StartedBy != "dpo@example.com (token:ops)" {
		t.Fatalf("POST verify: HTTP %d %+v, want 202 with the status URL", code, st)
	}
	var v verify.JobResult
	if code := b.await(path, readSecret, &v); code != http.StatusOK {
		t.Fatalf("GET after the verification: HTTP %d", code)
	}
	if !v.Passed || v.Planned != 26 || v.Verified != 26 || v.StillVisible != 0 || v.Residue != 0 || !v.ScopeChecked || v.Subject != "alice" || v.HistoryCalls == 0 {
		t.Fatalf("verification = %+v, want 26 planned and verified, passed", v)
	}

	// alice posts once more in the job's group: the residue.
	b.env.SendGroup(t, gid, "", 1, "alice")
	if code := b.call("POST", path, adminSecret, nil, &st); code != http.StatusAccepted {
		t.Fatalf("POST verify without a body: HTTP %d", code)
	}
	if code := b.await(path, readSecret, &v); code != http.StatusOK {
		t.Fatalf("GET after the second verification: HTTP %d", code)
	}
	if v.Passed || v.Residue != 1 || v.StillVisible != 0 || len(v.ResidueSample) != 1 || v.ResidueSample[0].Target.GroupID != gid {
		t.Fatalf("verification after alice posted = %+v, want residue 1 in %s", v, gid)
	}
	// Both runs are in the audit log.
	var events []jobs.Event
	if code := b.call("GET", "/v1/audit", readSecret, nil, &events); code != http.StatusOK {
		t.Fatalf("audit: HTTP %d", code)
	}
	n := 0
	for _, ev := range events {
		if ev.Action == "verify" && ev.JobID == job.ID && ev.Actor != "" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("audit holds %d verify events, want 2: %+v", n, events)
	}
}

// TestCertificateOverHTTP: serve signs and keeps a certificate; its three
// files are served byte for byte and check out (signature and rows), the
// page is rendered checked, a second POST keeps the first certificate, and
// a changed byte is shown on the page.
func TestCertificateOverHTTP(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	// Without a signing key the route is refused.
	plain := setup(t, nil)
	var e apiError
	if code := plain.call("POST", "/v1/jobs/20261122T230512Z-9f3a1c2b/certificate", adminSecret, nil, &e); code != http.StatusNotImplemented || !strings.Contains(e.Error, "--signing-key") {
		t.Fatalf("POST certificate without a key: HTTP %d %q, want 501", code, e.Error)
	}

	b := setup(t, func(c *Config) {
		c.Certificates = &Certificates{Dir: dir, Key: key, Software: certificate.Software{Name: "imrecall", Version: "test"}}
	})
	// A job still planning gets no certificate.
	open, err := b.store.Create(t.Context(), jobs.Spec{Kind: "purge:user", Queue: "purge", AppID: b.srv.cfg.AppID, RequestedBy: "dpo"})
	if err != nil {
		t.Fatal(err)
	}
	if code := b.call("POST", "/v1/jobs/"+open.ID+"/certificate", adminSecret, nil, &e); code != http.StatusConflict || !strings.Contains(e.Error, "finished") {
		t.Fatalf("POST certificate of an unfinished job: HTTP %d %q, want 409", code, e.Error)
	}

	job, _ := finishedPurge(t, b)
	path := "/v1/jobs/" + job.ID + "/certificate"
	if code := b.call("GET", path, readSecret, nil, &e); code != http.StatusNotFound {
		t.Fatalf("GET before any certificate: HTTP %d, want 404", code)
	}
	var st RunStatus
	if code := b.call("POST", path, adminSecret, `{"actor":"dpo@example.com"}`, &st); code != http.StatusAccepted || st.What != "certificate" {
		t.Fatalf("POST certificate: HTTP %d %+v, want 202", code, st)
	}
	var doc certificate.Document
	if code := b.await(path, readSecret, &doc); code != http.StatusOK {
		t.Fatalf("GET certificate: HTTP %d", code)
	}
	if doc.Job.ID != job.ID || doc.Subject == nil || doc.Subject.UserID != "alice" || doc.Verification == nil || !doc.Verification.Passed ||
		doc.Verification.Verified != 26 || doc.Rows.Count != 26 || !doc.Reconciled || doc.Counts.Check() != nil {
		t.Fatalf("certificate = %+v", doc)
	}

	// The three files, byte for byte, check out.
	body := b.raw("GET", path, readSecret, "application/json")
	sig := b.raw("GET", path+".sig", readSecret, "")
	rows := b.raw("GET", path+".rows.jsonl", readSecret, "")
	if !ed25519.Verify(pub, body, sig) {
		t.Fatal("the served signature does not verify the served document")
	}
	if sum := sha256.Sum256(rows); hex.EncodeToString(sum[:]) != doc.Rows.SHA256 || bytes.Count(rows, []byte("\n")) != 26 {
		t.Fatalf("the served rows (%d lines) do not have the document's SHA-256", bytes.Count(rows, []byte("\n")))
	}
	onDisk := filepath.Join(dir, job.ID+".json")
	if _, err := certificate.Verify(onDisk, pub); err != nil {
		t.Fatalf("the kept certificate does not verify: %v", err)
	}
	page := string(b.raw("GET", path, readSecret, "text/html,application/xhtml+xml;q=0.9"))
	if !strings.Contains(page, "Signature and rows checked.") || !strings.Contains(page, job.ID) || strings.Contains(page, "<script") {
		t.Fatalf("the page does not show a checked certificate of %s:\n%s", job.ID, page)
	}

	// A second POST keeps the certificate: the same bytes, nothing rewritten.
	again := b.rawPost(path, adminSecret)
	if !bytes.Equal(again, body) {
		t.Fatal("a second POST answered another document")
	}

	// A job id is never a path: a JSON file beside the certificate
	// directory, named with an encoded "../", is not served to a reader.
	outside := filepath.Join(filepath.Dir(dir), "creds.json")
	if err := os.WriteFile(outside, []byte(`{"secret":"beside the certificates"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"..%2Fcreds", "..%2F" + filepath.Base(dir) + "%2F..%2Fcreds", "%2E%2E%2Fcreds", ".hidden"} {
		for _, suffix := range []string{"", ".sig", ".rows.jsonl"} {
			e = apiError{}
			code := b.call("GET", "/v1/jobs/"+id+"/certificate"+suffix, readSecret, nil, &e)
			if code != http.StatusBadRequest || !strings.Contains(e.Error, "not a job id") {
				t.Errorf("GET certificate%s of job %q: HTTP %d %q, want 400 not a job id", suffix, id, code, e.Error)
			}
		}
	}

	// One byte of the kept document changed: the page says so.
	tampered := bytes.Replace(body, []byte(`"erasure request 881"`), []byte(`"erasure request 882"`), 1)
	if bytes.Equal(tampered, body) {
		t.Fatal("the document does not carry the job's reason")
	}
	if err := os.WriteFile(onDisk, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	page = string(b.raw("GET", path, readSecret, "text/html"))
	if !strings.Contains(page, "did NOT check out") {
		t.Fatalf("the page of a changed certificate does not say it fails:\n%s", page)
	}
}

// raw GETs path with an Accept header and returns the body of a 200.
func (b *bundle) raw(method, path, token, accept string) []byte {
	b.t.Helper()
	req, _ := http.NewRequest(method, b.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	return b.do(req)
}

func (b *bundle) rawPost(path, token string) []byte {
	b.t.Helper()
	req, _ := http.NewRequest("POST", b.url+path, strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	return b.do(req)
}

func (b *bundle) do(req *http.Request) []byte {
	b.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("%s %s: HTTP %d %s", req.Method, req.URL.Path, resp.StatusCode, body)
	}
	return body
}

// TestOneRunPerJobAndKind: asking again while a run is under way answers
// the same run and starts nothing; a failed run is reported until the next.
func TestOneRunPerJobAndKind(t *testing.T) {
	bg := newBackground()
	defer bg.cancel()
	release, started := make(chan struct{}), 0
	first := RunStatus{JobID: "j", What: "verify", Status: "running", StartedBy: "a"}
	run := func(ctx context.Context) error {
		started++
		<-release
		return errors.New("history unreadable")
	}
	if got := bg.start(first, time.Hour, run); got != first {
		t.Fatalf("start = %+v", got)
	}
	second := first
	second.StartedBy = "b"
	if got := bg.start(second, time.Hour, run); got != first {
		t.Fatalf("a second start while the first runs = %+v, want the first", got)
	}
	if _, running, _ := bg.state("certificate", "j"); running {
		t.Fatal("a certificate run reported for a verification")
	}
	close(release)
	bg.wg.Wait()
	st, running, failed := bg.state("verify", "j")
	if running || started != 1 || !strings.Contains(failed.msg, "history unreadable") {
		t.Fatalf("after the run: %+v running %v, %d started, failed %q", st, running, started, failed.msg)
	}
}

// brokenHistory answers every group history read with an error.
type brokenHistory struct{ verify.JobIM }

var errHistory = errors.New("history unreadable")

func (brokenHistory) GroupMsgPages(context.Context, tim.GroupMsgGetSimpleRequest) iter.Seq2[*tim.GroupMsgGetSimpleResponse, error] {
	return func(yield func(*tim.GroupMsgGetSimpleResponse, error) bool) { yield(nil, errHistory) }
}

func (brokenHistory) GroupMsgGetSimple(context.Context, tim.GroupMsgGetSimpleRequest) (*tim.GroupMsgGetSimpleResponse, error) {
	return nil, errHistory
}

// TestVerifyFailureIsReported: a verification that cannot read the
// histories keeps nothing; GET says why (500) until a newer verification
// is kept.
func TestVerifyFailureIsReported(t *testing.T) {
	b := setup(t, func(c *Config) { c.IM = brokenHistory{c.IM.(verify.JobIM)} })
	job, _ := finishedPurge(t, b)
	path := "/v1/jobs/" + job.ID + "/verify"
	if code := b.call("POST", path, adminSecret, nil, nil); code != http.StatusAccepted {
		t.Fatalf("POST verify: HTTP %d", code)
	}
	var e apiError
	if code := b.await(path, readSecret, &e); code != http.StatusInternalServerError || !strings.Contains(e.Error, "history unreadable") {
		t.Fatalf("GET after a failed verification: HTTP %d %q, want 500 saying why", code, e.Error)
	}
	if raw, err := b.store.LastVerification(t.Context(), job.ID); err != nil || raw != nil {
		t.Fatalf("a failed verification was kept: %s %v", raw, err)
	}
	// A verification kept since (the CLI's) is answered instead.
	raw, _ := json.Marshal(verify.JobResult{Result: verify.Result{JobID: job.ID, At: time.Now().Add(time.Second)}, Passed: true})
	if err := b.store.SaveVerification(t.Context(), job.ID, "cli", raw, true); err != nil {
		t.Fatal(err)
	}
	var v verify.JobResult
	if code := b.call("GET", path, readSecret, nil, &v); code != http.StatusOK || !v.Passed || v.JobID != job.ID {
		t.Fatalf("GET after a newer verification: HTTP %d %+v", code, v)
	}
}
