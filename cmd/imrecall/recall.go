package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/spf13/cobra"
)

// recallFlags are shared by the recall subcommands.
type recallFlags struct {
	redis        redisFlags
	audit        auditFlags
	appID        int64
	queue        string
	dryRun       bool
	yes          bool
	confirmAbove int
	wait         bool
	// afterWait, if set, runs when --wait saw the job end (purge --verify).
	afterWait    func(ctx context.Context, j jobs.Job) error
	asJSON       bool
	plannerLease time.Duration
}

func (f *recallFlags) register(cmd *cobra.Command, defaultQueue string) {
	f.redis.register(cmd)
	f.audit.register(cmd)
	fl := cmd.Flags()
	fl.Int64Var(&f.appID, "sdkappid", 0, "the app's SDKAppID (required)")
	fl.StringVar(&f.queue, "queue", defaultQueue, "queue: incident (highest priority), purge, or backfill")
	fl.BoolVar(&f.dryRun, "dry-run", false, "check the input and report what would be recalled; change nothing")
	fl.BoolVar(&f.yes, "yes", false, "confirm a large job without asking")
	fl.IntVar(&f.confirmAbove, "confirm-above", 1000, "ask for confirmation when a job has more messages than this")
	fl.BoolVar(&f.wait, "wait", false, "wait until the job ends, showing progress, and exit with the job's code")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON for scripts")
	plannerLeaseFlag(cmd, &f.plannerLease)
}

func (f *recallFlags) validate() error {
	if f.appID <= 0 {
		return badInput("--sdkappid (IMRECALL_SDKAPPID): required, a positive number")
	}
	if err := tasks.ValidQueue(f.queue); err != nil {
		return badInput("--queue: %v", err)
	}
	if strings.TrimSpace(f.audit.actor) == "" {
		return badInput("--actor: required (who asks, for the audit record)")
	}
	if f.plannerLease <= 0 {
		return badInput("--planner-lease (IMRECALL_PLANNER_LEASE) %s: must be positive", f.plannerLease)
	}
	return nil
}

func newRecallCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "recall",
		Short: "Recall listed messages: one group's seqs, one one-to-one message, or a file of them",
		Long: `Each recall subcommand creates one job, prints its id, and leaves the work to the workers
(imrecall worker). Recalled messages cannot be restored: --dry-run checks and reports
without changing anything, and jobs above --confirm-above messages ask for confirmation
unless --yes is given.`,
	}
	cmd.AddCommand(newRecallGroupCmd(), newRecallC2CCmd(), newRecallFileCmd())
	return cmd
}

