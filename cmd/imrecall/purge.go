package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
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

// verifyWhenDone makes --wait verify the job at its end, when --verify asks.
func (f *purgeFlags) verifyWhenDone(cmd *cobra.Command, c *conn, im *tim.Client) {
	if !f.verify {
		return
	}
	f.wait = true
	f.afterWait = func(ctx context.Context, j jobs.Job) error {
		v, err := runVerification(ctx, c.store, im, j, max(f.concurrency/2, 1), f.audit.actor)
		if err != nil {
			return fmt.Errorf("verifying job %s: %w", j.ID, err)
		}
		writeVerification(cmd, v)
		return verificationExit(v)
	}
}

func (f *purgeFlags) window(now time.Time) (producer.Window, error) {
	var w producer.Window
	var err error
	if w.Since, err = parseWhen("since", f.since, now); err != nil {
		return w, err
	}
	if w.Until, err = parseWhen("until", f.until, now); err != nil {
		return w, err
	}
	if err := w.Validate(); err != nil {
		return w, usageError{err}
	}
	return w, nil
}

// parseWhen parses a time flag: RFC 3339, a date, a date and minute, or an
// age (90d, 36h, 15m) before now. Empty is the zero time.
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	t, err := producer.ParseTime(s, now)
	if err != nil {
		return t, badInput("--%s %v", flag, err)
	}
	return t, nil
}

// client builds the IM client for discovery, gated by the shared limiter.
func (f *purgeFlags) client(c *conn, log *slog.Logger) (*tim.Client, error) {
	f.im.appID = f.appID
	cfg, err := f.im.config(log)
	if err != nil {
		return nil, err
	}
	lim, err := f.limits.limiter(c.rdb, f.redis.prefix, log, nil)
	if err != nil {
		return nil, err
	}
	cfg.Gate = lim.ForApp(cfg.SDKAppID)
	cl, err := tim.New(cfg)
	if err != nil {
		return nil, badInput("%v", err)
	}
	return cl, nil
}

func newPurgeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Find messages through the IM API and recall them: a user's everything, or a spam wave",
		Long: `purge discovers messages (group histories, one-to-one histories) through the IM API, at the
shared rate cap, then plans a job of them. --dry-run discovers and reports per group the
messages and calls and the time at the cap, and recalls nothing.`,
	}
	cmd.AddCommand(newPurgeUserCmd(), newPurgeGroupCmd())
	return cmd
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			if err := f.validate(); err != nil {
				return err
			}
			w, err := f.window(time.Now())
			if err != nil {
				return err
			}
			ps, err := peerList(peers, peersFile)
			if err != nil {
				return err
			}
			spec := producer.UserPurge{User: user, Peers: ps, Window: w, Concurrency: f.concurrency}
			if err := spec.Validate(); err != nil {
				return usageError{err}
			}
			params := map[string]any{"user": user, "peers": ps, "since": f.since, "until": f.until, "source": source}
			switch source {
			case "index", "auto":
				done, err := runIndexPurge(cmd, &f, user, w, source, params)
				if done || err != nil {
					return err
				}
				params["source"] = "scan"
			case "scan":
			default:
				return badInput("--source %q: want index, scan or auto", source)
			}
			return runPurge(cmd, &f, "purge:user", params, purgeScope{subject: user, window: w, peers: ps, user: &spec},
				func(ctx context.Context, im producer.IM) ([]producer.Scan, *producer.Report, error) {
					return producer.UserScans(ctx, im, spec)
				})
		},
	}
	f.register(cmd, tasks.QueuePurge)
	cmd.Flags().StringVar(&user, "user", "", "the user (UserID) whose messages to recall")
	cmd.Flags().StringVar(&peers, "peers", "", "comma-separated peers whose one-to-one chats with the user to purge")
	cmd.Flags().StringVar(&peersFile, "peers-file", "", "file with one peer UserID per line")
	cmd.Flags().StringVar(&source, "source", "auto", "where to find the messages: index (the callback index kept by imrecall serve; no history scan, no --peers needed), scan (group and one-to-one histories), or auto (the index if it covers --since, else scan)")
	return cmd
}

