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
// reads Redis's own clock (TIME: the hosts' clocks never set the pace; each
// process learns how its clock stands to Redis's), reserves the
// next free slot for the caller, max(TAT, now, pause-until), moves TAT one
// interval (1 s ÷ cap) on, and answers how long to sleep until that slot. Slots are
// exactly one interval apart, so any window of length W holds at most
// W/interval + 1 of them: a burst of one. Waiters queue in arrival order
// with one round trip each and never poll.
//
// What is left is jitter between a slot and the call's arrival at Tencent
// (sleep accuracy, scheduling, dials, the network), and a burst of one only
// bounds slots, not arrivals. So every call granted also gets a bound: the
// latest it may arrive, kept in Redis in a sorted set beside the TAT. A
// slot at t is granted only when fewer than cap of the calls granted before
// have a bound later than t − 1 s: t is at least the cap-th latest bound +
// 1 s. Then no sliding second holds more than cap arrivals: of the calls
// that arrive in a second, the one granted last saw every other's bound
// later than the second's start, so there are at most cap − 1 others. Calls
// whose bound is more than a second old are dropped from the set.
//
// Jitter at the source is bounded: a waiter that wakes more than Tolerance
// after its slot (a stalled process, an overloaded host) gives the slot up
// (its bound becomes 0: no call) and reserves a new one. A stall then costs
// throughput, never the cap.
//
// # Bounds: assumed at the grant, measured at the write
//
// A call's bound is first the worst its process allows: slot + Tolerance
// (how late after its slot a waiter may go) + Slack + how well the process
// knows Redis's clock (below) + 20 ms while the process warms up (its
// first second of reservations, or the first after a minute without any:
// its HTTP client dials) + the backoff after throttles. When the request
// has been written (its last byte handed to the connection:
// tim.WhenWritten and Reservation.Sent) the process reports the truth: the
// latest the write may be on Redis's clock + Slack + backoff. The report
// travels with the process's next reservation of the API, long
// before the slot a second later that it matters to (slots are booked at
// most Horizon, 750 ms, ahead). A call written more than once (the
// transport replays a request on a fresh connection) is reported each
// time, and the latest write counts. Slack is what the
// limiter cannot see: from the write to the server counting the call
// (10 ms). The emulator counts a call when the kernel received its bytes:
// counted when its own handler ran, on this project's loaded 2-core test
// machine it placed calls up to 7 ms (p99 1.2 ms), and once over 10 ms,
// after they were written, and judged its own scheduling.
//
// So the budget runs at cap × 1 s ÷ (1 s + what calls really take), not ÷
// (1 s + the worst they may take): with Redis on loopback, 0.987–0.988 of the
// cap (197.5 of 200 calls/s) where a spacing sized for the worst case ran at
// 0.983–0.986, and a fixed 2.5 % margin at 0.975. A call written late (a
// dial, a stalled writer) is bounded as late as it was for the slots
// granted after its report, and one of cap calls late costs the budget
// almost nothing (only the cap-th latest bound counts, not the latest).
// Slack needs to cover only how much the path from the write to the
// server's count varies, not its length: a constant delay shifts every
// arrival alike. A write is reported when the socket took the request
// (tim's connections report it themselves: HTTP/1's transport flushes its
// buffer after telling httptrace the request was written, and a process
// descheduled in between would send later than it reported).
//
// Processes of an older imrecall (before the bounds) write no bounds and
// space slots for their own spread; each writes a ":spread" key at every
// reservation, lapsing 5 s after its last. While that key exists this
// process grants nothing (OlderProcessError, held back as a throttle):
// upgrade every process of a budget together.
//
// A throttle code from the server means the bounds were too short (or
// another caller uses the budget): the first one adds 10 ms of backoff to
// the bound of every call granted after it, by any process, each further
// one (one per pause: the calls in flight are all refused at once) within
// 10 minutes doubles it, up to 250 ms (a fifth of the cap), and it lapses
// 10 minutes after the last. A Config.Margin other than 0 also spaces slots
// at the cap less that margin (negative: at the cap), bounds still held.
//
// # Redis a few milliseconds away
//
// Every reply of the reserve script reads Redis's clock at some instant
// between its request's start and its arrival here, which bounds the
// offset between Redis's clock and this process's on both sides. The
// tightest bounds seen (each widened by 1,000 ppm of drift for its age and
// given up for the next reply's once a second old; a reply outside them,
// after the Redis host's clock was stepped, starts them over) know Redis's
// clock to within the fastest
// request leg plus the fastest reply leg: tens of µs on loopback, the round
// trip's floor when Redis is far (redisClock). A slot's local time is the
// latest it may be by those bounds, so a call made then is never early,
// and a write is placed on Redis's clock at the latest it may be. Neither
// depends on how long the reply that granted the slot took: a reply held
// up on its way (a busy Redis, a descheduled reader) neither widens the
// bound of the call it granted nor is mistaken for a stall, and a round
// trip longer than Tolerance costs nothing but its width (measured from
// before the request, every slot would be given up past an 8 ms round
// trip). The bound sent with a reservation covers the clock's uncertainty
// then (at most the usual round trip: after an idle spell the bounds have
// widened, and the reply tightens them) and its widening by the drift to a
// slot as far as the horizon (1.5 ms); whatever the slot's placement is
// less sure than that (the bounds started over) counts toward Tolerance
// with the waiter's own lateness.
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
// A slot reserved further than Horizon (750 ms) ahead is not taken: the
// caller sleeps and asks again. So a backlog never books the future far in
// advance, and the bounds that decide a slot are those of calls written a
// quarter of a second or more before it is granted: their reports are in
// (a report that raises a bound, after a dial or a stall between the
// slot's check and the write, counts for every slot granted after it; one
// that came later than a slot needed it would have to be 250 ms late).
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

