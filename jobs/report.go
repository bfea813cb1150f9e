package jobs

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Report is what a person (or a GDPR officer) reads at the end of a job:
// the counts, the dead letters sorted by what they mean, and a recount of
// every message state proving the counts.
type Report struct {
	Job              Job              `json:"job"`
	Duration         time.Duration    `json:"-"`
	DurationSeconds  float64          `json:"duration_seconds"`
	AlreadyRecalled  int64            `json:"already_recalled"`
	NotFound         int64            `json:"not_found"`
	Cancelled        int64            `json:"cancelled"`
	NeedsAttention   int64            `json:"needs_attention"`
	NeedsAttentionBy map[string]int64 `json:"needs_attention_by_code,omitempty"`
	// Refused counts messages never planned, by reason (see AddRefused):
	// e.g. index entries whose sender the history did not confirm.
	Refused map[string]int64 `json:"refused,omitempty"`
	Recount Recount          `json:"recount"`
	// Reconciled: the counters agree with the recount of every message's
	// state. It says nothing of whether the job is over: see Settled.
	Reconciled       bool   `json:"reconciled"`
	ReconcileProblem string `json:"reconcile_problem,omitempty"`
	// Settled: the job has ended and no message is pending (Job.Finished).
	Settled bool `json:"settled"`
	// Coverage is the purge's scope, the targets its discovery read and
	// the gaps it could not reach; nil for a job that recorded none.
	Coverage *Coverage `json:"coverage,omitempty"`
}

// BuildReport reads a job and recounts its message states.
func (s *Store) BuildReport(ctx context.Context, jobID string) (Report, error) {
	j, err := s.Get(ctx, jobID)
	if err != nil {
		return Report{}, err
	}
	rc, err := s.Recount(ctx, jobID)
	if err != nil {
		return Report{}, err
	}
	refused, err := s.Refused(ctx, jobID)
	if err != nil {
		return Report{}, err
	}
	cov, err := s.Coverage(ctx, jobID)
	if err != nil {
		return Report{}, err
	}
	// The counters once more: workers may have recorded outcomes while the
	// states were recounted, target by target.
	before := j.Counts
	if j, err = s.Get(ctx, jobID); err != nil {
		return Report{}, err
	}
	r := Report{Job: j, Recount: rc, Reconciled: true, Settled: j.Finished(), Refused: refused, Coverage: cov}
	if err := rc.Between(before, j.Counts); err != nil {
		r.Reconciled, r.ReconcileProblem = false, err.Error()
	}
	end := s.now()
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	r.Duration = end.Sub(j.CreatedAt)
	r.DurationSeconds = r.Duration.Seconds()
	for code, n := range j.Counts.DeadByCode {
		switch CategoryOf(code) {
		case AlreadyRecalled:
			r.AlreadyRecalled += n
		case NotFound:
			r.NotFound += n
		case Cancelled:
			r.Cancelled += n
		default:
			r.NeedsAttention += n
			if r.NeedsAttentionBy == nil {
				r.NeedsAttentionBy = map[string]int64{}
			}
			r.NeedsAttentionBy[code] = n
		}
	}
	return r, nil
}

// WriteText writes the report for a person.
func (r Report) WriteText(w io.Writer, describe func(code string) string) error {
	j := r.Job
	c := j.Counts
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("job %s  %s  status %s", j.ID, j.Kind, j.Status)
	if j.Paused {
		p(" (paused)")
	}
	p("\nrequested by %s at %s", j.RequestedBy, j.CreatedAt.Format(time.RFC3339))
	if j.Reason != "" {
		p(": %s", j.Reason)
	}
	switch {
	case j.ApprovedBy != "" && j.ApprovedAt != nil:
		p("\napproved by %s at %s", j.ApprovedBy, j.ApprovedAt.Format(time.RFC3339))
		if j.ApprovalReason != "" {
			p(": %s", j.ApprovalReason)
		}
		if j.Status == StatusApproved && j.StartsAt != nil {
			p("\nstarts at %s (cool-off): cancel stops it before then", j.StartsAt.Format(time.RFC3339))
		}
	case j.Status == StatusAwaitingApproval:
		p("\nawaiting approval by an admin other than %s: nothing is sent until then", cmpRequester(j))
	}
	p("\nduration %s\n\n", r.Duration.Round(time.Second))
	p("  planned        %10d\n", c.Planned)
	p("  recalled       %10d\n", c.Recalled)
	if c.RecalledUnattributed > 0 {
		p("    of which after a lost answer    %10d  (gone; by this job or before it, no one can tell)\n", c.RecalledUnattributed)
	}
	p("  dead-lettered  %10d\n", c.DeadLettered)
	p("    already recalled (20023)        %10d\n", r.AlreadyRecalled)
	p("    not found (10030/20022)         %10d\n", r.NotFound)
	p("    cancelled                       %10d\n", r.Cancelled)
	p("    needs attention                 %10d\n", r.NeedsAttention)
	for _, code := range sortedCodes(r.NeedsAttentionBy) {
		p("      %-8s %-40s %10d\n", code, describe(code), r.NeedsAttentionBy[code])
	}
	p("  pending        %10d\n", c.Pending)
	if n := r.Refused[RefusedSenderUnconfirmed]; n > 0 {
		p("  not planned: sender not confirmed by the history (forged or another user's index entry) %d\n", n)
	}
	p("\n")
	switch {
	case !r.Reconciled:
		p("NOT RECONCILED: %s\n", r.ReconcileProblem)
	case c.Pending > 0:
		// Never "reconciled" while messages wait: they may wait on nothing
		// (a worker's reconciler queues them again, see package reconcile).
		p("NOT SETTLED: %d messages pending (status %s); the counts agree with the states (%d recounted)\n",
			c.Pending, j.Status, r.Recount.Planned)
	default:
		p("reconciled: every planned message has exactly one state (%d recounted)\n", r.Recount.Planned)
	}
	if in := j.PlanningInterrupted; in != nil {
		p("planning interrupted: %s stopped with %d messages planned; run the same command again to plan the rest\n", in.Units, in.Planned)
	}
	if j.Error != "" {
		p("error: %s\n", j.Error)
	}
	if r.Coverage != nil {
		p("\n")
		r.Coverage.WriteText(w)
	}
	return nil
}
