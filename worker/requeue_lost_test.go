package worker

import (
	"context"
	"strconv"
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// lostAnswers is an IM whose recall calls reach the server (which recalls)
// but whose answers are lost while lose is set: every call ends in a
// timeout, as when the network drops the response.
type lostAnswers struct {
	TIM
	lose    bool
	offline bool // the calls time out before they reach the server
}

func (l *lostAnswers) RecallGroup(ctx context.Context, group, topic string, seqs []int64) (map[int64]int, error) {
	if l.offline {
		return nil, &tim.Error{API: tim.GroupMsgRecall.Name(), Err: context.DeadlineExceeded}
	}
	codes, err := l.TIM.RecallGroup(ctx, group, topic, seqs)
	if l.lose {
		return nil, &tim.Error{API: tim.GroupMsgRecall.Name(), Err: context.DeadlineExceeded}
	}
	return codes, err
}

func (l *lostAnswers) Withdraw(ctx context.Context, from, to, key string) error {
	err := l.TIM.Withdraw(ctx, from, to, key)
	if l.lose {
		return &tim.Error{API: tim.AdminMsgWithdraw.Name(), Err: context.DeadlineExceeded}
	}
	return err
}

// TestRequeuedTimeoutIsCheckedAgainstTheHistory: every call for a message
// timed out, but the first one recalled it on the server. The message ends
// a timeout dead letter (its attempts spent); re-queued once the network is
// back, it must be counted recalled (attribution unknown), as a lost answer
// is, not dead-lettered as "not found" (which says: gone before the job;
// for a one-to-one message, 20023 "already recalled").
func TestRequeuedTimeoutIsCheckedAgainstTheHistory(t *testing.T) {
	for _, kind := range []string{"group", "c2c"} {
		t.Run(kind, func(t *testing.T) {
			b := setup(t, emulator.Config{}, Config{MaxAttempts: 2})
			im := &lostAnswers{TIM: TIM{C: b.env.Client}, lose: true}
			b.h = New(im, b.store, b.h.cfg)
			var target jobs.Target
			var items []string
			var run func() error
			if kind == "group" {
				_, target = b.plannedGroup(t, "@TGS#lost", 3)
				items = []string{"1", "2", "3"}
				run = func() error { return b.runGroup(t, target, imtest.Seqs(1, 3)) }
			} else {
				b.env.Accounts(t, "alice", "bob")
				items = b.env.SendC2C(t, "alice", "bob", 1)
				target = jobs.Target{From: "alice", To: "bob"}
				if _, err := b.store.PlanC2C(t.Context(), b.job.ID, target, items); err != nil {
					t.Fatal(err)
				}
				b.close(t)
				run = func() error { return b.runC2C(t, "alice", "bob", items[0]) }
			}
			n := int64(len(items))
			if err := run(); err != nil {
				t.Fatal(err)
			}
			if j := b.counts(t); j.Counts.DeadLettered != n || j.Counts.DeadByCode[jobs.CodeTimeout] != n {
				t.Fatalf("after the timeouts: %+v", j.Counts)
			}
			if kind == "group" {
				if got := len(recalledSeqs(t, b.env, target.GroupID)); got != 3 {
					t.Fatalf("the server recalled %d of 3", got)
				}
			}
			im.lose = false
			if _, err := b.store.Requeue(t.Context(), b.job.ID, target, items); err != nil {
				t.Fatal(err)
			}
			if err := run(); err != nil {
				t.Fatal(err)
			}
			j := b.counts(t)
			if j.Counts.Recalled != n || j.Counts.RecalledUnattributed != n || j.Counts.DeadLettered != 0 {
				t.Fatalf("re-queued lost answers: %+v (want %d recalled, attribution unknown; none dead)", j.Counts, n)
			}
		})
	}
}

// TestRequeuedTimeoutsAreCheckedInOnePull: a task of ten re-queued
// timeouts (seqs 3..12, of which the lost calls recalled 3..7) is checked
// against the history in one pull, not one per message: a re-queue of many
// timeouts costs no more history reads than it makes recall calls.
func TestRequeuedTimeoutsAreCheckedInOnePull(t *testing.T) {
	b := setup(t, emulator.Config{}, Config{MaxAttempts: 1})
	im := &lostAnswers{TIM: TIM{C: b.env.Client}, lose: true}
	b.h = New(im, b.store, b.h.cfg)
	_, target := b.plannedGroup(t, "@TGS#pull", 30)
	seqs := imtest.Seqs(3, 12)
	if err := b.runGroup(t, target, imtest.Seqs(3, 7)); err != nil { // recalled, answers lost
		t.Fatal(err)
	}
	// 8..12 timed out before they reached the server.
	im.offline = true
	if err := b.runGroup(t, target, imtest.Seqs(8, 12)); err != nil {
		t.Fatal(err)
	}
	im.lose, im.offline = false, false
	if j := b.counts(t); j.Counts.DeadByCode[jobs.CodeTimeout] != 10 {
		t.Fatalf("after the timeouts: %+v", j.Counts)
	}
	items := make([]string, len(seqs))
	for i, s := range seqs {
		items[i] = strconv.FormatInt(s, 10)
	}
	if _, err := b.store.Requeue(t.Context(), b.job.ID, target, items); err != nil {
		t.Fatal(err)
	}
	b.env.Emu.ResetStats()
	if err := b.runGroup(t, target, seqs); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	if j.Counts.Recalled != 10 || j.Counts.RecalledUnattributed != 5 || j.Counts.DeadLettered != 0 {
		t.Fatalf("re-queued timeouts: %+v (want 10 recalled, 5 of them attribution unknown)", j.Counts)
	}
	if st := b.env.Emu.Stats()[tim.GroupMsgGetSimple.Name()]; st.Calls != 1 {
		t.Fatalf("%d history pulls to check a task of 10 re-queued timeouts, want 1", st.Calls)
	}
}
