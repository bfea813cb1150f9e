// Package demo runs imrecall's main job end to end inside one process, with
// nothing to set up: an embedded Redis (miniredis), the Tencent IM emulator
// seeded with a synthetic app (groups of every type, a spammer active in
// many of them and in one-to-one chats), a worker, and a purge of the
// spammer's messages at the API's cap of 200 calls/s. It shows progress,
// prints the job's report, checks against the emulator that none of the
// spammer's messages remain, verifies the job and writes a signed
// certificate of erasure ("imrecall demo", make demo).
package demo

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/certificate"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/verify"
	"github.com/imrecall/imrecall/worker"
	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"
)

// Config sizes the demo's synthetic app and says where its output goes.
type Config struct {
	// Groups and Messages are the synthetic app's groups and group
	// messages; SpammerGroups the groups the spammer posts in; Peers the
	// spammer's one-to-one peers; C2C the app's one-to-one messages.
	Groups, Messages, SpammerGroups, Peers, C2C int
	// Seed seeds the synthetic data.
	Seed int64
	// Concurrency is the worker's concurrency.
	Concurrency int
	// JSON prints the job's report as JSON.
	JSON bool
	// Out gets the report, the check, the verification and the certificate;
	// Progress the set-up lines and the progress, a bar when Terminal (else
	// a line every 2 s).
	Out, Progress io.Writer
	Terminal      bool
	// StartWorker starts the worker runtime on the demo's Redis (required).
	StartWorker StartWorker
	// Describe names an outcome code in the report; nil: the code as is.
	Describe func(code string) string
	// WriteVerification prints the job's verification (required).
	WriteVerification func(io.Writer, verify.JobResult)
	// Version names the software in the certificate.
	Version string
}

// StartWorker starts the worker runtime, imrecall worker's lanes in this
// process, running h's recall tasks and discover's discovery tasks from
// opt, and returns how to stop it.
type StartWorker func(opt asynq.RedisConnOpt, h *worker.Handler, discover *producer.DiscoverHandler, concurrency int, log *slog.Logger) (stop func(), err error)

// Result is what the demo found.
type Result struct {
	// Verification is the job's verification against the emulator; its
	// Passed says whether every planned message was seen recalled.
	Verification verify.JobResult
}

// CheckFailed is a demo whose check failed: messages of the spammer remain,
// the job's counts do not reconcile, or the certificate does not verify.
type CheckFailed struct{ Reason string }

func (e CheckFailed) Error() string { return "CHECK FAILED: " + e.Reason }

