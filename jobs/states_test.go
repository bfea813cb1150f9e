package jobs

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// stateJob brings a new job to status from: seqs 1 and 2 of group g planned
// and pending (recalled for "done"), seq 3 dead-lettered with 10002. "held"
// is a job created held for approval (awaiting_approval), "cooling" one
// approved with a cool-off (approved).
func stateJob(t *testing.T, s *Store, from string) Job {
	t.Helper()
	ctx := t.Context()
	j := newJob(t, s)
	if from == "held" || from == "cooling" {
		j = newHeldJob(t, s)
	}
	g := Target{GroupID: "g"}
	if _, err := s.PlanGroup(ctx, j.ID, g, []int64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, j.ID, g, []Outcome{{Item: "3", Code: "10002"}}); err != nil {
		t.Fatal(err)
	}
	closeRoot := func() {
		if _, err := s.ClosePlanner(ctx, j.ID, RootPlanner); err != nil {
			t.Fatal(err)
		}
	}
	switch from {
	case "planning":
	case "running":
		closeRoot()
	case "done":
		closeRoot()
		if _, err := s.Record(ctx, j.ID, g, []Outcome{{Item: "1", Recalled: true}, {Item: "2", Recalled: true}}); err != nil {
			t.Fatal(err)
		}
	case "cancelled":
		if _, err := s.Cancel(ctx, j.ID, "t", ""); err != nil {
			t.Fatal(err)
		}
	case "failed":
		if _, err := s.Fail(ctx, j.ID, errors.New("boom")); err != nil {
			t.Fatal(err)
		}
	case "paused":
		closeRoot()
		if err := s.SetPaused(ctx, j.ID, "t", "", true); err != nil {
			t.Fatal(err)
		}
	case "held":
		from = string(StatusAwaitingApproval)
	case "cooling":
		if _, err := s.Approve(ctx, j.ID, "bob", "checked", time.Hour); err != nil {
			t.Fatal(err)
		}
		from = string(StatusApproved)
	default:
		t.Fatalf("unknown state %q", from)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := Status(from)
	if from == "paused" {
		want = StatusRunning
	}
	if got.Status != want {
		t.Fatalf("setup %s: status %s", from, got.Status)
	}
	return got
}

// TestStateTransitions walks the state table of docs/ACCOUNTING.md: every
// command or event from every status it can meet.
func TestStateTransitions(t *testing.T) {
	g := Target{GroupID: "g"}
	actions := map[string]func(t *testing.T, s *Store, id string) error{
		"requeue": func(t *testing.T, s *Store, id string) error {
			_, err := s.Requeue(t.Context(), id, g, []string{"3"})
			return err
		},
		"cancel": func(t *testing.T, s *Store, id string) error {
			_, err := s.Cancel(t.Context(), id, "t", "")
			return err
		},
		"fail": func(t *testing.T, s *Store, id string) error {
			_, err := s.Fail(t.Context(), id, errors.New("planning broke"))
			return err
		},
		"pause":  func(t *testing.T, s *Store, id string) error { return s.SetPaused(t.Context(), id, "t", "", true) },
		"resume": func(t *testing.T, s *Store, id string) error { return s.SetPaused(t.Context(), id, "t", "", false) },
		"trip": func(t *testing.T, s *Store, id string) error {
			_, err := s.Trip(t.Context(), id, "paused: IM rejected the admin credential (70001)")
			return err
		},
		"close-planning": func(t *testing.T, s *Store, id string) error {
			_, err := s.ClosePlanner(t.Context(), id, RootPlanner)
			return err
		},
		"fail-planner": func(t *testing.T, s *Store, id string) error {
			_, err := s.FailPlanner(t.Context(), id, RootPlanner, errors.New("history unreadable"))
			return err
		},
		"settle-all": func(t *testing.T, s *Store, id string) error {
			_, err := s.Record(t.Context(), id, g, []Outcome{{Item: "1", Recalled: true}, {Item: "2", Code: "10030"}})
			return err
		},
		"approve": func(t *testing.T, s *Store, id string) error {
			_, err := s.Approve(t.Context(), id, "bob", "checked", 0)
			return err
		},
	}
	// outcomes[action][from] is the status after the action, then "paused"
	// when the job is paused after it, "reason" when a pause reason is
	// recorded, and "refused" when the action is refused (a *StatusError).
	outcomes := map[string]map[string]string{
		"requeue": {"planning": "planning", "running": "running", "done": "running", "failed": "failed",
			"cancelled": "cancelled refused", "paused": "running paused", "held": "awaiting_approval"},
		"cancel": {"planning": "cancelled", "running": "cancelled", "failed": "cancelled", "paused": "cancelled",
			"done": "done", "cancelled": "cancelled", "held": "cancelled", "cooling": "cancelled"},
		"fail": {"planning": "failed", "running": "failed", "done": "done", "cancelled": "cancelled",
			"held": "awaiting_approval"},
		"pause": {"planning": "planning paused", "running": "running paused", "done": "done paused", "cancelled": "cancelled refused",
			"held": "awaiting_approval paused"},
		"resume": {"paused": "running", "cancelled": "cancelled", "held": "awaiting_approval", "cooling": "approved"},
		"trip": {"planning": "planning paused reason", "running": "running paused reason", "failed": "failed paused reason",
			"paused": "running paused", "done": "done", "cancelled": "cancelled", "held": "awaiting_approval paused reason"},
		"close-planning": {"planning": "running", "held": "awaiting_approval"},
		// A held job: only approve and cancel end the hold.
		"approve": {"held": "planning", "cooling": "approved refused", "running": "running refused",
			"done": "done refused", "cancelled": "cancelled refused"},
		"fail-planner": {"planning": "failed"},
		"settle-all":   {"running": "done", "failed": "failed", "planning": "planning"},
	}
	type transition struct {
		from, action string
		want         Status
		paused       bool
		reason       bool
		refused      bool
	}
	var cases []transition
	for _, action := range slices.Sorted(maps.Keys(outcomes)) {
		for _, from := range slices.Sorted(maps.Keys(outcomes[action])) {
			after := strings.Fields(outcomes[action][from])
			for _, w := range after[1:] {
				if w != "paused" && w != "reason" && w != "refused" {
					t.Fatalf("outcomes[%s][%s]: unknown word %q", action, from, w)
				}
			}
			cases = append(cases, transition{from: from, action: action, want: Status(after[0]),
				paused: slices.Contains(after, "paused"), reason: slices.Contains(after, "reason"), refused: slices.Contains(after, "refused")})
		}
	}
	for _, tc := range cases {
		t.Run(tc.from+"/"+tc.action, func(t *testing.T) {
			backends(t, func(t *testing.T, s *Store) {
				j := stateJob(t, s, tc.from)
				err := actions[tc.action](t, s, j.ID)
				var se *StatusError
				if tc.refused != errors.As(err, &se) {
					t.Fatalf("%s from %s: err = %v, refused want %v", tc.action, tc.from, err, tc.refused)
				}
				if !tc.refused && err != nil {
					t.Fatal(err)
				}
				got, err := s.Get(t.Context(), j.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != tc.want || got.Paused != tc.paused || (got.PauseReason != "") != tc.reason {
					t.Fatalf("%s from %s: status %s paused %v reason %q; want %s paused %v reason %v",
						tc.action, tc.from, got.Status, got.Paused, got.PauseReason, tc.want, tc.paused, tc.reason)
				}
				rc, err := s.Recount(t.Context(), j.ID)
				if err != nil {
					t.Fatal(err)
				}
				if err := rc.Matches(got.Counts); err != nil {
					t.Fatal(err)
				}
				if got.Counts.Pending == 0 && got.Status.Terminal() && got.FinishedAt == nil {
					t.Fatalf("%s from %s: settled without finished_at: %+v", tc.action, tc.from, got)
				}
				if tc.action == "requeue" && !tc.refused && got.FinishedAt != nil {
					t.Fatalf("requeue left finished_at: %+v", got)
				}
			})
		})
	}
}

func TestRequeueRefusedOnCancelledKeepsDeadLetter(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		j := stateJob(t, s, "cancelled")
		_, err := s.Requeue(t.Context(), j.ID, Target{GroupID: "g"}, []string{"3"})
		var se *StatusError
		if !errors.As(err, &se) || se.Status != StatusCancelled || se.JobID != j.ID {
			t.Fatalf("Requeue on a cancelled job = %v, want a StatusError naming the job and its status", err)
		}
		got := mustCounts(t, s, j.ID, Counts{Planned: 3, DeadLettered: 1, Pending: 2, DeadByCode: map[string]int64{"10002": 1}})
		if got.Status != StatusCancelled {
			t.Fatalf("status %s", got.Status)
		}
	})
}

