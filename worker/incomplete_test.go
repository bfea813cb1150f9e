package worker

import (
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
)

// An answer that leaves some seqs out of RecallRetList still answers the
// others: those it says recalled are recalled by this job (attributed), and
// only the seqs left out are in doubt and checked against the history.
func TestIncompleteAnswerKeepsTheSeqsItAnswered(t *testing.T) {
	b := setup(t, emulator.Config{Seed: 7}, Config{MaxAttempts: 30})
	g, target := b.plannedGroup(t, "@TGS#inc", 10)
	b.env.Emu.SetFaults(emulator.Faults{OmitItem: 0.3})
	if err := b.runGroup(t, target, imtest.Seqs(1, 10)); err != nil {
		t.Fatal(err)
	}
	j := b.counts(t)
	if got := len(recalledSeqs(t, b.env, g)); got != 10 || j.Counts.Recalled != 10 || j.Counts.DeadLettered != 0 {
		t.Fatalf("emulator recalled %d, job = %+v", got, j.Counts)
	}
	omitted := b.env.Emu.Stats()["group_msg_recall"].Faults
	if omitted == 0 || omitted >= 10 {
		t.Fatalf("%d seqs left out of answers: the seed no longer makes an incomplete answer", omitted)
	}
	// At most the seqs left out can be in doubt; without the answered
	// ones kept, all ten were sent again and counted unattributed.
	if j.Counts.RecalledUnattributed > omitted || j.Counts.RecalledUnattributed == 10 {
		t.Fatalf("%d recalled unattributed, %d seqs left out of answers: answered seqs were taken for unanswered", j.Counts.RecalledUnattributed, omitted)
	}
}
