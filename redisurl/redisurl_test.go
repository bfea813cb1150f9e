package redisurl_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/redisurl"
	"github.com/imrecall/imrecall/tasks"
	"github.com/redis/go-redis/v9"
)

// redisConnSummary is what a parsed --redis URL connects to, comparable
// across go-redis's options and asynq's.
type redisConnSummary struct {
	Mode                string // single, sentinel, cluster
	Network             string
	Addrs               []string
	Master              string
	User, Pass          string
	SentinelUser, SPass string
	DB                  int
	TLS                 bool
	ServerName          string
	Dial, Read, Write   time.Duration
	PoolSize, Redirects int
}

func summarizeRedis(t redisurl.Target) redisConnSummary {
	switch {
	case t.Failover != nil:
		o := t.Failover
		return redisConnSummary{Mode: "sentinel", Addrs: o.SentinelAddrs, Master: o.MasterName, User: o.Username, Pass: o.Password,
			SentinelUser: o.SentinelUsername, SPass: o.SentinelPassword, DB: o.DB, TLS: o.TLSConfig != nil, ServerName: serverName(o.TLSConfig != nil, func() string { return o.TLSConfig.ServerName }),
			Dial: o.DialTimeout, Read: o.ReadTimeout, Write: o.WriteTimeout, PoolSize: o.PoolSize}
	case t.Cluster != nil:
		o := t.Cluster
		return redisConnSummary{Mode: "cluster", Addrs: o.Addrs, User: o.Username, Pass: o.Password, TLS: o.TLSConfig != nil,
			ServerName: serverName(o.TLSConfig != nil, func() string { return o.TLSConfig.ServerName }),
			Dial:       o.DialTimeout, Read: o.ReadTimeout, Write: o.WriteTimeout, Redirects: o.MaxRedirects}
	default:
		o := t.Single
		return redisConnSummary{Mode: "single", Network: o.Network, Addrs: []string{o.Addr}, User: o.Username, Pass: o.Password, DB: o.DB,
			TLS: o.TLSConfig != nil, ServerName: serverName(o.TLSConfig != nil, func() string { return o.TLSConfig.ServerName }),
			Dial: o.DialTimeout, Read: o.ReadTimeout, Write: o.WriteTimeout, PoolSize: o.PoolSize}
	}
}

func summarizeAsynq(opt asynq.RedisConnOpt) redisConnSummary {
	switch o := opt.(type) {
	case asynq.RedisFailoverClientOpt:
		return redisConnSummary{Mode: "sentinel", Addrs: o.SentinelAddrs, Master: o.MasterName, User: o.Username, Pass: o.Password,
			SentinelUser: o.SentinelUsername, SPass: o.SentinelPassword, DB: o.DB, TLS: o.TLSConfig != nil, ServerName: serverName(o.TLSConfig != nil, func() string { return o.TLSConfig.ServerName }),
			Dial: o.DialTimeout, Read: o.ReadTimeout, Write: o.WriteTimeout, PoolSize: o.PoolSize}
	case asynq.RedisClusterClientOpt:
		return redisConnSummary{Mode: "cluster", Addrs: o.Addrs, User: o.Username, Pass: o.Password, TLS: o.TLSConfig != nil,
			ServerName: serverName(o.TLSConfig != nil, func() string { return o.TLSConfig.ServerName }),
			Dial:       o.DialTimeout, Read: o.ReadTimeout, Write: o.WriteTimeout, Redirects: o.MaxRedirects}
	case asynq.RedisClientOpt:
		return redisConnSummary{Mode: "single", Network: o.Network, Addrs: []string{o.Addr}, User: o.Username, Pass: o.Password, DB: o.DB,
			TLS: o.TLSConfig != nil, ServerName: serverName(o.TLSConfig != nil, func() string { return o.TLSConfig.ServerName }),
			Dial: o.DialTimeout, Read: o.ReadTimeout, Write: o.WriteTimeout, PoolSize: o.PoolSize}
	}
	return redisConnSummary{Mode: fmt.Sprintf("unexpected %T", opt)}
}

func serverName(on bool, name func() string) string {
	if !on {
		return ""
	}
	return name()
}

func TestRedisURLForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, url string
		want      redisConnSummary
	}{
		{"single", "redis://:pw0rd@127.0.0.1:6379/2",
			redisConnSummary{Mode: "single", Network: "tcp", Addrs: []string{"127.0.0.1:6379"}, Pass: "pw0rd", DB: 2}},
		{"single with ACL user over TLS", "rediss://app:pw0rd@redis.example:6380/0?dial_timeout=2s",
			redisConnSummary{Mode: "single", Network: "tcp", Addrs: []string{"redis.example:6380"}, User: "app", Pass: "pw0rd", TLS: true, ServerName: "redis.example", Dial: 2 * time.Second}},
		{"unix socket", "unix:///run/redis/redis.sock?db=3",
			redisConnSummary{Mode: "single", Network: "unix", Addrs: []string{"/run/redis/redis.sock"}, DB: 3}},
		{"sentinel", "redis-sentinel://:pw0rd@s1:26379,s2:26380,s3/1?master=mymaster",
			redisConnSummary{Mode: "sentinel", Addrs: []string{"s1:26379", "s2:26380", "s3:26379"}, Master: "mymaster", Pass: "pw0rd", DB: 1}},
		{"sentinel with authenticated sentinels and options", "redis-sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2:26379?master=m&sentinel_auth=same&dial_timeout=2s&read_timeout=3&write_timeout=1500ms&pool_size=20",
			redisConnSummary{Mode: "sentinel", Addrs: []string{"10.0.0.1:26379", "10.0.0.2:26379"}, Master: "m", User: "app", Pass: "p@ss",
				SentinelUser: "app", SPass: "p@ss", Dial: 2 * time.Second, Read: 3 * time.Second, Write: 1500 * time.Millisecond, PoolSize: 20}},
		{"sentinel over TLS", "rediss-sentinel://s1:26379?master=m&sentinel_auth=none",
			redisConnSummary{Mode: "sentinel", Addrs: []string{"s1:26379"}, Master: "m", TLS: true}},
		{"cluster", "redis-cluster://:pw0rd@n1:7000,n2:7001,n3:7002",
			redisConnSummary{Mode: "cluster", Addrs: []string{"n1:7000", "n2:7001", "n3:7002"}, Pass: "pw0rd"}},
		{"cluster over TLS, IPv6, options", "rediss-cluster://n1:7000,[::1]:7001/0?max_redirects=5&write_timeout=1s",
			redisConnSummary{Mode: "cluster", Addrs: []string{"n1:7000", "[::1]:7001"}, TLS: true, Write: time.Second, Redirects: 5}},
		{"cluster default port", "redis-cluster://n1",
			redisConnSummary{Mode: "cluster", Addrs: []string{"n1:6379"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := redisurl.Parse(tt.url)
			if err != nil {
				t.Fatalf("redisurl.Parse(%q): %v", tt.url, err)
			}
			if diff := cmp.Diff(tt.want, summarizeRedis(got)); diff != "" {
				t.Errorf("go-redis options (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, summarizeAsynq(got.Asynq)); diff != "" {
				t.Errorf("asynq options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRedisURLErrors(t *testing.T) {
	t.Parallel()
	const pw = "hunter2pw"
	tests := []struct {
		name, url, want string
	}{
		{"not a URL", "127.0.0.1:6379", "not a URL"},
		{"unknown scheme", "memcached://:" + pw + "@h:11211", `unsupported scheme "memcached"`},
		{"bad escape in the password", "redis://:" + pw + "%zz@h:6379/0", "invalid URL escape"},
		{"bad database", "redis://:" + pw + "@h:6379/notadb", "invalid database number"},
		{"unknown go-redis option", "redis://:" + pw + "@h:6379/0?bogus=1", "unexpected option"},
		{"sentinel without master", "redis-sentinel://:" + pw + "@s1:26379", "no master name"},
		{"sentinel bad sentinel_auth", "redis-sentinel://:" + pw + "@s1?master=m&sentinel_auth=maybe", "sentinel_auth"},
		{"sentinel bad timeout", "redis-sentinel://:" + pw + "@s1?master=m&dial_timeout=soon", "dial_timeout"},
		{"sentinel bad database", "redis-sentinel://:" + pw + "@s1/x?master=m", `database "x"`},
		{"sentinel repeated option", "redis-sentinel://:" + pw + "@s1?master=m&master=n", "given 2 times"},
		{"cluster database", "redis-cluster://:" + pw + "@n1:7000/3", "only database 0"},
		{"cluster empty host", "redis-cluster://:" + pw + "@n1:7000,,n2:7001", "empty host"},
		{"cluster bad port", "redis-cluster://:" + pw + "@n1:notaport", "port"},
		{"cluster port out of range", "redis-cluster://:" + pw + "@n1:70000", "1 to 65535"},
		{"cluster no host", "redis-cluster://:" + pw + "@", "no host"},
		{"cluster unknown option", "redis-cluster://:" + pw + "@n1:7000?pool_size=3", `unknown option "pool_size"`},
		{"cluster bad path", "redis-cluster://:" + pw + "@n1:7000/0/1", "path"},
		// A password given as a query option, which go-redis does not take:
		// the error names the URL without it.
		{"password as an option", "redis://127.0.0.1:1/0?password=" + pw, "unexpected option"},
		{"sentinel password option", "redis-sentinel://s1?master=m&sentinel_password=" + pw + "&bogus=1", "bogus"},
		{"password option with an @", "redis://127.0.0.1:1/0?password=ab@" + pw, "unexpected option"},
		{"password option, name encoded", "redis://127.0.0.1:1/0?p%61ssword=" + pw, "unexpected option"},
		{"a raw ? in the password", "redis://:ab?" + pw + "@h:6379/0", "redis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := redisurl.Parse(tt.url)
			if err == nil {
				t.Fatalf("redisurl.Parse(%q): no error, want %q", tt.url, tt.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not say %q", msg, tt.want)
			}
			if !strings.Contains(msg, strconv.Quote(redisurl.Redact(tt.url))) {
				t.Errorf("error %q does not name the input %q", msg, redisurl.Redact(tt.url))
			}
			if strings.Contains(msg, "hunter") {
				t.Errorf("error %q shows the password", msg)
			}
		})
	}
}

// TestRedisConnectErrors: a bad URL is a *redisurl.ParseError, an
// unreachable Redis a failure of Open; neither shows the password.
func TestRedisConnectErrors(t *testing.T) {
	t.Parallel()
	_, err := redisurl.Parse("redis-cluster://:hunter2pw@n1:7000/5")
	var pe *redisurl.ParseError
	if !errors.As(err, &pe) || strings.Contains(err.Error(), "hunter") {
		t.Fatalf("Parse(bad URL) = %v, want a *ParseError without the password", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	for _, u := range []string{"redis://:hunter2pw@" + addr + "/0", "redis-cluster://:hunter2pw@" + addr} {
		target, err := redisurl.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		_, err = redisurl.Open(t.Context(), target, 5*time.Second)
		if err == nil || !strings.Contains(err.Error(), addr) || strings.Contains(err.Error(), "hunter") {
			t.Errorf("Open(%s) = %v, want a failure naming %s without the password", redisurl.Redact(u), err, addr)
		}
	}
}

// conn is an opened URL as the commands use it.
type conn struct {
	rdb   redis.UniversalClient
	asynq asynq.RedisConnOpt
	store *jobs.Store
}

// connect parses and opens u; the client is closed when the test ends.
func connect(t *testing.T, u string) (*conn, error) {
	t.Helper()
	target, err := redisurl.Parse(u)
	if err != nil {
		return nil, err
	}
	rdb, err := redisurl.Open(t.Context(), target, 5*time.Second)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return &conn{rdb: rdb, asynq: target.Asynq, store: jobs.NewStore(rdb, jobs.DefaultPrefix)}, nil
}

// checkRedisConn exercises a connection as the commands use it: the job
// store, and asynq enqueueing a task to every queue, which a real asynq
// server then processes.
func checkRedisConn(t *testing.T, c *conn) {
	t.Helper()
	ctx := t.Context()
	j, err := c.store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "test", Reason: "redis forms"})
	if err != nil {
		t.Fatalf("creating a job: %v", err)
	}
	if _, err := c.store.PlanGroup(ctx, j.ID, jobs.Target{GroupID: "@TGS#1"}, []int64{1, 2}); err != nil {
		t.Fatalf("planning: %v", err)
	}
	client := asynq.NewClient(c.asynq)
	defer client.Close()
	done := make(chan string, len(tasks.Queues))
	for q := range tasks.Queues {
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("test:ping", []byte(q)), asynq.Queue(q), asynq.TaskID("ping-"+q)); err != nil {
			t.Fatalf("enqueueing to %s: %v", q, err)
		}
	}
	srv := asynq.NewServer(c.asynq, asynq.Config{
		Concurrency: 2, Queues: tasks.Queues, TaskCheckInterval: 20 * time.Millisecond,
		LogLevel: asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("test:ping", func(_ context.Context, task *asynq.Task) error {
		done <- string(task.Payload())
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatalf("starting an asynq server: %v", err)
	}
	defer srv.Shutdown()
	seen := map[string]bool{}
	for len(seen) < len(tasks.Queues) {
		select {
		case q := <-done:
			seen[q] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("asynq processed tasks of %v only", seen)
		}
	}
}

// TestRedisClusterConnect: --redis redis-cluster://… reaches a real Redis
// Cluster, for imrecall's keys and for asynq's queues.
func TestRedisClusterConnect(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	c, err := connect(t, cl.URL())
	if err != nil {
		t.Fatalf("connect(%s): %v", cl.URL(), err)
	}
	if _, ok := c.rdb.(*redis.ClusterClient); !ok {
		t.Fatalf("client is a %T, want a *redis.ClusterClient", c.rdb)
	}
	checkRedisConn(t, c)
}

// TestRedisSentinelConnect: --redis redis-sentinel://… asks a real sentinel
// for the master and authenticates to the master (not to the sentinel,
// which has no password) with the URL's password.
func TestRedisSentinelConnect(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t)
	const pw = "s3cret-master"
	if err := master.Client().ConfigSet(t.Context(), "requirepass", pw).Err(); err != nil {
		t.Fatal(err)
	}
	sentinel := startSentinel(t, "mymaster", master.Addr(), pw)

	c, err := connect(t, "redis-sentinel://:"+pw+"@"+sentinel+"/0?master=mymaster")
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	checkRedisConn(t, c)

	// The writes are on the master.
	direct := redis.NewClient(&redis.Options{Addr: master.Addr(), Password: pw})
	defer direct.Close()
	if n, err := direct.ZCard(t.Context(), jobs.DefaultPrefix+":jobs").Result(); err != nil || n != 1 {
		t.Fatalf("jobs on the master: %d, %v; want 1", n, err)
	}

	// A wrong master name is reported as a connection failure.
	if _, err := connect(t, "redis-sentinel://:"+pw+"@"+sentinel+"/0?master=other"); err == nil || !strings.Contains(err.Error(), `master "other"`) || strings.Contains(err.Error(), pw) {
		t.Fatalf("connect to an unknown master: %v", err)
	}
}

// startSentinel starts a redis-server in sentinel mode monitoring master and
// returns its address; it is killed when the test ends.
func startSentinel(t *testing.T, name, master, auth string) string {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	dir := t.TempDir()
	host, mport, _ := net.SplitHostPort(master)
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\nsentinel monitor %s %s %s 1\nsentinel auth-pass %s %s\nsentinel down-after-milliseconds %s 5000\n",
		port, dir, filepath.Join(dir, "sentinel.log"), name, host, mport, name, auth, name)
	path := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", path, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a sentinel: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer sc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		got, err := sc.GetMasterAddrByName(ctx, name).Result()
		cancel()
		if err == nil && len(got) == 2 && net.JoinHostPort(got[0], got[1]) == master {
			return addr
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			t.Fatalf("sentinel on %s does not know master %s (%v, %v)\n%s", addr, master, got, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisSentinelFailover: after the sentinels promote the replica, the
// same connection (imrecall's client and asynq's) writes to the new master.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const pw = "s3cret-master"
	master, replica := redistest.Start(t), redistest.Start(t)
	for _, s := range []*redistest.Server{master, replica} {
		rdb := s.Client()
		for _, kv := range [][2]string{{"repl-diskless-sync-delay", "0"}, {"masterauth", pw}, {"requirepass", pw}} {
			if err := rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr(), Password: pw})
	defer rc.Close()
	host, port, _ := net.SplitHostPort(master.Addr())
	if err := rc.ReplicaOf(ctx, host, port).Err(); err != nil {
		t.Fatal(err)
	}
	waitRedis(t, "the replica to sync", func() bool {
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	sentinel := startSentinel(t, "mymaster", master.Addr(), pw)
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	defer sc.Close()
	waitRedis(t, "the sentinel to see the replica", func() bool {
		r, err := sc.Replicas(ctx, "mymaster").Result()
		return err == nil && len(r) == 1
	})

	c, err := connect(t, "redis-sentinel://:"+pw+"@"+sentinel+"/0?master=mymaster")
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	spec := jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1400000001, RequestedBy: "test", Reason: "failover"}
	before, err := c.store.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	waitRedis(t, "the job to reach the replica", func() bool {
		n, err := rc.ZCard(ctx, jobs.DefaultPrefix+":jobs").Result()
		return err == nil && n == 1
	})

	// A replica the sentinel has only just met is "no good" until the
	// sentinel has read its INFO: ask again until the failover starts.
	var ferr error
	waitRedis(t, "SENTINEL FAILOVER to start", func() bool {
		ferr = sc.Failover(ctx, "mymaster").Err()
		return ferr == nil || !strings.Contains(ferr.Error(), "NOGOODSLAVE")
	})
	if ferr != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", ferr)
	}
	waitRedis(t, "the sentinel to promote the replica", func() bool {
		a, err := sc.GetMasterAddrByName(ctx, "mymaster").Result()
		return err == nil && len(a) == 2 && net.JoinHostPort(a[0], a[1]) == replica.Addr()
	})

	// Until the sentinels turn the old master into a replica it still takes
	// writes, and they are lost when it resyncs from the new master (seen
	// here: a job created in that window vanished). The sentinel would
	// demote it at its next INFO poll (every 10 s); do it now.
	mc := redis.NewClient(&redis.Options{Addr: master.Addr(), Password: pw})
	defer mc.Close()
	rhost, rport, _ := net.SplitHostPort(replica.Addr())
	if err := mc.ReplicaOf(ctx, rhost, rport).Err(); err != nil {
		t.Fatalf("demoting the old master: %v", err)
	}
	waitRedis(t, "the old master to become a replica", func() bool {
		role, err := mc.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "slave"
	})

	// The same conn now reaches the new master; the job written before the
	// failover is there, and new writes land on the new master.
	var after jobs.Job
	waitRedis(t, "a job to be created after the failover", func() bool {
		after, err = c.store.Create(ctx, spec)
		return err == nil
	})
	if _, err := c.store.Get(ctx, before.ID); err != nil {
		t.Fatalf("job from before the failover: %v", err)
	}
	if role, err := rc.Do(ctx, "ROLE").Slice(); err != nil || role[0] != "master" {
		t.Fatalf("replica's role after failover: %v, %v", role, err)
	}
	if ok, err := rc.HExists(ctx, jobs.DefaultPrefix+":job:{"+after.ID+"}", "id").Result(); err != nil || !ok {
		t.Fatalf("the new job is not on the new master: %v, %v", ok, err)
	}
	client := asynq.NewClient(c.asynq)
	defer client.Close()
	waitRedis(t, "asynq to enqueue after the failover", func() bool {
		_, err := client.EnqueueContext(ctx, asynq.NewTask("test:ping", nil), asynq.Queue(tasks.QueueIncident))
		return err == nil
	})
	if n, err := rc.LLen(ctx, "asynq:{"+tasks.QueueIncident+"}:pending").Result(); err != nil || n != 1 {
		t.Fatalf("asynq's pending list on the new master: %d, %v; want 1", n, err)
	}
}

// waitRedis polls cond for up to 30 s.
func waitRedis(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
