package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/msgindex"
)

// TestIndexSettleRefusedWithItsName: a negative or unparsable
// --index-settle (or IMRECALL_INDEX_SETTLE) is bad input on every command
// that has it, naming the flag (and its variable) and the value, before
// anything reaches Redis; a schedule's command line refuses the flag (a
// setting of the process that fires it, not of the job).
func TestIndexSettleRefusedWithItsName(t *testing.T) {
	mr, _ := redistest.Mini(t)
	r := "--redis=redis://" + mr.Addr() + "/0"
	app := "--sdkappid=1400000001"
	for _, c := range []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"purge user negative", []string{"purge", "user", "--user", "u", "--source", "index", "--index-settle", "-1s", "--dry-run", r, app}, "", "--index-settle (IMRECALL_INDEX_SETTLE) -1s: must not be negative"},
		{"purge user unparsable", []string{"purge", "user", "--user", "u", "--index-settle", "soon", "--dry-run", r, app}, "", `invalid argument "soon" for "--index-settle" flag`},
		{"purge user negative from the environment", []string{"purge", "user", "--user", "u", "--dry-run", r, app}, "-5s", "--index-settle (IMRECALL_INDEX_SETTLE) -5s: must not be negative"},
		{"purge user unparsable from the environment", []string{"purge", "user", "--user", "u", "--dry-run", r, app}, "10", `IMRECALL_INDEX_SETTLE="10": time: missing unit`},
		{"worker negative", []string{"worker", "--index-settle", "-2m", "--secret-key", "k", r, app}, "", "--index-settle (IMRECALL_INDEX_SETTLE) -2m0s: must not be negative"},
		{"serve negative", []string{"serve", "--index-settle", "-1ms", "--api-tokens", "ops:admin:" + e2eAPIToken, "--insecure-callbacks", r, app}, "", "--index-settle (IMRECALL_INDEX_SETTLE) -1ms: must not be negative"},
		{"schedule add", []string{"schedule", "add", "--name", "n", "--cron", "@daily", "--reason", "x", r, "--", "purge", "user", "--user", "u", "--index-settle", "5s"}, "", "--index-settle: not part of a scheduled job"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv("IMRECALL_INDEX_SETTLE", c.env)
			}
			if _, e, code := runCLI(t, c.args...); code != cli.ExitBadInput || !strings.Contains(e, c.want) {
				t.Errorf("exit %d %q, want %d and %q", code, e, cli.ExitBadInput, c.want)
			}
		})
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Fatalf("a refused --index-settle wrote to Redis: %v", keys)
	}
}

// TestIndexSettleSetsThePurgesWait: --index-settle reaches the purge's
// Config, observed by what its plan waits for. A message is sent before
// `purge user --source index` starts, and its entry reaches the index only
// once the purge has read the index and created its job (its callback was
// in flight: the test writes the entry as serve's receiver would). With
// --index-settle 0 the purge reads the index once and its job holds only
// the message indexed before; with 5s its plan is still open when the
// entry is written, and plans it. And a purge at 5s runs more than twice as
// long as one at 1s (a ratio: the plan's own work is the same). Without
// --yes the purge reads the index before it creates its job (to count what
// it would ask to confirm).
func TestIndexSettleSetsThePurgesWait(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200})
	idx := msgindex.New(e.redis.Client(), "", 0)
	e.env.Accounts(t, "u", "w", "x", "v")
	g := e.env.Group(t, "Public", "@TGS#settle", "u", "w", "x", "v")
	took := map[string]time.Duration{}
	for i, c := range []struct {
		user, settle string
		planned      int64 // 0: not checked
	}{{"u", "0", 1}, {"w", "1s", 0}, {"x", "5s", 2}} {
		seqs := e.env.SendGroup(t, g, "", 2, c.user)
		if err := idx.Add(t.Context(), imtest.AppID, msgindex.Entry{From: c.user, Time: time.Now(), GroupID: g, MsgSeq: seqs[0]}); err != nil {
			t.Fatal(err)
		}
		late := msgindex.Entry{From: c.user, Time: time.Now(), GroupID: g, MsgSeq: seqs[1]}
		cmd := imrecallCommand(t.Context(), e.bin, "purge", "user", "--user", c.user, "--source", "index",
			"--index-settle", c.settle, "--json", "--reason", "settle "+c.settle)
		cmd.Env = e.environ()
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		began := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
			if list, err := e.store.List(t.Context(), 10); err == nil && len(list) == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("--index-settle %s: no job within a minute\n%s", c.settle, errb.String())
			}
		}
		if err := idx.Add(t.Context(), imtest.AppID, late); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("purge --index-settle %s: %v\n%s", c.settle, err, errb.String())
		}
		took[c.settle] = time.Since(began)
		t.Logf("--index-settle %s: the purge ran %v", c.settle, took[c.settle].Round(10*time.Millisecond))
		j, err := e.store.Get(t.Context(), jobIDOf(t, out.String()))
		if err != nil {
			t.Fatal(err)
		}
		if c.planned != 0 && j.Counts.Planned != c.planned {
			t.Errorf("--index-settle %s: the job planned %d of the user's messages, want %d (the second indexed once the job existed)", c.settle, j.Counts.Planned, c.planned)
		}
	}
	if took["5s"] < 2*took["1s"] {
		t.Errorf("the purge ran %v at --index-settle 1s and %v at 5s: want the wait to follow the flag", took["1s"], took["5s"])
	}
}
