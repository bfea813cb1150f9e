package limiter

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestRedisClockBoundsTheOffset feeds the clock replies whose legs to and
// from Redis vary (20 µs to 3 ms each), from a Redis clock that is ahead,
// drifts at 400 ppm, and once steps forward by 50 ms: latest never places
// an instant earlier than it truly was on Redis's clock, and after a few
// replies places it within the fastest request leg seen (plus the drift
// allowance), not a whole round trip.
func TestRedisClockBoundsTheOffset(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Now()
	c := &redisClock{origin: base}
	if _, ok := c.latest(base); ok {
		t.Fatal("latest before any reply: want false")
	}
	offset := 1_234_567.0 // µs: Redis's clock less ours, at local 0
	drift := 400e-6
	redisAt := func(local float64) float64 { return local + offset + drift*local }
	at := func(local float64) time.Time { return base.Add(time.Duration(local * float64(time.Microsecond))) }
	leg := func() float64 { return 20 + rng.Float64()*rng.Float64()*3000 }

	local := 1000.0
	stepped := false
	for i := range 4000 {
		if i == 2000 { // the Redis host's clock is stepped forward
			offset += 50_000
			stepped = true
		}
		asked := local
		read := asked + leg()
		got := read + leg()
		c.observe(at(asked), at(got), int64(redisAt(read))) // Redis's TIME reads whole µs, rounded down
		// A write between replies: never placed early.
		w := got + rng.Float64()*5000
		latest, ok := c.latest(at(w))
		if !ok {
			t.Fatal("no bound after a reply")
		}
		truth := redisAt(w)
		if float64(latest) < truth {
			t.Fatalf("reply %d: write placed at %d, %0.1f µs before it truly was on Redis's clock", i, latest, truth-float64(latest))
		}
		if i%1000 == 999 {
			if over := float64(latest) - truth; over > 500 {
				t.Fatalf("reply %d: write placed %0.1f µs late, want within the fastest leg and the drift allowance (≤ 500 µs)", i, over)
			}
			if stepped && c.unsureAt(at(w)) > time.Millisecond {
				t.Fatalf("after the step: uncertainty %v, want the bounds rebuilt", c.unsureAt(at(w)))
			}
		}
		local = got + 200 + rng.Float64()*2000
	}
}

// TestRedisClockStartsOverOnAStepBack: a reply that reads Redis's clock
// earlier than the bounds allow (its clock stepped back) starts them over,
// so the bounds stay true, and neither moves the wrong way.
func TestRedisClockStartsOverOnAStepBack(t *testing.T) {
	base := time.Now()
	c := &redisClock{origin: base}
	at := func(us float64) time.Time { return base.Add(time.Duration(us * float64(time.Microsecond))) }
	c.observe(at(0), at(100), 1_000_050) // offset within [999,950, 1,000,050]
	if w, _ := c.latest(at(1000)); w < 1_001_050 || w > 1_001_052 {
		t.Fatalf("latest %d, want 1,001,050 (+ rounding and drift)", w)
	}
	c.observe(at(2000), at(2100), 500_000+2050) // Redis stepped back by 0.5 s
	if w, _ := c.latest(at(3000)); w < 503_050 || w > 503_052 {
		t.Fatalf("after a step back: latest %d, want 503,050: bounds started over", w)
	}
	if u := c.unsureAt(at(3000)); u > 200*time.Microsecond {
		t.Fatalf("uncertainty %v, want about the one reply's round trip", u)
	}
}

// unsureAt is the uncertainty at t (0 before any reply).
func (c *redisClock) unsureAt(t time.Time) time.Duration {
	d, _ := c.uncertainty(t)
	return d
}
