package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/redisproxy"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/tim"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks against the emulator (see docs/BENCHMARKS.md)",
	}
	cmd.AddCommand(newBenchLimiterCmd(), newBenchLimiterChildCmd(), newBenchE2ECmd())
	return cmd
}

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

// benchModes are the limiters compared.
var benchModes = []string{"imrecall", "xrate", "redis_rate"}

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
	fl.StringVar(&o.modes, "modes", strings.Join(benchModes, ","), "limiters to compare")
	fl.StringVar(&o.apis, "apis", "group_msg_recall", "APIs called at once, each with its own cap: group_msg_recall, admin_msgwithdraw")
	fl.StringVar(&o.latency, "latency", "20ms-80ms", "emulator latency")
	fl.IntVar(&o.cap, "cap", 200, "the emulator's cap per API")
	fl.DurationVar(&o.redisDelay, "redis-latency", 0, "one-way delay added each way between every child process and Redis (a proxy)")
	return cmd
}

const benchApp, benchAdmin = int64(1400000001), "administrator"

func runBenchLimiter(cmd *cobra.Command, o *benchLimiterOptions) error {
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	procs, err := parseInt64List("procs", o.procs)
	if err != nil {
		return err
	}
	modes := strings.Split(o.modes, ",")
	for _, m := range modes {
		if !containsStr(benchModes, m) {
			return badInput("--modes: %q is not one of %s", m, strings.Join(benchModes, ", "))
		}
	}
	apis := strings.Split(o.apis, ",")
	for _, a := range apis {
		if a != tim.GroupMsgRecall.Name() && a != tim.AdminMsgWithdraw.Name() {
			return badInput("--apis: %q: want group_msg_recall or admin_msgwithdraw", a)
		}
	}
	lo, hi, err := parseLatency(o.latency)
	if err != nil {
		return err
	}
	redisURL := o.redisURL
	if redisURL == "" {
		stop, url, err := startPrivateRedis(ctx)
		if err != nil {
			return err
		}
		defer stop()
		redisURL = url
	}
	if o.redisDelay < 0 {
		return badInput("--redis-latency %v: must not be negative", o.redisDelay)
	}
	if o.redisDelay > 0 {
		url, stop, err := redisBehindProxy(redisURL, o.redisDelay)
		if err != nil {
			return err
		}
		defer stop()
		redisURL = url
	}
	secret := randomHex(16)
	emu, err := emulator.New(emulator.Config{SDKAppID: benchApp, Admin: benchAdmin, SecretKey: secret, Rate: o.cap, Latency: lo, LatencyMax: hi, Seed: 1})
	if err != nil {
		return err
	}
	ds, err := emu.Generate(emulator.DatasetSpec{Groups: 50, Users: 500, GroupMessages: 500000, C2CMessages: 1000, TypeMix: map[string]int{"Public": 1}, Seed: 1})
	if err != nil {
		return err
	}
	var groups []string
	for _, g := range ds.Groups {
		if g.Type != "AVChatRoom" && g.Type != "Community" {
			groups = append(groups, g.GroupID)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	self, err := os.Executable()
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "emulator cap %d calls/s per API, latency %s, %d goroutines per process, %s per run, APIs %s, Redis one-way delay %v\n\n",
		o.cap, o.latency, o.goroutines, o.duration, o.apis, o.redisDelay)
	fmt.Fprintln(out, "| limiter | processes | API | accepted calls/s | efficiency | max_1s | throttled | late slots |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|")
	for _, mode := range modes {
		for _, p := range procs {
			emu.ResetStats()
			prefix := fmt.Sprintf("bench:%s:%d:%d", mode, p, time.Now().UnixNano())
			var wg sync.WaitGroup
			errs := make([]error, p)
			var late atomic.Int64
			for i := range int(p) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := exec.CommandContext(ctx, self, "bench", "limiter-child", "--mode", mode, "--redis", redisURL,
						"--api-base", base, "--goroutines", strconv.Itoa(o.goroutines), "--duration", o.duration.String(),
						"--apis", o.apis, "--prefix", prefix, "--groups", strings.Join(groups, ","), "--cap", strconv.Itoa(o.cap))
					c.Env = append(os.Environ(), "IMRECALL_SECRET_KEY="+secret)
					c.Stderr = os.Stderr
					b, err := c.Output()
					if err != nil {
						errs[i] = fmt.Errorf("child %d: %v\n%s", i, err, b)
						return
					}
					var r struct{ Late int64 }
					if json.Unmarshal(b, &r) == nil {
						late.Add(r.Late)
					}
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return err
			}
			st := emu.Stats()
			for _, api := range apis {
				s := st[api]
				perSec := steadyRate(s.PerSecond)
				fmt.Fprintf(out, "| %s | %d | %s | %.1f | %.3f | %d | %d | %d |\n", mode, p, api, perSec, perSec/float64(o.cap), s.Max1s, s.Throttled, late.Load())
			}
		}
	}
	return nil
}

// redisBehindProxy starts a redisproxy in front of the server of redisURL
// (redis:// or rediss://, one server) that delays each direction by d, and
// returns the URL through it.
func redisBehindProxy(redisURL string, d time.Duration) (string, func(), error) {
	u, err := url.Parse(redisURL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return "", nil, badInput("--redis-latency needs a one-server redis:// URL, not %q", redactURL(redisURL))
	}
	p, err := redisproxy.Start(u.Host, d)
	if err != nil {
		return "", nil, err
	}
	u.Host = p.Addr()
	return u.String(), func() { _ = p.Close() }, nil
}

