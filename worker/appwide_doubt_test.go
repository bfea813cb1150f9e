package worker

import (
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// A message whose earlier call went unanswered (it may have recalled it)
// and whose next call met an app-wide code stays in doubt through the
// pause: once resumed, the 20023 its call meets is the lost call's recall
// (counted recalled, attribution unknown), not a message gone before the job.
func TestAppWideCodeKeepsAnEarlierLostAnswerInDoubt(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{})
	key, _ := b.lostWithdraw(t)

	// The next delivery's call meets an app-wide code: the job pauses.
	b.env.Emu.SetFaults(emulator.Faults{Codes: map[int]float64{10041: 1}})
	if err := b.runC2C(t, "alice", "bob", key); err != nil && IsFailure(err) {
		t.Fatal(err)
	}
	if j := b.counts(t); !j.Paused || j.Counts.Pending != 1 {
		t.Fatalf("after the app-wide code: %+v, paused %v", j.Counts, j.Paused)
	}

	// Fixed and resumed: the message is found withdrawn (20023).
	b.env.Emu.SetFaults(emulator.Faults{})
	if err := b.store.SetPaused(t.Context(), b.job.ID, "t", "", false); err != nil {
		t.Fatal(err)
	}
	if err := b.runC2C(t, "alice", "bob", key); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	if j.Counts.Recalled != 1 || j.Counts.RecalledUnattributed != 1 || j.Counts.DeadLettered != 0 {
		t.Fatalf("job = %+v: the lost call's recall was taken for a message gone before the job", j.Counts)
	}
}

// A message in doubt (an earlier call went unanswered) whose retries are
// spent on transient codes is dead-lettered with its last code; re-queued,
// it goes back in doubt, so that the 20023 its next call meets is taken for
// the lost call's recall, not for a message gone before the job.
func TestRequeuedDeadLetterInDoubtIsCheckedAgain(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{MaxAttempts: 2})
	key, target := b.lostWithdraw(t)

	b.env.Emu.SetFaults(emulator.Faults{Codes: map[int]float64{10002: 1}})
	if err := b.runC2C(t, "alice", "bob", key); err != nil {
		t.Fatal(err)
	}
	if j := b.counts(t); j.Counts.DeadByCode["10002"] != 1 {
		t.Fatalf("after the retries: %+v", j.Counts)
	}

	b.env.Emu.SetFaults(emulator.Faults{})
	if moved, err := b.store.Requeue(t.Context(), b.job.ID, target, []string{key}); err != nil || len(moved) != 1 {
		t.Fatalf("requeue: %v %v", moved, err)
	}
	if err := b.runC2C(t, "alice", "bob", key); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	if j.Counts.Recalled != 1 || j.Counts.RecalledUnattributed != 1 || j.Counts.DeadLettered != 0 {
		t.Fatalf("job = %+v: the lost call's recall was taken for a message gone before the job", j.Counts)
	}
}

// lostWithdraw plans one message from alice to bob, and plays an earlier
// delivery that counted its send and whose call withdrew the message, the
// worker dying before it heard the answer.
func (b *bundle) lostWithdraw(t *testing.T) (string, jobs.Target) {
	t.Helper()
	key, target := b.plannedC2C(t)
	if _, err := b.store.BeginC2C(t.Context(), b.job.ID, target, key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.env.Client.AdminMsgWithdraw(t.Context(), tim.AdminMsgWithdrawRequest{FromAccount: "alice", ToAccount: "bob", MsgKey: key}); err != nil {
		t.Fatal(err)
	}
	return key, target
}

// A cancelled job's message whose earlier call went unanswered is
// dead-lettered cancelled without a call, and its dead letter says it is in
// doubt: the lost call may have recalled it.
func TestCancelledDeadLetterSaysItIsInDoubt(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{})
	key, _ := b.lostWithdraw(t)
	if _, err := b.store.Cancel(t.Context(), b.job.ID, "t", "test"); err != nil {
		t.Fatal(err)
	}
	if err := b.runC2C(t, "alice", "bob", key); err != nil {
		t.Fatal(err)
	}
	if st := b.env.Emu.Stats()[tim.AdminMsgWithdraw.Name()]; st.Calls != 1 {
		t.Fatalf("%d withdraw calls, want only the lost one", st.Calls)
	}
	var dls []jobs.DeadLetter
	if err := b.store.DeadLetters(t.Context(), b.job.ID, func(d jobs.DeadLetter) error { dls = append(dls, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].Code != jobs.CodeCancelled || !dls[0].InDoubt {
		t.Fatalf("dead letters %+v, want one cancelled, in doubt", dls)
	}
}
