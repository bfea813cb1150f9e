package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

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
	fl := cmd.Flags()
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
	return cmd
}

// e2eAPI is what the emulator served on one API during a run.
type e2eAPI struct {
	Accepted  int64 `json:"accepted"`
	Throttled int64 `json:"throttled"`
	Max1s     int64 `json:"max_1s"`
	// ActiveSeconds counts the seconds with at least one accepted call.
	ActiveSeconds int `json:"active_seconds"`
	// FirstSecond and LastSecond are the first and last active second,
	// counted from the start of the purge command.
	FirstSecond int `json:"first_second"`
	LastSecond  int `json:"last_second"`
	// EndToEnd is Accepted ÷ the run's wall time (purge command started →
	// job finished), EndToEndOfCap that ÷ the cap: the API's use of the cap
	// over the whole job, waiting for discovery included.
	EndToEnd      float64 `json:"end_to_end_calls_per_second"`
	EndToEndOfCap float64 `json:"end_to_end_of_cap"`
	// PerSecond is Accepted ÷ ActiveSeconds; OfCap that ÷ the cap: the rate
	// while the API had work.
	PerSecond float64 `json:"calls_per_second"`
	OfCap     float64 `json:"of_cap"`
	// Steady is the mean of the seconds from the first to the last active
	// one, both left out (they are partial): the rate while the API is busy.
	Steady      float64 `json:"steady_calls_per_second"`
	SteadyOfCap float64 `json:"steady_of_cap"`
	// Series is the accepted calls in each second from the start of the
	// purge command.
	Series []int64 `json:"per_second"`
}

// steady formats the steady rate and its share of the cap, "–" when the
// API was busy for fewer than three seconds.
func (a e2eAPI) steady() string {
	if a.LastSecond-a.FirstSecond < 2 {
		return "–"
	}
	return fmt.Sprintf("%.1f (%.3f)", a.Steady, a.SteadyOfCap)
}

// e2eProc is one child process's resource use.
type e2eProc struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"` // user + system
	PeakRSS    int64   `json:"peak_rss_bytes"`
}

// e2eResult is one run of bench e2e.
type e2eResult struct {
	Mode        string `json:"mode"` // "purge user" or "purge group"
	Workers     int    `json:"workers"`
	Concurrency int    `json:"concurrency"`
	WorkerArgs  string `json:"worker_args,omitempty"`
	Cap         int    `json:"cap"`
	Groups      int    `json:"groups"`
	Targets     int    `json:"targets"` // group histories and topics holding the spammer's messages

	// Ground truth: the spammer's messages before the run, and those left after.
	GroupMessages int `json:"group_messages"`
	C2CMessages   int `json:"c2c_messages"`
	Left          int `json:"left"`

	JobID        string `json:"job_id"`
	Status       string `json:"status"`
	Planned      int64  `json:"planned"`
	Recalled     int64  `json:"recalled"`
	DeadLettered int64  `json:"dead_lettered"`

	WallSeconds     float64 `json:"wall_seconds"`
	FloorSeconds    float64 `json:"floor_seconds"`
	FloorOverWall   float64 `json:"floor_over_wall"`
	ProducerSeconds float64 `json:"producer_seconds"` // until the purge command printed the job id
	PlanningSeconds float64 `json:"planning_seconds"` // until discovery closed the job's planning

	APIs             map[string]e2eAPI `json:"apis"`
	Calls            int64             `json:"calls"` // accepted calls of every API
	SeqsPerGroupCall float64           `json:"seqs_per_group_call"`

	WorkerProcs          []e2eProc `json:"worker_processes"`
	WorkerCPUPer1000     float64   `json:"worker_cpu_seconds_per_1000_calls"`
	RedisCPUPer1000      float64   `json:"redis_cpu_seconds_per_1000_calls"`
	BenchCPUPer1000      float64   `json:"bench_cpu_seconds_per_1000_calls"` // this process: the emulator
	WorkerPeakRSS        int64     `json:"worker_peak_rss_bytes"`            // the largest of the workers'
	Producer             e2eProc   `json:"producer"`
	RedisBaseline        int64     `json:"redis_baseline_bytes"`
	RedisAfterPlanning   int64     `json:"redis_after_planning_bytes"`
	PlannedAtPlanningEnd int64     `json:"planned_at_planning_end"`
	PendingAtPlanningEnd int64     `json:"pending_at_planning_end"`
	RedisPeak            int64     `json:"redis_peak_bytes"` // the largest used_memory sampled (every 200 ms)
	RedisAfterJob        int64     `json:"redis_after_job_bytes"`
	RedisPerPlanned      float64   `json:"redis_bytes_per_message_after_planning"`
	RedisJobPerMessage   float64   `json:"redis_job_record_bytes_per_message"` // used_memory after the job − baseline, ÷ planned
	JobRecordBytes       int64     `json:"job_record_bytes"`                   // MEMORY USAGE of the job's keys after the job
	JobRecordPerMessage  float64   `json:"job_record_memory_usage_bytes_per_message"`
	RedisQueuePerQueued  float64   `json:"redis_queue_bytes_per_queued_message,omitempty"`
	// --via index: the callbacks replayed into imrecall serve before the
	// clock starts, how long they took, the index's Redis bytes per
	// message, and serve's own use.
	IndexCallbacks       int      `json:"index_callbacks,omitempty"`
	IndexSeconds         float64  `json:"index_seconds,omitempty"`
	IndexBytesPerMessage float64  `json:"index_bytes_per_message,omitempty"`
	Serve                *e2eProc `json:"serve,omitempty"`
	// Verify is "imrecall verify JOB" after the job (--verify).
	Verify        *e2eVerify `json:"verify,omitempty"`
	LoadAvgBefore string     `json:"loadavg_before,omitempty"`
	LoadAvgAfter  string     `json:"loadavg_after,omitempty"`
}

