package verify

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/jobs"
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
