package main

import (
	"errors"
	"strings"
	"time"

	"github.com/imrecall/imrecall/internal/bench"
	"github.com/imrecall/imrecall/tim"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The bench subcommands only wire: flags → a bench Config → its Run
// (internal/bench holds the harnesses; docs/BENCHMARKS.md their figures).

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks against the emulator (see docs/BENCHMARKS.md)",
	}
	cmd.AddCommand(newBenchLimiterCmd(), newBenchLimiterChildCmd(), newBenchE2ECmd(), newBenchScaleCmd())
	return cmd
}

// waitReady is bench.WaitReady: the serve end-to-end tests wait with it too.
var waitReady = bench.WaitReady

// benchErr turns a harness's ConfigError into a usage error (exit code 2).
func benchErr(err error) error {
	var ce bench.ConfigError
	if errors.As(err, &ce) {
		return usageError{err}
	}
	return err
}

// intList parses a flag of comma-separated whole numbers.
func intList(flag, s string) ([]int, error) {
	ns, err := parseInt64List(flag, s)
	out := make([]int, len(ns))
	for i, n := range ns {
		out[i] = int(n)
	}
	return out, err
}

func newBenchLimiterCmd() *cobra.Command {
	var o benchLimiterOptions
	cmd := &cobra.Command{
		Use:   "limiter",
		Short: "Measure how close P worker processes get to the cap, with imrecall's limiter and two others",
		Long: `Starts the emulator in this process (strict cap per API, latency 20–80 ms) and, unless --redis is
given, a private redis-server on a free port; then for each mode and each P runs P child processes
of G goroutines each calling the API through the IM client for --duration, and prints accepted
calls/s, efficiency (accepted/s ÷ cap), the emulator's max_1s and throttled calls, and (imrecall
mode) the slots the limiters gave up as late, all APIs of the run together.
Modes: imrecall (this project's Redis limiter), xrate (golang.org/x/time/rate at the cap in each
process), redis_rate (go-redis/redis_rate PerSecond(cap), sleeping RetryAfter).
In imrecall mode each call takes the worker's send path: the client's Await reserves the slot, one
Redis write stands for the send's record (the worker's BeginGroup), then the call waits out the slot.
--redis-latency D puts a proxy (internal/redisproxy) between every child process and Redis that
delays each direction by D, as a Redis a round trip of 2·D away would.`,
		Example: `  imrecall bench limiter                       # P = 1,2,4; 20 s each; all modes
  imrecall bench limiter --modes imrecall --apis group_msg_recall,admin_msgwithdraw --procs 2
  imrecall bench limiter --modes imrecall --procs 1 --redis-latency 10ms   # Redis 20 ms round trip`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBenchLimiter(cmd, &o) },
	}
	fl := cmd.Flags()
	fl.StringVar(&o.redisURL, "redis", "", "Redis URL (default: a private redis-server on a free port)")
	fl.StringVar(&o.procs, "procs", "1,2,4", "worker process counts to measure")
	fl.IntVar(&o.goroutines, "goroutines", 32, "goroutines per process")
	fl.DurationVar(&o.duration, "duration", 20*time.Second, "how long each run lasts")
	fl.StringVar(&o.modes, "modes", strings.Join(bench.Modes, ","), "limiters to compare")
	fl.StringVar(&o.apis, "apis", "group_msg_recall", "APIs called at once, each with its own cap: group_msg_recall, admin_msgwithdraw")
	fl.StringVar(&o.latency, "latency", "20ms-80ms", "emulator latency")
	fl.IntVar(&o.cap, "cap", 200, "the emulator's cap per API")
	fl.DurationVar(&o.redisDelay, "redis-latency", 0, "one-way delay added each way between every child process and Redis (a proxy)")
	return cmd
}

func runBenchLimiter(cmd *cobra.Command, o *benchLimiterOptions) error {
	cfg := bench.LimiterConfig{Redis: o.redisURL, Goroutines: o.goroutines, Duration: o.duration,
		Modes: strings.Split(o.modes, ","), APIs: strings.Split(o.apis, ","), RedisDelay: o.redisDelay, Cap: o.cap}
	var err error
	if cfg.Procs, err = intList("procs", o.procs); err != nil {
		return err
	}
	if cfg.LatencyMin, cfg.LatencyMax, err = parseLatency(o.latency); err != nil {
		return err
	}
	return benchErr(bench.RunLimiter(cmd.Context(), cfg, cmd.OutOrStdout()))
}

