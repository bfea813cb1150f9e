package producer

import (
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/jobs"
)

// TestSenderCheckRefusesOthersMessages hands a SenderCheck what a forged
// index would: the user's real messages mixed with other users' messages in
// the same group and chat, seqs that do not exist and a MsgKey that is not
// one. Only the user's own messages reach the sink, the rest is counted as
// refused, and the group is read in pages of 20 (one call per page).
func TestSenderCheckRefusesOthersMessages(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	ds, err := env.Emu.Generate(emulator.DatasetSpec{Groups: 6, Users: 30, GroupMessages: 3000, C2CMessages: 600, HeavyGroups: 6, HeavyShare: 0.3, Peers: 4, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	user := ds.HeavySenders[0]
	var group string
	var top int64
	for _, g := range env.Emu.Groups() {
		if g.Type == "AVChatRoom" || len(g.Topics) > 0 {
			continue
		}
		msgs := env.Emu.GroupMessages(g.GroupID, "")
		if len(msgs) >= 60 {
			group = g.GroupID
			for _, m := range msgs {
				top = max(top, m.Seq)
			}
			break
		}
	}
	if group == "" {
		t.Fatal("no group with 60 messages")
	}
	check := NewSenderCheck(env.Client, user, nil)
	tally := &Tally{}
	check.Next = tally
	ctx := t.Context()
	tg := jobs.Target{GroupID: group}
	wantMine, wantRefused := 0, 0
	for _, m := range env.Emu.GroupMessages(group, "") {
		if m.Seq <= top-40 || m.Recalled {
			continue
		}
		if m.From == user {
			wantMine++
		} else {
			wantRefused++
		}
		if err := check.AddGroup(ctx, tg, m.Seq); err != nil {
			t.Fatal(err)
		}
	}
	_ = check.AddGroup(ctx, tg, top+1000) // no such message
	wantRefused++

	peer := ds.PeersOf[user][0]
	ct := jobs.Target{From: user, To: peer}
	for _, m := range env.Emu.C2CMessages(user, peer) {
		if m.Recalled {
			continue
		}
		if m.From == user {
			wantMine++
		} else {
			wantRefused++
		}
		_ = check.AddC2C(ctx, ct, m.MsgKey)
	}
	_ = check.AddC2C(ctx, ct, "not-a-key")
	_ = check.AddC2C(ctx, jobs.Target{From: peer, To: user}, "1_2_3") // a chat of someone else
	wantRefused += 2

	if err := check.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if wantMine == 0 || wantRefused < 3 {
		t.Fatalf("the fixture proves nothing: %d mine, %d others", wantMine, wantRefused)
	}
	if check.Confirmed != wantMine || check.Refused != wantRefused || tally.Count() != wantMine {
		t.Fatalf("confirmed %d (tally %d), refused %d; want %d and %d", check.Confirmed, tally.Count(), check.Refused, wantMine, wantRefused)
	}
	// 40 seqs and one beyond the history: three windows of 20 (a short
	// page costs one more call); one chat: a page or two.
	if check.Calls > 6 {
		t.Errorf("%d history calls for 41 seqs of one group and one chat: not batched", check.Calls)
	}
	t.Logf("%d confirmed, %d refused, %d history calls", check.Confirmed, check.Refused, check.Calls)
	// Every message handed on is the user's.
	again := &Tally{}
	if err := check.Replay(ctx, again); err != nil || again.Count() != wantMine {
		t.Fatalf("replay: %d messages, %v", again.Count(), err)
	}
}
