package msgindex

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLookupMissesNothingWhileCallbacksTrim: a callback arriving mid-lookup
// trims entries past the retention. Paging by offset then skipped as many
// unread entries as were trimmed (1,000 of a user's messages, reproduced);
// paging by key skips none of those still there.
func TestLookupMissesNothingWhileCallbacksTrim(t *testing.T) {
	b := setup(t, "")
	ctx := context.Background()
	day := 24 * time.Hour
	// 3,000 messages of u over 3,000 seconds, the oldest 29.9 days ago; many
	// share a second (three per second for the newest 1,500).
	var entries []Entry
	start := b.now.Add(-30*day + 2*time.Hour)
	for i := range 3000 {
		at := start.Add(time.Duration(i) * time.Second)
		if i >= 1500 {
			at = start.Add(time.Duration(1500+(i-1500)/3) * time.Second)
		}
		entries = append(entries, Entry{From: "u", Time: at, GroupID: "@TGS#1", MsgSeq: int64(i + 1)})
	}
	if err := b.idx.Add(ctx, testApp, entries...); err != nil {
		t.Fatal(err)
	}
	seen := map[Entry]bool{}
	n := 0
	err := b.idx.Lookup(ctx, testApp, "u", time.Time{}, time.Time{}, func(e Entry) error {
		seen[Entry{GroupID: e.GroupID, MsgSeq: e.MsgSeq}] = true
		n++
		if n == 500 {
			// Two hours and 1,200 seconds later a callback arrives: it
			// trims the oldest 1,200 entries, 700 of them not read yet.
			b.now = b.now.Add(2*time.Hour + 1200*time.Second)
			if err := b.idx.Add(ctx, testApp, Entry{From: "u", Time: b.now, GroupID: "@TGS#2", MsgSeq: 1}); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	left := b.entries("u")
	if len(left) != 3000-1200+1 {
		t.Fatalf("%d entries after the trim, want %d", len(left), 3000-1200+1)
	}
	missed := 0
	for _, e := range left {
		if !seen[Entry{GroupID: e.GroupID, MsgSeq: e.MsgSeq}] && e.GroupID == "@TGS#1" {
			missed++
		}
	}
	if missed != 0 {
		t.Fatalf("the lookup missed %d of the entries still indexed", missed)
	}
	if n != len(seen) {
		t.Fatalf("%d entries handed over for %d distinct messages: some twice", n, len(seen))
	}
}

// TestCoverageHonoursRetentionAndGaps: `auto` used the index for --since
// 30d although it keeps 7 days; an outage of the receiver never reduced
// what the index claimed to cover.
func TestCoverageHonoursRetentionAndGaps(t *testing.T) {
	b := setup(t, "")
	ctx := context.Background()
	day := 24 * time.Hour
	b.idx.retention = 7 * day
	if err := b.idx.Add(ctx, testApp, Entry{From: "u", Time: b.now, GroupID: "@TGS#1", MsgSeq: 1}); err != nil {
		t.Fatal(err)
	}
	b.now = b.now.Add(40 * day)
	cov, err := b.idx.Coverage(ctx, testApp)
	if err != nil {
		t.Fatal(err)
	}
	if !cov.Covers(b.now.Add(-6*day), b.now) {
		t.Fatalf("6 days back, inside the 7-day retention: not covered: %s", cov.Why(b.now.Add(-6*day), b.now))
	}
	if why := cov.Why(b.now.Add(-30*day), b.now); !strings.Contains(why, "keeps entries for 168h0m0s") {
		t.Fatalf("30 days back with a 7-day retention: %q", why)
	}

	// A heartbeat, silence for ten minutes, a heartbeat: a gap. Heartbeats
	// go by Redis's clock.
	b.mr.SetTime(b.now)
	if g, err := b.idx.Alive(ctx, testApp, "r1", "1", 30*time.Second, nil); err != nil || g != nil {
		t.Fatalf("first heartbeat: %v, %v", g, err)
	}
	b.now = b.now.Add(20 * time.Second)
	b.mr.SetTime(b.now)
	if g, err := b.idx.Alive(ctx, testApp, "r1", "1", 30*time.Second, nil); err != nil || g != nil {
		t.Fatalf("a beat on time: %v, %v", g, err)
	}
	down := b.now
	b.now = b.now.Add(10 * time.Minute)
	b.mr.SetTime(b.now)
	g, err := b.idx.Alive(ctx, testApp, "r1", "1", 30*time.Second, nil)
	if err != nil || g == nil || !g.From.Equal(down.UTC()) || !g.To.Equal(b.now.UTC()) {
		t.Fatalf("after ten minutes of silence: %+v, %v", g, err)
	}
	cov, _ = b.idx.Coverage(ctx, testApp)
	if len(cov.Gaps) != 1 || !cov.Gaps[0].From.Equal(g.From) || !cov.Gaps[0].To.Equal(g.To) || cov.Gaps[0].Reason != g.Reason {
		t.Fatalf("gaps = %+v, want the heartbeat's %+v", cov.Gaps, *g)
	}
	if why := cov.Why(b.now.Add(-day), b.now); !strings.Contains(why, "gap from") {
		t.Fatalf("a day back, across the outage: %q", why)
	}
	if !cov.Covers(b.now, b.now.Add(time.Minute)) {
		t.Fatalf("since the outage ended: %s", cov.Why(b.now, b.now.Add(time.Minute)))
	}
	// A callback that could not be indexed is a gap too.
	if err := b.idx.RecordGap(ctx, testApp, b.now, b.now, "callback could not be indexed"); err != nil {
		t.Fatal(err)
	}
	cov, _ = b.idx.Coverage(ctx, testApp)
	if cov.Covers(b.now.Add(-time.Second), b.now.Add(time.Second)) {
		t.Fatal("a failed callback left the coverage whole")
	}
}

// TestHeartbeatsGoByRedisClock: two replicas of the callback receiver
// whose clocks are ten minutes apart. A replica ahead made up a silence
// the other's beat never had; a silence after a beat of the replica ahead
// was hidden from the one behind. Beats stamped by Redis's clock see the
// silence there was, and only it.
func TestHeartbeatsGoByRedisClock(t *testing.T) {
	b := setup(t, testToken)
	ctx := t.Context()
	const beat = 30 * time.Second
	behind := b.idx
	ahead := New(behind.rdb, "", 30*24*time.Hour)
	ahead.now = func() time.Time { return b.now.Add(10 * time.Minute) }

	redisAt := func(d time.Duration) { b.mr.SetTime(b.now.Add(d)) }
	redisAt(0)
	if g, err := behind.Alive(ctx, testApp, "behind", "1", beat, nil); err != nil || g != nil {
		t.Fatalf("first beat: %+v, %v", g, err)
	}
	redisAt(20 * time.Second)
	if g, err := ahead.Alive(ctx, testApp, "ahead", "1", beat, nil); err != nil || g != nil {
		t.Fatalf("a beat on time from the replica ahead: gap %+v (%v), want none", g, err)
	}
	// Both down for five minutes; the replica behind beats first. Its own
	// silence began at its last beat, before the one of the replica ahead.
	redisAt(20*time.Second + 5*time.Minute)
	g, err := behind.Alive(ctx, testApp, "behind", "1", beat, nil)
	if err != nil || g == nil || !g.From.Equal(b.now.UTC()) || !g.To.Equal(b.now.Add(20*time.Second+5*time.Minute).UTC()) {
		t.Fatalf("after five minutes of silence: gap %+v (%v), want the five minutes and the beat before", g, err)
	}
}

// TestReplicaGaps: the callback receiver runs as replicas that each beat.
// A replica that refused a callback while Redis was out of its reach holds
// the callback's gap in memory; killed (SIGKILL) before it could write it,
// it used to leave no trace: the other replica's beats hid its silence, and
// a receiver started again within two beats saw none. Each case beats on
// miniredis with Redis's clock set, and checks the gap a lookup from before
// the lost message is told of.
func TestReplicaGaps(t *testing.T) {
	const beat = 10 * time.Second
	type step struct {
		at      time.Duration // Redis time since the start
		replica string        // "name/life"; "leave name/life" leaves
	}
	for _, c := range []struct {
		name  string
		steps []step
		// wantFrom is where the gap the last step records starts (-1: no gap).
		wantFrom time.Duration
	}{
		{"a replica killed while another beats", []step{{0, "a/1"}, {1 * time.Second, "b/1"}, {10 * time.Second, "b/1"}, {21 * time.Second, "b/1"}}, 0},
		{"another replica still within its beats", []step{{0, "a/1"}, {1 * time.Second, "b/1"}, {10 * time.Second, "b/1"}, {19 * time.Second, "b/1"}}, -1},
		{"restarted in the same place within two beats", []step{{0, "a/1"}, {5 * time.Second, "a/2"}}, 0},
		{"started elsewhere while none runs", []step{{0, "a/1"}, {3 * time.Second, "leave a/1"}, {5 * time.Second, "b/1"}}, 3 * time.Second},
		{"one left while another runs", []step{{0, "a/1"}, {1 * time.Second, "b/1"}, {3 * time.Second, "leave a/1"}, {10 * time.Second, "b/1"}, {30 * time.Second, "b/1"}}, -1},
		{"a replica beating on time", []step{{0, "a/1"}, {10 * time.Second, "a/1"}, {20 * time.Second, "a/1"}}, -1},
		{"a replica silent for longer than two beats", []step{{0, "a/1"}, {21 * time.Second, "a/1"}}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := setup(t, testToken)
			ctx := t.Context()
			start := b.now
			var got *Gap
			for i, s := range c.steps {
				b.mr.SetTime(start.Add(s.at))
				var err error
				if name, ok := strings.CutPrefix(s.replica, "leave "); ok {
					r, life, _ := strings.Cut(name, "/")
					err = b.idx.Leave(ctx, testApp, r, life, nil)
				} else {
					r, life, _ := strings.Cut(s.replica, "/")
					got, err = b.idx.Alive(ctx, testApp, r, life, beat, nil)
				}
				if err != nil {
					t.Fatal(err)
				}
				if i < len(c.steps)-1 && got != nil {
					t.Fatalf("step %d (%s at %s): gap %+v before the last step", i, s.replica, s.at, *got)
				}
			}
			end := start.Add(c.steps[len(c.steps)-1].at)
			if c.wantFrom < 0 {
				if got != nil {
					t.Fatalf("gap %+v, want none", *got)
				}
				return
			}
			if got == nil || !got.From.Equal(start.Add(c.wantFrom).UTC()) || !got.To.Equal(end.UTC()) {
				t.Fatalf("gap %+v, want %s → %s", got, start.Add(c.wantFrom).UTC(), end.UTC())
			}
			cov, err := b.idx.Coverage(ctx, testApp)
			if err != nil {
				t.Fatal(err)
			}
			if len(cov.Gaps) != 1 || !cov.Gaps[0].From.Equal(got.From) || !cov.Gaps[0].To.Equal(got.To) {
				t.Fatalf("coverage gaps %+v, want %+v", cov.Gaps, *got)
			}
		})
	}
}

// TestLostGapGoesWithTheBeat: a callback refused while Redis was down
// leaves its gap in memory; the next beat writes it in the same step as
// the beat, so that a replica whose beat went in holds nothing a kill
// could lose, and one whose beat failed keeps it for the next.
func TestLostGapGoesWithTheBeat(t *testing.T) {
	b := setup(t, testToken)
	ctx := t.Context()
	b.cb.Replica = "r"
	b.mr.SetTime(b.now)
	if _, _, err := b.cb.Beat(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b.mr.SetError("LOADING Redis is loading the dataset in memory")
	rt := b.now.Unix()
	if status, _ := b.post(t, testApp, CommandGroupAfterSend, rt, Sign(testToken, strconv.FormatInt(rt, 10)), groupBody("spammer", "@TGS#1", 2, rt)); status != http.StatusServiceUnavailable {
		t.Fatalf("callback while Redis is down: HTTP %d, want 503", status)
	}
	if _, _, err := b.cb.Beat(ctx, 10*time.Second); err == nil {
		t.Fatal("a beat while Redis is down went in")
	}
	b.mr.SetError("")
	b.mr.SetTime(b.now.Add(5 * time.Second))
	lost, silence, err := b.cb.Beat(ctx, 10*time.Second)
	if err != nil || silence != nil || lost == nil || lost.To.Before(b.now) {
		t.Fatalf("beat after Redis came back: lost %+v, silence %+v (%v), want the callback's gap and no silence", lost, silence, err)
	}
	cov, err := b.idx.Coverage(ctx, testApp)
	if err != nil || len(cov.Gaps) != 1 || cov.Gaps[0].Reason != lost.Reason {
		t.Fatalf("coverage gaps %+v (%v), want the callback's", cov.Gaps, err)
	}
	if lost, _, err := b.cb.Beat(ctx, 10*time.Second); err != nil || lost != nil {
		t.Fatalf("the next beat: lost %+v (%v), want nothing left", lost, err)
	}
}
