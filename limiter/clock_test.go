package limiter

import (
	"math/rand/v2"
	"testing"
	"time"
)

// simulatedRedis is a Redis clock against a process's: offset µs ahead at
// local 0, running drift faster, stepped by step from local stepAt on.
type simulatedRedis struct {
	offset, drift, step, stepAt float64
}

// at is Redis's clock at local µs x (not rounded).
func (r simulatedRedis) at(x float64) float64 {
	v := x + r.offset + r.drift*x
	if x >= r.stepAt {
		v += r.step
	}
	return v
}

// localOf is the local µs at which Redis's clock reads v, before the step
// or (stepped) after it.
func (r simulatedRedis) localOf(v float64, stepped bool) float64 {
	if stepped {
		v -= r.step
	}
	return (v - r.offset) / (1 + r.drift)
}

// TestRedisClockBoundsTheOffset feeds the clock replies whose legs to and
// from Redis vary (20 µs to 3 ms each) and whose slots are up to 750 ms
// ahead, from a Redis clock that is ahead, drifts at 400 ppm, and once
// steps by 50 ms (forward, then in a second run back): a slot is never
// placed before it truly comes, a write never on Redis's clock before it
// truly was, and after a few replies both within the fastest legs seen
// (plus the drift allowance), not a whole round trip.
func TestRedisClockBoundsTheOffset(t *testing.T) {
	for _, step := range []float64{50_000, -50_000} {
		rng := rand.New(rand.NewPCG(1, 2))
		base := time.Now()
		c := &redisClock{origin: base}
		if _, ok := c.latest(base); ok {
			t.Fatal("latest before any reply: want false")
		}
		r := simulatedRedis{offset: 1_234_567, drift: 400e-6, step: step, stepAt: 1e18}
		at := func(local float64) time.Time { return base.Add(time.Duration(local * float64(time.Microsecond))) }
		leg := func() float64 { return 20 + rng.Float64()*rng.Float64()*3000 }

		local := 1000.0
		for i := range 4000 {
			if i == 2000 {
				r.stepAt = local
			}
			asked := local
			read := asked + leg()
			got := read + leg()
			now := int64(r.at(read)) // TIME reads whole µs, rounded down
			slot := now + int64(rng.Float64()*750_000)
			placed, unsure := c.grant(at(asked), at(got), now, slot)
			truly := r.localOf(float64(slot), read >= r.stepAt) // in the frame of the clock the reply read
			early := truly - c.local(placed)
			if early > 0.001 { // float rounding of the test's own arithmetic
				t.Fatalf("step %v, reply %d: slot placed %.3f µs before it truly comes", step, i, early)
			}
			// A write between replies: never placed early.
			w := got + rng.Float64()*5000
			latest, ok := c.latest(at(w))
			if !ok {
				t.Fatal("no bound after a reply")
			}
			truth := r.at(w)
			if float64(latest) < truth {
				t.Fatalf("step %v, reply %d: write placed at %d, %0.3f µs before it truly was on Redis's clock", step, i, latest, truth-float64(latest))
			}
			if i%1000 == 999 {
				if over := float64(latest) - truth; over > 500 {
					t.Fatalf("step %v, reply %d: write placed %0.1f µs late, want within the fastest leg and the drift allowance (≤ 500 µs)", step, i, over)
				}
				if late := -early; late > float64(unsure/time.Microsecond)+1 || late > 2000 {
					t.Fatalf("step %v, reply %d: slot placed %0.1f µs late (uncertainty %v), want within it and 2 ms", step, i, late, unsure)
				}
			}
			local = got + 200 + rng.Float64()*2000
		}
	}
}

