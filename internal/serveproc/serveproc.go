// Package serveproc assembles one `imrecall serve` process from settings
// already read and checked: the HTTP API, the message index and its
// callbacks, the asynq dashboard, the console and metrics, then serves
// until ctx ends. cmd/imrecall reads the flags; this package wires the
// parts.
package serveproc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/api"
	"github.com/imrecall/imrecall/console"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tim"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// Config is what Run assembles serve from.
type Config struct {
	Redis  redis.UniversalClient
	Asynq  asynq.RedisConnOpt
	Store  *jobs.Store
	Prefix string
	// IM is the gated IM client of app AppID, Limiter its limiter (the
	// console shows its caps).
	IM      *tim.Client
	Limiter *limiter.Limiter
	AppID   int64
	Tokens  []api.Token
	// Index keeps the message index from callbacks; IndexService holds
	// the confirmer and heartbeat settings (Run fills the rest), and
	// CallbackToken signs callbacks ("" accepts unsigned ones).
	Index         bool
	IndexService  msgindex.ServiceConfig
	Retention     time.Duration
	CallbackToken string
	// Monitor serves the asynq dashboard under /monitor/.
	Monitor bool
	// Certificates, if set, lets the API sign certificates of erasure.
	Certificates         *api.Certificates
	VerifyTimeout        time.Duration
	ConfirmAbove         int
	DiscoveryConcurrency int
	ApprovalAbove        int
	ApprovalDelay        time.Duration
	// Backlog bounds each job's queued work (imrecall.Config.Backlog):
	// a request answers once planning first waits, and planning goes on.
	Backlog int64
	// IndexSettle is imrecall.Config.IndexSettle: how long a purge by
	// index reaching now waits for the callbacks in flight.
	IndexSettle time.Duration
	// Listen is the address served on; RedisName the Redis URL, redacted,
	// for the start line.
	Listen    string
	RedisName string
	Logger    *slog.Logger
}

// InputError is a setting the operator must change (the CLI exits 2).
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Run assembles serve and serves until ctx ends, then shuts down.
func Run(ctx context.Context, c Config) error {
	if c.Backlog < 0 {
		return &InputError{fmt.Errorf("--backlog (IMRECALL_BACKLOG) %d: must not be negative", c.Backlog)}
	}
	log := c.Logger
	enq := asynq.NewClient(c.Asynq)
	defer enq.Close()
	inspector := asynq.NewInspector(c.Asynq)
	defer inspector.Close()
	reg := api.NewRegistry(inspector, c.Store)
	cfg := api.Config{
		Store: c.Store, Schedules: producer.NewSchedules(c.Redis, c.Prefix), IM: c.IM,
		AppID: c.AppID, Tokens: c.Tokens, DiscoveryConcurrency: c.DiscoveryConcurrency,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), Log: log,
		Ready:        func(ctx context.Context) error { return c.Redis.Ping(ctx).Err() },
		Certificates: c.Certificates, VerifyTimeout: c.VerifyTimeout,
	}
	if c.Index {
		idx := c.IndexService
		idx.Redis, idx.Prefix, idx.Retention, idx.SDKAppID, idx.Token = c.Redis, c.Prefix, c.Retention, c.AppID, c.CallbackToken
		idx.IM, idx.Registry, idx.Log = c.IM, reg, log
		// Where it runs: a serve started again there after a kill is
		// known as its successor at its first beat.
		host, _ := os.Hostname()
		idx.Replica = host + "/" + c.Listen
		svc := msgindex.Start(ctx, idx)
		cfg.Index, cfg.Callbacks = svc.Index, svc.Callbacks
		// Runs last, once the server no longer takes callbacks: the
		// next receiver to start knows this one stopped (and when).
		defer func() {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := svc.Leave(lctx); err != nil {
				log.Warn("taking the callback receiver out of the index", "err", err)
			}
		}()
	}
	if c.Monitor {
		defer cfg.AddMonitor(c.Asynq)()
	}
	var err error
	if cfg.Client, err = imrecall.New(imrecall.Config{Redis: c.Redis, Prefix: c.Prefix, Queue: enq, AppID: c.AppID,
		IM: c.IM, Index: cfg.Index, ConfirmAbove: c.ConfirmAbove, DiscoveryConcurrency: c.DiscoveryConcurrency, Logger: log,
		ApprovalAbove: c.ApprovalAbove, ApprovalDelay: c.ApprovalDelay, Backlog: c.Backlog, IndexSettle: c.IndexSettle}); err != nil {
		return err
	}
	// Runs before the queue closes: plans going on stop, queue what they
	// planned and say so.
	defer cfg.Client.Close()
	srv, err := api.New(cfg)
	if err != nil {
		return &InputError{err}
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return &InputError{fmt.Errorf("--listen %q: %v", c.Listen, err)}
	}
	handler, err := console.MountOn(srv, cfg.Client, c.Tokens, c.Redis, c.Store.Prefix(), c.Limiter.CapOf, log)
	if err != nil {
		return err
	}
	log.Info("serving", "addr", ln.Addr().String(), "sdkappid", c.AppID, "tokens", api.TokenNames(c.Tokens),
		"index", c.Index, "index_retention", c.Retention.String(), "callback_signed", c.CallbackToken != "", "redis", c.RedisName)
	return api.ServeHTTP(ctx, ln, handler, func() { log.Info("shutting down") })
}

// CheckIndex checks the index settings: with the index on, a callback
// token (or insecure, accepting unsigned callbacks); and s's heartbeat,
// confirmer rate and interval.
func CheckIndex(index, insecure bool, token string, s msgindex.ServiceConfig) error {
	bad := func(format string, args ...any) error { return &InputError{fmt.Errorf(format, args...)} }
	switch {
	case index && token == "" && !insecure:
		return bad("no callback token: without one anyone can post callbacks and fill the message index that purges by index recall from; set IMRECALL_CALLBACK_TOKEN (or --callback-token-file) to the token configured in the IM console, or start with --insecure-callbacks (or --index=false)")
	case s.Heartbeat <= 0:
		return bad("--index-heartbeat %s: want a positive duration", s.Heartbeat)
	case s.ConfirmRate < 0:
		return bad("--confirm-rate %v: want 0 (no confirmer) or more calls per second", s.ConfirmRate)
	case s.ConfirmEvery <= 0:
		return bad("--confirm-every %s: want a positive duration", s.ConfirmEvery)
	}
	return nil
}
