package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
)

// TestSecretsNeverLeak runs jobs with debug logging, one worker with the
// right key and one with a wrong key (so auth errors are logged), and checks
// that neither the SecretKey nor any UserSig the emulator received appears in
// logs, reports or exports.
func TestSecretsNeverLeak(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200, Faults: emulator.Faults{Codes: map[int]float64{91000: 0.2}}, Seed: 4})
	e.env.Emu.SetFaults(emulator.Faults{})
	e.env.Accounts(t, "alice", "bob")
	g := e.env.Group(t, "Public", "@TGS#secret", "alice")
	e.env.SendGroup(t, g, "", 30, "alice")
	keys := e.env.SendC2C(t, "alice", "bob", 3)
	e.env.Emu.SetFaults(emulator.Faults{Codes: map[int]float64{91000: 0.2}})

	logDir := t.TempDir()
	var outputs []string

	// First a worker with a wrong key: its calls fail auth (70003) and the
	// job is paused (an app-wide error dead-letters nothing); the worker is
	// stopped before the good one starts, and the job resumed.
	bad := e.workerLogged(filepath.Join(logDir, "bad.log"), []string{"IMRECALL_SECRET_KEY=wrong-key"}, "--log-level", "debug", "--max-attempts", "2")
	out, err := e.run("recall", "c2c", "--from", "alice", "--to", "bob", "--msgkey", keys[1], "--json")
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, out)
	badJob := jobID(t, out)
	if j := e.waitFor("the wrong key's job paused", time.Minute, func(j jobs.Job) bool { return j.Paused }, badJob); j.Counts.DeadLettered != 0 ||
		!strings.Contains(j.PauseReason, "70003") {
		t.Fatalf("the wrong key's job = %+v", j)
	}
	_ = bad.Process.Signal(syscall.SIGTERM)
	_ = bad.Wait()

	e.workerLogged(filepath.Join(logDir, "good.log"), nil, "--log-level", "debug")
	if out, err := e.run("jobs", "resume", badJob); err != nil {
		t.Fatal(err)
	} else {
		outputs = append(outputs, out)
	}
	if j := e.waitDone(badJob, time.Minute); j.Counts.Recalled != 1 {
		t.Fatalf("the wrong key's job after the fix = %+v", j.Counts)
	}
	out, err = e.run("recall", "group", "--group", g, "--seqs", "1,2,3,4,5,6,7,8,9,10,11,12,99", "--json")
	if err != nil {
		t.Fatal(err)
	}
	id := jobID(t, out)
	outputs = append(outputs, out)
	out, err = e.run("recall", "c2c", "--from", "alice", "--to", "bob", "--msgkey", keys[0], "--json")
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, out)
	e.waitDone(id, time.Minute)
	e.waitDone(jobID(t, out), time.Minute)
	for _, args := range [][]string{{"jobs", "report", id}, {"jobs", "report", id, "--json"}, {"jobs", "show", id, "--json"},
		{"dlq", "export", id}, {"dlq", "export", id, "--format", "csv"}, {"jobs", "audit"}} {
		o, err := e.run(args...)
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, o)
	}
	time.Sleep(500 * time.Millisecond)                  // let the workers flush their last log lines
	for _, f := range []string{"good.log", "bad.log"} { // bad.log last
		b, err := os.ReadFile(filepath.Join(logDir, f))
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, string(b))
	}
	if bad := outputs[len(outputs)-1]; !strings.Contains(bad, "70003") {
		t.Errorf("the worker with a wrong key logged no auth failure (70003); the check saw nothing:\n%.2000s", bad)
	}
	sigs := e.env.SeenSigs()
	if len(sigs) == 0 {
		t.Fatal("the emulator saw no UserSig")
	}
	secrets := append([]string{imtest.Secret, "wrong-key"}, sigs...)
	for i, o := range outputs {
		for _, s := range secrets {
			if strings.Contains(o, s) {
				t.Errorf("output %d contains a secret (%.12s…)", i, s)
			}
		}
		if strings.Contains(o, "usersig=e") { // a UserSig is base64 of zlib: it starts with "e"
			t.Errorf("output %d shows a usersig query parameter", i)
		}
	}
}

func jobID(t *testing.T, out string) string {
	t.Helper()
	i := strings.Index(out, `"job_id": "`)
	if i < 0 {
		t.Fatalf("no job_id in %q", out)
	}
	rest := out[i+len(`"job_id": "`):]
	return rest[:strings.Index(rest, `"`)]
}
