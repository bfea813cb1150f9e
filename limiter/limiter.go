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
// # Redis a few milliseconds away
//
// A slot's local time is the arrival of the reply that granted it plus the
// wait Redis answered. Redis read its clock before replying, so a call made
// then is never early; and lateness is counted from there, so a round trip
// longer than Tolerance is not mistaken for a stall (measured from before
// the request, every slot would be given up past an 8 ms round trip). What
// is bounded instead is the round trip's variation: a reply that took more
// than Tolerance longer than the smoothed round trip gives its slot up, as
// its slot's local time may be that much late.
//
// Reserve lets a caller work between the grant and the call: it books a
// slot no earlier than a lead from now and returns that lead before it. The
// lead is one and a half of the round trips this process has measured, plus
// a millisecond: time for the worker to record the send in Redis while the
// slot approaches, so the call needs one limiter wait whatever the round
// trip. The Reservation's Wait sleeps out the rest; a caller later than
// Tolerance past the slot is given a new one there.
//
// # Caps stored with the budget
//
// The first process to use a budget stores its cap beside it (a ":cap" key,
// "200" or "unlimited"). A process with another cap is refused at start
// (CheckCaps) and at every reservation (CapMismatchError): processes sharing
// a budget with different caps would let the faster one exceed the slower
// one's cap. SetCap changes the stored cap on purpose.
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imrecall/imrecall/tim"
	"github.com/redis/go-redis/v9"
)

// DefaultCap is Tencent's default limit per API per app, in calls/s: the
// one constant, tim.DefaultRateLimit.
const DefaultCap = tim.DefaultRateLimit

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

// Unlimited, as a Cap or a CapOf value, lifts the cap of an API: the limiter
// grants every call at once and never asks Redis. It is the only way to lift
// a cap; 0 is refused in CapOf.
const Unlimited = -1

// FormatCap is a cap as stored in Redis and shown to people: "200" or
// "unlimited".
func FormatCap(c int) string {
	if c == Unlimited {
		return "unlimited"
	}
	return strconv.Itoa(c)
}

// ParseCap parses a cap: a whole number of calls/s above 0, or the word
// "unlimited" (Unlimited). 0 is refused rather than read as "unlimited".
func ParseCap(s string) (int, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "unlimited") {
		return Unlimited, nil
	}
	n, err := strconv.Atoi(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("cap %q: want a whole number of calls/s above 0, or unlimited", s)
	case n <= 0:
		return 0, fmt.Errorf("cap %d: want a whole number of calls/s above 0, or unlimited (0 does not mean unlimited)", n)
	}
	return n, nil
}

