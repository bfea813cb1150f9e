package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/redisproxy"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/worker"
	"github.com/redis/go-redis/v9"
)

// chaosDefaultMessages is TestChaos's job size when IMRECALL_CHAOS_MESSAGES
// is unset: small enough for `make test` (about two minutes, most of it
// asynq's lease on the last killed worker's tasks), big enough that the
// kills, the Redis restart, the throttle burst, the Redis latency changes
// and the interrupted planners all land mid-job.
// `make chaos` runs 50,000.
const chaosDefaultMessages = 20000

const (
	chaosWorkers     = 3
	chaosConcurrency = 16
	chaosCap         = 200 // the emulator's cap, Tencent's real one
	// chaosProxied is the worker that reaches Redis through a latency proxy
	// (internal/redisproxy), with the --concurrency docs/REDIS.md asks for
	// up to a ~25 ms round trip, and --dequeuers set for the longest round
	// trip of the run (30 ms): the default is measured once, at start, and
	// the delay changes while the worker runs.
	chaosProxied            = 2
	chaosProxiedConcurrency = 128
	chaosProxiedDequeuers   = 16
)

// chaosKind is what the ground truth expects of a listed message.
type chaosKind int

const (
	chaosLive    chaosKind = iota // exists, not recalled before: the job recalls it
	chaosPre                      // recalled before the job by someone else: not found / already recalled
	chaosMissing                  // a seq the group never had: 10030
	chaosUnknown                  // a MsgKey the conversation never had: 20022
)

// chaosMsg is one line of the list file.
type chaosMsg struct {
	target jobs.Target
	item   string // seq or MsgKey
	kind   chaosKind
}

func (m chaosMsg) key() string { return chaosKey(m.target, m.item) }

// chaosKey names a message the way fixture.check does: target, then item.
func chaosKey(t jobs.Target, item string) string { return t.String() + "|" + item }

// chaosPlan is the seeded app and the list file of the job.
type chaosPlan struct {
	path      string
	msgs      map[string]chaosMsg
	histories []jobs.Target // every group history of the app (group or topic)
	pairs     [][2]string   // the conversations whose messages were listed
	byKind    map[chaosKind]int
	// side are the list files of the interrupted planners: messages left off
	// the main list (every fifth group seq, every tenth one-to-one message),
	// each existing and not recalled before; sideOf names each one's list.
	side   [2]chaosSide
	sideOf map[string]int
}

// chaosSide is the list of one interrupted planner.
type chaosSide struct {
	path string
	msgs []chaosMsg
}

