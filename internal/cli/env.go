package cli

import (
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// EnvPrefix is the prefix of every environment variable imrecall reads.
const EnvPrefix = "IMRECALL_"

// EnvName is the environment variable for a flag: --api-base → IMRECALL_API_BASE.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ApplyEnv sets every flag of cmd that was not given on the command line from
// its IMRECALL_* variable, if set. Flags beat the environment, which beats
// defaults. An unparsable value is an error naming the variable.
func ApplyEnv(cmd *cobra.Command) error {
	var firstErr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if firstErr != nil || f.Changed || f.Name == "help" {
			return
		}
		v, ok := os.LookupEnv(EnvName(f.Name))
		if !ok {
			return
		}
		if err := f.Value.Set(v); err != nil {
			firstErr = BadInput("%s=%q: %v", EnvName(f.Name), v, err)
		}
	})
	return firstErr
}

// SecretFrom returns a secret given directly (flag or environment), or read
// from a file. The value itself never appears in errors.
func SecretFrom(value, file, what string) (string, error) {
	if value != "" && file != "" {
		return "", BadInput("%s: give either the value or a file, not both", what)
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", BadInput("%s: reading %s: %v", what, file, err)
		}
		value = strings.TrimSpace(string(b))
		if value == "" {
			return "", BadInput("%s: file %s is empty", what, file)
		}
	}
	return value, nil
}

// ParseInt64List parses "1,2,3" into numbers, naming the bad element.
func ParseInt64List(flag, s string) ([]int64, error) {
	var out []int64
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.ParseInt(part, 10, 64)
		if err != nil {
			return nil, BadInput("--%s: element %d %q is not a whole number", flag, i+1, part)
		}
		out = append(out, n)
	}
	return out, nil
}

// WithEnv makes run a command's RunE that first sets the flags not given on
// the command line from the IMRECALL_* environment (ApplyEnv).
func WithEnv(run func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := ApplyEnv(cmd); err != nil {
			return err
		}
		return run(cmd, args)
	}
}

// Checked is the RunE of a command whose flags validate checks: the
// IMRECALL_* environment first, then the check, then run.
func Checked(validate func() error, run func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return WithEnv(func(cmd *cobra.Command, args []string) error {
		if err := validate(); err != nil {
			return err
		}
		return run(cmd, args)
	})
}