func peerList(list, file string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, badInput("--peers-file: %v", err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if strings.ContainsAny(line, " \t,") {
				return nil, badInput("%s:%d: %q: want one UserID per line", file, i+1, line)
			}
			out = append(out, line)
		}
	}
	return out, nil
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			if err := f.validate(); err != nil {
				return err
			}
			w, err := f.window(time.Now())
			if err != nil {
				return err
			}
			spec := producer.GroupPurge{Groups: groups, Topic: topic, Senders: senders, Concurrency: f.concurrency,
				GroupFilter: producer.GroupFilter{Window: w, SeqFrom: seqFrom, SeqTo: seqTo}}
			if err := spec.Validate(); err != nil {
				return usageError{err}
			}
			params := map[string]any{"groups": groups, "topic": topic, "senders": senders, "since": f.since, "until": f.until, "seq_from": seqFrom, "seq_to": seqTo}
			scope := purgeScope{window: w}
			if len(senders) == 1 {
				scope.subject = senders[0]
			}
			return runPurge(cmd, &f, "purge:group", params, scope, func(ctx context.Context, im producer.IM) ([]producer.Scan, *producer.Report, error) {
				return producer.GroupScans(ctx, im, spec)
			})
		},
	}
	f.register(cmd, tasks.QueueIncident)
	cmd.Flags().StringArrayVar(&groups, "group", nil, "GroupId (repeat for several)")
	cmd.Flags().StringVar(&topic, "topic", "", "only this TopicId (with one Community --group)")
	cmd.Flags().StringArrayVar(&senders, "sender", nil, "only messages from this UserID (repeat for several)")
	cmd.Flags().Int64Var(&seqFrom, "seq-from", 0, "first MsgSeq (inclusive)")
	cmd.Flags().Int64Var(&seqTo, "seq-to", 0, "last MsgSeq (inclusive)")
	return cmd
}

// scansFunc lists what a purge must scan, checking its input first.
type scansFunc func(ctx context.Context, im producer.IM) ([]producer.Scan, *producer.Report, error)

// purgeScope is what a purge covers, for the job's coverage.
type purgeScope struct {
	subject string
	window  producer.Window
	peers   []string
	// user is a user purge's spec: the callback index may know groups the
	// scan does not list (groups the user left); they are added to it.
	user *producer.UserPurge
}

