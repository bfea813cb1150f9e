package imrecall_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/msgindex"
)

// TestIndexDryRunCountsCallsPerTarget: a purge by index's dry run says the
// recall calls its messages take as a scan's does: up to 10 seqs of one
// group (or topic) a call, one call a one-to-one message, and only for the
// messages it will recall. alice sent one message in each of 11 groups (11
// calls, not 2 for 11 seqs as if they shared a group), and the index also
// holds a forged one-to-one entry the history does not confirm (left out,
// so no call).
func TestIndexDryRunCountsCallsPerTarget(t *testing.T) {
	t.Parallel()
	env := imrecalltest.Start(t, imrecalltest.Options{})
	ctx := t.Context()
	env.IM.Accounts(t, "alice", "bob")
	idx := msgindex.New(env.Redis, "", 7*24*time.Hour)
	var entries []msgindex.Entry
	for i := range 11 {
		g := env.IM.Group(t, "Public", fmt.Sprintf("@TGS#calls%d", i), "alice", "bob")
		for _, seq := range env.IM.SendGroup(t, g, "", 1, "alice") {
			entries = append(entries, msgindex.Entry{From: "alice", GroupID: g, MsgSeq: seq, Time: time.Now()})
		}
	}
	entries = append(entries, msgindex.Entry{From: "alice", To: "ghost", MsgKey: "1_2_" + fmt.Sprint(time.Now().Unix()), Time: time.Now()})
	if err := idx.Add(ctx, imrecalltest.AppID, entries...); err != nil {
		t.Fatal(err)
	}
	if err := idx.RestartCoverage(ctx, imrecalltest.AppID, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client, Index: idx})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := c.Plan(ctx, imrecall.UserPurge{User: "alice", Since: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Source != imrecall.SourceIndex || plan.Messages != 11 || plan.SenderUnconfirmed != 1 {
		t.Fatalf("plan: source %s, %d messages, %d unconfirmed; want the index's 11, the forged one left out", plan.Source, plan.Messages, plan.SenderUnconfirmed)
	}
	if plan.GroupCalls != 11 || plan.C2CCalls != 0 || plan.SecondsAtCap != 11.0/200 {
		t.Fatalf("plan: %d group calls, %d one-to-one calls, %v s at the cap; want 11 (one per group), 0 (the forged entry is not recalled), 0.055 s",
			plan.GroupCalls, plan.C2CCalls, plan.SecondsAtCap)
	}
}
