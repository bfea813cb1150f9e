package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/imrecall/imrecall/certificate"
)

// TestOpenCertificates: --signing-key needs --certificate-dir, a key that
// is not an Ed25519 PKCS#8 PEM is refused naming the flag, and a good pair
// gives the API a key and a directory it creates.
func TestOpenCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sw := certificate.Software{Name: "imrecall", Version: "test", ConfigSHA256: "abc"}
	if c, err := OpenCertificates("", "", sw); err != nil || c != nil {
		t.Fatalf("no flags: %+v %v, want none", c, err)
	}
	keyPath, certDir := filepath.Join(dir, "key.pem"), filepath.Join(dir, "certs")
	var bad *CertificateSetupError
	if _, err := OpenCertificates("", keyPath, sw); !errors.As(err, &bad) {
		t.Fatalf("--signing-key without --certificate-dir: %v, want a setup error", err)
	}
	if err := os.WriteFile(keyPath, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCertificates(certDir, keyPath, sw); !errors.As(err, &bad) {
		t.Fatalf("a key that is not PEM: %v, want a setup error", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, err := certificate.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCertificates(certDir, keyPath, sw)
	if err != nil || c == nil || !key.Equal(c.Key) || c.Dir != certDir || c.Software != sw {
		t.Fatalf("certificates = %+v, %v", c, err)
	}
	if fi, err := os.Stat(certDir); err != nil || !fi.IsDir() {
		t.Fatalf("--certificate-dir not created: %v", err)
	}
}
