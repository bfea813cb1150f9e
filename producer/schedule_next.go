package producer

import (
	"time"

	"github.com/robfig/cron/v3"
)

// dueAfter is sched's next n due times after t, in UTC, as every
// scheduler computes them (nextDue: by the clock in UTC unless the spec
// names a zone, once on the days such a zone's clocks change); fewer when
// the spec has no more in the five years cron looks ahead.
func dueAfter(sched cron.Schedule, t time.Time, n int) []time.Time {
	out := []time.Time{}
	for len(out) < n {
		if t = nextDue(sched, t); t.IsZero() {
			break
		}
		out = append(out, t.UTC())
	}
	return out
}

// NextDueShown is how many due times a ScheduleView holds.
const NextDueShown = 3

// ScheduleView is a schedule as the API and the CLI show it: with its next
// due times, and on the answer to a dry run of adding it, DryRun.
type ScheduleView struct {
	Schedule
	Next   []time.Time `json:"next"`
	DryRun bool        `json:"dry_run,omitempty"`
}

// View is the schedule with its next NextDueShown due times after now (in
// UTC; none for a schedule the scheduler refuses: it never fires), and the
// connection flags of a schedule stored as a command line redacted
// (Public).
func (s Schedule) View(now time.Time) ScheduleView {
	next := []time.Time{}
	if sched, refused, _ := s.firing(now); refused == "" {
		next = dueAfter(sched, now, NextDueShown)
	}
	return ScheduleView{Schedule: s.Public(), Next: next}
}