func newRecallGroupCmd() *cobra.Command {
	var f recallFlags
	var group, topic, seqs string
	cmd := &cobra.Command{
		Use:   "group --group G --seqs 1,2,3 [--topic T]",
		Short: "Recall messages of one group (or one topic of a Community) by MsgSeq",
		Example: `  imrecall recall group --sdkappid 1400000001 --group @TGS#2J4SZEAEL --seqs 100,101,102 --reason "spam"
  imrecall recall group --group @TGS#_community --topic @TGS#_community@TOPIC#_general --seqs 7 --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			if err := f.validate(); err != nil {
				return err
			}
			if strings.TrimSpace(group) == "" {
				return badInput("--group: required")
			}
			list, err := parseInt64List("seqs", seqs)
			if err != nil {
				return err
			}
			if len(list) == 0 {
				return badInput("--seqs: at least one MsgSeq required")
			}
			for _, s := range list {
				if s <= 0 {
					return badInput("--seqs: MsgSeq %d must be positive", s)
				}
			}
			msgs := make([]producer.Message, len(list))
			for i, s := range list {
				msgs[i] = producer.Message{GroupID: group, TopicID: topic, MsgSeq: s}
			}
			params := map[string]any{"GroupId": group, "TopicId": topic, "seqs": list}
			return runRecall(cmd, &f, "recall:group", params, msgs)
		},
	}
	f.register(cmd, tasks.QueueIncident)
	cmd.Flags().StringVar(&group, "group", "", "GroupId")
	cmd.Flags().StringVar(&topic, "topic", "", "TopicId, for a Community with topics")
	cmd.Flags().StringVar(&seqs, "seqs", "", "comma-separated MsgSeq list")
	return cmd
}

func newRecallC2CCmd() *cobra.Command {
	var f recallFlags
	var from, to, key string
	cmd := &cobra.Command{
		Use:     "c2c --from A --to B --msgkey K",
		Short:   "Recall one one-to-one message by MsgKey",
		Example: `  imrecall recall c2c --sdkappid 1400000001 --from vinson --to dramon --msgkey 31906_833502_1572869830`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			if err := f.validate(); err != nil {
				return err
			}
			switch {
			case strings.TrimSpace(from) == "":
				return badInput("--from: required (From_Account, the sender)")
			case strings.TrimSpace(to) == "":
				return badInput("--to: required (To_Account, the receiver)")
			}
			if err := tasks.ValidMsgKey(key); err != nil {
				return badInput("--msgkey: %v", err)
			}
			params := map[string]any{"From_Account": from, "To_Account": to, "MsgKey": key}
			return runRecall(cmd, &f, "recall:c2c", params, []producer.Message{{From: from, To: to, MsgKey: key}})
		},
	}
	f.register(cmd, tasks.QueueIncident)
	cmd.Flags().StringVar(&from, "from", "", "From_Account")
	cmd.Flags().StringVar(&to, "to", "", "To_Account")
	cmd.Flags().StringVar(&key, "msgkey", "", "MsgKey ({MsgSeq}_{MsgRandom}_{MsgTimeStamp})")
	return cmd
}

func newRecallFileCmd() *cobra.Command {
	var f recallFlags
	cmd := &cobra.Command{
		Use:   "file PATH",
		Short: "Recall every message listed in a JSON Lines or CSV file",
		Long: `The file holds one message per line, shaped like the after-send callbacks so that callback
logs feed straight in:
  {"GroupId": "@TGS#...", "MsgSeq": 123}                      (optional "TopicId")
  {"From_Account": "a", "To_Account": "b", "MsgKey": "1_2_3"}
Other fields are ignored. CSV works too, with a header row of the same names.
The whole file is checked first: a bad line is reported as FILE:LINE and nothing is
enqueued. Duplicates are recalled once; group seqs are sent 10 per call.`,
		Example: `  imrecall recall file callbacks.jsonl --sdkappid 1400000001 --reason "INC-4211 spam wave" --dry-run
  imrecall recall file export.csv --queue backfill --yes --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			if err := f.validate(); err != nil {
				return err
			}
			return runRecallFile(cmd, &f, args[0])
		},
	}
	f.register(cmd, tasks.QueuePurge)
	return cmd
}

