package bench

import (
	"slices"
	"strings"
	"time"

	"github.com/imrecall/imrecall/tim"
)

// Modes are the limiters RunLimiter compares: imrecall (this project's
// Redis limiter), xrate (golang.org/x/time/rate at the cap in each process)
// and redis_rate (go-redis/redis_rate PerSecond(cap), sleeping RetryAfter).
var Modes = []string{"imrecall", "xrate", "redis_rate"}

// LimiterConfig is one invocation of "imrecall bench limiter"; each field
// is the flag of the same name.
type LimiterConfig struct {
	// Redis is the Redis URL; empty: a private redis-server on a free port.
	Redis string
	// Procs are the process counts to measure; Goroutines the goroutines
	// per process; Duration how long each run lasts.
	Procs      []int
	Goroutines int
	Duration   time.Duration
	// Modes are the limiters compared (of Modes); APIs the APIs called at
	// once, each with its own cap: group_msg_recall, admin_msgwithdraw.
	Modes, APIs []string
	// LatencyMin and LatencyMax bound the emulator's latency.
	LatencyMin, LatencyMax time.Duration
	// RedisDelay is the one-way delay a proxy adds between every child
	// process and Redis; 0: none.
	RedisDelay time.Duration
	// Cap is the emulator's cap per API.
	Cap int
}

// Validate checks the configuration; its errors are ConfigErrors naming
// the flag.
func (o *LimiterConfig) Validate() error {
	for _, m := range o.Modes {
		if !slices.Contains(Modes, m) {
			return configError("--modes: %q is not one of %s", m, strings.Join(Modes, ", "))
		}
	}
	for _, a := range o.APIs {
		if a != tim.GroupMsgRecall.Name() && a != tim.AdminMsgWithdraw.Name() {
			return configError("--apis: %q: want group_msg_recall or admin_msgwithdraw", a)
		}
	}
	switch {
	case len(o.Procs) == 0 || slices.ContainsFunc(o.Procs, func(p int) bool { return p <= 0 }):
		return configError("--procs %v: want counts above 0", o.Procs)
	case o.Goroutines <= 0:
		return configError("--goroutines %d: must be positive", o.Goroutines)
	}
	return checkRun(o.Cap, o.RedisDelay, o.LatencyMin, o.LatencyMax)
}

// ChildConfig is one process of RunLimiter ("imrecall bench
// limiter-child", which RunLimiter starts); the secret key comes from
// IMRECALL_SECRET_KEY.
type ChildConfig struct {
	Mode, Redis, APIBase, Prefix string
	APIs, Groups                 []string
	Goroutines, Cap              int
	Duration                     time.Duration
}

// E2EConfig is one invocation of the end-to-end harness ("imrecall bench
// e2e"); each field is the flag of the same name.
type E2EConfig struct {
	// Redis is a Redis URL dedicated to the bench (asynq's queues are not
	// prefixed); empty: a fresh private redis-server per run.
	Redis string
	// Workers are the worker process counts to measure, one run each.
	Workers []int
	// GroupMessages and C2CMessages are the spammer's messages of a user
	// purge; Groups and Peers where they are; Share the spammer's share of
	// the messages of their groups (above 0, at most 1).
	GroupMessages, C2CMessages, Groups, Peers int
	Share                                     float64
	// Scale, when not empty, runs group purges (or with Via "file", list
	// files) of these sizes instead of a user purge.
	Scale []int
	// Via is how the job is made: "purge", "index" or "file".
	Via string
	// Concurrency is each worker's --concurrency; WorkerArgs more flags for
	// each worker, space-separated.
	Concurrency int
	WorkerArgs  string
	// Backlog is the producer's --backlog; negative: 10 s of group calls
	// at the cap (100 × Cap, the CLI's default at the real cap).
	Backlog int
	// LatencyMin and LatencyMax bound the emulator's latency (uniform).
	LatencyMin, LatencyMax time.Duration
	// RedisDelay is the one-way delay a proxy adds between every child
	// process and Redis; 0: none.
	RedisDelay time.Duration
	// Cap is the emulator's cap per API, and the workers' --cap.
	Cap int
	// Seed seeds the synthetic data.
	Seed int64
	// Timeout gives a run up after this long.
	Timeout time.Duration
	// LogDir keeps the child processes' logs; empty: a temporary directory,
	// removed unless a run fails.
	LogDir string
	// JSON prints the results as JSON; JSONFile also writes them there.
	JSON     bool
	JSONFile string
	// Verify runs and times "imrecall verify JOB --json" after each job.
	Verify bool
}

// Validate checks the configuration; its errors are ConfigErrors naming
// the flag.
func (o *E2EConfig) Validate() error {
	if len(o.Workers) == 0 {
		return configError("--workers: at least one count")
	}
	for _, w := range o.Workers {
		if w <= 0 || w > 64 {
			return configError("--workers: %d: want 1 to 64", w)
		}
	}
	for _, s := range o.Scale {
		if s <= 0 {
			return configError("--scale: %d: sizes must be positive", s)
		}
	}
	switch {
	case o.GroupMessages < 0 || o.C2CMessages < 0:
		return configError("--group-messages, --c2c-messages: must not be negative")
	case o.Groups < 5:
		return configError("--groups %d: want at least 5", o.Groups)
	case o.Share <= 0 || o.Share > 1:
		return configError("--share %v: want more than 0, at most 1", o.Share)
	case o.Concurrency <= 0:
		return configError("--concurrency %d: must be positive", o.Concurrency)
	case o.Timeout <= 0:
		return configError("--timeout %v: must be positive", o.Timeout)
	case o.Via != "purge" && o.Via != "file" && o.Via != "index":
		return configError("--via %q: want purge, file or index", o.Via)
	}
	return checkRun(o.Cap, o.RedisDelay, o.LatencyMin, o.LatencyMax)
}

// latency formats the emulator's latency as the flag takes it.
func (o *E2EConfig) latency() string { return latencyString(o.LatencyMin, o.LatencyMax) }

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
		Groups: 200, Peers: 5, Share: 1, Concurrency: c.Concurrency, WorkerArgs: c.WorkerArgs, Backlog: -1,
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
	for _, n := range c.Sizes {
		if n <= 0 {
			return configError("--sizes: %d: sizes must be positive", n)
		}
	}
	if c.Workers <= 0 || c.Workers > 64 {
		return configError("--workers %d: want 1 to 64", c.Workers)
	}
	e := c.e2e()
	if err := e.Validate(); err != nil {
		return err
	}
	return nil
}

// checkRun checks what every harness sets: the cap, the Redis delay and
// the emulator's latency.
func checkRun(limit int, redisDelay, lo, hi time.Duration) error {
	switch {
	case limit <= 0:
		return configError("--cap %d: must be positive", limit)
	case redisDelay < 0:
		return configError("--redis-latency %v: must not be negative", redisDelay)
	case lo < 0 || hi < lo:
		return configError("--latency %v-%v: want MIN ≤ MAX, neither negative", lo, hi)
	}
	return nil
}

// latencyString formats a latency range as the --latency flag takes it.
func latencyString(lo, hi time.Duration) string {
	if lo == hi {
		return lo.String()
	}
	return lo.String() + "-" + hi.String()
}
