package certificate

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"iter"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/verify"
)

// onFirstRead runs fn once, before the first history read of a
// verification: what another operator does while a certificate is made.
type onFirstRead struct {
	verify.JobIM
	once sync.Once
	fn   func()
}

func (o *onFirstRead) GroupMsgGetSimple(ctx context.Context, req tim.GroupMsgGetSimpleRequest) (*tim.GroupMsgGetSimpleResponse, error) {
	o.once.Do(o.fn)
	return o.JobIM.GroupMsgGetSimple(ctx, req)
}

func (o *onFirstRead) GroupMsgPages(ctx context.Context, req tim.GroupMsgGetSimpleRequest) iter.Seq2[*tim.GroupMsgGetSimpleResponse, error] {
	o.once.Do(o.fn)
	return o.JobIM.GroupMsgPages(ctx, req)
}

// TestCertificateOfAJobRequeuedMeanwhileIsRefused: a finished job's dead
// letters re-queued while its certificate is being made (verification takes
// minutes on a large job) put the job back to running with messages
// pending. The certificate used to be written anyway with the status and
// counts of before (done, pending 0) beside rows that say pending: a
// signed document claiming the job done. It is refused instead, and no
// document is left behind.
func TestCertificateOfAJobRequeuedMeanwhileIsRefused(t *testing.T) {
	ctx := t.Context()
	store := jobs.NewStore(redistest.Start(t).Client(), "")
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice")
	gid := env.Group(t, "Public", "gc1", "alice")
	seqs := env.SendGroup(t, gid, "", 20, "alice")
	job, err := store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: "purge", AppID: imtest.AppID, RequestedBy: "dpo", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	group := jobs.Target{GroupID: gid}
	if _, err := store.PlanGroup(ctx, job.ID, group, seqs); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); err != nil {
		t.Fatal(err)
	}
	env.Recall(t, store, job.ID, group, seqs[:15], jobs.Target{}, nil)
	var dead []string
	var outs []jobs.Outcome
	for _, s := range seqs[15:] {
		dead = append(dead, strconv.FormatInt(s, 10))
		outs = append(outs, jobs.Outcome{Item: dead[len(dead)-1], Code: "10004", Attempts: 1})
	}
	if _, err := store.Record(ctx, job.ID, group, outs); err != nil {
		t.Fatal(err)
	}
	if job, err = store.Get(ctx, job.ID); err != nil || !job.Finished() {
		t.Fatalf("job %+v not finished (%v)", job, err)
	}

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	out := filepath.Join(t.TempDir(), "cert.json")
	im := &onFirstRead{JobIM: env.Client, fn: func() {
		if _, err := store.Requeue(ctx, job.ID, group, dead); err != nil {
			t.Errorf("re-queueing: %v", err)
		}
	}}
	_, doc, err := Issue(ctx, Request{Store: store, IM: im, Job: job, Actor: "dpo", Out: out, Key: key})
	if err == nil {
		// What the signed document would have said.
		pending := 0
		fh, ferr := os.Open(out + ".rows.jsonl")
		if ferr != nil {
			t.Fatal(ferr)
		}
		defer fh.Close()
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var r Row
			if json.Unmarshal(sc.Bytes(), &r) == nil && r.State == "pending" {
				pending++
			}
		}
		t.Fatalf("certificate issued for a job re-queued meanwhile: status %s, pending %d, reconciled %v; its rows have %d pending",
			doc.Job.Status, doc.Counts.Pending, doc.Reconciled, pending)
	}
	if !errors.Is(err, ErrNotFinished) {
		t.Fatalf("Issue: %v, want ErrNotFinished", err)
	}
	if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("a document was left at %s (%v)", out, serr)
	}
}