// runRecall creates a job for a few messages given on the command line.
func runRecall(cmd *cobra.Command, f *recallFlags, kind string, params map[string]any, msgs []producer.Message) error {
	ctx := cmd.Context()
	if f.dryRun {
		return printDryRun(cmd, f, map[string]any{"messages": len(msgs), "params": params})
	}
	if len(msgs) > f.confirmAbove && !f.yes {
		if err := confirm(cmd, fmt.Sprintf("About to recall %d messages.", len(msgs))); err != nil {
			return err
		}
	}
	c, err := f.redis.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return createAndPlan(cmd, f, c, kind, params, func(ctx context.Context, _ jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
		for _, m := range msgs {
			if err := b.AddMessage(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
}

func runRecallFile(cmd *cobra.Command, f *recallFlags, path string) error {
	ctx := cmd.Context()
	sum, err := producer.CheckListFile(ctx, path)
	if err != nil {
		var le *producer.LineError
		if errors.As(err, &le) || errors.Is(err, os.ErrNotExist) {
			return usageError{err}
		}
		return err
	}
	if sum.Messages == 0 {
		return badInput("%s: no messages in the file", path)
	}
	abs, _ := filepath.Abs(path)
	if f.dryRun {
		return printDryRun(cmd, f, map[string]any{"file": abs, "summary": sum,
			"seconds_at_cap": estimateSeconds(sum.GroupCalls, sum.C2CCalls)})
	}
	if sum.Messages > f.confirmAbove && !f.yes {
		if err := confirm(cmd, fmt.Sprintf("About to recall %d messages (%d group, %d one-to-one) listed in %s.",
			sum.Messages, sum.GroupMsgs, sum.C2CMsgs, path)); err != nil {
			return err
		}
	}
	c, err := f.redis.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	params := map[string]any{"file": abs, "messages": sum.Messages}
	return createAndPlan(cmd, f, c, "recall:file", params, func(ctx context.Context, _ jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
		fh, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("opening list file: %w", err)
		}
		defer fh.Close()
		return producer.ReadList(ctx, fh, path, func(_ int, m producer.Message) error { return b.AddMessage(ctx, m) })
	})
}

// estimateSeconds is the time the calls take at the default cap of 200
// calls/s per API; the two APIs run in parallel.
func estimateSeconds(groupCalls, c2cCalls int) float64 {
	return float64(max(groupCalls, c2cCalls)) / 200
}

func printDryRun(cmd *cobra.Command, f *recallFlags, report map[string]any) error {
	report["dry_run"] = true
	if f.asJSON {
		return printJSON(cmd.OutOrStdout(), report)
	}
	b, _ := json.MarshalIndent(report, "", "  ")
	fmt.Fprintf(cmd.OutOrStdout(), "dry run: nothing was changed\n%s\n", b)
	return nil
}

// createAndPlan creates the job, runs plan on a batcher, closes planning and
// prints the job id; with --wait it then follows the job to its end.
func createAndPlan(cmd *cobra.Command, f *recallFlags, c *conn, kind string, params map[string]any, plan producer.PlanFunc) error {
	ctx := cmd.Context()
	raw, _ := json.Marshal(params)
	client := asynq.NewClient(c.asynq)
	defer client.Close()
	c.store.SetLeaseTTL(f.plannerLease)
	job, b, err := producer.NewJob(ctx, c.store, testHookEnqueuer(cmd, client), jobs.Spec{
		Kind: kind, Queue: f.queue, AppID: f.appID,
		RequestedBy: f.audit.actor, Reason: f.audit.reason, Params: raw,
	}, plan)
	if err != nil {
		return err
	}
	if f.asJSON {
		if err := printJSON(cmd.OutOrStdout(), map[string]any{"job_id": job.ID, "planned": b.Planned, "tasks": b.Tasks}); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(cmd.OutOrStdout(), job.ID)
		if b.Seen > 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "job %s: %d messages planned (%d duplicates removed) in %d tasks on queue %s\n",
				job.ID, b.Planned, b.Seen-b.Planned, b.Tasks, f.queue)
		}
	}
	if !f.wait {
		return nil
	}
	j, err := waitJob(ctx, cmd, c.store, job.ID, 500*time.Millisecond)
	if err != nil {
		return err
	}
	printCounts(cmd, j)
	if f.afterWait != nil {
		if err := f.afterWait(ctx, j); err != nil {
			return err
		}
	}
	return jobExit(j)
}

func printCounts(cmd *cobra.Command, j jobs.Job) {
	c := j.Counts
	fmt.Fprintf(cmd.ErrOrStderr(), "job %s %s: planned %d, recalled %d, dead-lettered %d, pending %d\n",
		j.ID, j.Status, c.Planned, c.Recalled, c.DeadLettered, c.Pending)
	for code, n := range c.DeadByCode {
		fmt.Fprintf(cmd.ErrOrStderr(), "  dead letters %s: %s\n", code, strconv.FormatInt(n, 10))
	}
}
