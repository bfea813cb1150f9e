package jobs

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/imrecall/imrecall/internal/redistest"
)

// backends runs fn against miniredis and against a real redis-server.
func backends(t *testing.T, fn func(t *testing.T, s *Store)) {
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		_, rdb := redistest.Mini(t)
		fn(t, NewStore(rdb, ""))
	})
	t.Run("redis-server", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t)
		fn(t, NewStore(srv.Client(), ""))
	})
}

func newJob(t *testing.T, s *Store) Job {
	t.Helper()
	j, err := s.Create(t.Context(), Spec{Kind: "recall:list", Queue: "purge", AppID: 1400000001, RequestedBy: "alice", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func mustCounts(t *testing.T, s *Store, id string, want Counts) Job {
	t.Helper()
	j, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	got := j.Counts
	if got.Planned != want.Planned || got.Recalled != want.Recalled || got.DeadLettered != want.DeadLettered || got.Pending != want.Pending {
		t.Fatalf("counts = %+v, want %+v", got, want)
	}
	for code, n := range want.DeadByCode {
		if got.DeadByCode[code] != n {
			t.Fatalf("dead_lettered_by_code[%s] = %d, want %d (all: %v)", code, got.DeadByCode[code], n, got.DeadByCode)
		}
	}
	rc, err := s.Recount(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Matches(got); err != nil {
		t.Fatal(err)
	}
	return j
}

func TestLifecycle(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newJob(t, s)
		if j.Status != StatusPlanning || j.RequestedBy != "alice" {
			t.Fatalf("new job = %+v", j)
		}
		g := Target{GroupID: "@TGS#1"}
		c := Target{From: "alice", To: "bob"}

		fresh, err := s.PlanGroup(ctx, j.ID, g, []int64{1, 2, 3, 2, 1})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(fresh) != "[1 2 3]" {
			t.Fatalf("PlanGroup fresh = %v, want [1 2 3] (duplicates removed)", fresh)
		}
		fresh, _ = s.PlanGroup(ctx, j.ID, g, []int64{3, 4})
		if fmt.Sprint(fresh) != "[4]" {
			t.Fatalf("second PlanGroup fresh = %v, want [4]", fresh)
		}
		if keys, _ := s.PlanC2C(ctx, j.ID, c, []string{"1_2_3"}); len(keys) != 1 {
			t.Fatalf("PlanC2C = %v", keys)
		}
		mustCounts(t, s, j.ID, Counts{Planned: 5, Pending: 5})

		b, err := s.BeginGroup(ctx, j.ID, g, []int64{1, 2, 3, 4, 99})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(b.States) != "[0 0 0 0 -3]" || b.Status != StatusPlanning {
			t.Fatalf("Begin = %+v", b)
		}
		b, _ = s.BeginGroup(ctx, j.ID, g, []int64{4})
		if b.States[0] != 1 {
			t.Fatalf("second Begin of seq 4 = %v, want 1 earlier send", b.States)
		}
		n, err := s.Record(ctx, j.ID, g, []Outcome{
			{Item: "1", Recalled: true}, {Item: "2", Recalled: true},
			{Item: "3", Code: "10030", ErrorInfo: "not found", Attempts: 1},
		})
		if err != nil || n != 3 {
			t.Fatalf("Record = %d, %v", n, err)
		}
		// A redelivered task reports the same messages again: nothing changes.
		n, _ = s.Record(ctx, j.ID, g, []Outcome{{Item: "1", Code: "10030"}, {Item: "3", Recalled: true}})
		if n != 0 {
			t.Fatalf("re-recording terminal messages changed %d", n)
		}
		mustCounts(t, s, j.ID, Counts{Planned: 5, Recalled: 2, DeadLettered: 1, Pending: 2, DeadByCode: map[string]int64{"10030": 1}})

		if st, err := s.ClosePlanner(ctx, j.ID, RootPlanner); err != nil || st != StatusRunning {
			t.Fatalf("ClosePlanner = %s, %v; want running", st, err)
		}
		if _, err := s.PlanGroup(ctx, j.ID, g, []int64{50}); !errors.Is(err, ErrClosed) {
			t.Fatalf("planning after close: err = %v, want ErrClosed", err)
		}
		b, _ = s.BeginGroup(ctx, j.ID, g, []int64{1, 3})
		if fmt.Sprint(b.States) != "[-1 -2]" {
			t.Fatalf("Begin of terminal seqs = %v", b.States)
		}
		// Two counts sent something (the first call, seq 4 again); a peek
		// and a count of terminal messages send nothing.
		if _, err := s.PeekGroup(ctx, j.ID, g, []int64{4}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get(ctx, j.ID); got.Calls != 2 {
			t.Fatalf("job calls = %d, want 2", got.Calls)
		}
		s.Record(ctx, j.ID, g, []Outcome{{Item: "4", Code: "10002", Attempts: 5}})
		s.Record(ctx, j.ID, c, []Outcome{{Item: "1_2_3", Code: "20023"}})
		done := mustCounts(t, s, j.ID, Counts{Planned: 5, Recalled: 2, DeadLettered: 3, DeadByCode: map[string]int64{"10030": 1, "10002": 1, "20023": 1}})
		if done.Status != StatusDone || done.FinishedAt == nil || done.StartedAt == nil {
			t.Fatalf("finished job = %+v", done)
		}

		var dls []DeadLetter
		if err := s.DeadLetters(ctx, j.ID, func(d DeadLetter) error { dls = append(dls, d); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(dls) != 3 {
			t.Fatalf("dead letters = %+v", dls)
		}
		for _, d := range dls {
			if d.Code == "10002" && (d.MsgSeq != 4 || d.Attempts != 5 || d.Category != NeedsAttention) {
				t.Errorf("dead letter = %+v", d)
			}
			if d.Code == "20023" && (d.MsgKey != "1_2_3" || d.Category != AlreadyRecalled || d.From != "alice") {
				t.Errorf("dead letter = %+v", d)
			}
		}

		// Re-queue the 10002 dead letter: the job reopens and counts move back.
		moved, err := s.Requeue(ctx, j.ID, g, []string{"4", "1"})
		if err != nil || fmt.Sprint(moved) != "[4]" {
			t.Fatalf("Requeue = %v, %v", moved, err)
		}
		re := mustCounts(t, s, j.ID, Counts{Planned: 5, Recalled: 2, DeadLettered: 2, Pending: 1, DeadByCode: map[string]int64{"10030": 1, "20023": 1}})
		if re.Status != StatusRunning || re.FinishedAt != nil {
			t.Fatalf("re-queued job = %+v", re)
		}
		s.Record(ctx, j.ID, g, []Outcome{{Item: "4", Recalled: true}})
		final := mustCounts(t, s, j.ID, Counts{Planned: 5, Recalled: 3, DeadLettered: 2})
		if final.Status != StatusDone {
			t.Fatalf("status = %s, want done", final.Status)
		}

		rep, err := s.BuildReport(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Reconciled || rep.AlreadyRecalled != 1 || rep.NotFound != 1 || rep.NeedsAttention != 0 {
			t.Fatalf("report = %+v", rep)
		}
		var buf bytes.Buffer
		rep.WriteText(&buf, func(string) string { return "" })
		if !strings.Contains(buf.String(), "reconciled") || !strings.Contains(buf.String(), "requested by alice") {
			t.Fatalf("report text:\n%s", buf.String())
		}
		events, err := s.AuditLog(ctx, 10)
		if err != nil || len(events) == 0 || events[0].Action != "create" || events[0].Actor != "alice" {
			t.Fatalf("audit log = %+v, %v", events, err)
		}
	})
}

func TestCancelAndPause(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newJob(t, s)
		g := Target{GroupID: "g", TopicID: "topic"}
		s.PlanGroup(ctx, j.ID, g, []int64{1, 2, 3})
		s.ClosePlanner(ctx, j.ID, RootPlanner)

		if err := s.SetPaused(ctx, j.ID, "bob", "", true); err != nil {
			t.Fatal(err)
		}
		b, _ := s.BeginGroup(ctx, j.ID, g, []int64{1})
		if !b.Paused || b.States[0] != 0 {
			t.Fatalf("Begin on a paused job = %+v", b)
		}
		b, _ = s.BeginGroup(ctx, j.ID, g, []int64{1})
		if b.States[0] != 0 {
			t.Fatalf("a paused job counted a send: %+v", b)
		}
		s.SetPaused(ctx, j.ID, "bob", "", false)
		s.Record(ctx, j.ID, g, []Outcome{{Item: "1", Recalled: true}})

		if st, err := s.Cancel(ctx, j.ID, "bob", "wrong group"); err != nil || st != StatusCancelled {
			t.Fatalf("Cancel = %s, %v", st, err)
		}
		b, _ = s.BeginGroup(ctx, j.ID, g, []int64{2, 3})
		if b.Status != StatusCancelled {
			t.Fatalf("Begin after cancel = %+v", b)
		}
		s.Record(ctx, j.ID, g, []Outcome{{Item: "2", Code: CodeCancelled}, {Item: "3", Code: CodeCancelled}})
		got := mustCounts(t, s, j.ID, Counts{Planned: 3, Recalled: 1, DeadLettered: 2, DeadByCode: map[string]int64{CodeCancelled: 2}})
		if got.Status != StatusCancelled || !got.Finished() {
			t.Fatalf("cancelled job = %+v", got)
		}
		// Cancelling again is harmless and keeps the status.
		if st, _ := s.Cancel(ctx, j.ID, "bob", ""); st != StatusCancelled {
			t.Fatalf("second cancel = %s", st)
		}
	})
}

func TestPlannersAndEmptyJob(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newJob(t, s)
		if err := s.OpenPlanner(ctx, j.ID, "discover:g1"); err != nil {
			t.Fatal(err)
		}
		if st, _ := s.ClosePlanner(ctx, j.ID, RootPlanner); st != StatusPlanning {
			t.Fatalf("status with a planner open = %s, want planning", st)
		}
		if st, _ := s.ClosePlanner(ctx, j.ID, "discover:g1"); st != StatusDone {
			t.Fatalf("an empty job whose planning ended = %s, want done", st)
		}
		if _, err := s.Get(ctx, "nosuchjob"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
		}
		if _, err := s.Get(ctx, "bad{id}"); err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(malformed) = %v, want a validation error", err)
		}
		if _, err := s.Create(ctx, Spec{Kind: "k", Queue: "purge", AppID: 1}); err == nil || !strings.Contains(err.Error(), "requested_by") {
			t.Fatalf("Create without requested_by: %v", err)
		}
	})
}

// TestConcurrentRedelivery records the same outcomes from many goroutines, as
// redelivered tasks would: every message is counted exactly once.
func TestConcurrentRedelivery(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newJob(t, s)
		const groups, per = 20, 50
		for g := 0; g < groups; g++ {
			seqs := make([]int64, per)
			for i := range seqs {
				seqs[i] = int64(i + 1)
			}
			if _, err := s.PlanGroup(ctx, j.ID, Target{GroupID: "g" + strconv.Itoa(g)}, seqs); err != nil {
				t.Fatal(err)
			}
		}
		s.ClosePlanner(ctx, j.ID, RootPlanner)
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for g := 0; g < groups; g++ {
					var out []Outcome
					for i := 1; i <= per; i++ {
						o := Outcome{Item: strconv.Itoa(i), Recalled: (i+w)%3 != 0, Code: "10030"}
						out = append(out, o)
					}
					if _, err := s.Record(ctx, j.ID, Target{GroupID: "g" + strconv.Itoa(g)}, out); err != nil {
						t.Error(err)
					}
				}
			}(w)
		}
		wg.Wait()
		got, _ := s.Get(ctx, j.ID)
		if got.Counts.Planned != groups*per || got.Counts.Recalled+got.Counts.DeadLettered != groups*per || got.Status != StatusDone {
			t.Fatalf("after concurrent redelivery: %+v", got)
		}
		rc, _ := s.Recount(ctx, j.ID)
		if err := rc.Matches(got.Counts); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPeekCountsNoSendAndUnattributedRecalls: PeekGroup reads without
