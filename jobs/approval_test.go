package jobs

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// newHeldJob creates a job held for approval, requested by token:alice.
// startWhenDue calls StartDue until it starts job id, and only it, failing
// the test if it starts another or nothing within timeout.
func startWhenDue(t *testing.T, s *Store, id string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		started, err := s.StartDue(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(started) == 1 && started[0] == id {
			return
		}
		if len(started) > 0 || time.Now().After(deadline) {
			got, _ := s.Get(t.Context(), id)
			t.Fatalf("StartDue = %v; want only %s, once due (it is %s, starting at %v)", started, id, got.Status, got.StartsAt)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newHeldJob(t *testing.T, s *Store) Job {
	t.Helper()
	j, err := s.Create(t.Context(), Spec{Kind: "purge:user", Queue: "purge", AppID: 1400000001,
		RequestedBy: "dpo (token:alice)", Requester: "token:alice", Reason: "erasure", HoldForApproval: true})
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != StatusAwaitingApproval || j.Phase != StatusPlanning || !j.HeldForApproval || j.Requester != "token:alice" {
		t.Fatalf("held job = %+v", j)
	}
	return j
}

// TestHeldJobSendsNothing: while a job awaits approval, Begin counts no
// send and reports it paused, its tasks park, and a resume does not release
// it; planning goes on. Approve releases it.
func TestHeldJobSendsNothing(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newHeldJob(t, s)
		g := Target{GroupID: "g"}
		if fresh, err := s.PlanGroup(ctx, j.ID, g, []int64{1, 2}); err != nil || len(fresh) != 2 {
			t.Fatalf("planning under a hold = %v, %v", fresh, err)
		}
		if err := s.SetPaused(ctx, j.ID, "token:alice", "", false); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			b, err := s.BeginGroup(ctx, j.ID, g, []int64{1, 2})
			if err != nil {
				t.Fatal(err)
			}
			if !b.Paused || b.States[0] != 0 || b.States[1] != 0 {
				t.Fatalf("Begin on a held job = %+v; want paused and no send counted", b)
			}
		}
		if st, paused, err := s.Status(ctx, j.ID); err != nil || st != StatusPlanning || paused {
			t.Fatalf("Status = %s %v %v; want planning, not paused (discovery goes on)", st, paused, err)
		}
		if held, err := s.Held(ctx, j.ID); err != nil || !held {
			t.Fatalf("Held = %v, %v", held, err)
		}
		if ok, err := s.Park(ctx, j.ID, "recall:group", []byte(`{}`), "purge", "t1"); err != nil || !ok {
			t.Fatalf("Park on a held job = %v, %v", ok, err)
		}
		got, err := s.Approve(ctx, j.ID, "token:bob", "checked the scope", 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != StatusPlanning || got.Phase != "" || got.ApprovedBy != "token:bob" || got.ApprovalReason != "checked the scope" ||
			got.ApprovedAt == nil || got.StartsAt != nil || !got.HeldForApproval {
			t.Fatalf("approved job = %+v", got)
		}
		if held, _ := s.Held(ctx, j.ID); held {
			t.Fatal("still held after approval")
		}
		b, err := s.BeginGroup(ctx, j.ID, g, []int64{1})
		if err != nil || b.Paused || b.States[0] != 0 {
			t.Fatalf("Begin after approval = %+v, %v", b, err)
		}
		if b, _ = s.PeekGroup(ctx, j.ID, g, []int64{1}); b.States[0] != 1 {
			t.Fatalf("send not counted after approval: %+v", b)
		}
		events, err := s.AuditLog(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		var approved bool
		for _, e := range events {
			approved = approved || (e.Action == "approve" && e.JobID == j.ID && e.Actor == "token:bob" && e.Detail == "checked the scope")
		}
		if !approved {
			t.Fatalf("no approve event in %+v", events)
		}
	})
}

func TestApproveRefusals(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newHeldJob(t, s)
		_, err := s.Approve(ctx, j.ID, "token:alice", "", 0)
		var self *SelfApprovalError
		if !errors.As(err, &self) || self.Requester != "token:alice" || self.JobID != j.ID {
			t.Fatalf("self-approval = %v, want a SelfApprovalError", err)
		}
		// The requester of a job of an earlier version is RequestedBy.
		old := newJob(t, s)
		if _, err := s.Approve(ctx, old.ID, "bob", "", 0); !errors.As(err, new(*StatusError)) {
			t.Fatalf("approving a job never held = %v, want a StatusError", err)
		}
		if _, err := s.Approve(ctx, j.ID, "", "", 0); err == nil {
			t.Fatal("approved with no approver")
		}
		if _, err := s.Approve(ctx, j.ID, "token:bob", "", -time.Second); err == nil {
			t.Fatal("approved with a negative delay")
		}
		if _, err := s.Approve(ctx, "20260101T000000Z-00000000", "token:bob", "", 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("approving a missing job = %v", err)
		}
		if got, _ := s.Get(ctx, j.ID); got.Status != StatusAwaitingApproval || got.ApprovedBy != "" {
			t.Fatalf("refused approvals changed the job: %+v", got)
		}
		// The script refuses on its own (as for two approvals at once).
		_, err = s.runScript(ctx, approveScript, j.ID, "approving", []string{s.jobKey(j.ID)}, "token:alice", "", "now", "", 0)
		if !errors.As(err, &self) {
			t.Fatalf("approveScript, self = %v", err)
		}
		if _, err := s.Approve(ctx, j.ID, "token:bob", "", 0); err != nil {
			t.Fatal(err)
		}
		_, err = s.runScript(ctx, approveScript, j.ID, "approving", []string{s.jobKey(j.ID)}, "token:carol", "", "now", "", 0)
		var se *StatusError
		if !errors.As(err, &se) || se.Status != StatusPlanning {
			t.Fatalf("approveScript, approved twice = %v", err)
		}
	})
}