// indexedGroups returns the groups in which the callback index holds
// messages of user in w; nil when it holds none (or is empty).
func indexedGroups(ctx context.Context, c *conn, prefix string, app int64, user string, w producer.Window) (map[string]bool, error) {
	idx := msgindex.New(c.rdb, prefix, 0)
	groups := map[string]bool{}
	err := idx.Lookup(ctx, app, user, w.Since, w.Until, func(e msgindex.Entry) error {
		if e.IsGroup() {
			groups[e.GroupID] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the callback index for the groups of %s: %w", user, err)
	}
	return groups, nil
}

// warnGaps prints a warning for each gap: what the purge cannot reach.
func warnGaps(cmd *cobra.Command, gaps []jobs.Gap) {
	for _, line := range producer.Warnings(gaps) {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", line)
	}
}

// runPurge lists the scans (bad input fails here, before anything is
// planned). A dry run, or a run that must be confirmed, scans in this
// process into a tally; a real run queues one discovery task per scan, which
// workers run in parallel, planning into the job as they go.
func runPurge(cmd *cobra.Command, f *purgeFlags, kind string, params map[string]any, scope purgeScope, list scansFunc) error {
	ctx := cmd.Context()
	log, err := f.logs.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	c, err := f.redis.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	im, err := f.client(c, log)
	if err != nil {
		return err
	}
	f.verifyWhenDone(cmd, c, im)
	scans, rep, err := list(ctx, im)
	if err != nil {
		return discoveryErr(err)
	}
	for _, u := range rep.Unsupported {
		fmt.Fprintf(cmd.ErrOrStderr(), "unsupported: %s (%s): %s\n", u.GroupID, u.Type, u.Reason)
	}
	if scope.user != nil {
		indexed, err := indexedGroups(ctx, c, f.redis.prefix, f.appID, scope.subject, scope.window)
		if err != nil {
			return err
		}
		if scans, err = producer.AddIndexedGroups(ctx, im, *scope.user, scans, rep, indexed); err != nil {
			return discoveryErr(err)
		}
	}
	cov := producer.Coverage(scope.subject, scope.window, scope.peers, producer.ScanSources(len(scope.peers)), rep)
	warnGaps(cmd, cov.Gaps)
	if f.dryRun || !f.yes {
		tally := &producer.Tally{}
		if err := producer.RunScans(ctx, im, scans, f.concurrency, tally, rep); err != nil {
			return discoveryErr(err)
		}
		if f.dryRun {
			cov.Targets = rep.TargetCoverage()
			return printDiscovery(cmd, f.asJSON, rep, tally.Count(), cov)
		}
		if n := tally.Count(); n > f.confirmAbove {
			fmt.Fprintf(cmd.ErrOrStderr(), "found %d messages in %d targets\n", n, len(rep.Targets))
			if err := confirm(cmd, fmt.Sprintf("About to recall %d messages.", n)); err != nil {
				return err
			}
		}
	}
	return createAndPlan(cmd, &f.recallFlags, c, kind, params, func(ctx context.Context, job jobs.Job, q producer.Enqueuer, _ *producer.Batcher) error {
		// The scope and its gaps first; each target as its discovery ends.
		if err := c.store.SaveCoverage(ctx, job.ID, cov); err != nil {
			return err
		}
		n, err := producer.EnqueueScans(ctx, c.store, q, job, scans)
		if err == nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "job %s: %d scans queued for the workers\n", job.ID, n)
		}
		return err
	})
}

func discoveryErr(err error) error {
	if strings.HasPrefix(err.Error(), "--") {
		return usageError{err}
	}
	return err
}

func printDiscovery(cmd *cobra.Command, asJSON bool, rep *producer.Report, distinct int, cov jobs.Coverage) error {
	if asJSON {
		return printJSON(cmd.OutOrStdout(), map[string]any{"dry_run": true, "messages": distinct, "report": rep,
			"scope": cov, "warnings": producer.Warnings(cov.Gaps)})
	}
	w := cmd.OutOrStdout()
	fmt.Fprintln(w, "dry run: nothing was changed")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tTYPE\tSCANNED\tMESSAGES\tCALLS")
	for _, t := range rep.Targets {
		if t.Messages == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", t.Target, t.Type, t.Scanned, t.Messages, t.Calls)
	}
	_ = tw.Flush()
	for _, u := range rep.Unsupported {
		fmt.Fprintf(w, "unsupported: %s (%s): %s\n", u.GroupID, u.Type, u.Reason)
	}
	fmt.Fprintf(w, "total: %d messages (%d group in %d calls, %d one-to-one in %d calls); about %.0f s at the cap\n",
		distinct, rep.GroupMsgs, rep.GroupCalls, rep.C2CMsgs, rep.C2CCalls, rep.SecondsAtCap)
	fmt.Fprintln(w)
	cov.WriteText(w)
	return nil
}

