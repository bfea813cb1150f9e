package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/jobs"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newJobsCmd() *cobra.Command {
	return cli.Group("jobs", "List, inspect, wait for, pause, resume and cancel jobs", "",
		newJobsListCmd(), newJobsShowCmd(), newJobsWaitCmd(), newJobsReportCmd(),
		newJobsCancelCmd(), newJobsApproveCmd(), newJobsPauseCmd(true), newJobsPauseCmd(false), newJobsAuditCmd())
}

// jobCmd builds a subcommand that takes one job id, a Redis connection and
// a Client on it (its queue for re-queues and parked tasks; tune, if set,
// adjusts its Config from the command's flags).
func jobCmd(use, short, example string, run func(cmd *cobra.Command, c *conn, client *imrecall.Client, id string) error, extra func(*cobra.Command), tune ...func(*imrecall.Config)) *cobra.Command {
	var rf redisFlags
	cmd := &cobra.Command{
		Use: use, Short: short, Example: example,
		Args: cobra.ExactArgs(1),
		RunE: cli.WithEnv(func(cmd *cobra.Command, args []string) error {
			if err := jobs.ValidID(args[0]); err != nil {
				return cli.Usage(err)
			}
			c, err := rf.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			q := asynq.NewClient(c.asynq)
			defer q.Close()
			cfg := imrecall.Config{Redis: c.rdb, Prefix: rf.prefix, Queue: q}
			for _, t := range tune {
				t(&cfg)
			}
			client, err := imrecall.New(cfg)
			if err != nil {
				return err
			}
			return cliError(run(cmd, c, client, args[0]))
		}),
	}
	rf.register(cmd)
	if extra != nil {
		extra(cmd)
	}
	return cmd
}

func newJobsListCmd() *cobra.Command {
	var limit int
	return listCmd("list", "List recent jobs, newest first", "  imrecall jobs list --limit 20",
		func(ctx context.Context, c *conn) ([]jobs.Job, error) { return c.store.List(ctx, limit) }, // a read: no Client needed
		cliout.JobTable, func(fl *pflag.FlagSet) { fl.IntVar(&limit, "limit", 50, "how many jobs") })
}

func newJobsShowCmd() *cobra.Command {
	var asJSON bool
	return jobCmd("show ID", "Show a job: status, counts, who asked and why", "  imrecall jobs show 20261122T230512Z-9f3a1c2b --json",
		func(cmd *cobra.Command, _ *conn, client *imrecall.Client, id string) error {
			j, err := client.Job(cmd.Context(), id)
			if err != nil {
				return err
			}
			if asJSON {
				return cliout.JSON(cmd.OutOrStdout(), j)
			}
			cliout.Job(cmd.OutOrStdout(), j)
			return nil
		}, func(cmd *cobra.Command) { cmd.Flags().BoolVar(&asJSON, "json", false, "print the job record as JSON") })
}

func newJobsWaitCmd() *cobra.Command {
	var every time.Duration
	return jobCmd("wait ID", "Wait until a job ends, showing progress; exit with the job's code",
		"  imrecall jobs wait 20261122T230512Z-9f3a1c2b && echo all recalled",
		func(cmd *cobra.Command, _ *conn, client *imrecall.Client, id string) error {
			j, err := waitJob(cmd.Context(), cmd, client, id)
			if err != nil {
				return err
			}
			cliout.Counts(cmd.ErrOrStderr(), j)
			return jobExit(j)
		}, func(cmd *cobra.Command) {
			cmd.Flags().DurationVar(&every, "poll", 500*time.Millisecond, "how often to read the job")
		}, func(cfg *imrecall.Config) { cfg.Poll = every })
}