// TestCoolOff: an approval with a delay holds the job until StartDue finds
// it due; a cancel in the cool-off ends it and StartDue drops it.
func TestCoolOff(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newHeldJob(t, s)
		got, err := s.Approve(ctx, j.ID, "token:bob", "", 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != StatusApproved || got.StartsAt == nil || got.ApprovedAt == nil || !got.StartsAt.After(*got.ApprovedAt) {
			t.Fatalf("approved with a delay = %+v", got)
		}
		if held, _ := s.Held(ctx, j.ID); !held {
			t.Fatal("not held in its cool-off")
		}
		cancelled := newHeldJob(t, s)
		if _, err := s.Approve(ctx, cancelled.ID, "token:bob", "", 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if st, err := s.Cancel(ctx, cancelled.ID, "token:carol", "changed our mind"); err != nil || st != StatusCancelled {
			t.Fatalf("cancel in the cool-off = %s, %v", st, err)
		}
		startWhenDue(t, s, j.ID, 10*time.Second)
		if got, _ := s.Get(ctx, j.ID); got.Status != StatusPlanning || got.ApprovedBy != "token:bob" {
			t.Fatalf("after the cool-off = %+v", got)
		}
		if got, _ := s.Get(ctx, cancelled.ID); got.Status != StatusCancelled {
			t.Fatalf("cancelled in the cool-off = %+v", got)
		}
		if n, _ := s.rdb.ZCard(ctx, s.coolOffKey()).Result(); n != 0 {
			t.Fatalf("%d jobs left in the cool-off index", n)
		}
	})
}

// TestConcurrentApprovals: two admins approve the same job at once, on 20
// jobs: exactly one approval takes effect, and the audit trail, which records
// an approval before it is made, records each one the job refused after all
// (approve_refused), so the trail's approvals less its refusals are one.
func TestConcurrentApprovals(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		ids := make([]string, 20)
		for i := range ids {
			ids[i] = newHeldJob(t, s).ID
		}
		var wg sync.WaitGroup
		wins := make([]atomic.Int32, len(ids))
		for i, id := range ids {
			for _, who := range []string{"token:bob", "token:carol"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := s.Approve(ctx, id, who, "checked", 0)
					var se *StatusError
					switch {
					case err == nil:
						wins[i].Add(1)
					case !errors.As(err, &se):
						t.Errorf("approval of %s by %s: %v", id, who, err)
					}
				}()
			}
		}
		wg.Wait()
		events, err := s.AuditLog(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		net, refused := map[string]int{}, 0
		for _, e := range events {
			switch e.Action {
			case "approve":
				net[e.JobID]++
			case "approve_refused":
				net[e.JobID]--
				refused++
			}
		}
		t.Logf("%d of 20 second approvals passed the first check and were refused by the script", refused)
		for i, id := range ids {
			j, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if wins[i].Load() != 1 || net[id] != 1 || j.ApprovedBy == "" || j.Held() {
				t.Errorf("job %s: %d approvals took effect, trail nets %d, approved by %q, status %s; want 1, 1, someone, not held",
					id, wins[i].Load(), net[id], j.ApprovedBy, j.Status)
			}
		}
	})
}

