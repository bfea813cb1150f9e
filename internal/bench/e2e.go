package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/verify"
	"github.com/redis/go-redis/v9"
)

// RunE2E runs the end-to-end harness: for each worker count (and each
// Scale size), a fresh Redis, the emulator in this process, worker
// processes and the producer's command (this binary, os.Executable). It
// prints the tables (or JSON) to out and its progress to errOut.
func RunE2E(ctx context.Context, o E2EConfig, out, errOut io.Writer) error {
	results, err := runE2E(ctx, &o, errOut)
	if err != nil {
		return err
	}
	table := printE2ETables
	if len(o.Scale) > 0 {
		table = printScaleTable
	}
	return report(&o, out, results, fmt.Sprintf("emulator cap %d calls/s per API, latency %s; Redis one-way delay %v; worker --concurrency %d %s",
		o.Cap, o.latency(), o.RedisDelay, o.Concurrency, o.WorkerArgs), table)
}

// report writes the results as JSON (writeResults) or, unless o.JSON, the
// machine and setup line and then table.
func report(o *E2EConfig, out io.Writer, results []Result, setup string, table func(io.Writer, []Result)) error {
	if err := writeResults(o, out, results); err != nil || o.JSON {
		return err
	}
	m := machineInfo()
	fmt.Fprintf(out, "\nmachine: %s, %v CPUs, %s/%s; %s\n\n", m["cpu"], m["cpus"], runtime.GOOS, runtime.GOARCH, setup)
	table(out, results)
	return nil
}

// writeResults writes the results as JSON to o.JSONFile and, with o.JSON,
// to out.
func writeResults(o *E2EConfig, out io.Writer, results []Result) error {
	doc := map[string]any{"machine": machineInfo(), "latency": o.latency(), "redis_latency": o.RedisDelay.String(), "args": os.Args[1:], "runs": results}
	if o.JSONFile != "" {
		f, err := os.Create(o.JSONFile)
		if err != nil {
			return fmt.Errorf("writing --json-file: %w", err)
		}
		err = writeJSON(f, doc)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing --json-file: %w", err)
		}
	}
	if o.JSON {
		return writeJSON(out, doc)
	}
	return nil
}

// e2eBench holds what every run of one invocation shares.
type e2eBench struct {
	o      *E2EConfig
	self   string
	logDir string
	lo, hi time.Duration
	extra  []string
	errOut io.Writer
}

// runE2E validates o and runs every run it asks for, in order.
func runE2E(ctx context.Context, o *E2EConfig, errOut io.Writer) ([]Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	b := &e2eBench{o: o, extra: strings.Fields(o.WorkerArgs), errOut: errOut, lo: o.LatencyMin, hi: o.LatencyMax}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("finding this binary to start workers: %w", err)
	}
	b.logDir = o.LogDir
	keepLogs := o.LogDir != ""
	if b.logDir == "" {
		if b.logDir, err = os.MkdirTemp("", "imrecall-bench-e2e"); err != nil {
			return nil, fmt.Errorf("creating a directory for logs: %w", err)
		}
	} else if err := os.MkdirAll(b.logDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating --log-dir: %w", err)
	}
	defer func() {
		if !keepLogs {
			_ = os.RemoveAll(b.logDir)
		}
	}()

	var results []Result
	for _, w := range o.Workers {
		if len(o.Scale) == 0 {
			r, err := b.run(ctx, w, 0)
			if err != nil {
				keepLogs = true
				return nil, fmt.Errorf("bench e2e with %d workers (logs in %s): %w", w, b.logDir, err)
			}
			results = append(results, r)
			continue
		}
		for _, size := range o.Scale {
			r, err := b.run(ctx, w, size)
			if err != nil {
				keepLogs = true
				return nil, fmt.Errorf("bench e2e --scale %d with %d workers (logs in %s): %w", size, w, b.logDir, err)
			}
			results = append(results, r)
		}
	}
	return results, nil
}

