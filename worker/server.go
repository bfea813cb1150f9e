package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// ServerConfig configures a Server: where the queues are, what runs the
// tasks, and how many run at once. Zero values mean the documented defaults.
type ServerConfig struct {
	// Redis is asynq's connection to the queues. Required.
	Redis asynq.RedisConnOpt
	// Handler runs the recall tasks (tasks.TypeGroupRecall and
	// tasks.TypeC2CWithdraw) and dead-letters the messages of an archived
	// one. Required.
	Handler *Handler
	// Discovery runs tasks.TypeDiscover tasks (a purge's history scans) on
	// a lane of its own. It is injected so that worker never imports
	// producer: cmd passes producer.DiscoverHandler's Handle. Nil: this
	// server runs no discovery lane.
	Discovery asynq.Handler
	// DiscoveryErrors is called when a discovery task's attempt fails
	// (producer.DiscoverHandler's HandleError closes its planning unit
	// when the task is archived). Nil: nothing.
	DiscoveryErrors asynq.ErrorHandler
	// Handlers are further task types run on the group recall lane (the
	// schedule firings, tasks.TypeScheduleRun). Nil: none.
	Handlers map[string]asynq.Handler
	// Concurrency is how many tasks each recall lane (group recall,
	// one-to-one withdraw) runs at once in this process. Default 64.
	Concurrency int
	// Dequeuers is how many asynq servers share each recall lane's
	// Concurrency, each taking tasks from Redis in its own loop (see
	// DefaultDequeuers). Default 1; at most Concurrency.
	Dequeuers int
	// DiscoveryConcurrency is how many discovery tasks run at once, on
	// slots of their own. Default DefaultDiscoveries(Concurrency).
	DiscoveryConcurrency int
	// CallTimeout is the IM client's per-call timeout: a shutdown waits
	// twice that, plus 5 s, for the tasks in flight. Default
	// tim.DefaultTimeout.
	CallTimeout time.Duration
	// Unparker, if set, runs from Start to Shutdown, queueing again the
	// parked tasks of resumed and cancelled jobs. Nil: none.
	Unparker *Unparker
	// PollInterval is how often an idle asynq server looks at its queues
	// again: a job's first tasks wait half of it on average. Default 100 ms
	// (a worker runs three asynq servers or more, each asking Redis 10
	// times a second while idle; tests lower it).
	PollInterval time.Duration
	// DelayedInterval is how often retried and snoozed tasks due are moved
	// back to their queues. Default 1 s (tests lower it).
	DelayedInterval time.Duration
	// Logger receives asynq's own records and one record per task attempt
	// (see Server). Nil discards.
	Logger *slog.Logger
	// LogLevel is asynq's own log level. Zero: asynq's default (info).
	LogLevel asynq.LogLevel
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	c.Dequeuers = max(min(c.Dequeuers, c.Concurrency), 1)
	if c.DiscoveryConcurrency <= 0 {
		c.DiscoveryConcurrency = DefaultDiscoveries(c.Concurrency)
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = tim.DefaultTimeout
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.DelayedInterval <= 0 {
		c.DelayedInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first invalid field, by name.
func (c ServerConfig) Validate() error {
	switch {
	case c.Redis == nil:
		return errors.New("worker: ServerConfig.Redis is nil")
	case c.Handler == nil:
		return errors.New("worker: ServerConfig.Handler is nil")
	case c.Concurrency < 0:
		return fmt.Errorf("worker: ServerConfig.Concurrency %d is negative", c.Concurrency)
	case c.Dequeuers < 0:
		return fmt.Errorf("worker: ServerConfig.Dequeuers %d is negative", c.Dequeuers)
	case c.DiscoveryConcurrency < 0:
		return fmt.Errorf("worker: ServerConfig.DiscoveryConcurrency %d is negative", c.DiscoveryConcurrency)
	}
	return nil
}

// Server is a worker process's runtime: the lanes of asynq servers that take
// tasks from the queues and run them.
//
// Each kind of task has a lane: queues of its own (tasks.Queues,
// tasks.C2CQueues, tasks.DiscoveryQueues) and slots of its own. A task holds
// its slot while it waits for its API's share of the cap, so one API's
// backlog never holds the slots another API's tasks need. Each recall lane
// is split over Dequeuers asynq servers that share its Concurrency: one
// asynq loop takes tasks one at a time at one or more Redis round trips
// each, and with Redis milliseconds away one loop cannot take 200 a second.
//
// Every server uses strict queue priority (incident, then purge, then
// backfill), snoozes that use no retry attempt (IsFailure, RetryDelay), a
// shutdown that outlasts a call, and one error handler: the last attempt
// of a recall task dead-letters its pending messages (Handler.HandleError),
// that of a discovery task goes to DiscoveryErrors.
//
// One middleware logs each attempt once, with the keys job_id, task_id,
// task_type, attempt and outcome (see AttemptOutcome): retry, dead and
// failed at warn level, the others at debug.
type Server struct {
	cfg     ServerConfig
	mu      sync.Mutex
	servers []*asynq.Server
	started bool
	stop    context.CancelFunc // ends the Unparker
	stopped chan struct{}      // closed when the Unparker has returned
}

// NewServer returns a server for cfg, after cfg.Validate. It starts nothing:
// see Start and Run.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg.withDefaults()}, nil
}

// Handler returns the recall handler the server runs.
func (s *Server) Handler() *Handler { return s.cfg.Handler }

// Start starts every lane and returns. On an error, the lanes already
// started are shut down.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("worker: Server already started")
	}
	c := s.cfg
	mux := asynq.NewServeMux()
	mux.Use(s.logAttempt)
	c.Handler.Register(mux)
	for typ, h := range c.Handlers {
		mux.Handle(typ, h)
	}
	dmux := asynq.NewServeMux()
	dmux.Use(s.logAttempt)
	if c.Discovery != nil {
		dmux.Handle(tasks.TypeDiscover, c.Discovery)
		// Discovery tasks found on a recall queue (queued there by a
		// version before the lanes) run too, at most DiscoveryConcurrency at
		// once, so they leave slots free for recall. Likewise both recall
		// lanes run the same mux, so one-to-one tasks such a version left on
		// a group queue still run.
		mux.Handle(tasks.TypeDiscover, LimitRunning(c.DiscoveryConcurrency, "discovery slots of this worker busy", c.Discovery))
	}
	type lane struct {
		name string
		srv  *asynq.Server
		h    asynq.Handler
	}
	var lanes []lane
	for i := range c.Dequeuers {
		// Spread the concurrency over the servers: the first ones take the rest.
		n := c.Concurrency / c.Dequeuers
		if i < c.Concurrency%c.Dequeuers {
			n++
		}
		lanes = append(lanes,
			lane{"group recall", s.newAsynq(tasks.Queues, n), mux},
			lane{"one-to-one withdraw", s.newAsynq(tasks.C2CQueues, n), mux})
	}
	if c.Discovery != nil {
		lanes = append(lanes, lane{"discovery", s.newAsynq(tasks.DiscoveryQueues, c.DiscoveryConcurrency), dmux})
	}
	for _, l := range lanes {
		if err := l.srv.Start(l.h); err != nil {
			s.shutdown()
			return fmt.Errorf("starting the asynq server for %s tasks: %w", l.name, err)
		}
		s.servers = append(s.servers, l.srv)
	}
	s.started = true
	if c.Unparker != nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stop, s.stopped = cancel, make(chan struct{})
		go func() { defer close(s.stopped); c.Unparker.Run(ctx) }()
	}
	return nil
}

