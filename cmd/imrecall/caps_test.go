package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/limiter"
)

// TestWorkerCaps: a cap of 0 is refused (--cap and --cap-of), unlimited is
// spelled out; a slack out of range is refused by flag and environment; a
// worker whose cap differs from the one stored with the shared budget refuses
// to start, naming the API and both values; with --reset-cap it stores its own
// and starts.
func TestWorkerCaps(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("IMRECALL_SECRET_KEY", string(imtest.Secret))
	base := []string{"worker", "--redis", srv.URL(), "--sdkappid", "1400000001", "--admin", "administrator", "--api-base", "http://127.0.0.1:1"}
	run := func(timeout time.Duration, args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		cmd := newRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append(append([]string{}, base...), args...))
		err := cmd.ExecuteContext(ctx)
		if err != nil {
			out.WriteString(err.Error())
		}
		return out.String(), cli.ExitCode(err, io.Discard)
	}
	for _, args := range [][]string{{"--cap", "0"}, {"--cap-of", "group_msg_recall=0"}, {"--cap-of", "group_msg_recall=-1"}, {"--cap", "many"}} {
		out, code := run(5*time.Second, args...)
		if code == cli.ExitOK || !strings.Contains(out, "unlimited") || strings.Contains(out, "worker starting") {
			t.Errorf("worker %v: exit %d, want a refusal offering unlimited:\n%s", args, code, out)
		}
	}

	// The slack: above 0 to 500ms, by flag or environment, refused naming both.
	for _, args := range [][]string{{"--slack", "0"}, {"--slack", "-1ms"}, {"--slack", "501ms"}} {
		out, code := run(5*time.Second, args...)
		if code != cli.ExitBadInput || !strings.Contains(out, "--slack (IMRECALL_SLACK) "+strings.TrimPrefix(args[1], "0")) || strings.Contains(out, "worker starting") {
			t.Errorf("worker %v: exit %d, want %d naming --slack and its value:\n%s", args, code, cli.ExitBadInput, out)
		}
	}
	t.Setenv("IMRECALL_SLACK", "2s")
	if out, code := run(5 * time.Second); code != cli.ExitBadInput || !strings.Contains(out, "--slack (IMRECALL_SLACK) 2s") {
		t.Errorf("worker with IMRECALL_SLACK=2s: exit %d, want %d naming it:\n%s", code, cli.ExitBadInput, out)
	}
	t.Setenv("IMRECALL_SLACK", "soon")
	if out, code := run(5 * time.Second); code != cli.ExitBadInput || !strings.Contains(out, "IMRECALL_SLACK") {
		t.Errorf("worker with IMRECALL_SLACK=soon: exit %d, want %d naming it:\n%s", code, cli.ExitBadInput, out)
	}
	t.Setenv("IMRECALL_SLACK", "")
	os.Unsetenv("IMRECALL_SLACK")

	ctx := t.Context()
	k := limiter.Key{AppID: 1400000001, API: "admin_msgwithdraw"}
	if _, err := limiter.SetCap(ctx, srv.Client(), "imrecall:rl", k, 100); err != nil {
		t.Fatal(err)
	}
	out, code := run(5*time.Second, "--cap-of", "admin_msgwithdraw=unlimited")
	if code != cli.ExitBadInput {
		t.Fatalf("worker with another cap than the stored one: exit %d, want %d\n%s", code, cli.ExitBadInput, out)
	}
	for _, want := range []string{"admin_msgwithdraw", "unlimited", "100", "--reset-cap"} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal lacks %q:\n%s", want, out)
		}
	}
	// The same worker with --reset-cap stores its caps and starts (it runs
	// until the context ends).
	out, code = run(3*time.Second, "--cap-of", "admin_msgwithdraw=unlimited", "--reset-cap")
	if strings.Contains(out, "shared budget in Redis is stored with cap") {
		t.Fatalf("worker --reset-cap refused (exit %d):\n%s", code, out)
	}
	if v, _ := limiter.StoredCap(ctx, srv.Client(), "imrecall:rl", k); v != "unlimited" {
		t.Fatalf("stored cap after --reset-cap = %q, want unlimited", v)
	}
	if v, _ := limiter.StoredCap(ctx, srv.Client(), "imrecall:rl", limiter.Key{AppID: k.AppID, API: "group_msg_recall"}); v != "200" {
		t.Fatalf("stored cap of group_msg_recall = %q, want the default 200", v)
	}
}