// run measures one run: W workers, and a user purge (size 0) or a group
// purge of size messages.
func (b *e2eBench) run(ctx context.Context, workers, size int) (res Result, err error) {
	o := b.o
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	res = Result{Workers: workers, Concurrency: o.Concurrency, WorkerArgs: o.WorkerArgs, Cap: o.Cap, Groups: o.Groups, LoadAvgBefore: loadAvg()}
	tag := fmt.Sprintf("w%d", workers)
	if size > 0 {
		tag = fmt.Sprintf("w%d-n%d", workers, size)
	}

	// Redis: fresh per run, so the baseline and the peak are this run's. It
	// outlives an interrupt until the workers have drained (defers run last
	// in, first out).
	redisURL := o.Redis
	if redisURL == "" {
		stop, url, err := startPrivateRedis(context.WithoutCancel(ctx))
		if err != nil {
			return res, err
		}
		defer stop()
		redisURL = url
	}
	ropt, err := redis.ParseURL(redisURL)
	if err != nil {
		return res, configError("--redis %q: %v", redact(redisURL), err)
	}
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	aopt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		return res, configError("--redis %q: %v", redact(redisURL), err)
	}
	prefix := fmt.Sprintf("imrecall-bench-%d", time.Now().UnixNano())
	store := jobs.NewStore(rdb, prefix)
	childRedis := redisURL // what the child processes dial: through the proxy with --redis-latency
	if o.RedisDelay > 0 {
		u, stop, err := redisBehindProxy(redisURL, o.RedisDelay)
		if err != nil {
			return res, err
		}
		defer stop()
		childRedis = u
	}

	// The emulator's address first: serve (for --via index) and the
	// emulator need each other's.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, fmt.Errorf("listening for the emulator: %w", err)
	}
	defer ln.Close()
	base := "http://" + ln.Addr().String()
	secret := randomHex(16)
	env := append(os.Environ(), "IMRECALL_SECRET_KEY="+secret)
	common := []string{"--redis", childRedis, "--key-prefix", prefix, "--api-base", base,
		"--sdkappid", strconv.FormatInt(App, 10), "--admin", Admin, "--cap", strconv.Itoa(o.Cap)}
	var callbacks emulator.CallbackConfig
	svc := &children{} // imrecall serve, for --via index
	defer func() { _, _ = svc.stop() }()
	if o.Via == "index" {
		if callbacks, err = b.startServe(ctx, svc, common, env, filepath.Join(b.logDir, tag+"-serve.log")); err != nil {
			return res, err
		}
	}

	// The emulator and its synthetic app.
	emu, err := emulator.New(emulator.Config{SDKAppID: App, Admin: Admin, SecretKey: secret, Rate: o.Cap,
		Latency: b.lo, LatencyMax: b.hi, Seed: o.Seed, Callbacks: callbacks})
	if err != nil {
		return res, fmt.Errorf("starting the emulator: %w", err)
	}
	defer emu.Close()
	spec := emulator.DatasetSpec{Groups: o.Groups, Users: 3000, HeavySenders: 1, HeavyGroups: o.Groups, HeavyShare: o.Share,
		Peers: o.Peers, Topics: 3, Seed: o.Seed}
	if size > 0 {
		res.Mode = map[string]string{"purge": "purge group", "file": "recall file (group)", "index": "purge user --source index (group)"}[o.Via]
		spec.GroupMessages = int(math.Round(float64(size) / o.Share))
		spec.C2CMessages, spec.Peers = 100, 5
	} else {
		res.Mode = map[string]string{"purge": "purge user", "file": "recall file", "index": "purge user --source index"}[o.Via]
		spec.GroupMessages = int(math.Round(float64(o.GroupMessages) / o.Share))
		// Of the one-to-one messages, half are between the spammer and a
		// peer, and the spammer sends 6 in 10 of those.
		spec.C2CMessages = int(math.Round(float64(o.C2CMessages) / 0.3))
	}
	withC2C := size == 0 || o.Via == "index" // an index purge takes every peer
	ds, err := emu.Generate(spec)
	if err != nil {
		return res, fmt.Errorf("generating the synthetic app: %w", err)
	}
	spammer := ds.HeavySenders[0]
	peers := ds.PeersOf[spammer]
	var groups []string
	for _, g := range ds.Groups {
		if g.Type != "AVChatRoom" {
			groups = append(groups, g.GroupID)
		}
	}
	// left counts the spammer's messages not recalled, the targets holding
	// them and the least group calls that recall them (10 seqs a call, one
	// history a call).
	left := func() (group, c2c, targets, groupCalls int) {
		for _, g := range emu.Groups() {
			if g.Type == "AVChatRoom" {
				continue
			}
			for _, topic := range append([]string{""}, g.Topics...) {
				n := 0
				for _, m := range emu.GroupMessages(g.GroupID, topic) {
					if m.From == spammer && !m.Recalled {
						n++
					}
				}
				group += n
				groupCalls += (n + tasks.MaxSeqsPerCall - 1) / tasks.MaxSeqsPerCall
				if n > 0 {
					targets++
				}
			}
		}
		if withC2C {
			for _, p := range peers {
				for _, m := range emu.C2CMessages(spammer, p) {
					if m.From == spammer && !m.Recalled {
						c2c++
					}
				}
			}
		}
		return group, c2c, targets, groupCalls
	}
	res.GroupMessages, res.C2CMessages, res.Targets, res.LeastGroupCalls = left()
	hs := emu.HTTPServer()
	go func() { _ = hs.Serve(emulator.ArrivalListener(ln)) }()
	defer hs.Close()
	fmt.Fprintf(b.errOut, "run %s: %s of %s: %d group messages in %d histories, %d one-to-one with %d peers; %d workers\n",
		tag, res.Mode, spammer, res.GroupMessages, res.Targets, res.C2CMessages, len(peers), workers)
	if o.Via == "index" {
		if err := b.feedIndex(ctx, emu, rdb, &res); err != nil {
			return res, err
		}
	}

	// Workers, started and registered with asynq before the clock starts.
	ws := &children{}
	defer func() { _, _ = ws.stop() }() // on every path; a no-op once stopped
	for i := range workers {
		args := append([]string{"worker"}, common...)
		args = append(args, "--concurrency", strconv.Itoa(o.Concurrency), "--log-level", "warn")
		args = append(args, b.extra...)
		if err := ws.start(ctx, b.self, args, env, filepath.Join(b.logDir, fmt.Sprintf("%s-worker%d.log", tag, i))); err != nil {
			return res, err
		}
	}
	if err := ws.awaitRegistered(ctx, aopt); err != nil {
		return res, err
	}

	baseline, err := usedMemory(ctx, rdb)
	if err != nil {
		return res, err
	}
	res.RedisBaseline = baseline
	redisCPU0, err := redisCPU(ctx, rdb)
	if err != nil {
		return res, err
	}
	benchCPU0 := selfCPU()

	// The purge, through the CLI.
	pargs, err := b.producerArgs(res.Mode, common, groups, spammer, peers, emu, filepath.Join(b.logDir, tag+"-list.jsonl"))
	if err != nil {
		return res, err
	}
	emu.ResetStats()
	start := time.Now()
	prod, err := startProducer(ctx, b.self, pargs, env, filepath.Join(b.logDir, tag+"-purge.log"))
	if err != nil {
		return res, err
	}
	jobID, err := prod.awaitJob(ctx)
	if err != nil {
		return res, err
	}
	res.ProducerSeconds = time.Since(start).Seconds()
	res.JobID = jobID

	// Follow the job; sample Redis memory.
	j, err := b.follow(ctx, store, rdb, jobID, start, &res)
	if err != nil {
		return res, err
	}
	end := time.Now()
	if j.FinishedAt != nil && j.FinishedAt.After(start) && j.FinishedAt.Before(end) {
		end = *j.FinishedAt
	}
	res.WallSeconds = end.Sub(start).Seconds()
	if res.Producer, err = prod.wait(ctx); err != nil && j.Status == jobs.StatusDone {
		return res, err
	}
	res.Status = string(j.Status)
	res.Planned, res.Recalled, res.DeadLettered = j.Counts.Planned, j.Counts.Recalled, j.Counts.DeadLettered
	st := emu.Stats()
	benchCPU1 := selfCPU()
	if res.RedisAfterJob, err = usedMemory(ctx, rdb); err != nil {
		return res, err
	}
	redisCPU1, err := redisCPU(ctx, rdb)
	if err != nil {
		return res, err
	}
	if res.JobRecordBytes, err = keysMemory(ctx, rdb, fmt.Sprintf("%s:job:{%s}*", prefix, jobID)); err != nil {
		return res, err
	}
	procs, err := ws.stop()
	if err != nil {
		return res, err
	}
	res.WorkerProcs = procs
	if o.Via == "index" {
		sp, err := svc.stop()
		if err != nil {
			return res, fmt.Errorf("imrecall serve: %w", err)
		}
		res.Serve = &sp[0]
	}
	if o.Verify {
		emu.ResetStats()
		if res.Verify, err = b.verify(ctx, common, env, jobID, filepath.Join(b.logDir, tag+"-verify.log")); err != nil {
			return res, err
		}
		res.Verify.APIs = apiFigures(emu.Stats(), res.Verify.Seconds, o.Cap)
		if res.Verify.Planned > 0 {
			res.Verify.CallsPerPlanned = float64(res.Verify.HistoryCalls) / float64(res.Verify.Planned)
		}
		fmt.Fprintf(b.errOut, "run %s: verify in %.1f s: %d history calls for %d planned; %d verified, %d gone, %d still visible, residue %d\n",
			tag, res.Verify.Seconds, res.Verify.HistoryCalls, res.Verify.Planned, res.Verify.Verified, res.Verify.Gone, res.Verify.StillVisible, res.Verify.Residue)
	}
	res.LoadAvgAfter = loadAvg()

	// Figures.
	res.APIs = apiFigures(st, res.WallSeconds, o.Cap)
	for _, a := range res.APIs {
		res.Calls += a.Accepted
		res.Throttled += a.Throttled
	}
	gl, cl, _, _ := left()
	res.Left = gl + cl
	if n := res.APIs[tim.GroupMsgRecall.Name()].Accepted; n > 0 {
		res.SeqsPerGroupCall = float64(res.GroupMessages-gl) / float64(n)
	}
	groupFloor := float64(res.GroupMessages) / float64(tasks.MaxSeqsPerCall) / float64(o.Cap)
	c2cFloor := float64(res.C2CMessages) / float64(o.Cap)
	res.FloorSeconds = max(groupFloor, c2cFloor)
	res.CallFloorSeconds = max(float64(res.LeastGroupCalls)/float64(o.Cap), c2cFloor)
	var first, last time.Time
	for _, a := range st {
		if a.Accepted > 0 && (first.IsZero() || a.First.Before(first)) {
			first = a.First
		}
		if a.Last.After(last) {
			last = a.Last
		}
	}
	if !first.IsZero() {
		res.LeadInSeconds = first.Sub(start).Seconds()
		res.TailSeconds = end.Sub(last).Seconds()
	}
	if res.WallSeconds > 0 {
		res.FloorOverWall = res.FloorSeconds / res.WallSeconds
		res.CallFloorOverWall = res.CallFloorSeconds / res.WallSeconds
	}
	var cpu float64
	for _, p := range procs {
		cpu += p.CPUSeconds
		res.WorkerPeakRSS = max(res.WorkerPeakRSS, p.PeakRSS)
	}
	if res.Calls > 0 {
		k := float64(res.Calls) / 1000
		res.WorkerCPUPer1000 = cpu / k
		res.RedisCPUPer1000 = (redisCPU1 - redisCPU0) / k
		if benchCPU0 >= 0 && benchCPU1 >= 0 {
			res.BenchCPUPer1000 = (benchCPU1 - benchCPU0) / k
		}
	}
	if res.PlannedAtPlanningEnd > 0 {
		res.RedisPerPlanned = float64(res.RedisAfterPlanning-baseline) / float64(res.PlannedAtPlanningEnd)
	}
	if res.Planned > 0 {
		res.RedisJobPerMessage = float64(res.RedisAfterJob-baseline) / float64(res.Planned)
		res.RedisPeakPerMessage = float64(res.RedisPeak-baseline) / float64(res.Planned)
		res.JobRecordPerMessage = float64(res.JobRecordBytes) / float64(res.Planned)
	}
	if res.PendingAtPlanningEnd > 0 && res.PlannedAtPlanningEnd > 0 {
		// What planning-end memory holds beyond the job record of the
		// messages planned so far is the queue of the pending ones.
		jobPart := res.JobRecordPerMessage * float64(res.PlannedAtPlanningEnd)
		res.RedisQueuePerQueued = (float64(res.RedisAfterPlanning-baseline) - jobPart) / float64(res.PendingAtPlanningEnd)
	}
	fmt.Fprintf(b.errOut, "run %s: job %s %s in %.1f s (floor %.1f s, floor/wall %.3f; %d calls at least: %.1f s, %.3f; first call after %.2f s, done %.2f s after the last); recalled %d, dead-lettered %d, left %d\n",
		tag, res.JobID, res.Status, res.WallSeconds, res.FloorSeconds, res.FloorOverWall, res.LeastGroupCalls, res.CallFloorSeconds, res.CallFloorOverWall,
		res.LeadInSeconds, res.TailSeconds, res.Recalled, res.DeadLettered, res.Left)
	switch {
	case j.Status != jobs.StatusDone:
		return res, fmt.Errorf("job %s ended %s: %s", jobID, j.Status, j.Error)
	case res.Left > 0:
		return res, fmt.Errorf("job %s done, but %d of the spammer's messages are still there", jobID, res.Left)
	}
	return res, nil
}

