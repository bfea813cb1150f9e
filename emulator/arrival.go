package emulator

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// A real server counts a call against its cap when the call reaches it.
// The emulator shares its host with the callers it judges, so a goroutine
// of its own may get round to a call milliseconds after the call's bytes
// arrived, and counting then would judge its own scheduling, not the
// caller: on a loaded machine two calls a second apart could be counted
// less than a second apart. An ArrivalListener's connections keep the
// time the kernel received the bytes they last read (Linux's
// SO_TIMESTAMPNS), and the emulator counts each call at that time; where
// the kernel gives no time (another system, a connection not made by an
// ArrivalListener) it counts the call when its handler runs, as before.

// ArrivalListener wraps ln so that the emulator counts each call it serves
// at the time the call's bytes reached this host. Serve it with an
// http.Server whose ConnContext is ConnContext (HTTPServer sets both).
func ArrivalListener(ln net.Listener) net.Listener {
	stampListener(ln)
	return arrivalListener{ln}
}

type arrivalListener struct{ net.Listener }

func (l arrivalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newArrivalConn(c), nil
}

// arrivalStamps is what an ArrivalListener's connection knows of its
// reads: when the kernel received the bytes of the latest read that
// returned any (0: no time given).
type arrivalStamps struct {
	latest atomic.Int64 // Unix ns
}

type connKey struct{}

// ConnContext is an http.Server's ConnContext for a server answering with
// the emulator over an ArrivalListener: it lets a call find its
// connection's arrival times.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if a, ok := c.(interface{ stamps() *arrivalStamps }); ok {
		return context.WithValue(ctx, connKey{}, a.stamps())
	}
	return ctx
}

// HTTPServer returns an http.Server answering with s that counts calls at
// their arrival when it serves on an ArrivalListener.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second, ConnContext: ConnContext}
}

// arrivalOf is when r reached this host: the kernel's time for the latest
// bytes its connection read, or now where there is none (and never later
// than now).
func arrivalOf(r *http.Request) time.Time {
	now := time.Now().Round(0) // wall clock, as the kernel's times are
	a, _ := r.Context().Value(connKey{}).(*arrivalStamps)
	if a == nil {
		return now
	}
	ns := a.latest.Load()
	if ns == 0 {
		return now
	}
	if t := time.Unix(0, ns); t.Before(now) {
		return t
	}
	return now
}
