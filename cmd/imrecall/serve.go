package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/imrecall/imrecall/api"
	"github.com/imrecall/imrecall/certificate"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/serveproc"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/redisurl"
	"github.com/spf13/cobra"
)

// serveOptions are the flags of `imrecall serve`.
type serveOptions struct {
	imCallFlags
	listen            string
	tokens            string
	tokensFile        string
	callbackToken     string
	callbackTokenFile string
	index             bool
	indexRetention    string
	monitor           bool
	insecureCallbacks bool
	jobRetention      string
	confirmAbove      int
	backlog           int64
	approval          approvalFlags
	concurrency       int
	idx               msgindex.ServiceConfig // the confirmer and heartbeat flags
	signingKey        string
	certificateDir    string
	verifyTimeout     time.Duration
	indexSettle       time.Duration
}

func newServeCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API, Tencent's callbacks (the message index), the asynq dashboard and metrics",
		Long: `serve answers:
  /               the operator's console: jobs with live progress, job pages (report, dead letters,
                  exports, audit, actions), new jobs after a dry run, schedules, the index (sign in
                  with an API token; read tokens see, admin tokens act)
  /v1/...         the JSON API (see /openapi.yaml): jobs (with dry runs), dead letters, schedules, audit;
                  POST /v1/jobs/{id}/verify runs imrecall verify in the background (GET: the result);
                  POST /v1/jobs/{id}/certificate writes a signed certificate of erasure into
                  --certificate-dir, signed with --signing-key (GET: the document, or with
                  "Accept: text/html" a printable page; .../certificate.sig, .../certificate.rows.jsonl)
  /callback       Tencent IM callbacks; after-send callbacks feed the per-sender message index that
                  "purge user --source index" reads (set the callback URL in the IM console to this)
  /monitor/       the asynq dashboard (admin tokens; read tokens get a read-only view)
  /metrics        Prometheus: asynq's queue metrics, job progress, callbacks
  /healthz        alive;  /readyz: Redis answers

API tokens are NAME:ROLE:SECRET (role read or admin), from IMRECALL_API_TOKENS (comma-separated) or
--tokens-file (one per line). Requests carry "Authorization: Bearer SECRET"; the token's NAME is
recorded as who asked. The callback token is the one configured in the IM console: callbacks must carry a valid Sign and
a RequestTime within 60 s. serve refuses to start without one unless --insecure-callbacks (then it
warns every minute). Sign covers only the token and RequestTime, not the body (docs/SECURITY.md):
callback entries land unconfirmed, and a confirmer (--confirm-rate history calls/s) moves those the
history backs into the index and drops forged ones; a purge by index also confirms each message's
sender from the history before recalling it. serve beats every --index-heartbeat: a silence longer
than two beats of every replica or of one (serve down or killed, Redis unreachable), and the time
between a serve stopped or killed and the next started, are recorded as gaps in the index's coverage.
A purge by index whose range reaches now waits --index-settle for the callbacks still in flight.`,
		Example: `  IMRECALL_API_TOKENS=ops:admin:$(openssl rand -hex 24) IMRECALL_CALLBACK_TOKEN=... \
    imrecall serve --sdkappid 1400000001 --listen :8080 --index-retention 30d
  curl -H "Authorization: Bearer $TOKEN" localhost:8080/v1/jobs
  curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" -d '{"kind":"purge_user","user":"spammer42","reason":"INC-1","dry_run":true}' localhost:8080/v1/jobs`,
		Args: cobra.NoArgs,
		RunE: cli.WithEnv(func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), cmd, &o) }),
	}
	o.imCallFlags.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&o.listen, "listen", ":8080", "address to serve on")
	fl.StringVar(&o.tokens, "api-tokens", "", "API tokens NAME:ROLE:SECRET, comma-separated; prefer IMRECALL_API_TOKENS or --tokens-file")
	fl.StringVar(&o.tokensFile, "tokens-file", "", "file of API tokens, one NAME:ROLE:SECRET per line")
	fl.StringVar(&o.callbackToken, "callback-token", "", "the callback token set in the IM console; prefer IMRECALL_CALLBACK_TOKEN or --callback-token-file")
	fl.StringVar(&o.callbackTokenFile, "callback-token-file", "", "file holding the callback token")
	fl.BoolVar(&o.index, "index", true, "keep the message index from after-send callbacks (POST /callback)")
	fl.StringVar(&o.indexRetention, "index-retention", "7d", "how long index entries are kept: the app's roaming period (7d by default at Tencent), e.g. 30d; 0 keeps them forever")
	jobRetentionFlag(cmd, &o.jobRetention)
	fl.BoolVar(&o.insecureCallbacks, "insecure-callbacks", false, "accept unsigned callbacks at /callback when no callback token is set (anyone can then fill the index); a warning is logged every minute")
	fl.Float64Var(&o.idx.ConfirmRate, "confirm-rate", 5, "history calls per second the index confirmer may make (within the shared limiter's cap) to check callback entries against the history; 0 turns the confirmer off (entries stay unconfirmed, and purges confirm them)")
	fl.DurationVar(&o.idx.ConfirmEvery, "confirm-every", 10*time.Second, "how often the index confirmer looks for unconfirmed callback entries")
	fl.DurationVar(&o.idx.Heartbeat, "index-heartbeat", 10*time.Second, "how often serve records that it receives callbacks; a silence longer than two beats (serve down, Redis unreachable) is recorded as a gap in the index coverage")
	fl.BoolVar(&o.monitor, "monitor", true, "serve the asynq dashboard under /monitor/")
	fl.IntVar(&o.confirmAbove, "confirm-above", 1000, `jobs with more messages need "confirm": true`)
	o.approval.register(cmd)
	fl.Int64Var(&o.backlog, "backlog", 0, "bound each job's messages planned and not yet settled: a request to create a job is answered once its planning first waits for the workers, and planning goes on in serve (0: queue the whole plan before answering)")
	indexSettleFlag(cmd, &o.indexSettle)
	fl.IntVar(&o.concurrency, "discovery-concurrency", 16, "histories a dry run (or a verification) reads at once (the limiter still caps the calls)")
	fl.StringVar(&o.signingKey, "signing-key", "", "Ed25519 private key, PKCS#8 PEM, that signs certificates of erasure (POST /v1/jobs/{id}/certificate); without it the route answers 501")
	fl.StringVar(&o.certificateDir, "certificate-dir", "", "directory where certificates of erasure are kept (JOB.json, .sig, .rows.jsonl); required with --signing-key")
	fl.DurationVar(&o.verifyTimeout, "verify-timeout", time.Hour, "longest a verification or certificate started through the API may run")
	return cmd
}

