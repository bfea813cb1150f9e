package producer

import "time"

// NextDue is the schedule's next n due times after t, as every scheduler
// computes them: by the clock in UTC unless the spec names a zone
// (CRON_TZ=), once on the days such a zone's clocks change. It holds fewer
// when the spec has no more in the five years cron looks ahead, and none
// for a spec Validate refuses.
func (s Schedule) NextDue(t time.Time, n int) []time.Time {
	sched, err := checkCron(s.Cron, t)
	if err != nil {
		return nil
	}
	var out []time.Time
	for len(out) < n {
		if t = nextDue(sched, t); t.IsZero() {
			break
		}
		out = append(out, t)
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
	if _, refused, _ := s.firing(now); refused == "" {
		next = append(next, s.NextDue(now, NextDueShown)...)
	}
	for i := range next {
		next[i] = next[i].UTC()
	}
	return ScheduleView{Schedule: s.Public(), Next: next}
}
