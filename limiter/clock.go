package limiter

import (
	"math"
	"sync"
	"time"
)

// clockDrift is how fast this process's clock may run against Redis's:
// 1,000 ppm, twice what Linux lets NTP slew a clock (500 ppm).
const clockDrift = 1e-3

// redisClock places this process's instants on Redis's clock, from the
// replies of the reserve script. Each reply reads Redis's clock (TIME) at
// some instant between the request's start and the reply's arrival here,
// so the offset (Redis's clock less this process's) is at most the reading
// less the start and at least the reading less the arrival. The tightest
// of those bounds over the replies seen, each widened by clockDrift for
// its age, bound the offset now: within the fastest request's leg to Redis
// (tens of µs on loopback), where one reply alone bounds it only within
// its whole round trip. A call's write is then placed on Redis's clock at
// most that leg late, instead of a round trip (see Reservation.Sent).
//
// A reply that contradicts the bounds (its clock read outside them: the
// Redis host's clock was stepped, or drifted faster than clockDrift)
// starts them over from that reply alone. A forward step too small to
// contradict them (under the fastest reply leg seen) goes unseen: it
// places writes at most that much early, well inside Slack. Each budget
// keeps its own clock (Limiter.clockOf): on a cluster its key's node.
type redisClock struct {
	origin time.Time // local µs are counted from here (monotonic)

	mu sync.Mutex
	ok bool
	// hi and lo bound the offset in µs as of local µs hiAt and loAt; at
	// local time t they are hi + |t − hiAt|·clockDrift and
	// lo − |t − loAt|·clockDrift.
	hi, lo     float64
	hiAt, loAt float64
}

func newRedisClock() *redisClock { return &redisClock{origin: time.Now()} }

// local is t in µs since origin.
func (c *redisClock) local(t time.Time) float64 {
	return float64(t.Sub(c.origin)) / float64(time.Microsecond)
}

// bounds are the offset's bounds at local µs t (with the lock held).
func (c *redisClock) bounds(t float64) (lo, hi float64) {
	return c.lo - math.Abs(t-c.loAt)*clockDrift, c.hi + math.Abs(t-c.hiAt)*clockDrift
}

// observe folds in one reply: asked is when the request started, got when
// the reply arrived, redisNow the reading of Redis's clock (µs) it carried.
func (c *redisClock) observe(asked, got time.Time, redisNow int64) {
	a, g := c.local(asked), c.local(got)
	hi, lo := float64(redisNow)-a, float64(redisNow)-g
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok {
		oldLo, oldHi := c.bounds(g)
		if lo > oldHi || hi+(g-a)*clockDrift < oldLo { // the clocks moved apart: start over
			c.ok = false
		} else {
			if _, h := c.bounds(a); hi <= h {
				c.hi, c.hiAt = hi, a
			}
			if l, _ := c.bounds(g); lo >= l {
				c.lo, c.loAt = lo, g
			}
			return
		}
	}
	c.ok, c.hi, c.hiAt, c.lo, c.loAt = true, hi, a, lo, g
}

// latest is the latest Redis time, in whole µs, that local instant t may
// be; false before any reply.
func (c *redisClock) latest(t time.Time) (int64, bool) {
	x := c.local(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ok {
		return 0, false
	}
	_, hi := c.bounds(x)
	return int64(x+hi) + 1, true // rounded up
}

// uncertainty is how wide the offset's bounds are at t: how much later on
// Redis's clock than it truly was latest may place an instant, and how
// much later than the truth place may answer; false before any reply.
func (c *redisClock) uncertainty(t time.Time) (time.Duration, bool) {
	x := c.local(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ok {
		return 0, false
	}
	lo, hi := c.bounds(x)
	return time.Duration((hi - lo) * float64(time.Microsecond)), true
}

// unsure is the uncertainty now (0 before any reply).
func (c *redisClock) unsure() time.Duration {
	d, _ := c.uncertainty(time.Now())
	return d
}

// place is the local instant of Redis time redisUS (µs), at the latest it
// may be: a call made then is never early on Redis's clock. It also
// returns how much later than the truth that instant may be: the offset's
// uncertainty. Call it after observe.
func (c *redisClock) place(redisUS int64) (time.Time, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// The offset's lower bound widens with the distance from loAt: one
	// step from its value at loAt finds the instant (to within drift²).
	x := float64(redisUS) - c.lo
	lo, hi := c.bounds(x)
	x = float64(redisUS) - lo
	return c.origin.Add(time.Duration(math.Ceil(x)) * time.Microsecond), time.Duration((hi - lo) * float64(time.Microsecond))
}
