package main

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
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
	backlog      int64
	// indexSettle is imrecall.Config.IndexSettle (purge's --index-settle).
	indexSettle time.Duration
	// discovery is how many histories a purge's dry run reads at once.
	discovery int
	approval  approvalFlags
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
	fl.Int64Var(&f.backlog, "backlog", producer.DefaultBacklog, "plan no further while the job has this many messages queued and unsettled; go on as workers settle them (0: queue the whole plan at once)")
	plannerLeaseFlag(cmd, &f.plannerLease)
	f.approval.register(cmd)
}

func (f *recallFlags) validate() error {
	if f.appID <= 0 {
		return cli.BadInput("--sdkappid (IMRECALL_SDKAPPID): required, a positive number")
	}
	if err := tasks.ValidQueue(f.queue); err != nil {
		return cli.BadInput("--queue: %v", err)
	}
	if strings.TrimSpace(f.audit.actor) == "" {
		return cli.BadInput("--actor: required (who asks, for the audit record)")
	}
	if err := f.approval.validate(); err != nil {
		return err
	}
	if f.backlog < 0 {
		return cli.BadInput("--backlog (IMRECALL_BACKLOG) %d: must not be negative", f.backlog)
	}
	if f.plannerLease <= 0 {
		return cli.BadInput("--planner-lease (IMRECALL_PLANNER_LEASE) %s: must be positive", f.plannerLease)
	}
	return nil
}

func newRecallCmd() *cobra.Command {
	return cli.Group("recall", "Recall listed messages: one group's seqs, one one-to-one message, or a file of them", `Each recall subcommand creates one job, prints its id, and leaves the work to the workers
(imrecall worker). Recalled messages cannot be restored: --dry-run checks and reports
without changing anything, and jobs above --confirm-above messages ask for confirmation
unless --yes is given.`,
		newRecallGroupCmd(), newRecallC2CCmd(), newRecallFileCmd())
}

func newRecallGroupCmd() *cobra.Command {
	var group, topic, seqs string
	cmd := recallCmd(&cobra.Command{
		Use:   "group --group G --seqs 1,2,3 [--topic T]",
		Short: "Recall messages of one group (or one topic of a Community) by MsgSeq",
		Example: `  imrecall recall group --sdkappid 1400000001 --group @TGS#2J4SZEAEL --seqs 100,101,102 --reason "spam"
  imrecall recall group --group @TGS#_community --topic @TGS#_community@TOPIC#_general --seqs 7 --reason "INC-9" --wait`,
		Args: cobra.NoArgs,
	}, tasks.QueueIncident, func([]string) (imrecall.Request, error) {
		list, err := cli.ParseInt64List("seqs", seqs)
		return imrecall.GroupRecall{GroupID: group, TopicID: topic, Seqs: list}, err
	})
	cmd.Flags().StringVar(&group, "group", "", "GroupId")
	cmd.Flags().StringVar(&topic, "topic", "", "TopicId, for a Community with topics")
	cmd.Flags().StringVar(&seqs, "seqs", "", "comma-separated MsgSeq list")
	return cmd
}

func newRecallC2CCmd() *cobra.Command {
	var from, to, key string
	cmd := recallCmd(&cobra.Command{
		Use:     "c2c --from A --to B --msgkey K",
		Short:   "Recall one one-to-one message by MsgKey",
		Example: `  imrecall recall c2c --sdkappid 1400000001 --from vinson --to dramon --msgkey 31906_833502_1572869830 --reason "reported by the recipient"`,
		Args:    cobra.NoArgs,
	}, tasks.QueueIncident, func([]string) (imrecall.Request, error) {
		return imrecall.C2CRecall{From: from, To: to, MsgKey: key}, nil
	})
	cmd.Flags().StringVar(&from, "from", "", "From_Account")
	cmd.Flags().StringVar(&to, "to", "", "To_Account")
	cmd.Flags().StringVar(&key, "msgkey", "", "MsgKey ({MsgSeq}_{MsgRandom}_{MsgTimeStamp})")
	return cmd
}

