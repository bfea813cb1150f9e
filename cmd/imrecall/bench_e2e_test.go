package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/imrecall/imrecall/internal/bench"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/tim"
)

// TestBenchE2E runs "imrecall bench e2e" small, each way it can make a job,
// and checks its report against the emulator's ground truth: every message
// of the spammer recalled, none left, none throttled, never more than the cap
// in any second, and calls of 10 seqs where the messages allow. Speed is not
// asserted here: docs/BENCHMARKS.md has the measured figures.
func TestBenchE2E(t *testing.T) {
	bin := imrecallBin(t)
	tests := []struct {
		name    string
		args    []string
		workers int
		noScan  bool // the job must read no history
		confirm bool // the job reads pages of history only to confirm senders (purge by index)
	}{
		{"purge user by scan, two workers, verified", []string{"--workers", "2", "--verify"}, 2, false, false},
		{"recall file", []string{"--via", "file"}, 1, true, false},
		{"purge user from the callback index", []string{"--via", "index"}, 1, false, true},
		{"scale: purge group", []string{"--scale", "2000"}, 1, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := redistest.Start(t)
			args := []string{"bench", "e2e", "--redis", rs.URL(), "--group-messages", "3000", "--c2c-messages", "300",
				"--groups", "20", "--peers", "5", "--workers", "1", "--json", "--timeout", "5m"}
			r := runBenchJSON(t, bin, append(args, tc.args...)...)
			total := int64(r.GroupMessages + r.C2CMessages)
			switch {
			case r.Status != "done" || r.Left != 0:
				t.Fatalf("job %s %s, %d of the spammer's messages left", r.JobID, r.Status, r.Left)
			case r.GroupMessages < 1000:
				t.Fatalf("only %d group messages in the synthetic app", r.GroupMessages)
			case r.Planned != total || r.Recalled != total || r.DeadLettered != 0:
				t.Fatalf("planned %d, recalled %d, dead-lettered %d; the emulator held %d of the spammer's messages",
					r.Planned, r.Recalled, r.DeadLettered, total)
			case len(r.WorkerProcs) != tc.workers || r.WorkerPeakRSS <= 0 || r.Producer.PeakRSS <= 0:
				t.Fatalf("worker processes %+v, producer %+v: want %d workers measured", r.WorkerProcs, r.Producer, tc.workers)
			case r.WallSeconds < r.FloorSeconds:
				t.Fatalf("wall %.2f s under the physical floor %.2f s", r.WallSeconds, r.FloorSeconds)
			}
			for api, a := range r.APIs {
				if a.Throttled != 0 || a.Max1s > int64(r.Cap) {
					t.Errorf("%s: %d throttled, %d calls in one second (cap %d)", api, a.Throttled, a.Max1s, r.Cap)
				}
			}
			group := r.APIs[tim.GroupMsgRecall.Name()]
			// Each history's last call may be short: at most one per target.
			if minCalls := (r.GroupMessages + 9) / 10; group.Accepted < int64(minCalls) || group.Accepted > int64(minCalls+r.Targets) {
				t.Errorf("%d group_msg_recall calls for %d messages in %d histories, want %d to %d",
					group.Accepted, r.GroupMessages, r.Targets, minCalls, minCalls+r.Targets)
			}
			if c2c := r.APIs[tim.AdminMsgWithdraw.Name()]; c2c.Accepted != int64(r.C2CMessages) {
				t.Errorf("%d admin_msgwithdraw calls for %d one-to-one messages", c2c.Accepted, r.C2CMessages)
			}
			scans := r.APIs[tim.GroupMsgGetSimple.Name()].Accepted + r.APIs[tim.AdminGetRoamMsg.Name()].Accepted
			if tc.noScan && scans != 0 {
				t.Errorf("%d history calls: this job must read no history", scans)
			}
			if !tc.noScan && scans == 0 {
				t.Error("no history calls: a purge by scan must read the histories")
			}
			// A purge by index confirms senders a page of 20 at a time (a
			// group page holds at least one of the user's messages), and
			// one read per one-to-one peer.
			if tc.confirm && scans > int64(r.GroupMessages+r.C2CMessages) {
				t.Errorf("%d history calls to confirm the senders of %d messages: not batched", scans, r.GroupMessages+r.C2CMessages)
			}
			if v := r.Verify; v != nil {
				// verify re-read every history through the limiter: its
				// history calls are the emulator's, never over the cap,
				// and every planned message is seen recalled.
				seen := v.APIs[tim.GroupMsgGetSimple.Name()].Accepted + v.APIs[tim.AdminGetRoamMsg.Name()].Accepted
				if v.ExitCode != 0 || !v.Passed || v.Planned != total || v.Verified != total || v.StillVisible != 0 || v.Residue != 0 || v.HistoryCalls != seen || seen == 0 {
					t.Errorf("verify: %+v (the emulator saw %d history calls), want every one of %d messages verified", *v, seen, total)
				}
				for api, a := range v.APIs {
					if a.Throttled != 0 || a.Max1s > int64(r.Cap) {
						t.Errorf("verify %s: %d throttled, %d calls in one second (cap %d)", api, a.Throttled, a.Max1s, r.Cap)
					}
				}
			} else if slices.Contains(tc.args, "--verify") {
				t.Error("bench e2e --verify reported no verification")
			}
			if tc.name == "purge user from the callback index" && r.IndexCallbacks == 0 {
				t.Error("no callbacks fed the index")
			}
		})
	}
}

