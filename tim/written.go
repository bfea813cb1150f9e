package tim

import (
	"context"
	"crypto/tls"
	"net"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// When a call was written: the limiter bounds a call's arrival at the
// server by the time its request left this process (SentReporter), so the
// time reported must not be earlier than the write. httptrace's
// WroteRequest is not enough on HTTP/1: the transport calls it when the
// request is in the connection's buffer and flushes the buffer just after,
// in the same goroutine; a process descheduled between the two (a loaded
// machine, a GC pause) sends the request later than it reported. The
// connections of NewTransport therefore tell the call they carry when a
// write to the socket returned: the bytes were handed to the kernel before
// that instant. HTTP/2 flushes before WroteRequest, and a transport that
// is not NewTransport's (Config.HTTPClient) has no such connections: those
// calls are reported by WroteRequest.
//
// A report may come late, never early: a TLS connection that closes while
// a call still holds it (Connection: close, a cancelled call) writes its
// close_notify after the request, and that write is reported too. The
// latest write counts, so such a call's bound is its round trip later than
// it need be: one call of cap, which costs the budget nothing.

// reportingConn is a connection of NewTransport: each write that returns
// having written something is told to the call it carries, if that call
// wants to know (an HTTP/1 connection carries one call at a time).
type reportingConn struct {
	net.Conn
	wrote atomic.Pointer[func(time.Time)]
	// writing counts the writes in progress: a call that is over while its
	// connection is still writing (the server answered before the last
	// write returned, or the writer was descheduled after the syscall)
	// leaves its hook in place for that write to report.
	writing atomic.Int32
}

func (c *reportingConn) Write(p []byte) (int, error) {
	c.writing.Add(1)
	defer c.writing.Add(-1)
	n, err := c.Conn.Write(p)
	if n > 0 {
		if f := c.wrote.Load(); f != nil {
			(*f)(time.Now())
		}
	}
	return n, err
}

// reportingDial wraps dial's connections in reportingConns.
func reportingDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &reportingConn{Conn: c}, nil
	}
}

// writeTrace reports the writes of one call to f: through its connection
// when it is a reportingConn carrying HTTP/1 (plain, or TLS below it),
// through WroteRequest otherwise. A call that reports nothing (f nil) still
// takes its connection's reporting over, so that its writes are not told to
// the call the connection carried before. done, called when the call is
// over, stops the connection reporting to f, unless a write is still in
// progress on it (that write then reports to f, late rather than never; the
// next call on the connection takes the reporting over).
func writeTrace(f func(time.Time)) (trace *httptrace.ClientTrace, done func()) {
	var byConn atomic.Bool
	var conn atomic.Pointer[reportingConn]
	var hook *func(time.Time)
	if f != nil {
		hook = &f
	}
	trace = &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			c := info.Conn
			if tc, ok := c.(*tls.Conn); ok {
				if tc.ConnectionState().NegotiatedProtocol == "h2" {
					byConn.Store(false)
					return
				}
				c = tc.NetConn()
			}
			rc, ok := c.(*reportingConn)
			if !ok {
				byConn.Store(false)
				return
			}
			if old := conn.Swap(rc); old != nil && old != rc && hook != nil {
				old.wrote.CompareAndSwap(hook, nil) // the call moved on (a replay on another connection)
			}
			rc.wrote.Store(hook)
			byConn.Store(true)
		},
	}
	if f != nil {
		trace.WroteRequest = func(i httptrace.WroteRequestInfo) {
			if i.Err == nil && !byConn.Load() {
				f(time.Now())
			}
		}
	}
	done = func() {
		if rc := conn.Load(); rc != nil && hook != nil && rc.writing.Load() == 0 {
			rc.wrote.CompareAndSwap(hook, nil)
		}
	}
	return trace, done
}
