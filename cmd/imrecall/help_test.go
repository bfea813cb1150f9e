package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestEveryCommandHasHelpWithExamples: every runnable command (not a group
// of subcommands, which runs only to print its help) documents
// itself with a short line and at least one example, and every flag has a
// usage text.
func TestEveryCommandHasHelpWithExamples(t *testing.T) {
	var visit func(c *cobra.Command)
	n := 0
	visit = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			visit(sub)
		}
		if c.Hidden || !c.Runnable() || c.HasSubCommands() || c.Name() == "help" || c.Name() == "completion" || c.HasParent() && c.Parent().Name() == "completion" {
			return
		}
		n++
		if strings.TrimSpace(c.Short) == "" {
			t.Errorf("%s: no short help", c.CommandPath())
		}
		if !strings.Contains(c.Example, "imrecall ") {
			t.Errorf("%s: no example", c.CommandPath())
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if strings.TrimSpace(f.Usage) == "" {
				t.Errorf("%s --%s: no usage text", c.CommandPath(), f.Name)
			}
		})
	}
	visit(newRootCmd())
	if n < 25 {
		t.Fatalf("only %d commands visited", n)
	}
}
