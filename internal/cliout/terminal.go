package cliout

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/jobs"
	"golang.org/x/term"
)

// DefaultActor is who runs the CLI, USER@HOST: the default of --actor.
func DefaultActor() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	if name == "" {
		name = "unknown"
	}
	if host != "" {
		return name + "@" + host
	}
	return name
}

// IsTerminal reports whether f is an interactive terminal.
func IsTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// NotConfirmedError is Confirm's refusal: NoTerminal when there was no
// terminal to ask at (scripts pass --yes), otherwise the person did not
// type yes. Nothing was changed either way.
type NotConfirmedError struct {
	Prompt     string
	NoTerminal bool
}

func (e *NotConfirmedError) Error() string {
	if e.NoTerminal {
		return e.Prompt + ": refusing without confirmation; pass --yes to confirm in a script"
	}
	return "not confirmed; nothing was changed"
}

// Confirm asks the person at the terminal in to type yes, writing prompt
// to errw. Without a terminal it refuses.
func Confirm(in *os.File, errw io.Writer, prompt string) error {
	if !IsTerminal(in) {
		return &NotConfirmedError{Prompt: prompt, NoTerminal: true}
	}
	fmt.Fprintf(errw, "%s\nRecalled messages cannot be restored. Type yes to go on: ", prompt)
	line, _ := bufio.NewReader(in).ReadString('\n')
	if strings.TrimSpace(strings.ToLower(line)) != "yes" {
		return &NotConfirmedError{Prompt: prompt}
	}
	return nil
}

// WaitJob follows job id until it has finished, showing progress on errw:
// a bar on a terminal (tty), otherwise a log line every few seconds.
func WaitJob(ctx context.Context, errw io.Writer, tty bool, client *imrecall.Client, id string) (jobs.Job, error) {
	p := NewProgress(errw, id, tty)
	j, err := client.Wait(ctx, id, p.Update)
	if err == nil {
		p.Finish()
	}
	return j, err
}

// NeedsAttention counts j's dead letters whose code needs a person
// (jobs.NeedsAttention).
func NeedsAttention(j jobs.Job) int64 {
	needs := int64(0)
	for code, n := range j.Counts.DeadByCode {
		if jobs.CategoryOf(code) == jobs.NeedsAttention {
			needs += n
		}
	}
	return needs
}