// e2eVerify is a run of "imrecall verify JOB --json" after the job.
type e2eVerify struct {
	Seconds  float64 `json:"seconds"`
	ExitCode int     `json:"exit_code"`
	// What verify printed.
	Planned      int64 `json:"planned"`
	Verified     int64 `json:"verified"`
	Gone         int64 `json:"gone"`
	StillVisible int64 `json:"still_visible"`
	Residue      int64 `json:"residue"`
	Passed       bool  `json:"passed"`
	HistoryCalls int64 `json:"history_calls"`
	// CallsPerPlanned is HistoryCalls ÷ Planned (the aim: at most 1/20
	// when the job's histories hold mostly its messages).
	CallsPerPlanned float64 `json:"history_calls_per_planned"`
	// APIs is what the emulator accepted during verify, per API; their
	// calls/s are accepted ÷ verify's wall time and ÷ its busy seconds.
	APIs map[string]e2eAPI `json:"apis"`
}

// e2eBench holds what every run of one invocation shares.
type e2eBench struct {
	o      *benchE2EOptions
	self   string
	logDir string
	lo, hi time.Duration
	extra  []string
	errOut io.Writer
}

func runBenchE2E(cmd *cobra.Command, o *benchE2EOptions) error {
	ctx := cmd.Context()
	workers, err := parseInt64List("workers", o.workers)
	if err != nil {
		return err
	}
	if len(workers) == 0 {
		return badInput("--workers: at least one count")
	}
	for _, w := range workers {
		if w <= 0 || w > 64 {
			return badInput("--workers: %d: want 1 to 64", w)
		}
	}
	sizes, err := parseInt64List("scale", o.scale)
	if err != nil {
		return err
	}
	for _, s := range sizes {
		if s <= 0 {
			return badInput("--scale: %d: sizes must be positive", s)
		}
	}
	switch {
	case o.groupMsgs < 0 || o.c2cMsgs < 0:
		return badInput("--group-messages, --c2c-messages: must not be negative")
	case o.groups < 5:
		return badInput("--groups %d: want at least 5", o.groups)
	case o.share <= 0 || o.share > 1:
		return badInput("--share %v: want more than 0, at most 1", o.share)
	case o.cap <= 0:
		return badInput("--cap %d: must be positive", o.cap)
	case o.concurrency <= 0:
		return badInput("--concurrency %d: must be positive", o.concurrency)
	case o.timeout <= 0:
		return badInput("--timeout %v: must be positive", o.timeout)
	case o.redisDelay < 0:
		return badInput("--redis-latency %v: must not be negative", o.redisDelay)
	case o.via != "purge" && o.via != "file" && o.via != "index":
		return badInput("--via %q: want purge, file or index", o.via)
	}
	b := &e2eBench{o: o, extra: strings.Fields(o.workerArgs), errOut: cmd.ErrOrStderr()}
	if b.lo, b.hi, err = parseLatency(o.latency); err != nil {
		return err
	}
	if b.self, err = os.Executable(); err != nil {
		return fmt.Errorf("finding this binary to start workers: %w", err)
	}
	b.logDir = o.logDir
	keepLogs := o.logDir != ""
	if b.logDir == "" {
		if b.logDir, err = os.MkdirTemp("", "imrecall-bench-e2e"); err != nil {
			return fmt.Errorf("creating a directory for logs: %w", err)
		}
	} else if err := os.MkdirAll(b.logDir, 0o755); err != nil {
		return fmt.Errorf("creating --log-dir: %w", err)
	}
	defer func() {
		if !keepLogs {
			_ = os.RemoveAll(b.logDir)
		}
	}()

	var results []e2eResult
	for _, w := range workers {
		if len(sizes) == 0 {
			r, err := b.run(ctx, int(w), 0)
			if err != nil {
				keepLogs = true
				return fmt.Errorf("bench e2e with %d workers (logs in %s): %w", w, b.logDir, err)
			}
			results = append(results, r)
			continue
		}
		for _, size := range sizes {
			r, err := b.run(ctx, int(w), int(size))
			if err != nil {
				keepLogs = true
				return fmt.Errorf("bench e2e --scale %d with %d workers (logs in %s): %w", size, w, b.logDir, err)
			}
			results = append(results, r)
		}
	}
	out := cmd.OutOrStdout()
	doc := map[string]any{"machine": machineInfo(), "latency": o.latency, "redis_latency": o.redisDelay.String(), "args": os.Args[1:], "runs": results}
	if o.jsonFile != "" {
		f, err := os.Create(o.jsonFile)
		if err != nil {
			return fmt.Errorf("writing --json-file: %w", err)
		}
		err = printJSON(f, doc)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing --json-file: %w", err)
		}
	}
	if o.asJSON {
		return printJSON(out, doc)
	}
	m := machineInfo()
	fmt.Fprintf(out, "\nmachine: %s, %v CPUs, %s/%s; emulator cap %d calls/s per API, latency %s; Redis one-way delay %v; worker --concurrency %d %s\n\n",
		m["cpu"], m["cpus"], runtime.GOOS, runtime.GOARCH, o.cap, o.latency, o.redisDelay, o.concurrency, o.workerArgs)
	if len(sizes) > 0 {
		printScaleTable(out, results)
	} else {
		printE2ETables(out, results)
	}
	return nil
}

