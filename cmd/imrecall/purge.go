package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/verify"
	"github.com/spf13/cobra"
)

// purgeFlags are shared by the purge subcommands, which discover messages
// through the IM API before they plan a job.
type purgeFlags struct {
	recallFlags
	im          imFlags
	limits      limitFlags
	logs        logFlags
	since       string
	until       string
	concurrency int
	verify      bool
	settle      time.Duration // purge user's --index-settle
}

func (f *purgeFlags) register(cmd *cobra.Command, defaultQueue string) {
	f.recallFlags.register(cmd, defaultQueue)
	// --sdkappid is registered by recallFlags; the IM flags share its value.
	fl := cmd.Flags()
	fl.StringVar(&f.im.apiBase, "api-base", "china", "Tencent IM API: a region or a URL such as the emulator's")
	fl.StringVar(&f.im.admin, "admin", "administrator", "the App admin account the calls are made as")
	fl.StringVar(&f.im.secretKey, "secret-key", "", "the app's SecretKey; prefer IMRECALL_SECRET_KEY or --secret-key-file")
	fl.StringVar(&f.im.secretKeyFile, "secret-key-file", "", "file holding the app's SecretKey")
	fl.DurationVar(&f.im.timeout, "timeout", tim.DefaultTimeout, "per-call timeout (the server's own is 3 s)")
	f.limits.register(cmd)
	f.logs.register(cmd)
	fl.StringVar(&f.since, "since", "", "only messages sent at or after this time: RFC 3339, 2006-01-02[ 15:04], or an age such as 90d or 2h")
	fl.StringVar(&f.until, "until", "", "only messages sent at or before this time (same forms as --since)")
	fl.IntVar(&f.concurrency, "discovery-concurrency", 16, "histories read at once (the limiter still caps the calls)")
	fl.BoolVar(&f.verify, "verify", false, "when the job ends, verify it (imrecall verify): implies --wait; exit 5 if messages remain visible")
}

// validateUser is purge user's check: purge group reads no index.
func (f *purgeFlags) validateUser() (err error) {
	if err = f.recallFlags.validate(); err == nil {
		f.indexSettle, err = indexSettle(f.settle)
	}
	return err
}

// verifyWhenDone makes --wait verify the job at its end, when --verify asks.
func (f *purgeFlags) verifyWhenDone(cmd *cobra.Command, c *conn, im *tim.Client) {
	if !f.verify {
		return
	}
	f.wait = true
	f.afterWait = func(ctx context.Context, j jobs.Job) error {
		v, err := verify.RunJob(ctx, c.store, im, j, verify.JobOptions{Actor: f.audit.actor, Concurrency: max(f.concurrency/2, 1)})
		if err != nil {
			return fmt.Errorf("verifying job %s: %w", j.ID, err)
		}
		cliout.Verification(cmd.OutOrStdout(), v)
		return verificationExit(v)
	}
}

// client builds the IM client for discovery, gated by the shared limiter.
func (f *purgeFlags) client(c *conn, log *slog.Logger) (*tim.Client, error) {
	f.im.appID = f.appID
	cfg, err := f.im.config(log)
	if err != nil {
		return nil, err
	}
	cl, _, err := f.limits.imClient(context.Background(), c, f.redis.prefix, cfg, log, nil, false)
	return cl, err
}

func newPurgeCmd() *cobra.Command {
	return cli.Group("purge", "Find messages through the IM API and recall them: a user's everything, or a spam wave", `purge discovers messages (group histories, one-to-one histories) through the IM API, at the
shared rate cap, then plans a job of them. --dry-run discovers and reports per group the
messages and calls and the time at the cap, and recalls nothing.`,
		newPurgeUserCmd(), newPurgeGroupCmd())
}

