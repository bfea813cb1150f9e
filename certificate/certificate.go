// Package certificate writes and checks certificates of erasure: a JSON
// document that says what a recall job was asked to do, what it did to every
// message, and what a later verification found, signed with an Ed25519 key
// so that a privacy officer can file it and anyone holding the public key can
// check it.
//
// A certificate is three files side by side:
//
//	FILE            the document, JSON, signed byte for byte
//	FILE.sig        the detached Ed25519 signature of FILE (64 raw bytes)
//	FILE.rows.jsonl every message of the job and its final state, one JSON
//	                object a line; the document carries its SHA-256
//
// The signature is the one OpenSSL makes and checks:
//
//	openssl genpkey -algorithm ed25519 -out KEY.pem
//	openssl pkey -in KEY.pem -pubout -out PUB.pem
//	openssl pkeyutl -verify -pubin -inkey PUB.pem -rawin -in FILE -sigfile FILE.sig
//
// OpenSSL checks the document only; Verify checks the document and that the
// rows file is the one the document names.
package certificate

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/imrecall/imrecall/jobs"
)

// Format names the document's schema; a reader refuses any other.
const Format = "imrecall.certificate-of-erasure/v1"

// Document is the signed part of a certificate.
type Document struct {
	Format   string    `json:"format"`
	IssuedAt time.Time `json:"issued_at"`
	Job      Job       `json:"job"`
	Subject  *Subject  `json:"subject,omitempty"`
	// Counts are the job's message counts; Reconciled says that a recount of
	// every message state agreed with them when the certificate was made.
	Counts       Counts        `json:"counts"`
	Reconciled   bool          `json:"reconciled"`
	Verification *Verification `json:"verification,omitempty"`
	Software     Software      `json:"software"`
	Rows         Rows          `json:"rows"`
}

