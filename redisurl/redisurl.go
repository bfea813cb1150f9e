// Package redisurl parses the --redis URL forms (one server, a
// Sentinel-managed master, a Cluster; each over TLS too) into go-redis
// options and the matching asynq connection, and opens and checks them.
// Its errors never show a password: see Redact.
package redisurl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Forms is the help text of a Redis URL flag: every form Parse accepts.
const Forms = "redis://[[user]:password@]host:port[/db] (rediss:// for TLS), " +
	"redis-sentinel://[[user]:password@]host:port[,host:port...][/db]?master=NAME, " +
	"redis-cluster://[[user]:password@]host:port[,host:port...] (rediss-sentinel://, rediss-cluster:// for TLS)"

// Default ports of the multi-host forms when a host gives none.
const (
	defaultSentinelPort = "26379"
	defaultClusterPort  = "6379"
)

// Target is a parsed Redis URL: how imrecall's own client (job
// records, limiter) and asynq's client reach the same Redis. Exactly one of
// Single, Failover and Cluster is set.
type Target struct {
	Single   *redis.Options
	Failover *redis.FailoverOptions
	Cluster  *redis.ClusterOptions
	// Asynq is the matching connection for asynq: RedisClientOpt,
	// RedisFailoverClientOpt or RedisClusterClientOpt.
	Asynq asynq.RedisConnOpt
}

// NewClient opens imrecall's own client (job records, limiter) on the target.
func (t Target) NewClient() redis.UniversalClient {
	switch {
	case t.Failover != nil:
		return redis.NewFailoverClient(t.Failover)
	case t.Cluster != nil:
		return redis.NewClusterClient(t.Cluster)
	default:
		return redis.NewClient(t.Single)
	}
}

// String names the target for errors and logs, without credentials.
func (t Target) String() string {
	switch {
	case t.Failover != nil:
		return fmt.Sprintf("Redis Sentinel master %q via %s", t.Failover.MasterName, strings.Join(t.Failover.SentinelAddrs, ","))
	case t.Cluster != nil:
		return "Redis Cluster via " + strings.Join(t.Cluster.Addrs, ",")
	default:
		return "Redis at " + t.Single.Addr
	}
}

// Parse parses a Redis URL. Its errors are *ParseError: they name the URL
// with the password hidden (Redact) and never quote the password.
//
// The forms:
//
//	redis://[[user]:password@]host:port[/db][?option=value...]   one server (go-redis's ParseURL options)
//	rediss://...                                                  the same over TLS
//	unix://[[user]:password@]/path/to/redis.sock[?db=N]           one server on a Unix socket
//	redis-sentinel://[[user]:password@]host:port[,host:port...][/db]?master=NAME
//	redis-cluster://[[user]:password@]host:port[,host:port...]
//	rediss-sentinel://..., rediss-cluster://...                   the same over TLS
//
// In the Sentinel form the hosts are the sentinels (port 26379 if none is
// given) and the user and password are the master's; the sentinels are sent
// no credentials unless sentinel_auth=same says they want the same ones.
// Options of the Sentinel form: master (required), sentinel_auth, dial_timeout,
// read_timeout, write_timeout, pool_size; of the Cluster form: dial_timeout,
// read_timeout, write_timeout, max_redirects. Timeouts are Go durations
// ("3s") or whole seconds. A Cluster has only database 0.
func Parse(raw string) (Target, error) {
	t, err := parseRedisTarget(raw)
	if err != nil {
		msg := fmt.Sprintf("%q: %v", Redact(raw), err)
		// Defence in depth: the messages above never quote the userinfo,
		// but should one ever do, the password goes. (Passwords shorter than
		// four characters would blank unrelated text and are left alone.)
		if pw := urlPassword(raw); len(pw) >= 4 {
			msg = strings.ReplaceAll(msg, pw, "***")
			if dec, err := url.PathUnescape(pw); err == nil && len(dec) >= 4 {
				msg = strings.ReplaceAll(msg, dec, "***")
			}
		}
		return Target{}, &ParseError{msg: msg}
	}
	return t, nil
}

// ParseError is a URL that Parse refused. Its message names the URL with the
// password hidden and says what is wrong.
type ParseError struct{ msg string }

func (e *ParseError) Error() string { return e.msg }

func parseRedisTarget(raw string) (Target, error) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return Target{}, fmt.Errorf("not a URL; want one of %s", Forms)
	}
	switch scheme {
	case "redis", "rediss", "unix":
		o, err := redis.ParseURL(raw)
		if err != nil {
			return Target{}, plainURLError(err)
		}
		return Target{Single: o, Asynq: asynq.RedisClientOpt{
			Network: o.Network, Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB,
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			PoolSize: o.PoolSize, TLSConfig: o.TLSConfig,
		}}, nil
	case "redis-sentinel", "rediss-sentinel":
		return parseSentinelURL(raw)
	case "redis-cluster", "rediss-cluster":
		return parseClusterURL(raw)
	}
	return Target{}, fmt.Errorf("unsupported scheme %q; want one of %s", scheme, Forms)
}

