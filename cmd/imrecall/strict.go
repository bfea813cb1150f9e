package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// strict makes the command line's mistakes bad input (exit 2, nothing
// changed), as the README says they are: an unknown flag, a flag's bad
// value, a wrong number of arguments. Under recall and purge, which say
// what is recalled, a flag of one value given twice is refused rather than
// the last one silently kept: `purge user --user alice --user bob` purged
// bob alone.
func strict(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var walk func(c *cobra.Command, once bool)
	walk = func(c *cobra.Command, once bool) {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
		if once {
			c.Flags().VisitAll(func(f *pflag.Flag) {
				switch f.Value.Type() {
				case "string", "int", "int64", "duration", "cap":
					f.Value = &onceValue{Value: f.Value}
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub, once || sub.Name() == "recall" || sub.Name() == "purge")
		}
	}
	walk(root, false)
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
