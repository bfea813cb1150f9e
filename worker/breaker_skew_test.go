package worker

import (
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
)

// TestResumeFromASlowClockLetsTheJobTryAgain: IM refused the caller's IP
// (60021, app-wide): the job paused and the worker's breaker opened. A
// person allowed the IP in the IM console (no worker restart) and resumed
// the job from a host whose clock is a minute behind the worker's. The
// resume must let the job try again; it was re-paused without a call,
// because the resume's time (the resuming host's clock) was compared with
// the breaker's (the worker's clock).
func TestResumeFromASlowClockLetsTheJobTryAgain(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{})
	_, target := b.plannedGroup(t, "@TGS#skew", 3)
	b.env.Emu.SetFaults(emulator.Faults{Codes: map[int]float64{60021: 1}})
	if err := b.runGroup(t, target, imtest.Seqs(1, 3)); err != nil {
		t.Fatal(err)
	}
	if j := b.counts(t); !j.Paused {
		t.Fatalf("after 60021: %+v, want paused", j)
	}
	b.env.Emu.SetFaults(emulator.Faults{}) // the IP is allowed now
	time.Sleep(50 * time.Millisecond)      // a person reads the reason and acts
	// The resume, from a host whose clock is a minute behind.
	if err := b.store.SetPaused(t.Context(), b.job.ID, "ops", "", false); err != nil {
		t.Fatal(err)
	}
	key := b.store.Prefix() + ":job:{" + b.job.ID + "}"
	if err := b.rdb.HSet(t.Context(), key, "resumed_at", time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.runGroup(t, target, imtest.Seqs(1, 3)); err != nil {
		t.Fatal(err)
	}
	if j := b.counts(t); j.Paused || j.Counts.Recalled != 3 || j.Status != jobs.StatusDone {
		t.Fatalf("after the resume: %s paused=%v %q %+v, want done with 3 recalled", j.Status, j.Paused, j.PauseReason, j.Counts)
	}
}
