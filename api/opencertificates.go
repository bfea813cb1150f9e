package api

import (
	"fmt"
	"os"

	"github.com/imrecall/imrecall/certificate"
)

// CertificateSetupError is a certificate setting the operator must change
// (the CLI exits 2); its text names the flag.
type CertificateSetupError struct{ Err error }

func (e *CertificateSetupError) Error() string { return e.Err.Error() }
func (e *CertificateSetupError) Unwrap() error { return e.Err }

// OpenCertificates reads serve's --certificate-dir (dir) and --signing-key
// (keyPath, a PKCS#8 PEM Ed25519 key), creating dir if needed: nil when
// neither is given.
func OpenCertificates(dir, keyPath string, sw certificate.Software) (*Certificates, error) {
	setup := func(format string, args ...any) error {
		return &CertificateSetupError{fmt.Errorf(format, args...)}
	}
	if dir == "" {
		if keyPath != "" {
			return nil, setup("--signing-key needs --certificate-dir: where the certificates it signs are kept")
		}
		return nil, nil
	}
	c := &Certificates{Dir: dir, Software: sw}
	if keyPath != "" {
		key, err := certificate.LoadPrivateKey(keyPath)
		if err != nil {
			return nil, setup("--signing-key %v", err)
		}
		c.Key = key
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, setup("--certificate-dir %v", err)
	}
	return c, nil
}
