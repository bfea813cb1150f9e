// Command imrecall bulk-recalls Tencent Cloud IM messages through the admin
// REST APIs: producers plan jobs into Redis-backed asynq queues, workers in any
// number of processes share one rate limit per API per app, and every planned
// message ends in exactly one terminal state.
//
// main only wires: each subcommand lives in its own file and turns flags and
// IMRECALL_* environment variables into a validated configuration, then runs.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/imrecall/imrecall/internal/cli"
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "imrecall",
		Short: "Bulk-recall Tencent Cloud IM messages at the API's rate cap",
		Long: `imrecall bulk-recalls (retracts) Tencent Cloud IM messages through the admin REST APIs
(group_msg_recall, admin_msgwithdraw). Producers plan jobs into Redis-backed asynq queues;
workers in any number of processes share one rate limit of 200 calls/s per API per app;
every planned message ends in exactly one terminal state, and a job's report says which.

Settings come from flags, or from IMRECALL_* environment variables (see the README).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newEmulatorCmd(),
		newWorkerCmd(),
		newRecallCmd(),
		newPurgeCmd(),
		newJobsCmd(),
		newDLQCmd(),
		newDemoCmd(),
		newBenchCmd(),
		newScheduleCmd(),
		newSchedulerCmd(),
		newServeCmd(),
		newVerifyCmd(),
		newCertificateCmd(),
	)
	cli.Strict(root, cli.Once{Under: []string{"recall", "purge"}, Secret: []string{"secret-key", "redis"}})
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	os.Exit(cli.ExitCode(err, os.Stderr))
}
