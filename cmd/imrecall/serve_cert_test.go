package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/imrecall/imrecall/certificate"
)

// TestServeCertificateFlags: --signing-key needs --certificate-dir, a key
// that is not an Ed25519 PKCS#8 PEM is refused naming the flag, and a good
// pair gives the API a key and a directory it creates.
func TestServeCertificateFlags(t *testing.T) {
	dir := t.TempDir()
	var o serveOptions
	if c, err := o.certificates(); err != nil || c != nil {
		t.Fatalf("no flags: %+v %v, want none", c, err)
	}
	o.signingKey = filepath.Join(dir, "key.pem")
	var bad usageError
	if _, err := o.certificates(); !errors.As(err, &bad) {
		t.Fatalf("--signing-key without --certificate-dir: %v, want bad input", err)
	}
	o.certificateDir = filepath.Join(dir, "certs")
	if err := os.WriteFile(o.signingKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := o.certificates(); !errors.As(err, &bad) {
		t.Fatalf("a key that is not PEM: %v, want bad input", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, err := certificate.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.signingKey, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := o.certificates()
	if err != nil || c == nil || !key.Equal(c.Key) || c.Dir != o.certificateDir || c.Software.ConfigSHA256 == "" {
		t.Fatalf("certificates = %+v, %v", c, err)
	}
	if fi, err := os.Stat(o.certificateDir); err != nil || !fi.IsDir() {
		t.Fatalf("--certificate-dir not created: %v", err)
	}
}