// DefaultSlack is how much later than its request was written a call may be
// counted by the server than others are: the variation of the network and
// of the server's own path to its count, which the limiter cannot see.
const DefaultSlack = 10 * time.Millisecond

// A process warming up (its first reservations, or its first after an idle
// spell, when its HTTP client dials new connections) adds WarmUpSpread to
// its spread for DefaultWarmUp.
const (
	DefaultWarmUp = time.Second
	WarmUpSpread  = 20 * time.Millisecond
	idleSpell     = time.Minute
)

// Backoff after throttles: the first adds FirstBackoff to the spread, each
// further one within BackoffLapse doubles it, up to MaxBackoff.
const (
	FirstBackoff = 10 * time.Millisecond
	MaxBackoff   = 250 * time.Millisecond
	BackoffLapse = 10 * time.Minute
)

// DefaultHorizon is how far ahead a slot may be reserved: under a second,
// so that the calls whose bounds decide a slot have been written and
// reported by the time it is granted (see the package doc).
const DefaultHorizon = 750 * time.Millisecond

// DefaultTolerance is how late after its slot a call may go.
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
	// Margin fixes the fraction of the cap left unused, from 0 to 0.5
	// (negative: none); the calls' bounds still hold. Zero: slots 1 s ÷ cap
	// apart, paced by the calls' bounds, widened on throttles (see the
	// package doc).
	Margin float64
	// Slack is how long after its request was written a call may be
	// counted by the server. Zero: DefaultSlack.
	Slack time.Duration
	// WarmUp is how long a process's spread is WarmUpSpread wider after
	// its first reservation, or its first after a minute without any.
	// Zero: DefaultWarmUp.
	WarmUp time.Duration
	// Horizon bounds how far ahead a slot is reserved. Zero: DefaultHorizon.
	Horizon time.Duration
	// Tolerance is how late after its slot a call may go (its waiter's
	// lateness plus how much less surely than its bound allowed for the
	// slot was placed on this process's clock); a later waiter reserves
	// again. Zero: DefaultTolerance.
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
	rdb   redis.UniversalClient
	cfg   Config
	fixed bool // Config.Margin was set: no sized margin
	log   *slog.Logger

	mu      sync.Mutex
	paused  map[Key]time.Time // local copy of pauses this process set
	reports map[Key][]string  // "slot:bound" of slots sent or given up, for the next reservation

	late atomic.Int64 // slots given up because the waiter woke too late
	rtt  atomic.Int64 // smoothed round trip of a reservation, ns
	// clocks: Key → *redisClock, this process's instants on the clock of
	// the Redis node that holds the key's budget (on a cluster, nodes'
	// clocks differ: each budget learns its own).
	clocks sync.Map

	lastBook  atomic.Int64 // unix ns of the last reservation asked
	warmUntil atomic.Int64 // unix ns until which the process warms up

	mismatchLog atomic.Int64 // unix ns of the last cap mismatch logged

	intervals sync.Map // Key → time.Duration: the interval Redis last answered
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
	fixed := cfg.Margin != 0
	switch {
	case cfg.Margin < 0:
		cfg.Margin = 0
	case cfg.Margin > 0.5:
		return nil, fmt.Errorf("limiter: Margin %v: want 0 to 0.5", cfg.Margin)
	}
	if cfg.Slack <= 0 {
		cfg.Slack = DefaultSlack
	}
	if cfg.WarmUp <= 0 {
		cfg.WarmUp = DefaultWarmUp
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
	return &Limiter{rdb: rdb, cfg: cfg, fixed: fixed, log: log, paused: map[Key]time.Time{}, reports: map[Key][]string{}}, nil
}

