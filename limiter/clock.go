package limiter

import (
	"math"
	"sync"
	"time"
)

// clockDrift is how fast this process's clock may run against Redis's:
// 1,000 ppm, twice the fastest ntpd slews a clock. The limiter as a whole
// assumes Redis's clock keeps the true rate (its seconds are the server's
// seconds); a host whose clock is slewed much faster (chrony may slew at
// several % to correct a large offset) breaks that first.
const clockDrift = 1e-3

// clockMaxAge is how long a bound of the offset is kept while looser ones
// come in (µs): as of each reply, the bounds rest on replies at most a
// second old, so a drift faster than clockDrift shifts them by its rate
// over a second (and the time since the last reply) at most.
const clockMaxAge = 1e6

// redisClock places this process's instants on Redis's clock, from the replies
// of the reserve script. Each reply reads Redis's clock (TIME) at some instant
// between the request's start and the reply's arrival here, so the offset
// (Redis's clock less this process's) is at most the reading less the start and
// at least the reading less the arrival. The tightest of those bounds seen,
// each widened by clockDrift for its age and given up for the next reply's once
// it is a second old, bound the offset now: within the fastest request leg plus
// the fastest reply leg (tens of µs on loopback while the process reserves
// often), where one reply alone bounds it within its whole round trip. A slot
// is then placed on this process's clock, and a call's write on Redis's, at
// most that much late, not a round trip.
//
// A reply that contradicts the bounds (its clock read outside them: the
// Redis host's clock was stepped, a failover to a host with another clock,
// or a drift faster than clockDrift) starts them over from that reply
// alone; so does, in effect, one that replaces both bounds. A reply sent
// before the one that last started them over arrived may have read the
// clock before a step that one read after: it is left out of the bounds
// (its slot is placed by them, as any other). A step too
// small to contradict the bounds (under the fastest leg seen) goes unseen:
// a forward one places writes at most the fastest reply leg early, a
// backward one slots at most the granting reply's request leg early (a slot
// is never placed before the granting request's start plus the wait); both
// are µs on a LAN, far inside Slack. Each budget keeps its own clock
// (Limiter.clockOf): on a cluster, its key's node.
type redisClock struct {
	origin time.Time // local µs are counted from here (monotonic)

	mu sync.Mutex
	ok bool
	// base (µs) is taken from the offsets below, kept as float64 near 0.
	base int64
	// hi and lo bound the offset less base, in µs, as of local µs hiAt and
	// loAt; at local time t they are hi + |t − hiAt|·clockDrift and
	// lo − |t − loAt|·clockDrift.
	hi, lo     float64
	hiAt, loAt float64
	// startedAt is the local µs at which the reply that last started the
	// bounds over arrived.
	startedAt float64
}

func newRedisClock() *redisClock { return &redisClock{origin: time.Now()} }

// local is t in µs since origin.
func (c *redisClock) local(t time.Time) float64 {
	return float64(t.Sub(c.origin)) / float64(time.Microsecond)
}

// at is the local instant of µs since origin, rounded up to a whole µs.
func (c *redisClock) at(x float64) time.Time {
	return c.origin.Add(time.Duration(math.Ceil(x)) * time.Microsecond)
}

// bounds are the offset's bounds (less base) at local µs t, with the lock
// held.
func (c *redisClock) bounds(t float64) (lo, hi float64) {
	return c.lo - math.Abs(t-c.loAt)*clockDrift, c.hi + math.Abs(t-c.hiAt)*clockDrift
}

// grant folds in the reply that granted a slot and places the slot: asked
// is when the request started, got when the reply arrived, redisNow the
// reading of Redis's clock it carried (µs, rounded down as TIME reads it)
// and slot the slot (µs on Redis's clock). It returns the latest local
// instant the slot may be, so that a call made then is never early, and
// how much later than the truth that may be.
func (c *redisClock) grant(asked, got time.Time, redisNow, slot int64) (time.Time, time.Duration) {
	a, g := c.local(asked), c.local(got)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ok {
		c.base = redisNow - int64(a)
	}
	// Redis's clock read in [redisNow, redisNow + 1 µs) at a local
	// instant in [a, g].
	hi, lo := float64(redisNow+1-c.base)-a, float64(redisNow-c.base)-g
	wait := float64(slot - redisNow)
	folded := c.fold(a, g, hi, lo)
	// The slot's local x, by the bounds (a reply left out is placed by them
	// too: they hold Redis's clock as it reads now, which the slots of every
	// reply granted from now on are counted in): x + lo(x) = slot, with
	// lo(x) = c.lo − |x − loAt|·drift.
	s := float64(slot - c.base)
	x := (s - c.lo - c.loAt*clockDrift) / (1 - clockDrift)
	if x < c.loAt {
		x = (s - c.lo + c.loAt*clockDrift) / (1 + clockDrift)
	}
	if folded {
		x = max(x, a+wait) // not before the request's start plus the wait, whatever the bounds say
	}
	l, h := c.bounds(x)
	// The uncertainty counts the rounding of x up to a µs.
	return c.at(x), time.Duration((max(h-l, 0) + 1) * float64(time.Microsecond))
}

// fold folds one reply's bounds in, with the lock held; false for a reply
// sent before the reply that last started the bounds over arrived: it may
// have read Redis's clock before a step that one read after, so it is left
// out, agreeing with the bounds or not.
func (c *redisClock) fold(a, g, hi, lo float64) bool {
	if c.ok {
		if a < c.startedAt {
			return false
		}
		oldLo, oldHi := c.bounds(g)
		if lo <= oldHi && hi+(g-a)*clockDrift >= oldLo {
			_, h := c.bounds(a)
			newHi := hi <= h || a-c.hiAt > clockMaxAge
			if newHi {
				c.hi, c.hiAt = hi, a
			}
			l, _ := c.bounds(g)
			newLo := lo >= l || g-c.loAt > clockMaxAge
			if newLo {
				c.lo, c.loAt = lo, g
			}
			if newHi && newLo {
				// The bounds are this reply's alone, which may have read
				// the clock after a step too small to contradict them: a
				// start-over in all but name.
				c.startedAt = g
			}
			return true
		}
	}
	// The first reply, or the clocks moved apart: start over.
	c.ok, c.hi, c.hiAt, c.lo, c.loAt, c.startedAt = true, hi, a, lo, g, g
	return true
}

// latest is the latest Redis time, in whole µs, that local instant t may
// be; false before any reply.
func (c *redisClock) latest(t time.Time) (int64, bool) {
	x, _, hi, base, ok := c.boundsAt(t)
	return base + int64(math.Ceil(x+hi)), ok
}

// uncertainty is how wide the offset's bounds are at t: how much later on
// Redis's clock than it truly was latest may place an instant, and how
// much later than the truth grant may place a slot at t; false before any
// reply.
func (c *redisClock) uncertainty(t time.Time) (time.Duration, bool) {
	_, lo, hi, _, ok := c.boundsAt(t)
	return time.Duration(max(hi-lo, 0) * float64(time.Microsecond)), ok
}

// boundsAt is t in local µs, the offset's bounds (less base) then, and
// base; false (and zeros) before any reply.
func (c *redisClock) boundsAt(t time.Time) (x, lo, hi float64, base int64, ok bool) {
	x = c.local(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ok {
		return 0, 0, 0, 0, false
	}
	lo, hi = c.bounds(x)
	return x, lo, hi, c.base, true
}

// unsure is the uncertainty now (0 before any reply).
func (c *redisClock) unsure() time.Duration {
	d, _ := c.uncertainty(time.Now())
	return d
}
