package main

import (
	"errors"
	"strings"
	"time"

	"github.com/imrecall/imrecall/internal/bench"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/tim"
	"github.com/spf13/cobra"
)

// The bench subcommands only wire: flags → a bench Config → its Run
// (internal/bench holds the harnesses and their help; docs/BENCHMARKS.md
// their figures).

func newBenchCmd() *cobra.Command {
	return cli.Group("bench", "Benchmarks against the emulator (see docs/BENCHMARKS.md)", "",
		newBenchLimiterCmd(), newBenchLimiterChildCmd(), newBenchE2ECmd(), newBenchScaleCmd())
}

// waitReady is bench.WaitReady: the serve end-to-end tests wait with it too.
var waitReady = bench.WaitReady

// benchRun parses the flags of comma-separated whole numbers (lists: flag
// name → its value and its field) and --latency, then runs the harness;
// a harness's ConfigError exits 2. lo nil: no --latency.
func benchRun(lists map[string]intList, latency string, lo, hi *time.Duration, run func() error) error {
	for flag, l := range lists {
		ns, err := cli.ParseInt64List(flag, *l.s)
		if err != nil {
			return err
		}
		*l.dst = make([]int, len(ns))
		for i, n := range ns {
			(*l.dst)[i] = int(n)
		}
	}
	var err error
	if lo != nil {
		if *lo, *hi, err = parseLatency(latency); err != nil {
			return err
		}
	}
	var ce bench.ConfigError
	if err = run(); errors.As(err, &ce) {
		return cli.Usage(err)
	}
	return err
}

// intList is a flag of comma-separated whole numbers and the field it sets.
type intList struct {
	s   *string
	dst *[]int
}

