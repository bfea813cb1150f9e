package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/redisurl"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// defaultRedis is the Redis the commands use when neither --redis nor
// IMRECALL_REDIS is given.
const defaultRedis = "redis://127.0.0.1:6379/0"

// redisFlags are the flags of every command that talks to Redis.
type redisFlags struct {
	url    string
	prefix string
	// minPool, if above 0, is the least pool size of imrecall's own client
	// when the URL sets none (a worker sizes it by its concurrency).
	minPool int
}

func (f *redisFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "redis", defaultRedis, "Redis URL: "+redisurl.Forms+" (docs/REDIS.md)")
	cmd.Flags().StringVar(&f.prefix, "key-prefix", jobs.DefaultPrefix, "prefix of imrecall's own Redis keys (job records, limiter)")
}

// conn holds the Redis connections of one command.
type conn struct {
	rdb    redis.UniversalClient
	asynq  asynq.RedisConnOpt
	store  *jobs.Store
	closer []io.Closer
}

func (c *conn) Close() {
	for _, cl := range c.closer {
		_ = cl.Close()
	}
}

// connect opens Redis for a command and checks that it answers: one server,
// a Sentinel-managed master or a Cluster (see redisurl.Parse for the forms).
// imrecall's own client and asynq's connection point at the same Redis.
func (f *redisFlags) connect(ctx context.Context) (*conn, error) {
	target, err := redisurl.Parse(f.url)
	if err != nil {
		return nil, cli.BadInput("--redis %v", err)
	}
	target.RaisePool(f.minPool)
	rdb, err := redisurl.Open(ctx, target, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &conn{rdb: rdb, asynq: target.Asynq, store: jobs.NewStore(rdb, f.prefix), closer: []io.Closer{rdb}}, nil
}

// approvalFlags hold big jobs for a second person's approval; serve and
// the CLI's recall and purge read the same flags (and IMRECALL_APPROVAL_*).
type approvalFlags struct {
	above int
	delay time.Duration
}

func (f *approvalFlags) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&f.above, "approval-above", 0, "a job of more messages waits in awaiting_approval until someone other than its requester approves it (imrecall jobs approve); 0: never")
	cmd.Flags().DurationVar(&f.delay, "approval-delay", 0, "cool-off after an approval in which the job can still be cancelled before it starts")
}

func (f *approvalFlags) validate() error {
	if f.above < 0 {
		return cli.BadInput("--approval-above (IMRECALL_APPROVAL_ABOVE) %d: must not be negative", f.above)
	}
	if f.delay < 0 {
		return cli.BadInput("--approval-delay (IMRECALL_APPROVAL_DELAY) %s: must not be negative", f.delay)
	}
	return nil
}

// indexSettleFlag registers --index-settle on a command that plans purges
// by index: purge, serve (the API's and the console's jobs) and worker
// (the schedules it fires).
func indexSettleFlag(cmd *cobra.Command, d *time.Duration) {
	cmd.Flags().DurationVar(d, "index-settle", imrecall.DefaultIndexSettle, "a purge by index whose range reaches the moment it starts waits until this long after it read the index, and for every serve replica to beat once more, for the after-send callbacks then in flight, and reads the index again; 0 reads it once, without waiting (a message whose callback comes late is then missed, and an index gap says so)")
}

// indexSettle checks --index-settle and returns it as
// imrecall.Config.IndexSettle, whose negative is the flag's 0 (read once).
func indexSettle(d time.Duration) (time.Duration, error) {
	switch {
	case d < 0:
		return 0, cli.BadInput("--index-settle (IMRECALL_INDEX_SETTLE) %s: must not be negative (0 reads the index once, without waiting)", d)
	case d == 0:
		return -1, nil
	}
	return d, nil
}

// auditFlags are who asks and why, recorded with every job.
type auditFlags struct {
	actor  string
	reason string
}

func (f *auditFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.actor, "actor", cliout.DefaultActor(), "who asks (recorded in the job and the audit log)")
	cmd.Flags().StringVar(&f.reason, "reason", "", "why (recorded in the job and the audit log); required for a job, not for --dry-run")
}

// registerAs registers the flags with what --reason is for on cmd, which
// creates no job (schedule add, schedule remove).
func (f *auditFlags) registerAs(cmd *cobra.Command, reason string) {
	f.register(cmd)
	cmd.Flags().Lookup("reason").Usage = reason
}

// confirm asks the person at the terminal to type yes (cliout.Confirm):
// without a terminal it refuses, as large destructive jobs need --yes in
// scripts.
func confirm(cmd *cobra.Command, prompt string) error {
	err := cliout.Confirm(os.Stdin, cmd.ErrOrStderr(), prompt)
	var nc *cliout.NotConfirmedError
	switch {
	case errors.As(err, &nc) && nc.NoTerminal:
		return cli.Usage(err)
	case err != nil:
		return cli.Exit(cli.ExitBadInput, err.Error())
	}
	return nil
}

// waitJob follows a job until it has finished (cliout.WaitJob).
func waitJob(ctx context.Context, cmd *cobra.Command, client *imrecall.Client, id string) (jobs.Job, error) {
	return cliout.WaitJob(ctx, cmd.ErrOrStderr(), cliout.IsTerminal(os.Stderr), client, id)
}

// cliError turns the Client's typed errors into the CLI's: bad input (a
// *imrecall.FieldError, worded with its flag) exits 2, as does a refused
// state change (*jobs.StatusError, *jobs.BusyError) or an unknown job.
func cliError(err error) error {
	var fe *imrecall.FieldError
	var se *jobs.StatusError
	var sa *jobs.SelfApprovalError
	switch {
	case errors.As(err, &sa):
		return cli.Usage(err)
	case errors.As(err, &fe):
		return cli.Usage(cliout.FlagError{FE: fe})
	case errors.As(err, &se), errors.Is(err, jobs.ErrNotFound), errors.Is(err, jobs.ErrBusy):
		return cli.Usage(err)
	}
	return err
}

// jobExit maps a finished job to the documented exit code.
func jobExit(j jobs.Job) error {
	if !j.Finished() {
		return nil
	}
	needs := cliout.NeedsAttention(j)
	switch {
	case j.Status == jobs.StatusFailed:
		return cli.Exit(cli.ExitFailure, "job "+j.ID+" failed: "+j.Error)
	case j.Status == jobs.StatusCancelled:
		return cli.Exit(cli.ExitCancelled, "job "+j.ID+" was cancelled")
	case needs > 0:
		return cli.Exit(cli.ExitDeadLetter, fmt.Sprintf("job %s done: %d dead letters need attention (imrecall dlq list %s)", j.ID, needs, j.ID))
	}
	return nil
}

// redisRun is the RunE of a command that needs Redis: it applies the
// IMRECALL_* environment, connects, runs fn and closes the connection.
func redisRun(rf *redisFlags, fn func(cmd *cobra.Command, args []string, c *conn) error) func(*cobra.Command, []string) error {
	return cli.WithEnv(func(cmd *cobra.Command, args []string) error {
		c, err := rf.connect(cmd.Context())
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(cmd, args, c)
	})
}
