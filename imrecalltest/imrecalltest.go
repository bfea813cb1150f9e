// Package imrecalltest runs imrecall inside a Go test, as River's rivertest
// does for River: the Tencent IM emulator over real HTTP on a loopback
// port, an embedded Redis (miniredis, or a redis-server of the test's own),
// the shared limiter, and a worker.Server in-process with its three lanes
// (group recall, one-to-one withdraw, discovery). A test seeds the
// emulator, plans a job, and waits on the job's outcome:
//
//	env := imrecalltest.Start(t, imrecalltest.Options{})
//	env.IM.Accounts(t, "alice", "bob")
//	g := env.IM.Group(t, "Public", "@TGS#1", "alice", "bob")
//	seqs := env.IM.SendGroup(t, g, "", 30, "alice")
//	job := env.RecallGroup(t, g, seqs)
//	env.RequireOutcome(t, job.ID, imrecalltest.Outcome{Status: jobs.StatusDone, Recalled: 30})
//
// Nothing sleeps: waits poll the job record until a condition holds or a
// deadline passes. Everything started is stopped when the test ends.
package imrecalltest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/worker"
)

// Options configure Start. The zero value is an emulator with Tencent's
// default caps, miniredis, and a worker of 16 slots per lane.
type Options struct {
	// Emulator configures the IM emulator; credentials left empty are
	// filled with the test ones (AppID, Admin, Secret), and the seeding
	// APIs are unlimited.
	Emulator emulator.Config
	// RedisServer starts a real redis-server on a free port (it can then
	// be killed and restarted through Env.RedisServer) instead of miniredis.
	RedisServer bool
	// Worker configures the recall handler. AppID defaults to the test
	// app; BaseBackoff to 1 ms and MaxBackoff to 20 ms, so that transient
	// faults cost a test little.
	Worker worker.Config
	// Concurrency is each recall lane's slots. Default 16.
	Concurrency int
	// Handlers are further task types the worker runs on its group lane
	// (worker.ServerConfig.Handlers), e.g. tasks.TypeScheduleRun.
	Handlers map[string]asynq.Handler
	// NoWorker starts no worker.Server: the test runs its own (or none).
	NoWorker bool
	// Logger receives the worker's records. Nil discards.
	Logger *slog.Logger
}

// The test app's credentials, as the emulator knows them.
const (
	AppID  = imtest.AppID
	Admin  = imtest.Admin
	Secret = imtest.Secret
)

// Env is one test's running imrecall.
type Env struct {
	// IM is the emulator and its seeding helpers (Accounts, Group,
	// SendGroup, SendC2C); IM.Emu shows what the IM server holds.
	IM *imtest.Env
	// Redis is imrecall's own client; RedisOpt is asynq's connection to
	// the same Redis.
	Redis    redis.UniversalClient
	RedisOpt asynq.RedisConnOpt
	// Miniredis is the embedded Redis (nil with Options.RedisServer);
	// RedisServer the redis-server (nil without).
	Miniredis   *miniredis.Miniredis
	RedisServer *redistest.Server
	// Store is the job store.
	Store *jobs.Store
	// Limiter is the shared cap; Client calls the emulator through it.
	Limiter *limiter.Limiter
	Client  *tim.Client
	// Queue queues tasks.
	Queue *asynq.Client
	// Server is the in-process worker (nil with Options.NoWorker).
	Server *worker.Server
}

// Start starts an emulator, a Redis, the limiter and (unless
// Options.NoWorker) a worker.Server, and stops them when the test ends.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	env := &Env{IM: imtest.Start(t, opts.Emulator)}
	if opts.RedisServer {
		env.RedisServer = redistest.Start(t)
		env.RedisOpt = asynq.RedisClientOpt{Addr: env.RedisServer.Addr()}
		env.Redis = redis.NewClient(&redis.Options{Addr: env.RedisServer.Addr(), PoolSize: 64})
	} else {
		env.Miniredis = miniredis.RunT(t)
		env.RedisOpt = asynq.RedisClientOpt{Addr: env.Miniredis.Addr()}
		env.Redis = redis.NewClient(&redis.Options{Addr: env.Miniredis.Addr(), PoolSize: 64})
	}
	t.Cleanup(func() { _ = env.Redis.Close() })
	env.Store = jobs.NewStore(env.Redis, "")
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lim, err := limiter.New(env.Redis, limiter.Config{Logger: log})
	if err != nil {
		t.Fatalf("imrecalltest: the limiter: %v", err)
	}
	env.Limiter = lim
	env.Client, err = tim.New(tim.Config{SDKAppID: AppID, Admin: Admin, SecretKey: Secret, BaseURL: env.IM.URL, Gate: lim.ForApp(AppID)})
	if err != nil {
		t.Fatalf("imrecalltest: the IM client: %v", err)
	}
	env.Queue = asynq.NewClient(env.RedisOpt)
	t.Cleanup(func() { _ = env.Queue.Close() })
	if opts.NoWorker {
		return env
	}
	wcfg := opts.Worker
	if wcfg.AppID == 0 {
		wcfg.AppID = AppID
	}
	if wcfg.BaseBackoff == 0 {
		wcfg.BaseBackoff = time.Millisecond
	}
	if wcfg.MaxBackoff == 0 {
		wcfg.MaxBackoff = 20 * time.Millisecond
	}
	if wcfg.Logger == nil {
		wcfg.Logger = log
	}
	if wcfg.Limiter == nil {
		wcfg.Limiter = lim.ForApp(AppID)
	}
	concurrency := opts.Concurrency
	if concurrency <= 0 {
		concurrency = 16
	}
	discover := producer.NewDiscoverHandler(env.Client, env.Store, env.Queue, log)
	env.Server, err = worker.NewServer(worker.ServerConfig{
		Redis:           env.RedisOpt,
		Handler:         worker.New(worker.TIM{C: env.Client}, env.Store, wcfg),
		Discovery:       asynq.HandlerFunc(discover.Handle),
		DiscoveryErrors: asynq.ErrorHandlerFunc(discover.HandleError),
		Handlers:        opts.Handlers,
		Concurrency:     concurrency,
		Unparker:        &worker.Unparker{Store: env.Store, Queue: env.Queue, Interval: 50 * time.Millisecond, Logger: log},
		PollInterval:    10 * time.Millisecond,
		DelayedInterval: 100 * time.Millisecond,
		Logger:          log,
		LogLevel:        asynq.FatalLevel,
	})
	if err == nil {
		err = env.Server.Start()
	}
	if err != nil {
		t.Fatalf("imrecalltest: starting the worker: %v", err)
	}
	t.Cleanup(env.Server.Shutdown)
	return env
}

