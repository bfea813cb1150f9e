package bench

import (
	"testing"
	"time"
)

// TestSettledRateLeavesOutTheWarmUp: the after-warm-up rate of bench
// limiter starts at the first second no slot of a child's start-up can
// reach (its first grant, 1 s of warm-up, a slot booked ahead at most
// Horizon, then its bound for 1 s + the bound), leaves out the last second, and
// is "not measured" for a run too short to have such a second.
func TestSettledRateLeavesOutTheWarmUp(t *testing.T) {
	reset := time.Now()
	// Granted 0.3 s in: 0.3 + 1 + 0.75 + 1 + 0.048 = 3.098 s, so second 4.
	if got := settleSecond(reset, reset.Add(300*time.Millisecond)); got != 4 {
		t.Fatalf("settleSecond(first grant 0.3 s in) = %d, want 4", got)
	}
	// Granted 1.3 s in: 4.098 s, so second 5.
	if got := settleSecond(reset, reset.Add(1300*time.Millisecond)); got != 5 {
		t.Fatalf("settleSecond(first grant 1.3 s in) = %d, want 5", got)
	}
	series := []int64{160, 192, 193, 197, 196, 198, 197, 199, 20}
	got, ok := settledRate(series, 5)
	if want := (198.0 + 197 + 199) / 3; !ok || got != want {
		t.Fatalf("settledRate(%v, 5) = %v, %v; want %v, true", series, got, ok, want)
	}
	if got, want := steadyRate(series), (192.0+193+197+196+198+197+199)/7; got != want {
		t.Fatalf("steadyRate(%v) = %v, want %v", series, got, want)
	}
	for _, from := range []int{8, 9, 0} {
		if got, ok := settledRate(series, from); ok {
			t.Fatalf("settledRate(%d seconds, from %d) = %v, want not measured", len(series), from, got)
		}
	}
}
