// Package limiter keeps every imrecall process, on every host, under one
// rate cap per (SDKAppID, API), coordinated through Redis.
//
// # Algorithm: reservation GCRA with a burst of one
//
// Tencent rejects the 201st call in any sliding second (60007), and a
// rejected call is wasted. A hard cap over any sliding window rules out fixed
// windows (up to 2× at a boundary) and GCRA with a large burst (redis_rate's
// PerSecond(200) admits ≈400 in one second after an idle spell). A
// sliding-window log is exact at grant time but costs three commands per
// call and makes waiters poll.
//
// This limiter keeps one theoretical arrival time (TAT) per key. A Lua script
// reads Redis's own clock (TIME, so host clocks never matter), reserves the
// next free slot for the caller, max(TAT, now, pause-until), moves TAT one
// interval on, and answers how long to sleep until that slot. Slots are
// exactly one interval apart, so any window of length W holds at most
// W/interval + 1 of them: a burst of one. Waiters queue in arrival order
// with one round trip each and never poll.
//
// What is left is jitter between a slot and the call's arrival at Tencent
// (sleep accuracy, scheduling, the network): arrivals in any second come from
// slots in a second widened by the jitter J, so at most R·(1 s + J) + 1
// arrive. The default margin of 2.5 % (195 calls/s under a cap of 200)
// absorbs J up to about 20 ms and keeps ≥ 97 % of the cap.
//
// Jitter at the source is also bounded: a waiter that wakes more than
// Tolerance after its slot (a stalled process, an overloaded host) gives the
// slot up and reserves a new one instead of firing late next to calls that
// are on time. A stall then costs throughput, never the cap.
//
// A slot reserved further than Horizon ahead is not taken: the caller sleeps
// and asks again, so a backlog never books the future far in advance.
//
// # Server feedback and failure
//
// A throttle code from the server (60007, 60011, 60018, 60019; 70050 for a
// minute) pauses the key for every process: a shared pause-until that the
// script honours. If Redis cannot be reached, Wait keeps retrying with
// back-off and grants nothing: the limiter fails closed.
//
// Every key of one (app, API) pair shares a hash tag, so the script works on
// Redis Cluster; it also runs on miniredis for the embedded default.
package limiter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultCap is Tencent's default limit per API per app, in calls/s.
const DefaultCap = 200

// DefaultMargin is the fraction of the cap left unused to absorb jitter.
const DefaultMargin = 0.025

// DefaultHorizon is how far ahead a slot may be reserved.
const DefaultHorizon = 2 * time.Second

// DefaultTolerance is how late a waiter may wake and still use its slot.
const DefaultTolerance = 8 * time.Millisecond

// Key names one budget: an API of an app.
type Key struct {
	AppID int64
	API   string // the path's last segment, e.g. "group_msg_recall"
}

func (k Key) String() string { return strconv.FormatInt(k.AppID, 10) + ":" + k.API }

// Config configures a Limiter. Every zero value means the documented default.
type Config struct {
	// Cap is the calls/s allowed per API per app, for all processes
	// together. Zero: DefaultCap.
	Cap int
	// CapOf overrides Cap per API (by the path's last segment); 0 means
	// unlimited.
	CapOf map[string]int
	// Margin is the fraction of the cap left unused, from 0 to 0.5. Zero:
	// DefaultMargin; negative: none.
	Margin float64
	// Horizon bounds how far ahead a slot is reserved. Zero: DefaultHorizon.
	Horizon time.Duration
	// Tolerance is how late after its slot a waiter may wake and still use
	// it; a later waiter reserves again. Zero: DefaultTolerance.
	Tolerance time.Duration
	// Prefix starts every key. Empty: "imrecall:rl".
	Prefix string
	// Logger; nil discards.
	Logger *slog.Logger
	// Observer, if set, is told how long each granted Wait waited.
	Observer func(k Key, waited time.Duration)
}

// Limiter is safe for concurrent use.
type Limiter struct {
	rdb redis.UniversalClient
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	paused map[Key]time.Time // local copy of pauses this process set

	late atomic.Int64 // slots given up because the waiter woke too late
}

// Late counts the slots given up because their waiter woke too late.
func (l *Limiter) Late() int64 { return l.late.Load() }

