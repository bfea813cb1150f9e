package certificate

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
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
	f := finishedJob(t, 20, 15)
	store, env, job, group, dead := f.store, f.env, f.job, f.group, f.dead
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

// TestCertificateWrittenMeanwhileIsNotOverwritten: two issuers of one
// job's certificate at once (two DPOs, two serve processes sharing the
// certificate directory) both find no FILE when they start; verification
// takes minutes. The second to finish used to rename its rows and document
// over the first's, so the certificate already handed out no longer
// matched the files (and "an existing FILE is never overwritten" did not
// hold). The second now fails, and the first's files stay as they were.
func TestCertificateWrittenMeanwhileIsNotOverwritten(t *testing.T) {
	ctx := t.Context()
	f := finishedJob(t, 5, 5)
	store, env, job := f.store, f.env, f.job
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	out := filepath.Join(t.TempDir(), "cert.json")
	p := PathsOf(out)
	first := map[string][]byte{}
	im := &onFirstRead{JobIM: env.Client, fn: func() {
		// The other issuer finishes first.
		if _, _, err := Issue(ctx, Request{Store: store, IM: env.Client, Job: job, Actor: "other", Out: out, Key: key}); err != nil {
			t.Errorf("the first issuer: %v", err)
		}
		for _, f := range []string{p.Document, p.Signature, p.Rows} {
			first[f], _ = os.ReadFile(f)
		}
	}}
	_, _, err := Issue(ctx, Request{Store: store, IM: im, Job: job, Actor: "dpo", Out: out, Key: key})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("the second issuer: %v, want an error saying the certificate exists", err)
	}
	for f, b := range first {
		if now, _ := os.ReadFile(f); !bytes.Equal(now, b) {
			t.Errorf("%s was changed by the second issuer", filepath.Base(f))
		}
	}
	if _, err := Verify(out, pub); err != nil {
		t.Fatalf("the first certificate no longer checks out: %v", err)
	}
}

// finished is a finished job of n group messages, recalled of them the
// first ones and the rest dead-lettered (10004).
type finished struct {
	env   *imtest.Env
	store *jobs.Store
	job   jobs.Job
	group jobs.Target
	dead  []string
}

func finishedJob(t *testing.T, n, recalled int) finished {
	t.Helper()
	ctx := t.Context()
	f := finished{store: jobs.NewStore(redistest.Start(t).Client(), ""), env: imtest.Start(t, emulator.Config{})}
	f.env.Accounts(t, "alice")
	f.group = jobs.Target{GroupID: f.env.Group(t, "Public", "gc1", "alice")}
	seqs := f.env.SendGroup(t, f.group.GroupID, "", n, "alice")
	var err error
	if f.job, err = f.store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: "purge", AppID: imtest.AppID, RequestedBy: "dpo", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.PlanGroup(ctx, f.job.ID, f.group, seqs); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.ClosePlanner(ctx, f.job.ID, jobs.RootPlanner); err != nil {
		t.Fatal(err)
	}
	f.env.Recall(t, f.store, f.job.ID, f.group, seqs[:recalled], jobs.Target{}, nil)
	var outs []jobs.Outcome
	for _, s := range seqs[recalled:] {
		f.dead = append(f.dead, strconv.FormatInt(s, 10))
		outs = append(outs, jobs.Outcome{Item: f.dead[len(f.dead)-1], Code: "10004", Attempts: 1})
	}
	if _, err := f.store.Record(ctx, f.job.ID, f.group, outs); err != nil {
		t.Fatal(err)
	}
	if f.job, err = f.store.Get(ctx, f.job.ID); err != nil || !f.job.Finished() {
		t.Fatalf("job %+v not finished (%v)", f.job, err)
	}
	return f
}
