package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redisproxy"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/msgindex"
)

// receiverE2E is an e2e whose emulator posts its after-send callbacks to
// the serve at addr (started by the test), with the helpers of the tests
// that kill callback receivers.
type receiverE2E struct {
	*e2e
	addr string
	idx  *msgindex.Index
}

func newReceiverE2E(t *testing.T) *receiverE2E {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t)
	e := e2eOn(t, redistest.Start(t, redistest.WithAOF()),
		imtest.Start(t, emulator.Config{Rate: 200, Callbacks: emulator.CallbackConfig{URL: "http://" + addr + "/callback", Token: e2eCallbackToken}}))
	t.Cleanup(e.env.Emu.Close)
	return &receiverE2E{e2e: e, addr: addr, idx: msgindex.New(e.redis.Client(), "", 0)}
}

// serveOn starts serve listening on addr with Redis at redisURL, beating
// every beat, and waits until it is ready.
func (r *receiverE2E) serveOn(name, addr, redisURL string, beat time.Duration) *startedProc {
	r.t.Helper()
	cmd := imrecallCommand(context.Background(), r.bin, "serve", "--listen", addr, "--log-level", "info", "--index-retention", "30d",
		"--index-heartbeat", beat.String(), "--confirm-rate", "0")
	cmd.Env = append(r.environ(), "IMRECALL_API_TOKENS=ops:admin:"+e2eAPIToken, "IMRECALL_CALLBACK_TOKEN="+e2eCallbackToken,
		"IMRECALL_REDIS="+redisURL)
	p := &startedProc{cmd: cmd, log: filepath.Join(r.t.TempDir(), name+".log")}
	r.startLogged(cmd, p.log)
	if err := waitReady(r.t.Context(), addr, 30*time.Second); err != nil {
		r.t.Fatalf("%s: %v\n%s", name, err, tail(p.log, 4000))
	}
	return p
}

type startedProc struct {
	cmd *exec.Cmd
	log string
}

