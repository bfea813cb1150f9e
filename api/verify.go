package api

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/imrecall/imrecall/certificate"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/verify"
)

// Certificates configures the certificate routes: where certificates are
// kept, the key they are signed with, and what issues them.
type Certificates struct {
	// Dir holds the certificates, JOB.json with JOB.json.sig and
	// JOB.json.rows.jsonl beside it (and JOB.json.salt for a hashed
	// subject). Required.
	Dir string
	// Key signs new certificates; nil refuses POST (existing certificates
	// are still served, unchecked).
	Key ed25519.PrivateKey
	// Software names what issues them (version, configuration hash).
	Software certificate.Software
}

// VerifyRequest is the optional body of POST /v1/jobs/{id}/verify.
type VerifyRequest struct {
	// Actor is on whose behalf the token asks (recorded in the audit log).
	Actor string `json:"actor,omitempty"`
}

// CertificateRequest is the optional body of POST /v1/jobs/{id}/certificate.
type CertificateRequest struct {
	Actor string `json:"actor,omitempty"`
	// HashSubject names the user by a salted SHA-256 only; the salt is kept
	// in the certificate directory beside the certificate, never served.
	HashSubject bool `json:"hash_subject,omitempty"`
}

// RunStatus is the answer while a verification or a certificate is being
// made in the background: 202, with where to ask again.
type RunStatus struct {
	JobID     string    `json:"job_id"`
	What      string    `json:"what"` // verify or certificate
	Status    string    `json:"status"`
	StartedAt time.Time `json:"started_at"`
	StartedBy string    `json:"started_by"`
	StatusURL string    `json:"status_url"`
}

// background runs verifications and certificates, one at a time per job
// and kind, in this process: a verification of a large job takes minutes
// (one history call per 20 planned messages, at the history APIs' caps).
type background struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	running map[string]RunStatus // by what+" "+job id
	failed  map[string]failure   // the last run's error, until the next one
}

// failure is why a background run failed, and when.
type failure struct {
	msg string
	at  time.Time
}

func newBackground() *background {
	ctx, cancel := context.WithCancel(context.Background())
	return &background{ctx: ctx, cancel: cancel, running: map[string]RunStatus{}, failed: map[string]failure{}}
}

// start runs fn unless a run of the same kind and job is under way, and
// returns the run's status either way.
func (b *background) start(st RunStatus, timeout time.Duration, fn func(ctx context.Context) error) RunStatus {
	key := st.What + " " + st.JobID
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.running[key]; ok {
		return cur
	}
	b.running[key] = st
	delete(b.failed, key)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		ctx, cancel := context.WithTimeout(b.ctx, timeout)
		err := fn(ctx)
		cancel()
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.running, key)
		if err != nil {
			b.failed[key] = failure{fmt.Sprintf("the %s started at %s failed: %v", st.What, st.StartedAt.UTC().Format(time.RFC3339), err), time.Now()}
		}
	}()
	return st
}

// state returns the run under way, if any, and the last run's failure.
func (b *background) state(what, jobID string) (RunStatus, bool, failure) {
	key := what + " " + jobID
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.running[key]
	return st, ok, b.failed[key]
}

// Close stops the verifications and certificates under way and waits for
// them to end. A stopped run keeps nothing (a certificate never names rows
// it did not write).
func (s *Server) Close() {
	s.bg.cancel()
	s.bg.wg.Wait()
}

// verifier is the IM client verification needs, or an error saying why
// this server has none.
func (s *Server) verifier() (verify.JobIM, error) {
	im, ok := s.cfg.IM.(verify.JobIM)
	if !ok || s.cfg.IM == nil {
		return nil, errUnavailable{"this server has no IM client that can read histories: verification is not available"}
	}
	return im, nil
}

// errUnavailable is a route this server is not configured for: 501.
type errUnavailable struct{ msg string }

func (e errUnavailable) Error() string { return e.msg }

// failRun answers an error of the verify and certificate routes.
func (s *Server) failRun(w http.ResponseWriter, r *http.Request, err error) {
	var un errUnavailable
	switch {
	case errors.As(err, &un):
		writeError(w, http.StatusNotImplemented, un.msg)
	case errors.Is(err, certificate.ErrNotFinished):
		writeError(w, http.StatusConflict, err.Error())
	default:
		s.fail(w, r, err)
	}
}

// answerRun answers the request when err is set (failRun) or when a run of
// what for job id is under way here (202 with its status), and reports
// whether it did. Otherwise it returns how the last run of what for the job
// failed here, if it did.
func (s *Server) answerRun(w http.ResponseWriter, r *http.Request, err error, what, id string) (failure, bool) {
	if err != nil {
		s.failRun(w, r, err)
		return failure{}, true
	}
	st, running, failed := s.bg.state(what, id)
	if running {
		writeRunning(w, st)
		return failure{}, true
	}
	return failed, false
}