// Run runs the demo; see the package doc.
func Run(ctx context.Context, o Config) (Result, error) {
	var res Result
	if o.StartWorker == nil || o.WriteVerification == nil || o.Out == nil || o.Progress == nil {
		return res, errors.New("demo: Config needs StartWorker, WriteVerification, Out and Progress")
	}
	if o.Describe == nil {
		o.Describe = func(code string) string { return code }
	}
	out := o.Progress
	started := time.Now()
	// Logs would drown the progress bar: keep warnings only.
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelError}))

	mr, err := miniredis.Run()
	if err != nil {
		return res, fmt.Errorf("starting the embedded Redis: %w", err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	const app, admin = int64(1400000001), "administrator"
	secret := rand.Text()
	emu, err := emulator.New(emulator.Config{
		SDKAppID: app, Admin: admin, SecretKey: secret, Rate: tim.DefaultRateLimit,
		Latency: 10 * time.Millisecond, LatencyMax: 40 * time.Millisecond, Seed: o.Seed,
	})
	if err != nil {
		return res, err
	}
	ds, err := emu.Generate(emulator.DatasetSpec{
		Groups: o.Groups, Users: 3000, GroupMessages: o.Messages, C2CMessages: o.C2C,
		HeavySenders: 1, HeavyGroups: o.SpammerGroups, HeavyShare: 0.05, Peers: o.Peers, Topics: 3, Seed: o.Seed,
	})
	if err != nil {
		return res, fmt.Errorf("generating the synthetic app: %w", err)
	}
	spammer := ds.HeavySenders[0]
	peers := ds.PeersOf[spammer]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, fmt.Errorf("listening for the emulator: %w", err)
	}
	hs := emu.HTTPServer()
	go func() { _ = hs.Serve(emulator.ArrivalListener(ln)) }()
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(out, "emulator on %s: %d groups, %d group messages, %d one-to-one messages; spammer %q in %d groups, %d peers\n",
		base, o.Groups, o.Messages, o.C2C, spammer, o.SpammerGroups, len(peers))

	store := jobs.NewStore(rdb, "")
	lim, err := limiter.New(rdb, limiter.Config{Logger: log})
	if err != nil {
		return res, err
	}
	client, err := tim.New(tim.Config{SDKAppID: app, Admin: admin, SecretKey: tim.Secret(secret), BaseURL: base, Gate: lim.ForApp(app)})
	if err != nil {
		return res, err
	}
	h := worker.New(worker.TIM{C: client}, store, worker.Config{AppID: app, Logger: log})
	enq := asynq.NewClient(asynq.RedisClientOpt{Addr: mr.Addr()})
	defer enq.Close()
	discover := producer.NewDiscoverHandler(client, store, enq, log)
	stop, err := o.StartWorker(asynq.RedisClientOpt{Addr: mr.Addr()}, h, discover, o.Concurrency, log)
	if err != nil {
		return res, fmt.Errorf("starting the worker: %w", err)
	}
	defer stop()

	job, err := store.Create(ctx, jobs.Spec{
		Kind: "purge:user", Queue: tasks.QueuePurge, AppID: app, RequestedBy: "demo@" + hostname(),
		Reason: "demo: purge spammer " + spammer, Params: mustJSON(map[string]any{"user": spammer, "peers": peers, "source": "scan"}),
	})
	if err != nil {
		return res, err
	}
	// What the CLI's purge user does: list what to scan, queue one discovery
	// task per group, topic and chat; the worker scans and recalls.
	scans, rep, err := producer.UserScans(ctx, client, producer.UserPurge{User: spammer, Peers: peers})
	if err != nil {
		return res, err
	}
	cov := producer.Coverage(spammer, producer.Window{}, peers, producer.ScanSources(len(peers)), rep)
	if err := store.SaveCoverage(ctx, job.ID, cov); err != nil {
		return res, err
	}
	if _, err := producer.EnqueueScans(ctx, store, enq, job, scans); err != nil {
		return res, err
	}
	if _, err := store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); err != nil {
		return res, err
	}
	fmt.Fprintf(out, "job %s: %d scans queued (%d groups and topics, %d chats)\n", job.ID, len(scans), len(scans)-len(peers), len(peers))

	j, err := progress(ctx, out, o.Terminal, store, emu, job.ID)
	if err != nil {
		return res, err
	}
	r, err := store.BuildReport(ctx, j.ID)
	if err != nil {
		return res, err
	}
	w := o.Out
	if o.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return res, err
		}
	} else {
		fmt.Fprintln(w)
		_ = r.WriteText(w, o.Describe)
		for _, u := range rep.Unsupported {
			fmt.Fprintf(w, "unsupported group %s (%s): %s\n", u.GroupID, u.Type, u.Reason)
		}
	}
	left := left(emu, spammer, peers)
	st := emu.Stats()
	fmt.Fprintf(w, "\nemulator: group_msg_recall %d calls (max %d in any second, %d throttled), admin_msgwithdraw %d calls (max %d/s)\n",
		st[tim.GroupMsgRecall.Name()].Accepted, st[tim.GroupMsgRecall.Name()].Max1s, st[tim.GroupMsgRecall.Name()].Throttled,
		st[tim.AdminMsgWithdraw.Name()].Accepted, st[tim.AdminMsgWithdraw.Name()].Max1s)
	fmt.Fprintf(w, "finished in %s\n", time.Since(started).Round(100*time.Millisecond))
	if left > 0 {
		return res, CheckFailed{fmt.Sprintf("%d of the spammer's messages are still there", left)}
	}
	if !r.Reconciled {
		return res, CheckFailed{r.ReconcileProblem}
	}
	fmt.Fprintf(w, "check passed: none of %s's messages remain in any group or one-to-one chat (verified against the emulator)\n", spammer)
	res.Verification, err = certify(ctx, o, store, client, j)
	return res, err
}

