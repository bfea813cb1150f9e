package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// ErrNoTokens is LoadTokens' answer when neither source holds a token.
var ErrNoTokens = errors.New("no API tokens: set IMRECALL_API_TOKENS=NAME:ROLE:SECRET or --tokens-file")

// LoadTokens reads API tokens from a comma-separated list (the
// IMRECALL_API_TOKENS form) and a file of one token per line; at least one
// is required. The secrets never appear in its errors.
func LoadTokens(list, file string) ([]Token, error) {
	var out []Token
	if list != "" {
		ts, err := ParseTokens(strings.NewReader(list), "--api-tokens (IMRECALL_API_TOKENS)")
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
	}
	if file != "" {
		fh, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--tokens-file: %w", err)
		}
		defer fh.Close()
		ts, err := ParseTokens(fh, file)
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
	}
	if len(out) == 0 {
		return nil, ErrNoTokens
	}
	return out, nil
}

// TokenNames lists tokens as NAME:ROLE, for logs: never the secret.
func TokenNames(tokens []Token) string {
	names := make([]string, len(tokens))
	for i, t := range tokens {
		names[i] = t.Name + ":" + string(t.Role)
	}
	return strings.Join(names, ",")
}

// BodyTimeout is how long ServeHTTP gives a request's body to arrive, from
// the end of its headers: a 16 MiB job request (MaxJobBody) in a minute is
// about 280 KB/s.
const BodyTimeout = time.Minute

// bodyTimeout is BodyTimeout; tests shorten it.
var bodyTimeout = BodyTimeout

// ServeHTTP serves h on ln until ctx ends, then shuts down gracefully
// (10 s at most). onShutdown, if set, runs when ctx has ended, before the
// shutdown. A request's headers must arrive within 10 s and its body within
// BodyTimeout.
func ServeHTTP(ctx context.Context, ln net.Listener, h http.Handler, onShutdown func()) error {
	hs := &http.Server{Handler: bodyDeadline(h, bodyTimeout), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	if onShutdown != nil {
		onShutdown()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}

// bodyDeadline gives the body of each request d to arrive. Without it a
// client that sends its headers and then trickles the body (a byte a
// minute, or nothing) holds its connection and goroutine for ever, before
// any token is checked: POST /login reads its form unauthenticated, and
// net/http drains an unread body after every handler. The deadline is lifted
// once the body is read to its end, so that a long answer (a dry run, the
// console's live stream) is not cut: http.Server.ReadTimeout would cancel
// the request's context when it passed.
func bodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(d)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts its connection's read deadline at the end of the body.
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	lifted bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.lifted {
		b.lifted = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
