package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/spf13/cobra"
)

func newScheduleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Recurring jobs: add, list and remove schedules (run by `imrecall scheduler`)",
		Long: `A schedule runs an imrecall recall or purge command on a cron spec, e.g. a nightly retention
purge. Relative times (--since 90d, --until 90d) are evaluated at each firing. The command runs
in a worker with the worker's settings (Redis, API, credentials) and --yes; the job it creates
records "schedule:NAME" as who asked. "imrecall scheduler" fires the schedules.`,
	}
	cmd.AddCommand(newScheduleAddCmd(), newScheduleListCmd(), newScheduleRemoveCmd())
	return cmd
}

func newScheduleAddCmd() *cobra.Command {
	var rf redisFlags
	var audit auditFlags
	var name, spec string
	cmd := &cobra.Command{
		Use:   "add --name N --cron SPEC -- COMMAND...",
		Short: "Add (or replace) a schedule",
		Example: `  imrecall schedule add --name retention --cron "0 3 * * *" --reason "90-day retention" -- \
      purge group --group @TGS#1 --group @TGS#2 --until 90d --queue backfill
  imrecall schedule add --name hourly-list --cron "@every 1h" -- recall file /data/callbacks.jsonl`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			if err := checkScheduledCommand(args); err != nil {
				return err
			}
			c, err := rf.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			sc := producer.Schedule{Name: name, Cron: spec, Args: args, CreatedBy: audit.actor, Reason: audit.reason, CreatedAt: time.Now().UTC()}
			if err := sc.Validate(); err != nil {
				return usageError{err}
			}
			if err := producer.NewSchedules(c.rdb, rf.prefix).Add(cmd.Context(), sc); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "schedule %s: %s: imrecall %s\n", name, spec, strings.Join(args, " "))
			return nil
		},
	}
	rf.register(cmd)
	audit.register(cmd)
	cmd.Flags().StringVar(&name, "name", "", "the schedule's name")
	cmd.Flags().StringVar(&spec, "cron", "", `cron spec: five fields ("0 3 * * *") or a descriptor (@daily, @every 1h)`)
	return cmd
}

// checkScheduledCommand accepts only recall and purge commands whose flags
// parse, so that a schedule never fires into a usage error.
func checkScheduledCommand(args []string) error {
	if args[0] != "recall" && args[0] != "purge" {
		return badInput("a schedule runs a recall or purge command, not %q", args[0])
	}
	sub, rest, err := newRootCmd().Find(args)
	if err != nil || !sub.Runnable() {
		return badInput("imrecall %s: not a command", strings.Join(args, " "))
	}
	if err := sub.ParseFlags(rest); err != nil {
		return badInput("imrecall %s: %v", strings.Join(args, " "), err)
	}
	if v, _ := sub.Flags().GetBool("dry-run"); v {
		return badInput("a scheduled command with --dry-run would do nothing")
	}
	return nil
}

func newScheduleListCmd() *cobra.Command {
	var rf redisFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List schedules",
		Example: "  imrecall schedule list --json",
		Args:    cobra.NoArgs,
		RunE: redisRun(&rf, func(cmd *cobra.Command, _ []string, c *conn) error {
			list, err := producer.NewSchedules(c.rdb, rf.prefix).List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCRON\tCOMMAND\tCREATED BY\tREASON")
			for _, s := range list {
				fmt.Fprintf(tw, "%s\t%s\timrecall %s\t%s\t%s\n", s.Name, s.Cron, strings.Join(s.Args, " "), s.CreatedBy, s.Reason)
			}
			return tw.Flush()
		}),
	}
	rf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newScheduleRemoveCmd() *cobra.Command {
	var rf redisFlags
	cmd := &cobra.Command{
		Use:     "remove NAME",
		Short:   "Remove a schedule",
		Example: "  imrecall schedule remove retention",
		Args:    cobra.ExactArgs(1),
		RunE: redisRun(&rf, func(cmd *cobra.Command, args []string, c *conn) error {
			if err := producer.NewSchedules(c.rdb, rf.prefix).Remove(cmd.Context(), args[0]); err != nil {
				return usageError{err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "schedule %s removed\n", args[0])
			return nil
		}),
	}
	rf.register(cmd)
	return cmd
}

func newSchedulerCmd() *cobra.Command {
	var rf redisFlags
	var logs logFlags
	var sync time.Duration
	cmd := &cobra.Command{
		Use:   "scheduler",
		Short: "Fire the schedules: enqueue each schedule's command when its cron spec says (workers run it)",
		Long: `Run one scheduler (more are harmless: each firing is enqueued once). It reads the schedules
from Redis every --sync, so added and removed schedules take effect without a restart.`,
		Example: "  imrecall scheduler --sync 30s",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			c, err := rf.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			mgr, err := startScheduler(c, rf.prefix, sync, log, logs.asynqLevel())
			if err != nil {
				return err
			}
			log.Info("scheduler running", "sync", sync)
			<-cmd.Context().Done()
			mgr.Shutdown()
			return nil
		},
	}
	rf.register(cmd)
	logs.register(cmd)
	cmd.Flags().DurationVar(&sync, "sync", 30*time.Second, "how often to re-read the schedules")
	return cmd
}

func startScheduler(c *conn, prefix string, sync time.Duration, log *slog.Logger, level asynq.LogLevel) (*asynq.PeriodicTaskManager, error) {
	mgr, err := asynq.NewPeriodicTaskManager(asynq.PeriodicTaskManagerOpts{
		PeriodicTaskConfigProvider: producer.NewSchedules(c.rdb, prefix),
		RedisConnOpt:               c.asynq,
		SyncInterval:               sync,
		SchedulerOpts:              &asynq.SchedulerOpts{Logger: asynqLogger{log}, LogLevel: level},
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if err := mgr.Start(); err != nil {
		return nil, fmt.Errorf("starting the scheduler: %w", err)
	}
	return mgr, nil
}

// scheduleRunner runs a schedule's command in the worker's process, with the
// worker's settings for the flags the command has.
type scheduleRunner struct {
	settings map[string]string // flag → value
	log      *slog.Logger
}

func (r scheduleRunner) handle(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeScheduleRun(t)
	if err != nil {
		return err
	}
	root := newRootCmd()
	sub, _, err := root.Find(p.Args)
	if err != nil {
		return fmt.Errorf("schedule %s: %v: %w", p.Name, err, asynq.SkipRetry)
	}
	args := append([]string(nil), p.Args...)
	extra := map[string]string{"yes": "true", "actor": "schedule:" + p.Name, "json": "true"}
	for k, v := range r.settings {
		extra[k] = v
	}
	for k, v := range extra {
		if f := sub.Flags().Lookup(k); f != nil && !flagGiven(p.Args, k) {
			args = append(args, "--"+k+"="+v)
		}
	}
	var out, errb strings.Builder
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		if exitCode(err) == exitBadInput {
			r.log.Error("schedule's command refused", "schedule", p.Name, "err", err)
			return fmt.Errorf("schedule %s: %v: %w", p.Name, err, asynq.SkipRetry)
		}
		return fmt.Errorf("schedule %s: %w", p.Name, err)
	}
	r.log.Info("schedule fired", "schedule", p.Name, "result", strings.TrimSpace(out.String()))
	return nil
}

func flagGiven(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || strings.HasPrefix(a, "--"+name+"=") {
			return true
		}
	}
	return false
}
