package verify

import (
	"context"
	"encoding/json"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
)

// JobIM is what verifying a whole job needs of the IM client: discovery's
// calls (to list the scope) and verification's; *tim.Client has both.
type JobIM interface {
	producer.IM
	IM
}

// JobResult is the result of verifying a job as `imrecall verify --json`
// prints it, `GET /v1/jobs/{id}/verify` answers it and the job keeps it:
// the Result, whether it passed, whose messages, and what the scope cannot
// reach.
type JobResult struct {
	Result
	// Passed: nothing the job planned is visible, the scope holds nothing
	// it missed, and the job had finished (JobFinished). A job still
	// planning or running may plan more: that what it planned so far is
	// gone says nothing of the rest.
	Passed bool `json:"passed"`
	// JobStatus is the job's status when the verification ended, and
	// JobFinished whether it had finished (jobs.Job.Finished: a terminal
	// status, nothing pending).
	JobStatus   jobs.Status `json:"job_status"`
	JobFinished bool        `json:"job_finished"`
	Subject     string      `json:"subject,omitempty"`
	Gaps        []string    `json:"coverage_gaps"`
}

// JobOptions tune RunJob.
type JobOptions struct {
	// Actor is who asked (recorded in the audit log).
	Actor string
	// Concurrency is how many targets are read at once. Zero: 8.
	Concurrency int
	// OnFinding, if set, is called for every planned message (see Options).
	OnFinding func(Finding) error
	// OnSubject, if set, learns the job's subject before any finding is
	// reported.
	OnSubject func(subject string)
}

// RunJob verifies job over its scope (ScopeOfRecorded), keeps the result with the
// job (Store.SaveVerification, which audits it) and returns it. The CLI's
// verify and certificate and the HTTP API all verify through it.
func RunJob(ctx context.Context, store *jobs.Store, im JobIM, job jobs.Job, opt JobOptions) (JobResult, error) {
	scope, err := ScopeOfRecorded(ctx, store, job, im)
	if err != nil {
		return JobResult{}, err
	}
	if opt.OnSubject != nil {
		opt.OnSubject(scope.Subject)
	}
	res, err := Run(ctx, store, im, job.ID, Options{Scope: scope.List, OnFinding: opt.OnFinding, Concurrency: opt.Concurrency})
	if err != nil {
		return JobResult{}, err
	}
	// The job as it is now: it may have planned more, or finished, while
	// its histories were read.
	now, err := store.Get(ctx, job.ID)
	if err != nil {
		return JobResult{}, err
	}
	v := JobResult{Result: res, Passed: res.Passed() && now.Finished(), JobStatus: now.Status, JobFinished: now.Finished(),
		Subject: scope.Subject, Gaps: scope.Gaps}
	if v.Gaps == nil {
		v.Gaps = []string{}
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return v, err
	}
	return v, store.SaveVerification(ctx, job.ID, opt.Actor, raw, v.Passed)
}
