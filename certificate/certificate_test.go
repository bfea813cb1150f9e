package certificate

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/openssltest"
	"github.com/imrecall/imrecall/jobs"
)

func sampleDoc() Document {
	fin := time.Date(2026, 12, 1, 10, 5, 0, 0, time.UTC)
	return Document{
		IssuedAt: time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC),
		Job: Job{ID: "20261201T100000Z-0a1b2c3d", Kind: "purge:user", Status: "done",
			Scope: []byte(`{"user":"u1"}`), CoverageGaps: []string{}, RequestedBy: "dpo",
			Reason: "GDPR Art. 17 request #881", CreatedAt: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), FinishedAt: &fin},
		Subject:      &Subject{UserID: "u1"},
		Counts:       Counts{Planned: 3, Recalled: 2, DeadLettered: 1, DeadLetteredByCode: map[string]int64{"20023": 1}},
		Reconciled:   true,
		Verification: &Verification{At: fin, Verified: 2, Gone: 1, Passed: true, HistoryCalls: 2},
		Software:     Software{Name: "imrecall", Version: "test", ConfigSHA256: strings.Repeat("0", 64)},
	}
}

func sampleRows(yield func(Row) error) error {
	for _, r := range []Row{
		{Ref: jobs.Ref{GroupID: "@TGS#1", MsgSeq: 7}, State: "recalled", Verified: "recalled"},
		{Ref: jobs.Ref{GroupID: "@TGS#1", MsgSeq: 8}, State: "dead_lettered", Code: "20023", Verified: "recalled"},
		{Ref: jobs.Ref{From: "u1", To: "u2", MsgKey: "1_2_3"}, State: "recalled", Verified: "gone"},
	} {
		if err := yield(r); err != nil {
			return err
		}
	}
	return nil
}

