package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/imrecall/imrecall/tim"
)

// ScaleConfig is one invocation of "imrecall bench scale" (make
// bench-scale, issue 17): list files of each size recalled end to end
// ("imrecall recall file") by Workers worker processes, with the emulator
// and the workers' limiter both at Cap calls/s per API. Redis bytes per
// message do not depend on the cap; a raised cap makes 10^7 messages a
// matter of minutes.
type ScaleConfig struct {
	// Redis is a Redis URL dedicated to the bench; empty: a fresh private
	// redis-server per size (so each baseline and peak is its own).
	Redis string
	// Sizes are the list files' sizes, in messages.
	Sizes []int
	// Workers is the worker process count; Concurrency each one's
	// --concurrency; WorkerArgs more flags for each, space-separated.
	Workers     int
	Concurrency int
	WorkerArgs  string
	// Cap is the emulator's cap per API and the workers' --cap: an explicit
	// number of calls/s, never unlimited.
	Cap int
	// LatencyMin and LatencyMax bound the emulator's latency.
	LatencyMin, LatencyMax time.Duration
	// Seed seeds the synthetic data; Timeout gives one size up.
	Seed    int64
	Timeout time.Duration
	// LogDir, JSON and JSONFile are as in E2EConfig.
	LogDir   string
	JSON     bool
	JSONFile string
}

// e2e is the end-to-end configuration that measures c.
func (c ScaleConfig) e2e() E2EConfig {
	return E2EConfig{
		Redis: c.Redis, Workers: []int{c.Workers}, Scale: c.Sizes, Via: "file",
		Groups: 200, Peers: 5, Share: 1, Concurrency: c.Concurrency, WorkerArgs: c.WorkerArgs,
		LatencyMin: c.LatencyMin, LatencyMax: c.LatencyMax, Cap: c.Cap, Seed: c.Seed, Timeout: c.Timeout,
		LogDir: c.LogDir, JSON: c.JSON, JSONFile: c.JSONFile,
	}
}

// Validate checks the configuration; its errors are ConfigErrors naming
// the flag.
func (c ScaleConfig) Validate() error {
	if len(c.Sizes) == 0 {
		return configError("--sizes: at least one size")
	}
	e := c.e2e()
	if err := e.Validate(); err != nil {
		return err
	}
	return nil
}

// RunScale runs one list-file job per size and prints, per size, what
// issue 17 sizes Redis and the processes by: Redis used_memory at its peak
// above the baseline per message, Redis bytes per message at rest once the
// job is done (used_memory, and MEMORY USAGE of the job's keys), the
// producer's and the workers' peak RSS (VmHWM), the wall time and the
// throttled calls.
func RunScale(ctx context.Context, c ScaleConfig, out, errOut io.Writer) error {
	if err := c.Validate(); err != nil {
		return err
	}
	o := c.e2e()
	results, err := runE2E(ctx, &o, errOut)
	if err != nil {
		return err
	}
	if err := writeResults(&o, out, results); err != nil || o.JSON {
		return err
	}
	m := machineInfo()
	fmt.Fprintf(out, "\nmachine: %s, %v CPUs, %s/%s; emulator and limiter cap %d calls/s per API, latency %s; %d workers, --concurrency %d %s\n\n",
		m["cpu"], m["cpus"], runtime.GOOS, runtime.GOARCH, c.Cap, o.latency(), c.Workers, c.Concurrency, c.WorkerArgs)
	printListScaleTable(out, results)
	return nil
}

// printListScaleTable prints the figures of RunScale, a row per size.
func printListScaleTable(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| messages | workers | cap | wall s | floor s | floor/wall | group_msg_recall end to end (of cap) | throttled | Redis peak Δ B/msg | Redis at rest B/msg | job record B/msg | producer peak RSS MiB | worker peak RSS MiB |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		g := r.APIs[tim.GroupMsgRecall.Name()]
		fmt.Fprintf(w, "| %d | %d | %d | %.1f | %.1f | %.3f | %.1f (%.3f) | %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
			r.Planned, r.Workers, r.Cap, r.WallSeconds, r.FloorSeconds, r.FloorOverWall, g.EndToEnd, g.EndToEndOfCap, r.Throttled,
			r.RedisPeakPerMessage, r.RedisJobPerMessage, r.JobRecordPerMessage, mib(r.Producer.PeakRSS), mib(r.WorkerPeakRSS))
	}
}