// TestBenchScale runs "imrecall bench scale" small and checks that it
// measured what issue 17 sizes by: every message recalled at the raised cap
// with none throttled, Redis bytes per message at the peak and at rest, and
// the producer's and the workers' peak RSS.
func TestBenchScale(t *testing.T) {
	bin := imrecallBin(t)
	rs := redistest.Start(t)
	r := runBenchJSON(t, bin, "bench", "scale", "--redis", rs.URL(), "--sizes", "2000",
		"--cap", "5000", "--workers", "1", "--json", "--timeout", "5m")
	switch {
	case r.Mode != "recall file (group)" || r.Cap != 5000 || r.Workers != 1:
		t.Fatalf("mode %q, cap %d, %d workers: want a list file at cap 5000 with 1 worker", r.Mode, r.Cap, r.Workers)
	// The list file holds the group messages and the few one-to-one
	// messages the spammer sent the generator's peers.
	case r.Status != "done" || r.Left != 0 || r.Planned < int64(r.GroupMessages) || r.Recalled != r.Planned || r.DeadLettered != 0:
		t.Fatalf("job %s %s: planned %d, recalled %d, %d left of %d", r.JobID, r.Status, r.Planned, r.Recalled, r.Left, r.GroupMessages)
	case r.Throttled != 0:
		t.Fatalf("%d calls throttled at a cap the limiter shares with the emulator", r.Throttled)
	case r.RedisPeakPerMessage <= 0 || r.RedisJobPerMessage <= 0 || r.JobRecordPerMessage <= 0:
		t.Fatalf("Redis per message: peak %v, at rest %v, job record %v: want each measured", r.RedisPeakPerMessage, r.RedisJobPerMessage, r.JobRecordPerMessage)
	case r.RedisPeak < r.RedisAfterJob && r.RedisPeak < r.RedisAfterPlanning:
		t.Fatalf("Redis peak %d below what was sampled after planning (%d) and after the job (%d)", r.RedisPeak, r.RedisAfterPlanning, r.RedisAfterJob)
	case r.Producer.PeakRSS <= 0 || r.WorkerPeakRSS <= 0:
		t.Fatalf("producer peak RSS %d, worker %d: want both read from /proc", r.Producer.PeakRSS, r.WorkerPeakRSS)
	}
}

// runBenchJSON runs "imrecall ARGS" (a bench with --json and one run) and
// returns its run. Its producer's purge by index waits 1 s for the
// callbacks in flight, and its serve beats every 2 s, as in the other
// end-to-end tests (environ, serveCmd).
func runBenchJSON(t *testing.T, bin string, args ...string) bench.Result {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = append(os.Environ(), "IMRECALL_INDEX_SETTLE="+e2eIndexSettle, "IMRECALL_INDEX_HEARTBEAT=2s")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("imrecall %s: %v\n%s", strings.Join(args, " "), err, lastBytes(stderr.String(), 4000))
	}
	var doc struct {
		Runs []bench.Result `json:"runs"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("imrecall %s: %v\n%s", strings.Join(args, " "), err, stdout.String())
	}
	if len(doc.Runs) != 1 {
		t.Fatalf("%d runs, want 1", len(doc.Runs))
	}
	return doc.Runs[0]
}
