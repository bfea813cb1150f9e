package msgindex

import (
	"context"
	"testing"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
)

// TestConfirmerLeasesSenders: a pass that dies (it claimed senders and never
// released them) holds them only for its lease, after which another pass
// confirms their entries; a sender whose entries were kept is due again
// after Retry, not at once; a new callback makes a sender due at once.
func TestConfirmerLeasesSenders(t *testing.T) {
	ctx := context.Background()
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice", "bob")
	g := env.Group(t, "Public", "@TGS#lease", "alice", "bob")
	seqs := env.SendGroup(t, g, "", 2, "alice")

	now := time.Now()
	idx := New(redistest.Start(t).Client(), "", 0)
	idx.now = func() time.Time { return now }
	if err := idx.Add(ctx, imtest.AppID, Entry{From: "alice", Time: now, GroupID: g, MsgSeq: seqs[0]},
		Entry{From: "bob", Time: now, GroupID: g, MsgSeq: seqs[1] + 100}); err != nil {
		t.Fatal(err)
	}
	// A pass claims both senders and dies.
	dead, err := claimScript.Run(ctx, idx.rdb, []string{idx.pendingKey(imtest.AppID)}, now.UnixMilli(), now.Add(claimLease).UnixMilli(), 10).StringSlice()
	if err != nil || len(dead) != 2 {
		t.Fatalf("claim: %v, %v", dead, err)
	}
	cf := &Confirmer{Index: idx, IM: env.Client, SDKAppID: imtest.AppID, Grace: time.Hour}
	if st, err := cf.RunOnce(ctx); err != nil || st.Senders != 0 {
		t.Fatalf("pass within the dead pass's lease: %+v, %v: want no sender", st, err)
	}
	now = now.Add(claimLease + time.Second)
	st, err := cf.RunOnce(ctx)
	if err != nil || st.Senders != 2 || st.Confirmed != 1 || st.Kept != 1 {
		t.Fatalf("pass after the lease: %+v, %v: want both senders, alice's entry confirmed, bob's kept", st, err)
	}
	// bob's kept entry: due after Retry (a minute), not before.
	if st, err := cf.RunOnce(ctx); err != nil || st.Senders != 0 {
		t.Fatalf("pass right after: %+v, %v: want no sender due", st, err)
	}
	now = now.Add(time.Minute + time.Second)
	if st, err := cf.RunOnce(ctx); err != nil || st.Senders != 1 || st.Kept != 1 {
		t.Fatalf("pass after Retry: %+v, %v: want bob, kept again (within the grace period)", st, err)
	}
	// A new callback for bob makes him due at once.
	if err := idx.Add(ctx, imtest.AppID, Entry{From: "bob", Time: now, GroupID: g, MsgSeq: seqs[1]}); err != nil {
		t.Fatal(err)
	}
	if st, err := cf.RunOnce(ctx); err != nil || st.Senders != 1 || st.Forged != 1 || st.Kept != 1 {
		t.Fatalf("pass after bob's callback: %+v, %v: want bob's new entry decided (alice sent that seq: forged)", st, err)
	}
	cov, err := idx.Coverage(ctx, imtest.AppID)
	if err != nil || cov.Confirmation.PendingSenders != 1 || cov.Confirmation.Confirmed != 1 || cov.Confirmation.Forged != 1 {
		t.Fatalf("coverage %+v, %v: want bob still pending, 1 confirmed, 1 forged", cov.Confirmation, err)
	}
}
