package producer

import (
	"testing"
	"time"
)

// TestScheduleInAZoneWithDaylightSaving: a daily schedule in a zone with
// daylight saving time fires once a day on the days the clocks change, as
// cron does: once (not twice) for a time the clocks repeat when they go
// back, and, for a time the clocks skip when they go forward, at the
// change (not a day later).
func TestScheduleInAZoneWithDaylightSaving(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	day := func(spec string, from time.Time) []time.Time {
		t.Helper()
		sched, err := parseCron(spec)
		if err != nil {
			t.Fatal(err)
		}
		var out []time.Time
		for d := nextDue(sched, from); d.Before(from.Add(24 * time.Hour)); d = nextDue(sched, d) {
			out = append(out, d)
		}
		return out
	}
	// 2026-11-01: 01:00-02:00 happens twice in New York.
	back := time.Date(2026, 11, 1, 0, 0, 0, 0, ny)
	if got := day("CRON_TZ=America/New_York 30 1 * * *", back); len(got) != 1 || !got[0].Equal(time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC)) {
		t.Errorf("fall back: 01:30 fires at %v, want once, at 05:30Z", got)
	}
	// 2026-03-08: 02:00-03:00 does not happen in New York.
	fwd := time.Date(2026, 3, 8, 0, 0, 0, 0, ny)
	if got := day("CRON_TZ=America/New_York 30 2 * * *", fwd); len(got) != 1 || !got[0].Equal(time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)) {
		t.Errorf("spring forward: 02:30 fires at %v, want once, at the change (03:00 EDT, 07:00Z)", got)
	}
	// Other times and days are as cron says.
	if got := day("CRON_TZ=America/New_York 30 3 * * *", fwd); len(got) != 1 || !got[0].Equal(time.Date(2026, 3, 8, 7, 30, 0, 0, time.UTC)) {
		t.Errorf("03:30 on the day of the change fires at %v", got)
	}
	// A spec whose hour is "*" fires by the clock as it goes: every half
	// hour over the next 24 hours, whatever the clocks do.
	for _, from := range []time.Time{back, fwd} {
		if got := day("CRON_TZ=America/New_York */30 * * * *", from); len(got) != 47 {
			t.Errorf("every half hour over the 24 h from %v: %d firings, want 47", from, len(got))
		}
	}
	// And on other days, every day once.
	if got := day("CRON_TZ=America/New_York 30 2 * * *", fwd.AddDate(0, 0, 1)); len(got) != 1 || !got[0].Equal(time.Date(2026, 3, 9, 6, 30, 0, 0, time.UTC)) {
		t.Errorf("the day after the change: %v", got)
	}
	if got := day("CRON_TZ=America/New_York 30 1 * * *", back.Add(-24*time.Hour)); len(got) != 1 {
		t.Errorf("the day before the change: %v", got)
	}
}
