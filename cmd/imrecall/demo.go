package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	"github.com/imrecall/imrecall/worker"
	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// demoOptions size the demo's synthetic data.
type demoOptions struct {
	groups      int
	messages    int
	heavyGroups int
	peers       int
	c2c         int
	seed        int64
	concurrency int
	asJSON      bool
}

func newDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Purge a spammer from a synthetic app: embedded Redis, the IM emulator, a worker, no set-up",
		Long: `demo runs the main job end to end inside one process, with nothing to set up:
an embedded Redis (miniredis), the Tencent IM emulator seeded with a synthetic app (hundreds of
groups of every type, a spammer active in many of them and in one-to-one chats), a worker, and
"imrecall purge user" of the spammer at the API's cap of 200 calls/s. It shows progress, prints
the job's report, and checks against the emulator that none of the spammer's messages remain.
The same binary pointed at a real Redis and real credentials is the production path.`,
		Example: "  imrecall demo\n  imrecall demo --groups 500 --messages 300000",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			return runDemo(cmd.Context(), cmd, o)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.groups, "groups", 300, "groups in the synthetic app")
	fl.IntVar(&o.messages, "messages", 150000, "group messages in the synthetic app")
	fl.IntVar(&o.heavyGroups, "spammer-groups", 120, "groups the spammer posts in")
	fl.IntVar(&o.peers, "peers", 25, "one-to-one peers of the spammer")
	fl.IntVar(&o.c2c, "c2c", 5000, "one-to-one messages in the synthetic app")
	fl.Int64Var(&o.seed, "seed", 1, "seed of the synthetic data")
	fl.IntVar(&o.concurrency, "concurrency", 64, "worker concurrency")
	fl.BoolVar(&o.asJSON, "json", false, "print the final report as JSON")
	return cmd
}

func runDemo(ctx context.Context, cmd *cobra.Command, o demoOptions) error {
	out := cmd.ErrOrStderr()
	started := time.Now()
	// Logs would drown the progress bar: keep warnings only.
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelError}))

	mr, err := miniredis.Run()
	if err != nil {
		return fmt.Errorf("starting the embedded Redis: %w", err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	const app, admin = int64(1400000001), "administrator"
	secret := randomHex(16)
	emu, err := emulator.New(emulator.Config{
		SDKAppID: app, Admin: admin, SecretKey: secret, Rate: tim.DefaultRateLimit,
		Latency: 10 * time.Millisecond, LatencyMax: 40 * time.Millisecond, Seed: o.seed,
	})
	if err != nil {
		return err
	}
	ds, err := emu.Generate(emulator.DatasetSpec{
		Groups: o.groups, Users: 3000, GroupMessages: o.messages, C2CMessages: o.c2c,
		HeavySenders: 1, HeavyGroups: o.heavyGroups, HeavyShare: 0.05, Peers: o.peers, Topics: 3, Seed: o.seed,
	})
	if err != nil {
		return fmt.Errorf("generating the synthetic app: %w", err)
	}
	spammer := ds.HeavySenders[0]
	peers := ds.PeersOf[spammer]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening for the emulator: %w", err)
	}
	hs := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(out, "emulator on %s: %d groups, %d group messages, %d one-to-one messages; spammer %q in %d groups, %d peers\n",
		base, o.groups, o.messages, o.c2c, spammer, o.heavyGroups, len(peers))

	store := jobs.NewStore(rdb, "")
	lim, err := limiter.New(rdb, limiter.Config{Logger: log})
	if err != nil {
		return err
	}
	client, err := tim.New(tim.Config{SDKAppID: app, Admin: admin, SecretKey: tim.Secret(secret), BaseURL: base, Gate: lim.ForApp(app)})
	if err != nil {
		return err
	}
	h := worker.New(worker.TIM{C: client}, store, worker.Config{AppID: app, Limiter: lim.ForApp(app), Logger: log})
	enq := asynq.NewClient(asynq.RedisClientOpt{Addr: mr.Addr()})
	defer enq.Close()
	discover := producer.NewDiscoverHandler(client, store, enq, log)
	srv, err := worker.NewServer(worker.ServerConfig{Redis: asynq.RedisClientOpt{Addr: mr.Addr()}, Handler: h,
		Discovery: asynq.HandlerFunc(discover.Handle), DiscoveryErrors: asynq.ErrorHandlerFunc(discover.HandleError), Concurrency: o.concurrency, Logger: log, LogLevel: asynq.ErrorLevel})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		return fmt.Errorf("starting the worker: %w", err)
	}
	defer srv.Shutdown()

	job, err := store.Create(ctx, jobs.Spec{
		Kind: "purge:user", Queue: tasks.QueuePurge, AppID: app, RequestedBy: "demo@" + hostname(),
		Reason: "demo: purge spammer " + spammer, Params: mustJSON(map[string]any{"user": spammer, "peers": peers, "source": "scan"}),
	})
	if err != nil {
		return err
	}
	// What the CLI's purge user does: list what to scan, queue one discovery
	// task per group, topic and chat; the worker scans and recalls.
	scans, rep, err := producer.UserScans(ctx, client, producer.UserPurge{User: spammer, Peers: peers})
	if err != nil {
		return err
	}
	cov := producer.Coverage(spammer, producer.Window{}, peers, producer.ScanSources(len(peers)), rep)
	if err := store.SaveCoverage(ctx, job.ID, cov); err != nil {
		return err
	}
	if _, err := producer.EnqueueScans(ctx, store, enq, job, scans); err != nil {
		return err
	}
	if _, err := store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); err != nil {
		return err
	}
	fmt.Fprintf(out, "job %s: %d scans queued (%d groups and topics, %d chats)\n", job.ID, len(scans), len(scans)-len(peers), len(peers))

	j, err := demoProgress(ctx, out, store, emu, job.ID)
	if err != nil {
		return err
	}
	r, err := store.BuildReport(ctx, j.ID)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if o.asJSON {
		if err := printJSON(w, r); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(w)
		_ = r.WriteText(w, describeCode)
		for _, u := range rep.Unsupported {
			fmt.Fprintf(w, "unsupported group %s (%s): %s\n", u.GroupID, u.Type, u.Reason)
		}
	}
	left := demoCheck(emu, ds, spammer, peers)
	st := emu.Stats()
	fmt.Fprintf(w, "\nemulator: group_msg_recall %d calls (max %d in any second, %d throttled), admin_msgwithdraw %d calls (max %d/s)\n",
		st[tim.GroupMsgRecall.Name()].Accepted, st[tim.GroupMsgRecall.Name()].Max1s, st[tim.GroupMsgRecall.Name()].Throttled,
		st[tim.AdminMsgWithdraw.Name()].Accepted, st[tim.AdminMsgWithdraw.Name()].Max1s)
	fmt.Fprintf(w, "finished in %s\n", time.Since(started).Round(100*time.Millisecond))
	if left > 0 {
		return exitCodeError{code: exitFailure, msg: fmt.Sprintf("CHECK FAILED: %d of the spammer's messages are still there", left)}
	}
	if !r.Reconciled {
		return exitCodeError{code: exitFailure, msg: "CHECK FAILED: " + r.ReconcileProblem}
	}
	fmt.Fprintf(w, "check passed: none of %s's messages remain in any group or one-to-one chat (verified against the emulator)\n", spammer)
	return demoCertificate(ctx, cmd, store, client, j)
}