// run measures one run: W workers, and a user purge (size 0) or a group
// purge of size messages.
func (b *e2eBench) run(ctx context.Context, workers, size int) (res e2eResult, err error) {
	o := b.o
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	res = e2eResult{Workers: workers, Concurrency: o.concurrency, WorkerArgs: o.workerArgs, Cap: o.cap, Groups: o.groups, LoadAvgBefore: loadAvg()}
	tag := fmt.Sprintf("w%d", workers)
	if size > 0 {
		tag = fmt.Sprintf("w%d-n%d", workers, size)
	}

	// Redis: fresh per run, so the baseline and the peak are this run's. It
	// outlives an interrupt until the workers have drained (defers run last
	// in, first out).
	redisURL := o.redisURL
	if redisURL == "" {
		stop, url, err := startPrivateRedis(context.WithoutCancel(ctx))
		if err != nil {
			return res, err
		}
		defer stop()
		redisURL = url
	}
	ropt, err := redis.ParseURL(redisURL)
	if err != nil {
		return res, badInput("--redis %q: %v", redactURL(redisURL), err)
	}
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	aopt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		return res, badInput("--redis %q: %v", redactURL(redisURL), err)
	}
	prefix := fmt.Sprintf("imrecall-bench-%d", time.Now().UnixNano())
	store := jobs.NewStore(rdb, prefix)
	childRedis := redisURL // what the child processes dial: through the proxy with --redis-latency
	if o.redisDelay > 0 {
		u, stop, err := redisBehindProxy(redisURL, o.redisDelay)
		if err != nil {
			return res, err
		}
		defer stop()
		childRedis = u
	}

	// The emulator's address first: serve (for --via index) and the
	// emulator need each other's.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, fmt.Errorf("listening for the emulator: %w", err)
	}
	defer ln.Close()
	base := "http://" + ln.Addr().String()
	secret := randomHex(16)
	env := append(os.Environ(), "IMRECALL_SECRET_KEY="+secret)
	common := []string{"--redis", childRedis, "--key-prefix", prefix, "--api-base", base,
		"--sdkappid", strconv.FormatInt(benchApp, 10), "--admin", benchAdmin, "--cap", strconv.Itoa(o.cap)}
	var callbacks emulator.CallbackConfig
	svc := &e2eWorkers{} // imrecall serve, for --via index
	defer func() { _, _ = svc.stop() }()
	if o.via == "index" {
		if callbacks, err = b.startServe(ctx, svc, common, env, filepath.Join(b.logDir, tag+"-serve.log")); err != nil {
			return res, err
		}
	}

	// The emulator and its synthetic app.
	emu, err := emulator.New(emulator.Config{SDKAppID: benchApp, Admin: benchAdmin, SecretKey: secret, Rate: o.cap,
		Latency: b.lo, LatencyMax: b.hi, Seed: o.seed, Callbacks: callbacks})
	if err != nil {
		return res, fmt.Errorf("starting the emulator: %w", err)
	}
	defer emu.Close()
	spec := emulator.DatasetSpec{Groups: o.groups, Users: 3000, HeavySenders: 1, HeavyGroups: o.groups, HeavyShare: o.share,
		Peers: o.peers, Topics: 3, Seed: o.seed}
	if size > 0 {
		res.Mode = map[string]string{"purge": "purge group", "file": "recall file (group)", "index": "purge user --source index (group)"}[o.via]
		spec.GroupMessages = int(math.Round(float64(size) / o.share))
		spec.C2CMessages, spec.Peers = 100, 5
	} else {
		res.Mode = map[string]string{"purge": "purge user", "file": "recall file", "index": "purge user --source index"}[o.via]
		spec.GroupMessages = int(math.Round(float64(o.groupMsgs) / o.share))
		// Of the one-to-one messages, half are between the spammer and a
		// peer, and the spammer sends 6 in 10 of those.
		spec.C2CMessages = int(math.Round(float64(o.c2cMsgs) / 0.3))
	}
	withC2C := size == 0 || o.via == "index" // an index purge takes every peer
	ds, err := emu.Generate(spec)
	if err != nil {
		return res, fmt.Errorf("generating the synthetic app: %w", err)
	}
	spammer := ds.HeavySenders[0]
	peers := ds.PeersOf[spammer]
	var groups []string
	for _, g := range ds.Groups {
		if g.Type != "AVChatRoom" {
			groups = append(groups, g.GroupID)
		}
	}
	left := func() (group, c2c, targets int) {
		for _, g := range emu.Groups() {
			if g.Type == "AVChatRoom" {
				continue
			}
			for _, topic := range append([]string{""}, g.Topics...) {
				n := 0
				for _, m := range emu.GroupMessages(g.GroupID, topic) {
					if m.From == spammer && !m.Recalled {
						n++
					}
				}
				group += n
				if n > 0 {
					targets++
				}
			}
		}
		if withC2C {
			for _, p := range peers {
				for _, m := range emu.C2CMessages(spammer, p) {
					if m.From == spammer && !m.Recalled {
						c2c++
					}
				}
			}
		}
		return group, c2c, targets
	}
	res.GroupMessages, res.C2CMessages, res.Targets = left()
	hs := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	fmt.Fprintf(b.errOut, "run %s: %s of %s: %d group messages in %d histories, %d one-to-one with %d peers; %d workers\n",
		tag, res.Mode, spammer, res.GroupMessages, res.Targets, res.C2CMessages, len(peers), workers)
	if o.via == "index" {
		if err := b.feedIndex(ctx, emu, rdb, &res); err != nil {
			return res, err
		}
	}

	// Workers, started and registered with asynq before the clock starts.
	ws := &e2eWorkers{}
	defer func() { _, _ = ws.stop() }() // on every path; a no-op once stopped
	for i := range workers {
		args := append([]string{"worker"}, common...)
		args = append(args, "--concurrency", strconv.Itoa(o.concurrency), "--log-level", "warn")
		args = append(args, b.extra...)
		if err := ws.start(ctx, b.self, args, env, filepath.Join(b.logDir, fmt.Sprintf("%s-worker%d.log", tag, i))); err != nil {
			return res, err
		}
	}
	if err := ws.awaitRegistered(ctx, aopt); err != nil {
		return res, err
	}

	baseline, err := usedMemory(ctx, rdb)
	if err != nil {
		return res, err
	}
	res.RedisBaseline = baseline
	redisCPU0, err := redisCPU(ctx, rdb)
	if err != nil {
		return res, err
	}
	benchCPU0 := selfCPU()

	// The purge, through the CLI.
	pargs, err := b.producerArgs(res.Mode, common, groups, spammer, peers, emu, filepath.Join(b.logDir, tag+"-list.jsonl"))
	if err != nil {
		return res, err
	}
	emu.ResetStats()
	start := time.Now()
	prod, err := startProducer(ctx, b.self, pargs, env, filepath.Join(b.logDir, tag+"-purge.log"))
	if err != nil {
		return res, err
	}
	jobID, err := prod.awaitJob(ctx)
	if err != nil {
		return res, err
	}
	res.ProducerSeconds = time.Since(start).Seconds()
	res.JobID = jobID

	// Follow the job; sample Redis memory.
	j, err := b.follow(ctx, store, rdb, jobID, start, &res)
	if err != nil {
		return res, err
	}
	end := time.Now()
	if j.FinishedAt != nil && j.FinishedAt.After(start) && j.FinishedAt.Before(end) {
		end = *j.FinishedAt
	}
	res.WallSeconds = end.Sub(start).Seconds()
	if res.Producer, err = prod.wait(ctx); err != nil && j.Status == jobs.StatusDone {
		return res, err
	}
	res.Status = string(j.Status)
	res.Planned, res.Recalled, res.DeadLettered = j.Counts.Planned, j.Counts.Recalled, j.Counts.DeadLettered
	st := emu.Stats()
	benchCPU1 := selfCPU()
	if res.RedisAfterJob, err = usedMemory(ctx, rdb); err != nil {
		return res, err
	}
	redisCPU1, err := redisCPU(ctx, rdb)
	if err != nil {
		return res, err
	}
	if res.JobRecordBytes, err = keysMemory(ctx, rdb, fmt.Sprintf("%s:job:{%s}*", prefix, jobID)); err != nil {
		return res, err
	}
	procs, err := ws.stop()
	if err != nil {
		return res, err
	}
	res.WorkerProcs = procs
	if o.via == "index" {
		sp, err := svc.stop()
		if err != nil {
			return res, fmt.Errorf("imrecall serve: %w", err)
		}
		res.Serve = &sp[0]
	}
	if o.verify {
		emu.ResetStats()
		if res.Verify, err = b.verify(ctx, common, env, jobID, filepath.Join(b.logDir, tag+"-verify.log")); err != nil {
			return res, err
		}
		res.Verify.APIs = apiFigures(emu.Stats(), res.Verify.Seconds, o.cap)
		if res.Verify.Planned > 0 {
			res.Verify.CallsPerPlanned = float64(res.Verify.HistoryCalls) / float64(res.Verify.Planned)
		}
		fmt.Fprintf(b.errOut, "run %s: verify in %.1f s: %d history calls for %d planned; %d verified, %d gone, %d still visible, residue %d\n",
			tag, res.Verify.Seconds, res.Verify.HistoryCalls, res.Verify.Planned, res.Verify.Verified, res.Verify.Gone, res.Verify.StillVisible, res.Verify.Residue)
	}
	res.LoadAvgAfter = loadAvg()

	// Figures.
	res.APIs = apiFigures(st, res.WallSeconds, o.cap)
	for _, a := range res.APIs {
		res.Calls += a.Accepted
	}
	gl, cl, _ := left()
	res.Left = gl + cl
	if n := res.APIs[tim.GroupMsgRecall.Name()].Accepted; n > 0 {
		res.SeqsPerGroupCall = float64(res.GroupMessages-gl) / float64(n)
	}
	groupFloor := float64(res.GroupMessages) / float64(tasks.MaxSeqsPerCall) / float64(o.cap)
	c2cFloor := float64(res.C2CMessages) / float64(o.cap)
	res.FloorSeconds = max(groupFloor, c2cFloor)
	if res.WallSeconds > 0 {
		res.FloorOverWall = res.FloorSeconds / res.WallSeconds
	}
	var cpu float64
	for _, p := range procs {
		cpu += p.CPUSeconds
		res.WorkerPeakRSS = max(res.WorkerPeakRSS, p.PeakRSS)
	}
	if res.Calls > 0 {
		k := float64(res.Calls) / 1000
		res.WorkerCPUPer1000 = cpu / k
		res.RedisCPUPer1000 = (redisCPU1 - redisCPU0) / k
		if benchCPU0 >= 0 && benchCPU1 >= 0 {
			res.BenchCPUPer1000 = (benchCPU1 - benchCPU0) / k
		}
	}
	if res.PlannedAtPlanningEnd > 0 {
		res.RedisPerPlanned = float64(res.RedisAfterPlanning-baseline) / float64(res.PlannedAtPlanningEnd)
	}
	if res.Planned > 0 {
		res.RedisJobPerMessage = float64(res.RedisAfterJob-baseline) / float64(res.Planned)
		res.JobRecordPerMessage = float64(res.JobRecordBytes) / float64(res.Planned)
	}
	if res.PendingAtPlanningEnd > 0 && res.PlannedAtPlanningEnd > 0 {
		// What planning-end memory holds beyond the job record of the
		// messages planned so far is the queue of the pending ones.
		jobPart := res.JobRecordPerMessage * float64(res.PlannedAtPlanningEnd)
		res.RedisQueuePerQueued = (float64(res.RedisAfterPlanning-baseline) - jobPart) / float64(res.PendingAtPlanningEnd)
	}
	fmt.Fprintf(b.errOut, "run %s: job %s %s in %.1f s (floor %.1f s, floor/wall %.3f); recalled %d, dead-lettered %d, left %d\n",
		tag, res.JobID, res.Status, res.WallSeconds, res.FloorSeconds, res.FloorOverWall, res.Recalled, res.DeadLettered, res.Left)
	switch {
	case j.Status != jobs.StatusDone:
		return res, fmt.Errorf("job %s ended %s: %s", jobID, j.Status, j.Error)
	case res.Left > 0:
		return res, fmt.Errorf("job %s done, but %d of the spammer's messages are still there", jobID, res.Left)
	}
	return res, nil
}

