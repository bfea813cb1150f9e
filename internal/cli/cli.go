// Package cli holds the conventions of the imrecall command line that are
// not any one command's: the exit codes the README documents, what counts as
// bad input, the IMRECALL_* environment, and a parser that refuses what it
// would otherwise guess at. cmd/imrecall wires its commands with it.
package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// Exit codes, documented in the README.
const (
	ExitOK         = 0 // success; for jobs: every message recalled, or already gone (20023, 10030, 20022)
	ExitFailure    = 1 // the command failed
	ExitBadInput   = 2 // bad flags, arguments or input files; nothing was changed
	ExitDeadLetter = 3 // the job finished, but some dead letters need attention
	ExitCancelled  = 4 // the job was cancelled
	ExitNotErased  = 5 // verify, certificate: messages of the job remain visible (still visible planned messages, or residue)
)

// UsageError marks an error caused by bad input: the command exits with
// ExitBadInput.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usage marks err as bad input.
func Usage(err error) error { return UsageError{Err: err} }

// BadInput is a usage error worded as fmt.Errorf words it.
func BadInput(format string, args ...any) error {
	return UsageError{Err: fmt.Errorf(format, args...)}
}

// ExitError carries an exit code and what to print, such as "done with
// dead letters" (ExitDeadLetter).
type ExitError struct {
	Code int
	Msg  string
}

func (e ExitError) Error() string { return e.Msg }

// Exit is an ExitError.
func Exit(code int, msg string) error { return ExitError{Code: code, Msg: msg} }

// ExitCode prints err to stderr and returns the process's exit code: an
// ExitError's own, ExitBadInput for a UsageError, ExitFailure otherwise.
func ExitCode(err error, stderr io.Writer) int {
	if err == nil {
		return ExitOK
	}
	var ec ExitError
	if errors.As(err, &ec) {
		if ec.Msg != "" {
			fmt.Fprintln(stderr, ec.Msg)
		}
		return ec.Code
	}
	fmt.Fprintln(stderr, "imrecall:", err)
	var ue UsageError
	if errors.As(err, &ue) {
		return ExitBadInput
	}
	return ExitFailure
}

// Group is a command that only holds subcommands.
func Group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Long: long}
	cmd.AddCommand(subs...)
	return cmd
}
