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
	// Replica names this receiver among the replicas that beat, the same
	// after a restart in the same place (Callbacks.Replica); empty: a
	// random name.
	Replica string
	// Registry, if set, gets the callback and confirmation counters.
	Registry prometheus.Registerer
	Log      *slog.Logger
}

// Service is the index of a running serve: the index, its callback
// receiver, and the heartbeat and confirmer Start runs.
type Service struct {
	Index     *Index
	Callbacks *Callbacks

	stopBeat func()
	beating  chan struct{} // closed when the heartbeat has stopped
	log      *slog.Logger
}

// Start builds the index and its callback receiver and runs the heartbeat,
// the confirmer (if ConfirmRate is above 0) and the unsigned-callback
// warning (if Token is empty) until ctx ends. Call Leave once the receiver
// no longer takes callbacks.
func Start(ctx context.Context, cfg ServiceConfig) *Service {
	counter := NewCallbackCounter()
	register(cfg.Registry, counter)
	idx := New(cfg.Redis, cfg.Prefix, cfg.Retention)
	cb := &Callbacks{Index: idx, SDKAppID: cfg.SDKAppID, Token: cfg.Token, Log: cfg.Log, Counter: counter, Replica: cfg.Replica}
	beatCtx, stopBeat := context.WithCancel(ctx)
	s := &Service{Index: idx, Callbacks: cb, stopBeat: stopBeat, beating: make(chan struct{}), log: cfg.Log}
	go func() {
		defer close(s.beating)
		every(beatCtx, cfg.Heartbeat, func() {
			lost, silence, err := cb.Beat(beatCtx, cfg.Heartbeat)
			if err != nil && beatCtx.Err() == nil {
				cfg.Log.Warn("index heartbeat", "err", err)
			}
			for _, gap := range []*Gap{lost, silence} {
				if gap != nil {
					cfg.Log.Warn("the index has a gap: callbacks may have been lost", "from", gap.From, "to", gap.To, "reason", gap.Reason)
				}
			}
		})
	}()
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
	return s
}

// Leave stops the heartbeat and takes this receiver out of the replicas
// that beat, with any gap it still holds (Callbacks.Leave): call it after
// the HTTP server stopped, so that no callback comes after. A receiver
// started next while no other runs records the time between as a gap.
func (s *Service) Leave(ctx context.Context) error {
	s.stopBeat()
	select {
	case <-s.beating:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Callbacks.Leave(ctx)
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
