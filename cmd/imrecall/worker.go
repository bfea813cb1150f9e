package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/internal/imclient"
	"github.com/imrecall/imrecall/internal/workerproc"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/reconcile"
	"github.com/imrecall/imrecall/redisurl"
	"github.com/imrecall/imrecall/tim"
	"github.com/spf13/cobra"
)

// limitFlags configure the shared rate limiter.
type limitFlags struct {
	cap      capValue
	capOf    string
	margin   float64
	slack    time.Duration
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
	cmd.Flags().Float64Var(&f.margin, "margin", -1, "fix the share of the cap left unused, above 0 to 0.5 (default: none beyond what the calls' measured arrival bounds take, widened on throttles)")
	cmd.Flags().DurationVar(&f.slack, "slack", limiter.DefaultSlack, "how much later after its write a call may reach the server's count than others do, above 0 to 500ms; each ms costs about 0.1% of the cap")
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
	cl, lim, err := imclient.New(ctx, imclient.Config{Redis: c.rdb, Prefix: prefix, Cap: int(f.cap), CapOf: f.capOf, Margin: f.margin, Slack: f.slack,
		Agree: check, Reset: f.resetCap, IM: cfg, Logger: log, Observer: observe})
	var ie *imclient.InputError
	if errors.As(err, &ie) {
		return nil, nil, cli.Usage(err)
	}
	return cl, lim, err
}

// workerOptions are everything `imrecall worker` is configured with.
type workerOptions struct {
	imCallFlags
	s            workerproc.Settings
	jobRetention string
	indexSettle  time.Duration
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
		RunE: cli.WithEnv(func(cmd *cobra.Command, _ []string) error { return runWorker(cmd.Context(), cmd, &o) }),
	}
	o.imCallFlags.register(cmd)
	o.limits.registerReset(cmd)
	cmd.Flags().IntVar(&o.s.Concurrency, "concurrency", 64, "recall tasks run at once by this process, in each lane: group recall and one-to-one withdraw")
	cmd.Flags().IntVar(&o.s.Dequeuers, "dequeuers", 0, "asynq servers per recall lane, each taking tasks from Redis in its own loop, sharing --concurrency (default: from the measured Redis round trip; docs/REDIS.md)")
	cmd.Flags().IntVar(&o.s.Discoveries, "discovery-concurrency", 0, "purge discovery tasks (history scans) run at once by this process, on slots of their own beside --concurrency's (default: a quarter of --concurrency)")
	cmd.Flags().IntVar(&o.s.MaxAttempts, "max-attempts", 5, "calls per message for transient failures before it is dead-lettered")
	cmd.Flags().StringVar(&o.s.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics on this address (e.g. :9090)")
	cmd.Flags().DurationVar(&o.s.ScanBudget, "discovery-budget", producer.DefaultScanBudget, "how long one discovery task reads a history before it continues in a new task from its checkpoint")
	cmd.Flags().IntVar(&o.s.ScanPages, "discovery-budget-pages", 0, "at most this many history pages per discovery task (0 = bounded by --discovery-budget only)")
	cmd.Flags().DurationVar(&o.s.Reconcile, "reconcile-interval", reconcile.DefaultInterval, "how often the reconciler runs (one process at a time): it settles jobs whose planner is gone and queues again messages nothing is in flight for; 0 turns it off in this process")
	plannerLeaseFlag(cmd, &o.s.PlannerLease)
	jobRetentionFlag(cmd, &o.jobRetention)
	indexSettleFlag(cmd, &o.indexSettle)
	return cmd
}

func runWorker(ctx context.Context, cmd *cobra.Command, o *workerOptions) error {
	log, err := o.logs.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if err := o.s.Validate(); err != nil {
		return cli.Usage(err)
	}
	settle, err := indexSettle(o.indexSettle)
	if err != nil {
		return err
	}
	imCfg, err := o.im.config(log)
	if err != nil {
		return err
	}
	o.redis.minPool = o.s.RedisPool()
	c, err := o.redis.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	c.store.SetLeaseTTL(o.s.PlannerLease)
	if err := startJobRetention(ctx, c, o.jobRetention, log); err != nil {
		return err
	}
	err = workerproc.Run(ctx, workerproc.Config{Settings: o.s, Redis: c.rdb, Asynq: c.asynq, Store: c.store, Prefix: o.redis.prefix,
		IM: imCfg, Client: func(observe func(limiter.Key, time.Duration)) (*tim.Client, *limiter.Limiter, error) {
			return o.limits.imClient(ctx, c, o.redis.prefix, imCfg, log, observe, true)
		},
		WrapQueue:   func(q producer.Enqueuer) producer.Enqueuer { return testHookEnqueuer(cmd, q) },
		IndexSettle: settle, LogLevel: cliout.AsynqLevel(o.logs.level), RedisName: redisurl.Redact(o.redis.url), Logger: log})
	var ie *workerproc.InputError
	if errors.As(err, &ie) {
		return cli.Usage(err)
	}
	return err
}

// plannerLeaseFlag registers --planner-lease: how long a planner's lease
// lasts without a heartbeat (renewed every third of it).
func plannerLeaseFlag(cmd *cobra.Command, d *time.Duration) {
	cmd.Flags().DurationVar(d, "planner-lease", jobs.DefaultLeaseTTL, "a planner's lease, renewed every third of it: a planner silent this long is taken for gone, and a worker's reconciler settles its job and queues what it planned")
}
