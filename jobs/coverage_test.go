package jobs

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestCoverageRecorded: a job's scope and each target's coverage are
// stored with the job (in its hash slot), read back whole, and shown in its
// report.
func TestCoverageRecorded(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newJob(t, s)
		if c, err := s.Coverage(ctx, j.ID); err != nil || c != nil {
			t.Fatalf("coverage of a job that recorded none = %+v, %v", c, err)
		}
		c := Coverage{Subject: "u1", Peers: []string{"bob"}, Sources: []string{"group history scan"},
			Gaps: []Gap{{Kind: GapGroupsLeft, What: "groups the user has left", Groups: []string{"@g9"}}}}
		c.Window(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Time{})
		if err := s.SaveCoverage(ctx, j.ID, c); err != nil {
			t.Fatal(err)
		}
		g := TargetCoverage{Target: Target{GroupID: "@g1"}, FirstSeq: 3, LastSeq: 140, Scanned: 138, Found: 12, Done: true}
		p := TargetCoverage{Target: Target{From: "u1", To: "bob"}, Sides: []string{"sender", "peer"}, FirstTime: 1, LastTime: 2, Done: true}
		for _, tc := range []TargetCoverage{p, g} {
			if err := s.SaveTargetCoverage(ctx, j.ID, tc); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Coverage(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Subject != "u1" || got.Since == nil || !got.Since.Equal(*c.Since) || got.Until != nil || len(got.Gaps) != 1 ||
			len(got.Targets) != 2 || got.Targets[0].Target != p.Target || got.Targets[1].LastSeq != 140 {
			t.Fatalf("coverage read back = %+v", got)
		}
		rep, err := s.BuildReport(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := rep.WriteText(&buf, func(string) string { return "" }); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"subject u1", "2026-11-01T00:00:00Z", "group @g1", "seq 3..140", "sides sender+peer", "GAPS", "@g9"} {
			if !strings.Contains(buf.String(), want) {
				t.Errorf("report text lacks %q:\n%s", want, buf.String())
			}
		}
	})
}