// multiHostURL is a URL whose host is a comma-separated list.
type multiHostURL struct {
	tls      bool
	username string
	password string
	hosts    []string // host:port, each checked
	db       int
	query    url.Values
}

// parseMultiHost parses scheme://[userinfo@]host[:port][,host[:port]...][/db][?query].
func parseMultiHost(raw, defaultPort string) (multiHostURL, error) {
	scheme, rest, _ := strings.Cut(raw, "://")
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, hostlist := "", authority
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo, hostlist = authority[:at+1], authority[at+1:]
	}
	// url.Parse checks and decodes everything but the host list, which it
	// cannot take: a placeholder stands in for it.
	u, err := url.Parse(scheme + "://" + userinfo + "placeholder" + tail)
	if err != nil {
		return multiHostURL{}, plainURLError(err)
	}
	m := multiHostURL{tls: strings.HasPrefix(scheme, "rediss"), query: u.Query()}
	if u.User != nil {
		m.username = u.User.Username()
		m.password, _ = u.User.Password()
	}
	if hostlist == "" {
		return multiHostURL{}, errors.New("no host")
	}
	for h := range strings.SplitSeq(hostlist, ",") {
		addr, err := hostPort(strings.TrimSpace(h), defaultPort)
		if err != nil {
			return multiHostURL{}, err
		}
		m.hosts = append(m.hosts, addr)
	}
	switch p := strings.Trim(u.Path, "/"); {
	case p == "":
	case strings.Contains(p, "/"):
		return multiHostURL{}, fmt.Errorf("path %q: want /DB, a database number", u.Path)
	default:
		if m.db, err = strconv.Atoi(p); err != nil || m.db < 0 {
			return multiHostURL{}, fmt.Errorf("database %q: want a number from 0", p)
		}
	}
	return m, nil
}

// hostPort checks one host of a list and adds the default port if it has none.
func hostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", errors.New("empty host in the host list")
	}
	host, port := strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), defaultPort
	if strings.Contains(h, ":") && !strings.HasSuffix(h, "]") { // a port, or an IPv6 address without brackets
		var err error
		if host, port, err = net.SplitHostPort(h); err != nil {
			return "", fmt.Errorf("host %q: %v", h, err)
		}
	}
	if host == "" {
		return "", fmt.Errorf("host %q: no host name", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("host %q: port %q is not a number from 1 to 65535", h, port)
	}
	return net.JoinHostPort(host, port), nil
}

// urlOptions reads the query options of a multi-host URL, refusing unknown ones.
type urlOptions struct {
	q       url.Values
	allowed []string
	err     error
}

func (o *urlOptions) check() error {
	for k := range o.q {
		if !slices.Contains(o.allowed, k) {
			return fmt.Errorf("unknown option %q; this form takes %s", k, strings.Join(o.allowed, ", "))
		}
	}
	for k, v := range o.q {
		if len(v) > 1 {
			return fmt.Errorf("option %q given %d times", k, len(v))
		}
	}
	return nil
}

func (o *urlOptions) duration(name string) time.Duration {
	v := o.q.Get(name)
	if v == "" || o.err != nil {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		o.err = fmt.Errorf("option %s=%q: want a duration such as 3s, or whole seconds", name, v)
	}
	return d
}

func (o *urlOptions) int(name string) int {
	v := o.q.Get(name)
	if v == "" || o.err != nil {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		o.err = fmt.Errorf("option %s=%q: want a whole number from 0", name, v)
	}
	return n
}

// tlsConfig is the TLS of the multi-host forms. ServerName is left empty so
// that each server's certificate is checked against the name it was dialled
// by (go-redis dials with tls.DialWithDialer, which fills it in).
func tlsConfig(on bool) *tls.Config {
	if !on {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12}
}

func parseSentinelURL(raw string) (Target, error) {
	m, err := parseMultiHost(raw, defaultSentinelPort)
	if err != nil {
		return Target{}, err
	}
	o := urlOptions{q: m.query, allowed: []string{"master", "sentinel_auth", "dial_timeout", "read_timeout", "write_timeout", "pool_size"}}
	if err := o.check(); err != nil {
		return Target{}, err
	}
	master := m.query.Get("master")
	if master == "" {
		return Target{}, errors.New("no master name: add ?master=NAME (the name the sentinels monitor)")
	}
	var sUser, sPass string
	switch a := m.query.Get("sentinel_auth"); a {
	case "", "none":
	case "same":
		sUser, sPass = m.username, m.password
	default:
		return Target{}, fmt.Errorf("option sentinel_auth=%q: want none (the default) or same", a)
	}
	dial, read, write, pool := o.duration("dial_timeout"), o.duration("read_timeout"), o.duration("write_timeout"), o.int("pool_size")
	if o.err != nil {
		return Target{}, o.err
	}
	tc := tlsConfig(m.tls)
	return Target{
		Failover: &redis.FailoverOptions{
			MasterName: master, SentinelAddrs: m.hosts, SentinelUsername: sUser, SentinelPassword: sPass,
			Username: m.username, Password: m.password, DB: m.db,
			DialTimeout: dial, ReadTimeout: read, WriteTimeout: write, PoolSize: pool, TLSConfig: tc,
		},
		Asynq: asynq.RedisFailoverClientOpt{
			MasterName: master, SentinelAddrs: m.hosts, SentinelUsername: sUser, SentinelPassword: sPass,
			Username: m.username, Password: m.password, DB: m.db,
			DialTimeout: dial, ReadTimeout: read, WriteTimeout: write, PoolSize: pool, TLSConfig: tc,
		},
	}, nil
}

