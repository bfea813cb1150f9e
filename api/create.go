package api

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// ErrBadRequest is matched (errors.Is) by every error Jobs.Create returns
// for a request the API would answer 400: retrying it cannot help.
var ErrBadRequest = errors.New("bad job request")

// Is makes a badRequest match ErrBadRequest.
func (e badRequest) Is(target error) bool { return target == ErrBadRequest }

// Jobs creates jobs from typed requests without the HTTP layer, through the
// same code as POST /v1/jobs: a worker uses it when a schedule fires. Its
// IM client and credentials are the worker's own; nothing in a request
// changes them.
type Jobs struct{ s *Server }

// NewJobs returns a creator; cfg needs Store, Queue and AppID (Tokens and
// the HTTP handlers are not used).
func NewJobs(cfg Config) (*Jobs, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Jobs{s: &Server{cfg: cfg, log: cfg.Log, now: time.Now}}, nil
}

// Create plans the job req asks for, on behalf of principal (recorded as
// who asked, e.g. "schedule:nightly"). A request that needs confirmation
// and lacks it is a bad request.
func (j *Jobs) Create(ctx context.Context, req CreateJobRequest, principal string) (CreateJobResponse, error) {
	resp, status, err := j.s.create(ctx, req, principal)
	if err != nil {
		return resp, err
	}
	if status == http.StatusConflict {
		return resp, badf("confirm: required (%d messages)", resp.Messages)
	}
	return resp, nil
}
