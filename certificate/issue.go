package certificate

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/verify"
)

// Request is what Issue needs: a finished job, the IM client to verify it
// with, where to write, and the key to sign with.
type Request struct {
	Store *jobs.Store
	IM    verify.JobIM
	Job   jobs.Job
	// Actor is who asked (recorded in the audit log).
	Actor string
	// Concurrency is how many histories verification reads at once.
	Concurrency int
	// Out is the document's file; FILE.sig and FILE.rows.jsonl are written
	// beside it (and FILE.salt with HashSubject).
	Out string
	Key ed25519.PrivateKey
	// HashSubject names the user by a salted SHA-256 only, everywhere in
	// the document and rows; the salt is written to Out+".salt".
	HashSubject bool
	// Software names what issues the certificate (version, configuration
	// hash); Name defaults to imrecall.
	Software Software
}

// ErrNotFinished is returned by Issue for a job that has not finished.
var ErrNotFinished = errors.New("a certificate is for a finished job")

// Issue verifies a finished job (verify.RunJob, which keeps the result with
// the job) and writes its certificate of erasure at r.Out: the rows, then
// the signed document. The certificate is written even when verification
// finds messages still visible; it says so. The CLI's `imrecall
// certificate` and serve's POST /v1/jobs/{id}/certificate both issue
// through it.
func Issue(ctx context.Context, r Request) (verify.JobResult, Document, error) {
	job := r.Job
	if !job.Finished() {
		return verify.JobResult{}, Document{}, ErrNotFinished
	}
	rep, err := r.Store.BuildReport(ctx, job.ID)
	if err != nil {
		return verify.JobResult{}, Document{}, err
	}
	// With HashSubject the user is named by the salted hash everywhere:
	// subject, scope and rows.
	hide := func(s string) string { return s }
	var salt []byte
	if r.HashSubject {
		if salt, err = NewSalt(); err != nil {
			return verify.JobResult{}, Document{}, err
		}
	}
	var v verify.JobResult
	var tally jobs.Counts // of the rows, by state
	rows, err := WriteRows(r.Out, func(yield func(Row) error) error {
		v, err = verify.RunJob(ctx, r.Store, r.IM, job, verify.JobOptions{
			Actor: r.Actor, Concurrency: r.Concurrency,
			OnFinding: func(fd verify.Finding) error {
				tally.Planned++
				switch fd.State {
				case jobs.FinalRecalled, jobs.FinalRecalledUnattributed:
					tally.Recalled++
				case jobs.FinalDeadLettered:
					tally.DeadLettered++
				default:
					tally.Pending++
				}
				return yield(rowOf(fd, hide))
			},
			OnSubject: func(subject string) {
				if r.HashSubject && subject != "" {
					hashed := "sha256:" + HashSubject(salt, subject)
					hide = func(s string) string {
						if s == subject {
							return hashed
						}
						return s
					}
				}
			},
		})
		if err != nil {
			return err
		}
		// The job may have moved while it was verified (a dead letter
		// re-queued): the document states the job as it is now, and only
		// if the rows, read before, still say the same.
		if rep, err = r.Store.BuildReport(ctx, job.ID); err != nil {
			return err
		}
		return unchanged(rep.Job, tally)
	})
	if err != nil {
		return v, Document{}, err
	}
	job = rep.Job
	sw := r.Software
	if sw.Name == "" {
		sw.Name = "imrecall"
	}
	doc := Document{
		IssuedAt: time.Now().UTC(),
		Job:      docJob(job, v.Gaps),
		Counts: Counts{
			Planned: job.Counts.Planned, Recalled: job.Counts.Recalled, RecalledUnattributed: job.Counts.RecalledUnattributed,
			DeadLettered: job.Counts.DeadLettered, DeadLetteredByCode: job.Counts.DeadByCode, Pending: job.Counts.Pending,
		},
		Reconciled: rep.Reconciled,
		Verification: &Verification{
			At: v.At, Verified: v.Verified, Gone: v.Gone, StillVisible: v.StillVisible, Residue: v.Residue,
			HistoryCalls: v.HistoryCalls, Passed: v.Passed,
		},
		Software: sw,
		Rows:     rows,
	}
	if v.Subject != "" {
		doc.Subject = &Subject{UserID: v.Subject}
		if r.HashSubject {
			if err := os.WriteFile(r.Out+".salt", []byte(hex.EncodeToString(salt)+"\n"), 0o600); err != nil {
				return v, Document{}, err
			}
			doc.Subject = &Subject{SaltedSHA256: HashSubject(salt, v.Subject)}
			doc.Job.Scope = hideInScope(job.Params, hide)
		}
	}
	if doc, err = WriteSigned(r.Out, doc, r.Key); err != nil {
		// The rows are this issuer's (WriteRows placed them where there
		// were none): a document is never without its rows, nor rows
		// without their document.
		_ = os.Remove(PathsOf(r.Out).Rows)
		return v, doc, err
	}
	return v, doc, r.Store.Audit(ctx, jobs.Event{Actor: r.Actor, Action: "certificate", JobID: job.ID, Detail: "certificate of erasure written: " + r.Out})
}

// unchanged returns an error wrapping ErrNotFinished unless job is finished
// and its counts are those of the rows written (tally).
func unchanged(job jobs.Job, tally jobs.Counts) error {
	c := job.Counts
	if job.Finished() && c.Planned == tally.Planned && c.Recalled == tally.Recalled && c.DeadLettered == tally.DeadLettered {
		return nil
	}
	return fmt.Errorf("job %s changed while its certificate was made (now %s: %d planned, %d recalled, %d dead-lettered, %d pending; the rows read %d, %d, %d, %d): %w",
		job.ID, job.Status, c.Planned, c.Recalled, c.DeadLettered, c.Pending, tally.Planned, tally.Recalled, tally.DeadLettered, tally.Pending, ErrNotFinished)
}

// rowOf is the certificate row of a verified message; hide replaces the
// subject's user id (HashSubject).
func rowOf(f verify.Finding, hide func(string) string) Row {
	r := Row{State: string(f.State), Code: f.Code, Verified: string(f.Verdict)}
	t := f.Target
	if t.IsGroup() {
		r.GroupID, r.TopicID = t.GroupID, t.TopicID
		r.MsgSeq, _ = strconv.ParseInt(f.Item, 10, 64)
	} else {
		r.From, r.To, r.MsgKey = hide(t.From), hide(t.To), f.Item
	}
	return r
}

// hideInScope replaces the subject in a job's recorded parameters: every
// string value, and every string in a list, that hide changes.
func hideInScope(params json.RawMessage, hide func(string) string) json.RawMessage {
	var m map[string]any
	if err := json.Unmarshal(params, &m); err != nil {
		return nil // unreadable: leave the scope out rather than name the subject
	}
	for k, v := range m {
		switch x := v.(type) {
		case string:
			m[k] = hide(x)
		case []any:
			for i, e := range x {
				if s, ok := e.(string); ok {
					x[i] = hide(s)
				}
			}
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	return b
}

// docJob is the document's record of job: with its approver and the time
// of the approval (Redis's clock) when the job was held for approval.
func docJob(job jobs.Job, gaps []string) Job {
	return Job{
		ID: job.ID, Kind: job.Kind, Status: string(job.Status), Scope: job.Params, CoverageGaps: gaps,
		RequestedBy: job.RequestedBy, ApprovedBy: job.ApprovedBy, ApprovedAt: job.ApprovedAt,
		Reason: job.Reason, CreatedAt: job.CreatedAt, FinishedAt: job.FinishedAt,
	}
}