// demoCertificate ends the demo as a privacy officer would: verify the job
// through the API, then write a signed certificate of erasure with a fresh
// key, and check it.
func demoCertificate(ctx context.Context, cmd *cobra.Command, store *jobs.Store, client *tim.Client, j jobs.Job) error {
	w := cmd.OutOrStdout()
	dir, err := os.MkdirTemp("", "imrecall-demo-")
	if err != nil {
		return err
	}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	keyPEM, err := certificate.MarshalPrivateKey(key)
	if err != nil {
		return err
	}
	pubPEM, err := certificate.MarshalPublicKey(pub)
	if err != nil {
		return err
	}
	keyPath, pubPath, out := filepath.Join(dir, "demo-key.pem"), filepath.Join(dir, "demo-pub.pem"), filepath.Join(dir, "erasure.json")
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
		return err
	}
	fmt.Fprintln(w)
	v, doc, err := certificate.Issue(ctx, certificate.Request{
		Store: store, IM: client, Job: j, Actor: j.RequestedBy, Concurrency: 8,
		Out: out, Key: key, Software: certificate.Software{Name: "imrecall", Version: version(), ConfigSHA256: "demo"},
	})
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	writeVerification(cmd, v)
	if _, err := certificate.Verify(out, pub); err != nil {
		return exitCodeError{code: exitFailure, msg: "CHECK FAILED: the certificate does not verify: " + err.Error()}
	}
	fmt.Fprintf(w, "\ncertificate of erasure (%d messages), signed and checked:\n  %s\n  %s.sig\n  %s.rows.jsonl\n", doc.Rows.Count, out, out, out)
	fmt.Fprintf(w, "check it:  openssl pkeyutl -verify -pubin -inkey %s -rawin -in %s -sigfile %s.sig\n", pubPath, out, out)
	fmt.Fprintf(w, "read it:   imrecall certificate render %s --public-key %s --out erasure.html\n", out, pubPath)
	return verificationExit(v)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// demoProgress shows a bar until the job ends: messages, calls/s against
// the cap, ETA.
func demoProgress(ctx context.Context, out io.Writer, store *jobs.Store, emu *emulator.Server, id string) (jobs.Job, error) {
	tty := isTerminal(os.Stderr)
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

// demoCheck counts the spammer's messages the emulator still holds
// unrecalled, in recallable groups and in one-to-one chats with the peers.
func demoCheck(emu *emulator.Server, ds *emulator.Dataset, spammer string, peers []string) int {
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
	_ = ds
	return left
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return h
}
