package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/spf13/cobra"
)

func newDLQCmd() *cobra.Command {
	return cli.Group("dlq", "Dead letters: list, export (JSONL/CSV) and re-queue the messages a job could not recall", `Every message a job could not recall has a durable dead letter (kept with the job, not in
asynq's capped archive): the target, the code and its meaning, the attempts and the time.
Categories: already_recalled (20023), not_found (10030, 20022), cancelled, needs_attention.`,
		newDLQListCmd(), newDLQExportCmd(), newDLQRequeueCmd())
}

// dlqFilter registers the flags of f, which selects dead letters by code
// and category.
func dlqFilter(cmd *cobra.Command, f *imrecall.DeadLetterFilter) {
	cmd.Flags().StringVar(&f.Code, "code", "", "only this code (e.g. 10002, timeout)")
	cmd.Flags().StringVar(&f.Category, "category", "", "only this category: already_recalled, not_found, cancelled, needs_attention")
}

func newDLQListCmd() *cobra.Command {
	var f imrecall.DeadLetterFilter
	var limit int
	return jobCmd("list JOB", "List a job's dead letters", "  imrecall dlq list 20261122T230512Z-9f3a1c2b --category needs_attention",
		func(cmd *cobra.Command, c *conn, client *imrecall.Client, id string) error {
			match, err := f.Match()
			if err != nil {
				return err
			}
			if _, err := c.store.Get(cmd.Context(), id); err != nil {
				return err
			}
			n := 0
			w := cmd.OutOrStdout()
			err = c.store.DeadLetters(cmd.Context(), id, func(d jobs.DeadLetter) error {
				if !match(d) {
					return nil
				}
				n++
				if limit > 0 && n > limit {
					return errStop
				}
				cliout.DeadLetter(w, d)
				return nil
			})
			if err == errStop {
				fmt.Fprintf(cmd.ErrOrStderr(), "(first %d shown; use dlq export for all)\n", limit)
				return nil
			}
			return err
		}, func(cmd *cobra.Command) {
			dlqFilter(cmd, &f)
			cmd.Flags().IntVar(&limit, "limit", 100, "show at most this many (0 = all)")
		})
}

var errStop = fmt.Errorf("stop")

func newDLQExportCmd() *cobra.Command {
	var f imrecall.DeadLetterFilter
	var format, out string
	return jobCmd("export JOB", "Export a job's dead letters as JSON Lines or CSV",
		"  imrecall dlq export 20261122T230512Z-9f3a1c2b --format csv --out dead.csv",
		func(cmd *cobra.Command, c *conn, client *imrecall.Client, id string) error {
			match, err := f.Match()
			if err != nil {
				return err
			}
			if format != "jsonl" && format != "csv" {
				return cli.BadInput("--format %q: want jsonl or csv", format)
			}
			if _, err := c.store.Get(cmd.Context(), id); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if out != "" && out != "-" {
				fh, err := os.Create(out)
				if err != nil {
					return cli.BadInput("--out: %v", err)
				}
				defer fh.Close()
				w = fh
			}
			n, err := c.store.ExportDeadLetters(cmd.Context(), id, match, format, w)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d dead letters exported\n", n)
			return nil
		}, func(cmd *cobra.Command) {
			dlqFilter(cmd, &f)
			cmd.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
			cmd.Flags().StringVar(&out, "out", "", "file to write (default standard output)")
		})
}

func newDLQRequeueCmd() *cobra.Command {
	var f imrecall.DeadLetterFilter
	var audit auditFlags
	var yes, dryRun bool
	return jobCmd("requeue JOB", "Re-queue a job's dead letters (by default those that need attention)",
		"  imrecall dlq requeue 20261122T230512Z-9f3a1c2b --code 10002 --dry-run",
		func(cmd *cobra.Command, c *conn, client *imrecall.Client, id string) error {
			ctx := cmd.Context()
			var se *jobs.StatusError
			if dryRun {
				n, err := client.CountDeadLetters(ctx, id, f)
				if errors.As(err, &se) {
					return cli.Usage(err)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "job %s: %d dead letters would be re-queued (dry run: nothing changed)\n", id, n)
				return nil
			}
			// Who and why first: a confirmed re-queue must not be refused
			// for them after the question.
			if err := producer.CheckWhoAndWhy(audit.actor, audit.reason); err != nil {
				return cliError(err)
			}
			total, repaired, err := client.CountRequeue(ctx, id, f)
			if errors.As(err, &se) || errors.Is(err, jobs.ErrBusy) {
				return cli.Usage(err)
			}
			if err != nil {
				return err
			}
			if total == 0 {
				if repaired > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "job %s: %d messages of an interrupted re-queue queued\n", id, repaired)
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "no dead letters match; nothing re-queued")
				return nil
			}
			r, err := client.Requeue(ctx, id, f, imrecall.RequeueOptions{Actor: audit.actor, Reason: audit.reason, Confirmed: yes,
				Confirm: func(_ context.Context, need *imrecall.ConfirmationRequired) error {
					return confirm(cmd, fmt.Sprintf("About to re-queue %d dead letters of job %s.", need.Messages, id))
				}})
			if r.Repaired > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "job %s: %d messages of an interrupted re-queue queued\n", id, r.Repaired)
			}
			if errors.As(err, &se) || errors.Is(err, jobs.ErrBusy) {
				return cli.Usage(err) // e.g. a cancelled job: it stays cancelled
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job %s: %d dead letters re-queued in %d tasks\n", id, r.Messages, r.Tasks)
			return nil
		}, func(cmd *cobra.Command) {
			dlqFilter(cmd, &f)
			audit.register(cmd)
			cmd.Flags().BoolVar(&yes, "yes", false, "confirm a large re-queue without asking")
			cmd.Flags().BoolVar(&dryRun, "dry-run", false, "count the dead letters a re-queue would send again; change nothing")
		})
}
