package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// TestPurgeScopeAndCoverage: a dry run without --peers (and without the
// index) warns that no one-to-one chat is read; a purge with the peer reads
// the chat from both sides (the messages the user cleared from their side
// are recalled too), and `jobs report` shows the job's scope, each target
// with its range, and the gaps.
func TestPurgeScopeAndCoverage(t *testing.T) {
	e := newE2E(t, emulator.Config{})
	e.env.Accounts(t, "spammer", "alice")
	g := e.env.Group(t, "Public", "@TGS#scope", "spammer", "alice")
	e.env.SendGroup(t, g, "", 30, "spammer", "alice")
	keys := e.env.SendC2C(t, "spammer", "alice", 12)
	if _, err := e.env.Client.DeleteC2CMsgRamble(t.Context(), tim.DeleteC2CMsgRambleRequest{
		OperatorAccount: "spammer", PeerAccount: "alice", MsgKeyList: keys[:5]}); err != nil {
		t.Fatal(err)
	}

	out, err := e.run("purge", "user", "--user", "spammer", "--source", "scan", "--since", "1d", "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GAPS", "one-to-one chats: no peers were given", "groups the user has left", "subject spammer", "group @TGS#scope", "seq 1..30"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dry run without peers lacks %q:\n%s", want, out)
		}
	}

	e.worker("w1")
	jobID := e.created("purge", "user", "--user", "spammer", "--source", "scan", "--peers", "alice", "--yes", "--json", "--reason", "scope")
	j := e.waitDone(jobID, time.Minute)
	if j.Status != jobs.StatusDone || j.Counts.Recalled != 15+12 {
		t.Fatalf("job = %s %+v, want the spammer's 15 group and 12 one-to-one messages recalled", j.Status, j.Counts)
	}
	for _, m := range e.env.Emu.C2CMessages("spammer", "alice") {
		if !m.Recalled {
			t.Fatalf("one-to-one %s not recalled", m.MsgKey)
		}
	}
	out, err = e.run("jobs", "report", jobID, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep jobs.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report %q: %v", out, err)
	}
	c := rep.Coverage
	if c == nil || c.Subject != "spammer" || len(c.Peers) != 1 || len(c.Sources) != 2 || len(c.Targets) != 2 {
		t.Fatalf("report coverage = %+v", c)
	}
	for _, tc := range c.Targets {
		switch {
		case tc.Target.IsGroup() && (tc.FirstSeq != 1 || tc.LastSeq != 30 || !tc.Done):
			t.Errorf("group coverage = %+v", tc)
		// Both sides are read: the sender's 7 and the peer's 12. A message
		// the worker recalls between the two reads is listed recalled on the
		// peer's side and found there no more, so found is between 12 (each
		// message once) and 19.
		case !tc.Target.IsGroup() && (len(tc.Sides) != 2 || !tc.Done || tc.Scanned != 7+12 || tc.Found < 12 || tc.Found > 7+12):
			t.Errorf("one-to-one coverage = %+v, want both sides read (scanned 19, found 12 to 19)", tc)
		}
	}
	for _, g := range c.Gaps {
		if g.Kind == jobs.GapOneToOne {
			t.Errorf("a purge with peers records a one-to-one gap: %+v", g)
		}
	}
	text, err := e.run("jobs", "report", jobID)
	if err != nil || !strings.Contains(text, "sides sender+peer") || !strings.Contains(text, "groups the user has left") {
		t.Fatalf("report text: %v\n%s", err, text)
	}
}
