package producer

import (
	"testing"
	"time"
)

// TestDueTimesAreTheSameEverywhere: two schedulers started at different
// moments, in different zones, compute the same due times.
func TestDueTimesAreTheSameEverywhere(t *testing.T) {
	for _, c := range []struct {
		spec string
		want string
	}{
		{"0 3 * * *", "2026-12-02T03:00:00Z"},
		{"@every 1h", "2026-12-01T19:00:00Z"},
		{"@daily", "2026-12-02T00:00:00Z"},
		{"CRON_TZ=Asia/Shanghai 0 3 * * *", "2026-12-01T19:00:00Z"},
	} {
		sched, err := parseCron(c.spec)
		if err != nil {
			t.Fatal(err)
		}
		a := time.Date(2026, 12, 1, 18, 17, 0, 0, time.UTC)
		b := a.Add(23 * time.Minute).In(time.FixedZone("X", -5*3600))
		da, db := nextDue(sched, a).UTC().Format(time.RFC3339), nextDue(sched, b).UTC().Format(time.RFC3339)
		if da != c.want || db != c.want {
			t.Errorf("%s: next due %s and %s, want %s", c.spec, da, db, c.want)
		}
	}
}
