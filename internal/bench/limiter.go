package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/tim"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// RunLimiter starts the emulator in this process (strict cap per API) and,
// unless o.Redis is set, a private redis-server; then for each mode and each
// P runs P child processes ("imrecall bench limiter-child", this binary) for
// o.Duration and prints a table to out: accepted calls/s, efficiency
// (accepted/s ÷ cap) over the run and after the warm-up, the emulator's
// max_1s and throttled calls, and the slots the limiters gave up as late.
func RunLimiter(ctx context.Context, o LimiterConfig, out io.Writer) error {
	if err := o.Validate(); err != nil {
		return err
	}
	lo, hi := o.LatencyMin, o.LatencyMax
	apis := o.APIs
	redisURL := o.Redis
	if redisURL == "" {
		stop, url, err := startPrivateRedis(ctx)
		if err != nil {
			return err
		}
		defer stop()
		redisURL = url
	}
	if o.RedisDelay > 0 {
		url, stop, err := redisBehindProxy(redisURL, o.RedisDelay)
		if err != nil {
			return err
		}
		defer stop()
		redisURL = url
	}
	secret := randomHex(16)
	emu, err := emulator.New(emulator.Config{SDKAppID: App, Admin: Admin, SecretKey: secret, Rate: o.Cap, Latency: lo, LatencyMax: hi, Seed: 1})
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
	hs := emu.HTTPServer()
	go func() { _ = hs.Serve(emulator.ArrivalListener(ln)) }()
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	self, err := os.Executable()
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "emulator cap %d calls/s per API, latency %s, %d goroutines per process, %s per run, APIs %s, Redis one-way delay %v\n\n",
		o.Cap, latencyString(lo, hi), o.Goroutines, o.Duration, strings.Join(apis, ","), o.RedisDelay)
	fmt.Fprintln(out, "| limiter | processes | API | accepted calls/s | efficiency | after warm-up (calls/s, efficiency) | max_1s | throttled | late slots |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|")
	for _, mode := range o.Modes {
		for _, p := range o.Procs {
			emu.ResetStats()
			reset := time.Now()
			prefix := fmt.Sprintf("bench:%s:%d:%d", mode, p, time.Now().UnixNano())
			var wg sync.WaitGroup
			errs := make([]error, p)
			firsts := make([]int64, p) // unix ns of each child's first granted call
			var late atomic.Int64
			for i := range p {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := exec.CommandContext(ctx, self, "bench", "limiter-child", "--mode", mode, "--redis", redisURL,
						"--api-base", base, "--goroutines", strconv.Itoa(o.Goroutines), "--duration", o.Duration.String(),
						"--apis", strings.Join(apis, ","), "--prefix", prefix, "--groups", strings.Join(groups, ","), "--cap", strconv.Itoa(o.Cap))
					c.Env = append(os.Environ(), "IMRECALL_SECRET_KEY="+secret)
					c.Stderr = os.Stderr
					b, err := c.Output()
					if err != nil {
						errs[i] = fmt.Errorf("child %d: %v\n%s", i, err, b)
						return
					}
					var r struct{ Late, First int64 }
					if json.Unmarshal(b, &r) == nil {
						late.Add(r.Late)
						firsts[i] = r.First
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
				after := "n/a"
				if settled, ok := settledRate(s.PerSecond, settleSecond(reset, time.Unix(0, slices.Max(firsts)))); ok {
					after = fmt.Sprintf("%.1f, %.3f", settled, settled/float64(o.Cap))
				}
				fmt.Fprintf(out, "| %s | %d | %s | %.1f | %.3f | %s | %d | %d | %d |\n", mode, p, api, perSec, perSec/float64(o.Cap),
					after, s.Max1s, s.Throttled, late.Load())
			}
		}
	}
	return nil
}

// warmSpread bounds how long after its slot a warming child's call is
// bounded (the worst case, before its write is reported): the limiter's
// tolerance, slack and warm-up, and 10 ms for its round trip to Redis.
const warmSpread = limiter.DefaultTolerance + limiter.DefaultSlack + limiter.WarmUpSpread + 10*time.Millisecond