// CapOf is the cap this limiter applies to api: calls/s, or Unlimited.
func (l *Limiter) CapOf(api string) int {
	if n, ok := l.cfg.CapOf[api]; ok {
		return n
	}
	return l.cfg.Cap
}

// Rate is the calls/s the limiter grants for k with no backoff when every
// call is written on time and reported (0: unlimited), at least: the cap
// less, each second, the Slack and how uncertain this process is of
// Redis's clock (about its fastest round trip to Redis; see redisClock).
// Calls reported late, or not reported, lower it (see the package doc).
func (l *Limiter) Rate(k Key) float64 {
	c := l.CapOf(k.API)
	if c == Unlimited {
		return 0
	}
	if !l.fixed {
		return float64(c) * float64(time.Second) / float64(time.Second+l.cfg.Slack+l.clockOf(k).unsure()+time.Microsecond)
	}
	return float64(c) * (1 - l.cfg.Margin)
}

// spread is how late after its slot one of this process's calls may
// arrive, before backoff and warm-up, when it knows Redis's clock to within
// unsure: Tolerance, Slack and unsure (a slot's local time is the latest
// it may be, up to unsure after the truth; a slot granted while Redis's
// clock is less well known counts the difference toward Tolerance).
func (l *Limiter) spread(unsure time.Duration) time.Duration {
	return l.cfg.Tolerance + l.cfg.Slack + unsure
}

// warmUp is the spread a process adds while it warms up: WarmUpSpread for
// Config.WarmUp after its first reservation, or its first after an idle
// spell (its HTTP client's first calls dial new connections, a delay the
// limiter cannot see).
func (l *Limiter) warmUp(now time.Time) time.Duration {
	ns := now.UnixNano()
	if last := l.lastBook.Swap(ns); ns-last > int64(idleSpell) {
		l.warmUntil.Store(ns + int64(l.cfg.WarmUp))
	}
	if ns < l.warmUntil.Load() {
		return WarmUpSpread
	}
	return 0
}

// fixedInterval is the interval under the fixed margin, in whole
// microseconds rounded up (0: unlimited).
func (l *Limiter) fixedInterval(k Key) time.Duration {
	r := l.Rate(k)
	if r == 0 {
		return 0
	}
	return time.Duration(math.Ceil(float64(time.Second/time.Microsecond)/r)) * time.Microsecond
}