func TestRequeueJournal(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := stateJob(t, s, "planning")
		g := Target{GroupID: "g", TopicID: "topic"}
		c := Target{From: "alice", To: "bob"}
		s.PlanGroup(ctx, j.ID, g, []int64{7, 8})
		s.PlanC2C(ctx, j.ID, c, []string{"1_2_3"})
		s.Record(ctx, j.ID, g, []Outcome{{Item: "7", Code: "10002"}, {Item: "8", Code: "10002"}})
		s.Record(ctx, j.ID, c, []Outcome{{Item: "1_2_3", Code: "20004"}})
		if moved, err := s.Requeue(ctx, j.ID, g, []string{"7", "8"}); err != nil || len(moved) != 2 {
			t.Fatalf("Requeue = %v, %v", moved, err)
		}
		if _, err := s.Requeue(ctx, j.ID, c, []string{"1_2_3"}); err != nil {
			t.Fatal(err)
		}
		if err := s.ConfirmRequeued(ctx, j.ID, g, []string{"7"}); err != nil {
			t.Fatal(err)
		}
		got := map[Target][]string{}
		if err := s.RequeueJournal(ctx, j.ID, func(t Target, items []string) error { got[t] = items; return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || len(got[g]) != 1 || got[g][0] != "8" || len(got[c]) != 1 || got[c][0] != "1_2_3" {
			t.Fatalf("journal = %v", got)
		}
	})
}

