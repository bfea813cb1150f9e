package msgindex

import (
	"context"
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
	if g, err := b.idx.Alive(ctx, testApp, 30*time.Second); err != nil || g != nil {
		t.Fatalf("first heartbeat: %v, %v", g, err)
	}
	b.now = b.now.Add(20 * time.Second)
	b.mr.SetTime(b.now)
	if g, err := b.idx.Alive(ctx, testApp, 30*time.Second); err != nil || g != nil {
		t.Fatalf("a beat on time: %v, %v", g, err)
	}
	down := b.now
	b.now = b.now.Add(10 * time.Minute)
	b.mr.SetTime(b.now)
	g, err := b.idx.Alive(ctx, testApp, 30*time.Second)
	if err != nil || g == nil || !g.From.Equal(down.UTC()) || !g.To.Equal(b.now.UTC()) {
		t.Fatalf("after ten minutes of silence: %+v, %v", g, err)
	}
	cov, _ = b.idx.Coverage(ctx, testApp)
	if len(cov.Gaps) != 1 {
		t.Fatalf("gaps = %+v", cov.Gaps)
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
	if g, err := behind.Alive(ctx, testApp, beat); err != nil || g != nil {
		t.Fatalf("first beat: %+v, %v", g, err)
	}
	redisAt(20 * time.Second)
	if g, err := ahead.Alive(ctx, testApp, beat); err != nil || g != nil {
		t.Fatalf("a beat on time from the replica ahead: gap %+v (%v), want none", g, err)
	}
	// Both down for five minutes; the replica behind beats first.
	redisAt(20*time.Second + 5*time.Minute)
	g, err := behind.Alive(ctx, testApp, beat)
	if err != nil || g == nil || !g.From.Equal(b.now.Add(20*time.Second).UTC()) || !g.To.Equal(b.now.Add(20*time.Second+5*time.Minute).UTC()) {
		t.Fatalf("after five minutes of silence: gap %+v (%v), want the five minutes", g, err)
	}
}