func newPurgeUserCmd() *cobra.Command {
	var f purgeFlags
	var user, peers, peersFile, source string
	cmd := &cobra.Command{
		Use:   "user --user X [--source index|scan|auto] [--peers A,B | --peers-file F] [--since T] [--until T]",
		Short: "Recall everything a user sent: every group they belong to, and one-to-one chats with the given peers",
		Long: `Finds what the user sent and recalls it. With --source index (or auto, when the index covers
the range) the messages come from the callback index that "imrecall serve" keeps from Tencent's
after-send callbacks: no history scan, and one-to-one peers need not be known. Otherwise every group
the user belongs to is scanned, and the one-to-one chats with --peers.`,
		Example: `  imrecall purge user --user spammer42 --peers alice,bob --dry-run
  imrecall purge user --user spammer42 --source index --since 7d --reason "INC-4211" --yes --wait
  imrecall purge user --user u123 --peers-file peers.txt --reason "GDPR erasure request #881" --yes --wait`,
		Args: cobra.NoArgs,
		RunE: cli.Checked(f.validateUser, func(cmd *cobra.Command, _ []string) error {
			ps, err := peerList(peers, peersFile)
			if err != nil {
				return err
			}
			return runPurge(cmd, &f, imrecall.UserPurge{User: user, Peers: ps, Source: source, Since: f.since, Until: f.until})
		}),
	}
	f.register(cmd, tasks.QueuePurge)
	cmd.Flags().StringVar(&user, "user", "", "the user (UserID) whose messages to recall")
	cmd.Flags().StringVar(&peers, "peers", "", "comma-separated peers whose one-to-one chats with the user to purge")
	cmd.Flags().StringVar(&peersFile, "peers-file", "", "file with one peer UserID per line")
	cmd.Flags().StringVar(&source, "source", "auto", "where to find the messages: index (the callback index kept by imrecall serve; no history scan, no --peers needed), scan (group and one-to-one histories), or auto (the index if it covers --since, else scan)")
	indexSettleFlag(cmd, &f.settle)
	return cmd
}

func peerList(list, file string) ([]string, error) {
	ps, err := imrecall.ReadPeers(list, file)
	if err != nil {
		return nil, cli.Usage(err)
	}
	return ps, nil
}

func newPurgeGroupCmd() *cobra.Command {
	var f purgeFlags
	var groups, senders []string
	var topic string
	var seqFrom, seqTo int64
	cmd := &cobra.Command{
		Use:   "group --group G [--group ...] [--since T --until T | --seq-from A --seq-to B] [--sender X ...]",
		Short: "Recall the messages of some groups in a time or seq range, optionally only from some senders",
		Example: `  imrecall purge group --group @TGS#1 --group @TGS#2 --since "2026-11-22 14:00" --sender spam1 --dry-run
  imrecall purge group --group @TGS#1 --seq-from 1200 --seq-to 1450 --reason "INC-4211" --yes --wait`,
		Args: cobra.NoArgs,
		RunE: cli.Checked(f.validate, func(cmd *cobra.Command, _ []string) error {
			return runPurge(cmd, &f, imrecall.GroupPurge{Groups: groups, Topic: topic, Senders: senders,
				SeqFrom: seqFrom, SeqTo: seqTo, Since: f.since, Until: f.until})
		}),
	}
	f.register(cmd, tasks.QueueIncident)
	cmd.Flags().StringArrayVar(&groups, "group", nil, "GroupId (repeat for several)")
	cmd.Flags().StringVar(&topic, "topic", "", "only this TopicId (with one Community --group)")
	cmd.Flags().StringArrayVar(&senders, "sender", nil, "only messages from this UserID (repeat for several)")
	cmd.Flags().Int64Var(&seqFrom, "seq-from", 0, "first MsgSeq (inclusive)")
	cmd.Flags().Int64Var(&seqTo, "seq-to", 0, "last MsgSeq (inclusive)")
	return cmd
}

// runPurge runs a purge: its IM client (discovery, dry runs and the
// sender check of the index) is gated by the shared limiter; with --verify,
// --wait verifies the job at its end.
func runPurge(cmd *cobra.Command, f *purgeFlags, req imrecall.Request) error {
	f.discovery = f.concurrency
	return runJob(cmd, &f.recallFlags, func(c *conn) (producer.IM, error) {
		log, err := f.logs.logger(cmd.ErrOrStderr())
		if err != nil {
			return nil, err
		}
		im, err := f.client(c, log)
		if err != nil {
			return nil, err
		}
		f.verifyWhenDone(cmd, c, im)
		return im, nil
	}, req)
}
