package jobs

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/redistest"
)

// TestStoreOnRedisCluster runs a job's whole life on a real 3-master Redis
// Cluster: every Lua script and the MULTI of Create touch several keys, and
// Redis Cluster refuses (CROSSSLOT) any that are not in one hash slot. The
// job's keys share the hash tag {ID}; the index and the audit stream are
// written by single-key commands.
func TestStoreOnRedisCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	rdb := cl.Client()
	s := NewStore(rdb, "")
	ctx := t.Context()

	// The harness would catch a collision: Redis Cluster refuses a script
	// whose keys are in different slots.
	if err := rdb.Eval(ctx, "return 1", []string{"imrecall:a", "imrecall:b"}).Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("a script on two untagged keys: %v, want a CROSSSLOT error", err)
	}

	j := newJob(t, s)
	g := Target{GroupID: "@TGS#cluster", TopicID: "@TGS#cluster@TOPIC#t"}
	c := Target{From: "alice", To: "bob"}

	// Every key of the job, named as the store names them, is in one slot.
	keys := []string{s.jobKey(j.ID), s.plannersKey(j.ID), s.leasesKey(j.ID), s.journalKey(j.ID), s.targetsKey(j.ID), s.deadKey(j.ID), s.stateKey(j.ID, g), s.stateKey(j.ID, c), s.coverageKey(j.ID), s.parkedKey(j.ID), s.callKey(j.ID, callToken())}
	want, err := rdb.ClusterKeySlot(ctx, keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[1:] {
		got, err := rdb.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("key %q hashes to slot %d, the job hash %q to %d: multi-key scripts will fail with CROSSSLOT", k, got, keys[0], want)
		}
	}

	// openPlannerScript, planScript (twice: duplicates dropped).
	if err := s.OpenPlanner(ctx, j.ID, "discover:1"); err != nil {
		t.Fatalf("OpenPlanner: %v", err)
	}
	fresh, err := s.PlanGroup(ctx, j.ID, g, []int64{1, 2, 3, 4, 5, 3})
	if err != nil {
		t.Fatalf("PlanGroup: %v", err)
	}
	if !slices.Equal(fresh, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("PlanGroup fresh = %v, want [1 2 3 4 5]", fresh)
	}
	if again, err := s.PlanGroup(ctx, j.ID, g, []int64{5, 6}); err != nil || !slices.Equal(again, []int64{6}) {
		t.Fatalf("PlanGroup again = %v, %v; want [6]", again, err)
	}
	if fc, err := s.PlanC2C(ctx, j.ID, c, []string{"k1", "k2"}); err != nil || len(fc) != 2 {
		t.Fatalf("PlanC2C = %v, %v", fc, err)
	}
	// closePlannerScript: the job runs once both units are closed.
	if st, err := s.ClosePlanner(ctx, j.ID, RootPlanner); err != nil || st != StatusPlanning {
		t.Fatalf("ClosePlanner root = %v, %v; want planning", st, err)
	}
	if st, err := s.ClosePlanner(ctx, j.ID, "discover:1"); err != nil || st != StatusRunning {
		t.Fatalf("ClosePlanner discover:1 = %v, %v; want running", st, err)
	}
	mustCounts(t, s, j.ID, Counts{Planned: 8, Pending: 8})

	// beginScript, answeredScript.
	b, err := s.BeginGroup(ctx, j.ID, g, []int64{1, 2, 3, 4, 5, 6})
	if err != nil {
		t.Fatalf("BeginGroup: %v", err)
	}
	if b.Status != StatusRunning || !slices.Equal(b.States, []ItemState{0, 0, 0, 0, 0, 0}) {
		t.Fatalf("BeginGroup = %+v", b)
	}
	if err := s.MarkAnswered(ctx, j.ID, g, []Answer{{Item: "6", Send: 1}}); err != nil {
		t.Fatalf("MarkAnswered: %v", err)
	}
	if b, err := s.BeginC2C(ctx, j.ID, c, "k1"); err != nil || !slices.Equal(b.States, []ItemState{0}) {
		t.Fatalf("BeginC2C = %+v, %v", b, err)
	}
	if b, err := s.BeginGroup(ctx, j.ID, g, []int64{6}); err != nil || !slices.Equal(b.States, []ItemState{1}) || !b.Answered[0] {
		t.Fatalf("BeginGroup after MarkAnswered = %+v, %v; want one answered send", b, err)
	}

	// recordScript: recalled, dead letters (written with their records).
	n, err := s.Record(ctx, j.ID, g, []Outcome{
		{Item: "1", Recalled: true}, {Item: "2", Recalled: true}, {Item: "3", Recalled: true},
		{Item: "4", Code: "10030", Attempts: 1},
		{Item: "5", Code: "10002", ErrorInfo: "busy", Attempts: 5},
	})
	if err != nil || n != 5 {
		t.Fatalf("Record group = %d, %v; want 5", n, err)
	}
	if n, err := s.Record(ctx, j.ID, c, []Outcome{{Item: "k1", Code: "91000", Attempts: 5}}); err != nil || n != 1 {
		t.Fatalf("Record c2c = %d, %v; want 1", n, err)
	}
	mustCounts(t, s, j.ID, Counts{Planned: 8, Recalled: 3, DeadLettered: 3, Pending: 2,
		DeadByCode: map[string]int64{"10030": 1, "10002": 1, "91000": 1}})

	// requeueScript, then the re-queued messages and the rest end; the job
	// settles to done inside recordScript.
	moved, err := s.Requeue(ctx, j.ID, g, []string{"5"})
	if err != nil || !slices.Equal(moved, []string{"5"}) {
		t.Fatalf("Requeue = %v, %v; want [5]", moved, err)
	}
	if _, err := s.NextGeneration(ctx, j.ID); err != nil {
		t.Fatalf("NextGeneration: %v", err)
	}
	if _, err := s.Record(ctx, j.ID, g, []Outcome{{Item: "5", Recalled: true}, {Item: "6", Recalled: true}}); err != nil {
		t.Fatalf("Record after requeue: %v", err)
	}
	if _, err := s.Record(ctx, j.ID, c, []Outcome{{Item: "k2", Recalled: true}}); err != nil {
		t.Fatalf("Record k2: %v", err)
	}
	done := mustCounts(t, s, j.ID, Counts{Planned: 8, Recalled: 6, DeadLettered: 2,
		DeadByCode: map[string]int64{"10030": 1, "91000": 1}})
	if done.Status != StatusDone || done.FinishedAt == nil {
		t.Fatalf("job after the last outcome = %s (finished %v), want done", done.Status, done.FinishedAt)
	}

	// Reads across the cluster: report (recount), dead letters, list, audit.
	rep, err := s.BuildReport(ctx, j.ID)
	if err != nil || !rep.Reconciled {
		t.Fatalf("BuildReport = %+v, %v; want reconciled", rep, err)
	}
	var dead []string
	if err := s.DeadLetters(ctx, j.ID, func(d DeadLetter) error { dead = append(dead, d.Code+" "+d.Item()); return nil }); err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	slices.Sort(dead)
	if !slices.Equal(dead, []string{"10030 4", "91000 k1"}) {
		t.Fatalf("dead letters = %q", dead)
	}

	// setStatusScript (cancel, fail), SetPaused, Trip, InterruptPlanner and
	// Park on two more jobs, which are likely to hash to other nodes; the
	// pause, interrupt and park scripts keep their call's answer under a key
	// of the job's slot.
	j2, j3 := newJob(t, s), newJob(t, s)
	if err := s.SetPaused(ctx, j2.ID, "bob", "", true); err != nil {
		t.Fatalf("SetPaused: %v", err)
	}
	if paused, err := s.Trip(ctx, j3.ID, "wrong SecretKey"); err != nil || !paused {
		t.Fatalf("Trip = %v, %v; want paused", paused, err)
	}
	if err := s.SetPaused(ctx, j3.ID, "bob", "fixed", false); err != nil {
		t.Fatalf("SetPaused (resume): %v", err)
	}
	// interruptScript (its call's answer kept too): j3's planning ends failed.
	if st, err := s.InterruptPlanner(ctx, j3.ID, RootPlanner, "lease lapsed"); err != nil || st != StatusFailed {
		t.Fatalf("InterruptPlanner = %q, %v; want failed", st, err)
	}
	// parkScript (its call's answer under a key of the job's slot).
	if parked, err := s.Park(ctx, j2.ID, "recall:group", []byte(`{}`), "purge", "t1"); err != nil || !parked {
		t.Fatalf("Park = %v, %v; want parked", parked, err)
	}
	if st, err := s.Cancel(ctx, j2.ID, "bob", "wrong user"); err != nil || st != StatusCancelled {
		t.Fatalf("Cancel = %v, %v", st, err)
	}
	if _, err := s.PlanGroup(ctx, j2.ID, g, []int64{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("PlanGroup on a cancelled job: %v, want ErrClosed", err)
	}
	if st, err := s.Fail(ctx, j3.ID, errors.New("discovery failed")); err != nil || st != StatusFailed {
		t.Fatalf("Fail = %v, %v", st, err)
	}
	list, err := s.List(ctx, 10)
	if err != nil || len(list) != 3 {
		t.Fatalf("List = %d jobs, %v; want 3", len(list), err)
	}
	events, err := s.AuditLog(ctx, 10)
	if err != nil {
		t.Fatalf("AuditLog: %v", err)
	}
	var actions []string
	for _, e := range events {
		actions = append(actions, e.Action)
	}
	if got := strings.Join(actions, ","); !strings.Contains(got, "cancel") || !strings.Contains(got, "pause") || strings.Count(got, "create") != 3 {
		t.Fatalf("audit actions = %s", got)
	}
}

// TestApprovalOnRedisCluster: a held job's approval with a cool-off and
// its start (scripts on the job's keys, the cool-off index by single-key
// commands) work on a Redis Cluster.
func TestApprovalOnRedisCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	s := NewStore(cl.Client(), "")
	ctx := t.Context()
	j := newHeldJob(t, s)
	if _, err := s.Approve(ctx, j.ID, "token:alice", "", 0); !errors.As(err, new(*SelfApprovalError)) {
		t.Fatalf("self-approval on a cluster = %v", err)
	}
	if _, err := s.Approve(ctx, j.ID, "token:bob", "", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitStarted(t, s, j.ID)
	if got, _ := s.Get(ctx, j.ID); got.Status != StatusPlanning || got.ApprovedBy != "token:bob" {
		t.Fatalf("after the cool-off on a cluster = %+v", got)
	}
}