// seedChaos generates an app in the emulator's memory (fast: no HTTP) and
// writes a list of about n messages to recall: group messages over every
// recallable history (Community topics included) with one in five left
// alone, one-to-one messages of 25 conversations with one in ten left alone,
// and a few messages recalled beforehand, missing seqs and unknown MsgKeys.
func seedChaos(t *testing.T, e *e2e, n int) *chaosPlan {
	t.Helper()
	c2cWant := n / 10
	groupWant := n - c2cWant
	groups := max(20, n/250)
	emu := e.env.Emu
	ds, err := emu.Generate(emulator.DatasetSpec{
		Groups: groups, Users: 1000, GroupMessages: groupWant*5/4 + 20*groups, C2CMessages: c2cWant*20/9 + 200,
		HeavySenders: 1, HeavyGroups: groups / 2, Peers: 25, Topics: 2, Seed: 23,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &chaosPlan{msgs: map[string]chaosMsg{}, byKind: map[chaosKind]int{}, sideOf: map[string]int{}}
	var sides [2][]chaosMsg
	sideWant := n / 40
	addSide := func(m chaosMsg) {
		i := len(p.sideOf) % 2
		sides[i] = append(sides[i], m)
		p.side[i].msgs = append(p.side[i].msgs, m)
		p.sideOf[m.key()] = i
	}
	var lines []chaosMsg
	add := func(m chaosMsg) {
		lines = append(lines, m)
		p.msgs[m.key()] = m
		p.byKind[m.kind]++
	}
	ctx := t.Context()
	for _, g := range ds.Groups {
		for _, topic := range append([]string{""}, g.Topics...) {
			p.histories = append(p.histories, jobs.Target{GroupID: g.GroupID, TopicID: topic})
		}
	}
	listed := 0
	for hi, h := range p.histories {
		msgs := emu.GroupMessages(h.GroupID, h.TopicID)
		if len(msgs) == 0 || listed >= groupWant {
			continue // AVChatRoom keeps no history
		}
		first := true
		for _, m := range msgs {
			if m.Seq%5 == 0 && !m.Recalled && len(p.sideOf) < 2*sideWant {
				addSide(chaosMsg{target: h, item: strconv.FormatInt(m.Seq, 10), kind: chaosLive})
			}
			if m.Seq%5 == 0 || listed >= groupWant {
				continue
			}
			kind := chaosLive
			if first && hi%8 == 3 {
				kind = chaosPre
				if _, err := e.env.Client.RecallGroup(ctx, h.GroupID, h.TopicID, []int64{m.Seq}); err != nil {
					t.Fatal(err)
				}
			}
			first = false
			add(chaosMsg{target: h, item: strconv.FormatInt(m.Seq, 10), kind: kind})
			listed++
		}
		if hi%15 == 7 {
			for s := len(msgs) + 1; s <= len(msgs)+3; s++ {
				add(chaosMsg{target: h, item: strconv.Itoa(s), kind: chaosMissing})
				listed++
			}
		}
	}
	spammer := ds.HeavySenders[0]
	listed = 0
	for pi, peer := range ds.PeersOf[spammer] {
		p.pairs = append(p.pairs, [2]string{spammer, peer})
		first := true
		for k, m := range emu.C2CMessages(spammer, peer) {
			if k%10 == 9 && !m.Recalled && pi < 4 {
				addSide(chaosMsg{target: jobs.Target{From: m.From, To: m.To}, item: m.MsgKey, kind: chaosLive})
			}
			if k%10 == 9 || listed >= c2cWant {
				continue
			}
			kind := chaosLive
			if first && pi%5 == 2 {
				kind = chaosPre
				if _, err := e.env.Client.AdminMsgWithdraw(ctx, tim.AdminMsgWithdrawRequest{FromAccount: m.From, ToAccount: m.To, MsgKey: m.MsgKey}); err != nil {
					t.Fatal(err)
				}
			}
			first = false
			add(chaosMsg{target: jobs.Target{From: m.From, To: m.To}, item: m.MsgKey, kind: kind})
			listed++
		}
	}
	for i := range 5 {
		add(chaosMsg{target: jobs.Target{From: spammer, To: ds.PeersOf[spammer][0]}, item: fmt.Sprintf("9999%d_1_1", i), kind: chaosUnknown})
	}

	// Interleave group and one-to-one lines, so that both APIs work at once.
	rand.New(rand.NewPCG(23, 5)).Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	dir := t.TempDir()
	p.path = writeChaosList(t, filepath.Join(dir, "chaos.jsonl"), lines)
	for i := range sides {
		p.side[i].path = writeChaosList(t, filepath.Join(dir, fmt.Sprintf("side%d.jsonl", i)), sides[i])
	}
	return p
}

// writeChaosList writes the list file of lines at path.
func writeChaosList(t *testing.T, path string, lines []chaosMsg) string {
	t.Helper()
	var buf bytes.Buffer
	for _, m := range lines {
		var line any
		if m.target.IsGroup() {
			seq, _ := strconv.ParseInt(m.item, 10, 64)
			line = struct {
				GroupID string `json:"GroupId"`
				TopicID string `json:"TopicId,omitempty"`
				MsgSeq  int64  `json:"MsgSeq"`
			}{m.target.GroupID, m.target.TopicID, seq}
		} else {
			line = struct {
				From   string `json:"From_Account"`
				To     string `json:"To_Account"`
				MsgKey string `json:"MsgKey"`
			}{m.target.From, m.target.To, m.item}
		}
		b, err := json.Marshal(line)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(append(b, '\n'))
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// chaosProc is one incarnation of a worker process.
type chaosProc struct {
	cmd    *exec.Cmd
	logf   *os.File
	exited chan struct{}
}

// chaosPool runs the worker processes of TestChaos: started, killed and
// restarted from the test goroutine only.
type chaosPool struct {
	e     *e2e
	dir   string
	procs []*chaosProc
	gen   []int
	logs  []string // every incarnation's log file, in start order
	// proxyURL is the Redis URL of worker chaosProxied (through the latency
	// proxy); empty: it dials Redis directly like the others.
	proxyURL string
}

// newChaosPool returns a pool of n workers whose logs are kept (and named)
// if the test fails.
// startChaosPool starts chaosWorkers worker processes, worker chaosProxied
// reaching Redis through a latency proxy delay away (the proxy is
// returned, to change it; closed when the test ends).
func startChaosPool(t *testing.T, e *e2e, delay time.Duration) (*chaosPool, *redisproxy.Proxy) {
	t.Helper()
	proxy, err := redisproxy.Start(e.redis.Addr(), delay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	pool := newChaosPool(e, chaosWorkers)
	pool.proxyURL = "redis://" + proxy.Addr() + "/0"
	for i := range chaosWorkers {
		pool.start(i)
	}
	return pool, proxy
}

func newChaosPool(e *e2e, n int) *chaosPool {
	dir, err := os.MkdirTemp("", "imrecall-chaos-")
	if err != nil {
		e.t.Fatal(err)
	}
	p := &chaosPool{e: e, dir: dir, procs: make([]*chaosProc, n), gen: make([]int, n)}
	e.t.Cleanup(func() {
		for i := range p.procs {
			p.term(i)
		}
		if e.t.Failed() {
			e.t.Logf("worker logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return p
}

// start starts worker i. It logs at info level (IMRECALL_CHAOS_LOG_LEVEL=debug
// adds every call): the worker logs there each message it counts recalled
// after a lost answer.
func (p *chaosPool) start(i int) {
	t := p.e.t
	t.Helper()
	p.gen[i]++
	path := filepath.Join(p.dir, fmt.Sprintf("w%d-%02d.log", i+1, p.gen[i]))
	logf, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	level := cmp.Or(os.Getenv("IMRECALL_CHAOS_LOG_LEVEL"), "info")
	// A short reconcile interval: the interrupted planners' jobs settle
	// (and their journals are queued) a few seconds after their leases lapse.
	args := []string{"worker", "--max-attempts", "10", "--log-level", level, "--reconcile-interval", "2s"}
	env := p.e.environ()
	if i == chaosProxied && p.proxyURL != "" {
		args = append(args, "--concurrency", strconv.Itoa(chaosProxiedConcurrency), "--dequeuers", strconv.Itoa(chaosProxiedDequeuers))
		env = append(env, "IMRECALL_REDIS="+p.proxyURL) // the last value of a key wins
	} else {
		args = append(args, "--concurrency", strconv.Itoa(chaosConcurrency))
	}
	cmd := imrecallCommand(context.Background(), p.e.bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr := &chaosProc{cmd: cmd, logf: logf, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(pr.exited)
	}()
	p.procs[i] = pr
	p.logs = append(p.logs, path)
}

// kill kills worker i with SIGKILL and waits until it is gone.
func (p *chaosPool) kill(i int) {
	pr := p.procs[i]
	if pr == nil {
		return
	}
	_ = pr.cmd.Process.Signal(syscall.SIGKILL)
	<-pr.exited
	pr.logf.Close()
	p.procs[i] = nil
}

// term stops worker i with SIGTERM (calls in flight finish and are recorded),
// or SIGKILL if it takes longer than its shutdown timeout allows.
func (p *chaosPool) term(i int) {
	pr := p.procs[i]
	if pr == nil {
		return
	}
	_ = pr.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pr.exited:
	case <-time.After(2*tim.DefaultTimeout + 20*time.Second):
		p.e.t.Errorf("worker %d did not stop within its shutdown timeout after SIGTERM", i+1)
		_ = pr.cmd.Process.Signal(syscall.SIGKILL)
		<-pr.exited
	}
	pr.logf.Close()
	p.procs[i] = nil
}

// count counts the lines of every worker log containing s.
func (p *chaosPool) count(s string) int {
	n := 0
	for _, path := range p.logs {
		b, _ := os.ReadFile(path)
		n += bytes.Count(b, []byte(s))
	}
	return n
}

// rtts lists the Redis round trip each incarnation of worker i measured at
// its start (the redis_rtt of its start line), in start order.
func (p *chaosPool) rtts(i int) []string {
	var out []string
	prefix := fmt.Sprintf("w%d-", i+1)
	for _, path := range p.logs {
		if !strings.HasPrefix(filepath.Base(path), prefix) {
			continue
		}
		b, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n") {
			if v := chaosLogAttr(line, "redis_rtt"); v != "" {
				out = append(out, v)
				break
			}
		}
	}
	return out
}

// verifyFailures counts, per group and seq, the history checks after a
// 10030 that failed (worker.LogCheckAfterGoneFailed): each makes the worker
// send the recall once more. Keys are group_id|seq (the log does not name
// the topic).
func (p *chaosPool) verifyFailures() map[string]int { return verifyFailuresIn(p.logs) }

// verifyFailuresIn counts, by group id|seq, the history checks after a
// "not found" that failed (worker.LogCheckAfterGoneFailed) in the logs.
func verifyFailuresIn(logs []string) map[string]int {
	out := map[string]int{}
	for _, path := range logs {
		b, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, worker.LogCheckAfterGoneFailed) {
				continue
			}
			g, s := chaosLogAttr(line, "group_id"), chaosLogAttr(line, "item")
			if g != "" && s != "" {
				out[g+"|"+s]++
			}
		}
	}
	return out
}

// chaosLogAttr returns the value of key=value in a text-format log line.
func chaosLogAttr(line, key string) string {
	_, v, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return ""
	}
	if strings.HasPrefix(v, `"`) {
		if u, err := strconv.QuotedPrefix(v); err == nil {
			v, _ = strconv.Unquote(u)
			return v
		}
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

// tails returns the end of the latest log of each worker.
func (p *chaosPool) tails() string {
	var sb strings.Builder
	latest := map[string]string{}
	for _, path := range p.logs {
		w, _, _ := strings.Cut(filepath.Base(path), "-")
		latest[w] = path
	}
	for _, w := range slices.Sorted(maps.Keys(latest)) {
		b, _ := os.ReadFile(latest[w])
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		fmt.Fprintf(&sb, "--- %s (tail):\n%s\n", filepath.Base(latest[w]), b)
	}
	return sb.String()
}

// jobStates reads every message state of a job (p, s<n>, a<n>, r,
// d:<code>), keyed like chaosKey, through jobs.Store.States, which knows
// where each layout keeps them (docs/REDIS.md "Memory per message").
func jobStates(ctx context.Context, rdb redis.UniversalClient, jobID string) (map[string]string, error) {
	out := map[string]string{}
	err := jobs.NewStore(rdb, "").States(ctx, jobID, func(t jobs.Target, item, st string) error {
		out[chaosKey(t, item)] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the message states of job %s: %w", jobID, err)
	}
	return out, nil
}

// failedDeliveries counts the deliveries of a job's tasks that ended before
// their task did: a killed worker's, recovered by asynq after its lease, a
// handler's that could not reach Redis, a snooze. Each waits in asynq's
// retry set for at least a second (worker.RetryDelay) before it is delivered
// again; the watcher polls the set every 100 ms and, for each delivery, reads
// the states of its task's messages, which nobody changes meanwhile.
type failedDeliveries struct {
	seen       map[string]bool
	lost       map[string]int // message → deliveries that left it sent and unrecorded
	deliveries int            // deliveries seen
	lossy      int            // deliveries that left a message sent and unrecorded
}

// watchFailedDeliveries watches the job's tasks (every job's if jobID is
// empty) until the returned stop is called (or the test ends); read the
// result only after stop.
func watchFailedDeliveries(t *testing.T, e *e2e, jobID string) (*failedDeliveries, func()) {
	w := &failedDeliveries{seen: map[string]bool{}, lost: map[string]int{}}
	rdb := e.redis.Client()
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: e.redis.Addr()})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			w.poll(ctx, insp, rdb, jobID)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			_ = insp.Close()
		})
	}
	t.Cleanup(stop)
	return w, stop
}

func (w *failedDeliveries) poll(ctx context.Context, insp *asynq.Inspector, rdb *redis.Client, jobID string) {
	store := jobs.NewStore(rdb, "")
	for _, q := range tasks.AllQueues() {
		infos, err := insp.ListRetryTasks(q, asynq.PageSize(1000))
		if err != nil {
			continue // a queue never used, or Redis restarting
		}
		for _, info := range infos {
			id := fmt.Sprintf("%s/%d/%d/%s", info.ID, info.Retried, info.LastFailedAt.Unix(), info.LastErr)
			if w.seen[id] {
				continue
			}
			var target jobs.Target
			var items []string
			var seqs []int64
			var taskJob string
			task := asynq.NewTask(info.Type, info.Payload)
			switch info.Type {
			case tasks.TypeGroupRecall:
				p, err := tasks.DecodeGroupRecall(task)
				if err != nil || jobID != "" && p.JobID != jobID {
					w.seen[id] = true
					continue
				}
				target, taskJob = jobs.Target{GroupID: p.GroupID, TopicID: p.TopicID}, p.JobID
				seqs = p.Seqs
				for _, s := range p.Seqs {
					items = append(items, strconv.FormatInt(s, 10))
				}
			case tasks.TypeC2CWithdraw:
				p, err := tasks.DecodeC2CWithdraw(task)
				if err != nil || jobID != "" && p.JobID != jobID {
					w.seen[id] = true
					continue
				}
				target, items, taskJob = jobs.Target{From: p.From, To: p.To}, []string{p.MsgKey}, p.JobID
			default:
				w.seen[id] = true
				continue
			}
			// A peek counts nothing: a message sent with no answer is one
			// with earlier sends, not all answered (state s<n>).
			var b jobs.Begin
			var err error
			if target.IsGroup() {
				b, err = store.PeekGroup(ctx, taskJob, target, seqs)
			} else {
				b, err = store.PeekC2C(ctx, taskJob, target, items[0])
			}
			if err != nil {
				continue // try again at the next poll
			}
			w.seen[id] = true
			w.deliveries++
			lossy := false
			for i, st := range b.States {
				if st > 0 && !b.Answered[i] {
					w.lost[chaosKey(target, items[i])]++
					lossy = true
				}
			}
			if lossy {
				w.lossy++
			}
		}
	}
}

// TestChaos is issue 7's chaos suite: a recall job of IMRECALL_CHAOS_MESSAGES
// messages (default chaosDefaultMessages) over groups, Community topics and
// one-to-one chats, run by three worker processes that are killed with
// SIGKILL every few seconds and restarted, through a Redis (AOF, appendfsync
// always) that is killed and restarted mid-job, against an emulator at the
// real cap of 200 calls/s that answers about 10 % of calls with retryable
// codes, 2 % with HTTP 502, 0.5 % with HTTP 502 after the call took effect
// (its answer lost), hangs 1 % (first below, then above the client's
// timeout) and, for two seconds mid-job, throttles every call (60018).
// One of the workers reaches Redis through a latency proxy
// (internal/redisproxy) whose delay goes 0 → 5 ms → 15 ms → 0 each way as
// the job advances. Two `recall file` planners of side lists (messages left
// off the main list) are stopped mid-plan, paused by the test hook between
// planning and queueing: one SIGKILLed, one SIGINTed, each then run again.
//
// Invariants at the end:
//   - the job is done; every planned message is in exactly one terminal state
//     (read one by one), and the counters equal the recount;
//   - ground truth: every listed message that existed is recalled on the
//     emulator; none of the messages left off the list is touched; the job's
//     recalled and dead-lettered counts, and each dead letter's code, are
//     what the emulator's state implies;
//   - no message is recalled twice unless an answer was lost (see below);
//   - the cap is never exceeded: the emulator refused no call for the cap
//     (60007) and accepted at most 200 calls of any API in any sliding second;
//   - each interrupted planner's job settles by itself (the workers'
//     reconciler): failed, planning interrupted, nothing pending, `jobs wait`
//     returns; its re-run ends done; each side-list message is recalled on
//     the emulator by exactly one of the two jobs, the other found it gone.
//
// Double recalls. The emulator recalls a message once; every later recall
// request for it is counted (RecallRequests). A worker re-sends a recall
// that already took effect only when it cannot know the earlier call's
// outcome: that call's answer was lost, and — for a group message — the
// history check that should catch it failed too (an injected fault on
// group_msg_get_simple). One-to-one messages have no such check: after a
// lost answer they are sent again, answered 20023 and counted recalled.
// An answer is lost when a delivery of a task ends with a message sent and
// no outcome recorded: its worker was killed, or it could not reach Redis
// to record (while Redis restarts, and for a second or so after, while the
// clients' connection pools come back). The send is recorded (s<n>) before
// the call, so such a message is left in a sent state, and its task goes
// through asynq's retry set, where it waits at least a second (the worker's
// RetryDelay) before another delivery. failedDeliveries watches that set
// and counts, per message, the deliveries that left it sent and unrecorded;
// around the Redis restart the test also counts every message sent then.
// A message in doubt is also sent again each time the history check after
// its 10030 fails (the worker logs worker.LogCheckAfterGoneFailed with the
// group and seq: it retries the recall, not just the check).
// The invariant is per message: recall requests after it was recalled ≤ its
// lost answers + (if any) those failed checks, +1 for a message recalled
// before the job, which the job's first request finds recalled. A message
// whose answer was never lost is requested exactly once; one requested
// again without a lost answer is a bug. (A call that times out on the
// client although the emulator acted would also lose its answer; the
// emulator's injected hangs never act, so only a stall of over 5 s in
// answering could cause one.)
//
// A message recalled before the job ends dead-lettered (10030 or 20023), or
// counted recalled if one of the job's calls for it went unanswered (a
// timeout, a kill): the job cannot tell who recalled it. Both are accepted.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test")
	}
	n := chaosDefaultMessages
	if s := os.Getenv("IMRECALL_CHAOS_MESSAGES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 5000 {
			t.Fatalf("IMRECALL_CHAOS_MESSAGES=%q: want a number of messages, at least 5000 (so that the chaos lands mid-job)", s)
		}
		n = v
	}
	testStart := time.Now()
	e := newE2E(t, emulator.Config{Rate: chaosCap, Latency: 5 * time.Millisecond, LatencyMax: 25 * time.Millisecond, Seed: 7})
	plan := seedChaos(t, e, n)
	seeded := time.Since(testStart)
	e.env.Emu.ResetStats()
	ctx := t.Context()
	rdb := e.redis.Client()

	hangBelow, hangAbove := tim.DefaultTimeout*2/5, tim.DefaultTimeout+time.Second
	faults := func(hangFor time.Duration) emulator.Faults {
		return emulator.Faults{
			Codes:     map[int]float64{91000: 0.04, 10002: 0.02},
			ItemCodes: map[int]float64{10002: 0.04},
			HTTP502:   0.02,
			// the call takes effect, its answer is lost: 0.5 % of calls
			HTTP502AfterEffect: 0.005,
			Hang:               0.01,
			HangFor:            hangFor,
		}
	}
	hangFor := hangBelow
	e.env.Emu.SetFaults(faults(hangFor))

	id := e.created("recall", "file", plan.path, "--yes", "--json", "--reason", "chaos test")
	jobStart := time.Now()

	// Worker chaosProxied reaches Redis through a proxy whose delay changes
	// during the run (latencySteps). Closed after the workers stop.
	pool, proxy := startChaosPool(t, e, 0)

	// Lost answers: the deliveries (of any job's tasks) that left a message
	// sent and unrecorded, and the messages sent around the Redis restart.
	lost, stopWatch := watchFailedDeliveries(t, e, "")
	atRestart := map[string]string{}
	var sideJobs []string // per interrupted planner: its job, then the re-run's
	sent := func(what string) map[string]string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		out := map[string]string{}
		for _, jid := range append([]string{id}, sideJobs...) {
			for {
				states, err := jobStates(ctx, rdb, jid)
				if err == nil {
					maps.DeleteFunc(states, func(_, st string) bool { return !strings.HasPrefix(st, "s") })
					maps.Copy(out, states)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("reading message states %s: %v", what, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		return out
	}
	sideFinished := func() bool {
		for _, jid := range sideJobs {
			if sj, err := e.store.Get(ctx, jid); err != nil || !sj.Finished() {
				return false
			}
		}
		return true
	}
	// Redis latency of the proxied worker, each way, from a share of the job done.
	latencySteps := []struct {
		at    float64
		delay time.Duration
	}{{0.05, 5 * time.Millisecond}, {0.25, 15 * time.Millisecond}, {0.75, 0}}
	// The interrupted planners: `recall file` of a side list, paused by the
	// test hook after some tasks queued, then killed (SIGKILL: its lease
	// lapses, a worker's reconciler settles the job and queues its journal)
	// or interrupted (SIGINT: it queues what it planned and stops), and the
	// same command run again at once.
	interrupts := []struct {
		at      float64
		sig     syscall.Signal
		pauseAt int
	}{{0.15, syscall.SIGKILL, 5}, {0.3, syscall.SIGINT, 20}}

	// The chaos runs on this goroutine, in one loop that watches the job:
	// kills, restarts and snapshots never race each other, and t.Fatal
	// stays on the test goroutine.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	timeout := 5*time.Minute + time.Duration(n)*6*time.Millisecond
	killFor := 20*time.Second + time.Duration(n)*time.Millisecond // kills stop after this, or at 90 % done
	var (
		kills, terms, latencyStep, interrupted int
		mainDone                               time.Time
		killing                                = true
		nextKill, lastKill, lastTerm, burst    time.Time
		redisRestarted, hangSwitched           bool
		burstStarted, burstEnded               bool
		burstStats                             map[string]emulator.APIStats
		burstCalls                             int64
		j                                      jobs.Job
	)
	lastKill = jobStart
	for {
		got, err := e.store.Get(ctx, id)
		now := time.Now()
		if now.Sub(jobStart) > timeout {
			t.Fatalf("job %s not finished after %v: %+v (last read error %v)\nasynq: %s\n%s", id, timeout, j, err, asynqSummary(e), pool.tails())
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		j = got
		if j.Finished() {
			if mainDone.IsZero() {
				mainDone = now
			}
			if interrupted == len(interrupts) && sideFinished() {
				break
			}
		}
		done := float64(j.Counts.Recalled+j.Counts.DeadLettered) / float64(max(j.Counts.Planned, 1))
		switch {
		case burstStarted && !burstEnded && now.After(burst):
			e.env.Emu.SetFaults(faults(hangFor))
			burstEnded = true
			for api, st := range e.env.Emu.Stats() {
				burstCalls += st.Accepted - burstStats[api].Accepted
			}
			t.Logf("%5.1fs throttle burst over: %d calls answered 60018", time.Since(jobStart).Seconds(), burstCalls)

		case !redisRestarted && done >= 0.4:
			// Kill Redis mid-job and bring it back on the same data.
			atRestart = sent("before the Redis kill")
			e.redis.Kill()
			time.Sleep(time.Second)
			e.redis.Restart()
			maps.Copy(atRestart, sent("after the Redis restart"))
			redisRestarted = true
			t.Logf("%5.1fs Redis killed and restarted at %.0f%% done", time.Since(jobStart).Seconds(), done*100)

		case latencyStep < len(latencySteps) && done >= latencySteps[latencyStep].at:
			proxy.SetDelay(latencySteps[latencyStep].delay)
			latencyStep++
			t.Logf("%5.1fs worker %d's Redis now %v away each way", time.Since(jobStart).Seconds(), chaosProxied+1, proxy.Delay())

		case interrupted < len(interrupts) && done >= interrupts[interrupted].at:
			in := interrupts[interrupted]
			args := []string{"recall", "file", plan.side[interrupted].path, "--yes", "--json", "--reason", "chaos test: interrupted planner"}
			e.startInterrupted(in.sig, in.pauseAt, args...)
			first := e.newestJob()
			out, err := e.run(args...)
			if err != nil {
				t.Fatal(err)
			}
			sideJobs = append(sideJobs, first, jobIDOf(t, out))
			interrupted++
			t.Logf("%5.1fs recall file of %d messages: %s after %d tasks queued (job %s), run again (job %s)",
				time.Since(jobStart).Seconds(), len(plan.side[interrupted-1].msgs), in.sig, in.pauseAt, first, sideJobs[len(sideJobs)-1])

		case !hangSwitched && done >= 0.5:
			hangFor, hangSwitched = hangAbove, true
			e.env.Emu.SetFaults(faults(hangFor))
			t.Logf("%5.1fs hangs now last %v, above the client's timeout", time.Since(jobStart).Seconds(), hangFor)

		case !burstStarted && done >= 0.6:
			burstStats = e.env.Emu.Stats()
			e.env.Emu.SetFaults(emulator.Faults{Codes: map[int]float64{60018: 1}})
			burstStarted, burst = true, now.Add(2*time.Second)
			t.Logf("%5.1fs throttle burst: every call answered 60018 for 2 s", time.Since(jobStart).Seconds())

		case killing && (done >= 0.9 || now.Sub(jobStart) > killFor):
			killing = false
			t.Logf("%5.1fs kills stop at %.0f%% done", time.Since(jobStart).Seconds(), done*100)

		case killing && nextKill.IsZero() && done >= 0.02:
			nextKill = now.Add(500*time.Millisecond + rand.N(1500*time.Millisecond))

		case killing && !nextKill.IsZero() && now.After(nextKill):
			i := rng.IntN(chaosWorkers)
			pool.kill(i)
			pool.start(i)
			kills++
			lastKill = time.Now()
			nextKill = lastKill.Add(2*time.Second + time.Duration(rng.Int64N(int64(3*time.Second))))

		case !killing && time.Since(lastKill) > 62*time.Second && time.Since(lastTerm) > 35*time.Second:
			// asynq hands a dead worker's tasks to others once their lease
			// has been expired for 30 s, when a recoverer runs: at a worker's
			// start, then every minute. A graceful restart (SIGTERM) runs it
			// now rather than up to a minute later.
			i := terms % chaosWorkers
			pool.term(i)
			pool.start(i)
			terms++
			lastTerm = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	jobWall := mainDone.Sub(jobStart)
	stopWatch()

	// The job: done, every message in one terminal state, counters = recount.
	if j.Status != jobs.StatusDone || j.FinishedAt == nil {
		t.Fatalf("job %s: status %s, finished_at %v", id, j.Status, j.FinishedAt)
	}
	c := j.Counts
	if c.Planned != int64(len(plan.msgs)) || c.Pending != 0 || c.Recalled+c.DeadLettered != c.Planned {
		t.Errorf("counts %+v, want %d planned, none pending", c, len(plan.msgs))
	}
	rc, err := e.store.Recount(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Matches(c); err != nil {
		t.Error(err)
	}
	states, err := jobStates(ctx, rdb, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != len(plan.msgs) {
		t.Errorf("job has %d message states, the list %d messages", len(states), len(plan.msgs))
	}
	dead := map[string]jobs.DeadLetter{}
	if err := e.store.DeadLetters(ctx, id, func(d jobs.DeadLetter) error {
		dead[chaosKey(d.Target(), d.Item())] = d
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Ground truth, message by message.
	group := map[string]emulator.GroupMessage{}
	for _, h := range plan.histories {
		for _, m := range e.env.Emu.GroupMessages(h.GroupID, h.TopicID) {
			group[chaosKey(h, strconv.FormatInt(m.Seq, 10))] = m
		}
	}
	c2c := map[string]emulator.C2CMessage{}
	for _, pr := range plan.pairs {
		for _, m := range e.env.Emu.C2CMessages(pr[0], pr[1]) {
			c2c[chaosKey(jobs.Target{From: m.From, To: m.To}, m.MsgKey)] = m
		}
	}
	// truth is what the emulator holds of message m (key k): whether it is
	// recalled, and how many recall requests it received once it was.
	// truth is what the emulator knows of a message: recalled, the recall
	// requests after it was, and the calls that reached it whose answer the
	// gateway lost (a 502 after the effect, each a lost answer).
	truth := func(m chaosMsg, k string) (recalled bool, requests, answersLost int) {
		if m.target.IsGroup() {
			gm, ok := group[k]
			return ok && gm.Recalled, gm.RecallRequests, gm.AnswersLost
		}
		cm, ok := c2c[k]
		return ok && cm.Recalled, cm.RecallRequests, cm.AnswersLost
	}
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	verifyFails := pool.verifyFailures()
	var recalledByJob, unattributedByJob, deadByJob, reattributed, doubles, suspected, resent int64
	for k, m := range plan.msgs {
		st, ok := states[k]
		if !ok {
			bad("%s: listed, but the job has no state for it", k)
			continue
		}
		isRecalled := st == "r" || st == "u" // u: recalled, attribution unknown
		if !isRecalled && !strings.HasPrefix(st, "d:") {
			bad("%s: state %q is not terminal", k, st)
			continue
		}
		if d, ok := dead[k]; ok != strings.HasPrefix(st, "d:") || (ok && "d:"+d.Code != st) {
			bad("%s: state %q, dead letter %+v", k, st, d)
		}
		recalled, requests, answersLost := truth(m, k)
		lostHere := lost.lost[k] + answersLost
		if _, ok := atRestart[k]; ok {
			lostHere++
		}
		if lostHere > 0 {
			suspected++
		}
		doubles += int64(requests)
		allowed := lostHere
		if m.kind == chaosPre {
			allowed++ // the job's own first request finds it recalled
		}
		if m.target.IsGroup() && allowed > 0 {
			allowed += verifyFails[m.target.GroupID+"|"+m.item]
		}
		if requests > 0 && m.kind == chaosLive {
			resent++
		}
		switch m.kind {
		case chaosLive:
			if !recalled || !isRecalled {
				bad("%s: recalled on the emulator %v, job state %q; want recalled and counted recalled", k, recalled, st)
			}
		case chaosPre:
			want := "d:10030"
			if !m.target.IsGroup() {
				want = "d:20023"
			}
			switch st {
			case want:
			case "u":
				reattributed++ // a call for it went unanswered: the job cannot tell who recalled it, and says so
			default:
				bad("%s: recalled before the job; job state %q, want %s, or u after a lost answer", k, st, want)
			}
		case chaosMissing:
			if st != "d:10030" {
				bad("%s: never existed; job state %q, want d:10030", k, st)
			}
		case chaosUnknown:
			if st != "d:20022" {
				bad("%s: never existed; job state %q, want d:20022", k, st)
			}
		}
		if requests > allowed {
			bad("%s: %d recall requests after it was recalled; allowed %d (%d lost answers, then failed history checks; kind %d, state %q)", k, requests, allowed, lostHere, m.kind, st)
		}
		if isRecalled {
			recalledByJob++
			if st == "u" {
				unattributedByJob++
			}
		} else {
			deadByJob++
		}
	}
	// The interrupted planners' messages: each recalled on the emulator, by
	// exactly one of its two jobs (the interrupted one, or the re-run); the
	// other, if it planned the message, found it gone. Both jobs settled by
	// themselves, the interrupted one failed with planning interrupted.
	var sideDoubles, sideBy1 int64
	terminal := func(st string) bool { return st == "r" || st == "u" || strings.HasPrefix(st, "d:") }
	for i, sd := range plan.side {
		first, second := sideJobs[2*i], sideJobs[2*i+1]
		j1, _ := e.settleInterrupted(first)
		j2 := e.waitDone(second, time.Minute)
		if j2.Status != jobs.StatusDone || j2.Counts.Pending != 0 || j2.Counts.Planned != int64(len(sd.msgs)) {
			t.Errorf("re-run %s of interrupted job %s: %s, counts %+v; want done, %d planned, none pending", second, first, j2.Status, j2.Counts, len(sd.msgs))
		}
		s12 := [2]map[string]string{}
		for x, sj := range []jobs.Job{j1, j2} {
			rc, err := e.store.Recount(ctx, sj.ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := rc.Matches(sj.Counts); err != nil {
				t.Errorf("job %s: %v", sj.ID, err)
			}
			if s12[x], err = jobStates(ctx, rdb, sj.ID); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("interrupted planner %d: job %s %s (%s), planned %d, recalled %d; re-run %s planned %d, recalled %d, dead-lettered %d",
			i+1, first, j1.Status, j1.Error, j1.Counts.Planned, j1.Counts.Recalled, second, j2.Counts.Planned, j2.Counts.Recalled, j2.Counts.DeadLettered)
		for _, m := range sd.msgs {
			k := m.key()
			st1, st2 := s12[0][k], s12[1][k]
			recalled, requests, answersLost := truth(m, k)
			sideDoubles += int64(requests)
			rec1, rec2 := st1 == "r" || st1 == "u", st2 == "r" || st2 == "u"
			switch {
			case !recalled:
				bad("%s (interrupted planner %d): not recalled on the emulator; states %q, %q", k, i+1, st1, st2)
			case !terminal(st2) || st1 != "" && !terminal(st1):
				bad("%s (interrupted planner %d): states %q (interrupted job), %q (re-run); want terminal", k, i+1, st1, st2)
			case !rec1 && !rec2 || st1 == "r" && st2 == "r":
				bad("%s (interrupted planner %d): states %q (interrupted job), %q (re-run); want recalled by exactly one", k, i+1, st1, st2)
			}
			for _, st := range []string{st1, st2} {
				if code, ok := strings.CutPrefix(st, "d:"); ok && jobs.CategoryOf(code) == jobs.NeedsAttention {
					bad("%s (interrupted planner %d): dead letter %s needs attention; want recalled, or found gone", k, i+1, code)
				}
			}
			if rec1 {
				sideBy1++
			}
			allowed := lost.lost[k] + answersLost
			if _, ok := atRestart[k]; ok {
				allowed++
			}
			if st1 != "" {
				allowed++ // both jobs planned it: the later request finds it recalled
			}
			if m.target.IsGroup() && allowed > 0 {
				allowed += verifyFails[m.target.GroupID+"|"+m.item]
			}
			if requests > allowed {
				bad("%s (interrupted planner %d): %d recall requests after it was recalled; allowed %d (states %q, %q)", k, i+1, requests, allowed, st1, st2)
			}
		}
	}

	// Nothing off the lists is touched.
	untouched := func(k string, recalled bool, requests int) {
		_, listed := plan.msgs[k]
		if _, side := plan.sideOf[k]; side {
			listed = true
		}
		if !listed && (recalled || requests > 0) {
			bad("%s: not listed, yet recalled %v with %d further requests", k, recalled, requests)
		}
	}
	for k, m := range group {
		untouched(k, m.Recalled, m.RecallRequests)
	}
	for k, m := range c2c {
		untouched(k, m.Recalled, m.RecallRequests)
	}
	// ... and, in total, over every conversation and group of the app.
	tr := e.env.Emu.Truth()
	onEmu := int64(tr.GroupRecalled + tr.C2CRecalled)
	if want := int64(plan.byKind[chaosLive] + plan.byKind[chaosPre] + len(plan.sideOf)); onEmu != want {
		bad("the emulator holds %d recalled messages; the lists had %d that existed", onEmu, want)
	}
	if int64(tr.DoubleRecalls) != doubles+sideDoubles {
		bad("the emulator counts %d recall requests after recall, %d of them on the main list's messages and %d on the interrupted planners'", tr.DoubleRecalls, doubles, sideDoubles)
	}
	if want := int64(plan.byKind[chaosLive]) + reattributed; c.Recalled != want || recalledByJob != c.Recalled {
		bad("job recalled %d (%d states r or u); ground truth: %d", c.Recalled, recalledByJob, want)
	}
	if c.RecalledUnattributed != unattributedByJob {
		bad("job counts %d unattributed recalls, %d states u", c.RecalledUnattributed, unattributedByJob)
	}
	if c.DeadLettered != deadByJob || int64(len(dead)) != deadByJob {
		bad("job dead-lettered %d, %d records, %d states", c.DeadLettered, len(dead), deadByJob)
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		t.Errorf("%d problems with the ground truth, for example:\n%s", len(problems), strings.Join(problems[:min(len(problems), 25)], "\n"))
	}

	// The chaos did happen.
	if kills == 0 || !redisRestarted || !hangSwitched || burstCalls == 0 || latencyStep != len(latencySteps) || interrupted != len(interrupts) {
		t.Errorf("not all the chaos happened mid-job: %d kills, Redis restarted %v, hangs lengthened %v, %d calls in the throttle burst, %d of %d Redis latency changes, %d of %d planners interrupted",
			kills, redisRestarted, hangSwitched, burstCalls, latencyStep, len(latencySteps), interrupted, len(interrupts))
	}

	// The cap.
	stats := e.env.Emu.Stats()
	apis := slices.Sorted(maps.Keys(stats))
	for _, api := range apis {
		st := stats[api]
		if st.Throttled != 0 {
			t.Errorf("%s: the emulator refused %d calls over the cap (60007)", api, st.Throttled)
		}
		if st.Max1s > chaosCap {
			t.Errorf("%s: %d calls accepted in one sliding second, over the cap of %d", api, st.Max1s, chaosCap)
		}
	}

	// Figures.
	t.Logf("messages: %d listed (%d live, %d recalled before, %d missing seqs, %d unknown MsgKeys); seeding %v",
		len(plan.msgs), plan.byKind[chaosLive], plan.byKind[chaosPre], plan.byKind[chaosMissing], plan.byKind[chaosUnknown], seeded.Round(time.Millisecond))
	t.Logf("job %s: %v from planned to done; recalled %d, dead-lettered %d %v; test %v",
		id, jobWall.Round(time.Millisecond), c.Recalled, c.DeadLettered, c.DeadByCode, time.Since(testStart).Round(time.Second))
	t.Logf("chaos: %d SIGKILLs, %d SIGTERM restarts, Redis restarted %v, throttle burst of %d calls; asynq: %s",
		kills, terms, redisRestarted, burstCalls, asynqSummary(e))
	t.Logf("worker %d (Redis through the proxy): round trips measured at its starts %v", chaosProxied+1, pool.rtts(chaosProxied))
	t.Logf("interrupted planners: %d messages, %d recalled by the interrupted jobs, the rest by the re-runs; %d recall requests after recall; all settled %v after the main job",
		len(plan.sideOf), sideBy1, sideDoubles, time.Since(mainDone).Round(time.Second))
	t.Logf("lost answers: %d deliveries ended early (%d left messages sent and unrecorded), %d messages sent around the Redis restart; %d messages in doubt; %d recall requests after recall (emulator), %d of the messages the job recalled requested again; %d messages recalled before the job counted recalled",
		lost.deliveries, lost.lossy, len(atRestart), suspected, doubles, resent, reattributed)
	t.Logf("worker logs: %d history checks before a call counted messages recalled, %d such checks and %d after a 10030 failed; %d messages counted recalled after a second request; %d throttle pauses",
		pool.count(worker.LogFoundRecalledBeforeCall), pool.count(worker.LogCannotCheckBeforeCall), pool.count(worker.LogCheckAfterGoneFailed),
		pool.count(worker.LogRecalledUnattributed), pool.count("rate limited by the server"))
	for _, api := range apis {
		st := stats[api]
		maxSec := int64(0)
		for _, v := range st.PerSecond {
			maxSec = max(maxSec, v)
		}
		t.Logf("  %-22s calls %6d accepted %6d faults %5d throttled %d max_1s %3d max per clock second %3d",
			api, st.Calls, st.Accepted, st.Faults, st.Throttled, st.Max1s, maxSec)
	}
	if t.Failed() {
		t.Logf("worker logs:\n%s", pool.tails())
	}
}

// asynqSummary sums asynq's counters over the queues: deliveries processed
// and those that failed (a killed worker's task recovered after its lease,
// or Redis unreachable) and were delivered again.
func asynqSummary(e *e2e) string {
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: e.redis.Addr()})
	defer insp.Close()
	var processed, failed, pending, active, retry, archived int
	for _, q := range tasks.AllQueues() {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			continue // a queue never used
		}
		processed += info.ProcessedTotal
		failed += info.FailedTotal
		pending += info.Pending
		active += info.Active
		retry += info.Retry + info.Scheduled
		archived += info.Archived
	}
	return fmt.Sprintf("%d deliveries, %d failed and redelivered; now %d pending, %d active, %d waiting to retry, %d archived",
		processed, failed, pending, active, retry, archived)
}