// coolOffEntries is the cool-off index by job: the start (Unix ms) of each
// entry naming the job.
func coolOffEntries(t *testing.T, s *Store) map[string][]int64 {
	t.Helper()
	zs, err := s.rdb.ZRangeWithScores(t.Context(), s.coolOffKey(), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	byJob := map[string][]int64{}
	for _, z := range zs {
		id, _, _ := strings.Cut(z.Member.(string), " ")
		byJob[id] = append(byJob[id], int64(z.Score))
	}
	return byJob
}

// TestConcurrentApprovalsKeepTheWinnersCoolOff: two admins approve the same
// job at once with different delays (jobs approve --approval-delay), on a
// real redis-server: the cool-off index ends with the winner's start alone,
// or nothing when the winner gave no delay. The refused approval's start
// stayed: the job could start at the loser's time (later than approved),
// or be polled for a cool-off it never had.
func TestConcurrentApprovalsKeepTheWinnersCoolOff(t *testing.T) {
	t.Parallel()
	s := NewStore(redistest.Start(t).Client(), "")
	ctx := t.Context()
	raced := 0 // approvals with a delay refused by the script, after their first check
	for round := 0; raced == 0 && round < 20; round++ {
		ids := make([]string, 20)
		for i := range ids {
			ids[i] = newHeldJob(t, s).ID
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, id := range ids {
			// Even jobs: no delay against an hour; odd: an hour against two.
			delays := map[string]time.Duration{"token:bob": time.Duration(i%2) * time.Hour, "token:carol": time.Duration(i%2+1) * time.Hour}
			for who, d := range delays {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					var se *StatusError
					if _, err := s.Approve(ctx, id, who, "checked", d); err != nil && !errors.As(err, &se) {
						t.Errorf("approval of %s by %s: %v", id, who, err)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		events, err := s.AuditLog(ctx, 10000)
		if err != nil {
			t.Fatal(err)
		}
		inRound := map[string]bool{}
		for _, id := range ids {
			inRound[id] = true
		}
		for _, e := range events {
			if e.Action == "approve_refused" && inRound[e.JobID] {
				raced++
			}
		}
		entries := coolOffEntries(t, s)
		for _, id := range ids {
			j, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			want := []int64(nil)
			if j.StartsAt != nil {
				want = []int64{j.StartsAt.UnixMilli()}
			}
			if fmt.Sprint(entries[id]) != fmt.Sprint(want) {
				t.Errorf("job %s approved by %s (starts at %v): cool-off index %v, want %v (the winner's alone)",
					id, j.ApprovedBy, j.StartsAt, entries[id], want)
			}
		}
	}
	if raced == 0 {
		t.Fatal("no approval was refused by the script after passing the first check in 20 rounds: the race was not reproduced")
	}
}

// TestOlderCoolOffStillStarts: a cool-off indexed by a version before the
// per-approval members (the member is the job's id, the hash names none)
// still ends at its start.
func TestOlderCoolOffStillStarts(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newHeldJob(t, s)
		if _, err := s.Approve(ctx, j.ID, "token:bob", "", time.Millisecond); err != nil {
			t.Fatal(err)
		}
		// As the older version left it.
		if err := s.rdb.Del(ctx, s.coolOffKey()).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.rdb.HDel(ctx, s.jobKey(j.ID), coolOffMember).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.rdb.ZAdd(ctx, s.coolOffKey(), redis.Z{Score: 0, Member: j.ID}).Err(); err != nil {
			t.Fatal(err)
		}
		waitStarted(t, s, j.ID)
		if n, _ := s.rdb.ZCard(ctx, s.coolOffKey()).Result(); n != 0 {
			t.Fatalf("%d entries left in the cool-off index", n)
		}
	})
}

// waitStarted runs StartDue until it starts the job id alone, within 10 s.
func waitStarted(t *testing.T, s *Store, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		started, err := s.StartDue(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(started, []string{id}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("StartDue = %v, want %s", started, id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