func newBenchLimiterChildCmd() *cobra.Command {
	var o benchChildOptions
	cmd := &cobra.Command{
		Use:    "limiter-child",
		Short:  "One process of bench limiter (started by it)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchErr(bench.RunLimiterChild(cmd.Context(), bench.ChildConfig{
				Mode: o.mode, Redis: o.redisURL, APIBase: o.apiBase, Prefix: o.prefix, APIs: strings.Split(o.apis, ","),
				Groups: strings.Split(o.groups, ","), Goroutines: o.goroutines, Cap: o.cap, Duration: o.duration,
			}, cmd.OutOrStdout()))
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.mode, "mode", "imrecall", "")
	fl.StringVar(&o.redisURL, "redis", "", "")
	fl.StringVar(&o.apiBase, "api-base", "", "")
	fl.StringVar(&o.apis, "apis", "group_msg_recall", "")
	fl.StringVar(&o.prefix, "prefix", "bench", "")
	fl.StringVar(&o.groups, "groups", "", "")
	fl.IntVar(&o.goroutines, "goroutines", 32, "")
	fl.IntVar(&o.cap, "cap", 200, "")
	fl.DurationVar(&o.duration, "duration", 20*time.Second, "")
	return cmd
}

func newBenchE2ECmd() *cobra.Command {
	var o benchE2EOptions
	cmd := &cobra.Command{
		Use:   "e2e",
		Short: "End to end: W worker processes purge a spammer through the CLI, against the emulator's cap",
		Long: `Runs the production path end to end on one machine and measures it against the physical floor.

For each run it starts a private redis-server on a free port (or uses --redis, which must be a Redis
dedicated to the bench: asynq's queues are not prefixed), the IM emulator in this process over HTTP
(strict cap per API, --latency), seeded with a spammer who sent --group-messages messages over
--groups groups and --c2c-messages one-to-one messages to --peers peers; then W worker processes
(this binary, "imrecall worker") and "imrecall purge user --user SPAMMER --peers ... --yes" (this
binary again), and waits for the job to finish. It then checks against the emulator that none of
the spammer's messages remain, stops the workers, and reports per run:

  - calls/s per API against the cap: end to end (the emulator's accepted calls ÷ the wall time),
    while busy (÷ the seconds in which it accepted any) and steady (the busy seconds without the
    first and the last); the most it accepted in any sliding second (max_1s); the calls it throttled;
  - seqs per group call: group messages recalled ÷ group_msg_recall calls (10 at best);
  - wall time (purge command started → job finished) against the floor: group messages ÷ 10 ÷ cap,
    one-to-one messages ÷ cap, the larger of the two (the APIs run in parallel); floor/wall is the
    share of the cap the whole pipeline achieved, discovery included;
  - worker CPU (user+sys of all worker processes) per 1,000 API calls, and Redis CPU likewise;
  - Redis memory: INFO used_memory right after planning closed, minus the baseline, ÷ the messages
    planned by then; what the job record keeps per message after the job; the peak;
  - the peak RSS (VmHWM) of the purge command (the producer, run with --wait) and of each worker;
  - with --verify, "imrecall verify JOB --json" (this binary) after the job: its time, history calls
    (and per planned message: at most 1 per 20 is the aim), the calls per API and per second against
    the cap, and what it found (verified, gone, still visible, residue).

--via index starts "imrecall serve", has the emulator post the after-send callback of every message
it holds to it (before the clock starts: the index is kept as messages are sent), and purges with
"purge user --source index": no history scan; the producer plans the messages of the index whose
sender the history confirms (one history call per page of 20 seqs, one read per one-to-one peer).
--via file makes the same job with "imrecall recall file" of a list of the spammer's messages in time
order (taken from the emulator, as a callback log would hold them).

--scale SIZES instead runs "imrecall purge group --group ... --sender SPAMMER" for group purges of each
size, and prints time and memory per size: producer and worker peak RSS stay flat while time and
Redis memory grow with the messages.

--redis-latency D puts a proxy (internal/redisproxy) between every child process (workers, the purge
command, serve) and Redis that delays each direction by D, as a Redis a round trip of 2·D away would;
the bench's own reads of Redis (progress, memory) go direct. Workers need more --concurrency as the
round trip grows (docs/REDIS.md).

Child processes get SIGTERM when the bench ends or is interrupted (Ctrl-C), SIGKILL if they linger.
Linux: peak RSS and this process's CPU are read from /proc.`,
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
		RunE: func(cmd *cobra.Command, _ []string) error { return runBenchE2E(cmd, &o) },
	}
	o.register(cmd.Flags())
	return cmd
}

func runBenchE2E(cmd *cobra.Command, o *benchE2EOptions) error {
	cfg := bench.E2EConfig{Redis: o.redisURL, GroupMessages: o.groupMsgs, C2CMessages: o.c2cMsgs, Groups: o.groups, Peers: o.peers,
		Share: o.share, Via: o.via, Concurrency: o.concurrency, WorkerArgs: o.workerArgs, RedisDelay: o.redisDelay, Cap: o.cap,
		Seed: o.seed, Timeout: o.timeout, LogDir: o.logDir, JSON: o.asJSON, JSONFile: o.jsonFile, Verify: o.verify}
	var err error
	if cfg.Workers, err = intList("workers", o.workers); err != nil {
		return err
	}
	if cfg.Scale, err = intList("scale", o.scale); err != nil {
		return err
	}
	if cfg.LatencyMin, cfg.LatencyMax, err = parseLatency(o.latency); err != nil {
		return err
	}
	return benchErr(bench.RunE2E(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr()))
}

