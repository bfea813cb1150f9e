// Package workerproc assembles one `imrecall worker` process from settings
// already read: the recall handler and its metrics, purge discovery, the
// schedule runner, the reconciler and the asynq servers, then serves until
// ctx ends. cmd/imrecall reads the flags; this package wires the parts.
package workerproc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/reconcile"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
)

// Settings are the worker's own flags.
type Settings struct {
	// Concurrency is the recall tasks run at once per lane; above 0.
	Concurrency int
	// Dequeuers is the asynq servers per recall lane; 0 sizes them by the
	// measured Redis round trip.
	Dequeuers int
	// Discoveries is the discovery slots; 0 is a quarter of Concurrency
	// (Validate sets it).
	Discoveries int
	// MaxAttempts is the calls per message for transient failures; above 0.
	MaxAttempts int
	// MetricsListen, if set, is where Prometheus /metrics is served.
	MetricsListen string
	// ScanBudget and ScanPages bound one discovery task (ScanPages 0: by
	// time only).
	ScanBudget time.Duration
	ScanPages  int
	// Reconcile is the reconciler's interval; 0 turns it off here.
	Reconcile time.Duration
	// PlannerLease is a planner's lease; above 0.
	PlannerLease time.Duration
}

// InputError is a setting the operator must change (the CLI exits 2); its
// text names the flag and its environment variable.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(format string, args ...any) error {
	return &InputError{fmt.Errorf(format, args...)}
}

// Validate checks s and fills Discoveries' default.
func (s *Settings) Validate() error {
	if s.Concurrency <= 0 {
		return inputErr("--concurrency (IMRECALL_CONCURRENCY) %d: must be positive", s.Concurrency)
	}
	switch {
	case s.Discoveries < 0:
		return inputErr("--discovery-concurrency (IMRECALL_DISCOVERY_CONCURRENCY) %d: must not be negative", s.Discoveries)
	case s.Discoveries == 0:
		s.Discoveries = worker.DefaultDiscoveries(s.Concurrency)
	}
	switch {
	case s.Reconcile < 0:
		return inputErr("--reconcile-interval (IMRECALL_RECONCILE_INTERVAL) %s: must not be negative", s.Reconcile)
	case s.PlannerLease <= 0:
		return inputErr("--planner-lease (IMRECALL_PLANNER_LEASE) %s: must be positive", s.PlannerLease)
	case s.MaxAttempts <= 0:
		return inputErr("--max-attempts (IMRECALL_MAX_ATTEMPTS) %d: must be positive", s.MaxAttempts)
	case s.ScanBudget <= 0 || s.ScanBudget >= tasks.DiscoverTimeout:
		return inputErr("--discovery-budget (IMRECALL_DISCOVERY_BUDGET) %v: want more than 0 and less than a discovery task's deadline (%v)", s.ScanBudget, tasks.DiscoverTimeout)
	case s.ScanPages < 0:
		return inputErr("--discovery-budget-pages (IMRECALL_DISCOVERY_BUDGET_PAGES) %d: must not be negative", s.ScanPages)
	case s.Dequeuers < 0:
		return inputErr("--dequeuers (IMRECALL_DEQUEUERS) %d: must not be negative", s.Dequeuers)
	}
	return nil
}

// RedisPool is the least pool size of imrecall's own Redis client: every
// task slot may wait on it at once, and with Redis milliseconds away
// go-redis's default pool (10 per CPU) would make them queue for
// connections, then time out.
func (s *Settings) RedisPool() int { return 2*s.Concurrency + s.Discoveries + 16 }

// Config is what Run assembles a worker from.
type Config struct {
	Settings
	Redis  redis.UniversalClient
	Asynq  asynq.RedisConnOpt
	Store  *jobs.Store
	Prefix string
	// IM is the IM client's configuration (for its app, base URL and
	// timeout); Client builds the gated client, observe seeing each wait.
	IM     tim.Config
	Client func(observe func(limiter.Key, time.Duration)) (*tim.Client, *limiter.Limiter, error)
	// WrapQueue, if set, wraps the queue discovery enqueues on (tests).
	WrapQueue func(producer.Enqueuer) producer.Enqueuer
	// IndexSettle is imrecall.Config.IndexSettle of the purges by index
	// that schedules fire here.
	IndexSettle time.Duration
	// LogLevel is asynq's own log level; RedisName is the Redis URL,
	// redacted, for the start line.
	LogLevel  asynq.LogLevel
	RedisName string
	Logger    *slog.Logger
}