// keys are the budget's keys: tat, pause, cap, backoff, widened, bounds
// (the latest arrival of each call that may still count), and spread: the
// key every process of an older imrecall (before the bounds) writes at each
// reservation, lapsing 5 s after its last.
func (l *Limiter) keys(k Key) []string {
	base := l.cfg.Prefix + ":{" + k.String() + "}"
	return []string{base + ":tat", base + ":pause", base + ":cap", base + ":backoff", base + ":widened", base + ":bounds", base + ":spread"}
}

// reserveScript reserves the next slot. KEYS: tat, pause, cap, backoff,
// widened (unused here), bounds, spread (an older process's). ARGV: 1 the fixed interval µs (0: 1 s ÷
// the cap, rounded down), 2 horizon µs, 3 this process's cap as stored, 4
// lead µs (the slot is no earlier than now + lead: the caller's own work
// before the call), 5 the cap in calls/s, 6 this process's spread µs (how
// late after its slot one of its calls may arrive unless it reports
// otherwise: Tolerance + Slack + how well it knows Redis's clock, and its
// warm-up),
// 7 this process's reports, "slot:bound,…" (µs in Redis time: the latest
// arrival of the call of that slot, from when its request was written; 0
// for a slot given up).
//
// The bounds sorted set holds every call granted whose arrival may still
// fall in a sliding second to come: member its slot, score its bound (the
// latest it may arrive). A slot at t is granted only when fewer than cap
// bounds are later than t − 1 s: t ≥ the cap-th latest bound + 1 s + 1 µs.
// Then no sliding second holds more than cap arrivals (of the calls in any
// second, the last granted saw every other's bound later than the second's
// start, and so at most cap − 1 of them). A slot's bound is first slot +
// spread + backoff, the worst its process allows; a report replaces it with
// the truth once the request is written: usually milliseconds sooner, later
// after a dial that took longer than the process allowed for.
// Returns {1, wait µs, interval µs (the spacing the bounds set now), slot µs,
// bound µs} when a slot was reserved, {0, µs to wait before asking again},
// or {-1, the stored cap} when the budget is stored with another cap
// (nothing reserved), or {-2, 0} while a process of an older imrecall
// shares the budget (its spreads key exists: it writes no bounds, so this
// process grants nothing until it has stopped). The first process to use a
// budget stores its cap.
var reserveScript = redis.NewScript(`
local stored = redis.call('GET', KEYS[3])
if not stored then
  redis.call('SET', KEYS[3], ARGV[3])
elseif stored ~= ARGV[3] then
  return {-1, stored}
end
if redis.call('EXISTS', KEYS[7]) == 1 then
  return {-2, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cap = tonumber(ARGV[5])
local bounds = KEYS[6]
for rs, rb in string.gmatch(ARGV[7], '(%d+):(%d+)') do
  redis.call('ZADD', bounds, 'XX', rb, rs)
end
redis.call('ZREMRANGEBYSCORE', bounds, '-inf', string.format('%d', now - 1000000))
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
local slot = math.max(tat, now + tonumber(ARGV[4]), pause)
local interval = tonumber(ARGV[1])
if interval == 0 then
  interval = math.max(math.floor(1000000 / cap), 1)
end
local spacing = interval
local nth = redis.call('ZREVRANGE', bounds, cap - 1, cap - 1, 'WITHSCORES')
if #nth == 2 then
  local b = tonumber(nth[2])
  slot = math.max(slot, b + 1000001)
  spacing = math.max(interval, math.floor((1000000 + b - tonumber(nth[1])) / cap))
end
local wait = slot - now
if wait > tonumber(ARGV[2]) then
  return {0, wait - tonumber(ARGV[2])}
end
local bound = slot + tonumber(ARGV[6]) + tonumber(redis.call('GET', KEYS[4]) or '0')
redis.call('ZADD', bounds, string.format('%d', bound), string.format('%d', slot))
redis.call('PEXPIRE', bounds, math.max(math.floor((bound + 1000000 - now) / 1000) + 1000, redis.call('PTTL', bounds)))
local nexttat = slot + interval
redis.call('SET', KEYS[1], string.format('%d', nexttat), 'PX', math.floor((nexttat - now) / 1000) + 1000)
return {1, wait, spacing, slot, bound}
`)