// TestRedisClockStepAndAStaleReply: a Redis clock stepped back by 100 ms.
// The first reply after the step starts the bounds over; a reply sent
// before that one arrived, which read the clock before the step, is left
// out (it must not start them over in the old frame) and its own slot is
// placed by the new bounds, never early. A reply sent after, in the new
// frame, is folded in.
func TestRedisClockStepAndAStaleReply(t *testing.T) {
	base := time.Now()
	c := &redisClock{origin: base}
	at := func(us float64) time.Time { return base.Add(time.Duration(us * float64(time.Microsecond))) }
	// Before the step: Redis's clock = local + 1,000,000 (legs 50 µs).
	c.grant(at(0), at(100), 1_000_050, 1_000_050)
	if w, _ := c.latest(at(1000)); w < 1_001_050 || w > 1_001_053 {
		t.Fatalf("latest %d, want 1,001,050 (+ rounding and drift)", w)
	}
	// Stale: sent at 2,000, reads the clock at 2,050 before the step, and
	// arrives last, at 2,400. Fresh: sent at 2,100, reads it at 2,150
	// after the step (Redis's clock = local + 900,000), arrives at 2,200.
	c.grant(at(2100), at(2200), 902_150, 902_150)
	if w, _ := c.latest(at(3000)); w < 903_000 || w > 903_053 {
		t.Fatalf("after a step back: latest %d, want about 903,000: bounds started over", w)
	}
	placed, _ := c.grant(at(2000), at(2400), 1_002_050, 1_012_050) // slot 10 ms on in the old frame
	if x := c.local(placed); x < 2400+10_000 {
		t.Fatalf("stale reply's slot placed at local %.0f, want no earlier than its arrival plus the wait (12,400)", x)
	}
	if w, _ := c.latest(at(3000)); w < 903_000 || w > 903_053 {
		t.Fatalf("a stale reply moved the bounds: latest %d, want about 903,000", w)
	}
	if u := c.unsureAt(at(3000)); u > 200*time.Microsecond {
		t.Fatalf("uncertainty %v, want about the fresh reply's round trip", u)
	}
	// Sent after the fresh reply arrived: folded in, and tightens.
	c.grant(at(5000), at(5030), 905_010, 905_010)
	if u := c.unsureAt(at(5030)); u > 60*time.Microsecond {
		t.Fatalf("after a faster reply: uncertainty %v, want ≤ its 30 µs round trip (+ drift)", u)
	}
}

// unsureAt is the uncertainty at t (0 before any reply).
func (c *redisClock) unsureAt(t time.Time) time.Duration {
	d, _ := c.uncertainty(t)
	return d
}

// TestRedisClockStaleRepliesAroundSmallSteps: steps too small to contradict
// the bounds, with a reply in flight that read the clock before the step.
// Folded in, that reply would put the old frame back (writes placed early
// by up to the step): it is left out whether it agrees with the bounds or
// not, and a reply that replaces both bounds counts as a start-over.
func TestRedisClockStaleRepliesAroundSmallSteps(t *testing.T) {
	at := func(base time.Time, us float64) time.Time {
		return base.Add(time.Duration(us * float64(time.Microsecond)))
	}
	t.Run("agrees with the fresh bounds", func(t *testing.T) {
		base := time.Now()
		c := &redisClock{origin: base}
		c.grant(at(base, 0), at(base, 100), 1_000_050, 1_000_050) // Redis = local + 1,000,000
		// A step of +300 µs at local 2,120. Fresh: sent at 2,100, reads
		// at 2,150 after the step, arrives at 2,350: contradicts, starts over.
		c.grant(at(base, 2100), at(base, 2350), 2150+1_000_300, 2150+1_000_300)
		// Stale: sent at 2,000, read at 2,100 before the step, arrives
		// at 2,500; it agrees with the fresh bounds, and is tighter.
		c.grant(at(base, 2000), at(base, 2500), 2100+1_000_000, 2100+1_000_000)
		if w, _ := c.latest(at(base, 3000)); w < 3000+1_000_300 {
			t.Fatalf("write placed %d µs early on Redis's clock", 3000+1_000_300-w)
		}
	})
	t.Run("after bounds a second old", func(t *testing.T) {
		base := time.Now()
		c := &redisClock{origin: base}
		c.grant(at(base, 0), at(base, 100), 1_000_050, 1_000_050)
		// 1.5 s later, a step of +1 ms at local 1,500,120; the fresh
		// reply replaces both bounds (they were a second old).
		c.grant(at(base, 1_500_100), at(base, 1_500_200), 1_500_150+1_001_000, 1_500_150+1_001_000)
		// Stale: read before the step; contradicts the fresh bounds.
		c.grant(at(base, 1_500_000), at(base, 1_500_300), 1_500_050+1_000_000, 1_500_050+1_000_000)
		if w, _ := c.latest(at(base, 1_501_000)); w < 1_501_000+1_001_000 {
			t.Fatalf("write placed %d µs early on Redis's clock", 1_501_000+1_001_000-w)
		}
	})
}