// Run starts the lanes, runs until ctx is done, then shuts down as Shutdown
// does. It returns an error only if the lanes could not start.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	s.Shutdown()
	return nil
}

// Shutdown stops taking tasks, asks running handlers to stop between calls
// (Handler.Drain: a call in flight finishes and is recorded, what is left of
// its task goes back to the queue) and waits for every lane to stop. It is
// safe to call more than once.
func (s *Server) Shutdown() {
	s.cfg.Handler.Drain()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdown()
}

func (s *Server) shutdown() {
	if s.stop != nil {
		s.stop()
		<-s.stopped
		s.stop = nil
	}
	var wg sync.WaitGroup
	for _, srv := range s.servers {
		wg.Go(srv.Shutdown)
	}
	wg.Wait()
	s.servers = nil
}

// newAsynq configures one asynq server on queues with concurrency slots.
func (s *Server) newAsynq(queues map[string]int, concurrency int) *asynq.Server {
	c := s.cfg
	return asynq.NewServer(c.Redis, asynq.Config{
		ErrorHandler:             asynq.ErrorHandlerFunc(s.lastAttempt),
		Concurrency:              concurrency,
		Queues:                   queues,
		StrictPriority:           true,
		IsFailure:                IsFailure,
		RetryDelayFunc:           RetryDelay,
		ShutdownTimeout:          2*c.CallTimeout + 5*time.Second,
		DelayedTaskCheckInterval: c.DelayedInterval,
		TaskCheckInterval:        c.PollInterval,
		Logger:                   AsynqLogger{c.Logger},
		LogLevel:                 c.LogLevel,
	})
}

