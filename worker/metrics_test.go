package worker

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/tim"
)

// TestLimiterMetrics: a worker's /metrics shows the slot interval the
// shared limiter last granted per API (none before its first slot) and the
// slots it gave up.
func TestLimiterMetrics(t *testing.T) {
	_, rdb := redistest.Mini(t)
	lim, err := limiter.New(rdb, limiter.Config{Cap: 200})
	if err != nil {
		t.Fatal(err)
	}
	const app = 1400000001
	reg := prometheus.NewRegistry()
	RegisterLimiter(reg, lim, app)
	gather := func() map[string][]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				name := mf.GetName()
				for _, l := range m.GetLabel() {
					name += "{" + l.GetValue() + "}"
				}
				out[name] = append(out[name], v)
			}
		}
		return out
	}
	before := gather()
	if len(before["imrecall_limiter_late_slots_total"]) != 1 || len(before["imrecall_limiter_interval_seconds{group_msg_recall}"]) != 0 {
		t.Fatalf("before any slot: %v, want the late count and no interval", before)
	}
	if err := lim.Wait(t.Context(), limiter.Key{AppID: app, API: tim.GroupMsgRecall.Name()}); err != nil {
		t.Fatal(err)
	}
	after := gather()
	got := after["imrecall_limiter_interval_seconds{group_msg_recall}"]
	want := lim.Interval(limiter.Key{AppID: app, API: tim.GroupMsgRecall.Name()}).Seconds()
	// 1 s ÷ 200 at least (exactly, before 200 calls have bounds to wait
	// for), well under 1.1 s ÷ 200.
	if len(got) != 1 || got[0] != want || got[0] < 0.005 || got[0] > 0.0055 || math.IsNaN(got[0]) {
		t.Fatalf("interval %v, want [%v], 5 ms or just above", got, want)
	}
	if _, ok := after["imrecall_limiter_interval_seconds{admin_msgwithdraw}"]; ok {
		t.Fatalf("an interval for an API this process never reserved: %v", after)
	}
}