// steadyRate averages the accepted calls per second, leaving out the first
// and the last second (processes start and stop).
func steadyRate(series []int64) float64 {
	if len(series) < 3 {
		var sum int64
		for _, n := range series {
			sum += n
		}
		return float64(sum) / float64(max(len(series), 1))
	}
	mid := series[1 : len(series)-1]
	var sum int64
	for _, n := range mid {
		sum += n
	}
	return float64(sum) / float64(len(mid))
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// startPrivateRedis starts redis-server on a free loopback port in a
// temporary directory.
func startPrivateRedis(ctx context.Context) (stop func(), url string, err error) {
	dir, err := os.MkdirTemp("", "imrecall-bench-redis")
	if err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c := exec.CommandContext(ctx, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := c.Start(); err != nil {
		return nil, "", fmt.Errorf("starting redis-server (install it, or pass --redis): %w", err)
	}
	url = fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer rdb.Close()
	for i := 0; ; i++ {
		if rdb.Ping(ctx).Err() == nil {
			break
		}
		if i > 100 {
			_ = c.Process.Kill()
			return nil, "", errors.New("redis-server did not answer")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() { _ = c.Process.Kill(); _ = c.Wait(); _ = os.RemoveAll(dir) }, url, nil
}

type benchChildOptions struct {
	mode, redisURL, apiBase, apis, prefix, groups string
	goroutines, cap                               int
	duration                                      time.Duration
}

func newBenchLimiterChildCmd() *cobra.Command {
	var o benchChildOptions
	cmd := &cobra.Command{
		Use:    "limiter-child",
		Short:  "One process of bench limiter (started by it)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(cmd *cobra.Command, _ []string) error { return runBenchChild(cmd, &o) },
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

// funcGate adapts a wait function to tim.Gate.
type funcGate func(ctx context.Context, api string) error

func (f funcGate) Wait(ctx context.Context, api string) error { return f(ctx, api) }
func (f funcGate) Throttled(context.Context, string, int)     {}

func runBenchChild(cmd *cobra.Command, o *benchChildOptions) error {
	ctx := cmd.Context()
	opt, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return err
	}
	if opt.PoolSize == 0 {
		opt.PoolSize = 2*o.goroutines + 8 // every goroutine may wait on Redis at once
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	var gate tim.Gate
	var late func() int64
	record := func(context.Context) error { return nil }
	switch o.mode {
	case "imrecall":
		l, err := limiter.New(rdb, limiter.Config{Cap: o.cap, Prefix: o.prefix})
		if err != nil {
			return err
		}
		gate = l.ForApp(benchApp)
		late = l.Late
		// The send's record, as the worker's BeginGroup: one Redis write
		// between the reservation and the call.
		record = func(ctx context.Context) error { return rdb.Incr(ctx, o.prefix+":sends").Err() }
	case "xrate":
		lims := map[string]*rate.Limiter{}
		var mu sync.Mutex
		gate = funcGate(func(ctx context.Context, api string) error {
			mu.Lock()
			l := lims[api]
			if l == nil {
				l = rate.NewLimiter(rate.Limit(o.cap), 1)
				lims[api] = l
			}
			mu.Unlock()
			return l.Wait(ctx)
		})
	case "redis_rate":
		rl := redis_rate.NewLimiter(rdb)
		gate = funcGate(func(ctx context.Context, api string) error {
			for {
				res, err := rl.Allow(ctx, o.prefix+":"+api, redis_rate.PerSecond(o.cap))
				if err != nil {
					return err
				}
				if res.Allowed > 0 {
					return nil
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(res.RetryAfter):
				}
			}
		})
	default:
		return badInput("--mode %q", o.mode)
	}
	client, err := tim.New(tim.Config{SDKAppID: benchApp, Admin: benchAdmin, SecretKey: tim.Secret(os.Getenv("IMRECALL_SECRET_KEY")), BaseURL: o.apiBase, Gate: gate})
	if err != nil {
		return err
	}
	groups := strings.Split(o.groups, ",")
	apis := strings.Split(o.apis, ",")
	rctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var calls atomic.Int64
	var wg sync.WaitGroup
	for g := range o.goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			api := apis[g%len(apis)]
			rng := rand.New(rand.NewPCG(uint64(g), uint64(os.Getpid())))
			for rctx.Err() == nil {
				a := tim.GroupMsgRecall
				if api != a.Name() {
					a = tim.AdminMsgWithdraw
				}
				cctx, err := client.Await(rctx, a)
				if err != nil {
					continue
				}
				if err := record(rctx); err != nil {
					continue
				}
				if api == tim.GroupMsgRecall.Name() {
					start := int64(1 + rng.IntN(9000))
					seqs := make([]int64, 10)
					for i := range seqs {
						seqs[i] = start + int64(i)
					}
					_, err = client.RecallGroup(cctx, groups[rng.IntN(len(groups))], "", seqs)
				} else {
					_, err = client.AdminMsgWithdraw(cctx, tim.AdminMsgWithdrawRequest{FromAccount: benchAdmin, ToAccount: benchAdmin,
						MsgKey: fmt.Sprintf("%d_1_1", rng.IntN(1<<30))})
				}
				if rctx.Err() == nil {
					calls.Add(1)
				}
				_ = err // throttles and 20022s are counted by the emulator
			}
		}()
	}
	wg.Wait()
	res := map[string]int64{"calls": calls.Load()}
	if late != nil {
		res["late"] = late()
	}
	b, _ := json.Marshal(res)
	fmt.Fprintln(cmd.OutOrStdout(), string(b))
	return nil
}