// runIndexPurge purges a user's messages found in the callback index. With
// source auto it returns done=false, and does nothing, when the index does
// not cover the range, so that the caller scans instead.
func runIndexPurge(cmd *cobra.Command, f *purgeFlags, user string, w producer.Window, source string, params map[string]any) (done bool, err error) {
	ctx := cmd.Context()
	c, err := f.redis.connect(ctx)
	if err != nil {
		return true, err
	}
	defer c.Close()
	idx := msgindex.New(c.rdb, f.redis.prefix, 0)
	cov, err := idx.Coverage(ctx, f.appID)
	if err != nil {
		return true, err
	}
	why := cov.Why(w.Since, time.Now())
	covered := why == ""
	switch {
	case source == "auto" && !covered:
		fmt.Fprintf(cmd.ErrOrStderr(), "the callback index does not cover the range (%s); scanning histories\n", why)
		return false, nil
	case !covered:
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: the callback index begins %s, after the range starts: older messages are not in it\n", describeSince(cov))
	}
	// The index holds what callbacks claimed (Sign does not cover a body):
	// only what the history shows the user sent is recalled.
	log, err := f.logs.logger(cmd.ErrOrStderr())
	if err != nil {
		return true, err
	}
	im, err := f.client(c, log)
	if err != nil {
		return true, err
	}
	f.verifyWhenDone(cmd, c, im)
	params["source"] = "index"
	rep := &producer.Report{}
	if why := cov.Why(w.Since, time.Now()); why != "" {
		rep.AddGap(jobs.Gap{Kind: jobs.GapIndex, What: "the callback index does not cover the whole range: " + why})
	}
	producer.RoamingGap(rep, w, time.Now())
	scope := producer.Coverage(user, w, nil, []string{producer.SourceNameIndex}, rep)
	warnGaps(cmd, scope.Gaps)
	if f.yes && !f.dryRun {
		// Confirmed up front: plan as senders are confirmed, so that
		// recalls start while later history pages are read.
		return true, createAndPlan(cmd, &f.recallFlags, c, "purge:user", params, func(ctx context.Context, job jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
			if err := c.store.SaveCoverage(ctx, job.ID, scope); err != nil {
				return err
			}
			check := producer.NewSenderCheck(im, user, b)
			if _, err := idx.Plan(ctx, f.appID, user, w.Since, w.Until, check); err != nil {
				return err
			}
			if err := check.Flush(ctx); err != nil {
				return err
			}
			if check.Refused > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d indexed messages are not confirmed as %s's by the history (forged callbacks or others' messages): left out\n", check.Refused, user)
			}
			return c.store.AddRefused(ctx, job.ID, jobs.RefusedSenderUnconfirmed, int64(check.Refused))
		})
	}
	tally := &producer.Tally{}
	check := producer.NewSenderCheck(im, user, tally)
	counts, err := idx.Plan(ctx, f.appID, user, w.Since, w.Until, check)
	if err == nil {
		err = check.Flush(ctx)
	}
	if err != nil {
		return true, err
	}
	if check.Refused > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "%d indexed messages are not confirmed as %s's by the history (forged callbacks or others' messages): left out\n", check.Refused, user)
	}
	if f.dryRun {
		out := map[string]any{"dry_run": true, "source": "index", "messages": tally.Count(), "index": counts, "coverage": cov,
			"sender_unconfirmed": check.Refused, "scope": scope, "warnings": producer.Warnings(scope.Gaps)}
		if f.asJSON {
			return true, printJSON(cmd.OutOrStdout(), out)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "dry run: nothing was changed\nfrom the callback index: %d messages (%d group in %d groups, %d one-to-one with %d peers); about %.0f s at the cap\n",
			tally.Count(), counts.GroupMessages, counts.Groups, counts.C2CMessages, counts.Peers,
			estimateSeconds((counts.GroupMessages+9)/10, counts.C2CMessages))
		fmt.Fprintln(cmd.OutOrStdout())
		scope.WriteText(cmd.OutOrStdout())
		return true, nil
	}
	if n := tally.Count(); n > f.confirmAbove && !f.yes {
		if err := confirm(cmd, fmt.Sprintf("About to recall %d messages of %s found in the callback index.", n, user)); err != nil {
			return true, err
		}
	}
	return true, createAndPlan(cmd, &f.recallFlags, c, "purge:user", params, func(ctx context.Context, job jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
		if err := c.store.SaveCoverage(ctx, job.ID, scope); err != nil {
			return err
		}
		if err := check.Replay(ctx, b); err != nil {
			return err
		}
		return c.store.AddRefused(ctx, job.ID, jobs.RefusedSenderUnconfirmed, int64(check.Refused))
	})
}

func describeSince(c msgindex.Coverage) string {
	if c.Since.IsZero() {
		return "nowhere (it has recorded nothing)"
	}
	return c.Since.Format(time.RFC3339)
}