func newBenchScaleCmd() *cobra.Command {
	var (
		cfg            bench.ScaleConfig
		sizes, latency string
	)
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Scale (issue 17): list files of 10^5 to 10^7 messages end to end at a raised cap; Redis bytes per message, peak RSS",
		Long: `For each size, recalls a list file of that many group messages end to end ("imrecall recall file", this
binary, and --workers worker processes) against the emulator in this process, with a fresh private
redis-server (or --redis, dedicated to the bench). The emulator's cap and the workers' limiter cap
are both --cap calls/s per API, an explicit number (a raised cap makes 10^7 messages a matter of
minutes; Redis bytes per message do not depend on it). Per size it prints:

  - Redis used_memory at its peak (sampled every 200 ms) above the baseline, per message;
  - Redis bytes per message at rest once the job is done: used_memory above the baseline, and
    MEMORY USAGE of the job's keys (the job record);
  - the peak RSS (VmHWM) of the producer (recall file --wait) and of the largest worker;
  - the wall time against the floor (messages ÷ 10 ÷ cap), and the calls the emulator throttled.

It is "bench e2e --via file --scale SIZES" with a table of these figures.`,
		Example: `  imrecall bench scale                                   # 10^5 and 10^6 messages, 2 workers, cap 5000
  imrecall bench scale --sizes 100000,1000000,10000000 --json-file scale.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Sizes, err = intList("sizes", sizes); err != nil {
				return err
			}
			if cfg.LatencyMin, cfg.LatencyMax, err = parseLatency(latency); err != nil {
				return err
			}
			return benchErr(bench.RunScale(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr()))
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

// The flags of the bench subcommands, as given.
type benchLimiterOptions struct {
	redisURL   string
	procs      string
	goroutines int
	duration   time.Duration
	modes      string
	apis       string
	latency    string
	redisDelay time.Duration
	cap        int
}

type benchChildOptions struct {
	mode, redisURL, apiBase, apis, prefix, groups string
	goroutines, cap                               int
	duration                                      time.Duration
}

// benchE2EOptions are the flags of `imrecall bench e2e`.
type benchE2EOptions struct {
	redisURL    string
	workers     string
	groupMsgs   int
	c2cMsgs     int
	groups      int
	peers       int
	share       float64
	scale       string
	via         string
	concurrency int
	workerArgs  string
	latency     string
	redisDelay  time.Duration
	cap         int
	seed        int64
	timeout     time.Duration
	logDir      string
	asJSON      bool
	jsonFile    string
	verify      bool
}

// register declares the flags of bench e2e.
func (o *benchE2EOptions) register(fl *pflag.FlagSet) {
	fl.StringVar(&o.redisURL, "redis", "", "Redis URL, dedicated to the bench (default: a fresh private redis-server per run)")
	fl.StringVar(&o.workers, "workers", "1,4", "worker process counts to measure")
	fl.IntVar(&o.groupMsgs, "group-messages", 100000, "the spammer's group messages")
	fl.IntVar(&o.c2cMsgs, "c2c-messages", 5000, "the spammer's one-to-one messages (about: the generator draws them)")
	fl.IntVar(&o.groups, "groups", 200, "groups the spammer posts in (every type; AVChatRoom keeps no history, Community has topics)")
	fl.IntVar(&o.peers, "peers", 25, "one-to-one peers of the spammer")
	fl.Float64Var(&o.share, "share", 1, "the spammer's share of the messages of their groups (discovery reads the others too)")
	fl.StringVar(&o.via, "via", "purge", "how the job is made: purge (--source scan: history discovery by the workers), index (purge user --source index, from imrecall serve's callback index) or file (recall file of the same messages)")
	fl.StringVar(&o.scale, "scale", "", "instead: group purges of these sizes, e.g. 10000,100000,1000000")
	fl.IntVar(&o.concurrency, "concurrency", 64, "--concurrency of each worker")
	fl.StringVar(&o.workerArgs, "worker-args", "", "more flags for each worker, space-separated (e.g. \"--margin 0.01\")")
	fl.StringVar(&o.latency, "latency", "20ms-60ms", "emulator latency, uniform in the range")
	fl.IntVar(&o.cap, "cap", tim.DefaultRateLimit, "the emulator's cap per API (the workers are told the same)")
	fl.DurationVar(&o.redisDelay, "redis-latency", 0, "one-way delay added each way between every child process and Redis (a proxy)")
	fl.Int64Var(&o.seed, "seed", 1, "seed of the synthetic data")
	fl.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give a run up after this long")
	fl.StringVar(&o.logDir, "log-dir", "", "keep the workers' and the purge command's logs here (default: a temporary directory, removed unless a run fails)")
	fl.BoolVar(&o.asJSON, "json", false, "print the results as JSON on standard output")
	fl.StringVar(&o.jsonFile, "json-file", "", "also write the results as JSON to this file")
	fl.BoolVar(&o.verify, "verify", false, "after the job, run and time \"imrecall verify JOB --json\" (history calls, calls/s against the cap)")
}
