package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/internal/imclient"
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
	"github.com/spf13/cobra"
)

// limitFlags configure the shared rate limiter.
type limitFlags struct {
	cap      capValue
	capOf    string
	margin   float64
	resetCap bool
}

// capValue is a cap flag: calls/s above 0, or the word "unlimited".
type capValue int

func (c *capValue) String() string { return limiter.FormatCap(int(*c)) }
func (c *capValue) Type() string   { return "cap" }
func (c *capValue) Set(s string) error {
	n, err := limiter.ParseCap(s)
	if err != nil {
		return err
	}
	*c = capValue(n)
	return nil
}

func (f *limitFlags) register(cmd *cobra.Command) {
	f.cap = tim.DefaultRateLimit
	cmd.Flags().Var(&f.cap, "cap", "calls/s per API per app, for all processes together, or unlimited (0 is refused)")
	cmd.Flags().StringVar(&f.capOf, "cap-of", "", "per-API caps by the path's last segment, e.g. group_msg_recall=200,admin_msgwithdraw=100 (N above 0, or unlimited)")
	cmd.Flags().Float64Var(&f.margin, "margin", -1, "safety margin under the cap, 0 to 0.5 (default: the limiter's)")
}

// registerReset adds --reset-cap (the worker's: the one process an operator
// starts to change a stored cap).
func (f *limitFlags) registerReset(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.resetCap, "reset-cap", false, "store this process's caps in Redis as every API's shared cap, replacing the stored ones (processes with the old caps then grant nothing until restarted)")
}

// imClient builds the IM client of cfg, gated by the shared limiter
// (observe, if set, sees each wait); with check (serve, worker) this
// process first agrees with the caps stored in Redis.
func (f *limitFlags) imClient(ctx context.Context, c *conn, prefix string, cfg tim.Config, log *slog.Logger, observe func(limiter.Key, time.Duration), check bool) (*tim.Client, *limiter.Limiter, error) {
	cl, lim, err := imclient.New(ctx, imclient.Config{Redis: c.rdb, Prefix: prefix, Cap: int(f.cap), CapOf: f.capOf, Margin: f.margin,
		Agree: check, Reset: f.resetCap, IM: cfg, Logger: log, Observer: observe})
	var ie *imclient.InputError
	if errors.As(err, &ie) {
		return nil, nil, usageError{err}
	}
	return cl, lim, err
}

// workerOptions are everything `imrecall worker` is configured with.
type workerOptions struct {
	redis         redisFlags
	im            imFlags
	limits        limitFlags
	logs          logFlags
	concurrency   int
	dequeuers     int
	discoveries   int
	maxAttempts   int
	metricsListen string
	scanBudget    time.Duration
	scanPages     int
	reconcile     time.Duration
	plannerLease  time.Duration
	jobRetention  string
}