func newJobsReportCmd() *cobra.Command {
	var asJSON bool
	return jobCmd("report ID", "The job's final report: counts, dead letters by meaning, and a recount proving them",
		"  imrecall jobs report 20261122T230512Z-9f3a1c2b --json > report.json",
		func(cmd *cobra.Command, _ *conn, client *imrecall.Client, id string) error {
			r, err := client.Report(cmd.Context(), id)
			if err != nil {
				return err
			}
			if asJSON {
				return cliout.JSON(cmd.OutOrStdout(), r)
			}
			return r.WriteText(cmd.OutOrStdout(), cliout.DescribeCode)
		}, func(cmd *cobra.Command) { cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON") })
}

func newJobsCancelCmd() *cobra.Command {
	var audit auditFlags
	return jobCmd("cancel ID", "Cancel a job: its pending messages are dropped without calling the API",
		`  imrecall jobs cancel 20261122T230512Z-9f3a1c2b --reason "wrong group list"`,
		func(cmd *cobra.Command, _ *conn, client *imrecall.Client, id string) error {
			st, un, err := client.Cancel(cmd.Context(), id, audit.actor, audit.reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job %s: %s\n", id, st)
			return cliout.Unparked(cmd.OutOrStdout(), id, un)
		}, audit.register)
}

func newJobsApproveCmd() *cobra.Command {
	var audit auditFlags
	var approval approvalFlags
	return jobCmd("approve ID", "Approve a job held for approval (--approval-above): the approver (--actor) must not be its requester",
		`  imrecall jobs approve 20261122T230512Z-9f3a1c2b --actor dpo@example.com --reason "checked the scope"`,
		func(cmd *cobra.Command, _ *conn, client *imrecall.Client, id string) error {
			if err := approval.validate(); err != nil {
				return err
			}
			j, err := client.Approve(cmd.Context(), id, audit.actor, audit.reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job %s: %s (approved by %s)\n", id, j.Status, j.ApprovedBy)
			return nil
		}, func(cmd *cobra.Command) {
			audit.register(cmd)
			approval.register(cmd)
		}, func(cfg *imrecall.Config) { cfg.ApprovalDelay = approval.delay })
}

func newJobsPauseCmd(pause bool) *cobra.Command {
	var audit auditFlags
	use, short := "resume ID", "Resume a paused job: its parked tasks are queued again"
	if pause {
		use, short = "pause ID", "Pause a job: workers park its tasks (set them aside, taking no slot) until it is resumed"
	}
	return jobCmd(use, short, "  imrecall jobs "+use[:len(use)-3]+" 20261122T230512Z-9f3a1c2b --actor oncall@example.com", func(cmd *cobra.Command, _ *conn, client *imrecall.Client, id string) error {
		if pause {
			if err := client.Pause(cmd.Context(), id, audit.actor, audit.reason); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job %s: paused=%v\n", id, pause)
			return nil
		}
		un, err := client.Resume(cmd.Context(), id, audit.actor, audit.reason)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "job %s: paused=%v\n", id, pause)
		return cliout.Unparked(cmd.OutOrStdout(), id, un)
	}, audit.register)
}

func newJobsAuditCmd() *cobra.Command {
	var n int64
	return listCmd("audit", "Show the audit log: who created, cancelled, paused or re-queued which job",
		"  imrecall jobs audit --last 20\n  imrecall jobs audit --json | jq 'map(select(.action == \"cancel\"))'",
		func(ctx context.Context, c *conn) ([]jobs.Event, error) { return c.store.AuditLog(ctx, n) },
		func(w io.Writer, evs []jobs.Event) error { cliout.Audit(w, evs); return nil },
		func(fl *pflag.FlagSet) { fl.Int64Var(&n, "last", 100, "how many events") })
}

// listCmd builds a command that reads a list from Redis and prints it as
// text, or as JSON with --json; flags registers the command's own.
func listCmd[T any](use, short, example string, read func(context.Context, *conn) (T, error), text func(io.Writer, T) error, flags func(*pflag.FlagSet)) *cobra.Command {
	var rf redisFlags
	var asJSON bool
	cmd := &cobra.Command{Use: use, Short: short, Example: example, Args: cobra.NoArgs,
		RunE: redisRun(&rf, func(cmd *cobra.Command, _ []string, c *conn) error {
			v, err := read(cmd.Context(), c)
			if err != nil {
				return err
			}
			if asJSON {
				return cliout.JSON(cmd.OutOrStdout(), v)
			}
			return text(cmd.OutOrStdout(), v)
		})}
	rf.register(cmd)
	flags(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
