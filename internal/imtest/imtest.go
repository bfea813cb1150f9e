// Package imtest runs the project's Tencent IM emulator for tests, over real
// HTTP, and seeds it through the documented REST APIs (account_import,
// create_group, send_group_msg, sendmsg) with the real client.
package imtest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// Test credentials.
const (
	AppID  int64 = 1400000001
	Admin        = "administrator"
	Secret       = "imtest-secret-key-0123456789abcdef"
)

// Env is an emulator serving on a loopback port plus a client for seeding.
type Env struct {
	Emu    *emulator.Server
	URL    string
	Client *tim.Client // no gate: seeding APIs are unlimited in Start's emulator

	mu   sync.Mutex
	sigs map[string]bool // every usersig the emulator was sent
}

// SeenSigs returns every distinct UserSig the emulator received, so tests
// can check that none leaks into logs or reports.
func (e *Env) SeenSigs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.sigs))
	for s := range e.sigs {
		out = append(out, s)
	}
	return out
}

// Start starts an emulator with cfg (credentials filled in when empty; the
// seeding APIs unlimited) and stops it when the test ends.
func Start(t testing.TB, cfg emulator.Config) *Env {
	t.Helper()
	if cfg.SDKAppID == 0 {
		cfg.SDKAppID = AppID
	}
	if cfg.Admin == "" {
		cfg.Admin = Admin
	}
	if cfg.SecretKey == "" {
		cfg.SecretKey = Secret
	}
	if cfg.RateOf == nil {
		cfg.RateOf = map[string]int{}
	}
	for _, api := range []string{"account_import", "multiaccount_import", "create_group", "add_group_member", "create_topic", "send_group_msg", "sendmsg"} {
		if _, ok := cfg.RateOf[api]; !ok {
			cfg.RateOf[api] = 0
		}
	}
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatalf("imtest: starting the emulator: %v", err)
	}
	env := &Env{Emu: emu, sigs: map[string]bool{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sig := r.URL.Query().Get("usersig"); sig != "" {
			env.mu.Lock()
			if len(env.sigs) < 1000 {
				env.sigs[sig] = true
			}
			env.mu.Unlock()
		}
		emu.ServeHTTP(w, r)
	}))
	srv.Listener = emulator.ArrivalListener(srv.Listener)
	srv.Config.ConnContext = emulator.ConnContext
	srv.Start()
	t.Cleanup(srv.Close)
	env.URL = srv.URL
	c, err := tim.New(tim.Config{SDKAppID: cfg.SDKAppID, Admin: cfg.Admin, SecretKey: tim.Secret(cfg.SecretKey), BaseURL: srv.URL})
	if err != nil {
		t.Fatalf("imtest: client: %v", err)
	}
	env.Client = c
	return env
}

// Accounts imports user accounts.
func (e *Env) Accounts(t testing.TB, ids ...string) {
	t.Helper()
	for i := 0; i < len(ids); i += 100 {
		batch := ids[i:min(i+100, len(ids))]
		if _, err := e.Client.MultiAccountImport(context.Background(), tim.MultiAccountImportRequest{Accounts: batch}); err != nil {
			t.Fatalf("imtest: importing accounts: %v", err)
		}
	}
}

// Group creates a group of the given type with members and returns its id.
func (e *Env) Group(t testing.TB, typ, id string, members ...string) string {
	t.Helper()
	req := tim.CreateGroupRequest{Type: typ, GroupID: id, Name: id}
	if typ == "Community" {
		req.SupportTopic = 1
	}
	for _, m := range members {
		req.MemberList = append(req.MemberList, tim.Member{MemberAccount: m})
	}
	resp, err := e.Client.CreateGroup(context.Background(), req)
	if err != nil {
		t.Fatalf("imtest: creating group %s: %v", id, err)
	}
	return resp.GroupID
}

// SendGroup sends n messages from each sender in turn to a group (or topic)
// and returns their seqs in order.
func (e *Env) SendGroup(t testing.TB, group, topic string, n int, senders ...string) []int64 {
	t.Helper()
	seqs := make([]int64, n)
	for i := range n {
		resp, err := e.Client.SendGroupMsg(context.Background(), tim.SendGroupMsgRequest{
			GroupID: group, TopicID: topic, Random: uint32(i + 1), FromAccount: senders[i%len(senders)],
			MsgBody: tim.TextBody(fmt.Sprintf("message %d", i)),
		})
		if err != nil {
			t.Fatalf("imtest: sending to %s: %v", group, err)
		}
		seqs[i] = resp.MsgSeq
	}
	return seqs
}

// SendC2C sends n one-to-one messages from → to and returns their MsgKeys.
func (e *Env) SendC2C(t testing.TB, from, to string, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range n {
		resp, err := e.Client.SendMsg(context.Background(), tim.SendMsgRequest{
			FromAccount: from, ToAccount: to, MsgRandom: uint32(i + 1), SyncOtherMachine: tim.SyncToSender,
			MsgBody: tim.TextBody(fmt.Sprintf("hello %d", i)),
		})
		if err != nil {
			t.Fatalf("imtest: sending %s→%s: %v", from, to, err)
		}
		keys[i] = resp.MsgKey
	}
	return keys
}

// Dataset generates a dataset on the emulator (see emulator.Server.Generate).
func (e *Env) Dataset(t testing.TB, spec emulator.DatasetSpec) *emulator.Dataset {
	t.Helper()
	ds, err := e.Emu.Generate(spec)
	if err != nil {
		t.Fatalf("imtest: generating a dataset: %v", err)
	}
	return ds
}

// Recall recalls, as a worker would, the messages seqs of group (in calls
// of 10) and keys of the one-to-one chat (From → To) on the emulator, and
// records each of them recalled in job jobID of store.
func (e *Env) Recall(t testing.TB, store *jobs.Store, jobID string, group jobs.Target, seqs []int64, chat jobs.Target, keys []string) {
	t.Helper()
	ctx := context.Background()
	var out []jobs.Outcome
	for i := 0; i < len(seqs); i += 10 {
		chunk := seqs[i:min(i+10, len(seqs))]
		if _, err := e.Client.RecallGroup(ctx, group.GroupID, group.TopicID, chunk); err != nil {
			t.Fatalf("imtest: recalling in %s: %v", group.GroupID, err)
		}
		for _, s := range chunk {
			out = append(out, jobs.Outcome{Item: strconv.FormatInt(s, 10), Recalled: true, Attempts: 1})
		}
	}
	if _, err := store.Record(ctx, jobID, group, out); err != nil {
		t.Fatalf("imtest: recording: %v", err)
	}
	out = nil
	for _, k := range keys {
		if _, err := e.Client.AdminMsgWithdraw(ctx, tim.AdminMsgWithdrawRequest{FromAccount: chat.From, ToAccount: chat.To, MsgKey: k}); err != nil {
			t.Fatalf("imtest: withdrawing %s: %v", k, err)
		}
		out = append(out, jobs.Outcome{Item: k, Recalled: true, Attempts: 1})
	}
	if _, err := store.Record(ctx, jobID, chat, out); err != nil {
		t.Fatalf("imtest: recording: %v", err)
	}
}

// Seqs lists the seqs from to to, both included (nil when to < from).
func Seqs(from, to int64) []int64 {
	var out []int64
	for q := from; q <= to; q++ {
		out = append(out, q)
	}
	return out
}

// Parallel runs fn(i) for i in [0, n) on 16 goroutines.
func Parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	ch := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ch {
				fn(i)
			}
		}()
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
}