// lastAttempt is every lane's asynq ErrorHandler: a recall task about to
// be archived dead-letters its pending messages (code "exhausted"), a
// discovery task goes to DiscoveryErrors; nothing is left pending behind
// an archived task.
func (s *Server) lastAttempt(ctx context.Context, t *asynq.Task, err error) {
	if t.Type() == tasks.TypeDiscover {
		if s.cfg.DiscoveryErrors != nil {
			s.cfg.DiscoveryErrors.HandleError(ctx, t, err)
		}
		return
	}
	s.cfg.Handler.HandleError(ctx, t, err)
}

// logAttempt is the middleware that logs each attempt once.
func (s *Server) logAttempt(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		start := time.Now()
		err := next.ProcessTask(ctx, t)
		retried, _ := asynq.GetRetryCount(ctx)
		outcome := AttemptOutcome(ctx, err)
		level := slog.LevelDebug
		if outcome == "retry" || outcome == "dead" || outcome == "failed" {
			level = slog.LevelWarn
		}
		if !s.cfg.Logger.Enabled(ctx, level) {
			return err
		}
		var p struct {
			JobID string `json:"job_id"`
		}
		_ = json.Unmarshal(t.Payload(), &p) // every task's payload names its job
		attrs := []slog.Attr{
			slog.String("job_id", p.JobID),
			slog.String("task_id", taskIDOf(ctx)),
			slog.String("task_type", t.Type()),
			slog.Int("attempt", retried+1),
			slog.String("outcome", outcome),
			slog.Duration("duration", time.Since(start)),
		}
		if err != nil {
			attrs = append(attrs, slog.String("err", err.Error()))
		}
		s.cfg.Logger.LogAttrs(ctx, level, "task attempt", attrs...)
		return err
	})
}

// AttemptOutcome names what becomes of a task after an attempt that
// returned err: "done", "snoozed" (a Snooze: back later, no attempt used),
// "dead" (asynq.SkipRetry: archived at once), "failed" (the last attempt:
// archived) or "retry".
func AttemptOutcome(ctx context.Context, err error) string {
	var sn *Snooze
	switch {
	case err == nil:
		return "done"
	case errors.As(err, &sn):
		return "snoozed"
	case errors.Is(err, asynq.SkipRetry):
		return "dead"
	case tasks.Archived(ctx, err):
		return "failed"
	}
	return "retry"
}

// DefaultDequeuers is the Dequeuers a recall lane needs for a Redis round
// trip rtt: one asynq server per lane while a loop can take ~250 tasks a
// second at its two or three round trips a task (strict priority looks at
// the higher queues first), one more per ~1.3 ms of round trip after that,
// at most a quarter of concurrency and 32.
func DefaultDequeuers(rtt time.Duration, concurrency int) int {
	n := int(math.Ceil(float64(3*rtt) * 250 / float64(time.Second)))
	return max(1, min(n, 32, max(concurrency/4, 1)))
}

// MinConcurrency is the Concurrency a lane needs to hold capPerSec calls a
// second with a Redis round trip rtt: a task spends about ten round trips
// (taking it, the limiter, the send's record, the outcome, acknowledging
// it) and ~60 ms of API call; twice that, for the queueing in asynq's loops
// and the limiter's lead (measured: docs/BENCHMARKS.md, "Redis latency").
func MinConcurrency(rtt time.Duration, capPerSec int) int {
	return int(math.Ceil(2 * float64(capPerSec) * (0.06 + 10*rtt.Seconds())))
}

// DefaultDiscoveries is DiscoveryConcurrency's default: a quarter of
// concurrency. At the history APIs' cap of 200 calls/s and ~50 ms a call,
// about 10 scans at once keep one process's discovery at the cap.
func DefaultDiscoveries(concurrency int) int { return max(concurrency/4, 1) }

// AsynqLogger adapts slog to asynq's Logger: each record gets
// component=asynq. Fatal logs at error level and exits, as asynq's own
// logger does.
type AsynqLogger struct{ L *slog.Logger }

func (a AsynqLogger) Debug(args ...any) { a.L.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a AsynqLogger) Info(args ...any)  { a.L.Info(fmt.Sprint(args...), "component", "asynq") }
func (a AsynqLogger) Warn(args ...any)  { a.L.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a AsynqLogger) Error(args ...any) { a.L.Error(fmt.Sprint(args...), "component", "asynq") }
func (a AsynqLogger) Fatal(args ...any) {
	a.L.Error(fmt.Sprint(args...), "component", "asynq")
	os.Exit(1)
}
