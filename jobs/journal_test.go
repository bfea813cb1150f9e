package jobs

import (
	"bytes"
	"context"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// lossyConn loses the reply to the first command that carries marker after
// the server ran it: it reads the reply and answers with a read timeout, as
// a network that dropped the answer would. go-redis then retries the command
// on a new connection.
type lossyConn struct {
	net.Conn
	marker []byte
	armed  *atomic.Bool
	lose   bool
	then   func() // if set, runs once the answer is lost, before go-redis sends the command again
}

func (c *lossyConn) Write(b []byte) (int, error) {
	if bytes.Contains(b, c.marker) && c.armed.CompareAndSwap(true, false) {
		c.lose = true
	}
	return c.Conn.Write(b)
}

func (c *lossyConn) Read(b []byte) (int, error) {
	if c.lose {
		c.lose = false
		_, _ = c.Conn.Read(b) // the server ran the command and answered
		if c.then != nil {
			c.then()
		}
		return 0, os.ErrDeadlineExceeded
	}
	return c.Conn.Read(b)
}

// lossyStore is a Store on a private redis-server whose client loses,
// once armed is set, the next answer of script after Redis ran it, so that
// go-redis sends it again. The script is loaded first, so that its first
// send runs it (no NOSCRIPT round); only its EVALSHA carries its hash.
func lossyStore(t *testing.T, script *redis.Script) (*Store, *atomic.Bool) {
	t.Helper()
	return lossyStoreThen(t, script, nil)
}

// lossyJob is a new job (newJob) on a lossyStore(t, script).
func lossyJob(t *testing.T, script *redis.Script) (*Store, *atomic.Bool, Job) {
	t.Helper()
	s, armed := lossyStore(t, script)
	return s, armed, newJob(t, s)
}

// lossyStoreThen is lossyStore where rival, if not nil, runs between the
// lost answer and the retry, given a Store of its own on the same server:
// another process's call that lands while go-redis waits to send the
// script again.
func lossyStoreThen(t *testing.T, script *redis.Script, rival func(*Store)) (*Store, *atomic.Bool) {
	t.Helper()
	srv := redistest.Start(t)
	armed := new(atomic.Bool)
	var then func()
	if rival != nil {
		other := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { other.Close() })
		then = func() { rival(NewStore(other, "")) }
	}
	rdb := lossyClientThen(t, srv.Addr(), []byte(script.Hash()), armed, then)
	if err := script.Load(t.Context(), rdb).Err(); err != nil {
		t.Fatal(err)
	}
	return NewStore(rdb, ""), armed
}

// lossyClient is a go-redis client of addr (its default retries, a 500 ms
// read timeout) whose connections are lossyConns: once armed is set, the
// reply to the next command carrying marker is lost after Redis ran it.
func lossyClient(t *testing.T, addr string, marker []byte, armed *atomic.Bool) *redis.Client {
	t.Helper()
	return lossyClientThen(t, addr, marker, armed, nil)
}

// lossyClientThen is lossyClient whose lost reply is followed by then (if
// not nil) before go-redis sends the command again.
func lossyClientThen(t *testing.T, addr string, marker []byte, armed *atomic.Bool, then func()) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 500 * time.Millisecond, Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &lossyConn{Conn: c, marker: marker, armed: armed, then: then}, nil
	}})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// retried arms armed, makes call and returns what it returned, failing t
// unless the answer of its script was lost (so that go-redis sent the
// script again and call got the retry's answer).
func retried[T any](t *testing.T, armed *atomic.Bool, call func() (T, error)) (T, error) {
	t.Helper()
	armed.Store(true)
	v, err := call()
	if armed.Load() {
		t.Fatal("no answer was lost: the test did not exercise the retry")
	}
	return v, err
}