func parseClusterURL(raw string) (Target, error) {
	m, err := parseMultiHost(raw, defaultClusterPort)
	if err != nil {
		return Target{}, err
	}
	if m.db != 0 {
		return Target{}, fmt.Errorf("database %d: a Redis Cluster has only database 0", m.db)
	}
	o := urlOptions{q: m.query, allowed: []string{"dial_timeout", "read_timeout", "write_timeout", "max_redirects"}}
	if err := o.check(); err != nil {
		return Target{}, err
	}
	dial, read, write, redirects := o.duration("dial_timeout"), o.duration("read_timeout"), o.duration("write_timeout"), o.int("max_redirects")
	if o.err != nil {
		return Target{}, o.err
	}
	tc := tlsConfig(m.tls)
	return Target{
		Cluster: &redis.ClusterOptions{
			Addrs: m.hosts, Username: m.username, Password: m.password, MaxRedirects: redirects,
			DialTimeout: dial, ReadTimeout: read, WriteTimeout: write, TLSConfig: tc,
		},
		Asynq: asynq.RedisClusterClientOpt{
			Addrs: m.hosts, Username: m.username, Password: m.password, MaxRedirects: redirects,
			DialTimeout: dial, ReadTimeout: read, WriteTimeout: write, TLSConfig: tc,
		},
	}, nil
}

// plainURLError drops the URL that url.Parse quotes in its errors (with the
// password in it), keeping only what was wrong.
func plainURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// urlPassword is the password of a URL's userinfo as written (not decoded),
// or "": what an error must never repeat.
func urlPassword(raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return ""
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}

// RaisePool sets the pool size of imrecall's own client to n when the URL
// sets none and go-redis's default (10 per CPU) is smaller. For a Cluster
// the size is per node.
func (t *Target) RaisePool(n int) {
	if n <= 10*runtime.GOMAXPROCS(0) {
		return
	}
	switch {
	case t.Failover != nil && t.Failover.PoolSize == 0:
		t.Failover.PoolSize = n
	case t.Cluster != nil && t.Cluster.PoolSize == 0:
		t.Cluster.PoolSize = n
	case t.Single != nil && t.Single.PoolSize == 0:
		t.Single.PoolSize = n
	}
}

// Open opens imrecall's own client on t and checks that it answers within
// timeout (for a Cluster, every master: a missing shard would fail later,
// on whichever key hashes to it). Its error names the target, not the
// password.
func Open(ctx context.Context, t Target, timeout time.Duration) (redis.UniversalClient, error) {
	rdb := t.NewClient()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(pctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
	} else {
		err = rdb.Ping(pctx).Err()
	}
	if err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("connecting to %s: %w", t, err)
	}
	return rdb, nil
}

// Redact hides the secrets of a Redis URL: its user information, and the
// value of every query parameter whose name speaks of one (password,
// sentinel_password, auth, token, secret, key: "?password=x" is not an
// option go-redis takes, and the error naming the URL must not show x).
func Redact(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	// The query first: an '@' in a query value is not the end of user
	// information. An '@' only after a '?' is either that or a password
	// with a raw '?': both hidden, the whole URL.
	base, query, hasQuery := strings.Cut(rest, "?")
	if at := strings.LastIndex(base, "@"); at >= 0 {
		base = "***@" + base[at+1:]
	} else if strings.Contains(query, "@") {
		return scheme + "://***"
	}
	if hasQuery {
		params := strings.Split(query, "&")
		for i, p := range params {
			if name, _, ok := strings.Cut(p, "="); ok && secretParam(name) {
				params[i] = name + "=***"
			}
		}
		base += "?" + strings.Join(params, "&")
	}
	return scheme + "://" + base
}

// secretParam reports whether a URL query parameter's name speaks of a
// secret.
func secretParam(name string) bool {
	if decoded, err := url.QueryUnescape(name); err == nil {
		name = decoded // "p%61ssword" is password to go-redis
	}
	n := strings.ToLower(name)
	for _, word := range []string{"pass", "pwd", "auth", "token", "secret", "key", "cred"} {
		if strings.Contains(n, word) {
			return true
		}
	}
	return false
}
