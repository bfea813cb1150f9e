package worker

import (
	"context"
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// raceAhead is an IM through which another delivery of the same task,
// whose call is already in flight, lands just before this delivery's
// recall call: ahead runs once, before the first RecallGroup.
type raceAhead struct {
	TIM
	ahead func(ctx context.Context)
}

func (r *raceAhead) RecallGroup(ctx context.Context, group, topic string, seqs []int64) (map[int64]int, error) {
	if r.ahead != nil {
		r.ahead(ctx)
		r.ahead = nil
	}
	return r.TIM.RecallGroup(ctx, group, topic, seqs)
}

// TestConcurrentDeliveryIsNotDeadLetteredAsNotFound: two deliveries of the
// same task run at once (asynq is at least once: a task recovered while
// its first delivery still runs). Delivery A has counted its send and its
// call is in flight; delivery B sees that send unanswered, reads the
// history (not recalled yet) and calls; A's call lands first and B is
// answered 10030. B must not record the message as a "not found" dead
// letter ahead of A's outcome: this job recalled it.
func TestConcurrentDeliveryIsNotDeadLetteredAsNotFound(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{})
	g, target := b.plannedGroup(t, "@TGS#race", 1)
	// A counts its send; its call is in flight.
	if _, err := b.store.BeginGroup(t.Context(), b.job.ID, target, []int64{1}); err != nil {
		t.Fatal(err)
	}
	im := &raceAhead{TIM: TIM{C: b.env.Client}}
	im.ahead = func(ctx context.Context) {
		// A's call reaches the server before B's; A has not recorded yet.
		if _, err := b.env.Client.RecallGroup(ctx, g, "", []int64{1}); err != nil {
			t.Error(err)
		}
	}
	b.h = New(im, b.store, b.h.cfg)
	b.runThenRecordA(t, target)
}

// runThenRecordA runs delivery B of seq 1 of target, then records delivery
// A's answer (recalled), and checks that the job counts the message
// recalled, once, and nothing dead-lettered.
func (b *bundle) runThenRecordA(t *testing.T, target jobs.Target) {
	t.Helper()
	if err := b.runGroup(t, target, []int64{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Record(t.Context(), b.job.ID, target, []jobs.Outcome{{Item: "1", Recalled: true, Attempts: 1}}); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	if j.Counts.Recalled != 1 || j.Counts.DeadLettered != 0 {
		t.Fatalf("counts %+v: the job recalled the message, but it is recorded as %v", j.Counts, j.Counts.DeadByCode)
	}
}

// rivalLimiter lets every call go at once, and runs rival once, on the
// first reservation: between this delivery's look at its messages and the
// send it counts.
type rivalLimiter struct{ rival func(ctx context.Context) }

func (r *rivalLimiter) Reserve(ctx context.Context, _ string) (tim.Slot, error) {
	if r.rival != nil {
		r.rival(ctx)
		r.rival = nil
	}
	return noLimit{}, nil
}

// TestRivalSendAfterThePeekIsInDoubt is the other order: both deliveries
// find the message fresh; A counts its send and its call lands while B
// waits for its slot; B's call is answered 10030. B's count of the send
// shows A's, so B checks the history instead of recording "not found"
// ahead of A's "recalled".
func TestRivalSendAfterThePeekIsInDoubt(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{})
	g, target := b.plannedGroup(t, "@TGS#rival", 1)
	lim := &rivalLimiter{rival: func(ctx context.Context) {
		if _, err := b.store.BeginGroup(ctx, b.job.ID, target, []int64{1}); err != nil {
			t.Error(err)
		}
		if _, err := b.env.Client.RecallGroup(ctx, g, "", []int64{1}); err != nil {
			t.Error(err)
		}
	}}
	cfg := b.h.cfg
	cfg.Limiter = lim
	b.h = New(TIM{C: b.env.Client}, b.store, cfg)
	b.runThenRecordA(t, target)
}