// NewJob creates a job, runs plan (as the CLI's recall and purge commands
// do: producer.NewJob) and returns the job once its planning is closed.
func (e *Env) NewJob(t testing.TB, spec jobs.Spec, plan producer.PlanFunc) jobs.Job {
	t.Helper()
	if spec.Kind == "" {
		spec.Kind = "test"
	}
	if spec.Queue == "" {
		spec.Queue = tasks.QueuePurge
	}
	if spec.AppID == 0 {
		spec.AppID = AppID
	}
	if spec.RequestedBy == "" {
		spec.RequestedBy = "imrecalltest"
	}
	job, _, err := producer.NewJob(t.Context(), e.Store, e.Queue, spec, plan)
	if err != nil {
		t.Fatalf("imrecalltest: planning a job: %v", err)
	}
	return job
}

// RecallGroup plans and queues a job that recalls seqs of group.
func (e *Env) RecallGroup(t testing.TB, group string, seqs []int64) jobs.Job {
	t.Helper()
	return e.NewJob(t, jobs.Spec{}, func(ctx context.Context, _ jobs.Job, _ producer.Enqueuer, b *producer.Batcher) error {
		return b.AddGroup(ctx, jobs.Target{GroupID: group}, seqs...)
	})
}

// WaitTimeout bounds every wait of an Env.
const WaitTimeout = time.Minute

// Wait polls job id until cond holds and returns it; it fails the test
// after WaitTimeout, showing the job as last read.
func (e *Env) Wait(t testing.TB, id string, what string, cond func(jobs.Job) bool) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), WaitTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		j, err := e.Store.Get(ctx, id)
		if err == nil && cond(j) {
			return j
		}
		select {
		case <-ctx.Done():
			t.Fatalf("imrecalltest: job %s: timed out waiting for %s (status %s, counts %+v, err %v)", id, what, j.Status, j.Counts, err)
		case <-tick.C:
		}
	}
}

// WaitFinished waits until job id has finished (done, failed or
// cancelled) and returns it.
func (e *Env) WaitFinished(t testing.TB, id string) jobs.Job {
	t.Helper()
	return e.Wait(t, id, "the job to finish", jobs.Job.Finished)
}

// Outcome is what a finished job should show.
type Outcome struct {
	Status       jobs.Status
	Recalled     int64
	DeadLettered int64
	// DeadByCode, if not nil, is every dead-letter code and its count.
	DeadByCode map[string]int64
}

// RequireOutcome waits until job id has finished and fails the test unless
// it shows want, and unless its counters agree with its message records
// (jobs.Store.Recount). It returns the job.
func (e *Env) RequireOutcome(t testing.TB, id string, want Outcome) jobs.Job {
	t.Helper()
	j := e.WaitFinished(t, id)
	got := Outcome{Status: j.Status, Recalled: j.Counts.Recalled, DeadLettered: j.Counts.DeadLettered}
	if want.DeadByCode != nil {
		got.DeadByCode = j.Counts.DeadByCode
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("imrecalltest: job %s: got %+v, want %+v", id, got, want)
	}
	rc, err := e.Store.Recount(t.Context(), id)
	if err != nil {
		t.Fatalf("imrecalltest: job %s: recount: %v", id, err)
	}
	if err := rc.Matches(j.Counts); err != nil {
		t.Fatalf("imrecalltest: job %s: counters disagree with the records: %v", id, err)
	}
	return j
}