// Config configures a Limiter. Every zero value means the documented default.
type Config struct {
	// Cap is the calls/s allowed per API per app, for all processes
	// together. Zero: DefaultCap; Unlimited: no cap.
	Cap int
	// CapOf overrides Cap per API (by the path's last segment): a positive
	// number of calls/s, or Unlimited. 0 is refused.
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
	rtt  atomic.Int64 // smoothed round trip of a reservation, ns

	mismatchLog atomic.Int64 // unix ns of the last cap mismatch logged
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
	if cfg.Cap < 0 && cfg.Cap != Unlimited {
		return nil, fmt.Errorf("limiter: Cap %d is negative", cfg.Cap)
	}
	for api, n := range cfg.CapOf {
		if n == 0 {
			return nil, fmt.Errorf("limiter: CapOf[%s] is 0: want calls/s above 0, or Unlimited to lift the cap", api)
		}
		if n < 0 && n != Unlimited {
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

// CapOf is the cap this limiter applies to api: calls/s, or Unlimited.
func (l *Limiter) CapOf(api string) int {
	if n, ok := l.cfg.CapOf[api]; ok {
		return n
	}
	return l.cfg.Cap
}

// Rate is the calls/s the limiter grants for k (0: unlimited).
func (l *Limiter) Rate(k Key) float64 {
	c := l.CapOf(k.API)
	if c == Unlimited {
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

// keys are the budget's keys: tat, pause, cap.
func (l *Limiter) keys(k Key) []string {
	base := l.cfg.Prefix + ":{" + k.String() + "}"
	return []string{base + ":tat", base + ":pause", base + ":cap"}
}

// reserveScript reserves the next slot. KEYS: tat, pause, cap. ARGV:
// interval µs, horizon µs, this process's cap, lead µs (the slot is no
// earlier than now + lead: the caller's own work before the call). Returns {1, wait µs} when a
// slot was reserved, {0, µs to wait before asking again}, or {-1, the stored
// cap} when the budget is stored with another cap (nothing reserved). The
// first process to use a budget stores its cap.
var reserveScript = redis.NewScript(`
local stored = redis.call('GET', KEYS[3])
if not stored then
  redis.call('SET', KEYS[3], ARGV[3])
elseif stored ~= ARGV[3] then
  return {-1, stored}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
local slot = math.max(tat, now + tonumber(ARGV[4]), pause)
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

// capScript stores the cap of a budget unless one is stored, and returns
// the stored one. KEYS: cap. ARGV: this process's cap.
var capScript = redis.NewScript(`
local stored = redis.call('GET', KEYS[1])
if not stored then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return stored
`)

// CapMismatchError says that a budget in Redis is stored with another cap
// than this process's: processes sharing a budget would not agree on the
// rate. Changing a stored cap is an operator's act (SetCap).
type CapMismatchError struct {
	Key    Key
	Stored string // the cap stored with the budget, as FormatCap
	Ours   string // this process's cap for the API
}

// Unwrap makes the error tim.ErrThrottled: the limiter refuses to grant, so
// a caller holds its calls back (ClassThrottled) without spending a
// message's attempts, until an operator settles the cap.
func (e *CapMismatchError) Unwrap() error { return tim.ErrThrottled }

func (e *CapMismatchError) Error() string {
	return fmt.Sprintf("limiter: API %s of app %d: this process's cap is %s but the shared budget in Redis is stored with cap %s: "+
		"every process sharing a budget must use the same cap (fix --cap/--cap-of, or store a new cap on purpose by starting one worker with --reset-cap)",
		e.Key.API, e.Key.AppID, e.Ours, e.Stored)
}

// CheckCaps stores this process's cap for each API of app in Redis where
// none is stored yet, and returns a *CapMismatchError (joined, one per API)
// for every API whose stored cap differs. Call it at start: a process that
// disagrees with the others must not start.
func (l *Limiter) CheckCaps(ctx context.Context, app int64, apis []string) error {
	var errs []error
	for _, api := range apis {
		k := Key{AppID: app, API: api}
		ours := FormatCap(l.CapOf(api))
		stored, err := capScript.Run(ctx, l.rdb, l.keys(k)[2:], ours).Text()
		if err != nil {
			return fmt.Errorf("limiter %s: checking the stored cap: %w", k, err)
		}
		if stored != ours {
			errs = append(errs, &CapMismatchError{Key: k, Stored: stored, Ours: ours})
		}
	}
	return errors.Join(errs...)
}

// SetCap stores cap (calls/s, or Unlimited) as the cap of k's budget,
// replacing any stored one, and returns the previous value ("" if none).
// Processes started with another cap then refuse to start, and running ones
// stop granting calls for k until they are restarted with the new cap.
func SetCap(ctx context.Context, rdb redis.UniversalClient, prefix string, k Key, cap int) (previous string, err error) {
	if cap <= 0 && cap != Unlimited {
		return "", fmt.Errorf("limiter: cap %d: want calls/s above 0, or Unlimited", cap)
	}
	if prefix == "" {
		prefix = "imrecall:rl"
	}
	key := prefix + ":{" + k.String() + "}:cap"
	prev, err := rdb.SetArgs(ctx, key, FormatCap(cap), redis.SetArgs{Get: true}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("limiter %s: storing cap %s: %w", k, FormatCap(cap), err)
	}
	return prev, nil
}

// StoredCap returns the cap stored with k's budget ("" if none).
func StoredCap(ctx context.Context, rdb redis.UniversalClient, prefix string, k Key) (string, error) {
	if prefix == "" {
		prefix = "imrecall:rl"
	}
	v, err := rdb.Get(ctx, prefix+":{"+k.String()+"}:cap").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// Wait blocks until a call for k may be made, or ctx ends. It returns nil
// only with a slot granted; on a Redis failure it keeps retrying (fails
// closed) until ctx ends, and then returns ctx's error joined with the last
// Redis error. A budget stored with another cap is a *CapMismatchError.
func (l *Limiter) Wait(ctx context.Context, k Key) error {
	r, err := l.Reserve(ctx, k, 0)
	if err != nil {
		return err
	}
	return r.Wait(ctx)
}

// Reservation is a slot reserved for one call. Its time is local: when the
// reply that granted it arrived plus the wait Redis answered, so the round
// trip to Redis never counts as lateness.
type Reservation struct {
	l     *Limiter
	k     Key
	slot  time.Time // zero: unlimited, no slot
	start time.Time
}

// Slot is the local time of the reserved slot (zero for an unlimited API).
func (r *Reservation) Slot() time.Time { return r.slot }

// Lead is how long before its slot Reserve returns to a caller that asked
// for DefaultLead: about one and a half Redis round trips as this process
// has measured them, plus a millisecond, so that the caller can record the
// send in Redis while the slot approaches.
func (l *Limiter) Lead() time.Duration {
	return time.Duration(l.rtt.Load())*3/2 + time.Millisecond
}

// DefaultLead asks Reserve to return Lead() before the slot.
const DefaultLead time.Duration = -1

// Reserve reserves k's next slot, no earlier than lead from now, and sleeps
// until lead before it (lead DefaultLead: Lead()), so that the caller can do
// its own work, such as recording the send, before the slot; then the
// caller calls Reservation.Wait. A caller stopped during Reserve's sleep has
// reserved a slot it will not use (a gap in the rate, never an excess).
// Errors are those of Wait.
func (l *Limiter) Reserve(ctx context.Context, k Key, lead time.Duration) (*Reservation, error) {
	r := &Reservation{l: l, k: k, start: time.Now()}
	if l.interval(k) == 0 {
		return r, ctx.Err()
	}
	if err := l.waitLocalPause(ctx, k); err != nil {
		return nil, err
	}
	if l.rtt.Load() == 0 {
		// No round trip measured yet: load the script (a first EVALSHA
		// would cost a second round trip, NOSCRIPT then EVAL, and its slot
		// be given up as a slow reply) and measure one, or the first slots
		// would be reserved with too short a lead and given up as late.
		asked := time.Now()
		if err := reserveScript.Load(ctx, l.rdb).Err(); err == nil {
			l.observeRTT(time.Since(asked))
		}
	}
	for {
		lead := lead
		if lead == DefaultLead {
			lead = l.Lead()
		}
		slot, err := l.book(ctx, k, lead)
		if err != nil {
			return nil, err
		}
		if err := sleep(ctx, time.Until(slot.Add(-lead))); err != nil {
			return nil, err
		}
		// Waking later than Tolerance after the slot means this process
		// stalled: the call would arrive bunched with calls that are on
		// time. Give the slot up and reserve again.
		if time.Since(slot) > l.cfg.Tolerance {
			l.late.Add(1)
			continue
		}
		r.slot = slot
		return r, nil
	}
}

// Wait sleeps until the slot, and returns nil when the call may be made. If
// the caller comes back later than Tolerance after the slot, the slot is
// given up (counted in Late) and a new one is reserved and waited for.
func (r *Reservation) Wait(ctx context.Context) error {
	if r.slot.IsZero() { // unlimited
		return ctx.Err()
	}
	for {
		if err := sleep(ctx, time.Until(r.slot)); err != nil {
			return err
		}
		if time.Since(r.slot) <= r.l.cfg.Tolerance {
			break
		}
		r.l.late.Add(1)
		nr, err := r.l.Reserve(ctx, r.k, 0) // the caller is ready: no lead
		if err != nil {
			return err
		}
		r.slot = nr.slot
	}
	if r.l.cfg.Observer != nil {
		r.l.cfg.Observer(r.k, time.Since(r.start))
	}
	return nil
}

// book reserves a slot within Horizon, no earlier than lead from now, and
// returns its local time: the arrival of the granting reply plus the wait
// Redis computed. Redis read its clock before replying, so the true slot is
// no later than that: a call made then is never early. A reply much slower
// than the usual round trip gives its slot up (counted in Late): the slot's
// local time would be late by up to that delay. Redis failures are retried
// with back-off (fail closed) until ctx ends.
func (l *Limiter) book(ctx context.Context, k Key, lead time.Duration) (time.Time, error) {
	keys := l.keys(k)
	iv := l.interval(k)
	ours := FormatCap(l.CapOf(k.API))
	backoff := 20 * time.Millisecond
	var lastErr error
	lastLog := time.Time{}
	for {
		asked := time.Now()
		res, err := reserveScript.Run(ctx, l.rdb, keys, iv.Microseconds(), l.cfg.Horizon.Microseconds(), ours, lead.Microseconds()).Slice()
		got := time.Now()
		var code, n int64
		if err == nil {
			code, n, err = parseReply(res)
		}
		if err == nil && code == -1 {
			err := &CapMismatchError{Key: k, Stored: fmt.Sprint(res[1]), Ours: ours}
			if now := time.Now().UnixNano(); now-l.mismatchLog.Load() > int64(10*time.Second) {
				l.mismatchLog.Store(now)
				l.log.Error("the shared budget is stored with another cap: granting no call until this process runs with the stored cap",
					"api", k.API, "stored_cap", err.Stored, "cap", ours)
			}
			return time.Time{}, err
		}
		if err != nil {
			if ctx.Err() != nil {
				return time.Time{}, errors.Join(ctx.Err(), lastErr)
			}
			lastErr = fmt.Errorf("limiter %s: reserving a slot: %w", k, err)
			if time.Since(lastLog) > 5*time.Second {
				l.log.Warn("limiter cannot reach Redis; holding calls back", "api", k.API, "err", err)
				lastLog = time.Now()
			}
			if err := sleep(ctx, backoff); err != nil {
				return time.Time{}, errors.Join(err, lastErr)
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		rtt := got.Sub(asked)
		usual := time.Duration(l.rtt.Load())
		l.observeRTT(rtt)
		d := time.Duration(n) * time.Microsecond
		if code == 1 {
			// The slot is placed at the reply's arrival: a reply that took
			// Tolerance longer than usual (a stalled reader, a congested
			// path) may have arrived long after Redis read its clock, and
			// the call would go late next to calls that are on time.
			if usual > 0 && rtt > usual+l.cfg.Tolerance {
				l.late.Add(1)
				continue
			}
			return got.Add(d), nil
		}
		if err := sleep(ctx, d); err != nil { // beyond the horizon: ask again later
			return time.Time{}, err
		}
	}
}

// parseReply reads the script's {code, n} reply (n is a string with code -1).
func parseReply(res []any) (code, n int64, err error) {
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("unexpected answer %v", res)
	}
	code, ok := res[0].(int64)
	if !ok {
		return 0, 0, fmt.Errorf("unexpected answer %v", res)
	}
	if code == -1 {
		return code, 0, nil
	}
	n, ok = res[1].(int64)
	if !ok {
		return 0, 0, fmt.Errorf("unexpected answer %v", res)
	}
	return code, n, nil
}

// observeRTT folds one round trip into the smoothed estimate (1/8 weight).
func (l *Limiter) observeRTT(d time.Duration) {
	for {
		old := l.rtt.Load()
		nw := int64(d)
		if old != 0 {
			nw = old + (int64(d)-old)/8
		}
		if l.rtt.CompareAndSwap(old, nw) {
			return
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
// client's Gate and Reserver (Wait, Reserve, Throttled).
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

// Reserve reserves the next slot of api and returns Lead() before it (see
// Limiter.Reserve).
func (g *AppGate) Reserve(ctx context.Context, api string) (tim.Slot, error) {
	r, err := g.l.Reserve(ctx, Key{AppID: g.appID, API: api}, DefaultLead)
	if err != nil {
		return nil, err
	}
	return r, nil
}

var _ tim.Reserver = (*AppGate)(nil)

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
