package tim

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// stallingConn holds each write back before it reaches the socket, as a
// flush delayed by a loaded machine would be, and records when each write
// returned.
type stallingConn struct {
	net.Conn
	stall time.Duration
	mu    sync.Mutex
	wrote []time.Time
}

func (c *stallingConn) Write(p []byte) (int, error) {
	time.Sleep(c.stall)
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.wrote = append(c.wrote, time.Now())
	c.mu.Unlock()
	return n, err
}

func (c *stallingConn) writes() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.wrote)
}

// stallingDial dials TCP connections that stall each write by stall, and
// keeps them.
type stallingDial struct {
	stall time.Duration
	mu    sync.Mutex
	conns []*stallingConn
}

func (d *stallingDial) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	sc := &stallingConn{Conn: c, stall: d.stall}
	d.mu.Lock()
	d.conns = append(d.conns, sc)
	d.mu.Unlock()
	return sc, nil
}

// reports records the times a call's writes were reported.
type reports struct {
	mu sync.Mutex
	at []time.Time
}

func (r *reports) add(at time.Time) {
	r.mu.Lock()
	r.at = append(r.at, at)
	r.mu.Unlock()
}

func (r *reports) times() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.at)
}

// clientOver is a test client calling base through tr.
func clientOver(t *testing.T, base string, tr *http.Transport) *Client {
	t.Cleanup(tr.CloseIdleConnections)
	return newTestClient(t, base, func(cfg *Config) { cfg.HTTPClient = &http.Client{Transport: tr} })
}

// TestWriteReportedAfterTheSocketWrite: a call's write is reported no
// earlier than its request reached the socket, even when the flush is held
// back (30 ms here) after the request went into the connection's buffer.
// The control: WroteRequest alone (a transport of the caller's, whose
// connections do not report) tells the write before the stalled flush,
// which is why NewTransport's connections report their writes themselves.
func TestWriteReportedAfterTheSocketWrite(t *testing.T) {
	srv := httptest.NewServer(&scripted{t: t, answers: []func(http.ResponseWriter){okBody("")}})
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name      string
		reporting bool
	}{{"NewTransport's connections", true}, {"a transport of the caller's", false}} {
		t.Run(tc.name, func(t *testing.T) {
			d := &stallingDial{stall: 30 * time.Millisecond}
			tr := &http.Transport{DialContext: d.DialContext}
			if tc.reporting {
				tr.DialContext = reportingDial(d.DialContext)
			}
			c := clientOver(t, srv.URL, tr)
			var r reports
			ctx := WhenWritten(t.Context(), r.add)
			if _, err := c.AdminMsgWithdraw(ctx, AdminMsgWithdrawRequest{FromAccount: "a", ToAccount: "b", MsgKey: "1_2_3"}); err != nil {
				t.Fatal(err)
			}
			if len(d.conns) != 1 {
				t.Fatalf("%d connections, want 1", len(d.conns))
			}
			writes, reported := d.conns[0].writes(), r.times()
			if len(writes) == 0 || len(reported) == 0 {
				t.Fatalf("writes %v, reported %v", writes, reported)
			}
			last := writes[len(writes)-1]
			early := reported[len(reported)-1].Before(last)
			if tc.reporting && (early || len(reported) != len(writes)) {
				t.Fatalf("reported %v for writes that returned at %v: a report before its write, or not one a write", reported, writes)
			}
			if !tc.reporting && !early {
				t.Fatalf("WroteRequest reported %v, not before the stalled flush at %v: the test does not stall the flush", reported, last)
			}
		})
	}
}

// TestReusedConnectionReportsToItsCall: a connection that carried a call
// reporting its writes, then a call that reports nothing, does not tell the
// first call about the second's write.
func TestReusedConnectionReportsToItsCall(t *testing.T) {
	srv := httptest.NewServer(&scripted{t: t, answers: []func(http.ResponseWriter){okBody("")}})
	t.Cleanup(srv.Close)
	d := &stallingDial{}
	tr := &http.Transport{DialContext: reportingDial(d.DialContext), MaxConnsPerHost: 1}
	c := clientOver(t, srv.URL, tr)
	var r reports
	req := AdminMsgWithdrawRequest{FromAccount: "a", ToAccount: "b", MsgKey: "1_2_3"}
	if _, err := c.AdminMsgWithdraw(WhenWritten(t.Context(), r.add), req); err != nil {
		t.Fatal(err)
	}
	after := len(r.times())
	for range 3 {
		if _, err := c.AdminMsgWithdraw(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(r.times()); len(d.conns) != 1 || after == 0 || n != after {
		t.Fatalf("%d connections; the first call had %d reports, %d after three more calls on its connection", len(d.conns), after, n)
	}
}

// heldConn holds its second write back 30 ms before the socket takes it and
// 100 ms after (a writer descheduled between two flushes, then after the
// syscall), and records when that write returned from the socket.
type heldConn struct {
	net.Conn
	mu       sync.Mutex
	n        int
	returned time.Time
}

func (c *heldConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n++
	second := c.n == 2
	c.mu.Unlock()
	if !second {
		return c.Conn.Write(p)
	}
	time.Sleep(30 * time.Millisecond)
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.returned = time.Now()
	c.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	return n, err
}

// TestLastWriteReportedWhenTheCallIsOver: a request written in two writes
// (larger than the transport's buffer) whose last write is held back after
// the socket took it: the server answers, and the transport gives up
// waiting for the write (50 ms) and returns the answer, before the write
// returns. The call's last report is still no earlier than that write.
func TestLastWriteReportedWhenTheCallIsOver(t *testing.T) {
	srv := httptest.NewServer(&scripted{t: t, answers: []func(http.ResponseWriter){okBody("")}})
	t.Cleanup(srv.Close)
	var held *heldConn
	tr := &http.Transport{DialContext: reportingDial(func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		held = &heldConn{Conn: c}
		return held, nil
	})}
	c := clientOver(t, srv.URL, tr)
	var r reports
	ctx := WhenWritten(t.Context(), r.add)
	key := strings.Repeat("1", 6000) // the request takes two writes
	if _, err := c.AdminMsgWithdraw(ctx, AdminMsgWithdrawRequest{FromAccount: "a", ToAccount: "b", MsgKey: key}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the held write returns
	held.mu.Lock()
	returned, writes := held.returned, held.n
	held.mu.Unlock()
	reported := r.times()
	if writes < 2 || returned.IsZero() || len(reported) == 0 || reported[len(reported)-1].Before(returned) {
		t.Fatalf("%d writes, the second returned at %v; reports %v: the last report is before it", writes, returned, reported)
	}
}
