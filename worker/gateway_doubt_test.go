package worker

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// gatewayLosesFirst is an IM whose first recall call takes effect at the
// server and is answered HTTP 502 by the gateway in front of it (the
// service's answer lost on the way back); later calls are answered.
type gatewayLosesFirst struct {
	TIM
	emu   *emulator.Server
	calls int
}

func (g *gatewayLosesFirst) lose() func() {
	g.calls++
	if g.calls > 1 {
		return func() {}
	}
	g.emu.SetFaults(emulator.Faults{HTTP502AfterEffect: 1})
	return func() { g.emu.SetFaults(emulator.Faults{}) }
}

func (g *gatewayLosesFirst) RecallGroup(ctx context.Context, group, topic string, seqs []int64) (map[int64]int, error) {
	defer g.lose()()
	return g.TIM.RecallGroup(ctx, group, topic, seqs)
}

func (g *gatewayLosesFirst) Withdraw(ctx context.Context, from, to, msgKey string) error {
	defer g.lose()()
	return g.TIM.Withdraw(ctx, from, to, msgKey)
}

// TestGatewayErrorAfterTheRecallIsInDoubt: Tencent answers a non-200 status
// only for a network error in front of the service, which does not say
// whether the service acted. A 502 that came after the recall took effect
// leaves the messages in doubt, so the retry's "not found" (10030) or
// "already recalled" (20023) is checked and counted recalled (attribution
// unknown), not dead-lettered as if the job had not recalled them.
func TestGatewayErrorAfterTheRecallIsInDoubt(t *testing.T) {
	t.Run("group", func(t *testing.T) {
		b := setup(t, emulator.Config{}, Config{MaxAttempts: 3})
		g, target := b.plannedGroup(t, "@TGS#gw", 5)
		b.h = New(&gatewayLosesFirst{TIM: TIM{C: b.env.Client}, emu: b.env.Emu}, b.store, b.h.cfg)
		if err := b.runGroup(t, target, imtest.Seqs(1, 5)); err != nil {
			t.Fatal(err)
		}
		wantRecalledAfterLostAnswer(t, b, 5)
		// The five answered "not found" in doubt were checked in one
		// history read, not one a message.
		if n := b.env.Emu.Stats()[tim.GroupMsgGetSimple.Name()].Accepted; n != 1 {
			t.Errorf("%d history reads to check 5 messages of one task, want 1", n)
		}
		// The emulator saw each message recalled by the first call, whose
		// answer it lost, and requested once more by the second.
		for _, m := range b.env.Emu.GroupMessages(g, "") {
			if !m.Recalled || m.AnswersLost != 1 || m.RecallRequests != 1 {
				t.Errorf("seq %d on the emulator: %+v; want recalled, 1 answer lost, 1 request after", m.Seq, m)
			}
		}
	})
	t.Run("c2c", func(t *testing.T) {
		b := setup(t, emulator.Config{}, Config{MaxAttempts: 3})
		key, _ := b.plannedC2C(t)
		b.h = New(&gatewayLosesFirst{TIM: TIM{C: b.env.Client}, emu: b.env.Emu}, b.store, b.h.cfg)
		if err := b.runC2C(t, "alice", "bob", key); err != nil {
			t.Fatal(err)
		}
		wantRecalledAfterLostAnswer(t, b, 1)
	})
}

// wantRecalledAfterLostAnswer checks that the job ended with its n messages
// recalled, each after a lost answer, and none dead-lettered.
func wantRecalledAfterLostAnswer(t *testing.T, b *bundle, n int64) {
	t.Helper()
	j := b.counts(t)
	if j.Counts.Recalled != n || j.Counts.RecalledUnattributed != n || j.Counts.DeadLettered != 0 || j.Status != jobs.StatusDone {
		t.Fatalf("job %s %+v: want %d recalled after a lost answer, none dead-lettered (dead letters by code %v)",
			j.Status, j.Counts, n, j.Counts.DeadByCode)
	}
}

// TestUnanswered: which failed calls may have acted at the server.
func TestUnanswered(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"timeout", context.DeadlineExceeded, true},
		{"broken connection", &tim.Error{API: "group_msg_recall", Err: io.ErrUnexpectedEOF}, true},
		{"502 from the gateway", &tim.Error{API: "group_msg_recall", HTTPStatus: http.StatusBadGateway, Err: tim.ErrHTTPStatus}, true},
		{"504 from the gateway", &tim.Error{API: "group_msg_recall", HTTPStatus: http.StatusGatewayTimeout, Err: tim.ErrHTTPStatus}, true},
		{"413 from the gateway", &tim.Error{API: "group_msg_recall", HTTPStatus: http.StatusRequestEntityTooLarge, Err: tim.ErrHTTPStatus}, false},
		{"an ErrorCode", &tim.Error{API: "group_msg_recall", HTTPStatus: http.StatusOK, Code: 10002}, false},
		{"held at the gate", &tim.Error{API: "group_msg_recall", Err: tim.ErrGate}, false},
	} {
		if got := unanswered(c.err); got != c.want {
			t.Errorf("%s: unanswered = %v, want %v", c.name, got, c.want)
		}
	}
}
