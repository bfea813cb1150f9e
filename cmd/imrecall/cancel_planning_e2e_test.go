package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
)

// TestCancelWhilePlannedExitsCancelled: a person cancels a job while
// `recall file --wait` is still planning it (waiting for the workers under
// --backlog). The command must exit 4, "the job was cancelled", not 1,
// "failure": a script that runs the command again on a failure would undo
// the cancel with a new job. A helper's attack saw exit 1 and "job is not
// planning".
func TestCancelWhilePlannedExitsCancelled(t *testing.T) {
	e := newE2E(t, emulator.Config{})
	e.env.Accounts(t, "alice")
	var lines []string
	for i := range 3 {
		g := e.env.Group(t, "Public", fmt.Sprintf("@TGS#cp%d", i), "alice")
		e.env.SendGroup(t, g, "", 30, "alice")
		for s := 1; s <= 30; s++ {
			lines = append(lines, fmt.Sprintf(`{"GroupId":%q,"MsgSeq":%d}`, g, s))
		}
	}
	list := filepath.Join(t.TempDir(), "list.jsonl")
	if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// No worker: the planner waits for its backlog of 20 to drain.
	cmd := imrecallCommand(t.Context(), e.bin, "recall", "file", list, "--yes", "--reason", "t", "--backlog", "20", "--wait")
	cmd.Env = e.environ()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var id string
	deadline := time.Now().Add(time.Minute)
	for id == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no job planning:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
		list, err := e.store.List(t.Context(), 1)
		if err == nil && len(list) == 1 && list[0].Status == jobs.StatusPlanning && list[0].Counts.Planned >= 20 {
			id = list[0].ID
		}
	}
	if _, err := e.run("jobs", "cancel", id, "--reason", "wrong list"); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if code := exitOf(t, err); code != 4 {
		t.Fatalf("recall --wait of a job cancelled while planned: exit %d, want 4 (cancelled):\n%s", code, out.String())
	}
	if j, err := e.store.Get(t.Context(), id); err != nil || j.Status != jobs.StatusCancelled {
		t.Fatalf("job %s: %+v, %v", id, j, err)
	}
}