// certify ends the demo as a privacy officer would: verify the job
// through the API, then write a signed certificate of erasure with a fresh
// key, and check it.
func certify(ctx context.Context, o Config, store *jobs.Store, client *tim.Client, j jobs.Job) (verify.JobResult, error) {
	var v verify.JobResult
	w := o.Out
	dir, err := os.MkdirTemp("", "imrecall-demo-")
	if err != nil {
		return v, err
	}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return v, err
	}
	keyPEM, err := certificate.MarshalPrivateKey(key)
	if err != nil {
		return v, err
	}
	pubPEM, err := certificate.MarshalPublicKey(pub)
	if err != nil {
		return v, err
	}
	keyPath, pubPath, out := filepath.Join(dir, "demo-key.pem"), filepath.Join(dir, "demo-pub.pem"), filepath.Join(dir, "erasure.json")
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return v, err
	}
	if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
		return v, err
	}
	fmt.Fprintln(w)
	v, doc, err := certificate.Issue(ctx, certificate.Request{
		Store: store, IM: client, Job: j, Actor: j.RequestedBy, Concurrency: 8,
		Out: out, Key: key, Software: certificate.Software{Name: "imrecall", Version: o.Version, ConfigSHA256: "demo"},
	})
	if err != nil {
		return v, fmt.Errorf("certificate: %w", err)
	}
	o.WriteVerification(w, v)
	if _, err := certificate.Verify(out, pub); err != nil {
		return v, CheckFailed{"the certificate does not verify: " + err.Error()}
	}
	fmt.Fprintf(w, "\ncertificate of erasure (%d messages), signed and checked:\n  %s\n  %s.sig\n  %s.rows.jsonl\n", doc.Rows.Count, out, out, out)
	fmt.Fprintf(w, "check it:  openssl pkeyutl -verify -pubin -inkey %s -rawin -in %s -sigfile %s.sig\n", pubPath, out, out)
	fmt.Fprintf(w, "read it:   imrecall certificate render %s --public-key %s --out erasure.html\n", out, pubPath)
	return v, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// progress shows a bar (on a terminal) or a line every 2 s until the job
// ends: messages, calls/s against the cap, ETA.
func progress(ctx context.Context, out io.Writer, tty bool, store *jobs.Store, emu *emulator.Server, id string) (jobs.Job, error) {
	bar := progressbar.NewOptions64(1,
		progressbar.OptionSetWriter(out),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetVisibility(tty),
	)
	lastLine := time.Time{}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return jobs.Job{}, ctx.Err()
		case <-tick.C:
		}
		j, err := store.Get(ctx, id)
		if err != nil {
			return j, err
		}
		c := j.Counts
		planning := j.Status == jobs.StatusPlanning
		st := emu.Stats()
		rate := lastSecond(st[tim.GroupMsgRecall.Name()].PerSecond)
		disc := lastSecond(st[tim.GroupMsgGetSimple.Name()].PerSecond)
		phase := "recalling"
		if planning {
			phase = fmt.Sprintf("discovering (%3d history calls/s)", disc)
		}
		desc := fmt.Sprintf("%-36s recall %3d calls/s of cap 200 |", phase, rate)
		bar.ChangeMax64(max(c.Planned, 1))
		bar.Describe(desc)
		_ = bar.Set64(c.Recalled + c.DeadLettered)
		if !tty && time.Since(lastLine) >= 2*time.Second {
			lastLine = time.Now()
			fmt.Fprintf(out, "%s planned %d, recalled %d, dead-lettered %d, pending %d\n", desc, c.Planned, c.Recalled, c.DeadLettered, c.Pending)
		}
		if j.Status == jobs.StatusFailed {
			return j, fmt.Errorf("job %s failed: %s", j.ID, j.Error)
		}
		if j.Finished() {
			_ = bar.Finish()
			fmt.Fprintln(out)
			return j, nil
		}
	}
}

func lastSecond(series []int64) int64 {
	if n := len(series); n >= 2 {
		return series[n-2] // the last complete second
	}
	return 0
}

// left counts the spammer's messages the emulator still holds
// unrecalled, in recallable groups and in one-to-one chats with the peers.
func left(emu *emulator.Server, spammer string, peers []string) int {
	left := 0
	for _, g := range emu.Groups() {
		if g.Type == producer.TypeAVChatRoom {
			continue
		}
		topics := append([]string{""}, g.Topics...)
		for _, topic := range topics {
			for _, m := range emu.GroupMessages(g.GroupID, topic) {
				if m.From == spammer && !m.Recalled {
					left++
				}
			}
		}
	}
	for _, p := range peers {
		for _, m := range emu.C2CMessages(spammer, p) {
			if m.From == spammer && !m.Recalled {
				left++
			}
		}
	}
	return left
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return h
}