func newRecallFileCmd() *cobra.Command {
	return recallCmd(&cobra.Command{
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
  imrecall recall file export.csv --queue backfill --reason "retention backfill" --yes --wait`,
		Args: cobra.ExactArgs(1),
	}, tasks.QueuePurge, func(args []string) (imrecall.Request, error) {
		return imrecall.ListRecall{File: args[0]}, nil
	})
}

// recallCmd completes a recall subcommand: the flags every recall has (its
// default queue queue), and a run of the request that request makes of the
// command's own flags and arguments.
func recallCmd(cmd *cobra.Command, queue string, request func(args []string) (imrecall.Request, error)) *cobra.Command {
	var f recallFlags
	cmd.RunE = cli.Checked(f.validate, func(cmd *cobra.Command, args []string) error {
		req, err := request(args)
		if err != nil {
			return err
		}
		return runJob(cmd, &f, nil, req)
	})
	f.register(cmd, queue)
	return cmd
}

// client builds the Client of a recall or purge command: its queue (with
// the test-only pause of testPauseEnv), the callback index, and im for
// purges (nil for recalls of listed messages).
func (f *recallFlags) client(cmd *cobra.Command, c *conn, im producer.IM) (*imrecall.Client, func(), error) {
	q := asynq.NewClient(c.asynq)
	confirmAbove := f.confirmAbove
	if confirmAbove == 0 {
		confirmAbove = -1 // every job asks
	}
	cfg := imrecall.Config{Redis: c.rdb, Prefix: f.redis.prefix, Queue: testHookEnqueuer(cmd, q), AppID: f.appID,
		Index: msgindex.New(c.rdb, f.redis.prefix, 0), ConfirmAbove: confirmAbove, PlannerLease: f.plannerLease, DiscoveryConcurrency: f.discovery,
		ApprovalAbove: f.approval.above, ApprovalDelay: f.approval.delay, Backlog: f.backlog, IndexSettle: f.indexSettle}
	if im != nil {
		cfg.IM = im
	}
	cl, err := imrecall.New(cfg)
	if err != nil {
		_ = q.Close()
		return nil, nil, err
	}
	return cl, func() { _ = q.Close() }, nil
}

// runJob is every recall and purge command once its flags are read: the
// request is checked before Redis is opened; then a dry run prints the
// plan, or the job is created (asking at the terminal when the Client says
// it needs confirmation), its id printed, and with --wait followed to its
// end. open, if set, builds the IM client of a purge.
func runJob(cmd *cobra.Command, f *recallFlags, open func(c *conn) (producer.IM, error), req imrecall.Request) error {
	ctx := cmd.Context()
	if err := req.Validate(); err != nil {
		return cliError(err)
	}
	c, err := f.redis.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var im producer.IM
	if open != nil {
		if im, err = open(c); err != nil {
			return err
		}
	}
	client, closeQ, err := f.client(cmd, c, im)
	if err != nil {
		return err
	}
	defer closeQ()
	if f.dryRun {
		p, err := client.Plan(ctx, req)
		if err != nil {
			return cliError(err)
		}
		cliout.NotePlan(cmd.ErrOrStderr(), p)
		return cliout.Plan(cmd.OutOrStdout(), f.asJSON, req, p)
	}
	noted := false
	created, err := client.Create(ctx, req, imrecall.CreateOptions{Actor: f.audit.actor, Reason: f.audit.reason, Queue: f.queue, Confirmed: f.yes,
		Confirm: func(_ context.Context, need *imrecall.ConfirmationRequired) error {
			cliout.NotePlan(cmd.ErrOrStderr(), need.Plan)
			noted = true
			return confirm(cmd, cliout.Prompt(req, need))
		}})
	var cancelled *imrecall.CancelledError
	if errors.As(err, &cancelled) {
		// Exit 4, as for a job cancelled once planned: not a failure to retry.
		return cli.Exit(cli.ExitCancelled, err.Error())
	}
	if err != nil {
		return cliError(err)
	}
	if !noted {
		cliout.NotePlan(cmd.ErrOrStderr(), created.Plan)
	}
	if err := cliout.Created(cmd.OutOrStdout(), cmd.ErrOrStderr(), created, f.asJSON, f.approval.above, f.audit.actor); err != nil {
		return err
	}
	if !f.wait {
		return nil
	}
	j, err := waitJob(ctx, cmd, client, created.Job.ID)
	if err != nil {
		return err
	}
	cliout.Counts(cmd.ErrOrStderr(), j)
	if f.afterWait != nil {
		if err := f.afterWait(ctx, j); err != nil {
			return err
		}
	}
	return jobExit(j)
}
