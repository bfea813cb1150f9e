package jobs

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// oldLayout turns a new job into one planned before buckets (no "layout"
// field): what a job created by an earlier release looks like.
func oldLayout(t *testing.T, s *Store, id string) {
	t.Helper()
	if err := s.rdb.HDel(t.Context(), s.jobKey(id), "layout").Err(); err != nil {
		t.Fatal(err)
	}
}

// isBucket reports whether a job's key is a bucket: a target's state key
// (one sep), sep, and a number.
func isBucket(k string) bool {
	return strings.Count(k, sep) == 2 && !strings.HasSuffix(k, sep+"b")
}

// jobKeys lists every key of a job.
func jobKeys(t *testing.T, s *Store, id string) []string {
	t.Helper()
	keys, err := s.rdb.Keys(t.Context(), s.jobKey(id)+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

// TestStatesInEitherLayout runs a job's whole message life in both layouts
// (buckets, and one hash per target as jobs planned before buckets have):
// plan (duplicates dropped), begin, answered, record, requeue, the pending
// walk, the verification walk, the recount and retention, with seqs in
// several buckets (negative, sparse, past 2^53) and items that are not
// seqs.
func TestStatesInEitherLayout(t *testing.T) {
	for _, layout := range []string{"buckets", "one hash"} {
		t.Run(layout, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			s := NewStore(srv.Client(), "")
			ctx := t.Context()
			j := newJob(t, s)
			if layout == "one hash" {
				oldLayout(t, s, j.ID)
			}
			g := Target{GroupID: "@TGS#g", TopicID: "@TGS#g@TOPIC#t"}
			c := Target{From: "alice", To: "bob"}
			seqs := []int64{-129, -1, 0, 1, 127, 128, 255, 256, 1000, 130000, 1 << 53, 1<<53 + 1, 1 << 62}
			fresh, err := s.PlanGroup(ctx, j.ID, g, append(slices.Clone(seqs), 1, 128, -1))
			if err != nil || !slices.Equal(fresh, seqs) {
				t.Fatalf("PlanGroup = %v, %v; want %v", fresh, err, seqs)
			}
			odd := []string{"007", "+5", "x", "-0", "12 "} // not seqs as FormatInt writes them
			if got, err := s.PlanJournaled(ctx, j.ID, g, append(slices.Clone(odd), "7", "5", "0"), "", nil); err != nil || !slices.Equal(got, append(slices.Clone(odd), "7", "5")) {
				t.Fatalf("planning odd items = %v, %v", got, err)
			}
			keys := []string{"1_1_1", "2_2_2", "3_3_3", "4_4_4"}
			if got, err := s.PlanC2C(ctx, j.ID, c, append(slices.Clone(keys), "1_1_1")); err != nil || !slices.Equal(got, keys) {
				t.Fatalf("PlanC2C = %v, %v", got, err)
			}
			if _, err := s.ClosePlanner(ctx, j.ID, RootPlanner); err != nil {
				t.Fatal(err)
			}
			planned := int64(len(seqs) + len(odd) + 2 + len(keys))
			mustCounts(t, s, j.ID, Counts{Planned: planned, Pending: planned})

			// Sends are counted per message, and answered ones marked.
			b, err := s.BeginGroup(ctx, j.ID, g, []int64{-1, 128, 1 << 53, 42})
			if err != nil || !slices.Equal(b.States, []ItemState{0, 0, 0, ItemUnplanned}) {
				t.Fatalf("BeginGroup = %+v, %v", b, err)
			}
			if err := s.MarkAnswered(ctx, j.ID, g, []Answer{{Item: "128", Send: 1}}); err != nil {
				t.Fatal(err)
			}
			b, err = s.PeekGroup(ctx, j.ID, g, []int64{-1, 128, 1 << 53})
			if err != nil || !slices.Equal(b.States, []ItemState{1, 1, 1}) || !slices.Equal(b.Answered, []bool{false, true, false}) {
				t.Fatalf("PeekGroup = %+v, %v", b, err)
			}
			if b, err := s.BeginC2C(ctx, j.ID, c, "2_2_2"); err != nil || b.States[0] != 0 {
				t.Fatalf("BeginC2C = %+v, %v", b, err)
			}

			// Record: every group item recalled but 255 and "x"; every
			// one-to-one message but 3_3_3; the first outcome wins.
			var outs []Outcome
			for _, q := range seqs {
				if q != 255 {
					outs = append(outs, Outcome{Item: strconv.FormatInt(q, 10), Recalled: true})
				}
			}
			outs = append(outs, Outcome{Item: "255", Code: "10010"}, Outcome{Item: "x", Code: "10010"}, Outcome{Item: "1000", Code: "10010"})
			if n, err := s.Record(ctx, j.ID, g, outs); err != nil || n != len(seqs)+1 {
				t.Fatalf("Record group = %d, %v; want %d", n, err, len(seqs)+1)
			}
			if n, err := s.Record(ctx, j.ID, c, []Outcome{{Item: "1_1_1", Recalled: true}, {Item: "2_2_2", Recalled: true, Unattributed: true}, {Item: "3_3_3", Code: "20022"}}); err != nil || n != 3 {
				t.Fatalf("Record c2c = %d, %v", n, err)
			}
			mustCounts(t, s, j.ID, Counts{Planned: planned, Recalled: int64(len(seqs)) - 1 + 2, DeadLettered: 3,
				Pending: int64(len(odd)) + 2 - 1 + 1, DeadByCode: map[string]int64{"10010": 2, "20022": 1}})

			// The pending walk and the verification walk name every item
			// as it was planned.
			pending := map[string]bool{}
			if err := s.Unsettled(ctx, j.ID, func(tt Target, items []string) error {
				for _, it := range items {
					pending[tt.String()+"|"+it] = true
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{c.String() + "|4_4_4": true}
			for _, it := range append(slices.Clone(odd), "7", "5") {
				if it != "x" {
					want[g.String()+"|"+it] = true
				}
			}
			if fmt.Sprint(pending) != fmt.Sprint(want) {
				t.Fatalf("Unsettled = %v\nwant %v", pending, want)
			}
			walked := map[string]Final{}
			for _, tt := range []Target{g, c} {
				if err := s.WalkTarget(ctx, j.ID, tt, func(m Message) error {
					if _, dup := walked[tt.String()+"|"+m.Item]; dup {
						t.Errorf("%s walked twice", m.Item)
					}
					walked[tt.String()+"|"+m.Item] = m.State
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			if int64(len(walked)) != planned {
				t.Fatalf("walked %d messages, planned %d: %v", len(walked), planned, walked)
			}
			for k, st := range map[string]Final{g.String() + "|-129": FinalRecalled, g.String() + "|255": FinalDeadLettered,
				g.String() + "|" + strconv.FormatInt(1<<62, 10): FinalRecalled, g.String() + "|9007199254740993": FinalRecalled,
				g.String() + "|x": FinalDeadLettered, c.String() + "|2_2_2": FinalRecalledUnattributed} {
				if walked[k] != st {
					t.Errorf("%s walked as %q, want %q", k, walked[k], st)
				}
			}

			// Requeue moves dead letters back to planned, once.
			if moved, err := s.Requeue(ctx, j.ID, g, []string{"255", "x", "1"}); err != nil || !slices.Equal(moved, []string{"255", "x"}) {
				t.Fatalf("Requeue = %v, %v", moved, err)
			}
			mustCounts(t, s, j.ID, Counts{Planned: planned, Recalled: int64(len(seqs)) + 1, DeadLettered: 1,
				Pending: int64(len(odd)) + 2 + 1 + 1, DeadByCode: map[string]int64{"20022": 1}})

			// Retention deletes every key of the job, buckets included.
			var all []Outcome
			if err := s.Unsettled(ctx, j.ID, func(tt Target, items []string) error {
				all = all[:0]
				for _, it := range items {
					all = append(all, Outcome{Item: it, Recalled: true})
				}
				_, err := s.Record(ctx, j.ID, tt, all)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if j, err := s.Get(ctx, j.ID); err != nil || !j.Finished() {
				t.Fatalf("job %+v, %v: want finished", j, err)
			}
			before := jobKeys(t, s, j.ID)
			buckets := 0
			for _, k := range before {
				if isBucket(k) {
					buckets++
				}
			}
			if layout == "buckets" && buckets < 8 || layout == "one hash" && buckets != 0 {
				t.Fatalf("%d bucket keys in %q", buckets, before)
			}
			s.now = func() time.Time { return time.Now().Add(48 * time.Hour) }
			if _, err := s.Sweep(ctx, time.Hour); err != nil {
				t.Fatal(err)
			}
			if left := jobKeys(t, s, j.ID); len(left) != 0 {
				t.Fatalf("after retention, keys %q remain (of %d)", left, len(before))
			}
		})
	}
}

// TestFullBucketStaysListpack checks that a bucket of exactly 128 messages,
// and a one-to-one target of 1,000 messages, keep their buckets listpacks
// on the server's own configuration.
func TestFullBucketStaysListpack(t *testing.T) {
	srv := redistest.Start(t)
	s := NewStore(srv.Client(), "")
	ctx := t.Context()
	cfg, err := s.rdb.ConfigGet(ctx, "hash-max-listpack-*").Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server: %v", cfg)
	if n, _ := strconv.Atoi(cfg["hash-max-listpack-entries"]); n < 1<<groupBucketBits {
		t.Skipf("hash-max-listpack-entries %d: buckets of 128 are hashtables on this server", n)
	}
	j := newJob(t, s)
	g := Target{GroupID: "g"}
	seqs := make([]int64, 128)
	for i := range seqs {
		seqs[i] = 128*7 + int64(i)
	}
	if _, err := s.PlanGroup(ctx, j.ID, g, seqs); err != nil {
		t.Fatal(err)
	}
	c := Target{From: "a", To: "b"}
	var keys []string
	for i := range 1000 {
		keys = append(keys, fmt.Sprintf("%d_%d_%d", 100000000+i*7919, i+1, 1700000000+i))
	}
	if _, err := s.PlanC2C(ctx, j.ID, c, keys); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		for _, k := range jobKeys(t, s, j.ID) {
			if !isBucket(k) {
				continue
			}
			enc, err := s.rdb.ObjectEncoding(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if enc != "listpack" {
				n, _ := s.rdb.HLen(ctx, k).Result()
				t.Errorf("%s: bucket %q (%d fields) is %s, want listpack", what, k, n, enc)
			}
		}
	}
	check("planned")
	if n, _ := s.rdb.HLen(ctx, s.bucketKey(j.ID, g, 7)).Result(); n != 128 {
		t.Fatalf("bucket 7 holds %d seqs, want 128", n)
	}
	var outs []Outcome
	for _, q := range seqs {
		outs = append(outs, Outcome{Item: strconv.FormatInt(q, 10), Code: "10010", ErrorInfo: "a long explanation of why"})
	}
	if _, err := s.Record(ctx, j.ID, g, outs); err != nil {
		t.Fatal(err)
	}
	check("dead-lettered")
}

// TestBucketKeysShareTheJobSlot plans and records messages across many
// buckets on a Redis Cluster: every bucket key a script is given must be in
// the job's slot.
func TestBucketKeysShareTheJobSlot(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	s := NewStore(cl.Client(), "")
	ctx := t.Context()
	j := newJob(t, s)
	g := Target{GroupID: "@TGS#cluster"}
	var seqs []int64
	for q := int64(1); q < 5000; q += 37 {
		seqs = append(seqs, q)
	}
	if got, err := s.PlanGroup(ctx, j.ID, g, seqs); err != nil || len(got) != len(seqs) {
		t.Fatalf("PlanGroup = %d, %v", len(got), err)
	}
	c := Target{From: "a", To: "b"}
	if _, err := s.PlanC2C(ctx, j.ID, c, []string{"1_1_1", "2_2_2", "3_3_3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginGroup(ctx, j.ID, g, seqs); err != nil {
		t.Fatal(err)
	}
	var outs []Outcome
	for _, q := range seqs {
		outs = append(outs, Outcome{Item: strconv.FormatInt(q, 10), Recalled: true})
	}
	if n, err := s.Record(ctx, j.ID, g, outs); err != nil || n != len(seqs) {
		t.Fatalf("Record = %d, %v", n, err)
	}
	if _, err := s.ClosePlanner(ctx, j.ID, RootPlanner); err != nil {
		t.Fatal(err)
	}
	mustCounts(t, s, j.ID, Counts{Planned: int64(len(seqs)) + 3, Recalled: int64(len(seqs)), Pending: 3})
}

// TestJobRecordSize measures Redis memory per planned message (used_memory
// before and after) at the peak (every message planned, none recorded) and
// at rest (every message recalled), for each layout, group seqs dense and
// sparse, and one-to-one MsgKeys (4 pairs, and pairs of 1,000). It runs only when IMRECALL_RECORD_SIZE
// lists the message counts, e.g. IMRECALL_RECORD_SIZE=100000,1000000
// (docs/BENCHMARKS.md "Job record size").
func TestJobRecordSize(t *testing.T) {
	env := os.Getenv("IMRECALL_RECORD_SIZE")
	if env == "" {
		t.Skip("set IMRECALL_RECORD_SIZE=100000,1000000 to measure")
	}
	srv := redistest.Start(t)
	// No read timeout: a script retried after a timeout (a loaded machine)
	// would plan nothing new the second time.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	s := NewStore(rdb, "")
	ctx := t.Context()
	cfg, _ := rdb.ConfigGet(ctx, "hash-max-listpack-*").Result()
	t.Logf("redis-server %s, %v", srv.Addr(), cfg)
	// Load every script before the first reading.
	warm := newJob(t, s)
	if _, err := s.PlanGroup(ctx, warm.ID, Target{GroupID: "w"}, []int64{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, warm.ID, Target{GroupID: "w"}, []Outcome{{Item: "1", Recalled: true}}); err != nil {
		t.Fatal(err)
	}
	const targets = 4
	for _, f := range strings.Split(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < targets {
			t.Fatalf("IMRECALL_RECORD_SIZE: %q is not a message count", f)
		}
		for _, kind := range []string{"dense", "sparse 1/10", "one-to-one", "one-to-one, 1,000 a pair"} {
			nt := targets
			if kind == "one-to-one, 1,000 a pair" {
				nt = max(1, n/1000)
			}
			for _, layout := range []string{"one hash (before)", "buckets"} {
				peak, rest := measureJob(t, s, n, nt, kind, layout == "buckets")
				t.Logf("| %d | %d | %s | %s | %.1f | %.1f |", n, nt, kind, layout, peak, rest)
			}
		}
	}
}

// measureJob plans n messages over targets targets, then records them all
// recalled, and returns the bytes per message at each point. The job is
// deleted afterwards.
func measureJob(t *testing.T, s *Store, n, targets int, kind string, buckets bool) (peak, rest float64) {
	t.Helper()
	ctx := t.Context()
	base := usedMemory(t, s.rdb)
	j := newJob(t, s)
	if !buckets {
		oldLayout(t, s, j.ID)
	}
	per := n / targets
	batch := func(ti, from int) (Target, []string) {
		var items []string
		for i := from; i < min(from+1000, per); i++ {
			switch kind {
			case "dense":
				items = append(items, strconv.Itoa(1+i))
			case "sparse 1/10":
				items = append(items, strconv.Itoa(1+10*i))
			default: // one-to-one
				items = append(items, fmt.Sprintf("%d_%d_%d", 100000000+(i*7919)%900000000, 1+i, 1700000000+i))
			}
		}
		if strings.HasPrefix(kind, "one-to-one") {
			return Target{From: "user" + strconv.Itoa(ti), To: "peer"}, items
		}
		return Target{GroupID: "@TGS#group" + strconv.Itoa(ti)}, items
	}
	for ti := range targets {
		for from := 0; from < per; from += 1000 {
			tt, items := batch(ti, from)
			if got, err := s.PlanJournaled(ctx, j.ID, tt, items, "", nil); err != nil || len(got) != len(items) {
				t.Fatalf("planning: %d new, %v", len(got), err)
			}
		}
	}
	planned := float64(per * targets)
	peak = float64(usedMemory(t, s.rdb)-base) / planned
	for ti := range targets {
		for from := 0; from < per; from += 1000 {
			tt, items := batch(ti, from)
			outs := make([]Outcome, len(items))
			for i, it := range items {
				outs[i] = Outcome{Item: it, Recalled: true}
			}
			if _, err := s.Record(ctx, j.ID, tt, outs); err != nil {
				t.Fatal(err)
			}
		}
	}
	rest = float64(usedMemory(t, s.rdb)-base) / planned
	if _, err := s.deleteJobKeys(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.ZRem(ctx, s.indexKey(), j.ID).Err(); err != nil {
		t.Fatal(err)
	}
	return peak, rest
}

// usedMemory returns the server's used_memory once the objects of an
// earlier UNLINK are freed (lazyfree_pending_objects 0).
func usedMemory(t *testing.T, rdb redis.UniversalClient) int64 {
	t.Helper()
	for {
		info, err := rdb.Info(context.Background(), "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		v := map[string]int64{}
		for _, line := range strings.Split(info, "\n") {
			if k, val, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				v[k], _ = strconv.ParseInt(val, 10, 64)
			}
		}
		if v["lazyfree_pending_objects"] == 0 {
			return v["used_memory"]
		}
		runtime.Gosched()
	}
}