// jobToVerify returns the verifier of this server and job id.
func (s *Server) jobToVerify(ctx context.Context, id string) (verify.JobIM, jobs.Job, error) {
	im, err := s.verifier()
	if err != nil {
		return nil, jobs.Job{}, err
	}
	job, err := s.cfg.Store.Get(ctx, id)
	return im, job, err
}

// startVerify is POST /v1/jobs/{id}/verify: it starts verifying the job
// in the background (verify.RunJob, as `imrecall verify` does) and answers
// 202 with where to follow it: GET /v1/jobs/{id}/verify.
func (s *Server) startVerify(w http.ResponseWriter, r *http.Request, who Token) {
	var req VerifyRequest
	id, err := jobID(r)
	if err == nil {
		err = optionalBody(w, r, &req)
	}
	var im verify.JobIM
	var job jobs.Job
	if err == nil {
		im, job, err = s.jobToVerify(r.Context(), id)
	}
	if err != nil {
		s.failRun(w, r, err)
		return
	}
	by := actor(who.principal(), req.Actor)
	st := s.bg.start(s.runStatus(job.ID, "verify", by), s.cfg.VerifyTimeout, func(ctx context.Context) error {
		v, err := verify.RunJob(ctx, s.cfg.Store, im, job, verify.JobOptions{Actor: by, Concurrency: s.cfg.DiscoveryConcurrency})
		if err == nil {
			s.log.Info("verified", "job", job.ID, "passed", v.Passed, "still_visible", v.StillVisible, "residue", v.Residue, "history_calls", v.HistoryCalls)
		}
		return err
	})
	writeRunning(w, st)
}

func (s *Server) runStatus(jobID, what, by string) RunStatus {
	return RunStatus{JobID: jobID, What: what, Status: "running", StartedAt: s.now().UTC(), StartedBy: by,
		StatusURL: "/v1/jobs/" + jobID + "/" + what}
}

// lastVerify is GET /v1/jobs/{id}/verify: 202 while a verification runs
// here, the last saved result otherwise (404 if the job was never
// verified), or 500 naming why the last run here failed.
func (s *Server) lastVerify(w http.ResponseWriter, r *http.Request, _ Token) {
	id, err := jobID(r)
	if err == nil {
		_, err = s.cfg.Store.Get(r.Context(), id)
	}
	failed, answered := s.answerRun(w, r, err, "verify", id)
	if answered {
		return
	}
	raw, err := s.cfg.Store.LastVerification(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if failed.msg != "" {
		// Unless a verification kept since (imrecall verify, another
		// serve) is newer than the failure.
		var last verify.JobResult
		if raw == nil || json.Unmarshal(raw, &last) != nil || !last.At.After(failed.at) {
			writeError(w, http.StatusInternalServerError, failed.msg)
			return
		}
	}
	if raw == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("job %s was never verified (POST /v1/jobs/%s/verify)", id, id))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(raw)
}

// certPath is where the certificate of job id is kept.
func (s *Server) certPath(id string) (string, error) {
	c := s.cfg.Certificates
	if c == nil || c.Dir == "" {
		return "", errUnavailable{"this server keeps no certificates (start serve with --signing-key and --certificate-dir)"}
	}
	if err := jobs.ValidID(id); err != nil { // no separator, no leading dot
		return "", badf("%v", err)
	}
	return filepath.Join(c.Dir, id+".json"), nil
}