// apiFigures turns the emulator's counts per API into rates over wall
// seconds and against the cap.
func apiFigures(st map[string]emulator.APIStats, wall float64, limit int) map[string]e2eAPI {
	out := map[string]e2eAPI{}
	for api, s := range st {
		a := e2eAPI{Accepted: s.Accepted, Throttled: s.Throttled, Max1s: s.Max1s, FirstSecond: -1, LastSecond: -1, Series: s.PerSecond}
		for i, n := range s.PerSecond {
			if n > 0 {
				a.ActiveSeconds++
				if a.FirstSecond < 0 {
					a.FirstSecond = i
				}
				a.LastSecond = i
			}
		}
		if wall > 0 {
			a.EndToEnd = float64(a.Accepted) / wall
			a.EndToEndOfCap = a.EndToEnd / float64(limit)
		}
		if a.ActiveSeconds > 0 {
			a.PerSecond = float64(a.Accepted) / float64(a.ActiveSeconds)
			a.OfCap = a.PerSecond / float64(limit)
		}
		if a.LastSecond-a.FirstSecond >= 2 {
			a.Steady = steadyRate(s.PerSecond[a.FirstSecond : a.LastSecond+1])
			a.SteadyOfCap = a.Steady / float64(limit)
		}
		out[api] = a
	}
	return out
}

