package emulator

import (
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"
)

// TestCallsCountedWhenTheyArrived stalls the emulator's handling of one
// call, as a loaded host does: the next call, sent more than a second
// after the first arrived, is within a cap of 1 call/s and is accepted.
// Counted when the handler got round to it (the control, without the
// ArrivalListener), the first call is placed later than it came and the
// second is throttled.
func TestCallsCountedWhenTheyArrived(t *testing.T) {
	if !kernelTimesArrivals(t) {
		t.Skip("this kernel gives no receive times (SO_TIMESTAMPNS): calls are counted when handled")
	}
	const stall = 600 * time.Millisecond
	for _, arrivals := range []bool{true, false} {
		emu, err := New(Config{SDKAppID: testApp, Admin: testAdmin, SecretKey: testSecret, Rate: 1})
		if err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int32
		stalling := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				time.Sleep(stall)
			}
			emu.ServeHTTP(w, r)
		})
		var h *harness
		if arrivals {
			h = serve(t, emu, stalling)
		} else {
			h = plainServe(t, emu, stalling)
		}
		recall := map[string]any{"GroupId": "@TGS#none", "MsgSeqList": seqs(1)}
		sent := time.Now()
		first := h.post("group_open_http_svc/group_msg_recall", recall)
		time.Sleep(time.Until(sent.Add(1100 * time.Millisecond)))
		second := h.post("group_open_http_svc/group_msg_recall", recall)
		st := emu.Stats()["group_msg_recall"]
		switch {
		case first.Code == 60007:
			t.Fatalf("arrivals %v: the first call was throttled", arrivals)
		case arrivals && (second.Code == 60007 || st.Accepted != 2 || st.Max1s != 1):
			t.Fatalf("a call 1.1 s after the first arrived: code %d, stats %+v; want both accepted, at most 1 in any second", second.Code, st)
		case arrivals && st.First.Sub(sent) > stall/2:
			t.Fatalf("the first call was counted %v after it was sent; its handler was stalled %v", st.First.Sub(sent), stall)
		case arrivals && st.HandledLateMaxMs < float64(stall/time.Millisecond):
			t.Fatalf("handled_late_max_ms %.1f: the first call's handler was stalled %v after it arrived", st.HandledLateMaxMs, stall)
		case !arrivals && second.Code != 60007:
			t.Fatalf("control: counted when its handler ran, the first call should crowd out the second: code %d, stats %+v", second.Code, st)
		}
	}
}

// plainServe is serve without the ArrivalListener: the emulator counts
// calls when their handler runs.
func plainServe(t *testing.T, emu *Server, h http.Handler) *harness {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	sig, err := tencentyun.GenUserSig(testApp, testSecret, testAdmin, 3600)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, emu: emu, url: srv.URL, sig: sig}
}

// TestAdmitOutOfOrder admits calls in another order than they arrived, as
// calls on several connections may be: a call is refused when any second
// holding it, including seconds ending at calls that arrived after it,
// would go over the cap, and Max1s counts those seconds too.
func TestAdmitOutOfOrder(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	capped := &apiStats{start: t0}
	if !capped.admit(at(1000), 2) || !capped.admit(at(1900), 2) {
		t.Fatal("two calls 900 ms apart refused at a cap of 2")
	}
	// Arrived 950 ms: the second (900, 1900] would hold three.
	if capped.admit(at(950), 2) {
		t.Fatalf("a call admitted late was accepted though (900 ms, 1900 ms] then holds 3: %+v", capped.s)
	}
	// Arrived 850 ms: every second holding it holds two at most.
	if !capped.admit(at(850), 2) {
		t.Fatalf("a call at 850 ms refused: no second holds it with two others: %+v", capped.s)
	}
	if capped.s.Accepted != 3 || capped.s.Throttled != 1 || capped.s.Max1s != 2 || !capped.s.First.Equal(at(850)) || !capped.s.Last.Equal(at(1900)) {
		t.Fatalf("stats %+v", capped.s)
	}
	// Handled 2.1 s after it arrived, behind a later call: the second
	// ending at 900 ms still holds the two before it.
	stalled := &apiStats{start: t0}
	for _, ms := range []int{0, 100, 3000} {
		stalled.admit(at(ms), 2)
	}
	if stalled.admit(at(900), 2) {
		t.Fatalf("a call handled 2.1 s after its arrival was accepted though (0, 900 ms] then holds 3: %+v", stalled.s)
	}
	open := &apiStats{start: t0}
	for _, ms := range []int{1000, 1900, 950} {
		open.admit(at(ms), 0)
	}
	if open.s.Max1s != 3 || open.s.PerSecond[0] != 1 || open.s.PerSecond[1] != 2 {
		t.Fatalf("uncapped, 950, 1000 and 1900 ms: Max1s %d, per second %v; want 3 and [1 2]", open.s.Max1s, open.s.PerSecond)
	}
}

