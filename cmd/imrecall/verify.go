package main

import (
	"log/slog"

	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/verify"
	"github.com/spf13/cobra"
)

// historyFlags are the flags of a command that re-reads the IM histories of
// an existing job: Redis, the IM client and the shared limiter.
type historyFlags struct {
	imCallFlags
	actor       string
	concurrency int
}

func (f *historyFlags) register(cmd *cobra.Command) {
	f.imCallFlags.register(cmd)
	cmd.Flags().StringVar(&f.actor, "actor", cliout.DefaultActor(), "who asks (recorded in the audit log)")
	cmd.Flags().IntVar(&f.concurrency, "concurrency", 8, "histories read at once (the limiter still caps the calls)")
}

// open connects to Redis and builds an IM client gated by the shared limiter
// (the IMRECALL_* environment is applied by the command's cli.WithEnv).
func (f *historyFlags) open(cmd *cobra.Command) (*conn, *tim.Client, *slog.Logger, error) {
	if f.concurrency < 1 {
		return nil, nil, nil, cli.BadInput("--concurrency %d: want 1 or more", f.concurrency)
	}
	log, err := f.logs.logger(cmd.ErrOrStderr())
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := f.im.config(log)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := f.redis.connect(cmd.Context())
	if err != nil {
		return nil, nil, nil, err
	}
	im, _, err := f.limits.imClient(cmd.Context(), c, f.redis.prefix, cfg, log, nil, false)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	return c, im, log, nil
}

// verification is what `imrecall verify --json` prints and what is kept
// with the job (verify.JobResult).
type verification = verify.JobResult

func newVerifyCmd() *cobra.Command {
	var f historyFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify JOB",
		Short: "Re-read the job's histories: is every planned message gone, and did the purge miss any?",
		Long: `Re-reads every target of the job through the shared limiter (group_msg_get_simple with
WithRecalledMsg, admin_getroammsg with MsgFlagBits) and classifies each planned message:
recalled and verified, gone (expired or deleted), or still visible. For a purge it also re-runs
discovery over the job's scope as a dry run: visible messages of the subject that the job did not
plan (sent after discovery, or missed) are the residue.

Exit 0 when nothing is still visible and there is no residue; exit 5 otherwise.`,
		Example: `  imrecall verify 20261122T230512Z-9f3a1c2b
  imrecall verify 20261122T230512Z-9f3a1c2b --json | jq '.still_visible, .residue'`,
		Args: cobra.ExactArgs(1),
		RunE: cli.WithEnv(func(cmd *cobra.Command, args []string) error {
			if err := jobs.ValidID(args[0]); err != nil {
				return cli.Usage(err)
			}
			c, im, _, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			job, err := c.store.Get(cmd.Context(), args[0])
			if err != nil {
				return cliError(err)
			}
			v, err := verify.RunJob(cmd.Context(), c.store, im, job, verify.JobOptions{Actor: f.actor, Concurrency: f.concurrency})
			if err != nil {
				return err
			}
			if asJSON {
				if err := cliout.JSON(cmd.OutOrStdout(), v); err != nil {
					return err
				}
			} else {
				cliout.Verification(cmd.OutOrStdout(), v)
			}
			return verificationExit(v)
		}),
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (verified, gone, still_visible, residue, …)")
	return cmd
}

func verificationExit(v verification) error {
	if v.Passed {
		return nil
	}
	return cli.Exit(cli.ExitNotErased, "job "+v.JobID+": "+cliout.VerificationVerdict(v))
}
