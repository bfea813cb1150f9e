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
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes, documented in the README.
const (
	exitOK         = 0 // success; for jobs: every message recalled, or already gone (20023, 10030, 20022)
	exitFailure    = 1 // the command failed
	exitBadInput   = 2 // bad flags, arguments or input files; nothing was changed
	exitDeadLetter = 3 // the job finished, but some dead letters need attention
	exitCancelled  = 4 // the job was cancelled
	// exitNotErased (5, verify.go): messages of the job remain visible
)

// usageError marks an error caused by bad input, so main exits with exitBadInput.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// badInput wraps err as a usage error.
func badInput(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitCodeError carries an exit code that is not a failure, such as "done with
// dead letters".
type exitCodeError struct {
	code int
	msg  string
}

func (e exitCodeError) Error() string { return e.msg }

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
	strict(root)
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err))
}

// exitCode turns an error into the process exit code and prints it.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ec exitCodeError
	if errors.As(err, &ec) {
		if ec.msg != "" {
			fmt.Fprintln(os.Stderr, ec.msg)
		}
		return ec.code
	}
	fmt.Fprintln(os.Stderr, "imrecall:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitBadInput
	}
	return exitFailure
}

// group is a command that only holds subcommands.
func group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Long: long}
	cmd.AddCommand(subs...)
	return cmd
}
