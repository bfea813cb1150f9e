package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/openssltest"
	"github.com/imrecall/imrecall/jobs"
)

// TestPurgeVerifyCertificate is issue 14's acceptance, end to end over HTTP:
// purge user → verify passes → the sender posts again in one of the job's
// groups → verify finds the residue (exit 5) → certificate → openssl and
// `certificate verify` accept it → one byte changed → neither does.
func TestPurgeVerifyCertificate(t *testing.T) {
	key, pub := openssltest.KeyPair(t, t.TempDir())
	e, j, spammer := newPurgedE2E(t, emulator.DatasetSpec{Groups: 30, Users: 300, GroupMessages: 8000, C2CMessages: 600,
		HeavyGroups: 12, HeavyShare: 0.05, Peers: 6, Topics: 2, Seed: 29}, "GDPR Art. 17 request #881", "--verify")

	verifyJSON := func(wantExit int) verification {
		t.Helper()
		out, err := e.run("verify", j.ID, "--json")
		if got := exitOf(t, err); got != wantExit {
			t.Fatalf("verify exit %d, want %d: %v", got, wantExit, err)
		}
		var v verification
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("verify --json printed %q: %v", out, err)
		}
		return v
	}
	v := verifyJSON(0)
	if v.StillVisible != 0 || v.Residue != 0 || v.Verified != j.Counts.Planned || !v.ScopeChecked || !v.Passed {
		t.Fatalf("verify after the purge: %+v (job planned %d)", v, j.Counts.Planned)
	}
	// At most one history call per 20 planned group messages, plus the
	// scope's own re-scan (one call per 20 messages of history read) and the
	// one-to-one pages.
	t.Logf("verify: %d planned, %d history calls", v.Planned, v.HistoryCalls)
	t.Logf("emulator: %+v", e.env.Emu.Stats()["group_msg_get_simple"])

	// The sender posts again in a group the job covered: residue.
	targets, err := e.store.Targets(t.Context(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var group jobs.Target
	for _, tg := range targets {
		if tg.IsGroup() && tg.TopicID == "" {
			group = tg
			break
		}
	}
	if group.GroupID == "" {
		t.Fatal("the job recalled in no plain group")
	}
	e.env.SendGroup(t, group.GroupID, "", 1, spammer)
	v = verifyJSON(cli.ExitNotErased)
	if v.Residue < 1 || v.StillVisible != 0 || v.Passed {
		t.Fatalf("verify after a new message: %+v, want residue ≥ 1", v)
	}

	// The certificate: written even though verification now fails (it says so).
	dir := t.TempDir()
	cert := filepath.Join(dir, "erasure.json")
	_, err = e.run("certificate", j.ID, "--signing-key", key, "--out", cert, "--hash-subject")
	if got := exitOf(t, err); got != cli.ExitNotErased {
		t.Fatalf("certificate exit %d, want %d (residue): %v", got, cli.ExitNotErased, err)
	}
	var doc struct {
		Job struct {
			ID     string `json:"id"`
			Reason string `json:"reason"`
		} `json:"job"`
		Subject struct {
			UserID string `json:"user_id"`
			Hash   string `json:"salted_sha256"`
		} `json:"subject"`
		Counts struct {
			Planned, Recalled, DeadLettered, Pending int64
		} `json:"counts"`
		Reconciled   bool `json:"reconciled"`
		Verification struct {
			Residue int64 `json:"residue"`
			Passed  bool  `json:"passed"`
		} `json:"verification"`
		Rows struct {
			Count int64 `json:"count"`
		} `json:"rows"`
	}
	body, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Job.ID != j.ID || doc.Job.Reason != "GDPR Art. 17 request #881" || !doc.Reconciled ||
		doc.Counts.Planned != doc.Counts.Recalled+doc.Counts.DeadLettered+doc.Counts.Pending ||
		doc.Verification.Residue < 1 || doc.Verification.Passed || doc.Rows.Count != j.Counts.Planned {
		t.Fatalf("certificate document: %s", body)
	}
	if doc.Subject.UserID != "" || len(doc.Subject.Hash) != 64 || strings.Contains(string(body), spammer) {
		t.Fatalf("--hash-subject: the document names the subject: %+v", doc.Subject)
	}
	if b, _ := os.ReadFile(cert + ".rows.jsonl"); strings.Contains(string(b), spammer) {
		t.Fatal("--hash-subject: the rows name the subject")
	}
	rows := countLines(t, cert+".rows.jsonl")
	if rows != j.Counts.Planned {
		t.Fatalf("rows file has %d lines, job planned %d", rows, j.Counts.Planned)
	}

	opensslOK := func() bool { return openssltest.Verifies(t, pub, cert) }
	if !opensslOK() {
		t.Fatal("openssl refused the certificate")
	}
	if _, err := e.run("certificate", "verify", cert, "--public-key", pub); err != nil {
		t.Fatalf("certificate verify: %v", err)
	}
	page, err := e.run("certificate", "render", cert, "--public-key", pub)
	if err != nil || !strings.Contains(page, j.ID) || !strings.Contains(page, "Signature and rows checked") {
		t.Fatalf("render: %v\n%.400s", err, page)
	}

	// One byte of the document changed: neither accepts it.
	i := strings.Index(string(body), `"reason": "GDPR`) + len(`"reason": "`)
	body[i] = 'X'
	if err := os.WriteFile(cert, body, 0o644); err != nil {
		t.Fatal(err)
	}
	if opensslOK() {
		t.Fatal("openssl accepted a changed certificate")
	}
	_, err = e.run("certificate", "verify", cert, "--public-key", pub)
	if got := exitOf(t, err); got != cli.ExitFailure || !strings.Contains(err.Error(), "NOT VALID: certificate signature") {
		t.Fatalf("certificate verify of a changed document: exit %d: %v", got, err)
	}
}

func countLines(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		n++
	}
	return n
}
