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
	Passed  bool     `json:"passed"`
	Subject string   `json:"subject,omitempty"`
	Gaps    []string `json:"coverage_gaps"`
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
	v := JobResult{Result: res, Passed: res.Passed(), Subject: scope.Subject, Gaps: scope.Gaps}
	if v.Gaps == nil {
		v.Gaps = []string{}
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return v, err
	}
	return v, store.SaveVerification(ctx, job.ID, opt.Actor, raw, v.Passed)
}
