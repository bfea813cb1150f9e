package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newScheduleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Recurring jobs: add, list and remove schedules (run by `imrecall scheduler`)",
		Long: `A schedule creates a job on a cron spec, e.g. a nightly retention purge. It holds a typed job
request (what the job is: kind, user, groups, ranges, queue, reason), the same the HTTP API takes,
never how a worker connects: the worker that runs a firing uses its own Redis, API base, admin
identity and credentials. "schedule add" takes the request in the shape of a recall or purge
command after "--"; connection flags (--api-base, --admin, --sdkappid, --secret-key, --peers-file,
--redis, …) are refused. Relative times (--since 90d, --until 90d) are evaluated at each firing; the
job records "schedule:NAME" as who asked. "imrecall scheduler" fires the schedules, each due time
once however many schedulers run.`,
	}
	cmd.AddCommand(newScheduleAddCmd(), newScheduleListCmd(), newScheduleRemoveCmd())
	return cmd
}

func newScheduleAddCmd() *cobra.Command {
	var rf redisFlags
	var audit auditFlags
	var name, spec string
	cmd := &cobra.Command{
		Use:   "add --name N --cron SPEC -- recall|purge SUBCOMMAND FLAGS...",
		Short: "Add (or replace) a schedule",
		Example: `  imrecall schedule add --name retention --cron "0 3 * * *" --reason "90-day retention" -- \
      purge group --group @TGS#1 --group @TGS#2 --until 90d --queue backfill
  imrecall schedule add --name hourly-list --cron "@every 1h" -- recall file callbacks.jsonl   # read now, held in the schedule`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			req, err := scheduleRequest(cmd.Context(), args, true)
			if err != nil {
				return err
			}
			c, err := rf.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			sc := producer.Schedule{Name: name, Cron: spec, Request: &req, CreatedBy: audit.actor, Reason: audit.reason, CreatedAt: time.Now().UTC()}
			if err := sc.Validate(); err != nil {
				return usageError{err}
			}
			if err := producer.NewSchedules(c.rdb, rf.prefix).Add(cmd.Context(), sc); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "schedule %s: %s: %s\n", name, spec, cliout.Request(req))
			return nil
		},
	}
	rf.register(cmd)
	audit.register(cmd)
	cmd.Flags().StringVar(&name, "name", "", "the schedule's name")
	cmd.Flags().StringVar(&spec, "cron", "", `cron spec: five fields ("0 3 * * *") or a descriptor (@daily, @every 1h)`)
	return cmd
}

// scheduleFields are the flags of each schedulable command that say what
// the job is; every other flag a command line sets is refused.
var scheduleFields = map[string][]string{
	"recall group": {"group", "topic", "seqs"},
	"recall c2c":   {"from", "to", "msgkey"},
	"recall file":  {},
	"purge user":   {"user", "peers", "source", "since", "until"},
	"purge group":  {"group", "topic", "sender", "seq-from", "seq-to", "since", "until"},
}

// scheduleHarmless are flags a schedule's command line may carry that change
// nothing about the job (a firing is always confirmed and never waits).
var scheduleHarmless = map[string]bool{"queue": true, "reason": true, "yes": true, "json": true, "confirm-above": true, "discovery-concurrency": true}

// maxScheduledMessages bounds the messages a schedule holds.
const maxScheduledMessages = 10_000