// throttleScript sets pause-until to now + d unless it is already later
// and, with widen, raises the backoff: to first, or double what it is, up
// to most; it lapses after lapse ms. The calls in flight when the server
// starts refusing are all refused: the backoff is raised once per pause
// (d), not once per refusal. KEYS: pause, backoff, widened. ARGV: d µs,
// widen (1 or 0), first µs, most µs, lapse ms. Returns the backoff in µs.
var throttleScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then
  redis.call('SET', KEYS[1], string.format('%d', untl), 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 1000)
end
local backoff = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[2] == '1' and redis.call('SET', KEYS[3], '1', 'PX', math.max(math.floor(tonumber(ARGV[1]) / 1000), 1), 'NX') then
  backoff = math.min(math.max(backoff * 2, tonumber(ARGV[3])), tonumber(ARGV[4]))
  redis.call('SET', KEYS[2], string.format('%d', backoff), 'PX', ARGV[5])
end
return backoff
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

// OlderProcessError says that a process of an older imrecall (one that
// writes no arrival bounds) reserves slots of the same budget: its calls
// would not count in this process's bounds, nor this one's in its spacing.
// This process grants nothing until the older one has stopped (5 s after
// its last reservation).
type OlderProcessError struct {
	Key Key
}

// Unwrap makes the error tim.ErrThrottled: calls are held back without
// spending a message's attempts, as for a cap mismatch.
func (e *OlderProcessError) Unwrap() error { return tim.ErrThrottled }