// kernelTimesArrivals reports whether a connection accepted by an
// ArrivalListener learns its bytes' receive time here (Linux does). The
// kernel turns receive times on for the whole system a moment after the
// first socket asks (in a work queue), and off when the last one closes:
// the probe's listener stays open until the test ends, and it tries a few
// times.
func kernelTimesArrivals(t *testing.T) bool {
	t.Helper()
	if runtime.GOOS != "linux" {
		return false
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al := ArrivalListener(ln)
	t.Cleanup(func() { al.Close() })
	for range 20 {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err := al.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := server.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		client.Close()
		server.Close()
		if a, ok := server.(interface{ stamps() *arrivalStamps }); ok && a.stamps().latest.Load() != 0 {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// TestAdmitLaterThanTheWindowKeeps: a call handled more than the window's
// keptArrivals after it arrived, behind later calls, was checked against a
// window whose calls of its second had been dropped, and accepted though
// its second then held more than the cap. Nothing bounds that delay (the
// server's ReadHeaderTimeout times the reading of a request, not the wait
// between its bytes arriving and its handler counting it), so such a call
// is counted at the latest arrival seen, where the window is whole.
func TestAdmitLaterThanTheWindowKeeps(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	a := &apiStats{start: t0}
	for _, ms := range []int{0, 100, 11_000} {
		if !a.admit(at(ms), 2) {
			t.Fatalf("a call at %d ms refused at a cap of 2: %+v", ms, a.s)
		}
	}
	// Arrived at 900 ms, handled after the call of 11 s: (-100 ms, 900 ms]
	// already holds two.
	a.admit(at(900), 2)
	a.admit(at(900), 2)
	if a.s.Max1s > 2 || a.s.PerSecond[0] > 2 {
		t.Fatalf("calls handled 10.1 s after they arrived: Max1s %d, %d accepted in the first second, at a cap of 2: %+v", a.s.Max1s, a.s.PerSecond[0], a.s)
	}
	if a.s.Accepted != 4 || a.s.Throttled != 1 {
		t.Fatalf("want the first late call counted at the latest arrival (11 s, with one other) and the second refused there: %+v", a.s)
	}
}

// TestUnknownAPINamesRefused: a mistyped API name in RateOf or
// Faults.CodesOf was accepted, and the cap or the fault silently never
// applied.
func TestUnknownAPINamesRefused(t *testing.T) {
	base := Config{SDKAppID: testApp, Admin: testAdmin, SecretKey: testSecret}
	typo := base
	typo.RateOf = map[string]int{"group_msg_recal": 5}
	if _, err := New(typo); err == nil || !strings.Contains(err.Error(), "group_msg_recal") {
		t.Fatalf("RateOf with a mistyped API: %v", err)
	}
	typo = base
	typo.Faults.CodesOf = map[string]map[int]float64{"get_topics": {10007: 1}}
	if _, err := New(typo); err == nil || !strings.Contains(err.Error(), "get_topics") {
		t.Fatalf("Faults.CodesOf with a mistyped API: %v", err)
	}
	ok := base
	ok.RateOf = map[string]int{"group_msg_recall": 5}
	ok.Faults.CodesOf = map[string]map[int]float64{"get_topic": {10007: 1}}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
}