func newBenchLimiterCmd() *cobra.Command {
	var cfg bench.LimiterConfig
	var procs, modes, apis, latency string
	cmd := &cobra.Command{
		Use:   "limiter",
		Short: "Measure how close P worker processes get to the cap, with imrecall's limiter and two others",
		Long:  bench.LimiterHelp,
		Example: `  imrecall bench limiter                       # P = 1,2,4; 20 s each; all modes
  imrecall bench limiter --modes imrecall --apis group_msg_recall,admin_msgwithdraw --procs 2
  imrecall bench limiter --modes imrecall --procs 1 --redis-latency 10ms   # Redis 20 ms round trip`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Modes, cfg.APIs = strings.Split(modes, ","), strings.Split(apis, ",")
			return benchRun(map[string]intList{"procs": {&procs, &cfg.Procs}}, latency, &cfg.LatencyMin, &cfg.LatencyMax,
				func() error { return bench.RunLimiter(cmd.Context(), cfg, cmd.OutOrStdout()) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Redis, "redis", "", "Redis URL (default: a private redis-server on a free port)")
	fl.StringVar(&procs, "procs", "1,2,4", "worker process counts to measure")
	fl.IntVar(&cfg.Goroutines, "goroutines", 32, "goroutines per process")
	fl.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long each run lasts")
	fl.StringVar(&modes, "modes", strings.Join(bench.Modes, ","), "limiters to compare")
	fl.StringVar(&apis, "apis", "group_msg_recall", "APIs called at once, each with its own cap: group_msg_recall, admin_msgwithdraw")
	fl.StringVar(&latency, "latency", "20ms-80ms", "emulator latency")
	fl.IntVar(&cfg.Cap, "cap", 200, "the emulator's cap per API")
	fl.DurationVar(&cfg.RedisDelay, "redis-latency", 0, "one-way delay added each way between every child process and Redis (a proxy)")
	return cmd
}

func newBenchLimiterChildCmd() *cobra.Command {
	var cfg bench.ChildConfig
	var apis, groups string
	cmd := &cobra.Command{
		Use:    "limiter-child",
		Short:  "One process of bench limiter (started by it)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.APIs, cfg.Groups = strings.Split(apis, ","), strings.Split(groups, ",")
			return benchRun(nil, "", nil, nil, func() error { return bench.RunLimiterChild(cmd.Context(), cfg, cmd.OutOrStdout()) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Mode, "mode", "imrecall", "")
	fl.StringVar(&cfg.Redis, "redis", "", "")
	fl.StringVar(&cfg.APIBase, "api-base", "", "")
	fl.StringVar(&apis, "apis", "group_msg_recall", "")
	fl.StringVar(&cfg.Prefix, "prefix", "bench", "")
	fl.StringVar(&groups, "groups", "", "")
	fl.IntVar(&cfg.Goroutines, "goroutines", 32, "")
	fl.IntVar(&cfg.Cap, "cap", 200, "")
	fl.DurationVar(&cfg.Duration, "duration", 20*time.Second, "")
	return cmd
}

func newBenchE2ECmd() *cobra.Command {
	var cfg bench.E2EConfig
	var workers, scale, latency string
	cmd := &cobra.Command{
		Use:   "e2e",
		Short: "End to end: W worker processes purge a spammer through the CLI, against the emulator's cap",
		Long:  bench.E2EHelp,
		Example: `  imrecall bench e2e                                  # 100,000 group + 5,000 one-to-one messages, 1 and 4 workers
  imrecall bench e2e --workers 4 --json > e2e.json
  imrecall bench e2e --scale 10000,100000,1000000 --workers 4
  imrecall bench e2e --group-messages 10000 --c2c-messages 500 --workers 2   # a quick check
  imrecall bench e2e --worker-args "--margin 0.01" --concurrency 256
  imrecall bench e2e --via index --workers 1,4       # purge user --source index: no history scan, senders confirmed
  imrecall bench e2e --via file --workers 4          # recall file of the same messages
  imrecall bench e2e --workers 1 --group-messages 30000 --redis-latency 10ms --concurrency 192
  imrecall bench e2e --workers 4 --verify            # then time imrecall verify of the job`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchRun(map[string]intList{"workers": {&workers, &cfg.Workers}, "scale": {&scale, &cfg.Scale}}, latency, &cfg.LatencyMin, &cfg.LatencyMax,
				func() error { return bench.RunE2E(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr()) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Redis, "redis", "", "Redis URL, dedicated to the bench (default: a fresh private redis-server per run)")
	fl.StringVar(&workers, "workers", "1,4", "worker process counts to measure")
	fl.IntVar(&cfg.GroupMessages, "group-messages", 100000, "the spammer's group messages")
	fl.IntVar(&cfg.C2CMessages, "c2c-messages", 5000, "the spammer's one-to-one messages (about: the generator draws them)")
	fl.IntVar(&cfg.Groups, "groups", 200, "groups the spammer posts in (every type; AVChatRoom keeps no history, Community has topics)")
	fl.IntVar(&cfg.Peers, "peers", 25, "one-to-one peers of the spammer")
	fl.Float64Var(&cfg.Share, "share", 1, "the spammer's share of the messages of their groups (discovery reads the others too)")
	fl.StringVar(&cfg.Via, "via", "purge", "how the job is made: purge (--source scan: history discovery by the workers), index (purge user --source index, from imrecall serve's callback index) or file (recall file of the same messages)")
	fl.StringVar(&scale, "scale", "", "instead: group purges of these sizes, e.g. 10000,100000,1000000")
	fl.IntVar(&cfg.Concurrency, "concurrency", 64, "--concurrency of each worker")
	fl.StringVar(&cfg.WorkerArgs, "worker-args", "", "more flags for each worker, space-separated (e.g. \"--margin 0.01\")")
	fl.IntVar(&cfg.Backlog, "backlog", -1, "the producer's --backlog (0: no bound); default 10 s of group calls at --cap")
	fl.StringVar(&latency, "latency", "20ms-60ms", "emulator latency, uniform in the range")
	fl.IntVar(&cfg.Cap, "cap", tim.DefaultRateLimit, "the emulator's cap per API (the workers are told the same)")
	fl.DurationVar(&cfg.RedisDelay, "redis-latency", 0, "one-way delay added each way between every child process and Redis (a proxy)")
	fl.Int64Var(&cfg.Seed, "seed", 1, "seed of the synthetic data")
	fl.DurationVar(&cfg.Timeout, "timeout", 30*time.Minute, "give a run up after this long")
	fl.StringVar(&cfg.LogDir, "log-dir", "", "keep the workers' and the purge command's logs here (default: a temporary directory, removed unless a run fails)")
	fl.BoolVar(&cfg.JSON, "json", false, "print the results as JSON on standard output")
	fl.StringVar(&cfg.JSONFile, "json-file", "", "also write the results as JSON to this file")
	fl.BoolVar(&cfg.Verify, "verify", false, "after the job, run and time \"imrecall verify JOB --json\" (history calls, calls/s against the cap)")
	return cmd
}

func newBenchScaleCmd() *cobra.Command {
	var (
		cfg            bench.ScaleConfig
		sizes, latency string
	)
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Scale (issue 17): list files of 10^5 to 10^7 messages end to end at a raised cap; Redis bytes per message, peak RSS",
		Long:  bench.ScaleHelp,
		Example: `  imrecall bench scale                                   # 10^5 and 10^6 messages, 2 workers, cap 5000
  imrecall bench scale --sizes 100000,1000000,10000000 --json-file scale.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchRun(map[string]intList{"sizes": {&sizes, &cfg.Sizes}}, latency, &cfg.LatencyMin, &cfg.LatencyMax,
				func() error { return bench.RunScale(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr()) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Redis, "redis", "", "Redis URL, dedicated to the bench (default: a fresh private redis-server per size)")
	fl.StringVar(&sizes, "sizes", "100000,1000000", "messages per list file, one run each")
	fl.IntVar(&cfg.Workers, "workers", 2, "worker processes")
	fl.IntVar(&cfg.Concurrency, "concurrency", 128, "--concurrency of each worker")
	fl.StringVar(&cfg.WorkerArgs, "worker-args", "", "more flags for each worker, space-separated")
	fl.IntVar(&cfg.Cap, "cap", 5000, "calls/s per API of the emulator and of the workers' limiter")
	fl.StringVar(&latency, "latency", "20ms-60ms", "emulator latency, uniform in the range")
	fl.Int64Var(&cfg.Seed, "seed", 1, "seed of the synthetic data")
	fl.DurationVar(&cfg.Timeout, "timeout", 2*time.Hour, "give a size up after this long")
	fl.StringVar(&cfg.LogDir, "log-dir", "", "keep the child processes' logs here (default: a temporary directory, removed unless a run fails)")
	fl.BoolVar(&cfg.JSON, "json", false, "print the results as JSON on standard output")
	fl.StringVar(&cfg.JSONFile, "json-file", "", "also write the results as JSON to this file")
	return cmd
}
