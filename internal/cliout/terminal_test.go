package cliout

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// TestConfirmWithoutTerminal: with no terminal to ask at, Confirm refuses
// without writing the prompt, and says to pass --yes.
func TestConfirmWithoutTerminal(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var errw bytes.Buffer
	err = Confirm(r, &errw, "About to recall 5 messages.")
	var nc *NotConfirmedError
	if !errors.As(err, &nc) || !nc.NoTerminal || errw.Len() != 0 {
		t.Fatalf("Confirm = %v (printed %q), want a NoTerminal refusal", err, errw.String())
	}
	if want := "About to recall 5 messages.: refusing without confirmation; pass --yes to confirm in a script"; err.Error() != want {
		t.Errorf("text %q, want %q", err.Error(), want)
	}
}
