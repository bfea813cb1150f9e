package redisproxy

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func client(t *testing.T, addr string, poolSize int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: poolSize, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestDelayOrderAndConcurrency: commands through the proxy take at least
// two one-way delays, keep their order (a pipeline of INCRs answers
// 1..n), concurrent connections are delayed side by side rather than one
// after another, the delay changes at run time, and Close ends every
// connection.
func TestDelayOrderAndConcurrency(t *testing.T) {
	srv := redistest.Start(t)
	const d = 15 * time.Millisecond
	p, err := Start(srv.Addr(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := t.Context()
	c := client(t, p.Addr(), 32)
	if err := c.Ping(ctx).Err(); err != nil { // dial outside the measurement
		t.Fatal(err)
	}

	// Sequential round trips: each at least 2d.
	start := time.Now()
	const seq = 10
	for range seq {
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	seqTook := time.Since(start)
	if seqTook < seq*2*d {
		t.Fatalf("%d round trips took %v, less than %d × 2 × %v: the delay is not applied", seq, seqTook, seq, d)
	}

	// Order: a pipeline of writes is answered in order, every value seen.
	pipe := c.Pipeline()
	cmds := make([]*redis.IntCmd, 200)
	for i := range cmds {
		cmds[i] = pipe.Incr(ctx, "ctr")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i, cmd := range cmds {
		if cmd.Val() != int64(i+1) {
			t.Fatalf("pipelined INCR %d answered %d, want %d: order lost", i, cmd.Val(), i+1)
		}
	}

	// Concurrency: 20 connections each doing one round trip at once take
	// far less than 20 sequential round trips.
	const conc = 20
	var wg sync.WaitGroup
	for i := range conc { // open the connections first
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Set(ctx, fmt.Sprint("k", i), i, 0).Err() }()
	}
	wg.Wait()
	start = time.Now()
	errs := make(chan error, conc)
	for i := range conc {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- c.Get(ctx, fmt.Sprint("k", i)).Err() }()
	}
	wg.Wait()
	concTook := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	perSeq := seqTook / seq
	if ratio := float64(concTook) / float64(conc*perSeq); ratio > 0.5 {
		t.Fatalf("%d concurrent round trips took %v, %.2f of %d sequential ones (%v each): delays are serialised", conc, concTook, ratio, conc, perSeq)
	}

	// Run-time change: with no delay a round trip is far under 2d.
	p.SetDelay(0)
	if p.Delay() != 0 {
		t.Fatalf("Delay() = %v after SetDelay(0)", p.Delay())
	}
	_ = c.Ping(ctx).Err() // a chunk read before the change may still be due
	start = time.Now()
	for range seq {
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if fast := time.Since(start); float64(fast) > 0.5*float64(seqTook) {
		t.Fatalf("after SetDelay(0), %d round trips took %v, not much less than %v with the delay", seq, fast, seqTook)
	}

	// Close ends the connections: the client's next command fails, and the
	// server is untouched.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	nc := client(t, p.Addr(), 1)
	if err := nc.Ping(ctx).Err(); err == nil {
		t.Fatal("a new connection to a closed proxy answered")
	}
	if n, err := srv.Client().Get(ctx, "ctr").Int(); err != nil || n != 200 {
		t.Fatalf("ctr on the server = %d, %v; want 200", n, err)
	}
}

func TestNegativeDelay(t *testing.T) {
	if _, err := Start("127.0.0.1:1", -time.Millisecond); err == nil {
		t.Fatal("Start accepted a negative delay")
	}
}
