package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// Config tunes the handler. Zero values mean the documented defaults.
type Config struct {
	// AppID is the SDKAppID this worker's IM client calls as. A task of
	// another app is left for a worker of that app (snoozed, logged). Zero
	// accepts every app.
	AppID int64
	// MaxAttempts is how many calls a message gets for transient failures
	// before it is dead-lettered with the last code. Default 5.
	MaxAttempts int
	// BaseBackoff is the first retry delay; it doubles per attempt, with
	// jitter, up to MaxBackoff. Defaults 200 ms and 5 s.
	BaseBackoff, MaxBackoff time.Duration
	// PausedDelay is how long a task waits before it is looked at again
	// when its job was paused and resumed while the task was being parked.
	// Default 5 s. (A paused job's tasks are parked, not retried: see Park.)
	PausedDelay time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics; nil records none.
	Metrics *Metrics
}

func (c Config) withDefaults() Config {
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.BaseBackoff <= 0 {
		c.BaseBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.PausedDelay <= 0 {
		c.PausedDelay = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Handler handles recall tasks. It is safe for concurrent use.
type Handler struct {
	im       IM
	store    *jobs.Store
	cfg      Config
	draining atomic.Bool
	breaker  atomic.Pointer[trip] // open after an app-wide error; see breaker.go
}

// New returns a handler that calls im and records outcomes in store.
func New(im IM, store *jobs.Store, cfg Config) *Handler {
	return &Handler{im: im, store: store, cfg: cfg.withDefaults()}
}

// Register adds the handler's task types to mux.
func (h *Handler) Register(mux *asynq.ServeMux) {
	mux.HandleFunc(tasks.TypeGroupRecall, h.HandleGroupRecall)
	mux.HandleFunc(tasks.TypeC2CWithdraw, h.HandleC2CWithdraw)
}

// Drain asks running handlers to stop between calls: a call in flight
// finishes and is recorded, and the task's remaining messages go back to the
// queue. Call it on SIGTERM before shutting the asynq server down.
func (h *Handler) Drain() { h.draining.Store(true) }

// Snooze is returned when a task must run later without counting as a
// failure (a paused job, a draining worker). See IsFailure and RetryDelay.
type Snooze struct {
	After  time.Duration
	Reason string
}

func (s *Snooze) Error() string { return "snoozed " + s.After.String() + ": " + s.Reason }

// IsFailure is for asynq.Config.IsFailure: a snooze uses no retry attempt.
func IsFailure(err error) bool {
	var s *Snooze
	return !errors.As(err, &s)
}

// RetryDelay is for asynq.Config.RetryDelayFunc: a snooze waits what it asks;
// real failures (Redis down, a crash) back off exponentially, capped at a minute.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var s *Snooze
	if errors.As(err, &s) {
		return s.After
	}
	d := time.Second << min(n, 6)
	return min(d, time.Minute) + rand.N(time.Second)
}

// errDraining sends a task back to the queue when the worker shuts down
// between two calls.
var errDraining = &Snooze{After: time.Second, Reason: "worker shutting down"}

// item is one message of a task as the handler tracks it.
type item struct {
	id        string // seq (decimal) or MsgKey
	seq       int64
	attempts  int  // calls of this delivery that count towards MaxAttempts
	prior     int  // calls sent by earlier deliveries (for the record)
	unknown   bool // an earlier call for it may have succeeded without our hearing
	throttled bool // the last call for it was refused for the rate cap
	lastCode  string
	lastInfo  string
}

// HandleGroupRecall handles a tasks.TypeGroupRecall task.
func (h *Handler) HandleGroupRecall(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeGroupRecall(t)
	if err != nil {
		return err
	}
	if err := h.checkApp(p.JobID, p.AppID); err != nil {
		return err
	}
	ctx = withTask(ctx, t)
	target := jobs.Target{GroupID: p.GroupID, TopicID: p.TopicID}
	log := h.cfg.Logger.With("job_id", p.JobID, "group_id", p.GroupID)
	items := make([]*item, len(p.Seqs))
	for i, s := range p.Seqs {
		items[i] = &item{id: strconv.FormatInt(s, 10), seq: s}
	}
	first := true
	for len(items) > 0 {
		if h.draining.Load() {
			return errDraining
		}
		peek, err := h.store.PeekGroup(ctx, p.JobID, target, seqsOf(items))
		if err != nil {
			return err
		}
		items, err = h.admit(ctx, p.JobID, target, peek, items, first)
		if err != nil || len(items) == 0 {
			return err
		}
		if first {
			if items, err = h.preVerify(ctx, p.JobID, target, items, log); err != nil || len(items) == 0 {
				return err
			}
		}
		first = false

		// Reserve the call's slot first, count the send as the slot
		// approaches, then send at the slot: a worker stopped while it waits
		// for its share of the cap leaves no send for a later delivery to
		// suspect, and counting the send costs no second wait.
		callCtx, callErr := h.im.Await(ctx, tim.GroupMsgRecall)
		start := time.Now()
		var codes map[int64]int
		if callErr == nil {
			b, err := h.store.BeginGroup(ctx, p.JobID, target, seqsOf(items))
			if err != nil {
				return err
			}
			if items, err = h.admit(ctx, p.JobID, target, b, items, false); err != nil || len(items) == 0 {
				return err
			}
			codes, callErr = h.im.RecallGroup(callCtx, p.GroupID, p.TopicID, seqsOf(items))
		}
		if callErr != nil {
			h.cfg.Metrics.call(tim.GroupMsgRecall.Name(), codeOf(callErr), time.Since(start))
			items, err = h.callFailed(ctx, p.JobID, target, items, callErr, log)
		} else {
			h.cfg.Metrics.call(tim.GroupMsgRecall.Name(), "0", time.Since(start))
			items, err = h.groupAnswered(ctx, p.JobID, target, items, codes, log)
		}
		if err != nil {
			return err
		}
		if err := h.noteAnswers(ctx, p.JobID, target, items); err != nil {
			return err
		}
		if len(items) > 0 {
			if err := h.backoff(ctx, items); err != nil {
				return err
			}
		}
	}
	return nil
}

// seqsOf returns the seqs of items.
func seqsOf(items []*item) []int64 {
	seqs := make([]int64, len(items))
	for i, it := range items {
		seqs[i] = it.seq
	}
	return seqs
}

// noteAnswers records that the messages left to retry got a definite
// answer (not recalled), so that if the worker stops before retrying them,
// the next delivery does not need to check them against the history.
func (h *Handler) noteAnswers(ctx context.Context, jobID string, target jobs.Target, items []*item) error {
	var answered []string
	for _, it := range items {
		if !it.unknown {
			answered = append(answered, it.id)
		}
	}
	return h.store.MarkAnswered(ctx, jobID, target, answered)
}

// HandleC2CWithdraw handles a tasks.TypeC2CWithdraw task.
func (h *Handler) HandleC2CWithdraw(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeC2CWithdraw(t)
	if err != nil {
		return err
	}
	if err := h.checkApp(p.JobID, p.AppID); err != nil {
		return err
	}
	ctx = withTask(ctx, t)
	target := jobs.Target{From: p.From, To: p.To}
	log := h.cfg.Logger.With("job_id", p.JobID, "from", p.From, "to", p.To)
	items := []*item{{id: p.MsgKey}}
	first := true
	for len(items) > 0 {
		if h.draining.Load() {
			return errDraining
		}
		peek, err := h.store.PeekC2C(ctx, p.JobID, target, p.MsgKey)
		if err != nil {
			return err
		}
		items, err = h.admit(ctx, p.JobID, target, peek, items, first)
		if err != nil || len(items) == 0 {
			return err
		}
		first = false

		// Wait for the cap, count the send, send (see HandleGroupRecall).
		callCtx, callErr := h.im.Await(ctx, tim.AdminMsgWithdraw)
		start := time.Now()
		if callErr == nil {
			b, err := h.store.BeginC2C(ctx, p.JobID, target, p.MsgKey)
			if err != nil {
				return err
			}
			if items, err = h.admit(ctx, p.JobID, target, b, items, false); err != nil || len(items) == 0 {
				return err
			}
			callErr = h.im.Withdraw(callCtx, p.From, p.To, p.MsgKey)
		}
		code := codeOf(callErr)
		h.cfg.Metrics.call(tim.AdminMsgWithdraw.Name(), code, time.Since(start))
		it := items[0]
		if callErr == nil {
			items, err = nil, h.record(ctx, p.JobID, target, []jobs.Outcome{{Item: it.id, Recalled: true, Attempts: it.prior + it.attempts + 1}})
		} else if c := tim.ClassOf(callErr); c == tim.ClassDone && it.unknown {
			// 20023 after a call whose answer we never heard: that call may
			// have recalled it, or someone before the job. It is gone.
			log.Info("already recalled after an unanswered call: counting as recalled, attribution unknown", "code", code)
			items, err = nil, h.record(ctx, p.JobID, target, []jobs.Outcome{{Item: it.id, Recalled: true, Unattributed: true, Attempts: it.prior + it.attempts + 1}})
		} else {
			items, err = h.callFailed(ctx, p.JobID, target, items, callErr, log)
		}
		if err != nil {
			return err
		}
		if err := h.noteAnswers(ctx, p.JobID, target, items); err != nil {
			return err
		}
		if len(items) > 0 {
			if err := h.backoff(ctx, items); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkApp snoozes a task of an app this worker cannot call as.
func (h *Handler) checkApp(jobID string, app int64) error {
	if h.cfg.AppID == 0 || app == h.cfg.AppID {
		return nil
	}
	h.cfg.Logger.Error("task of another app: leaving it for a worker of that app", "job_id", jobID, "sdkappid", app, "worker_sdkappid", h.cfg.AppID)
	return &Snooze{After: 30 * time.Second, Reason: fmt.Sprintf("task of sdkappid %d, worker serves %d", app, h.cfg.AppID)}
}

// admit applies what Begin found: a cancelled job's messages are dropped, a
// paused job's task is parked (or, if the worker's breaker is open for a
// job not resumed since, the job is paused first), terminal messages are
// left out, and on the first call the sends of earlier deliveries are taken
// into account.
func (h *Handler) admit(ctx context.Context, jobID string, target jobs.Target, b jobs.Begin, items []*item, first bool) ([]*item, error) {
	if b.Status == jobs.StatusCancelled {
		var out []jobs.Outcome
		for i, it := range items {
			if !b.States[i].Terminal() {
				out = append(out, jobs.Outcome{Item: it.id, Code: jobs.CodeCancelled, ErrorInfo: "job cancelled", Attempts: it.prior + it.attempts})
			}
		}
		return nil, h.record(ctx, jobID, target, out)
	}
	if !b.Paused {
		tripped, err := h.tripIfOpen(ctx, jobID)
		if err != nil {
			return nil, err
		}
		b.Paused = tripped
	}
	if b.Paused {
		return nil, h.park(ctx, jobID)
	}
	kept := items[:0]
	for i, it := range items {
		st := b.States[i]
		if st == jobs.ItemUnplanned {
			h.cfg.Logger.Warn("task names a message its job never planned; skipped", "job_id", jobID, "target", target.String(), "item", it.id)
			continue
		}
		if st.Terminal() {
			continue
		}
		if first && st > 0 {
			it.prior = int(st)
			it.unknown = !b.Answered[i]
		}
		kept = append(kept, it)
	}
	return kept, nil
}

// groupAnswered handles a group_msg_recall answer with per-seq codes and
// returns the messages to retry.
func (h *Handler) groupAnswered(ctx context.Context, jobID string, target jobs.Target, items []*item, codes map[int64]int, log *slog.Logger) ([]*item, error) {
	var out []jobs.Outcome
	var retry []*item
	for _, it := range items {
		code, ok := codes[it.seq]
		if !ok {
			// No result for this seq: treat like an unanswered call.
			it.attempts++
			it.unknown = true
			it.lastCode, it.lastInfo = jobs.CodeTransport, "no RecallRetList entry for this seq"
			retry = h.retryOrDead(it, retry, &out)
			continue
		}
		it.lastCode, it.lastInfo = strconv.Itoa(code), tim.Describe(code)
		switch tim.Classify(code) {
		case tim.ClassOK:
			out = append(out, jobs.Outcome{Item: it.id, Recalled: true, Attempts: it.prior + it.attempts + 1})
		case tim.ClassThrottled:
			// This call did nothing; an earlier unanswered one still may have.
			it.throttled = true
			retry = append(retry, it)
		case tim.ClassRetry, tim.ClassAuth:
			it.attempts++
			it.throttled = false
			retry = h.retryOrDead(it, retry, &out)
		default:
			if tim.IsNotFound(code) && it.unknown {
				recalled, err := h.verify(ctx, target, it.seq)
				if err != nil {
					// Cannot tell now: try the whole thing again later.
					log.Warn("verifying an unanswered recall failed; will retry", "seqs", it.seq, "err", err)
					it.attempts++
					retry = h.retryOrDead(it, retry, &out)
					continue
				}
				if recalled {
					log.Info("seq already recalled after an unanswered call: counting as recalled, attribution unknown", "seqs", it.seq)
					out = append(out, jobs.Outcome{Item: it.id, Recalled: true, Unattributed: true, Attempts: it.prior + it.attempts + 1})
					continue
				}
			}
			out = append(out, jobs.Outcome{Item: it.id, Code: it.lastCode, ErrorInfo: it.lastInfo, Attempts: it.prior + it.attempts + 1})
		}
	}
	return retry, h.record(ctx, jobID, target, out)
}

// preVerify checks, before calling again, the messages an earlier delivery
// sent without recording an answer (the worker died mid-call): those the
// history shows recalled are counted recalled without a second recall
// request, attribution unknown (the lost call, or someone before the job).
// The others are sent again as fresh; if the history cannot be read, they
// keep their doubt and are checked after the call.
func (h *Handler) preVerify(ctx context.Context, jobID string, target jobs.Target, items []*item, log *slog.Logger) ([]*item, error) {
	var out []jobs.Outcome
	kept := items[:0]
	for _, it := range items {
		if !it.unknown {
			kept = append(kept, it)
			continue
		}
		recalled, _, err := h.im.GroupRecalled(ctx, target.GroupID, target.TopicID, it.seq)
		switch {
		case err != nil:
			log.Warn("cannot check a message sent before a crash; will check after the call", "seqs", it.seq, "err", err)
		case recalled:
			out = append(out, jobs.Outcome{Item: it.id, Recalled: true, Unattributed: true, Attempts: it.prior + it.attempts})
			continue
		default: // present and not recalled, or missing: either way not ours
			it.unknown = false
		}
		kept = append(kept, it)
	}
	if len(out) > 0 {
		log.Info("messages found recalled after a call whose answer was lost: counted recalled, attribution unknown", "messages", len(out))
	}
	return kept, h.record(ctx, jobID, target, out)
}

// verify asks the group's history whether seq is recalled.
func (h *Handler) verify(ctx context.Context, target jobs.Target, seq int64) (bool, error) {
	recalled, _, err := h.im.GroupRecalled(ctx, target.GroupID, target.TopicID, seq)
	return recalled, err
}

// callFailed handles a call that gave no per-message answer and returns the
// messages to retry.
func (h *Handler) callFailed(ctx context.Context, jobID string, target jobs.Target, items []*item, callErr error, log *slog.Logger) ([]*item, error) {
	class := tim.ClassOf(callErr)
	code, info := codeOf(callErr), infoOf(callErr)
	if errors.Is(callErr, context.Canceled) && ctx.Err() != nil {
		// The handler's context ended (asynq gave up on the task): the task
		// goes back to the queue; what was sent is marked in the job store.
		return nil, ctx.Err()
	}
	if aw, ok := tim.AppWideOf(callErr); ok {
		// The app's configuration is wrong: every message would fail the
		// same way. Pause the job (and, through the breaker, the app's
		// other jobs) instead of dead-lettering; the messages stay pending.
		return nil, h.breakerTrip(ctx, jobID, target, items, aw, log)
	}
	var out []jobs.Outcome
	var retry []*item
	for _, it := range items {
		it.lastCode, it.lastInfo = code, info
		it.throttled = class == tim.ClassThrottled
		switch class {
		case tim.ClassThrottled:
			retry = append(retry, it)
		case tim.ClassRetry, tim.ClassAuth:
			it.attempts++
			if unanswered(callErr) {
				it.unknown = true
			}
			retry = h.retryOrDead(it, retry, &out)
		default:
			out = append(out, jobs.Outcome{Item: it.id, Code: code, ErrorInfo: info, Attempts: it.prior + it.attempts + 1})
		}
	}
	if len(out) > 0 {
		log.Info("dead-lettering after call failure", "code", code, "class", class.String(), "messages", len(out))
	}
	return retry, h.record(ctx, jobID, target, out)
}

// retryOrDead keeps it for another call, or dead-letters it with its last
// code once its attempts are spent.
func (h *Handler) retryOrDead(it *item, retry []*item, out *[]jobs.Outcome) []*item {
	if it.attempts >= h.cfg.MaxAttempts {
		*out = append(*out, jobs.Outcome{Item: it.id, Code: it.lastCode, ErrorInfo: it.lastInfo, Attempts: it.prior + it.attempts})
		return retry
	}
	return append(retry, it)
}

func (h *Handler) record(ctx context.Context, jobID string, target jobs.Target, out []jobs.Outcome) error {
	if len(out) == 0 {
		return nil
	}
	// Record even if the handler's context has just ended: the call was made.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	n, err := h.store.Record(rctx, jobID, target, out)
	if err != nil {
		return fmt.Errorf("recording %d outcomes: %w", len(out), err)
	}
	if n > 0 {
		h.closeBreakerOnRecall(out)
		recalled, dead := 0, map[string]int{}
		for _, o := range out {
			if o.Recalled {
				recalled++
			} else {
				dead[string(jobs.CategoryOf(o.Code))]++
			}
		}
		h.cfg.Metrics.message("recalled", recalled)
		for cat, k := range dead {
			h.cfg.Metrics.message(cat, k)
		}
	}
	return nil
}

// backoff sleeps before the next call for items: exponential in the highest
// attempt count, with jitter. A throttle uses no attempt and gets a short
// pause only (the shared limiter already holds every process back).
func (h *Handler) backoff(ctx context.Context, items []*item) error {
	n, throttled := 0, false
	for _, it := range items {
		n = max(n, it.attempts)
		throttled = throttled || it.throttled
	}
	var d time.Duration
	switch {
	case n > 0:
		d = min(h.cfg.BaseBackoff<<min(n-1, 10), h.cfg.MaxBackoff)
		d = d/2 + rand.N(d/2+1)
	case throttled:
		d = throttlePause + rand.N(throttlePause)
	default:
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// throttlePause is the least a task waits after a throttle code.
const throttlePause = 50 * time.Millisecond

// codeOf is the dead-letter / metrics code of a call error.
func codeOf(err error) string {
	if err == nil {
		return "0"
	}
	var te *tim.Error
	if errors.As(err, &te) && te.Code != 0 {
		return strconv.Itoa(te.Code)
	}
	if isTimeout(err) {
		return jobs.CodeTimeout
	}
	if errors.As(err, &te) && te.HTTPStatus != 0 && te.HTTPStatus != 200 {
		return "http_" + strconv.Itoa(te.HTTPStatus)
	}
	return jobs.CodeTransport
}

func infoOf(err error) string {
	var te *tim.Error
	if errors.As(err, &te) && te.Info != "" {
		return te.Info
	}
	return err.Error()
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unanswered reports whether the server may have acted on a call whose
// answer we did not get: a timeout or a broken connection. A call the Gate
// did not let go was never sent. An ErrorCode is an answer, and so is an
// HTTP error status: Tencent documents 502 and its kin as network errors in
// front of the service, so the call is taken as not made. (Were it made after all, the retry finds the message gone and it is
// dead-lettered as not found: gone either way.)
func unanswered(err error) bool {
	if errors.Is(err, tim.ErrGate) {
		return false // never sent: nothing happened
	}
	var te *tim.Error
	if errors.As(err, &te) && (te.Code != 0 || (te.HTTPStatus != 0 && te.HTTPStatus != http.StatusOK)) {
		return false
	}
	return true
}
