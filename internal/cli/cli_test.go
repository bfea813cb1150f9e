package cli

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestStrict: under Once.Under a flag of one value given twice is refused
// naming the first value, except a secret's, whose refusal would print it;
// elsewhere the last one is kept as pflag does. A mistyped subcommand and
// a wrong argument count are bad input.
func TestStrict(t *testing.T) {
	var user, key, other string
	root := &cobra.Command{Use: "imrecall", SilenceErrors: true, SilenceUsage: true}
	purge := &cobra.Command{Use: "purge"}
	purgeUser := &cobra.Command{Use: "user", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	purgeUser.Flags().StringVar(&user, "user", "", "")
	purgeUser.Flags().StringVar(&key, "secret-key", "", "")
	jobs := &cobra.Command{Use: "jobs", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	jobs.Flags().StringVar(&other, "state", "", "")
	purge.AddCommand(purgeUser)
	root.AddCommand(purge, jobs)
	Strict(root, Once{Under: []string{"purge"}, Secret: []string{"secret-key"}})

	run := func(args ...string) error {
		root.SetArgs(args)
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		return root.Execute()
	}
	var ue UsageError
	if err := run("purge", "user", "--user", "alice", "--user", "bob"); !errors.As(err, &ue) || !strings.Contains(err.Error(), `"alice"`) {
		t.Errorf("--user twice under purge: %v, want a usage error naming alice", err)
	}
	if err := run("purge", "user", "--secret-key", "s3cr3t-one", "--secret-key", "s3cr3t-two"); err != nil || key != "s3cr3t-two" {
		t.Errorf("--secret-key twice: %v, key %q; want accepted, the last kept", err, key)
	}
	if err := run("jobs", "--state", "a", "--state", "b"); err != nil || other != "b" {
		t.Errorf("--state twice outside purge: %v, %q; want the last kept", err, other)
	}
	for _, args := range [][]string{{"purge", "usr"}, {"purge", "user", "extra"}, {"jobs", "--nope"}} {
		if err := run(args...); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}

// TestExitCode: each kind of error exits with its documented code, and
// what it says is printed once.
func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		err     error
		code    int
		printed string
	}{
		{nil, ExitOK, ""},
		{errors.New("redis down"), ExitFailure, "imrecall: redis down\n"},
		{fmt.Errorf("reading: %w", BadInput("--seqs: element %d %q is not a whole number", 2, "x")), ExitBadInput, "imrecall: reading: --seqs: element 2 \"x\" is not a whole number\n"},
		{Exit(ExitDeadLetter, "job j done: 3 dead letters need attention"), ExitDeadLetter, "job j done: 3 dead letters need attention\n"},
		{fmt.Errorf("wrapped: %w", Exit(ExitNotErased, "")), ExitNotErased, ""},
	} {
		var out bytes.Buffer
		if got := ExitCode(c.err, &out); got != c.code || out.String() != c.printed {
			t.Errorf("ExitCode(%v) = %d printing %q, want %d printing %q", c.err, got, out.String(), c.code, c.printed)
		}
	}
}

// TestApplyEnv: a flag not given takes its IMRECALL_* variable; a given
// one keeps its value; a bad value names the variable.
func TestApplyEnv(t *testing.T) {
	var rate, burst int
	cmd := &cobra.Command{Use: "x"}
	cmd.Flags().IntVar(&rate, "confirm-rate", 5, "")
	cmd.Flags().IntVar(&burst, "burst", 1, "")
	if err := cmd.ParseFlags([]string{"--burst", "3"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IMRECALL_CONFIRM_RATE", "7")
	t.Setenv("IMRECALL_BURST", "9")
	if err := ApplyEnv(cmd); err != nil || rate != 7 || burst != 3 {
		t.Fatalf("ApplyEnv: %v, rate %d burst %d; want 7 and 3", err, rate, burst)
	}
	cmd.Flags().Lookup("confirm-rate").Changed = false
	t.Setenv("IMRECALL_CONFIRM_RATE", "fast")
	var ue UsageError
	if err := ApplyEnv(cmd); !errors.As(err, &ue) || !strings.Contains(err.Error(), `IMRECALL_CONFIRM_RATE="fast"`) {
		t.Errorf("bad value: %v, want a usage error naming IMRECALL_CONFIRM_RATE", err)
	}
}
