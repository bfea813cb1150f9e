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
