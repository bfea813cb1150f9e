package imrecall_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/msgindex"
)

// indexedCalls is a callback index of alice's messages: one in each of 11
// groups, one to bob, and a forged one-to-one entry the history does not
// confirm. It returns a Client that purges by that index.
func indexedCalls(t *testing.T) *imrecall.Client {
	t.Helper()
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
	for _, k := range env.IM.SendC2C(t, "alice", "bob", 1) {
		entries = append(entries, msgindex.Entry{From: "alice", To: "bob", MsgKey: k, Time: time.Now()})
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
	return c
}

// checkIndexedCalls checks a plan of indexedCalls' purge: 12 messages, the
// forged entry left out, 11 group calls (one per group, not 2 for 11 seqs as
// if they shared a group), one one-to-one call (none for the forged entry).
func checkIndexedCalls(t *testing.T, what string, plan imrecall.Plan) {
	t.Helper()
	if plan.Source != imrecall.SourceIndex || plan.Messages != 12 || plan.SenderUnconfirmed != 1 {
		t.Fatalf("%s: source %s, %d messages, %d unconfirmed; want the index's 12, the forged one left out", what, plan.Source, plan.Messages, plan.SenderUnconfirmed)
	}
	if plan.GroupCalls != 11 || plan.C2CCalls != 1 || plan.SecondsAtCap != 11.0/200 {
		t.Fatalf("%s: %d group calls, %d one-to-one calls, %v s at the cap; want 11 (one per group), 1 (the forged entry is not recalled), 0.055 s",
			what, plan.GroupCalls, plan.C2CCalls, plan.SecondsAtCap)
	}
	if plan.Index == nil || len(plan.Warnings) == 0 {
		t.Fatalf("%s: index counts %v, warnings %q; want the index's counts and a warning of the unconfirmed entry", what, plan.Index, plan.Warnings)
	}
}

// TestIndexDryRunCountsCallsPerTarget: a purge by index's dry run says the
// recall calls its messages take as a scan's does: up to 10 seqs of one
// group (or topic) a call, one call a one-to-one message, and only for the
// messages it will recall.
func TestIndexDryRunCountsCallsPerTarget(t *testing.T) {
	t.Parallel()
	c := indexedCalls(t)
	plan, err := c.Plan(t.Context(), imrecall.UserPurge{User: "alice", Since: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	checkIndexedCalls(t, "plan", plan)
}

// TestIndexPurgeConfirmedUpFrontSaysItsCalls: a purge by index created
// confirmed (the CLI's --yes, the API's "confirm": true), which confirms
// senders as it plans instead of counting first, answers with the figures
// its dry run gives: messages, group and one-to-one calls, time at the cap.
func TestIndexPurgeConfirmedUpFrontSaysItsCalls(t *testing.T) {
	t.Parallel()
	c := indexedCalls(t)
	created, err := c.Create(t.Context(), imrecall.UserPurge{User: "alice", Since: "1h"},
		imrecall.CreateOptions{Actor: "alice", Reason: "test", Confirmed: true})
	if err != nil {
		t.Fatal(err)
	}
	checkIndexedCalls(t, "created", created.Plan)
	if created.Planned != 12 {
		t.Fatalf("created: %d planned, want 12", created.Planned)
	}
}