// kill ends the process with SIGKILL: nothing it holds in memory survives.
func (p *startedProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

// feed sends two messages of u to group g, waits for their callbacks and
// for the index to cover them, and returns a time a second after its
// coverage starts, once that time has passed.
func (r *receiverE2E) feed(t *testing.T, g string) time.Time {
	t.Helper()
	r.env.SendGroup(t, g, "", 2, "u")
	if st := r.waitCallbacks(); st.Delivered != 2 {
		t.Fatalf("callbacks: %+v, want 2 delivered", st)
	}
	cov, err := r.idx.Coverage(t.Context(), imtest.AppID)
	if err != nil || cov.Since.IsZero() {
		t.Fatalf("coverage %+v (%v), want the index fed", cov, err)
	}
	since := cov.Since.Add(time.Second)
	time.Sleep(time.Until(since.Add(100 * time.Millisecond)))
	return since
}

// wantGap fails the test unless the index's coverage has a gap after since
// and a dry run of purge user --source auto from since therefore scans the
// histories; lost says what was lost.
func (r *receiverE2E) wantGap(t *testing.T, since time.Time, lost string) {
	t.Helper()
	cov, err := r.idx.Coverage(t.Context(), imtest.AppID)
	if err != nil {
		t.Fatal(err)
	}
	if cov.Covers(since, time.Now()) {
		t.Fatalf("%s, yet the index claims to cover it (gaps %+v)", lost, cov.Gaps)
	}
	if out := r.dryRunAuto("u", since, "v"); !strings.Contains(out, "scanning histories") {
		t.Fatalf("%s, and auto did not scan:\n%s", lost, out)
	}
}

// twoReplicas starts two serve replicas beating every beat: A, reaching
// Redis through the returned proxy (close it to cut A off), on the address
// the emulator's callbacks go to, and B on another, straight to Redis.
func (r *receiverE2E) twoReplicas(t *testing.T, beat time.Duration) (*startedProc, *redisproxy.Proxy) {
	t.Helper()
	proxy, err := redisproxy.Start(r.redis.Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	a := r.serveOn("serve-a", r.addr, "redis://"+proxy.Addr()+"/0", beat)
	r.serveOn("serve-b", freeAddr(t), r.redisURL, beat)
	return a, proxy
}

// waitCallbacks waits until every callback the emulator queued was
// answered (or not) and returns the counts.
func (r *receiverE2E) waitCallbacks() emulator.CallbackStats {
	r.t.Helper()
	if err := r.env.Emu.WaitCallbacks(r.t.Context()); err != nil {
		r.t.Fatal(err)
	}
	return r.env.Emu.CallbackStats()
}

// dryRunAuto is `purge user --source auto --dry-run` of user from since.
func (r *receiverE2E) dryRunAuto(user string, since time.Time, peers string) string {
	r.t.Helper()
	cmd := imrecallCommand(r.t.Context(), r.bin, "purge", "user", "--user", user, "--source", "auto",
		"--since", since.UTC().Format(time.RFC3339), "--peers", peers, "--dry-run")
	cmd.Env = r.environ()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		r.t.Fatalf("purge --source auto: %v\n%s", err, out.String())
	}
	return out.String()
}

// waitBeat waits for the next heartbeat of the index (its alive stamp
// changes) and returns the time it was seen.
func (r *receiverE2E) waitBeat(timeout time.Duration) {
	r.t.Helper()
	ctx := r.t.Context()
	meta := "imrecall:idx:{" + strconv.FormatInt(imtest.AppID, 10) + "}:meta"
	rdb := r.redis.Client()
	first, _ := rdb.HGet(ctx, meta, "alive").Result()
	deadline := time.Now().Add(timeout)
	for {
		now, _ := rdb.HGet(ctx, meta, "alive").Result()
		if now != first && now != "" {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no heartbeat of the index within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReceiverReplicaKilledWhileCutOffFromRedisLeavesAGap: two replicas of
// serve receive callbacks (as behind a load balancer); replica A loses its
// way to Redis (here the proxy it goes through is closed), refuses a callback it cannot index (Tencent does not send it
// again) and keeps its gap in memory, to be written once Redis answers. It
// is killed first (SIGKILL: a liveness probe, an OOM, a node drained). B
// beats all along, so no silence shows: the lost message's gap must not be
// lost with A, or a purge by index of its sender misses it while the index
// claims to cover its time.
func TestReceiverReplicaKilledWhileCutOffFromRedisLeavesAGap(t *testing.T) {
	r := newReceiverE2E(t)
	r.env.Accounts(t, "u", "v")
	g := r.env.Group(t, "Public", "@TGS#replica", "u", "v")
	const beat = 2 * time.Second

	a, proxy := r.twoReplicas(t, beat)

	// Indexed by A while its Redis answers.
	since := r.feed(t, g)
	r.waitBeat(10 * beat)
	if out := r.dryRunAuto("u", since, "v"); strings.Contains(out, "scanning histories") {
		t.Fatalf("with both replicas up, auto scanned:\n%s", out)
	}

	// A is cut off from Redis; a message is sent, its callback refused.
	_ = proxy.Close()
	lost := r.env.SendGroup(t, g, "", 1, "u")
	if st := r.waitCallbacks(); st.Delivered != 2 {
		t.Fatalf("callbacks while A is cut off: %+v, want the third not delivered", st)
	}
	time.Sleep(time.Second) // A gives up on Redis and keeps the gap
	a.kill()

	// B beats on for several beats; then a purge from before the loss.
	for range 3 {
		r.waitBeat(10 * beat)
	}
	cov, err := r.idx.Coverage(t.Context(), imtest.AppID)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	if err := r.idx.Lookup(t.Context(), imtest.AppID, "u", time.Time{}, time.Time{}, func(e msgindex.Entry) error {
		found = found || e.MsgSeq == lost[0]
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !found && cov.Covers(since, time.Now()) {
		t.Fatalf("seq %d of %s was lost with replica A, yet the index claims to cover it (gaps %+v)", lost[0], g, cov.Gaps)
	}
	if out := r.dryRunAuto("u", since, "v"); !strings.Contains(out, "scanning histories") {
		t.Fatalf("after the loss, auto did not scan:\n%s", out)
	}
}

// TestReceiverKilledWhileRedisDownLeavesAGap: the only serve refuses a
// callback while Redis is down and keeps its gap in memory; it is killed
// before Redis comes back, and started again at once. The silence of the
// heartbeat is shorter than two beats, so nothing but the refusal could say
// that the message is missing from the index: the gap must survive the
// process, or a purge by index misses the message.
func TestReceiverKilledWhileRedisDownLeavesAGap(t *testing.T) {
	r := newReceiverE2E(t)
	r.env.Accounts(t, "u", "v")
	g := r.env.Group(t, "Public", "@TGS#restart", "u", "v")
	const beat = 10 * time.Second

	first := r.serveOn("serve-1", r.addr, r.redisURL, beat)
	since := r.feed(t, g)
	r.waitBeat(3 * beat) // the whole outage fits well within two beats from here

	r.redis.Kill()
	lost := r.env.SendGroup(t, g, "", 1, "u")
	if st := r.waitCallbacks(); st.Delivered != 2 {
		t.Fatalf("callbacks while Redis is down: %+v, want the third not delivered", st)
	}
	first.kill()
	r.redis.Restart()
	r.serveOn("serve-2", r.addr, r.redisURL, beat)
	r.waitBeat(3 * beat)

	r.wantGap(t, since, fmt.Sprintf("seq %d of %s was refused while Redis was down", lost[0], g))
}

// TestPurgeByIndexWhileNoReceiverRuns: serve is stopped (SIGTERM) or killed
// and not started again; a message is sent meanwhile and its callback has
// nowhere to go. No beat comes to record the silence, and the index claimed
// to cover the range up to now: `purge --source auto` used it and missed
// the message. Coverage now holds an open gap while no receiver beats.
func TestPurgeByIndexWhileNoReceiverRuns(t *testing.T) {
	for _, c := range []struct {
		name string
		stop func(p *startedProc)
		wait time.Duration // for the killed serve's deadline to pass
	}{
		{"stopped", func(p *startedProc) { _ = p.cmd.Process.Signal(syscall.SIGTERM); _ = p.cmd.Wait() }, 0},
		{"killed", (*startedProc).kill, 5 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newReceiverE2E(t)
			r.env.Accounts(t, "u", "v")
			g := r.env.Group(t, "Public", "@TGS#gone", "u", "v")
			const beat = 2 * time.Second
			p := r.serveOn("serve", r.addr, r.redisURL, beat)
			since := r.feed(t, g)
			r.waitBeat(10 * beat)
			if out := r.dryRunAuto("u", since, "v"); strings.Contains(out, "scanning histories") {
				t.Fatalf("with serve up, auto scanned:\n%s", out)
			}

			c.stop(p)
			lost := r.env.SendGroup(t, g, "", 1, "u")
			if st := r.waitCallbacks(); st.Delivered != 2 {
				t.Fatalf("callbacks with serve gone: %+v, want the third not delivered", st)
			}
			time.Sleep(c.wait)
			r.wantGap(t, since, fmt.Sprintf("seq %d of %s was sent with no serve running", lost[0], g))
		})
	}
}

// TestCallbackArrivingDuringAPurgeByIndex: a message is sent a moment
// before `purge user --source index` starts, and its callback reaches serve
// only after the purge has read the index (here the way from the emulator
// to serve takes 3 s: Tencent's callbacks are sent after the message, and
// take their time). The purge ended done, its coverage without a gap, and
// the message was never recalled.
func TestCallbackArrivingDuringAPurgeByIndex(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	addr := freeAddr(t)
	way, err := redisproxy.Start(addr, 0) // a TCP proxy: here the way of callbacks to serve
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = way.Close() })
	e := e2eOn(t, redistest.Start(t, redistest.WithAOF()),
		imtest.Start(t, emulator.Config{Rate: 200, Callbacks: emulator.CallbackConfig{URL: "http://" + way.Addr() + "/callback", Token: e2eCallbackToken, Timeout: 10 * time.Second}}))
	t.Cleanup(e.env.Emu.Close)
	r := &receiverE2E{e2e: e, addr: addr, idx: msgindex.New(e.redis.Client(), "", 0)}
	r.env.Accounts(t, "u", "v")
	g := r.env.Group(t, "Public", "@TGS#during", "u", "v")
	r.serveOn("serve", addr, r.redisURL, 2*time.Second)
	r.worker("w1")

	since := r.feed(t, g)
	time.Sleep(1000 * time.Millisecond)

	way.SetDelay(3 * time.Second)
	sent := r.env.SendGroup(t, g, "", 1, "u")
	// The default settle (10 s), not the tests' 1 s: the callback takes 3 s.
	jobID := r.created("purge", "user", "--user", "u", "--source", "index", "--since", since.UTC().Format(time.RFC3339),
		"--index-settle", imrecall.DefaultIndexSettle.String(), "--yes", "--json", "--reason", "callback during the purge")
	j := r.waitDone(jobID, 2*time.Minute)
	if st := r.waitCallbacks(); st.Delivered != 3 {
		t.Fatalf("callbacks: %+v, want the third delivered (late)", st)
	}
	jc, err := r.store.Coverage(t.Context(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	recalled := false
	for _, m := range r.env.Emu.GroupMessages(g, "") {
		if m.Seq == sent[0] {
			recalled = m.Recalled
		}
	}
	if !recalled && (jc == nil || len(jc.Gaps) == 0) {
		t.Fatalf("seq %d of %s, sent before the purge, was not recalled, and the job (%s, %+v) names no gap: %+v", sent[0], g, j.Status, j.Counts, jc)
	}
}

// TestPurgeByIndexRightAfterAReplicaIsKilled: replica A, cut off from
// Redis, refuses a callback and is killed; a purge by index starts at once,
// while replica B beats on. A's silence is found only two beats (20 s)
// after its last beat, after the purge has read the index and waited for
// the callbacks in flight (10 s): the job ended done, its coverage without
// a gap, and the message was never recalled. The purge now also waits for
// every replica to beat once more or be found silent.
func TestPurgeByIndexRightAfterAReplicaIsKilled(t *testing.T) {
	r := newReceiverE2E(t)
	r.env.Accounts(t, "u", "v")
	g := r.env.Group(t, "Public", "@TGS#killed", "u", "v")
	const beat = 10 * time.Second
	a, proxy := r.twoReplicas(t, beat)
	r.worker("w1")
	since := r.feed(t, g)

	_ = proxy.Close()
	lost := r.env.SendGroup(t, g, "", 1, "u")
	if st := r.waitCallbacks(); st.Delivered != 2 {
		t.Fatalf("callbacks while A is cut off: %+v, want the third not delivered", st)
	}
	a.kill()
	// At the default settle (10 s), as when the purge missed the message.
	jobID := r.created("purge", "user", "--user", "u", "--source", "index", "--since", since.UTC().Format(time.RFC3339),
		"--index-settle", imrecall.DefaultIndexSettle.String(), "--yes", "--json", "--reason", "right after a kill")
	j := r.waitDone(jobID, 2*time.Minute)
	jc, err := r.store.Coverage(t.Context(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	recalled := false
	for _, m := range r.env.Emu.GroupMessages(g, "") {
		if m.Seq == lost[0] {
			recalled = m.Recalled
		}
	}
	if !recalled && (jc == nil || len(jc.Gaps) == 0) {
		t.Fatalf("seq %d of %s, lost with replica A, was not recalled, and the job (%s, %+v) names no gap: %+v", lost[0], g, j.Status, j.Counts, jc)
	}
}
