package msgindex

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// ServiceConfig is what the index of `imrecall serve` runs with: the
// callback receiver, the heartbeat that turns a silence into a coverage
// gap, and the confirmer.
type ServiceConfig struct {
	Redis  redis.UniversalClient
	Prefix string
	// Retention is how long entries are kept; zero keeps them forever.
	Retention time.Duration
	SDKAppID  int64
	// Token is the callback token; empty accepts unsigned callbacks, and
	// a warning is logged every minute.
	Token string
	// IM reads the histories for the confirmer.
	IM History
	// ConfirmRate is the confirmer's history calls per second; zero turns
	// the confirmer off.
	ConfirmRate  float64
	ConfirmEvery time.Duration
	// Heartbeat is how often the index records that callbacks are received.
	Heartbeat time.Duration
	// Registry, if set, gets the callback and confirmation counters.
	Registry prometheus.Registerer
	Log      *slog.Logger
}

// Start builds the index and its callback receiver and runs the heartbeat,
// the confirmer (if ConfirmRate is above 0) and the unsigned-callback
// warning (if Token is empty) until ctx ends.
func Start(ctx context.Context, cfg ServiceConfig) (*Index, *Callbacks) {
	counter := NewCallbackCounter()
	register(cfg.Registry, counter)
	idx := New(cfg.Redis, cfg.Prefix, cfg.Retention)
	cb := &Callbacks{Index: idx, SDKAppID: cfg.SDKAppID, Token: cfg.Token, Log: cfg.Log, Counter: counter}
	beat := func(gap *Gap, err error) {
		switch {
		case err != nil && ctx.Err() == nil:
			cfg.Log.Warn("index heartbeat", "err", err)
		case gap != nil:
			cfg.Log.Warn("the index has a gap: callbacks may have been lost", "from", gap.From, "to", gap.To, "reason", gap.Reason)
		}
	}
	go every(ctx, cfg.Heartbeat, func() {
		beat(idx.Alive(ctx, cfg.SDKAppID, cfg.Heartbeat))
		beat(cb.RecordLost(ctx))
	})
	if cfg.ConfirmRate > 0 {
		confirmed := NewConfirmCounter()
		register(cfg.Registry, confirmed)
		cf := &Confirmer{Index: idx, IM: cfg.IM, SDKAppID: cfg.SDKAppID, Rate: cfg.ConfirmRate, Counter: confirmed, Log: cfg.Log}
		go cf.Run(ctx, cfg.ConfirmEvery)
	}
	if cfg.Token == "" {
		go every(ctx, time.Minute, func() {
			cfg.Log.Warn("--insecure-callbacks: /callback accepts unsigned callbacks from anyone; set IMRECALL_CALLBACK_TOKEN as configured in the IM console")
		})
	}
	return idx, cb
}

func register(reg prometheus.Registerer, c prometheus.Collector) {
	if reg != nil {
		reg.MustRegister(c)
	}
}

// every calls fn now and every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		fn()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