// verify runs "imrecall verify JOB --json" (this binary) and reads what it
// printed; exit 5 (messages remain) is a result, not an error.
func (b *e2eBench) verify(ctx context.Context, common, env []string, jobID, logPath string) (*e2eVerify, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating verify's log: %w", err)
	}
	defer lf.Close()
	args := append([]string{"verify", jobID, "--json"}, common...)
	args = append(args, "--concurrency", strconv.Itoa(b.o.concurrency), "--log-level", "warn")
	c := exec.CommandContext(ctx, b.self, args...)
	c.Env = env
	c.Stderr = lf
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := c.Output()
	v := &e2eVerify{Seconds: time.Since(start).Seconds()}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == exitNotErased {
		v.ExitCode, err = exitNotErased, nil
	}
	if err != nil {
		return nil, fmt.Errorf("imrecall verify %s (log %s): %w", jobID, logPath, err)
	}
	var got verification
	if err := json.Unmarshal(out, &got); err != nil {
		return nil, fmt.Errorf("imrecall verify %s --json printed %q: %w", jobID, out, err)
	}
	v.Planned, v.Verified, v.Gone, v.StillVisible, v.Residue = got.Planned, got.Verified, got.Gone, got.StillVisible, got.Residue
	v.Passed, v.HistoryCalls = got.Passed, got.HistoryCalls
	return v, nil
}