// New returns a limiter on rdb.
func New(rdb redis.UniversalClient, cfg Config) (*Limiter, error) {
	if rdb == nil {
		return nil, errors.New("limiter: nil Redis client")
	}
	if cfg.Cap == 0 {
		cfg.Cap = DefaultCap
	}
	if cfg.Cap < 0 {
		return nil, fmt.Errorf("limiter: Cap %d is negative", cfg.Cap)
	}
	for api, n := range cfg.CapOf {
		if n < 0 {
			return nil, fmt.Errorf("limiter: CapOf[%s] %d is negative", api, n)
		}
	}
	switch {
	case cfg.Margin == 0:
		cfg.Margin = DefaultMargin
	case cfg.Margin < 0:
		cfg.Margin = 0
	case cfg.Margin > 0.5:
		return nil, fmt.Errorf("limiter: Margin %v: want 0 to 0.5", cfg.Margin)
	}
	if cfg.Horizon <= 0 {
		cfg.Horizon = DefaultHorizon
	}
	if cfg.Tolerance <= 0 {
		cfg.Tolerance = DefaultTolerance
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "imrecall:rl"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Limiter{rdb: rdb, cfg: cfg, log: log, paused: map[Key]time.Time{}}, nil
}

// Rate is the calls/s the limiter grants for k (0: unlimited).
func (l *Limiter) Rate(k Key) float64 {
	c := l.cfg.Cap
	if n, ok := l.cfg.CapOf[k.API]; ok {
		c = n
	}
	if c == 0 {
		return 0
	}
	return float64(c) * (1 - l.cfg.Margin)
}

func (l *Limiter) interval(k Key) time.Duration {
	r := l.Rate(k)
	if r == 0 {
		return 0
	}
	return time.Duration(math.Ceil(float64(time.Second) / r))
}

func (l *Limiter) keys(k Key) []string {
	base := l.cfg.Prefix + ":{" + k.String() + "}"
	return []string{base + ":tat", base + ":pause"}
}

// reserveScript reserves the next slot. KEYS: tat, pause. ARGV: interval µs,
// horizon µs. Returns {1, wait µs} when a slot was reserved, or {0, µs to
// wait before asking again}.
var reserveScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
local slot = math.max(tat, now, pause)
local wait = slot - now
if wait > horizon then
  return {0, wait - horizon}
end
local nexttat = slot + interval
redis.call('SET', KEYS[1], string.format('%d', nexttat), 'PX', math.floor((nexttat - now) / 1000) + 1000)
return {1, wait}
`)

// pauseScript sets pause-until to now + d unless it is already later.
// KEYS: pause. ARGV: d µs.
var pauseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then
  redis.call('SET', KEYS[1], string.format('%d', untl), 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 1000)
end
return 1
`)

// Wait blocks until a call for k may be made, or ctx ends. It returns nil
// only with a slot granted; on a Redis failure it keeps retrying (fails
// closed) until ctx ends, and then returns ctx's error joined with the last
// Redis error.
func (l *Limiter) Wait(ctx context.Context, k Key) error {
	start := time.Now()
	iv := l.interval(k)
	if iv == 0 {
		return ctx.Err()
	}
	if err := l.waitLocalPause(ctx, k); err != nil {
		return err
	}
	keys := l.keys(k)
	backoff := 20 * time.Millisecond
	var lastErr error
	lastLog := time.Time{}
	for {
		asked := time.Now()
		res, err := reserveScript.Run(ctx, l.rdb, keys, iv.Microseconds(), l.cfg.Horizon.Microseconds()).Int64Slice()
		if err == nil && len(res) != 2 {
			err = fmt.Errorf("unexpected answer %v", res)
		}
		if err != nil {
			if ctx.Err() != nil {
				return errors.Join(ctx.Err(), lastErr)
			}
			lastErr = fmt.Errorf("limiter %s: reserving a slot: %w", k, err)
			if time.Since(lastLog) > 5*time.Second {
				l.log.Warn("limiter cannot reach Redis; holding calls back", "api", k.API, "err", err)
				lastLog = time.Now()
			}
			if err := sleep(ctx, backoff); err != nil {
				return errors.Join(err, lastErr)
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		d := time.Duration(res[1]) * time.Microsecond
		if err := sleep(ctx, d); err != nil {
			return err
		}
		// Redis read its clock after we asked, so the slot is no earlier
		// than asked+d: waking later than that plus Tolerance means this
		// process stalled (or Redis answered slowly), and the call would
		// arrive bunched with calls that are on time.
		if res[0] == 1 && time.Since(asked) > d+l.cfg.Tolerance {
			l.late.Add(1)
			continue
		}
		if res[0] == 1 {
			if l.cfg.Observer != nil {
				l.cfg.Observer(k, time.Since(start))
			}
			return nil
		}
	}
}

// waitLocalPause honours a pause this process set itself, without a round
// trip; pauses set by other processes are honoured by the script.
func (l *Limiter) waitLocalPause(ctx context.Context, k Key) error {
	l.mu.Lock()
	until := l.paused[k]
	l.mu.Unlock()
	if d := time.Until(until); d > 0 {
		return sleep(ctx, d)
	}
	return nil
}

// Pause holds every process's calls for k back for d.
func (l *Limiter) Pause(ctx context.Context, k Key, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	l.mu.Lock()
	if until := time.Now().Add(d); until.After(l.paused[k]) {
		l.paused[k] = until
	}
	l.mu.Unlock()
	if err := pauseScript.Run(ctx, l.rdb, l.keys(k)[1:], d.Microseconds()).Err(); err != nil {
		return fmt.Errorf("limiter %s: pausing for %v: %w", k, d, err)
	}
	l.log.Warn("rate limited by the server: pausing this API for every process", "api", k.API, "wait", d)
	return nil
}

// ThrottlePause is how long a throttle code pauses an API.
func ThrottlePause(code int) time.Duration {
	if code == 70050 { // too many UserSig checks: retry after a minute
		return time.Minute
	}
	return time.Second
}

// AppGate is the limiter seen by one app's IM client: it satisfies the
// client's Gate (Wait, Throttled).
type AppGate struct {
	l     *Limiter
	appID int64
}

// ForApp returns the gate of one app.
func (l *Limiter) ForApp(appID int64) *AppGate { return &AppGate{l: l, appID: appID} }

// Wait blocks until a call of api may be made.
func (g *AppGate) Wait(ctx context.Context, api string) error {
	return g.l.Wait(ctx, Key{AppID: g.appID, API: api})
}

// Throttled pauses api for every process after the server answered a
// throttle code.
func (g *AppGate) Throttled(ctx context.Context, api string, code int) {
	if err := g.l.Pause(context.WithoutCancel(ctx), Key{AppID: g.appID, API: api}, ThrottlePause(code)); err != nil {
		g.l.log.Error("could not share a throttle pause", "api", api, "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