// settleSecond is the first second of the emulator's series (counted from
// 0 at reset) in which no call can come from the limiter's start-up: the
// last child to start was granted its first call at lastFirst, warms up
// for limiter.DefaultWarmUp, may book its last warm slot up to
// limiter.DefaultHorizon after that, and that slot's bound counts for the
// slots up to 1 s after it.
func settleSecond(reset, lastFirst time.Time) int {
	end := lastFirst.Sub(reset) + limiter.DefaultWarmUp + limiter.DefaultHorizon + time.Second + warmSpread
	return int(math.Ceil(end.Seconds()))
}

// settledRate averages the accepted calls per second from second from
// on, leaving out the last second (the children stop); ok is false when no
// such second is left.
func settledRate(series []int64, from int) (rate float64, ok bool) {
	if from < 1 || len(series)-1 <= from {
		return 0, false
	}
	return steadyRate(series[from-1:]), true
}

// funcGate adapts a wait function to tim.Gate.
type funcGate func(ctx context.Context, api string) error

func (f funcGate) Wait(ctx context.Context, api string) error { return f(ctx, api) }
func (f funcGate) Throttled(context.Context, string, int)     {}

// RunLimiterChild calls the APIs through the IM client and o.Mode's limiter
// with o.Goroutines goroutines for o.Duration, and prints
// {"calls":N,"first":unix ns of the first call granted,"late":N} to out.
func RunLimiterChild(ctx context.Context, o ChildConfig, out io.Writer) error {
	if len(o.APIs) == 0 || len(o.Groups) == 0 || o.Goroutines <= 0 || o.Cap <= 0 {
		return configError("limiter-child: --apis, --groups, --goroutines and --cap are required")
	}
	opt, err := redis.ParseURL(o.Redis)
	if err != nil {
		return err
	}
	if opt.PoolSize == 0 {
		opt.PoolSize = 2*o.Goroutines + 8 // every goroutine may wait on Redis at once
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	var gate tim.Gate
	var late func() int64
	record := func(context.Context) error { return nil }
	switch o.Mode {
	case "imrecall":
		l, err := limiter.New(rdb, limiter.Config{Cap: o.Cap, Prefix: o.Prefix})
		if err != nil {
			return err
		}
		gate = l.ForApp(App)
		late = l.Late
		// The send's record, as the worker's BeginGroup: one Redis write
		// between the reservation and the call.
		record = func(ctx context.Context) error { return rdb.Incr(ctx, o.Prefix+":sends").Err() }
	case "xrate":
		lims := map[string]*rate.Limiter{}
		var mu sync.Mutex
		gate = funcGate(func(ctx context.Context, api string) error {
			mu.Lock()
			l := lims[api]
			if l == nil {
				l = rate.NewLimiter(rate.Limit(o.Cap), 1)
				lims[api] = l
			}
			mu.Unlock()
			return l.Wait(ctx)
		})
	case "redis_rate":
		rl := redis_rate.NewLimiter(rdb)
		gate = funcGate(func(ctx context.Context, api string) error {
			for {
				res, err := rl.Allow(ctx, o.Prefix+":"+api, redis_rate.PerSecond(o.Cap))
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
		return configError("--mode %q", o.Mode)
	}
	client, err := tim.New(tim.Config{SDKAppID: App, Admin: Admin, SecretKey: tim.Secret(os.Getenv("IMRECALL_SECRET_KEY")), BaseURL: o.APIBase, Gate: gate})
	if err != nil {
		return err
	}
	groups, apis := o.Groups, o.APIs
	rctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var calls, first atomic.Int64 // first: unix ns of the first call granted
	var wg sync.WaitGroup
	for g := range o.Goroutines {
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
				first.CompareAndSwap(0, time.Now().UnixNano())
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
					_, err = client.AdminMsgWithdraw(cctx, tim.AdminMsgWithdrawRequest{FromAccount: Admin, ToAccount: Admin,
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
	res := map[string]int64{"calls": calls.Load(), "first": first.Load()}
	if late != nil {
		res["late"] = late()
	}
	b, _ := json.Marshal(res)
	fmt.Fprintln(out, string(b))
	return nil
}