// startServe starts "imrecall serve" with the callback index on a free
// port, waits until it is ready, and returns the emulator's callback
// settings for it.
func (b *e2eBench) startServe(ctx context.Context, svc *e2eWorkers, common, env []string, logPath string) (emulator.CallbackConfig, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return emulator.CallbackConfig{}, fmt.Errorf("finding a port for imrecall serve: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	token := randomHex(16)
	args := append([]string{"serve"}, common...)
	// Retention 30d: the synthetic messages span the last 7 days.
	args = append(args, "--listen", addr, "--log-level", "warn", "--index-retention", "30d", "--monitor=false")
	env = append(env, "IMRECALL_API_TOKENS=bench:admin:"+randomHex(16), "IMRECALL_CALLBACK_TOKEN="+token)
	if err := svc.start(ctx, b.self, args, env, logPath); err != nil {
		return emulator.CallbackConfig{}, err
	}
	if err := waitReady(ctx, addr, 30*time.Second); err != nil {
		return emulator.CallbackConfig{}, fmt.Errorf("imrecall serve: %w (see %s)", err, logPath)
	}
	return emulator.CallbackConfig{URL: "http://" + addr + "/callback", Token: token, Workers: 16}, nil
}

// waitReady polls http://addr/readyz until it answers 200 OK, for at most
// timeout.
func waitReady(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("checking %s: %w", addr, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz answered %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %v: %w", addr, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// feedIndex has the emulator post the after-send callback of every message
// it holds to imrecall serve, and measures the index that results.
func (b *e2eBench) feedIndex(ctx context.Context, emu *emulator.Server, rdb *redis.Client, res *e2eResult) error {
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	began := time.Now()
	n := emu.ReplayCallbacks()
	if err := emu.WaitCallbacks(ctx); err != nil {
		return fmt.Errorf("delivering callbacks to imrecall serve: %w", err)
	}
	st := emu.CallbackStats()
	if st.Delivered != int64(n) {
		return fmt.Errorf("callbacks to imrecall serve: %+v, want all %d delivered", st, n)
	}
	res.IndexCallbacks = n
	res.IndexSeconds = time.Since(began).Seconds()
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	if n > 0 {
		res.IndexBytesPerMessage = float64(after-before) / float64(n)
	}
	fmt.Fprintf(b.errOut, "  index: %d callbacks in %.1f s (%.0f/s), %.0f Redis bytes per message\n",
		n, res.IndexSeconds, float64(n)/max(res.IndexSeconds, 0.001), res.IndexBytesPerMessage)
	return nil
}

// producerArgs is the command line of the run's producer: a purge, or with
// --via file a list of the spammer's messages (taken from the emulator, as a
// callback log would hold them) written to listPath and "recall file".
func (b *e2eBench) producerArgs(mode string, common, groups []string, spammer string, peers []string, emu *emulator.Server, listPath string) ([]string, error) {
	var args []string
	switch mode {
	case "purge group":
		args = append([]string{"purge", "group"}, common...)
		for _, g := range groups {
			args = append(args, "--group", g)
		}
		args = append(args, "--sender", spammer)
	case "purge user":
		args = append([]string{"purge", "user"}, common...)
		args = append(args, "--user", spammer, "--peers", strings.Join(peers, ","), "--source", "scan")
	case "purge user --source index", "purge user --source index (group)":
		args = append([]string{"purge", "user"}, common...)
		args = append(args, "--user", spammer, "--source", "index")
	default: // recall file
		if err := writeSpamList(listPath, emu, spammer, peers); err != nil {
			return nil, err
		}
		// recall file takes no IM flags: the workers do every call.
		args = []string{"recall", "file", listPath}
		for i := 0; i+1 < len(common); i += 2 {
			if f := common[i]; f == "--redis" || f == "--key-prefix" || f == "--sdkappid" {
				args = append(args, f, common[i+1])
			}
		}
	}
	args = append(args, "--queue", "purge", "--yes", "--json", "--wait", "--reason", "bench e2e")
	if !strings.HasPrefix(mode, "recall file") {
		args = append(args, "--log-level", "warn")
	}
	return args, nil
}

// writeSpamList writes the spammer's messages as JSON Lines in time order,
// as a callback log would hold them: group messages (GroupId, TopicId,
// MsgSeq) and one-to-one messages to the peers, interleaved.
func writeSpamList(path string, emu *emulator.Server, spammer string, peers []string) error {
	type line struct {
		time int64
		json any
	}
	var lines []line
	for _, g := range emu.Groups() {
		if g.Type == "AVChatRoom" {
			continue
		}
		for _, topic := range append([]string{""}, g.Topics...) {
			for _, m := range emu.GroupMessages(g.GroupID, topic) {
				if m.From == spammer {
					lines = append(lines, line{m.Time, listGroupLine{GroupID: g.GroupID, TopicID: topic, MsgSeq: m.Seq}})
				}
			}
		}
	}
	for _, p := range peers {
		for _, m := range emu.C2CMessages(spammer, p) {
			if m.From == spammer {
				lines = append(lines, line{m.Time, listC2CLine{From: m.From, To: m.To, MsgKey: m.MsgKey}})
			}
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].time < lines[j].time })
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating the list file: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	enc := json.NewEncoder(w)
	for _, l := range lines {
		if err := enc.Encode(l.json); err != nil {
			f.Close()
			return fmt.Errorf("writing the list file: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing the list file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the list file: %w", err)
	}
	return nil
}

// listGroupLine and listC2CLine are lines of a list file (see recall file).
type listGroupLine struct {
	GroupID string `json:"GroupId"`
	TopicID string `json:"TopicId,omitempty"`
	MsgSeq  int64  `json:"MsgSeq"`
}

type listC2CLine struct {
	From   string `json:"From_Account"`
	To     string `json:"To_Account"`
	MsgKey string `json:"MsgKey"`
}

// follow polls the job until it has finished, recording when planning
// closed and sampling Redis used_memory every 200 ms.
func (b *e2eBench) follow(ctx context.Context, store *jobs.Store, rdb *redis.Client, id string, start time.Time, res *e2eResult) (jobs.Job, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	planningSeen := false
	lastMem, lastLog := time.Time{}, time.Now()
	for {
		j, err := store.Get(ctx, id)
		if err != nil {
			return j, fmt.Errorf("following job %s: %w", id, err)
		}
		if time.Since(lastMem) >= 200*time.Millisecond || (!planningSeen && j.Status != jobs.StatusPlanning) {
			lastMem = time.Now()
			mem, err := usedMemory(ctx, rdb)
			if err != nil {
				return j, err
			}
			res.RedisPeak = max(res.RedisPeak, mem)
			if !planningSeen && j.Status != jobs.StatusPlanning {
				planningSeen = true
				res.PlanningSeconds = time.Since(start).Seconds()
				res.RedisAfterPlanning = mem
				res.PlannedAtPlanningEnd = j.Counts.Planned
				res.PendingAtPlanningEnd = j.Counts.Pending
			}
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			c := j.Counts
			fmt.Fprintf(b.errOut, "  %5.0f s: job %s %s: planned %d, recalled %d, dead-lettered %d, pending %d\n",
				time.Since(start).Seconds(), id, j.Status, c.Planned, c.Recalled, c.DeadLettered, c.Pending)
		}
		if j.Finished() || j.Status == jobs.StatusFailed || j.Status == jobs.StatusCancelled {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, fmt.Errorf("waiting for job %s: %w", id, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// e2eWorkers are the child processes of one run: its workers (and, for
// --via index, imrecall serve).
type e2eWorkers struct {
	mu     sync.Mutex
	procs  []*exec.Cmd
	exited []chan error // each receives the process's Wait result once
	logs   []*os.File
	done   bool
}

// start starts one child process, its output to logPath.
func (w *e2eWorkers) start(ctx context.Context, bin string, args, env []string, logPath string) error {
	lf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("creating the log %s: %w", logPath, err)
	}
	c := exec.CommandContext(ctx, bin, args...)
	c.Env = env
	c.Stdout, c.Stderr = lf, lf
	// Interrupted or timed out: let the worker drain; SIGKILL if it lingers.
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 20 * time.Second
	if err := c.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("starting %s %s: %w", bin, args[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.procs = append(w.procs, c)
	w.exited = append(w.exited, exited)
	w.logs = append(w.logs, lf)
	return nil
}

// awaitRegistered waits until asynq lists the servers of every worker
// process, one per lane (group recall, one-to-one withdraw, discovery).
func (w *e2eWorkers) awaitRegistered(ctx context.Context, opt asynq.RedisConnOpt) error {
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	want := map[int]bool{}
	for _, c := range w.procs {
		want[c.Process.Pid] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		servers, err := insp.Servers()
		perPID := map[int]int{}
		for _, s := range servers {
			if want[s.PID] {
				perPID[s.PID]++
			}
		}
		n := 0
		for _, k := range perPID {
			if k >= 3 {
				n++
			}
		}
		if err == nil && n == len(want) {
			return nil
		}
		for i, ch := range w.exited {
			select {
			case werr := <-ch:
				ch <- werr // stop() reads it again
				return fmt.Errorf("worker %d exited before it registered: %v (see its log)", w.procs[i].Process.Pid, werr)
			default:
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("listing asynq servers: %w", err)
			}
			return fmt.Errorf("only %d of %d workers registered with asynq within 30 s", n, len(want))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for workers to start: %w", context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM to every worker, waits (SIGKILL after 30 s) and
// returns what each used. Calling it again does nothing.
func (w *e2eWorkers) stop() ([]e2eProc, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil, nil
	}
	w.done = true
	defer func() {
		for _, lf := range w.logs {
			_ = lf.Close()
		}
	}()
	// VmHWM only grows, and an idle worker's shutdown adds nothing to it:
	// read it while the process is still there.
	hwm := make([]int64, len(w.procs))
	for i, c := range w.procs {
		hwm[i] = vmHWM(c.Process.Pid)
		_ = c.Process.Signal(syscall.SIGTERM) // an exited process: nothing to do
	}
	out := make([]e2eProc, len(w.procs))
	var errs []error
	for i, c := range w.procs {
		var err error
		select {
		case err = <-w.exited[i]:
		case <-time.After(30 * time.Second):
			_ = c.Process.Kill()
			err = <-w.exited[i]
			errs = append(errs, fmt.Errorf("%s (pid %d) did not stop within 30 s of SIGTERM; killed", c.Args[1], c.Process.Pid))
		}
		if c.ProcessState == nil {
			errs = append(errs, fmt.Errorf("waiting for %s (pid %d): %w", c.Args[1], c.Process.Pid, err))
			continue
		}
		if !c.ProcessState.Success() {
			errs = append(errs, fmt.Errorf("%s (pid %d): %s", c.Args[1], c.Process.Pid, c.ProcessState))
		}
		ps := c.ProcessState
		out[i] = e2eProc{PID: ps.Pid(), CPUSeconds: (ps.UserTime() + ps.SystemTime()).Seconds(), PeakRSS: hwm[i]}
	}
	return out, errors.Join(errs...)
}

// e2eProducer is the purge command of a run, started with --wait: it plans
// (lists the scans, queues discovery), prints the job id, and then follows
// the job until it ends, so its high-water RSS can be read from /proc while
// it lives.
type e2eProducer struct {
	cmd     *exec.Cmd
	logFile *os.File
	jobID   chan string // the job id it printed, once
	exited  chan error  // its Wait result, once
	mu      sync.Mutex
	hwm     int64 // the largest VmHWM sampled
}

// startProducer starts the purge command.
func startProducer(ctx context.Context, bin string, args, env []string, logPath string) (*e2eProducer, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating the purge command's log: %w", err)
	}
	c := exec.CommandContext(ctx, bin, args...)
	c.Env = env
	c.Stderr = lf
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 10 * time.Second
	stdout, err := c.StdoutPipe()
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("piping the purge command's output: %w", err)
	}
	if err := c.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting imrecall %s %s: %w", args[0], args[1], err)
	}
	p := &e2eProducer{cmd: c, logFile: lf, jobID: make(chan string, 1), exited: make(chan error, 1)}
	go func() {
		var created struct {
			JobID string `json:"job_id"`
		}
		if err := json.NewDecoder(stdout).Decode(&created); err == nil && created.JobID != "" {
			p.jobID <- created.JobID
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		waited := make(chan error, 1)
		go func() { waited <- c.Wait() }()
		for {
			p.sample()
			select {
			case err := <-waited:
				p.exited <- err
				return
			case <-tick.C:
			}
		}
	}()
	return p, nil
}

func (p *e2eProducer) sample() {
	if n := vmHWM(p.cmd.Process.Pid); n > 0 {
		p.mu.Lock()
		p.hwm = max(p.hwm, n)
		p.mu.Unlock()
	}
}

// awaitJob returns the job id the purge command printed.
func (p *e2eProducer) awaitJob(ctx context.Context) (string, error) {
	select {
	case id := <-p.jobID:
		return id, nil
	case err := <-p.exited:
		p.exited <- err
		return "", fmt.Errorf("the purge command ended without printing a job id: %v (see %s)", err, p.logFile.Name())
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the purge command: %w", context.Cause(ctx))
	}
}

// wait waits for the purge command to end (it follows the job to its end)
// and returns what it used.
func (p *e2eProducer) wait(ctx context.Context) (e2eProc, error) {
	defer p.logFile.Close()
	var err error
	select {
	case err = <-p.exited:
	case <-ctx.Done():
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		err = <-p.exited
	}
	ps := p.cmd.ProcessState
	if ps == nil {
		return e2eProc{}, fmt.Errorf("waiting for the purge command: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	use := e2eProc{PID: ps.Pid(), CPUSeconds: (ps.UserTime() + ps.SystemTime()).Seconds(), PeakRSS: p.hwm}
	if !ps.Success() {
		return use, fmt.Errorf("the purge command: %s (see %s)", ps, p.logFile.Name())
	}
	return use, nil
}

// vmHWM is a live process's peak resident set ("VmHWM" in
// /proc/PID/status) in bytes, or 0 if unknown. The kernel's ru_maxrss of a
// child is no use here: it starts from the parent's high-water mark at the
// fork, and this process holds the emulator's data.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n * 1024
				}
			}
		}
	}
	return 0
}

// usedMemory is Redis's INFO memory used_memory.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	v, err := infoField(ctx, rdb, "memory", "used_memory")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redis INFO used_memory %q: %w", v, err)
	}
	return n, nil
}

// keysMemory sums MEMORY USAGE over the keys matching pattern.
func keysMemory(ctx context.Context, rdb *redis.Client, pattern string) (int64, error) {
	var sum int64
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		n, err := rdb.MemoryUsage(ctx, iter.Val(), 0).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, fmt.Errorf("redis MEMORY USAGE %s: %w", iter.Val(), err)
		}
		sum += n
	}
	if err := iter.Err(); err != nil {
		return 0, fmt.Errorf("redis SCAN %s: %w", pattern, err)
	}
	return sum, nil
}

// redisCPU is the CPU seconds Redis has used (INFO cpu, user + system).
func redisCPU(ctx context.Context, rdb *redis.Client) (float64, error) {
	var sum float64
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := infoField(ctx, rdb, "cpu", f)
		if err != nil {
			return 0, err
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("redis INFO %s %q: %w", f, v, err)
		}
		sum += x
	}
	return sum, nil
}

