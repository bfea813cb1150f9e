package producer

import (
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
)

// The emulator answers as Tencent documents; each test here is a way
// discovery used to miss messages on it.

// TestPurgeGroupListsCommunityTopics: get_topic requires From_Account. A
// purge of groups (no user to ask as) used to send none, read the error as
// "no topics", and skip every topic's messages.
func TestPurgeGroupListsCommunityTopics(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	if _, err := env.Emu.Generate(emulator.DatasetSpec{Groups: 12, Users: 60, GroupMessages: 2000, C2CMessages: 10,
		HeavyGroups: 4, Topics: 3, Seed: 11, TypeMix: map[string]int{"Community": 1}}); err != nil {
		t.Fatal(err)
	}
	var community string
	var topics int
	for _, g := range env.Emu.Groups() {
		if g.Type == TypeCommunity && len(g.Topics) > 0 {
			community, topics = g.GroupID, len(g.Topics)
			break
		}
	}
	if community == "" {
		t.Fatal("the dataset has no Community with topics")
	}
	scans, _, err := GroupScans(t.Context(), env.Client, GroupPurge{Groups: []string{community}})
	if err != nil {
		t.Fatal(err)
	}
	if len(scans) != 1+topics {
		t.Fatalf("%d scans for a Community with %d topics, want %d: %+v", len(scans), topics, 1+topics, scans)
	}
	tally := &Tally{}
	if err := RunScans(t.Context(), env.Client, scans, 4, tally, &Report{}); err != nil {
		t.Fatal(err)
	}
	want := len(env.Emu.GroupMessages(community, ""))
	for _, tp := range env.Emu.Groups() {
		if tp.GroupID == community {
			for _, id := range tp.Topics {
				want += len(env.Emu.GroupMessages(community, id))
			}
		}
	}
	if tally.Count() != want {
		t.Fatalf("found %d messages, the community and its topics hold %d", tally.Count(), want)
	}
}

// TestScanReadsPastARunOfRecalledMessages: a page of group history is a
// window of 20 seqs; without WithRecalledMsg the recalled ones are left out,
// so 20 recalled in a row came back as an empty page and ended the scan.
func TestScanReadsPastARunOfRecalledMessages(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice", "bob")
	gid := env.Group(t, "Public", "g1", "alice", "bob")
	seqs := env.SendGroup(t, gid, "", 100, "alice")
	// Seqs 31..75 recalled before the purge (45 in a row, two whole pages).
	for i := 30; i < 75; i += 10 {
		if _, err := env.Client.RecallGroup(t.Context(), gid, "", seqs[i:min(i+10, 75)]); err != nil {
			t.Fatal(err)
		}
	}
	tally := &Tally{}
	rep, err := PlanGroupPurge(t.Context(), env.Client, GroupPurge{Groups: []string{gid}, Senders: []string{"alice"}}, tally)
	if err != nil {
		t.Fatal(err)
	}
	if tally.Count() != 55 || rep.GroupMsgs != 55 {
		t.Fatalf("found %d (report %d) of alice's 55 messages not yet recalled", tally.Count(), rep.GroupMsgs)
	}
}
