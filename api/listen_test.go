package api

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveShortBodyTimeout serves h with ServeHTTP, bodies given d to arrive,
// and returns the address.
func serveShortBodyTimeout(t *testing.T, d time.Duration, h http.Handler) string {
	t.Helper()
	old := bodyTimeout
	bodyTimeout = d
	t.Cleanup(func() { bodyTimeout = old })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeHTTP(ctx, ln, h, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// TestSlowBodyIsCut: a client that sends its headers and then trickles the
// body (here: nothing) loses its connection once BodyTimeout has passed,
// whether the handler reads the body (POST /login reads its form before
// any token is checked) or not (net/http drains it after the handler).
func TestSlowBodyIsCut(t *testing.T) {
	addr := serveShortBodyTimeout(t, 300*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/read" {
			if _, err := io.ReadAll(r.Body); err != nil {
				http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		fmt.Fprint(w, "ok")
	}))
	for _, path := range []string{"/read", "/ignore"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ncsrf=", path)
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(5 * time.Second))
		_, err = io.ReadAll(conn) // an answer, if any, then the close
		if err != nil {
			t.Errorf("%s: a body that never arrives holds the connection: %v after %s", path, err, time.Since(start).Round(time.Millisecond))
		}
	}
}

// TestBodyDeadlineLiftedOnceRead: once the body is read, a handler that
// answers for longer than BodyTimeout (a dry run, a live stream) keeps its
// context and its connection.
func TestBodyDeadlineLiftedOnceRead(t *testing.T) {
	addr := serveShortBodyTimeout(t, 200*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(time.Second):
			fmt.Fprint(w, "still here")
		case <-r.Context().Done():
			// the client sees no answer: the test fails below
		}
	}))
	resp, err := http.Post("http://"+addr+"/", "application/json", strings.NewReader(`{"dry_run":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(bufio.NewReader(resp.Body))
	if string(b) != "still here" {
		t.Errorf("a handler running past BodyTimeout after reading its body: got %d %q, want 200 \"still here\"", resp.StatusCode, b)
	}
}