func TestParkAndCheckpoint(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := stateJob(t, s, "running")
		if ok, err := s.Park(ctx, j.ID, "recall:group", []byte(`{"a":1}`), "purge", "orig"); err != nil || ok {
			t.Fatalf("Park on a running job = %v, %v; want not parked", ok, err)
		}
		s.SetPaused(ctx, j.ID, "t", "", true)
		for range 2 {
			if ok, err := s.Park(ctx, j.ID, "recall:group", []byte(`{"a":1}`), "purge", "orig"); err != nil || !ok {
				t.Fatalf("Park on a paused job = %v, %v", ok, err)
			}
		}
		p, err := s.Parked(ctx, j.ID, 10)
		if err != nil || len(p) != 2 || p[0].TaskID != "orig:p1" || p[1].TaskID != "orig:p2" || string(p[0].Payload) != `{"a":1}` || p[0].Queue != "purge" {
			t.Fatalf("Parked = %+v, %v", p, err)
		}
		if ids, _ := s.ParkedJobs(ctx); len(ids) != 1 || ids[0] != j.ID {
			t.Fatalf("ParkedJobs = %v", ids)
		}
		if err := s.DropParked(ctx, j.ID, p[:1]); err != nil {
			t.Fatal(err)
		}
		// Dropping the same task twice (two unparkers) removes it once.
		if err := s.DropParked(ctx, j.ID, p[:1]); err != nil {
			t.Fatal(err)
		}
		if ids, _ := s.ParkedJobs(ctx); len(ids) != 1 {
			t.Fatalf("ParkedJobs with one left = %v", ids)
		}
		if left, _ := s.Parked(ctx, j.ID, 10); len(left) != 1 || left[0].TaskID != "orig:p2" {
			t.Fatalf("left parked = %+v", left)
		}
		s.DropParked(ctx, j.ID, p[1:])
		if ids, _ := s.ParkedJobs(ctx); len(ids) != 0 {
			t.Fatalf("ParkedJobs with none left = %v", ids)
		}
		// A cancel lifts the pause: nothing parks any more.
		s.Cancel(ctx, j.ID, "t", "")
		if ok, _ := s.Park(ctx, j.ID, "recall:group", nil, "purge", "orig"); ok {
			t.Fatal("parked a task of a cancelled job")
		}

		if cp, err := s.ScanCheckpoint(ctx, j.ID, "scan g"); err != nil || cp != "" {
			t.Fatalf("no checkpoint = %q, %v", cp, err)
		}
		s.SaveScanCheckpoint(ctx, j.ID, "scan g", `{"next":5}`)
		if cp, _ := s.ScanCheckpoint(ctx, j.ID, "scan g"); cp != `{"next":5}` {
			t.Fatalf("checkpoint = %q", cp)
		}
	})
}
