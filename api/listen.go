package api

import (
	"context"
	"errors"
	"fmt"
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

// ServeHTTP serves h on ln until ctx ends, then shuts down gracefully
// (10 s at most). onShutdown, if set, runs when ctx has ended, before the
// shutdown.
func ServeHTTP(ctx context.Context, ln net.Listener, h http.Handler, onShutdown func()) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
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
