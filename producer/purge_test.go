package producer

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
)

func TestPlanUserPurgeMatchesGroundTruth(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	ds, err := env.Emu.Generate(emulator.DatasetSpec{Groups: 40, Users: 300, GroupMessages: 12000, C2CMessages: 1500, HeavyGroups: 25, HeavyShare: 0.2, Peers: 8, Topics: 2, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	spammer := ds.HeavySenders[0]
	peers := ds.PeersOf[spammer]
	// One of the spammer's messages was recalled before: it is not planned.
	var preGroup string
	for _, g := range env.Emu.Groups() {
		if g.Type == "AVChatRoom" {
			continue
		}
		for _, m := range env.Emu.GroupMessages(g.GroupID, "") {
			if m.From == spammer {
				if _, err := env.Client.RecallGroup(t.Context(), g.GroupID, "", []int64{m.Seq}); err != nil {
					t.Fatal(err)
				}
				preGroup = g.GroupID
				break
			}
		}
		if preGroup != "" {
			break
		}
	}

	want := map[jobs.Target]map[string]bool{}
	add := func(tg jobs.Target, item string) {
		if want[tg] == nil {
			want[tg] = map[string]bool{}
		}
		want[tg][item] = true
	}
	unsupported := 0
	for _, g := range env.Emu.Groups() {
		member := false
		for _, m := range g.Members {
			member = member || m == spammer
		}
		if !member {
			continue
		}
		if g.Type == "AVChatRoom" {
			unsupported++
			continue
		}
		for _, topic := range append([]string{""}, g.Topics...) {
			for _, m := range env.Emu.GroupMessages(g.GroupID, topic) {
				if m.From == spammer && !m.Recalled {
					add(jobs.Target{GroupID: g.GroupID, TopicID: topic}, itoa(m.Seq))
				}
			}
		}
	}
	wantN := 0
	for _, p := range peers {
		for _, m := range env.Emu.C2CMessages(spammer, p) {
			if m.From == spammer && !m.Recalled {
				add(jobs.Target{From: spammer, To: p}, m.MsgKey)
			}
		}
	}
	for _, items := range want {
		wantN += len(items)
	}

	dry := &Tally{}
	rep, err := PlanUserPurge(t.Context(), env.Client, UserPurge{User: spammer, Peers: peers, Concurrency: 4}, dry)
	if err != nil {
		t.Fatal(err)
	}
	if dry.Count() != wantN || rep.GroupMsgs+rep.C2CMsgs != wantN {
		t.Fatalf("dry run found %d (report %d+%d), ground truth %d", dry.Count(), rep.GroupMsgs, rep.C2CMsgs, wantN)
	}
	for tg, items := range dry.seen {
		for it := range items {
			if !want[tg][it] {
				t.Fatalf("discovered %s %s, which is not the spammer's or is recalled", tg, it)
			}
		}
	}
	if len(rep.Unsupported) != unsupported || (unsupported > 0 && !strings.Contains(rep.Unsupported[0].Reason, "AVChatRoom")) {
		t.Fatalf("unsupported = %+v, want %d AVChatRoom groups", rep.Unsupported, unsupported)
	}
	topics := 0
	for _, tr := range rep.Targets {
		if tr.Target.TopicID != "" && tr.Messages > 0 {
			topics++
		}
	}
	if topics == 0 {
		t.Fatal("no Community topic messages were discovered")
	}
	if _, err := PlanUserPurge(t.Context(), env.Client, UserPurge{User: "nobody-at-all"}, &Tally{}); err == nil || !strings.Contains(err.Error(), "unknown user") {
		t.Fatalf("unknown user: err = %v", err)
	}
}

func TestPlanGroupPurgeTimeRange(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	end := time.Now().Truncate(time.Second)
	ds, err := env.Emu.Generate(emulator.DatasetSpec{Groups: 6, Users: 50, GroupMessages: 3000, C2CMessages: 10, HeavyGroups: 3, Seed: 9,
		Start: end.Add(-10 * time.Hour), End: end})
	if err != nil {
		t.Fatal(err)
	}
	var groups []string
	for _, g := range ds.Groups {
		if g.Type != "AVChatRoom" && g.Type != "Community" {
			groups = append(groups, g.GroupID)
		}
	}
	since, until := end.Add(-6*time.Hour), end.Add(-3*time.Hour)
	want := 0
	for _, g := range groups {
		for _, m := range env.Emu.GroupMessages(g, "") {
			if m.Time >= since.Unix() && m.Time <= until.Unix() {
				want++
			}
		}
	}
	tally := &Tally{}
	rep, err := PlanGroupPurge(t.Context(), env.Client, GroupPurge{Groups: groups, GroupFilter: GroupFilter{Window: Window{Since: since, Until: until}}}, tally)
	if err != nil {
		t.Fatal(err)
	}
	if tally.Count() != want || want == 0 {
		t.Fatalf("found %d in the range, ground truth %d (report %+v)", tally.Count(), want, rep)
	}

	// Bad input is refused before anything is planned.
	bad := []GroupPurge{
		{Groups: []string{"@TGS#nope"}},
		{Groups: []string{ds.Groups[1].GroupID}}, // the AVChatRoom
		{Groups: groups, GroupFilter: GroupFilter{Window: Window{Since: until, Until: since}}},
		{Groups: groups, GroupFilter: GroupFilter{SeqFrom: 9, SeqTo: 3}},
	}
	for _, p := range bad {
		tally := &Tally{}
		if _, err := PlanGroupPurge(t.Context(), env.Client, p, tally); err == nil || tally.Count() != 0 {
			t.Errorf("PlanGroupPurge(%+v) = %v, planned %d; want an error and nothing planned", p, err, tally.Count())
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
