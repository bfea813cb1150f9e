package worker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// RedisRTT is the median of five PINGs (0 if Redis does not answer): what
// DefaultDequeuers and MinConcurrency are given.
func RedisRTT(ctx context.Context, rdb redis.UniversalClient) time.Duration {
	var ds []time.Duration
	for range 5 {
		start := time.Now()
		if rdb.Ping(ctx).Err() != nil {
			return 0
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// ServeMetrics serves reg as Prometheus /metrics on ln until the returned
// server is closed.
func ServeMetrics(ln net.Listener, reg *prometheus.Registry, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return srv
}

// Serve starts srv and runs background (the reconciler, say; nil: none)
// until ctx ends; then it waits for background and shuts srv down, letting
// the calls in flight finish.
func Serve(ctx context.Context, srv *Server, background func(context.Context), log *slog.Logger) error {
	if err := srv.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if background != nil {
			background(ctx)
		}
	}()
	<-ctx.Done()
	<-done
	log.Info("shutting down: finishing calls in flight")
	srv.Shutdown()
	log.Info("worker stopped")
	return nil
}