// verify runs "imrecall verify JOB --json" (this binary) and reads what it
// printed; exit 5 (messages remain) is a result, not an error.
func (b *e2eBench) verify(ctx context.Context, common, env []string, jobID, logPath string) (*Verification, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating verify's log: %w", err)
	}
	defer lf.Close()
	args := append([]string{"verify", jobID, "--json"}, common...)
	args = append(args, "--concurrency", strconv.Itoa(b.o.Concurrency), "--log-level", "warn")
	c := exec.CommandContext(ctx, b.self, args...)
	c.Env = env
	c.Stderr = lf
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := c.Output()
	v := &Verification{Seconds: time.Since(start).Seconds()}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == verifyExitNotErased {
		v.ExitCode, err = verifyExitNotErased, nil
	}
	if err != nil {
		return nil, fmt.Errorf("imrecall verify %s (log %s): %w", jobID, logPath, err)
	}
	var got verify.JobResult
	if err := json.Unmarshal(out, &got); err != nil {
		return nil, fmt.Errorf("imrecall verify %s --json printed %q: %w", jobID, out, err)
	}
	v.Planned, v.Verified, v.Gone, v.StillVisible, v.Residue = got.Planned, got.Verified, got.Gone, got.StillVisible, got.Residue
	v.Passed, v.HistoryCalls = got.Passed, got.HistoryCalls
	return v, nil
}

