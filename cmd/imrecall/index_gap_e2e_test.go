package main

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/msgindex"
)

// TestServeOutageIsAnIndexGap is issue 14's "an outage of serve never
// reduces the coverage the index claims", with real processes: serve beats
// every 2 s; while it runs the index has no gap and `purge user --source
// auto` uses the index; serve is stopped for longer than two beats and
// started again, and then Coverage holds a gap (the receiver was not
// running) and `auto` scans, saying why.
func TestServeOutageIsAnIndexGap(t *testing.T) {
	e := newE2E(t, emulator.Config{Rate: 200})
	e.env.Accounts(t, "u", "v")
	g := e.env.Group(t, "Public", "@TGS#gap", "u", "v")
	seqs := e.env.SendGroup(t, g, "", 2, "u")
	ctx := t.Context()
	idx := msgindex.New(e.redis.Client(), "", 0)
	beat := []string{"--index-heartbeat", "2s", "--confirm-rate", "0"}

	// serve, run by hand so that it can be stopped mid-test.
	addr := freeAddr(t)
	first := imrecallCommand(context.Background(), e.bin, append([]string{"serve", "--listen", addr, "--log-level", "warn", "--index-retention", "30d"}, beat...)...)
	first.Env = append(e.environ(), "IMRECALL_API_TOKENS=ops:admin:"+e2eAPIToken, "IMRECALL_CALLBACK_TOKEN="+e2eCallbackToken)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = first.Process.Signal(syscall.SIGTERM)
			_ = first.Wait()
		}
	})
	if err := waitReady(ctx, addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// The index is fed (a callback's entry, as serve's receiver writes it).
	for _, s := range seqs {
		if err := idx.Add(ctx, imtest.AppID, msgindex.Entry{From: "u", Time: time.Now(), GroupID: g, MsgSeq: s}); err != nil {
			t.Fatal(err)
		}
	}
	cov, err := idx.Coverage(ctx, imtest.AppID)
	if err != nil {
		t.Fatal(err)
	}
	since := cov.Since.Add(time.Second).UTC().Format(time.RFC3339)
	purge := func() string {
		cmd := imrecallCommand(ctx, e.bin, "purge", "user", "--user", "u", "--source", "auto", "--since", since, "--peers", "v", "--dry-run")
		cmd.Env = e.environ()
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("purge --source auto: %v\n%s", err, out.String())
		}
		return out.String()
	}
	// Several beats while serve runs: no gap, and auto uses the index.
	time.Sleep(5 * time.Second)
	if out := purge(); strings.Contains(out, "scanning histories") {
		t.Fatalf("while serve runs, auto scanned:\n%s", out)
	}

	// serve down for more than two beats, then back.
	_ = first.Process.Signal(syscall.SIGTERM)
	_ = first.Wait()
	stopped = true
	time.Sleep(6 * time.Second)
	e.serveProc(freeAddr(t), beat...)

	// The restarted serve's first beat records the silence.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if cov, err = idx.Coverage(ctx, imtest.AppID); err != nil {
			t.Fatal(err)
		}
		if len(cov.Gaps) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(cov.Gaps) != 1 || !strings.Contains(cov.Gaps[0].Reason, "not running") || !cov.Gaps[0].To.After(cov.Gaps[0].From.Add(4*time.Second)) {
		t.Fatalf("coverage gaps %+v, want one gap of the outage", cov.Gaps)
	}
	out := purge()
	if !strings.Contains(out, "has a gap") || !strings.Contains(out, "scanning histories") {
		t.Fatalf("after the outage, auto did not scan or did not say why:\n%s", out)
	}
	t.Logf("gap %s → %s; auto: %s", cov.Gaps[0].From.Format(time.RFC3339), cov.Gaps[0].To.Format(time.RFC3339), strings.SplitN(out, "\n", 2)[0])
}