// startCertificate is POST /v1/jobs/{id}/certificate: for a finished job,
// it verifies the job and writes its signed certificate in the background
// (certificate.Issue, as `imrecall certificate` does) and answers 202; a
// certificate already written is kept, never overwritten: 200 with it.
func (s *Server) startCertificate(w http.ResponseWriter, r *http.Request, who Token) {
	var req CertificateRequest
	id, err := jobID(r)
	if err == nil {
		err = optionalBody(w, r, &req)
	}
	var path string
	if err == nil {
		path, err = s.certPath(id)
	}
	if err == nil && s.cfg.Certificates.Key == nil {
		err = errUnavailable{"this server has no signing key (start serve with --signing-key KEY.pem): it cannot issue certificates"}
	}
	var im verify.JobIM
	var job jobs.Job
	if err == nil {
		im, job, err = s.jobToVerify(r.Context(), id)
	}
	if err == nil && !job.Finished() {
		err = fmt.Errorf("job %s is %s with %d pending: %w", job.ID, job.Status, job.Counts.Pending, certificate.ErrNotFinished)
	}
	if err != nil {
		s.failRun(w, r, err)
		return
	}
	if _, err := os.Stat(path); err == nil {
		s.serveCertificate(w, r, path, "json")
		return
	}
	by := actor(who.principal(), req.Actor)
	c := s.cfg.Certificates
	st := s.bg.start(s.runStatus(job.ID, "certificate", by), s.cfg.VerifyTimeout, func(ctx context.Context) error {
		if _, err := os.Stat(path); err == nil {
			return nil // written by a run that ended just before this one started
		}
		v, doc, err := certificate.Issue(ctx, certificate.Request{
			Store: s.cfg.Store, IM: im, Job: job, Actor: by, Concurrency: s.cfg.DiscoveryConcurrency,
			Out: path, Key: c.Key, HashSubject: req.HashSubject, Software: c.Software,
		})
		if err == nil {
			s.log.Info("certificate of erasure written", "job", job.ID, "rows", doc.Rows.Count, "passed", v.Passed)
		}
		return err
	})
	writeRunning(w, st)
}

// getCertificate is GET /v1/jobs/{id}/certificate: 202 while it is being
// written; then the signed document's exact bytes (JSON), or with
// "Accept: text/html" a printable page, checked against the signing key.
func (s *Server) getCertificate(w http.ResponseWriter, r *http.Request, _ Token) {
	s.certificateFile(w, r, "")
}

func (s *Server) getCertificatePart(part string) func(http.ResponseWriter, *http.Request, Token) {
	return func(w http.ResponseWriter, r *http.Request, _ Token) { s.certificateFile(w, r, part) }
}

func (s *Server) certificateFile(w http.ResponseWriter, r *http.Request, part string) {
	id, err := jobID(r)
	var path string
	if err == nil {
		path, err = s.certPath(id)
	}
	failed, answered := s.answerRun(w, r, err, "certificate", id)
	if answered {
		return
	}
	if _, err := os.Stat(path); err != nil {
		if failed.msg != "" {
			writeError(w, http.StatusInternalServerError, failed.msg)
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("job %s has no certificate (POST /v1/jobs/%s/certificate)", id, id))
		return
	}
	if part == "" && wantsHTML(r) {
		part = "html"
	}
	if part == "" {
		part = "json"
	}
	s.serveCertificate(w, r, path, part)
}

// wantsHTML reports whether the request prefers an HTML page to JSON.
func wantsHTML(r *http.Request) bool {
	for _, a := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(a))
		if err != nil {
			continue
		}
		switch mt {
		case "text/html", "application/xhtml+xml":
			return true
		case "application/json":
			return false
		}
	}
	return false
}

// serveCertificate answers one part of the certificate at path.
func (s *Server) serveCertificate(w http.ResponseWriter, r *http.Request, path, part string) {
	p := certificate.PathsOf(path)
	switch part {
	case "html":
		view, err := s.certificateView(path)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		if err := certificate.RenderHTML(w, view); err != nil {
			s.log.ErrorContext(r.Context(), "rendering a certificate", "path", r.URL.Path, "err", err)
		}
		return
	case "json":
		s.sendFile(w, r, p.Document, "application/json")
	case "sig":
		s.sendFile(w, r, p.Signature, "application/octet-stream")
	case "rows":
		s.sendFile(w, r, p.Rows, "application/x-ndjson")
	}
}

// certificateView reads a certificate for its page (certificate.OpenView),
// checked against the public half of the signing key when the server has
// one.
func (s *Server) certificateView(path string) (certificate.View, error) {
	var pub ed25519.PublicKey
	if key := s.cfg.Certificates.Key; key != nil {
		pub = key.Public().(ed25519.PublicKey)
	}
	return certificate.OpenView(path, pub)
}

// sendFile streams a file of the certificate, byte for byte.
func (s *Server) sendFile(w http.ResponseWriter, r *http.Request, path, contentType string) {
	fh, err := os.Open(path)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer fh.Close()
	w.Header().Set("Content-Type", contentType)
	// The document names its rows file JOB.json.rows.jsonl: saved under
	// these names, the three files check out as they are.
	disposition := "attachment"
	if contentType == "application/json" {
		disposition = "inline"
	}
	w.Header().Set("Content-Disposition", fmt.Sprintf("%s; filename=%q", disposition, filepath.Base(path)))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, fh)
}

// writeRunning answers 202 for a run in progress, pointing at its status.
func writeRunning(w http.ResponseWriter, st RunStatus) {
	w.Header().Set("Location", st.StatusURL)
	writeJSON(w, http.StatusAccepted, st)
}