func infoField(ctx context.Context, rdb *redis.Client, section, field string) (string, error) {
	s, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return "", fmt.Errorf("redis INFO %s: %w", section, err)
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("redis INFO %s: no %s", section, field)
}

// selfCPU is this process's CPU seconds (user + system) from /proc, or -1.
func selfCPU() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return -1
	}
	// Fields after the command name (which may hold spaces) start at ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// machineInfo names the CPU and counts the cores.
func machineInfo() map[string]any {
	m := map[string]any{"cpus": runtime.NumCPU(), "goos": runtime.GOOS, "goarch": runtime.GOARCH, "cpu": "unknown CPU"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func printE2ETables(w io.Writer, rs []e2eResult) {
	gr, aw := tim.GroupMsgRecall.Name(), tim.AdminMsgWithdraw.Name()
	fmt.Fprintln(w, "| producer | workers | group msgs | 1:1 msgs | wall s | floor s | floor/wall | planning closed s | group_msg_recall end to end (of cap) | while busy (of cap) | steady (of cap) | first–last s | max_1s | admin_msgwithdraw end to end (of cap) | while busy (of cap) | steady (of cap) | first–last s | max_1s | throttled | seqs/group call |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		g, a := r.APIs[gr], r.APIs[aw]
		var throttled int64
		for _, x := range r.APIs {
			throttled += x.Throttled
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %.1f | %.1f | %.3f | %.1f | %.1f (%.3f) | %.1f (%.3f) | %s | %d–%d | %d | %.1f (%.3f) | %.1f (%.3f) | %s | %d–%d | %d | %d | %.2f |\n",
			r.Mode, r.Workers, r.GroupMessages, r.C2CMessages, r.WallSeconds, r.FloorSeconds, r.FloorOverWall, r.PlanningSeconds,
			g.EndToEnd, g.EndToEndOfCap, g.PerSecond, g.OfCap, g.steady(), g.FirstSecond, g.LastSecond, g.Max1s,
			a.EndToEnd, a.EndToEndOfCap, a.PerSecond, a.OfCap, a.steady(), a.FirstSecond, a.LastSecond, a.Max1s, throttled, r.SeqsPerGroupCall)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| producer | workers | API calls | worker CPU s/1000 calls | Redis CPU s/1000 | emulator CPU s/1000 | worker peak RSS MiB | producer peak RSS MiB | Redis B/msg after planning | job record B/msg | queue B/queued msg | Redis peak MiB (Δ) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %d | %d | %.3f | %.3f | %.3f | %.1f | %.1f | %.0f | %.1f | %.0f | %.1f |\n",
			r.Mode, r.Workers, r.Calls, r.WorkerCPUPer1000, r.RedisCPUPer1000, r.BenchCPUPer1000, mib(r.WorkerPeakRSS), mib(r.Producer.PeakRSS),
			r.RedisPerPlanned, r.JobRecordPerMessage, r.RedisQueuePerQueued, mib(r.RedisPeak-r.RedisBaseline))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| producer | workers | API | accepted | active s | first–last s | calls/s | of cap | steady | max_1s | throttled |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		for _, api := range sortedAPIs(r.APIs) {
			a := r.APIs[api]
			fmt.Fprintf(w, "| %s | %d | %s | %d | %d | %d–%d | %.1f | %.3f | %s | %d | %d |\n",
				r.Mode, r.Workers, api, a.Accepted, a.ActiveSeconds, a.FirstSecond, a.LastSecond, a.PerSecond, a.OfCap, a.steady(), a.Max1s, a.Throttled)
		}
	}
	fmt.Fprintln(w)
	for _, r := range rs {
		if r.Serve != nil {
			fmt.Fprintf(w, "%s, %d workers: index fed before the clock: %d callbacks in %.1f s, %.0f Redis bytes per message; serve %.1f CPU s, peak RSS %.1f MiB\n",
				r.Mode, r.Workers, r.IndexCallbacks, r.IndexSeconds, r.IndexBytesPerMessage, r.Serve.CPUSeconds, mib(r.Serve.PeakRSS))
		}
		if v := r.Verify; v != nil {
			fmt.Fprintf(w, "%s, %d workers: verify in %.1f s (exit %d): %d history calls for %d planned (%.4f per message); %d verified, %d gone, %d still visible, residue %d\n",
				r.Mode, r.Workers, v.Seconds, v.ExitCode, v.HistoryCalls, v.Planned, v.CallsPerPlanned, v.Verified, v.Gone, v.StillVisible, v.Residue)
			for _, api := range sortedAPIs(v.APIs) {
				a := v.APIs[api]
				fmt.Fprintf(w, "  verify %s: %d calls, %.1f/s over verify's wall time (%.3f of cap), %.1f/s while busy (%.3f), max_1s %d, throttled %d\n",
					api, a.Accepted, a.EndToEnd, a.EndToEndOfCap, a.PerSecond, a.OfCap, a.Max1s, a.Throttled)
			}
		}
		fmt.Fprintf(w, "%s, %d workers: job id printed at %.2f s; planning closed at %.1f s with %d planned, %d pending; job %s: %d recalled, %d dead-lettered, %d left; load %s → %s\n",
			r.Mode, r.Workers, r.ProducerSeconds, r.PlanningSeconds, r.PlannedAtPlanningEnd, r.PendingAtPlanningEnd, r.Status, r.Recalled, r.DeadLettered, r.Left, r.LoadAvgBefore, r.LoadAvgAfter)
	}
}

func printScaleTable(w io.Writer, rs []e2eResult) {
	fmt.Fprintln(w, "| messages | workers | wall s | floor s | floor/wall | group_msg_recall end to end (of cap) | planning s | producer peak RSS MiB | worker peak RSS MiB | Redis used_memory peak MiB (Δ) | job record B/msg | worker CPU s/1000 calls |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		g := r.APIs[tim.GroupMsgRecall.Name()]
		fmt.Fprintf(w, "| %d | %d | %.1f | %.1f | %.3f | %.1f (%.3f) | %.1f | %.1f | %.1f | %.1f (%.1f) | %.0f | %.3f |\n",
			r.GroupMessages, r.Workers, r.WallSeconds, r.FloorSeconds, r.FloorOverWall, g.EndToEnd, g.EndToEndOfCap, r.PlanningSeconds,
			mib(r.Producer.PeakRSS), mib(r.WorkerPeakRSS), mib(r.RedisPeak), mib(r.RedisPeak-r.RedisBaseline), r.JobRecordPerMessage, r.WorkerCPUPer1000)
	}
}

func sortedAPIs(m map[string]e2eAPI) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