// TestPlanAnswerLostIsRetriedSafely runs the plan script through go-redis
// with its default retries, over a connection that loses the first answer
// after Redis applied the script: go-redis sends the script again. Without a
// journal token the retry finds every message planned already and returns
// none (the messages would stay planned with no task); with a token the
// retry returns the same messages, and the job counts each message once.
func TestPlanAnswerLostIsRetriedSafely(t *testing.T) {
	ctx := t.Context()
	mr := miniredis.RunT(t)
	var armed atomic.Bool
	marker := []byte("lose-this-answer")
	rdb := lossyClient(t, mr.Addr(), marker, &armed)
	s := NewStore(rdb, "")
	j, err := s.Create(ctx, Spec{Kind: "recall:list", Queue: "purge", AppID: 1, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	g := Target{GroupID: "g"}
	// Load the script so that the first send runs it (no NOSCRIPT round).
	if _, err := s.PlanJournaled(ctx, j.ID, Target{GroupID: "warm-up"}, []string{"1"}, "", nil); err != nil {
		t.Fatal(err)
	}

	t.Run("without a token the retry answers nothing", func(t *testing.T) {
		// The marker rides in the item list: the target's state is unaffected by it.
		got, err := retried(t, &armed, func() ([]string, error) {
			return s.PlanJournaled(ctx, j.ID, g, []string{"1", "2", string(marker)}, "", nil)
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 0 {
			t.Fatalf("retry answered %v; want none (the hazard this test documents)", got)
		}
	})
	t.Run("with a token the retry answers the same", func(t *testing.T) {
		tok := Token("root", string(marker))
		got, err := retried(t, &armed, func() ([]string, error) { return s.PlanJournaled(ctx, j.ID, g, []string{"3", "4", "5", "1"}, tok, nil) })
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"3", "4", "5"}; !slices.Equal(got, want) {
			t.Fatalf("retry answered %v, want %v", got, want)
		}
		entries, err := s.Journal(ctx, j.ID)
		if err != nil || len(entries) != 3 {
			t.Fatalf("journal = %v, %v; want 3, 4, 5", entries, err)
		}
		for _, e := range entries {
			if e.Lease() != "root" || e.Target != g {
				t.Fatalf("journal entry %+v", e)
			}
		}
		// Confirming (piggybacked on the next call) empties the journal.
		fields := []string{JournalField(g, "3"), JournalField(g, "4"), JournalField(g, "5")}
		if _, err := s.PlanJournaled(ctx, j.ID, g, []string{"6"}, Token("root", "2"), fields); err != nil {
			t.Fatal(err)
		}
		if entries, _ := s.Journal(ctx, j.ID); len(entries) != 1 || entries[0].Item != "6" {
			t.Fatalf("journal after confirming = %+v, want only 6", entries)
		}
	})
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	// warm-up 1; g: 1, 2, the marker, 3, 4, 5, 6.
	if got.Counts.Planned != 8 {
		t.Fatalf("planned = %d, want 8: a retried plan counts nothing twice", got.Counts.Planned)
	}
}

// TestInterruptPlannerEndsFailed: a planner gone while another unit works
// leaves the job planning; once no unit is left, the job ends failed with
// the interruption on record, and a late retry of the planner's last call
// still gets its answer.
func TestInterruptPlannerEndsFailed(t *testing.T) {
	ctx := t.Context()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	s := NewStore(rdb, "")
	j, err := s.Create(ctx, Spec{Kind: "purge:user", Queue: "purge", AppID: 1, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.OpenTaskPlanner(ctx, j.ID, "scan group g", TaskRef{Queue: "discover-purge", ID: "x"}); err != nil {
		t.Fatal(err)
	}
	ls, err := s.ReadLeases(ctx, j.ID)
	if err != nil || !ls.Alive(RootPlanner) || !ls.Alive("scan group g") || ls.Tasks["scan group g"].ID != "x" {
		t.Fatalf("leases = %+v, %v", ls, err)
	}
	tok := Token(RootPlanner, "1")
	if _, err := s.PlanJournaled(ctx, j.ID, Target{GroupID: "g"}, []string{"1", "2"}, tok, nil); err != nil {
		t.Fatal(err)
	}
	st, err := s.InterruptPlanner(ctx, j.ID, RootPlanner, "its planner's lease lapsed")
	if err != nil || st != StatusPlanning {
		t.Fatalf("InterruptPlanner(root) = %q, %v; want planning (the scan is still at work)", st, err)
	}
	if st, _ := s.InterruptPlanner(ctx, j.ID, RootPlanner, "again"); st != "" {
		t.Fatalf("second InterruptPlanner(root) = %q, want \"\" (not open)", st)
	}
	if st, err := s.ClosePlanner(ctx, j.ID, "scan group g"); err != nil || st != StatusFailed {
		t.Fatalf("ClosePlanner(scan) = %q, %v; want failed (planning was interrupted)", st, err)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.PlanningInterrupted == nil || got.PlanningInterrupted.Units != RootPlanner || got.PlanningInterrupted.Planned != 2 || got.Error == "" {
		t.Fatalf("job = %+v (interruption %+v)", got, got.PlanningInterrupted)
	}
	// The job plans nothing new, but a retry of the planner's last call is answered.
	if fresh, err := s.PlanJournaled(ctx, j.ID, Target{GroupID: "g"}, []string{"1", "2"}, tok, nil); err != nil || len(fresh) != 2 {
		t.Fatalf("retry after the close = %v, %v; want [1 2]", fresh, err)
	}
	if _, err := s.PlanJournaled(ctx, j.ID, Target{GroupID: "g"}, []string{"3"}, Token(RootPlanner, "2"), nil); err == nil {
		t.Fatal("planning a new message into a failed job: no error")
	}
	rep, err := s.BuildReport(ctx, j.ID)
	if err != nil || !rep.Reconciled || rep.Settled {
		t.Fatalf("report = %+v, %v; want counts reconciled, job not settled (2 pending)", rep, err)
	}
	var buf bytes.Buffer
	_ = rep.WriteText(&buf, func(string) string { return "" })
	if bytes.Contains(buf.Bytes(), []byte("reconciled:")) || !bytes.Contains(buf.Bytes(), []byte("NOT SETTLED")) || !bytes.Contains(buf.Bytes(), []byte("planning interrupted")) {
		t.Fatalf("report text says reconciled while 2 messages wait, or hides the interruption:\n%s", buf.String())
	}
}

// TestPlanJournaledDuplicatesInOneCall: a message given twice in one call is
// new once (the journal's token match must not count it again).
func TestPlanJournaledDuplicatesInOneCall(t *testing.T) {
	ctx := t.Context()
	s := NewStore(redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()}), "")
	j, err := s.Create(ctx, Spec{Kind: "recall:list", Queue: "purge", AppID: 1, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.PlanJournaled(ctx, j.ID, Target{GroupID: "g"}, []string{"7", "7", "8", "7"}, Token(RootPlanner, "1"), nil)
	if err != nil || !slices.Equal(got, []string{"7", "8"}) {
		t.Fatalf("PlanJournaled = %v, %v; want [7 8]", got, err)
	}
	if got, _ := s.PlanJournaled(ctx, j.ID, Target{GroupID: "g"}, []string{"8", "7", "8"}, Token(RootPlanner, "1"), nil); !slices.Equal(got, []string{"8", "7"}) {
		t.Fatalf("retry = %v, want [8 7]", got)
	}
}
