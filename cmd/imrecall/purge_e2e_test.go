package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
)

// TestPurgeUserAcceptance is issue [4/6]'s acceptance: on a seeded app of 200
// groups of mixed types and 100,000 messages, `purge user` recalls every
// message the heavy sender sent in groups and one-to-one chats and nothing
// else, and the dry run's counts equal what the real run recalls.
func TestPurgeUserAcceptance(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200, Latency: 2 * time.Millisecond, LatencyMax: 10 * time.Millisecond})
	ds := e.env.Dataset(t, emulator.DatasetSpec{Groups: 200, Users: 2000, GroupMessages: 100000, C2CMessages: 4000,
		HeavyGroups: 110, HeavyShare: 0.04, Peers: 22, Topics: 3, Seed: 17})
	spammer := ds.HeavySenders[0]
	peers := strings.Join(ds.PeersOf[spammer], ",")
	if ds.GroupsByType["Community"] == 0 || ds.GroupsByType["AVChatRoom"] == 0 {
		t.Fatalf("dataset lacks a Community or an AVChatRoom: %v", ds.GroupsByType)
	}
	before := snapshot(e)

	out, err := e.run("purge", "user", "--user", spammer, "--peers", peers, "--dry-run", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var dry struct {
		Messages int `json:"messages"`
		Report   struct {
			Unsupported []struct{ Type string } `json:"unsupported"`
		} `json:"report"`
	}
	if err := json.Unmarshal([]byte(out), &dry); err != nil {
		t.Fatalf("dry run printed %q: %v", out, err)
	}
	if after := snapshot(e); after != before {
		t.Fatalf("the dry run recalled %d messages", after-before)
	}
	e.worker("w1")
	jobID := e.created("purge", "user", "--user", spammer, "--peers", peers, "--yes", "--json", "--reason", "acceptance")
	j := e.waitDone(jobID, 4*time.Minute)
	if j.Status != jobs.StatusDone || j.Counts.DeadLettered != 0 {
		t.Fatalf("job = %+v", j)
	}
	if int(j.Counts.Recalled) != dry.Messages || dry.Messages == 0 {
		t.Fatalf("the real run recalled %d, the dry run counted %d", j.Counts.Recalled, dry.Messages)
	}
	av := 0
	for _, u := range dry.Report.Unsupported {
		if u.Type == "AVChatRoom" {
			av++
		}
	}
	if av == 0 {
		t.Error("no AVChatRoom reported unsupported")
	}

	// Ground truth: all of the spammer's messages in recallable groups and in
	// chats with the peers are recalled, and nothing else is.
	left, others := spammerLeft(e, spammer)
	c2cRecalled := 0
	for _, p := range ds.PeersOf[spammer] {
		for _, m := range e.env.Emu.C2CMessages(spammer, p) {
			switch {
			case m.From == spammer && !m.Recalled:
				left++
			case m.From != spammer && m.Recalled:
				others++
			case m.Recalled:
				c2cRecalled++
			}
		}
	}
	if left != 0 || others != 0 || c2cRecalled == 0 {
		t.Fatalf("%d of the spammer's messages left, %d of others recalled, %d one-to-one recalled", left, others, c2cRecalled)
	}
	if tr := e.env.Emu.Truth(); tr.GroupRecalled+tr.C2CRecalled != int(j.Counts.Recalled) {
		t.Fatalf("emulator recalled %d in all, the job %d", tr.GroupRecalled+tr.C2CRecalled, j.Counts.Recalled)
	}
}

// snapshot counts recalled messages on the emulator.
func snapshot(e *e2e) int {
	tr := e.env.Emu.Truth()
	return tr.GroupRecalled + tr.C2CRecalled
}

// TestPurgeGroupTimeRange: `purge group` with a time range recalls exactly
// the messages in that range.
func TestPurgeGroupTimeRange(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200})
	end := time.Now().Truncate(time.Second)
	ds := e.env.Dataset(t, emulator.DatasetSpec{Groups: 8, Users: 100, GroupMessages: 4000, C2CMessages: 10, HeavyGroups: 2,
		Start: end.Add(-24 * time.Hour), End: end, Seed: 5, TypeMix: map[string]int{"Public": 1}})
	groups := []string{ds.Groups[2].GroupID, ds.Groups[3].GroupID, ds.Groups[4].GroupID}
	since, until := end.Add(-10*time.Hour), end.Add(-4*time.Hour)
	e.worker("w1")
	args := []string{"purge", "group", "--reason", "test", "--yes", "--json", "--since", since.Format(time.RFC3339), "--until", until.Format(time.RFC3339)}
	for _, g := range groups {
		args = append(args, "--group", g)
	}
	jobID := e.created(args...)
	j := e.waitDone(jobID, 2*time.Minute)
	inRange := 0
	for _, g := range e.env.Emu.Groups() {
		target := false
		for _, id := range groups {
			target = target || id == g.GroupID
		}
		for _, m := range e.env.Emu.GroupMessages(g.GroupID, "") {
			in := target && m.Time >= since.Unix() && m.Time <= until.Unix()
			if in {
				inRange++
			}
			if m.Recalled != in {
				t.Fatalf("group %s seq %d (time %d, in range %v): recalled %v", g.GroupID, m.Seq, m.Time, in, m.Recalled)
			}
		}
	}
	if int(j.Counts.Recalled) != inRange || inRange == 0 {
		t.Fatalf("job recalled %d, %d in range", j.Counts.Recalled, inRange)
	}
	// An inverted range is refused before anything is planned.
	_, err := e.run("purge", "group", "--reason", "test", "--group", groups[0], "--since", until.Format(time.RFC3339), "--until", since.Format(time.RFC3339), "--yes")
	if err == nil || !strings.Contains(err.Error(), "before --since") {
		t.Fatalf("inverted range: %v", err)
	}
}