// parseAge parses a retention flag: days (30d), a duration (36h) or 0 (keep
// forever); errors name flag.
func parseAge(flag, s string) (time.Duration, error) {
	d, err := jobs.ParseAge(s)
	if err != nil {
		return 0, cli.BadInput("%s %q: %v", flag, strings.TrimSpace(s), err)
	}
	return d, nil
}

// jobRetentionFlag registers --job-retention on a command that runs the
// retention sweep (worker, serve).
func jobRetentionFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVar(v, "job-retention", "", "delete finished jobs (records, message states, dead letters) and audit events older than this, e.g. 90d; empty or 0 keeps them (the default)")
}

// startJobRetention starts the hourly retention sweep if --job-retention asks.
func startJobRetention(ctx context.Context, c *conn, flag string, log *slog.Logger) error {
	keep, err := parseAge("--job-retention", flag)
	if err != nil || keep <= 0 {
		return err
	}
	go c.store.RunRetention(ctx, keep, time.Hour, log)
	log.Info("job retention", "keep", keep.String())
	return nil
}

func (o *serveOptions) apiTokens() ([]api.Token, error) {
	ts, err := api.LoadTokens(o.tokens, o.tokensFile)
	if err != nil {
		return nil, cli.BadInput("%v", err)
	}
	return ts, nil
}

func runServe(ctx context.Context, cmd *cobra.Command, o *serveOptions) error {
	log, err := o.logs.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	tokens, err := o.apiTokens()
	if err != nil {
		return err
	}
	cbToken, err := cli.SecretFrom(o.callbackToken, o.callbackTokenFile, "--callback-token / --callback-token-file (IMRECALL_CALLBACK_TOKEN / IMRECALL_CALLBACK_TOKEN_FILE)")
	if err != nil {
		return err
	}
	retention, err := parseAge("--index-retention", o.indexRetention)
	if err != nil {
		return err
	}
	settle, err := indexSettle(o.indexSettle)
	if err != nil {
		return err
	}
	if err := serveproc.CheckIndex(o.index, o.insecureCallbacks, cbToken, o.idx); err != nil {
		return cli.Usage(err)
	}
	imCfg, err := o.im.config(log)
	if err != nil {
		return err
	}
	c, err := o.redis.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := startJobRetention(ctx, c, o.jobRetention, log); err != nil {
		return err
	}
	im, lim, err := o.limits.imClient(ctx, c, o.redis.prefix, imCfg, log, nil, true)
	if err != nil {
		return err
	}
	sw := certificate.Software{Name: "imrecall", Version: certificate.BuildVersion(), ConfigSHA256: o.configHash()}
	certs, err := api.OpenCertificates(o.certificateDir, o.signingKey, sw)
	if err != nil {
		return cli.Usage(err)
	}
	err = serveproc.Run(ctx, serveproc.Config{Redis: c.rdb, Asynq: c.asynq, Store: c.store, Prefix: o.redis.prefix,
		IM: im, Limiter: lim, AppID: imCfg.SDKAppID, Tokens: tokens, Index: o.index, IndexService: o.idx, Retention: retention,
		CallbackToken: cbToken, Monitor: o.monitor, Certificates: certs, VerifyTimeout: o.verifyTimeout, ConfirmAbove: o.confirmAbove,
		DiscoveryConcurrency: o.concurrency, ApprovalAbove: o.approval.above, ApprovalDelay: o.approval.delay, Backlog: o.backlog,
		IndexSettle: settle, Listen: o.listen, RedisName: redisurl.Redact(o.redis.url), Logger: log})
	var ie *serveproc.InputError
	if errors.As(err, &ie) {
		return cli.Usage(err)
	}
	return err
}
