package main

import (
	"strings"
	"testing"
)

// TestScheduleReasonHelpSaysWhatItIs: the --reason of schedule add and
// schedule remove says what it is for there. It said "required for a job,
// not for --dry-run", the recall and purge wording: schedule add refuses a
// dry run without a reason (a schedule needs one), and schedule remove has
// neither a job nor a dry run.
func TestScheduleReasonHelpSaysWhatItIs(t *testing.T) {
	for _, c := range []struct {
		path []string
		want string
	}{
		{[]string{"schedule", "add"}, "with --dry-run too"},
		{[]string{"schedule", "remove"}, "why it is removed"},
	} {
		cmd, _, err := newRootCmd().Find(c.path)
		if err != nil {
			t.Fatal(err)
		}
		usage := cmd.Flags().Lookup("reason").Usage
		if strings.Contains(usage, "not for --dry-run") || !strings.Contains(usage, c.want) {
			t.Errorf("%s --reason: %q, want it to say %q", strings.Join(c.path, " "), usage, c.want)
		}
	}
}
