package verify

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// TestScopeUsesTheRecordedCoverage: the gaps of a job that recorded its
// coverage are those discovery saw (naming the groups the index knows),
// not those guessed from its parameters.
func TestScopeUsesTheRecordedCoverage(t *testing.T) {
	params, _ := json.Marshal(map[string]any{"user": "u1", "peers": []string{}, "source": "scan"})
	job := jobs.Job{ID: "j", Kind: "purge:user", Params: params, CreatedAt: time.Now()}
	guessed, err := ScopeOf(job, nil)
	if err != nil {
		t.Fatal(err)
	}
	cov := &jobs.Coverage{Subject: "u1", Gaps: []jobs.Gap{
		{Kind: jobs.GapGroupsLeft, What: "groups the user has left", Groups: []string{"@TGS#left"}},
	}}
	recorded, err := ScopeWith(job, cov, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(recorded.Gaps) != 1 || !strings.Contains(recorded.Gaps[0], "@TGS#left") {
		t.Fatalf("gaps with a recorded coverage = %q", recorded.Gaps)
	}
	if len(guessed.Gaps) != 2 || recorded.Subject != "u1" {
		t.Fatalf("gaps from the parameters = %q (subject %q)", guessed.Gaps, recorded.Subject)
	}
}

// TestScopeReadsOlderRecords: a user purge recorded by an older CLI holds
// its peers as a count, and its scope says the one-to-one chats are not
// re-scanned; an older recall-file record holds a count of messages, and
// its scope is read all the same; a group purge's fields (groups, senders,
// seq range) are read by their JSON names.
func TestScopeReadsOlderRecords(t *testing.T) {
	older := jobs.Job{ID: "old", Kind: "purge:user", CreatedAt: time.Now(),
		Params: json.RawMessage(`{"user":"u1","peers":3,"source":"scan","since":"30d"}`)}
	s, err := ScopeOf(older, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Subject != "u1" || len(s.Gaps) != 2 || !strings.Contains(s.Gaps[0], "how many peers it had, not who") {
		t.Fatalf("scope of an older record = subject %q, gaps %q", s.Subject, s.Gaps)
	}
	file := jobs.Job{ID: "f", Kind: "recall:file", CreatedAt: time.Now(),
		Params: json.RawMessage(`{"file":"/data/list.jsonl","messages":2}`)}
	if s, err = ScopeOf(file, nil); err != nil || s.List != nil {
		t.Fatalf("scope of an older recall-file record = %+v, %v", s, err)
	}
	group := jobs.Job{ID: "g", Kind: "purge:group", CreatedAt: time.Now(),
		Params: json.RawMessage(`{"groups":["@TGS#1"],"senders":["spammer"],"seq_from":5,"seq_to":9}`)}
	if s, err = ScopeOf(group, nil); err != nil || s.Subject != "spammer" {
		t.Fatalf("scope of a group purge = %+v, %v", s, err)
	}
	bad := jobs.Job{ID: "b", Kind: "purge:user", CreatedAt: time.Now(), Params: json.RawMessage(`{"user":"u1","since":"soon"}`)}
	if _, err := ScopeOf(bad, nil); err == nil || !strings.Contains(err.Error(), `since "soon"`) {
		t.Fatalf("scope of a record with a bad since = %v", err)
	}
}

// TestScopeWindowIsTheOneTheJobRecorded: a purge's time range given as a
// local time ("2026-12-03 10:00") is resolved in the zone of the process
// that created the job, and the job's coverage records it as an absolute
// time. A verification run in another zone (serve on a UTC host, a job
// created from a laptop in Shanghai) read the parameters again in its own
// zone, and re-read another range than the purge's: hours of the scope
// unread (residue there never found), or hours beyond it counted as residue.
func TestScopeWindowIsTheOneTheJobRecorded(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "spammer")
	group := env.Group(t, "Public", "@TGS#tz", "spammer")
	shanghai, est := time.FixedZone("CST", 8*3600), time.FixedZone("EST", -5*3600)
	since := time.Date(2026, 12, 2, 9, 30, 0, 0, shanghai)
	until := time.Date(2026, 12, 3, 10, 0, 0, 0, shanghai)
	params, _ := json.Marshal(map[string]any{"groups": []string{group}, "senders": []string{"spammer"},
		"since": "2026-12-02 09:30", "until": "2026-12-03 10:00"})
	job := jobs.Job{ID: "tz", Kind: "purge:group", Params: params, CreatedAt: until}
	cov := &jobs.Coverage{Subject: "spammer"}
	cov.Window(since, until)

	local := time.Local
	time.Local = est // the verifier's zone
	t.Cleanup(func() { time.Local = local })
	s, err := ScopeWith(job, cov, env.Client)
	if err != nil {
		t.Fatal(err)
	}
	areas, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(areas) != 1 {
		t.Fatalf("%d areas, want 1: %+v", len(areas), areas)
	}
	if f := areas[0].Filter; !f.Since.Equal(since) || !f.Until.Equal(until) {
		t.Fatalf("the verification reads %s to %s, the purge covered %s to %s",
			f.Since.UTC().Format(time.RFC3339), f.Until.UTC().Format(time.RFC3339), since.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))
	}
}

// TestScopeNamesTopicsTheRescanCannotRead: a verification re-scans the
// purge's groups; a Community topic get_topic refused to describe to the
// re-scan (its entry carried 10007) was left out silently, and the
// verification (and the certificate) claimed the topic was read. Now the
// scope's gaps name it, once: not again when the job's recorded coverage
// names it already.
func TestScopeNamesTopicsTheRescanCannotRead(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "spammer")
	group := env.Group(t, "Community", "@TGS#community", "spammer")
	var topics []string
	for _, name := range []string{"refused", "read"} {
		resp, err := env.Client.CreateTopic(t.Context(), tim.CreateTopicRequest{GroupID: group, TopicName: name})
		if err != nil {
			t.Fatal(err)
		}
		topics = append(topics, resp.TopicID)
	}
	env.Emu.SetFaults(emulator.Faults{TopicCodes: map[string]int{topics[0]: 10007}})
	params, _ := json.Marshal(map[string]any{"groups": []string{group}, "senders": []string{"spammer"}})
	job := jobs.Job{ID: "topics", Kind: "purge:group", Params: params, CreatedAt: time.Now()}
	for _, tc := range []struct {
		name     string
		recorded []jobs.Gap
		want     int // gaps naming the refused topic
	}{
		{name: "refused to the re-scan only", want: 1},
		{name: "recorded by the job", recorded: []jobs.Gap{{Kind: jobs.GapTopics, What: "refused topics; " + group + " topics " + topics[0] + ": 10007",
			Groups: []string{group}, Topics: topics[:1]}}, want: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ScopeWith(job, &jobs.Coverage{Subject: "spammer", Gaps: tc.recorded}, env.Client)
			if err != nil {
				t.Fatal(err)
			}
			areas, err := s.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var read []string
			for _, a := range areas {
				read = append(read, a.Target.String())
			}
			if len(areas) != 2 || slices.ContainsFunc(areas, func(a Area) bool { return a.Target.TopicID == topics[0] }) {
				t.Fatalf("areas %q: want the group and topic %s, not the refused %s", read, topics[1], topics[0])
			}
			named := 0
			for _, g := range s.Gaps {
				if strings.Contains(g, topics[0]) {
					named++
				}
			}
			if named != tc.want {
				t.Fatalf("gaps %q name the refused topic %s %d times, want %d", s.Gaps, topics[0], named, tc.want)
			}
		})
	}
}
