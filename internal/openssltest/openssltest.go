// Package openssltest lets tests check signatures with the openssl command
// line, as an operator or a privacy officer would: keys made and
// signatures checked by a tool that is not ours prove interoperability,
// not a round trip of our own encoding.
package openssltest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// KeyPair makes an Ed25519 key pair in dir (key.pem, pub.pem) with openssl
// and returns their paths. Without openssl the test is skipped, or fails
// under CI (CI set), where it must run.
func KeyPair(t testing.TB, dir string) (priv, pub string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl not installed: %v", err)
		}
		t.Skip("openssl not installed")
	}
	priv, pub = filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	Run(t, "genpkey", "-algorithm", "ed25519", "-out", priv)
	Run(t, "pkey", "-in", priv, "-pubout", "-out", pub)
	return priv, pub
}

// Run runs openssl with args and fails the test if it fails.
func Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Verifies reports whether openssl accepts doc's detached signature
// (doc + ".sig") under the public key pub. openssl failing for another
// reason than a bad signature fails the test.
func Verifies(t testing.TB, pub, doc string) bool {
	t.Helper()
	out, err := exec.Command("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", doc, "-sigfile", doc+".sig").CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("Signature Verification Failure")) {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("openssl: %v\n%s", err, out)
		}
	}
	return err == nil && bytes.Contains(out, []byte("Signature Verified Successfully"))
}
