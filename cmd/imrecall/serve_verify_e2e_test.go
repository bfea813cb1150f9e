package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/openssltest"
)

// TestServeVerifiesAndCertifies: a purge through the CLI, then `imrecall
// serve --signing-key --certificate-dir` (a real process) verifies it and
// writes its certificate when asked over HTTP; the three files fetched
// from serve check out with openssl and `imrecall certificate verify`, and
// the page says the certificate checked out.
func TestServeVerifiesAndCertifies(t *testing.T) {
	key, pub := openssltest.KeyPair(t, t.TempDir())
	e, j, _ := newPurgedE2E(t, emulator.DatasetSpec{Groups: 12, Users: 100, GroupMessages: 2000, C2CMessages: 200,
		HeavyGroups: 6, HeavyShare: 0.1, Peers: 3, Seed: 41}, "erasure request 907")

	dir := t.TempDir()
	// A key without a directory to keep certificates in is refused.
	if _, err := e.run("serve", "--listen", freeAddr(t), "--index=false", "--signing-key", key); exitOf(t, err) != cli.ExitBadInput {
		t.Fatalf("serve --signing-key without --certificate-dir: %v, want exit %d", err, cli.ExitBadInput)
	}
	addr := freeAddr(t)
	certDir := filepath.Join(dir, "certs")
	e.serveProc(addr, "--index=false", "--signing-key", key, "--certificate-dir", certDir)
	base := "http://" + addr + "/v1/jobs/" + j.ID

	call := func(method, url, accept string) (int, []byte) {
		t.Helper()
		body, header := "", bearer(e2eAPIToken)
		if method == "POST" {
			body, header = `{"actor":"dpo@example.com"}`, append(header, "Content-Type", "application/json")
		}
		if accept != "" {
			header = append(header, "Accept", accept)
		}
		return httpCall(t, method, url, body, header...)
	}
	// await polls a status URL until it stops answering 202.
	await := func(url, accept string) []byte {
		t.Helper()
		for range 6000 {
			code, b := call("GET", url, accept)
			if code == http.StatusOK {
				return b
			}
			if code != http.StatusAccepted {
				t.Fatalf("GET %s: HTTP %d %s", url, code, b)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("GET %s: still running", url)
		return nil
	}

	if code, b := call("POST", base+"/verify", ""); code != http.StatusAccepted {
		t.Fatalf("POST verify: HTTP %d %s", code, b)
	}
	var v verification
	if err := json.Unmarshal(await(base+"/verify", ""), &v); err != nil {
		t.Fatal(err)
	}
	if !v.Passed || v.Verified != j.Counts.Planned || v.StillVisible != 0 || v.Residue != 0 || !v.ScopeChecked {
		t.Fatalf("verification through serve: %+v (job planned %d)", v, j.Counts.Planned)
	}

	if code, b := call("POST", base+"/certificate", ""); code != http.StatusAccepted {
		t.Fatalf("POST certificate: HTTP %d %s", code, b)
	}
	doc := await(base+"/certificate", "application/json")
	_, sig := call("GET", base+"/certificate.sig", "")
	_, rows := call("GET", base+"/certificate.rows.jsonl", "")
	// The document names its rows file by the name serve keeps it under.
	cert := filepath.Join(dir, j.ID+".json")
	for path, b := range map[string][]byte{cert: doc, cert + ".sig": sig, cert + ".rows.jsonl": rows} {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !openssltest.Verifies(t, pub, cert) {
		t.Fatal("openssl refused the certificate fetched from serve")
	}
	if _, err := e.run("certificate", "verify", cert, "--public-key", pub); err != nil {
		t.Fatalf("certificate verify of the files fetched from serve: %v", err)
	}
	page := string(await(base+"/certificate", "text/html"))
	if !strings.Contains(page, "Signature and rows checked") || !strings.Contains(page, j.ID) || !strings.Contains(page, "erasure request 907") {
		t.Fatalf("the page from serve:\n%.600s", page)
	}
	if _, err := os.Stat(filepath.Join(certDir, j.ID+".json")); err != nil {
		t.Fatalf("serve kept no certificate in --certificate-dir: %v", err)
	}
}