func newWorkerCmd() *cobra.Command {
	var o workerOptions
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run recall tasks: call the IM API at the shared cap and account for every message",
		Long: `A worker takes recall tasks from the Redis queues (incident first, then purge, then
backfill), waits on the rate limit shared by every worker process (200 calls/s per API per
app by default), calls the Tencent IM API, and records each message's outcome in its job.
It also runs the commands of schedules fired by "imrecall scheduler", and purge discovery
tasks (history scans, under their own per-API budgets).
Each kind of task has a lane: queues of its own (group recall: incident, purge, backfill;
one-to-one: c2c-incident, c2c-purge, c2c-backfill; discovery: discover-incident,
discover-purge, discover-backfill) and slots of its own in every worker (--concurrency
each for the two recall lanes, --discovery-concurrency for discovery). A task holds its
slot while it waits for its API's share of the cap, so one API's backlog never holds the
slots another API's tasks need.
Run as many worker processes as you like, on as many hosts: together they stay under the cap.
On SIGTERM the worker stops taking tasks, lets calls in flight finish and records them.`,
		Example: `  IMRECALL_SECRET_KEY=... imrecall worker --redis redis://redis:6379/0 --sdkappid 1400000001 --api-base singapore
  imrecall worker --api-base http://127.0.0.1:8080 --sdkappid 1400000001 --concurrency 32 --metrics-listen :9090`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			return runWorker(cmd.Context(), cmd, &o)
		},
	}
	o.redis.register(cmd)
	o.im.register(cmd)
	o.limits.register(cmd)
	o.limits.registerReset(cmd)
	o.logs.register(cmd)
	cmd.Flags().IntVar(&o.concurrency, "concurrency", 64, "recall tasks run at once by this process, in each lane: group recall and one-to-one withdraw")
	cmd.Flags().IntVar(&o.dequeuers, "dequeuers", 0, "asynq servers per recall lane, each taking tasks from Redis in its own loop, sharing --concurrency (default: from the measured Redis round trip; docs/REDIS.md)")
	cmd.Flags().IntVar(&o.discoveries, "discovery-concurrency", 0, "purge discovery tasks (history scans) run at once by this process, on slots of their own beside --concurrency's (default: a quarter of --concurrency)")
	cmd.Flags().IntVar(&o.maxAttempts, "max-attempts", 5, "calls per message for transient failures before it is dead-lettered")
	cmd.Flags().StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus /metrics on this address (e.g. :9090)")
	cmd.Flags().DurationVar(&o.scanBudget, "discovery-budget", producer.DefaultScanBudget, "how long one discovery task reads a history before it continues in a new task from its checkpoint")
	cmd.Flags().IntVar(&o.scanPages, "discovery-budget-pages", 0, "at most this many history pages per discovery task (0 = bounded by --discovery-budget only)")
	cmd.Flags().DurationVar(&o.reconcile, "reconcile-interval", reconcile.DefaultInterval, "how often the reconciler runs (one process at a time): it settles jobs whose planner is gone and queues again messages nothing is in flight for; 0 turns it off in this process")
	plannerLeaseFlag(cmd, &o.plannerLease)
	jobRetentionFlag(cmd, &o.jobRetention)
	return cmd
}

