package main

import (
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix is the prefix of every environment variable imrecall reads.
const envPrefix = "IMRECALL_"

// envName is the environment variable for a flag: --api-base → IMRECALL_API_BASE.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag of cmd that was not given on the command line from
// its IMRECALL_* variable, if set. Flags beat the environment, which beats
// defaults. An unparsable value is an error naming the variable.
func applyEnv(cmd *cobra.Command) error {
	var firstErr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if firstErr != nil || f.Changed || f.Name == "help" {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if err := f.Value.Set(v); err != nil {
			firstErr = badInput("%s=%q: %v", envName(f.Name), v, err)
		}
	})
	return firstErr
}

// secretFrom returns a secret given directly (flag or environment), or read
// from a file. The value itself never appears in errors.
func secretFrom(value, file, what string) (string, error) {
	if value != "" && file != "" {
		return "", badInput("%s: give either the value or a file, not both", what)
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", badInput("%s: reading %s: %v", what, file, err)
		}
		value = strings.TrimSpace(string(b))
		if value == "" {
			return "", badInput("%s: file %s is empty", what, file)
		}
	}
	return value, nil
}

// parseInt64List parses "1,2,3" into numbers, naming the bad element.
func parseInt64List(flag, s string) ([]int64, error) {
	var out []int64
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.ParseInt(part, 10, 64)
		if err != nil {
			return nil, badInput("--%s: element %d %q is not a whole number", flag, i+1, part)
		}
		out = append(out, n)
	}
	return out, nil
}
