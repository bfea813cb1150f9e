package bench

import "testing"

// TestSettledRateLeavesOutTheWarmUp: the after-warm-up rate of bench
// limiter averages the seconds from settleSeconds to the last but one; a
// run too short for that falls back to the steady rate (first and last
// second left out).
func TestSettledRateLeavesOutTheWarmUp(t *testing.T) {
	if settleSeconds != 3 {
		t.Fatalf("settleSeconds = %d, want 3 (start ≤ 0.5 s, 1 s of warm-up, its spread held 1 s + 20 ms more)", settleSeconds)
	}
	series := []int64{160, 192, 193, 197, 198, 197, 20}
	if got, want := settledRate(series), (197.0+198+197)/3; got != want {
		t.Fatalf("settledRate(%v) = %v, want %v", series, got, want)
	}
	if got, want := steadyRate(series), (192.0+193+197+198+197)/5; got != want {
		t.Fatalf("steadyRate(%v) = %v, want %v", series, got, want)
	}
	short := []int64{150, 190, 193, 20}
	if got, want := settledRate(short), steadyRate(short); got != want {
		t.Fatalf("settledRate(%v) = %v, want the steady rate %v", short, got, want)
	}
}
