package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of private redis-server processes owned by one
// test: masters only, no replicas, every slot assigned.
type Cluster struct {
	t     testing.TB
	nodes []*clusterNode
}

type clusterNode struct {
	dir  string
	port int

	mu  sync.Mutex
	cmd *exec.Cmd
}

func (n *clusterNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// StartCluster starts a Redis Cluster of masters (at least 3, as
// redis-cli --cluster create requires) on free loopback ports, each node in
// its own temporary directory with its own cluster-config-file, joins them
// with redis-cli --cluster create and waits until every node reports
// cluster_state:ok. The nodes are killed when the test ends.
//
// The test is skipped if redis-server or redis-cli is not installed and
// IMRECALL_REQUIRE_REDIS is unset; with it set (as in CI), a missing binary
// fails the test.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("IMRECALL_REQUIRE_REDIS") != "" {
				t.Fatalf("redistest: %s not found on PATH (needed for a Redis Cluster): %v", bin, err)
			}
			t.Skipf("redistest: %s not installed: a Redis Cluster needs redis-server and redis-cli", bin)
		}
	}
	if masters < 3 {
		t.Fatalf("redistest: a Redis Cluster needs at least 3 masters, not %d", masters)
	}
	c := &Cluster{t: t}
	t.Cleanup(c.Kill)
	for range masters {
		n := &clusterNode{dir: t.TempDir(), port: clusterPort(t)}
		c.nodes = append(c.nodes, n)
		c.start(n)
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.waitOK()
	return c
}

// Addrs are the nodes' host:port.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.addr()
	}
	return out
}

// URL is the cluster's redis-cluster:// URL, as imrecall's --redis takes it.
func (c *Cluster) URL() string { return "redis-cluster://" + strings.Join(c.Addrs(), ",") }

// Client returns a new cluster client, closed when the test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Kill stops every node with SIGKILL and waits for the processes to exit.
// It is safe to call more than once.
func (c *Cluster) Kill() {
	for _, n := range c.nodes {
		n.mu.Lock()
		if n.cmd != nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
			n.cmd = nil
		}
		n.mu.Unlock()
	}
}

// String describes the cluster for test logs.
func (c *Cluster) String() string {
	return fmt.Sprintf("Redis Cluster %s", strings.Join(c.Addrs(), ","))
}

func (c *Cluster) start(n *clusterNode) {
	c.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(n.port),
		"--bind", "127.0.0.1",
		"--dir", n.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--cluster-enabled", "yes",
		"--cluster-config-file", filepath.Join(n.dir, "nodes.conf"),
		"--cluster-node-timeout", "5000",
		"--logfile", filepath.Join(n.dir, "redis.log"),
	)
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("redistest: starting cluster node on %s: %v", n.addr(), err)
	}
	n.cmd = cmd
	rdb := redis.NewClient(&redis.Options{Addr: n.addr()})
	defer rdb.Close()
	c.waitFor(n, "answer PING", func(ctx context.Context) (bool, error) {
		return true, rdb.Ping(ctx).Err()
	})
}

// waitOK waits until every node has every slot and says cluster_state:ok.
func (c *Cluster) waitOK() {
	c.t.Helper()
	for _, n := range c.nodes {
		rdb := redis.NewClient(&redis.Options{Addr: n.addr()})
		c.waitFor(n, "report cluster_state:ok", func(ctx context.Context) (bool, error) {
			info, err := rdb.ClusterInfo(ctx).Result()
			if err != nil {
				return false, err
			}
			return strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_assigned:16384") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(c.nodes))+"\r"), nil
		})
		_ = rdb.Close()
	}
}

// waitFor polls cond on node n for up to 20 s.
func (c *Cluster) waitFor(n *clusterNode, what string, cond func(ctx context.Context) (bool, error)) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		ok, err := cond(ctx)
		cancel()
		if ok && err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(n.dir, "redis.log"))
			c.t.Fatalf("redistest: cluster node %s did not %s (last error: %v)\n%s", n.addr(), what, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clusterPort finds a free loopback port p whose cluster bus port p+10000 is
// free too (redis-server derives the bus port that way unless told
// otherwise, and Redis before 7 cannot be told).
func clusterPort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p+10000 > 65535 {
			_ = l.Close()
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = bus.Close()
		return p
	}
	t.Fatal("redistest: no free port pair (p, p+10000) for a cluster node after 100 tries")
	return 0
}