func (e *OlderProcessError) Error() string {
	return fmt.Sprintf("limiter: API %s of app %d: a process of an older imrecall (before the arrival bounds) shares this budget; "+
		"granting no call until it has stopped: upgrade every process of a budget together", e.Key.API, e.Key.AppID)
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

// Reservation is a slot reserved for one call. Its time is local: the
// latest the slot may be on this process's clock (redisClock), so the
// round trip to Redis never counts as lateness.
type Reservation struct {
	l      *Limiter
	k      Key
	slot   time.Time     // zero: unlimited, no slot
	unsure time.Duration // how much later than the slot truly is its local time may be
	start  time.Time
	entry  boundEntry
}

// boundEntry is what the budget's bounds hold of a slot: its time (µs in
// Redis time; 0: none), the latest arrival of its call, and the backoff
// in that (µs), which a report keeps.
type boundEntry struct {
	slot, bound, backoff int64
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
	if l.CapOf(k.API) == Unlimited {
		return r, ctx.Err()
	}
	if err := l.waitLocalPause(ctx, k); err != nil {
		return nil, err
	}
	if l.rtt.Load() == 0 {
		// No round trip measured yet: load the script (a first EVALSHA
		// would cost a second round trip, NOSCRIPT then EVAL) and measure
		// one, or the first slots
		// would be reserved with too short a lead and given up as late.
		// The first command dials (and a cluster client learns its
		// slots): measure the round trip on a second one.
		if err := reserveScript.Load(ctx, l.rdb).Err(); err == nil {
			asked := time.Now()
			if err := reserveScript.Load(ctx, l.rdb).Err(); err == nil {
				l.observeRTT(time.Since(asked))
			}
		}
	}
	for {
		lead := lead
		if lead == DefaultLead {
			lead = l.Lead()
		}
		g, err := l.book(ctx, k, lead)
		if err != nil {
			return nil, err
		}
		if err := sleep(ctx, time.Until(g.slot.Add(-lead))); err != nil {
			return nil, err
		}
		// Waking later than Tolerance after the slot means this process
		// stalled: the call would arrive bunched with calls that are on
		// time. Give the slot up and reserve again.
		if time.Since(g.slot)+g.unsure > l.cfg.Tolerance {
			l.giveUp(k, g.entry)
			continue
		}
		r.slot, r.unsure, r.entry = g.slot, g.unsure, g.entry
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
		if time.Since(r.slot)+r.unsure <= r.l.cfg.Tolerance {
			break
		}
		r.l.giveUp(r.k, r.entry)
		nr, err := r.l.Reserve(ctx, r.k, 0) // the caller is ready: no lead
		if err != nil {
			return err
		}
		r.slot, r.unsure, r.entry = nr.slot, nr.unsure, nr.entry
	}
	if r.l.cfg.Observer != nil {
		r.l.cfg.Observer(r.k, time.Since(r.start))
	}
	return nil
}

// Sent reports that the call of this slot was written at at (the socket
// took its request by then; tim.WhenWritten calls it). The budget's bounds then bound the call's arrival by the
// latest that may be on Redis's clock plus Slack, instead of the worst its
// process allows (Tolerance, and the warm-up), and later slots may come
// that much sooner. The
// report travels with this process's next reservation of the API. A call
// written again (the transport replayed it on another connection) is
// reported again: the latest write counts. A slot never reported keeps its
// worst case.
func (r *Reservation) Sent(at time.Time) {
	if r.entry.slot == 0 {
		return
	}
	if w, ok := r.l.clockOf(r.k).latest(at); ok { // always, once a reply granted the slot
		r.l.report(r.k, r.entry.slot, w+r.l.cfg.Slack.Microseconds()+r.entry.backoff+1)
	}
}

// giveUp counts a slot given up as late and tells the bounds that no call
// will arrive for it (a bound of 0).
func (l *Limiter) giveUp(k Key, e boundEntry) {
	l.late.Add(1)
	if e.slot != 0 {
		l.report(k, e.slot, 0)
	}
}

// report queues a slot's bound for this process's next reservation of k.
func (l *Limiter) report(k Key, slot, bound int64) {
	l.mu.Lock()
	l.reports[k] = append(l.reports[k], strconv.FormatInt(slot, 10)+":"+strconv.FormatInt(max(bound, 0), 10))
	l.mu.Unlock()
}

// requeueReports puts back reports a failed reservation did not deliver.
func (l *Limiter) requeueReports(k Key, reports string) {
	if reports == "" {
		return
	}
	l.mu.Lock()
	l.reports[k] = append(l.reports[k], strings.Split(reports, ",")...)
	l.mu.Unlock()
}

// takeReports returns the reports queued for k, "slot:bound,…", and forgets them.
func (l *Limiter) takeReports(k Key) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	rs := l.reports[k]
	if len(rs) == 0 {
		return ""
	}
	delete(l.reports, k)
	return strings.Join(rs, ",")
}

// grant is a slot book reserved.
type grant struct {
	slot   time.Time     // local
	unsure time.Duration // how much later than the slot truly is its local time may be
	entry  boundEntry
}

