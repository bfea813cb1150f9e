package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imrecall/imrecall/internal/redisproxy"
	"github.com/redis/go-redis/v9"
)

// redisBehindProxy starts a redisproxy in front of the server of redisURL
// (redis:// or rediss://, one server) that delays each direction by d, and
// returns the URL through it.
func redisBehindProxy(redisURL string, d time.Duration) (string, func(), error) {
	u, err := url.Parse(redisURL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return "", nil, configError("--redis-latency needs a one-server redis:// URL, not %q", redact(redisURL))
	}
	p, err := redisproxy.Start(u.Host, d)
	if err != nil {
		return "", nil, err
	}
	u.Host = p.Addr()
	return u.String(), func() { _ = p.Close() }, nil
}

// startPrivateRedis starts redis-server on a free loopback port in a
// temporary directory.
func startPrivateRedis(ctx context.Context) (stop func(), url string, err error) {
	dir, err := os.MkdirTemp("", "imrecall-bench-redis")
	if err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c := exec.CommandContext(ctx, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := c.Start(); err != nil {
		return nil, "", fmt.Errorf("starting redis-server (install it, or pass --redis): %w", err)
	}
	url = fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer rdb.Close()
	for i := 0; ; i++ {
		if rdb.Ping(ctx).Err() == nil {
			break
		}
		if i > 100 {
			_ = c.Process.Kill()
			return nil, "", errors.New("redis-server did not answer")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() { _ = c.Process.Kill(); _ = c.Wait(); _ = os.RemoveAll(dir) }, url, nil
}

// usedMemory is Redis's INFO memory used_memory.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	v, err := infoField(ctx, rdb, "memory", "used_memory")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redis INFO used_memory %q: %w", v, err)
	}
	return n, nil
}

// keysMemory sums MEMORY USAGE over the keys matching pattern.
func keysMemory(ctx context.Context, rdb *redis.Client, pattern string) (int64, error) {
	var sum int64
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		n, err := rdb.MemoryUsage(ctx, iter.Val(), 0).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, fmt.Errorf("redis MEMORY USAGE %s: %w", iter.Val(), err)
		}
		sum += n
	}
	if err := iter.Err(); err != nil {
		return 0, fmt.Errorf("redis SCAN %s: %w", pattern, err)
	}
	return sum, nil
}

// redisCPU is the CPU seconds Redis has used (INFO cpu, user + system).
func redisCPU(ctx context.Context, rdb *redis.Client) (float64, error) {
	var sum float64
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := infoField(ctx, rdb, "cpu", f)
		if err != nil {
			return 0, err
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("redis INFO %s %q: %w", f, v, err)
		}
		sum += x
	}
	return sum, nil
}

func infoField(ctx context.Context, rdb *redis.Client, section, field string) (string, error) {
	s, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return "", fmt.Errorf("redis INFO %s: %w", section, err)
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("redis INFO %s: no %s", section, field)
}