// Job describes the job the certificate is about.
type Job struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Status string `json:"status"`
	// Scope is what the job was asked to cover (users, groups, time range,
	// peers, sources), as the job recorded it.
	Scope json.RawMessage `json:"scope,omitempty"`
	// CoverageGaps name what the job could not reach (a group type without
	// recall, one-to-one chats without known peers, history beyond the
	// roaming period). Empty when the job knows of none.
	CoverageGaps []string   `json:"coverage_gaps"`
	RequestedBy  string     `json:"requested_by"`
	ApprovedBy   string     `json:"approved_by,omitempty"`
	ApprovedAt   *time.Time `json:"approved_at,omitempty"`
	// Reason is why the job ran: the incident, or the legal basis of an
	// erasure request.
	Reason     string     `json:"reason"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Subject is whose messages were erased: in plain, or as a salted hash so
// that the certificate can be shown without naming the person. Whoever holds
// the salt (written beside the certificate, not inside it) and the user id
// can recompute the hash.
type Subject struct {
	UserID string `json:"user_id,omitempty"`
	// SaltedSHA256 is hex(SHA-256(salt || user id)).
	SaltedSHA256 string `json:"salted_sha256,omitempty"`
}

// HashSubject returns the salted hash of a user id.
func HashSubject(salt []byte, userID string) string {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(userID))
	return hex.EncodeToString(h.Sum(nil))
}

// Counts are the job's counts: planned = recalled + dead_lettered + pending.
type Counts struct {
	Planned              int64            `json:"planned"`
	Recalled             int64            `json:"recalled"`
	RecalledUnattributed int64            `json:"recalled_unattributed"`
	DeadLettered         int64            `json:"dead_lettered"`
	DeadLetteredByCode   map[string]int64 `json:"dead_lettered_by_code,omitempty"`
	Pending              int64            `json:"pending"`
}

// Check reports whether the counts add up.
func (c Counts) Check() error {
	if c.Recalled+c.DeadLettered+c.Pending != c.Planned {
		return fmt.Errorf("counts do not add up: recalled %d + dead-lettered %d + pending %d != planned %d",
			c.Recalled, c.DeadLettered, c.Pending, c.Planned)
	}
	var byCode int64
	for _, n := range c.DeadLetteredByCode {
		byCode += n
	}
	if byCode != c.DeadLettered {
		return fmt.Errorf("counts do not add up: dead letters by code sum to %d, not %d", byCode, c.DeadLettered)
	}
	return nil
}

// Verification is what a re-read of the job's histories found after it ran.
type Verification struct {
	At time.Time `json:"at"`
	// Verified planned messages the history shows recalled.
	Verified int64 `json:"verified"`
	// Gone planned messages the history no longer has (expired or deleted).
	Gone int64 `json:"gone"`
	// StillVisible planned messages the history still shows.
	StillVisible int64 `json:"still_visible"`
	// Residue visible messages of the subject inside the job's scope that
	// the job did not plan (sent after discovery, or missed).
	Residue int64 `json:"residue"`
	// HistoryCalls made by the verification.
	HistoryCalls int64 `json:"history_calls"`
	// Passed: nothing still visible and no residue.
	Passed bool `json:"passed"`
}

// Software names what made the certificate.
type Software struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// ConfigSHA256 is a hash of the settings that shaped the job (API base,
	// SDKAppID, admin identifier, caps); never of a secret.
	ConfigSHA256 string `json:"config_sha256"`
}

// Rows names the rows file and pins its content.
type Rows struct {
	File   string `json:"file"` // base name, beside the document
	Count  int64  `json:"count"`
	SHA256 string `json:"sha256"`
}

// Row is one message of the job and its final state, a line of the rows file.
type Row struct {
	jobs.Ref
	// State is recalled, recalled_unattributed, dead_lettered or pending.
	State string `json:"state"`
	Code  string `json:"code,omitempty"` // the dead letter's code
	// Verified is what verification found: recalled, gone or still_visible;
	// empty when the job was not verified.
	Verified string `json:"verified,omitempty"`
}

// Paths are the three files of a certificate at path.
type Paths struct{ Document, Signature, Rows string }

// PathsOf returns the files of the certificate written at doc.
func PathsOf(doc string) Paths {
	return Paths{Document: doc, Signature: doc + ".sig", Rows: doc + ".rows.jsonl"}
}

// WriteRows writes the rows file of the certificate at doc, from rows in
// its order, and returns what the document must say of it. Write the rows
// first, then the document with WriteSigned: a document never names rows
// that are not there.
func WriteRows(doc string, rows func(yield func(Row) error) error) (Rows, error) {
	p := PathsOf(doc)
	sum, n, err := writeRows(p.Rows, rows)
	if err != nil {
		return Rows{}, err
	}
	return Rows{File: filepath.Base(p.Rows), Count: n, SHA256: sum}, nil
}

// WriteSigned writes the document (doc.Rows from WriteRows) and its
// signature, and returns the document as written. Each file is written
// whole to a temporary name and renamed into place.
func WriteSigned(path string, doc Document, key ed25519.PrivateKey) (Document, error) {
	if len(key) != ed25519.PrivateKeySize {
		return doc, errors.New("certificate: signing key: not an Ed25519 private key")
	}
	if doc.Rows.File == "" || doc.Rows.SHA256 == "" {
		return doc, errors.New("certificate: the document names no rows file (WriteRows first)")
	}
	doc.Format = Format
	body, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return doc, fmt.Errorf("certificate: encoding the document: %w", err)
	}
	body = append(body, '\n')
	p := PathsOf(path)
	if err := writeFileAtomic(p.Document, body, placeNew); err != nil {
		return doc, err
	}
	if err := writeFileAtomic(p.Signature, ed25519.Sign(key, body), os.Rename); err != nil {
		_ = os.Remove(p.Document) // placed by this call: no document without its signature
		return doc, err
	}
	return doc, nil
}

// placeNew moves the finished file tmp to path unless path exists: a
// certificate (its document, its rows) is never overwritten, not even by
// another issuer that started before it was written. The error then wraps
// fs.ErrExist.
func placeNew(tmp, path string) error {
	err := os.Link(tmp, path)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: a certificate is never overwritten: %w", path, fs.ErrExist)
	}
	if err != nil {
		// A file system without hard links: check, then rename.
		if _, serr := os.Lstat(path); serr == nil {
			return fmt.Errorf("%s exists: a certificate is never overwritten: %w", path, fs.ErrExist)
		}
		return os.Rename(tmp, path)
	}
	_ = os.Remove(tmp) // the file is in place; a leftover name is harmless
	return nil
}

func writeRows(path string, rows func(yield func(Row) error) error) (sum string, n int64, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".rows-*")
	if err != nil {
		return "", 0, fmt.Errorf("certificate: rows file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	enc := json.NewEncoder(io.MultiWriter(tmp, h))
	if err := rows(func(r Row) error {
		n++
		return enc.Encode(r)
	}); err != nil {
		return "", 0, fmt.Errorf("certificate: rows: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("certificate: rows file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("certificate: rows file: %w", err)
	}
	if err := placeNew(tmp.Name(), path); err != nil {
		return "", 0, fmt.Errorf("certificate: rows file: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func writeFileAtomic(path string, b []byte, place func(tmp, path string) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".cert-*")
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = place(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("certificate: writing %s: %w", path, err)
	}
	return nil
}

// Failure is why a certificate did not check out. Verify returns it (wrapped
// in no other error) for every reason that is the certificate's, as opposed
// to a file that cannot be read.
type Failure struct {
	What string // "signature", "rows", "document"
	Msg  string
}

func (f *Failure) Error() string { return "certificate " + f.What + ": " + f.Msg }

// Verify checks the certificate at path: the signature of the document with
// pub, the document's format, and that the rows file beside it has the hash
// and count the document names. It returns the document when all hold.
func Verify(path string, pub ed25519.PublicKey) (Document, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Document{}, errors.New("certificate: public key: not an Ed25519 public key")
	}
	p := PathsOf(path)
	body, err := os.ReadFile(p.Document)
	if err != nil {
		return Document{}, fmt.Errorf("certificate: %w", err)
	}
	sig, err := os.ReadFile(p.Signature)
	if err != nil {
		return Document{}, fmt.Errorf("certificate: %w", err)
	}
	if !ed25519.Verify(pub, body, sig) {
		return Document{}, &Failure{What: "signature", Msg: fmt.Sprintf("%s does not match %s under this public key (the document was changed, or signed with another key)", p.Signature, p.Document)}
	}
	var doc Document
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return Document{}, &Failure{What: "document", Msg: err.Error()}
	}
	if doc.Format != Format {
		return Document{}, &Failure{What: "document", Msg: fmt.Sprintf("format %q, want %q", doc.Format, Format)}
	}
	rows := filepath.Join(filepath.Dir(path), doc.Rows.File)
	if doc.Rows.File != filepath.Base(doc.Rows.File) {
		return Document{}, &Failure{What: "document", Msg: fmt.Sprintf("rows file %q is not a plain file name", doc.Rows.File)}
	}
	sum, n, err := hashLines(rows)
	if err != nil {
		return Document{}, fmt.Errorf("certificate: %w", err)
	}
	if sum != doc.Rows.SHA256 {
		return Document{}, &Failure{What: "rows", Msg: fmt.Sprintf("%s has SHA-256 %s, the document says %s", rows, sum, doc.Rows.SHA256)}
	}
	if n != doc.Rows.Count {
		return Document{}, &Failure{What: "rows", Msg: fmt.Sprintf("%s has %d rows, the document says %d", rows, n, doc.Rows.Count)}
	}
	return doc, nil
}

func hashLines(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	var n int64
	buf := make([]byte, 64<<10)
	for {
		k, err := f.Read(buf)
		h.Write(buf[:k])
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", 0, err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// LoadPrivateKey reads an Ed25519 private key in PKCS#8 PEM, as
// `openssl genpkey -algorithm ed25519` writes it.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	block, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: a %T, want Ed25519 (openssl genpkey -algorithm ed25519)", path, k)
	}
	return ek, nil
}

// LoadPublicKey reads an Ed25519 public key in PEM (SubjectPublicKeyInfo),
// as `openssl pkey -pubout` writes it.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	block, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s: a %T, want Ed25519", path, k)
	}
	return ek, nil
}

func readPEM(path, typ string) (*pem.Block, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block found", path)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("%s: a PEM %q block, want %q", path, block.Type, typ)
	}
	return block, nil
}

// MarshalPublicKey encodes pub as PEM (SubjectPublicKeyInfo).
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// MarshalPrivateKey encodes key as PKCS#8 PEM.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// NewSalt returns 16 random bytes for HashSubject.
func NewSalt() ([]byte, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}
