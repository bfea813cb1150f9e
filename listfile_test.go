package imrecall_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/imrecalltest"
	"github.com/imrecall/imrecall/jobs"
)

// TestListFilePlannedAsChecked: a list file is read once; the job plans
// the bytes that were checked and confirmed, not the file as it is later.
// While the confirmation is asked, 50 more messages and then a bad line
// are appended (a log still written): the job recalls the 3 it was asked
// about. A list read from a pipe (which cannot be read twice) is planned
// in full. A directory is bad input naming the file. No spool is left.
// A helper's attack reproduced each: 53 recalled after confirming 3, a
// bad line found after 20 recalls, a pipe planned as 0 messages and done.
func TestListFilePlannedAsChecked(t *testing.T) {
	spools := t.TempDir()
	t.Setenv("TMPDIR", spools)
	env := imrecalltest.Start(t, imrecalltest.Options{})
	ctx := t.Context()
	c, err := imrecall.New(imrecall.Config{Redis: env.Redis, Queue: env.Queue, AppID: imrecalltest.AppID, IM: env.Client, ConfirmAbove: 2})
	if err != nil {
		t.Fatal(err)
	}
	env.IM.Accounts(t, "spammer", "bob")
	g := env.IM.Group(t, "Public", "@TGS#list", "spammer", "bob")
	seqs := env.IM.SendGroup(t, g, "", 60, "spammer")
	line := func(seq int64) string { return fmt.Sprintf(`{"GroupId":%q,"MsgSeq":%d}`+"\n", g, seq) }
	dir := t.TempDir()

	path := filepath.Join(dir, "growing.jsonl")
	if err := os.WriteFile(path, []byte(line(seqs[0])+line(seqs[1])+line(seqs[2])), 0o600); err != nil {
		t.Fatal(err)
	}
	asked := int64(0)
	created, err := c.Create(ctx, imrecall.ListRecall{File: path}, imrecall.CreateOptions{Actor: "oncall", Reason: "spam wave",
		Confirm: func(_ context.Context, need *imrecall.ConfirmationRequired) error {
			asked = need.Messages
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			for _, s := range seqs[3:53] {
				_, _ = f.WriteString(line(s))
			}
			_, err = f.WriteString(`{"GroupId":"g","MsgSeq":0}` + "\n")
			return err
		}})
	if err != nil || asked != 3 {
		t.Fatalf("Create = %v (asked about %d messages, want 3)", err, asked)
	}
	if j := env.RequireOutcome(t, created.Job.ID, imrecalltest.Outcome{Status: jobs.StatusDone, Recalled: 3}); j.Counts.Planned != 3 {
		t.Fatalf("planned %d, want the 3 confirmed", j.Counts.Planned)
	}
	recalled := 0
	for _, m := range env.IM.Emu.GroupMessages(g, "") {
		if m.Recalled {
			recalled++
		}
	}
	if recalled != 3 {
		t.Fatalf("%d messages recalled, want the 3 confirmed", recalled)
	}

	if _, err := os.Stat("/proc/self/fd"); err == nil {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer w.Close()
			for _, s := range seqs[53:] {
				_, _ = w.WriteString(line(s))
			}
		}()
		piped, err := c.Create(ctx, imrecall.ListRecall{File: fmt.Sprintf("/proc/self/fd/%d", r.Fd())}, imrecall.CreateOptions{Actor: "oncall", Reason: "spam wave", Confirmed: true})
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if j := env.RequireOutcome(t, piped.Job.ID, imrecalltest.Outcome{Status: jobs.StatusDone, Recalled: 7}); j.Counts.Planned != 7 {
			t.Fatalf("planned %d of a piped list of 7", j.Counts.Planned)
		}
	}

	var fe *imrecall.FieldError
	if _, err := c.Plan(ctx, imrecall.ListRecall{File: dir}); !errors.As(err, &fe) || fe.Field != "file" || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Plan of a directory = %v, want a *FieldError for file naming it", err)
	}
	if left, _ := filepath.Glob(filepath.Join(spools, "imrecall-list-*")); len(left) != 0 {
		t.Fatalf("spools left behind: %v", left)
	}
}