// scheduleRequest turns a recall or purge command line into the typed job
// request a schedule holds. Connection flags are refused, naming the flag.
// readFiles lets "recall file PATH" read the list now (on the machine adding
// the schedule); a migration of a stored command line never reads a file.
func scheduleRequest(ctx context.Context, args []string, readFiles bool) (producer.JobRequest, error) {
	var req producer.JobRequest
	if len(args) < 2 || args[0] != "recall" && args[0] != "purge" {
		return req, badInput("a schedule creates a recall or purge job, not %q", strings.Join(args[:min(len(args), 2)], " "))
	}
	sub, rest, err := newRootCmd().Find(args)
	if err != nil || !sub.Runnable() {
		return req, badInput("imrecall %s: not a command", strings.Join(args[:2], " "))
	}
	if err := sub.ParseFlags(rest); err != nil {
		return req, badInput("imrecall %s: %v", strings.Join(args[:2], " "), err)
	}
	path := strings.TrimPrefix(sub.CommandPath(), "imrecall ")
	fields, ok := scheduleFields[path]
	if !ok {
		return req, badInput("imrecall %s: cannot be scheduled", path)
	}
	allowed := map[string]bool{}
	for _, f := range fields {
		allowed[f] = true
	}
	var refused error
	sub.Flags().Visit(func(f *pflag.Flag) {
		switch {
		case refused != nil || allowed[f.Name] || scheduleHarmless[f.Name]:
		case producer.IsConnectionSetting(f.Name):
			refused = usageError{producer.NewConnectionSettingError("--" + f.Name)}
		case f.Name == "dry-run":
			refused = badInput("--dry-run: a scheduled dry run would do nothing")
		default:
			refused = badInput("--%s: not part of a scheduled job (a schedule holds what the job is: %s)", f.Name, strings.Join(fields, ", "))
		}
	})
	if refused != nil {
		return req, refused
	}
	fl := sub.Flags()
	str := func(n string) string { v, _ := fl.GetString(n); return v }
	list := func(n string) []string {
		if v, err := fl.GetStringArray(n); err == nil {
			return v
		}
		return splitList(str(n))
	}
	i64 := func(n string) int64 { v, _ := fl.GetInt64(n); return v }
	req.Reason = str("reason")
	if fl.Changed("queue") {
		req.Queue = str("queue")
	}
	positional := sub.Flags().Args()
	if path != "recall file" && len(positional) > 0 {
		return req, badInput("imrecall %s: unexpected argument %q", path, positional[0])
	}
	switch path {
	case "recall group":
		req.Kind = producer.KindRecall
		seqs := splitList(str("seqs"))
		if len(seqs) == 0 {
			return req, badInput("--seqs: required")
		}
		for _, s := range seqs {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				return req, badInput("--seqs: %q is not a positive MsgSeq", s)
			}
			req.Messages = append(req.Messages, producer.MessageRef{GroupID: str("group"), TopicID: str("topic"), MsgSeq: n})
		}
	case "recall c2c":
		req.Kind = producer.KindRecall
		req.Messages = []producer.MessageRef{{From: str("from"), To: str("to"), MsgKey: str("msgkey")}}
	case "recall file":
		req.Kind = producer.KindRecall
		if len(positional) != 1 {
			return req, badInput("recall file: want one PATH")
		}
		if !readFiles {
			return req, badInput("recall file %s: a stored schedule cannot read a file (it would be read on a worker); add it again with \"schedule add\", which reads the list once", positional[0])
		}
		fh, err := os.Open(positional[0])
		if err != nil {
			return req, badInput("%v", err)
		}
		defer fh.Close()
		err = producer.ReadList(ctx, fh, positional[0], func(_ int, m producer.Message) error {
			if len(req.Messages) >= maxScheduledMessages {
				return fmt.Errorf("more than %d messages: a schedule holds at most that many", maxScheduledMessages)
			}
			req.Messages = append(req.Messages, producer.MessageRef{GroupID: m.GroupID, TopicID: m.TopicID, MsgSeq: m.MsgSeq, From: m.From, To: m.To, MsgKey: m.MsgKey})
			return nil
		})
		if err != nil {
			return req, badInput("%v", err)
		}
	case "purge user":
		req.Kind, req.User, req.Peers = producer.KindPurgeUser, str("user"), splitList(str("peers"))
		if fl.Changed("source") {
			req.Source = str("source")
		}
		req.Since, req.Until = str("since"), str("until")
	case "purge group":
		req.Kind, req.Groups, req.Topic, req.Senders = producer.KindPurgeGroup, list("group"), str("topic"), list("sender")
		req.SeqFrom, req.SeqTo, req.Since, req.Until = i64("seq-from"), i64("seq-to"), str("since"), str("until")
	}
	return req, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
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
			for i := range list {
				list[i] = list[i].Public()
			}
			if asJSON {
				return cliout.JSON(cmd.OutOrStdout(), list)
			}
			return cliout.Schedules(cmd.OutOrStdout(), list)
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
				if errors.Is(err, producer.ErrNoSchedule) {
					return usageError{err}
				}
				return err
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
		Short: "Fire the schedules: queue each schedule's job request when its cron spec says (workers plan it)",
		Long: `Run one scheduler or several: each due time of each schedule fires once, whichever scheduler
claims it. It reads the schedules from Redis every --sync, so added and removed schedules take
effect without a restart. On start it migrates schedules stored as command lines (before schedules
held typed requests) into requests, and refuses (logs, never fires) those that name connection
settings or files.`,
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
			enq := asynq.NewClient(c.asynq)
			defer enq.Close()
			sched := newScheduler(cmd.Context(), c, rf.prefix, enq, sync, log)
			log.Info("scheduler running", "sync", sync)
			return sched.Run(cmd.Context())
		},
	}
	rf.register(cmd)
	logs.register(cmd)
	cmd.Flags().DurationVar(&sync, "sync", 30*time.Second, "how often to re-read the schedules")
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
	return &producer.Scheduler{Schedules: scs, Queue: q, Sync: sync, Log: log}
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
	p, err := tasks.DecodeScheduleRun(t)
	if err != nil {
		return err
	}
	if len(p.Request) == 0 {
		r.log.Error("schedule refused: its firing holds a command line, not a job request", "schedule", p.Name)
		return fmt.Errorf("schedule %s: a command line, not a job request (schedules from before typed requests never run; the scheduler migrates them): %w", p.Name, asynq.SkipRetry)
	}
	var jr producer.JobRequest
	if err := json.Unmarshal(p.Request, &jr); err != nil {
		return fmt.Errorf("schedule %s: request: %v: %w", p.Name, err, asynq.SkipRetry)
	}
	req, err := imrecall.RequestOf(jr)
	var created imrecall.Created
	if err == nil {
		who := "schedule:" + p.Name
		if a := strings.TrimSpace(jr.Actor); a != "" {
			who = a + " (" + who + ")"
		}
		created, err = r.client.Create(ctx, req, imrecall.CreateOptions{Actor: who, Reason: jr.Reason, Queue: jr.Queue, Confirmed: true})
	}
	var fe *imrecall.FieldError
	if errors.As(err, &fe) {
		// Retrying a bad request cannot help.
		r.log.Error("schedule's request refused", "schedule", p.Name, "err", err)
		return fmt.Errorf("schedule %s: %v: %w", p.Name, err, asynq.SkipRetry)
	}
	if err != nil {
		return fmt.Errorf("schedule %s: %w", p.Name, err)
	}
	r.log.Info("schedule fired", "schedule", p.Name, "job_id", created.Job.ID, "due", p.Due, "planned", created.Planned)
	return nil
}