func runWorker(ctx context.Context, cmd *cobra.Command, o *workerOptions) error {
	log, err := o.logs.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if o.concurrency <= 0 {
		return badInput("--concurrency (IMRECALL_CONCURRENCY) %d: must be positive", o.concurrency)
	}
	switch {
	case o.discoveries < 0:
		return badInput("--discovery-concurrency (IMRECALL_DISCOVERY_CONCURRENCY) %d: must not be negative", o.discoveries)
	case o.discoveries == 0:
		o.discoveries = worker.DefaultDiscoveries(o.concurrency)
	}
	if o.reconcile < 0 {
		return badInput("--reconcile-interval (IMRECALL_RECONCILE_INTERVAL) %s: must not be negative", o.reconcile)
	}
	if o.plannerLease <= 0 {
		return badInput("--planner-lease (IMRECALL_PLANNER_LEASE) %s: must be positive", o.plannerLease)
	}
	if o.maxAttempts <= 0 {
		return badInput("--max-attempts (IMRECALL_MAX_ATTEMPTS) %d: must be positive", o.maxAttempts)
	}
	if o.scanBudget <= 0 || o.scanBudget >= tasks.DiscoverTimeout {
		return badInput("--discovery-budget (IMRECALL_DISCOVERY_BUDGET) %v: want more than 0 and less than a discovery task's deadline (%v)", o.scanBudget, tasks.DiscoverTimeout)
	}
	if o.scanPages < 0 {
		return badInput("--discovery-budget-pages (IMRECALL_DISCOVERY_BUDGET_PAGES) %d: must not be negative", o.scanPages)
	}
	imCfg, err := o.im.config(log)
	if err != nil {
		return err
	}
	// Every task slot may wait on imrecall's own client at once: with Redis
	// milliseconds away, go-redis's default pool (10 per CPU) would make
	// them queue for connections, then time out.
	o.redis.minPool = 2*o.concurrency + o.discoveries + 16
	c, err := o.redis.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	c.store.SetLeaseTTL(o.plannerLease)
	if err := startJobRetention(ctx, c, o.jobRetention, log); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := worker.NewMetrics(reg)
	client, lim, err := o.limits.imClient(ctx, c, o.redis.prefix, imCfg, log, func(k limiter.Key, d time.Duration) { metrics.ObserveLimiterWait(k.API, d) }, true)
	if err != nil {
		return err
	}
	h := worker.New(worker.TIM{C: client}, c.store, worker.Config{
		AppID: imCfg.SDKAppID, MaxAttempts: o.maxAttempts, Limiter: lim.ForApp(imCfg.SDKAppID), Logger: log, Metrics: metrics,
	})
	enq := asynq.NewClient(c.asynq)
	defer enq.Close()
	discover := producer.NewDiscoverHandler(client, c.store, testHookEnqueuer(cmd, enq), log).WithBudget(o.scanPages, o.scanBudget)
	creator, err := imrecall.New(imrecall.Config{Redis: c.rdb, Prefix: o.redis.prefix, Queue: enq, IM: client, AppID: imCfg.SDKAppID,
		Index: msgindex.New(c.rdb, o.redis.prefix, 0), Logger: log})
	if err != nil {
		return err
	}
	if o.metricsListen != "" {
		ln, err := net.Listen("tcp", o.metricsListen)
		if err != nil {
			return badInput("--metrics-listen %q: %v", o.metricsListen, err)
		}
		defer worker.ServeMetrics(ln, reg, log).Close()
	}
	rtt := worker.RedisRTT(ctx, c.rdb)
	switch {
	case o.dequeuers < 0:
		return badInput("--dequeuers (IMRECALL_DEQUEUERS) %d: must not be negative", o.dequeuers)
	case o.dequeuers == 0:
		o.dequeuers = worker.DefaultDequeuers(rtt, o.concurrency)
	}
	log.Info("worker starting", "sdkappid", imCfg.SDKAppID, "api_base", imCfg.BaseURL, "concurrency", o.concurrency,
		"dequeuers", o.dequeuers, "redis_rtt", rtt, "discovery_concurrency", o.discoveries, "redis", redactURL(o.redis.url))
	if min := worker.MinConcurrency(rtt, tim.DefaultRateLimit); o.concurrency < min {
		log.Warn("--concurrency is low for this Redis round trip: the lanes may not reach the cap (docs/REDIS.md)", "concurrency", o.concurrency, "redis_rtt", rtt, "suggested", min)
	}
	var background func(context.Context)
	if o.reconcile > 0 {
		insp := asynq.NewInspector(c.asynq)
		defer insp.Close()
		rc, err := reconcile.New(reconcile.Config{Store: c.store, Redis: c.rdb, Queue: enq, Inspector: insp,
			Interval: o.reconcile, Logger: log.With("component", "reconciler")})
		if err != nil {
			return err
		}
		background = rc.Run
	}
	srv, err := worker.NewServer(worker.ServerConfig{
		Redis: c.asynq, Handler: h,
		Discovery: asynq.HandlerFunc(discover.Handle), DiscoveryErrors: asynq.ErrorHandlerFunc(discover.HandleError),
		Handlers:    map[string]asynq.Handler{tasks.TypeScheduleRun: asynq.HandlerFunc(scheduleRunner{client: creator, log: log}.handle)},
		Concurrency: o.concurrency, Dequeuers: o.dequeuers, DiscoveryConcurrency: o.discoveries,
		CallTimeout: o.im.timeout, Logger: log, LogLevel: cliout.AsynqLevel(o.logs.level),
		// Queue again the parked tasks of jobs resumed or cancelled (by
		// this CLI, the API or anyone), until shutdown.
		Unparker: &worker.Unparker{Store: c.store, Queue: enq, Logger: log},
	})
	if err != nil {
		return err
	}
	return worker.Serve(ctx, srv, background, log)
}

// plannerLeaseFlag registers --planner-lease: how long a planner's lease
// lasts without a heartbeat (renewed every third of it).
func plannerLeaseFlag(cmd *cobra.Command, d *time.Duration) {
	cmd.Flags().DurationVar(d, "planner-lease", jobs.DefaultLeaseTTL, "a planner's lease, renewed every third of it: a planner silent this long is taken for gone, and a worker's reconciler settles its job and queues what it planned")
}
