package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Once says where a flag of one value may be given only once.
type Once struct {
	// Under names the commands (with all below them) whose flags of one
	// value are refused when given twice, rather than the last one
	// silently kept: imrecall's recall and purge, which say what is
	// recalled (`purge user --user alice --user bob` purged bob alone).
	Under []string
	// Secret names the flags whose value may be a secret (the SecretKey, a
	// Redis URL's password): pflag prints the value of a flag it refuses,
	// so these are never refused for being given twice.
	Secret []string
}

// Strict makes the command line's mistakes bad input (ExitBadInput, nothing
// changed), as the README says they are: an unknown flag, a flag's bad
// value, a wrong number of arguments, an unknown subcommand, and under
// once.Under a flag of one value given twice.
func Strict(root *cobra.Command, once Once) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return Usage(err) })
	var walk func(c *cobra.Command, setOnce bool)
	walk = func(c *cobra.Command, setOnce bool) {
		if c.HasSubCommands() && !c.Runnable() {
			// A group: cobra would print its help and exit 0 for a
			// mistyped subcommand (imrecall recall grup), and exit 1
			// under the root. Named alone, it still prints its help.
			c.Args = unknownSubcommand
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		} else if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return Usage(err)
				}
				return nil
			}
		}
		if setOnce {
			c.Flags().VisitAll(func(f *pflag.Flag) {
				if slices.Contains(once.Secret, f.Name) {
					return // a refusal would print both values
				}
				switch f.Value.Type() {
				case "string", "int", "int64", "float64", "duration", "cap":
					f.Value = &onceValue{Value: f.Value}
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub, setOnce || slices.Contains(once.Under, sub.Name()))
		}
	}
	walk(root, false)
}

// unknownSubcommand refuses any argument of a command that only holds
// subcommands: it names no subcommand of it.
func unknownSubcommand(cmd *cobra.Command, a []string) error {
	if len(a) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", a[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(a[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
	}
	return Usage(errors.New(msg))
}

// onceValue is a flag's value that may be set once (by the command line or
// the environment).
type onceValue struct {
	pflag.Value
	set   bool
	first string
}

func (v *onceValue) Set(s string) error {
	if v.set {
		return fmt.Errorf("given twice (first %q): a flag of one value takes one", v.first)
	}
	v.set, v.first = true, s
	return v.Value.Set(s)
}