// book reserves a slot within Horizon, no earlier than lead from now, and
// returns its local time, the latest it may be on this process's clock (a
// call made then is never early; redisClock.grant), and how much later
// than the truth that may be beyond what the bound sent allowed for (it
// counts toward Tolerance). Redis failures are retried with back-off (fail
// closed) until ctx ends.
func (l *Limiter) book(ctx context.Context, k Key, lead time.Duration) (grant, error) {
	keys := l.keys(k)
	clock := l.clockOf(k)
	var fixed time.Duration
	if l.fixed {
		fixed = l.fixedInterval(k)
	}
	ours := FormatCap(l.CapOf(k.API))
	backoff := 20 * time.Millisecond
	var lastErr error
	lastLog := time.Time{}
	for {
		// How well Redis's clock is known, read once: the spread sent
		// covers it, and a slot placed less surely counts the difference
		// toward Tolerance. At most the usual round trip (after an idle
		// spell the bounds have widened; the reply tightens them), and
		// their widening until a slot as far as the horizon.
		asked := time.Now()
		usual := time.Duration(l.rtt.Load())
		known, ok := clock.uncertainty(asked)
		if !ok || usual > 0 && known > usual {
			known = usual
		}
		// The drift: over the wait to a slot as far as the horizon (both
		// bounds), and over how late after the slot a call may go.
		known += time.Duration(clockDrift*float64(2*(l.cfg.Horizon+usual)+l.cfg.Tolerance+WarmUpSpread+known)) + 2*time.Microsecond
		warm := l.warmUp(asked)
		spread := (l.spread(known) + warm + time.Microsecond - 1).Truncate(time.Microsecond) // rounded up
		reports := l.takeReports(k)
		res, err := reserveScript.Run(ctx, l.rdb, keys, fixed.Microseconds(), l.cfg.Horizon.Microseconds(), ours,
			lead.Microseconds(), l.CapOf(k.API), spread.Microseconds(), reports).Slice()
		got := time.Now()
		var reply scriptReply
		if err == nil {
			reply, err = parseReply(res)
		}
		if err == nil && reply.code == -1 {
			err := &CapMismatchError{Key: k, Stored: fmt.Sprint(res[1]), Ours: ours}
			if now := time.Now().UnixNano(); now-l.mismatchLog.Load() > int64(10*time.Second) {
				l.mismatchLog.Store(now)
				l.log.Error("the shared budget is stored with another cap: granting no call until this process runs with the stored cap",
					"api", k.API, "stored_cap", err.Stored, "cap", ours)
			}
			return grant{}, err
		}
		if err == nil && reply.code == -2 {
			if now := time.Now().UnixNano(); now-l.mismatchLog.Load() > int64(10*time.Second) {
				l.mismatchLog.Store(now)
				l.log.Error("a process of an older imrecall shares this budget: granting no call until it has stopped (upgrade every process of a budget together)",
					"api", k.API)
			}
			return grant{}, &OlderProcessError{Key: k}
		}
		if err != nil {
			l.requeueReports(k, reports) // not delivered: with the next try
			if ctx.Err() != nil {
				return grant{}, errors.Join(ctx.Err(), lastErr)
			}
			lastErr = fmt.Errorf("limiter %s: reserving a slot: %w", k, err)
			if time.Since(lastLog) > 5*time.Second {
				l.log.Warn("limiter cannot reach Redis; holding calls back", "api", k.API, "err", err)
				lastLog = time.Now()
			}
			if err := sleep(ctx, backoff); err != nil {
				return grant{}, errors.Join(err, lastErr)
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		rtt := got.Sub(asked)
		l.observeRTT(rtt)
		if reply.code == 1 {
			l.intervals.Store(k, reply.interval)
			e := boundEntry{slot: reply.slot, bound: reply.bound, backoff: reply.bound - reply.slot - spread.Microseconds()}
			slot, unsure := clock.grant(asked, got, reply.slot-reply.wait.Microseconds(), reply.slot)
			return grant{slot: slot, unsure: max(unsure-known, 0), entry: e}, nil
		}
		if err := sleep(ctx, reply.wait); err != nil { // beyond the horizon: ask again later
			return grant{}, err
		}
	}
}

// scriptReply is the reserve script's answer: code 1 (reserved: wait until
// the slot, at interval), 0 (beyond the horizon: wait, then ask again) or
// -1 (the budget is stored with another cap).
type scriptReply struct {
	code           int64
	wait, interval time.Duration
	slot, bound    int64 // the slot and its call's bound, µs in Redis time
}

// parseReply reads the script's {code, µs[, interval µs, slot µs, bound
// µs]} reply (the second element is the stored cap, a string, with code
// -1).
func parseReply(res []any) (scriptReply, error) {
	bad := fmt.Errorf("unexpected answer %v", res)
	if len(res) < 2 {
		return scriptReply{}, bad
	}
	code, ok := res[0].(int64)
	if !ok {
		return scriptReply{}, bad
	}
	if code == -1 || code == -2 {
		return scriptReply{code: code}, nil
	}
	n, ok := res[1].(int64)
	if !ok {
		return scriptReply{}, bad
	}
	r := scriptReply{code: code, wait: time.Duration(n) * time.Microsecond}
	if code == 1 {
		if len(res) != 5 {
			return scriptReply{}, bad
		}
		iv, ok1 := res[2].(int64)
		slot, ok2 := res[3].(int64)
		bound, ok3 := res[4].(int64)
		if !ok1 || !ok2 || !ok3 {
			return scriptReply{}, bad
		}
		r.interval, r.slot, r.bound = time.Duration(iv)*time.Microsecond, slot, bound
	}
	return r, nil
}

// Interval is the interval between slots of k that Redis last answered
// this process (0 before its first reservation of k): 1 s ÷ interval is the
// rate granted now, under the margin in force.
func (l *Limiter) Interval(k Key) time.Duration {
	if v, ok := l.intervals.Load(k); ok {
		return v.(time.Duration)
	}
	return 0
}

// clockOf is k's Redis clock as this process knows it.
func (l *Limiter) clockOf(k Key) *redisClock {
	if c, ok := l.clocks.Load(k); ok {
		return c.(*redisClock)
	}
	c, _ := l.clocks.LoadOrStore(k, newRedisClock())
	return c.(*redisClock)
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
	_, err := l.throttle(ctx, k, d, false)
	return err
}

// throttle pauses k for every process for d and, with widen, raises the
// adaptive margin's backoff; it returns the backoff in force.
func (l *Limiter) throttle(ctx context.Context, k Key, d time.Duration, widen bool) (time.Duration, error) {
	if d <= 0 && !widen {
		return 0, nil
	}
	l.mu.Lock()
	if until := time.Now().Add(d); until.After(l.paused[k]) {
		l.paused[k] = until
	}
	l.mu.Unlock()
	keys := l.keys(k)
	w := "0"
	if widen {
		w = "1"
	}
	us, err := throttleScript.Run(ctx, l.rdb, []string{keys[1], keys[3], keys[4]}, d.Microseconds(), w,
		FirstBackoff.Microseconds(), MaxBackoff.Microseconds(), BackoffLapse.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("limiter %s: pausing for %v: %w", k, d, err)
	}
	backoff := time.Duration(us) * time.Microsecond
	l.log.Warn("rate limited by the server: pausing this API for every process", "api", k.API, "wait", d, "backoff", backoff)
	return backoff, nil
}

// ThrottlePause is how long a throttle code pauses an API.
func ThrottlePause(code int) time.Duration {
	if code == 70050 { // too many UserSig checks: retry after a minute
		return time.Minute
	}
	return time.Second
}

// AppGate is the limiter seen by one app's IM client: it satisfies the
// client's Gate, Reserver and SlotWaiter (Wait, Reserve, WaitSlot,
// Throttled).
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

// WaitSlot blocks until a call of api may be made, as Wait, and returns the
// slot granted, so that the call can report when it was written
// (Reservation.Sent).
func (g *AppGate) WaitSlot(ctx context.Context, api string) (tim.Slot, error) {
	r, err := g.l.Reserve(ctx, Key{AppID: g.appID, API: api}, 0)
	if err != nil {
		return nil, err
	}
	if err := r.Wait(ctx); err != nil {
		return nil, err
	}
	return r, nil
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

var (
	_ tim.Reserver     = (*AppGate)(nil)
	_ tim.SlotWaiter   = (*AppGate)(nil)
	_ tim.SentReporter = (*Reservation)(nil)
)

// Throttled pauses api for every process after the server answered a
// throttle code and, for a code about the app's call rate (60007, 60011,
// 60018, 60019; not a group's own frequency limit nor UserSig checks) and
// unless the margin is fixed, widens the margin (see the package doc).
func (g *AppGate) Throttled(ctx context.Context, api string, code int) {
	widen := !g.l.fixed && (code == 60007 || code == 60011 || code == 60018 || code == 60019)
	if _, err := g.l.throttle(context.WithoutCancel(ctx), Key{AppID: g.appID, API: api}, ThrottlePause(code), widen); err != nil {
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