// startServe starts "imrecall serve" with the callback index on a free
// port, waits until it is ready, and returns the emulator's callback
// settings for it.
func (b *e2eBench) startServe(ctx context.Context, svc *children, common, env []string, logPath string) (emulator.CallbackConfig, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return emulator.CallbackConfig{}, fmt.Errorf("finding a port for imrecall serve: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	token := randomHex(16)
	args := append([]string{"serve"}, common...)
	// Retention 30d: the synthetic messages span the last 7 days.
	args = append(args, "--listen", addr, "--log-level", "warn", "--index-retention", "30d", "--monitor=false")
	env = append(env, "IMRECALL_API_TOKENS=bench:admin:"+randomHex(16), "IMRECALL_CALLBACK_TOKEN="+token)
	if err := svc.start(ctx, b.self, args, env, logPath); err != nil {
		return emulator.CallbackConfig{}, err
	}
	if err := WaitReady(ctx, addr, 30*time.Second); err != nil {
		return emulator.CallbackConfig{}, fmt.Errorf("imrecall serve: %w (see %s)", err, logPath)
	}
	return emulator.CallbackConfig{URL: "http://" + addr + "/callback", Token: token, Workers: 16}, nil
}

// WaitReady polls http://addr/readyz until it answers 200 OK, for at most
// timeout.
func WaitReady(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("checking %s: %w", addr, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz answered %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %v: %w", addr, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// feedIndex has the emulator post the after-send callback of every message
// it holds to imrecall serve, and measures the index that results.
func (b *e2eBench) feedIndex(ctx context.Context, emu *emulator.Server, rdb *redis.Client, res *Result) error {
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	began := time.Now()
	n := emu.ReplayCallbacks()
	if err := emu.WaitCallbacks(ctx); err != nil {
		return fmt.Errorf("delivering callbacks to imrecall serve: %w", err)
	}
	st := emu.CallbackStats()
	if st.Delivered != int64(n) {
		return fmt.Errorf("callbacks to imrecall serve: %+v, want all %d delivered", st, n)
	}
	res.IndexCallbacks = n
	res.IndexSeconds = time.Since(began).Seconds()
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	if n > 0 {
		res.IndexBytesPerMessage = float64(after-before) / float64(n)
	}
	fmt.Fprintf(b.errOut, "  index: %d callbacks in %.1f s (%.0f/s), %.0f Redis bytes per message\n",
		n, res.IndexSeconds, float64(n)/max(res.IndexSeconds, 0.001), res.IndexBytesPerMessage)
	return nil
}

// producerArgs is the command line of the run's producer: a purge, or with
// --via file a list of the spammer's messages (taken from the emulator, as a
// callback log would hold them) written to listPath and "recall file".
func (b *e2eBench) producerArgs(mode string, common, groups []string, spammer string, peers []string, emu *emulator.Server, listPath string) ([]string, error) {
	var args []string
	switch mode {
	case "purge group":
		args = append([]string{"purge", "group"}, common...)
		for _, g := range groups {
			args = append(args, "--group", g)
		}
		args = append(args, "--sender", spammer)
	case "purge user":
		args = append([]string{"purge", "user"}, common...)
		args = append(args, "--user", spammer, "--peers", strings.Join(peers, ","), "--source", "scan")
	case "purge user --source index", "purge user --source index (group)":
		args = append([]string{"purge", "user"}, common...)
		args = append(args, "--user", spammer, "--source", "index")
	default: // recall file
		if err := writeSpamList(listPath, emu, spammer, peers); err != nil {
			return nil, err
		}
		// recall file takes no IM flags: the workers do every call.
		args = []string{"recall", "file", listPath}
		for i := 0; i+1 < len(common); i += 2 {
			if f := common[i]; f == "--redis" || f == "--key-prefix" || f == "--sdkappid" {
				args = append(args, f, common[i+1])
			}
		}
	}
	// The bound on queued work: by default 10 s of group calls at the cap
	// (the CLI's default, 20,000, is that at the real cap of 200/s).
	backlog := b.o.Backlog
	if backlog < 0 {
		backlog = 100 * b.o.Cap
	}
	args = append(args, "--queue", "purge", "--yes", "--json", "--wait", "--reason", "bench e2e", "--backlog", strconv.Itoa(backlog))
	if !strings.HasPrefix(mode, "recall file") {
		args = append(args, "--log-level", "warn")
	}
	return args, nil
}

// follow polls the job until it has finished, recording when planning
// closed and sampling Redis used_memory every 200 ms.
func (b *e2eBench) follow(ctx context.Context, store *jobs.Store, rdb *redis.Client, id string, start time.Time, res *Result) (jobs.Job, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	planningSeen := false
	lastMem, lastLog := time.Time{}, time.Now()
	for {
		j, err := store.Get(ctx, id)
		if err != nil {
			return j, fmt.Errorf("following job %s: %w", id, err)
		}
		if time.Since(lastMem) >= 200*time.Millisecond || (!planningSeen && j.Status != jobs.StatusPlanning) {
			lastMem = time.Now()
			mem, err := usedMemory(ctx, rdb)
			if err != nil {
				return j, err
			}
			res.RedisPeak = max(res.RedisPeak, mem)
			if !planningSeen && j.Status != jobs.StatusPlanning {
				planningSeen = true
				res.PlanningSeconds = time.Since(start).Seconds()
				res.RedisAfterPlanning = mem
				res.PlannedAtPlanningEnd = j.Counts.Planned
				res.PendingAtPlanningEnd = j.Counts.Pending
			}
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			c := j.Counts
			fmt.Fprintf(b.errOut, "  %5.0f s: job %s %s: planned %d, recalled %d, dead-lettered %d, pending %d\n",
				time.Since(start).Seconds(), id, j.Status, c.Planned, c.Recalled, c.DeadLettered, c.Pending)
		}
		if j.Finished() || j.Status == jobs.StatusFailed || j.Status == jobs.StatusCancelled {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, fmt.Errorf("waiting for job %s: %w", id, context.Cause(ctx))
		case <-tick.C:
		}
	}
}
