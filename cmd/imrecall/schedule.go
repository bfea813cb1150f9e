package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newScheduleCmd() *cobra.Command {
	return cli.Group("schedule", "Recurring jobs: add, list and remove schedules (run by `imrecall scheduler`)", `A schedule creates a job on a cron spec, e.g. a nightly retention purge. It holds a typed job
request (what the job is: kind, user, groups, ranges, queue, reason), the same the HTTP API takes,
never how a worker connects: the worker that runs a firing uses its own Redis, API base, admin
identity and credentials. "schedule add" takes the request in the shape of a recall or purge
command after "--"; connection flags (--api-base, --admin, --sdkappid, --secret-key, --peers-file,
--redis, …) are refused. Relative times (--since 90d, --until 90d) are evaluated at each firing; the
job records "schedule:NAME" as who asked. "imrecall scheduler" fires the schedules, each due time
once however many schedulers run.`,
		newScheduleAddCmd(), newScheduleListCmd(), newScheduleRemoveCmd())
}

func newScheduleAddCmd() *cobra.Command {
	var rf redisFlags
	var audit auditFlags
	var name, spec string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "add --name N --cron SPEC [--dry-run] -- recall|purge SUBCOMMAND FLAGS...",
		Short: "Add (or replace) a schedule",
		Example: `  imrecall schedule add --name retention --cron "0 3 * * *" --reason "90-day retention" -- \
      purge group --group @TGS#1 --group @TGS#2 --until 90d --queue backfill
  imrecall schedule add --name hourly-list --cron "@every 1h" --reason "INC-4211" -- recall file callbacks.jsonl   # read now, held in the schedule`,
		Args: cobra.MinimumNArgs(1),
		RunE: cli.WithEnv(func(cmd *cobra.Command, args []string) error {
			req, err := scheduleRequest(cmd.Context(), args, true)
			if err != nil {
				return err
			}
			sc := producer.Schedule{Name: name, Cron: spec, Request: &req, CreatedBy: audit.actor, Reason: audit.reason, CreatedAt: time.Now().UTC()}
			if err := sc.Validate(); err != nil {
				if fe := (*producer.FieldError)(nil); errors.As(err, &fe) && fe.Field == "request.reason" {
					if strings.TrimSpace(req.Reason) == "" && strings.TrimSpace(audit.reason) == "" {
						return cli.BadInput("--reason: required (why the schedule's jobs recall messages, for the audit record)")
					}
					// Given, but refused (too long, not UTF-8): say why.
					return cli.BadInput("--reason: %s", fe.Reason)
				}
				return cli.Usage(err)
			}
			view := sc.View(time.Now())
			if dryRun {
				view.DryRun = true
				return cliout.ScheduleAdded(cmd.OutOrStdout(), view)
			}
			c, err := rf.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			if err := producer.NewSchedules(c.rdb, rf.prefix).Add(cmd.Context(), sc); err != nil {
				return err
			}
			return cliout.ScheduleAdded(cmd.OutOrStdout(), view)
		}),
	}
	rf.register(cmd)
	audit.registerAs(cmd, "why the schedule's jobs recall messages (recorded in the schedule, its jobs and the audit log); required, with --dry-run too, unless the command after -- gives its own")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check the schedule and print when it would fire; add nothing")
	cmd.Flags().StringVar(&name, "name", "", "the schedule's name")
	cmd.Flags().StringVar(&spec, "cron", "", `cron spec: five fields ("0 3 * * *") or a descriptor (@daily, @every 1h)`)
	return cmd
}

// scheduleRequest turns a recall or purge command line into the typed job
// request a schedule holds. Connection flags are refused, naming the flag.
// readFiles lets "recall file PATH" read the list now (on the machine adding
// the schedule); a migration of a stored command line never reads a file.
func scheduleRequest(ctx context.Context, args []string, readFiles bool) (producer.JobRequest, error) {
	var req producer.JobRequest
	if len(args) < 2 || args[0] != "recall" && args[0] != "purge" {
		return req, cli.BadInput("a schedule creates a recall or purge job, not %q", strings.Join(args[:min(len(args), 2)], " "))
	}
	sub, rest, err := newRootCmd().Find(args)
	if err != nil || !sub.Runnable() || sub.HasSubCommands() {
		return req, cli.BadInput("imrecall %s: not a command", strings.Join(args[:2], " "))
	}
	if err := sub.ParseFlags(rest); err != nil {
		return req, cli.BadInput("imrecall %s: %v", strings.Join(args[:2], " "), err)
	}
	req, err = producer.ScheduledRequest(ctx, strings.TrimPrefix(sub.CommandPath(), "imrecall "), sub.Flags(), readFiles)
	if err != nil {
		return req, cli.Usage(err)
	}
	return req, nil
}