// counting a send; a recall recorded as unattributed counts as recalled and
// as unattributed, is terminal like any recall, and the recount proves both.
func TestPeekCountsNoSendAndUnattributedRecalls(t *testing.T) {
	backends(t, func(t *testing.T, s *Store) {
		ctx := t.Context()
		j := newJob(t, s)
		g := Target{GroupID: "@TGS#u"}
		if _, err := s.PlanGroup(ctx, j.ID, g, []int64{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			b, err := s.PeekGroup(ctx, j.ID, g, []int64{1, 2, 3})
			if err != nil || fmt.Sprint(b.States) != "[0 0 0]" {
				t.Fatalf("PeekGroup = %+v, %v; want no send counted, however often", b, err)
			}
		}
		if _, err := s.BeginGroup(ctx, j.ID, g, []int64{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		if b, _ := s.PeekGroup(ctx, j.ID, g, []int64{1, 2, 3}); fmt.Sprint(b.States) != "[1 1 1]" {
			t.Fatalf("PeekGroup after BeginGroup = %v, want one send each", b.States)
		}
		if _, err := s.Record(ctx, j.ID, g, []Outcome{{Item: "1", Recalled: true}, {Item: "2", Recalled: true, Unattributed: true}}); err != nil {
			t.Fatal(err)
		}
		// Terminal: a later report of 2 changes nothing.
		if n, _ := s.Record(ctx, j.ID, g, []Outcome{{Item: "2", Code: "10030"}}); n != 0 {
			t.Fatalf("recording a settled message again changed %d", n)
		}
		if b, _ := s.PeekGroup(ctx, j.ID, g, []int64{2}); b.States[0] != ItemRecalled {
			t.Fatalf("state of an unattributed recall = %v, want recalled", b.States[0])
		}
		got := mustCounts(t, s, j.ID, Counts{Planned: 3, Recalled: 2, Pending: 1})
		if got.Counts.RecalledUnattributed != 1 {
			t.Fatalf("recalled_unattributed = %d, want 1", got.Counts.RecalledUnattributed)
		}
	})
}
