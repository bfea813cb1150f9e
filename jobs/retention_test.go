package jobs

import (
	"testing"
	"time"
)

// TestRetentionSweep: a sweep deletes finished jobs older than the
// retention with every key of theirs, keeps running jobs and recent ones,
// trims the audit log by time, and records that it did.
func TestRetentionSweep(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		old := newJob(t, s)
		if _, err := s.PlanGroup(ctx, old.ID, Target{GroupID: "@TGS#1"}, []int64{1, 2}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Record(ctx, old.ID, Target{GroupID: "@TGS#1"}, []Outcome{{Item: "1", Recalled: true}, {Item: "2", Code: "10030"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Cancel(ctx, old.ID, "alice", "done with it"); err != nil {
			t.Fatal(err)
		}
		if err := s.AddRefused(ctx, old.ID, RefusedSenderUnconfirmed, 1); err != nil {
			t.Fatal(err)
		}
		running := newJob(t, s)
		if _, err := s.PlanGroup(ctx, running.ID, Target{GroupID: "@TGS#1"}, []int64{1}); err != nil {
			t.Fatal(err)
		}
		if j, _ := s.Get(ctx, old.ID); !j.Finished() {
			t.Fatalf("the cancelled job is not finished: %+v", j)
		}
		if res, err := s.Sweep(ctx, 0); err != nil || res != (Swept{}) {
			t.Fatalf("keep 0 swept %+v %v", res, err)
		}
		if res, err := s.Sweep(ctx, time.Hour); err != nil || res.Jobs != 0 {
			t.Fatalf("a sweep of jobs newer than the retention: %+v %v", res, err)
		}

		real := s.now
		s.now = func() time.Time { return real().Add(100 * 24 * time.Hour) }
		res, err := s.Sweep(ctx, 90*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if res.Jobs != 1 || res.Keys < 3 || res.AuditEvents < 3 {
			t.Fatalf("swept %+v; want the cancelled job with its keys and the old audit events", res)
		}
		if keys, _ := s.rdb.Keys(ctx, s.jobKey(old.ID)+"*").Result(); len(keys) != 0 {
			t.Fatalf("keys of the swept job remain: %v", keys)
		}
		list, err := s.List(ctx, 10)
		if err != nil || len(list) != 1 || list[0].ID != running.ID {
			t.Fatalf("jobs after the sweep: %+v %v; want only the running one", list, err)
		}
		evs, err := s.AuditLog(ctx, 100)
		if err != nil || len(evs) != 1 || evs[0].Action != "retention_sweep" {
			t.Fatalf("audit log after the sweep: %+v %v; want only the sweep's own event", evs, err)
		}
	})
}