func TestCertificateSignedVerifiedAndTamperEvident(t *testing.T) {
	dir := t.TempDir()
	privPath, pubPath := openssltest.KeyPair(t, dir)
	priv, err := LoadPrivateKey(privPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cert.json")
	doc := sampleDoc()
	if doc.Rows, err = WriteRows(path, sampleRows); err != nil {
		t.Fatal(err)
	}
	if doc, err = WriteSigned(path, doc, priv); err != nil {
		t.Fatal(err)
	}
	if doc.Rows.Count != 3 || doc.Rows.File != "cert.json.rows.jsonl" || len(doc.Rows.SHA256) != 64 {
		t.Fatalf("rows = %+v", doc.Rows)
	}
	if err := doc.Counts.Check(); err != nil {
		t.Fatal(err)
	}

	got, err := Verify(path, pub)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Job.ID != doc.Job.ID || got.Verification == nil || !got.Verification.Passed {
		t.Fatalf("Verify returned %+v", got)
	}
	if !openssltest.Verifies(t, pubPath, path) {
		t.Fatal("openssl pkeyutl -verify refused a certificate we signed")
	}

	// One byte of the document changed: neither accepts it.
	body, _ := os.ReadFile(path)
	orig := append([]byte(nil), body...)
	i := bytes.Index(body, []byte(`"planned": 3`)) + len(`"planned": `)
	body[i] = '4'
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	var f *Failure
	if _, err := Verify(path, pub); !errors.As(err, &f) || f.What != "signature" {
		t.Fatalf("Verify of a changed document: %v, want a signature failure", err)
	}
	if openssltest.Verifies(t, pubPath, path) {
		t.Fatal("openssl accepted a changed document")
	}

	// The document intact but a row changed: the signature holds, the rows do not.
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	rows, _ := os.ReadFile(path + ".rows.jsonl")
	if err := os.WriteFile(path+".rows.jsonl", bytes.Replace(rows, []byte(`"recalled"`), []byte(`"pending!"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(path, pub); !errors.As(err, &f) || f.What != "rows" {
		t.Fatalf("Verify with a changed row: %v, want a rows failure", err)
	}

	// Another key: refused.
	other := filepath.Join(dir, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	_, otherPub := openssltest.KeyPair(t, other)
	op, _ := LoadPublicKey(otherPub)
	if err := os.WriteFile(path+".rows.jsonl", rows, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(path, op); !errors.As(err, &f) || f.What != "signature" {
		t.Fatalf("Verify with another key: %v, want a signature failure", err)
	}
}

func TestLoadKeysRefuseTheWrongKind(t *testing.T) {
	dir := t.TempDir()
	_, pub := openssltest.KeyPair(t, dir)
	if _, err := LoadPrivateKey(pub); err == nil || !strings.Contains(err.Error(), `"PUBLIC KEY"`) {
		t.Fatalf("LoadPrivateKey(public key) = %v", err)
	}
	rsa := filepath.Join(dir, "rsa.pem")
	openssltest.Run(t, "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024", "-out", rsa)
	if _, err := LoadPrivateKey(rsa); err == nil || !strings.Contains(err.Error(), "want Ed25519") {
		t.Fatalf("LoadPrivateKey(rsa) = %v", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not pem"), 0o600)
	if _, err := LoadPublicKey(junk); err == nil || !strings.Contains(err.Error(), "no PEM block") {
		t.Fatalf("LoadPublicKey(junk) = %v", err)
	}
}

func TestSubjectHashAndCounts(t *testing.T) {
	salt := []byte("0123456789abcdef")
	a, b := HashSubject(salt, "u1"), HashSubject(salt, "u2")
	if a == b || len(a) != 64 || HashSubject(salt, "u1") != a || HashSubject([]byte("x"), "u1") == a {
		t.Fatalf("HashSubject: %s %s", a, b)
	}
	bad := Counts{Planned: 3, Recalled: 1, DeadLettered: 1}
	if err := bad.Check(); err == nil {
		t.Fatal("counts that do not add up passed Check")
	}
}

func TestRenderHTMLEscapesAndShowsResult(t *testing.T) {
	d := sampleDoc()
	d.Job.Reason = `<script>alert(1)</script>`
	var buf bytes.Buffer
	if err := RenderHTML(&buf, View{Document: d, Checked: true}); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	d.Job.Scope = []byte(`{"user":"u1","peers":["a","b"],"since":"","seq_from":0}`)
	buf.Reset()
	if err := RenderHTML(&buf, View{Document: d, Checked: true}); err != nil {
		t.Fatal(err)
	}
	s = buf.String()
	if strings.Contains(s, "since") || strings.Contains(s, "seq from") {
		t.Error("empty scope fields are shown")
	}
	for _, want := range []string{"Certificate of erasure", d.Job.ID, "passed: nothing of the job remains visible", "&lt;script&gt;", "Signature and rows checked", "<b>peers</b>: a, b", "<b>user</b>: u1"} {
		if !strings.Contains(s, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(s, "<script>") {
		t.Error("page carries an unescaped script")
	}
}

// TestApprovalInDocument: a job approved by a second admin names its
// approver and the time of the approval in the signed document and on the
// page; a job never held keeps the document's earlier shape (no approval
// fields), so documents of earlier versions and of unheld jobs read alike.
func TestApprovalInDocument(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 9, 58, 30, 0, time.UTC)
	fin := time.Date(2026, 12, 1, 10, 5, 0, 0, time.UTC)
	job := jobs.Job{ID: "20261201T100000Z-0a1b2c3d", Kind: "purge:user", Status: jobs.StatusDone, RequestedBy: "dpo (token:alice)",
		Requester: "token:alice", HeldForApproval: true, ApprovedBy: "token:bob", ApprovedAt: &at, FinishedAt: &fin}
	for _, tc := range []struct {
		name     string
		job      jobs.Job
		approved bool
	}{
		{"approved", job, true},
		{"never held", jobs.Job{ID: job.ID, Kind: job.Kind, Status: jobs.StatusDone, RequestedBy: "dpo", FinishedAt: &fin}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cert.json")
			doc := sampleDoc()
			doc.Job = docJob(tc.job, []string{})
			if doc.Rows, err = WriteRows(path, sampleRows); err != nil {
				t.Fatal(err)
			}
			if _, err := WriteSigned(path, doc, priv); err != nil {
				t.Fatal(err)
			}
			body, _ := os.ReadFile(path)
			if bytes.Contains(body, []byte("approved_")) != tc.approved {
				t.Fatalf("approval fields in the document: %v, want %v\n%s", !tc.approved, tc.approved, body)
			}
			got, err := Verify(path, priv.Public().(ed25519.PublicKey))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := RenderHTML(&buf, View{Document: got, Checked: true}); err != nil {
				t.Fatal(err)
			}
			if !tc.approved {
				if got.Job.ApprovedBy != "" || got.Job.ApprovedAt != nil {
					t.Fatalf("unheld job's document names an approval: %+v", got.Job)
				}
				return
			}
			if got.Job.ApprovedBy != "token:bob" || got.Job.ApprovedAt == nil || !got.Job.ApprovedAt.Equal(at) {
				t.Fatalf("document's job = %+v", got.Job)
			}
			if !strings.Contains(buf.String(), "token:bob at") || !strings.Contains(buf.String(), "2026-12-01") {
				t.Fatalf("page does not show the approval:\n%s", buf.String())
			}
		})
	}
}
