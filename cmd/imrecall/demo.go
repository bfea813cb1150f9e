package main

import (
	"context"
	"errors"
	"os"

	"github.com/imrecall/imrecall/certificate"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/internal/demo"
	"github.com/spf13/cobra"
)

// demoOptions size the demo's synthetic data.
type demoOptions struct {
	groups      int
	messages    int
	heavyGroups int
	peers       int
	c2c         int
	seed        int64
	concurrency int
	asJSON      bool
}

func newDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Purge a spammer from a synthetic app: embedded Redis, the IM emulator, a worker, no set-up",
		Long: `demo runs the main job end to end inside one process, with nothing to set up:
an embedded Redis (miniredis), the Tencent IM emulator seeded with a synthetic app (hundreds of
groups of every type, a spammer active in many of them and in one-to-one chats), a worker, and
"imrecall purge user" of the spammer at the API's cap of 200 calls/s. It shows progress, prints
the job's report, and checks against the emulator that none of the spammer's messages remain.
The same binary pointed at a real Redis and real credentials is the production path.`,
		Example: "  imrecall demo\n  imrecall demo --groups 500 --messages 300000",
		Args:    cobra.NoArgs,
		RunE:    cli.WithEnv(func(cmd *cobra.Command, _ []string) error { return runDemo(cmd.Context(), cmd, o) }),
	}
	fl := cmd.Flags()
	fl.IntVar(&o.groups, "groups", 300, "groups in the synthetic app")
	fl.IntVar(&o.messages, "messages", 150000, "group messages in the synthetic app")
	fl.IntVar(&o.heavyGroups, "spammer-groups", 120, "groups the spammer posts in")
	fl.IntVar(&o.peers, "peers", 25, "one-to-one peers of the spammer")
	fl.IntVar(&o.c2c, "c2c", 5000, "one-to-one messages in the synthetic app")
	fl.Int64Var(&o.seed, "seed", 1, "seed of the synthetic data")
	fl.IntVar(&o.concurrency, "concurrency", 64, "worker concurrency")
	fl.BoolVar(&o.asJSON, "json", false, "print the final report as JSON")
	return cmd
}

// runDemo wires the flags to demo.Run, with this binary's worker runtime,
// report wording and verification printout.
func runDemo(ctx context.Context, cmd *cobra.Command, o demoOptions) error {
	res, err := demo.Run(ctx, demo.Config{
		Groups: o.groups, Messages: o.messages, SpammerGroups: o.heavyGroups, Peers: o.peers, C2C: o.c2c, Seed: o.seed,
		Concurrency: o.concurrency, JSON: o.asJSON, Out: cmd.OutOrStdout(), Progress: cmd.ErrOrStderr(), Terminal: cliout.IsTerminal(os.Stderr),
		StartWorker: demo.InProcessWorker, Describe: cliout.DescribeCode, Version: certificate.BuildVersion(),
		WriteVerification: cliout.Verification,
	})
	var failed demo.CheckFailed
	if errors.As(err, &failed) {
		return cli.Exit(cli.ExitFailure, failed.Error())
	}
	if err != nil {
		return err
	}
	return verificationExit(res.Verification)
}