func newScheduleListCmd() *cobra.Command {
	return listCmd("list", "List schedules", "  imrecall schedule list --json",
		func(ctx context.Context, c *conn) ([]producer.ScheduleView, error) {
			list, err := producer.NewSchedules(c.rdb, c.store.Prefix()).List(ctx)
			views := make([]producer.ScheduleView, len(list))
			for i := range list {
				views[i] = list[i].View(time.Now())
			}
			return views, err
		}, cliout.Schedules, func(*pflag.FlagSet) {})
}

func newScheduleRemoveCmd() *cobra.Command {
	var rf redisFlags
	var audit auditFlags
	cmd := &cobra.Command{
		Use:     "remove NAME [--reason R]",
		Short:   "Remove a schedule (recorded in the audit log with who and why)",
		Example: `  imrecall schedule remove retention --reason "retention moved to 180 days (DPO ticket 42)"`,
		Args:    cobra.ExactArgs(1),
		RunE: redisRun(&rf, func(cmd *cobra.Command, args []string, c *conn) error {
			err := producer.NewSchedules(c.rdb, rf.prefix).Remove(cmd.Context(), args[0], audit.actor, audit.reason)
			if errors.Is(err, producer.ErrNoSchedule) {
				return cli.Usage(err)
			}
			if err != nil {
				return cliError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "schedule %s removed\n", args[0])
			return nil
		}),
	}
	rf.register(cmd)
	audit.registerAs(cmd, "why it is removed (recorded in the audit log)")
	return cmd
}

func newSchedulerCmd() *cobra.Command {
	var rf redisFlags
	var logs logFlags
	var sync time.Duration
	var metricsListen string
	cmd := &cobra.Command{
		Use:   "scheduler",
		Short: "Fire the schedules: queue each schedule's job request when its cron spec says (workers plan it)",
		Long: `Run one scheduler or several: each due time of each schedule fires once, whichever scheduler
claims it. A firing is skipped (logged, and written to the audit log) while the schedule's previous
firing has not ended: its job is still planning, running, paused or held for approval. It reads the
schedules from Redis every --sync, so added and removed schedules take effect without a restart. On start it migrates schedules stored as command lines (before schedules
held typed requests) into requests, and refuses (logs, never fires) those that name connection
settings or files.`,
		Example: "  imrecall scheduler --sync 30s --metrics-listen :9091",
		Args:    cobra.NoArgs,
		RunE: redisRun(&rf, func(cmd *cobra.Command, _ []string, c *conn) error {
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var metrics *producer.SchedulerMetrics
			if metricsListen != "" {
				ln, err := net.Listen("tcp", metricsListen)
				if err != nil {
					return cli.BadInput("--metrics-listen %q: %v", metricsListen, err)
				}
				reg := prometheus.NewRegistry()
				reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
				metrics = producer.NewSchedulerMetrics(reg)
				defer worker.ServeMetrics(ln, reg, log).Close()
			}
			enq := asynq.NewClient(c.asynq)
			defer enq.Close()
			sched := newScheduler(cmd.Context(), c, rf.prefix, enq, sync, log)
			sched.Metrics = metrics
			log.Info("scheduler running", "sync", sync)
			return sched.Run(cmd.Context())
		}),
	}
	rf.register(cmd)
	logs.register(cmd)
	cmd.Flags().DurationVar(&sync, "sync", 30*time.Second, "how often to re-read the schedules")
	cmd.Flags().StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus /metrics (imrecall_schedule_firings_total by schedule and result: fired, skipped, failed, refused) on this address (e.g. :9091)")
	return cmd
}

// newScheduler migrates legacy schedules and returns the scheduler.
func newScheduler(ctx context.Context, c *conn, prefix string, q producer.Enqueuer, sync time.Duration, log *slog.Logger) *producer.Scheduler {
	scs := producer.NewSchedules(c.rdb, prefix)
	migrated, err := scs.Migrate(ctx, func(args []string) (producer.JobRequest, error) {
		return scheduleRequest(ctx, args, false)
	})
	for _, name := range migrated {
		log.Info("schedule migrated from a command line to a job request", "schedule", name)
	}
	if err != nil {
		log.Error("schedules refused", "err", err)
	}
	// A firing waits for the previous one's job (README, "Schedules").
	insp := asynq.NewInspector(c.asynq)
	c.closer = append(c.closer, insp)
	return &producer.Scheduler{Schedules: scs, Queue: q, Sync: sync, Log: log, Jobs: c.store, Tasks: insp}
}

// scheduleRunner plans a schedule's firing in the worker's process, with
// the worker's own settings: the request says what the job is, the worker
// how to connect. It creates the job through the Client, as the CLI and
// the API do.
type scheduleRunner struct {
	client *imrecall.Client
	log    *slog.Logger
}

func (r scheduleRunner) handle(ctx context.Context, t *asynq.Task) error {
	return r.client.FireSchedule(ctx, t, r.log)
}