// Run assembles the worker of cfg (Settings validated) and serves until
// ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := worker.NewMetrics(reg)
	client, lim, err := cfg.Client(func(k limiter.Key, d time.Duration) { metrics.ObserveLimiterWait(k.API, d) })
	if err != nil {
		return err
	}
	app := cfg.IM.SDKAppID
	worker.RegisterLimiter(reg, lim, app)
	h := worker.New(worker.TIM{C: client}, cfg.Store, worker.Config{
		AppID: app, MaxAttempts: cfg.MaxAttempts, Limiter: lim.ForApp(app), Logger: log, Metrics: metrics,
	})
	enq := asynq.NewClient(cfg.Asynq)
	defer enq.Close()
	var q producer.Enqueuer = enq
	if cfg.WrapQueue != nil {
		q = cfg.WrapQueue(enq)
	}
	discover := producer.NewDiscoverHandler(client, cfg.Store, q, log).WithBudget(cfg.ScanPages, cfg.ScanBudget)
	creator, err := imrecall.New(imrecall.Config{Redis: cfg.Redis, Prefix: cfg.Prefix, Queue: enq, IM: client, AppID: app,
		Index: msgindex.New(cfg.Redis, cfg.Prefix, 0), Logger: log, Backlog: producer.DefaultBacklog, IndexSettle: cfg.IndexSettle,
		PlannerLease: cfg.PlannerLease})
	if err != nil {
		return err
	}
	if cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return inputErr("--metrics-listen %q: %v", cfg.MetricsListen, err)
		}
		defer worker.ServeMetrics(ln, reg, log).Close()
	}
	rtt := worker.RedisRTT(ctx, cfg.Redis)
	if cfg.Dequeuers == 0 {
		cfg.Dequeuers = worker.DefaultDequeuers(rtt, cfg.Concurrency)
	}
	log.Info("worker starting", "sdkappid", app, "api_base", cfg.IM.BaseURL, "concurrency", cfg.Concurrency,
		"dequeuers", cfg.Dequeuers, "redis_rtt", rtt, "discovery_concurrency", cfg.Discoveries, "redis", cfg.RedisName)
	if min := worker.MinConcurrency(rtt, tim.DefaultRateLimit); cfg.Concurrency < min {
		log.Warn("--concurrency is low for this Redis round trip: the lanes may not reach the cap (docs/REDIS.md)", "concurrency", cfg.Concurrency, "redis_rtt", rtt, "suggested", min)
	}
	var background func(context.Context)
	if cfg.Reconcile > 0 {
		insp := asynq.NewInspector(cfg.Asynq)
		defer insp.Close()
		rc, err := reconcile.New(reconcile.Config{Store: cfg.Store, Redis: cfg.Redis, Queue: enq, Inspector: insp,
			Interval: cfg.Reconcile, Logger: log.With("component", "reconciler")})
		if err != nil {
			return err
		}
		background = rc.Run
	}
	srv, err := worker.NewServer(worker.ServerConfig{
		Redis: cfg.Asynq, Handler: h,
		Discovery: asynq.HandlerFunc(discover.Handle), DiscoveryErrors: asynq.ErrorHandlerFunc(discover.HandleError),
		Handlers: map[string]asynq.Handler{tasks.TypeScheduleRun: asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			return creator.FireSchedule(ctx, t, log)
		})},
		Concurrency: cfg.Concurrency, Dequeuers: cfg.Dequeuers, DiscoveryConcurrency: cfg.Discoveries,
		CallTimeout: cfg.IM.Timeout, Logger: log, LogLevel: cfg.LogLevel,
		// Queue again the parked tasks of jobs resumed or cancelled (by
		// this CLI, the API or anyone), until shutdown.
		Unparker: &worker.Unparker{Store: cfg.Store, Queue: enq, Logger: log},
	})
	if err != nil {
		return err
	}
	return worker.Serve(ctx, srv, background, log)
}
