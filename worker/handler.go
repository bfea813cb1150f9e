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
	// Limiter is the shared cap the send path waits on before each recall
	// call (limiter.AppGate). The IM's recall calls must not wait again:
	// TIM sends them through tim.Client.Paced. Nil: the send path waits on
	// nothing, and a TIM's recall calls wait on its client's Gate (if any)
	// as any other call does.
	Limiter Limiter
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics; nil records none.
	Metrics *Metrics
}

// Limiter is the shared cap as the send path sees it; limiter.AppGate
// satisfies it.
type Limiter interface {
	// Reserve books the next slot of api (the path's last segment) and
	// returns shortly before it, so that the caller records the send while
	// the slot approaches; the Slot's Wait sleeps out the rest (one wait per
	// call). Its errors (ctx done, Redis down, a wait too long) mean the
	// call is not made.
	Reserve(ctx context.Context, api string) (tim.Slot, error)
}

// noLimit is the Limiter of a Config without one.
type noLimit struct{}

func (noLimit) Reserve(context.Context, string) (tim.Slot, error) { return noLimit{}, nil }
func (noLimit) Wait(context.Context) error                        { return nil }

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
	if c.Limiter == nil {
		c.Limiter = noLimit{}
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
	if t, ok := im.(TIM); ok && cfg.Limiter == nil {
		t.gated = true
		im = t
	}
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
	sent      int  // sends this delivery counted (Begin)
	last      int  // which send of the message this delivery's last was (Begin's state + 1); 0: none yet
	unknown   bool // an earlier call for it may have succeeded without our hearing
	throttled bool // the last call for it was refused for the rate cap
	lastCode  string
	lastInfo  string
}

// send is one recall task as the attempt loop (run) sees it: what differs
// between the two recall APIs. Read one message's life in run: admit,
// limit (Config.Limiter), record the send, call, classify the answer
// (OutcomeOf), record the outcome, back off.
type send struct {
	jobID  string
	target jobs.Target
	api    tim.API
	log    *slog.Logger
	items  []*item
	// peek reads the items' states without counting a send; begin counts
	// one (the send is recorded before the call is made).
	peek, begin func(ctx context.Context, items []*item) (jobs.Begin, error)
	// call sends the items and returns each one's code by item id, or an
	// error that gives no per-item answer.
	call func(ctx context.Context, items []*item) (map[string]int, error)
	// whole: the API answers for its one message with the call's
	// ErrorCode (admin_msgwithdraw), so an error code is that answer.
	whole bool
	// checkFirst, if set, checks before the first call the messages an
	// earlier delivery sent without hearing the answer (preVerify).
	checkFirst bool
	// gone decides the OutcomeGone answers (codes) of messages an earlier
	// call of ours may have recalled unheard: which are recalled
	// (attribution unknown), by item id, read together.
	gone func(ctx context.Context, items []*item, codes map[string]int) (map[string]bool, error)
}

// gateError is err of the limiter (a wait for a slot that failed or was
// stopped) as a tim error of api wrapping tim.ErrGate.
func gateError(api tim.API, err error) error {
	return &tim.Error{API: api.Name(), Err: fmt.Errorf("%w: %w", tim.ErrGate, err)}
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
	target := jobs.Target{GroupID: p.GroupID, TopicID: p.TopicID}
	s := &send{
		jobID: p.JobID, target: target, api: tim.GroupMsgRecall, checkFirst: true,
		log: h.cfg.Logger.With("job_id", p.JobID, "group_id", p.GroupID),
		peek: func(ctx context.Context, items []*item) (jobs.Begin, error) {
			return h.store.PeekGroup(ctx, p.JobID, target, seqsOf(items))
		},
		begin: func(ctx context.Context, items []*item) (jobs.Begin, error) {
			return h.store.BeginGroup(ctx, p.JobID, target, seqsOf(items))
		},
		call: func(ctx context.Context, items []*item) (map[string]int, error) {
			codes, err := h.im.RecallGroup(ctx, p.GroupID, p.TopicID, seqsOf(items))
			if err != nil {
				return nil, err
			}
			out := make(map[string]int, len(codes))
			for seq, c := range codes {
				out[seqItem(seq)] = c
			}
			return out, nil
		},
		gone: func(ctx context.Context, items []*item, _ map[string]int) (map[string]bool, error) {
			recalled, err := h.im.RecalledSeqs(ctx, p.GroupID, p.TopicID, seqsOf(items))
			if err != nil {
				return nil, err
			}
			out := make(map[string]bool, len(items))
			for _, it := range items {
				out[it.id] = recalled[it.seq]
			}
			return out, nil
		},
	}
	for _, seq := range p.Seqs {
		s.items = append(s.items, &item{id: seqItem(seq), seq: seq})
	}
	return h.run(withTask(ctx, t), s)
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
	target := jobs.Target{From: p.From, To: p.To}
	s := &send{
		jobID: p.JobID, target: target, api: tim.AdminMsgWithdraw, whole: true,
		log:   h.cfg.Logger.With("job_id", p.JobID, "from", p.From, "to", p.To),
		items: []*item{{id: p.MsgKey}},
		peek: func(ctx context.Context, _ []*item) (jobs.Begin, error) {
			return h.store.PeekC2C(ctx, p.JobID, target, p.MsgKey)
		},
		begin: func(ctx context.Context, _ []*item) (jobs.Begin, error) {
			return h.store.BeginC2C(ctx, p.JobID, target, p.MsgKey)
		},
		call: func(ctx context.Context, _ []*item) (map[string]int, error) {
			return map[string]int{p.MsgKey: 0}, h.im.Withdraw(ctx, p.From, p.To, p.MsgKey)
		},
		// 20023 after a call whose answer we never heard: that call may
		// have recalled it, or someone before the job. It is gone either
		// way. (20022, not found, cannot be told apart: dead-lettered.)
		gone: func(_ context.Context, items []*item, codes map[string]int) (map[string]bool, error) {
			out := make(map[string]bool, len(items))
			for _, it := range items {
				out[it.id] = tim.IsDone(codes[it.id])
			}
			return out, nil
		},
	}
	return h.run(withTask(ctx, t), s)
}

// run is the attempt loop of a recall task: until every message of s is
// terminal, it admits them (a cancelled or paused job, messages already
// done), waits on the limiter, records the send, calls, records each
// outcome, and backs off before calling again for the messages left.
func (h *Handler) run(ctx context.Context, s *send) error {
	items := s.items
	for first := true; len(items) > 0; first = false {
		if h.draining.Load() {
			return errDraining
		}
		peek, err := s.peek(ctx, items)
		if err != nil {
			return err
		}
		if items, err = h.admit(ctx, s.jobID, s.target, peek, items, first); err != nil || len(items) == 0 {
			return err
		}
		if first && s.checkFirst {
			if items, err = h.preVerify(ctx, s, items); err != nil || len(items) == 0 {
				return err
			}
		}

		// Limit, record, call: reserve the call's slot first, count the
		// send as the slot approaches, then send at the slot. A worker
		// stopped while it waits for its share of the cap leaves no send
		// for a later delivery to suspect, and counting the send costs no
		// second wait.
		var codes map[string]int
		slot, callErr := h.cfg.Limiter.Reserve(ctx, s.api.Name())
		if callErr != nil {
			callErr = gateError(s.api, callErr)
		} else {
			b, err := s.begin(ctx, items)
			if err != nil {
				return err
			}
			noteRivalSends(items, b)
			if items, err = h.admit(ctx, s.jobID, s.target, b, items, false); err != nil || len(items) == 0 {
				return err
			}
			if callErr = slot.Wait(ctx); callErr != nil {
				callErr = gateError(s.api, callErr)
			}
		}
		start := time.Now()
		if callErr == nil {
			// The limiter learns when the call was written.
			codes, callErr = s.call(tim.ReportWrites(ctx, slot), items)
		}
		h.cfg.Metrics.call(s.api.Name(), codeOf(callErr), time.Since(start))
		if s.whole {
			codes, callErr = wholeAnswer(items, codes, callErr)
		}
		if callErr != nil {
			items, err = h.callFailed(ctx, s, items, callErr)
		} else {
			items, err = h.answered(ctx, s, items, codes)
		}
		if err != nil {
			return err
		}
		if err := h.noteAnswers(ctx, s.jobID, s.target, items); err != nil {
			return err
		}
		if err := h.backoff(ctx, items); err != nil {
			return err
		}
	}
	return nil
}

// noteRivalSends compares the sends Begin found before this one with those
// this delivery knows of (earlier deliveries' and its own). More means that
// another delivery of the same task counted a send meanwhile (asynq
// delivers at least once: a task recovered while its first delivery still
// runs); that call may land before ours, so the message is in doubt, and a
// "not found" answer to ours is checked against the history rather than
// dead-lettered ahead of the other delivery's "recalled".
func noteRivalSends(items []*item, b jobs.Begin) {
	for i, it := range items {
		if st := b.States[i]; !st.Terminal() {
			if int(st) != it.prior+it.sent {
				it.unknown = true
			}
			it.sent++
			it.last = int(st) + 1
		}
	}
}

// wholeAnswer turns the error code of a call that answers for its one
// message into that message's code. An error without a code (the call was
// not answered) or an app-wide code stays the call's.
func wholeAnswer(items []*item, codes map[string]int, err error) (map[string]int, error) {
	var te *tim.Error
	if err == nil || !errors.As(err, &te) || te.Code == 0 || len(items) != 1 || OutcomeOf(te.Code) == OutcomeAppWide {
		return codes, err
	}
	return map[string]int{items[0].id: te.Code}, nil
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
// the next delivery does not need to check them against the history. Each
// answer is of this delivery's last send: a send counted since by another
// delivery stays unanswered (jobs.Store.MarkAnswered).
func (h *Handler) noteAnswers(ctx context.Context, jobID string, target jobs.Target, items []*item) error {
	var answered []jobs.Answer
	for _, it := range items {
		if !it.unknown && it.last > 0 {
			answered = append(answered, jobs.Answer{Item: it.id, Send: it.last})
		}
	}
	return h.store.MarkAnswered(ctx, jobID, target, answered)
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
			if st := b.States[i]; !st.Terminal() {
				// A send left unanswered may have recalled it: said, not checked
				// (a cancelled job makes no call).
				doubt := it.unknown || (st > 0 && !b.Answered[i])
				out = append(out, jobs.Outcome{Item: it.id, Code: jobs.CodeCancelled, ErrorInfo: "job cancelled", Attempts: it.prior + it.attempts, InDoubt: doubt})
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

// Outcome is what one answer code means for one message: the one
// classification the send path acts on (table-tested in TestOutcomeOf).
type Outcome int

// The outcomes.
const (
	// OutcomeRecalled: this call recalled it (code 0).
	OutcomeRecalled Outcome = iota
	// OutcomeGone: it is not there to recall (10030, 20022 not found;
	// 20023 already recalled). If an earlier call of ours went unanswered,
	// that call may have done it: the send checks (send.gone) and counts it
	// recalled, attribution unknown; otherwise it is dead-lettered.
	OutcomeGone
	// OutcomeThrottled: refused for the rate cap. It uses no attempt.
	OutcomeThrottled
	// OutcomeRetry: transient (or an auth code the client already renewed
	// the UserSig for): another call, up to Config.MaxAttempts.
	OutcomeRetry
	// OutcomeDeadLetter: permanent; dead-lettered at once, in the
	// category jobs.CategoryOf gives its code.
	OutcomeDeadLetter
	// OutcomeAppWide: the app's configuration is wrong (tim.AppWideOf):
	// the job is paused, nothing is dead-lettered.
	OutcomeAppWide
)

var outcomeNames = [...]string{"recalled", "gone", "throttled", "retry", "dead-letter", "app-wide"}

func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// OutcomeOf classifies an answer code (a call's ErrorCode or an item's
// RetCode).
func OutcomeOf(code int) Outcome {
	if _, ok := tim.AppWideOf(&tim.Error{Code: code}); ok {
		return OutcomeAppWide
	}
	switch tim.Classify(code) {
	case tim.ClassOK:
		return OutcomeRecalled
	case tim.ClassThrottled:
		return OutcomeThrottled
	case tim.ClassRetry, tim.ClassAuth:
		return OutcomeRetry
	}
	if tim.IsNotFound(code) || tim.IsDone(code) {
		return OutcomeGone
	}
	return OutcomeDeadLetter
}

// answered handles a call's per-message codes and returns the messages to
// call again.
func (h *Handler) answered(ctx context.Context, s *send, items []*item, codes map[string]int) ([]*item, error) {
	var ends []*item
	for _, it := range items {
		if code, ok := codes[it.id]; ok && h.ends(it, OutcomeOf(code)) {
			ends = append(ends, it)
		}
	}
	if err := h.noteLaterSends(ctx, s, ends); err != nil {
		return nil, err
	}
	// The messages in doubt answered "gone" are checked together: one
	// history read for a task, not one a message.
	var doubt []*item
	for _, it := range items {
		if code, ok := codes[it.id]; ok && it.unknown && OutcomeOf(code) == OutcomeGone {
			doubt = append(doubt, it)
		}
	}
	var recalledUnheard map[string]bool
	var checkErr error
	if len(doubt) > 0 {
		recalledUnheard, checkErr = s.gone(ctx, doubt, codes)
	}
	var out []jobs.Outcome
	var retry, appWide []*item
	var aw tim.AppWide
	for _, it := range items {
		code, ok := codes[it.id]
		if !ok {
			// No result for this message: treat like an unanswered call.
			it.attempts++
			it.unknown = true
			it.lastCode, it.lastInfo = jobs.CodeTransport, "no answer for this message in the call's result"
			retry = h.retryOrDead(it, retry, &out)
			continue
		}
		it.lastCode, it.lastInfo = strconv.Itoa(code), tim.Describe(code)
		switch OutcomeOf(code) {
		case OutcomeRecalled:
			out = append(out, jobs.Outcome{Item: it.id, Recalled: true, Attempts: it.prior + it.attempts + 1})
		case OutcomeThrottled:
			// This call did nothing; an earlier unanswered one still may have.
			it.throttled = true
			retry = append(retry, it)
		case OutcomeRetry:
			it.attempts++
			it.throttled = false
			retry = h.retryOrDead(it, retry, &out)
		case OutcomeAppWide:
			aw, _ = tim.AppWideOf(&tim.Error{Code: code})
			appWide = append(appWide, it)
		case OutcomeGone:
			if it.unknown {
				if checkErr != nil {
					// Cannot tell now: try the whole thing again later.
					s.log.Warn(LogCheckAfterGoneFailed, "item", it.id, "err", checkErr)
					it.attempts++
					retry = h.retryOrDead(it, retry, &out)
					continue
				}
				if recalledUnheard[it.id] {
					s.log.Info(LogRecalledUnattributed, "item", it.id, "code", code)
					out = append(out, jobs.Outcome{Item: it.id, Recalled: true, Unattributed: true, Attempts: it.prior + it.attempts + 1})
					continue
				}
			}
			out = append(out, jobs.Outcome{Item: it.id, Code: it.lastCode, ErrorInfo: it.lastInfo, Attempts: it.prior + it.attempts + 1})
		default:
			out = append(out, jobs.Outcome{Item: it.id, Code: it.lastCode, ErrorInfo: it.lastInfo, Attempts: it.prior + it.attempts + 1, InDoubt: it.unknown})
		}
	}
	if err := h.record(ctx, s.jobID, s.target, out); err != nil {
		return nil, err
	}
	if len(appWide) > 0 {
		// The app is misconfigured: the messages left wait for the fix.
		return nil, h.breakerTrip(ctx, s.jobID, s.target, append(appWide, retry...), aw, s.log)
	}
	return retry, nil
}

// ends reports whether an answer of outcome o ends it without recalling it
// (gone, a permanent code, or its last attempt spent).
func (h *Handler) ends(it *item, o Outcome) bool {
	switch o {
	case OutcomeGone, OutcomeDeadLetter:
		return true
	case OutcomeRetry:
		return it.attempts+1 >= h.cfg.MaxAttempts
	}
	return false
}

// noteLaterSends marks in doubt the messages of ends whose state shows a
// send counted after this delivery's last, and not answered: another
// delivery of the same task, at once (asynq delivers at least once: a task
// pushed back to its queue by a worker shutting down, or recovered from a
// worker cut off from Redis, while it still runs). That call may have
// reached the server before ours and recalled the message unheard, so our
// answer ("not found", or a code that ends it) does not say the job did
// not recall it: a "not found" is checked against the history, and a dead
// letter says in_doubt. (A send counted after our answer came cannot have
// landed before our call.)
func (h *Handler) noteLaterSends(ctx context.Context, s *send, ends []*item) error {
	var ask []*item
	for _, it := range ends {
		if !it.unknown && it.last > 0 {
			ask = append(ask, it)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	b, err := s.peek(ctx, ask)
	if err != nil {
		return err
	}
	for i, it := range ask {
		if st := b.States[i]; !st.Terminal() && int(st) > it.last && !b.Answered[i] {
			it.unknown = true
		}
	}
	return nil
}

// preVerify checks, before calling again, the messages an earlier delivery
// sent without recording an answer (the worker died mid-call, or a
// re-queued timeout), read together (IM.RecalledSeqs: a pull per task, not
// per message): those the history shows recalled are counted recalled
// without a second recall request, attribution unknown (the lost call, or
// someone before the job). The others are sent again and keep their doubt,
// since the earlier call may still be in flight (a delivery running beside
// this one) and land before ours: a "not found" answer is then checked
// against the history (send.gone). If the history cannot be read, they
// keep their doubt too.
func (h *Handler) preVerify(ctx context.Context, s *send, items []*item) ([]*item, error) {
	var seqs []int64
	for _, it := range items {
		if it.unknown {
			seqs = append(seqs, it.seq)
		}
	}
	if len(seqs) == 0 {
		return items, nil
	}
	recalled, err := h.im.RecalledSeqs(ctx, s.target.GroupID, s.target.TopicID, seqs)
	if err != nil {
		s.log.Warn(LogCannotCheckBeforeCall, "seqs", seqs, "err", err)
		return items, nil
	}
	var out []jobs.Outcome
	kept := items[:0]
	for _, it := range items {
		if it.unknown && recalled[it.seq] {
			out = append(out, jobs.Outcome{Item: it.id, Recalled: true, Unattributed: true, Attempts: it.prior + it.attempts})
			continue
		}
		kept = append(kept, it)
	}
	if len(out) > 0 {
		s.log.Info(LogFoundRecalledBeforeCall, "messages", len(out))
	}
	return kept, h.record(ctx, s.jobID, s.target, out)
}

// callFailed handles a call that gave no per-message answer and returns the
// messages to retry.
func (h *Handler) callFailed(ctx context.Context, s *send, items []*item, callErr error) ([]*item, error) {
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
		return nil, h.breakerTrip(ctx, s.jobID, s.target, items, aw, s.log)
	}
	o := OutcomeDeadLetter
	switch class {
	case tim.ClassThrottled:
		o = OutcomeThrottled
	case tim.ClassRetry, tim.ClassAuth:
		o = OutcomeRetry
	}
	var ends []*item
	for _, it := range items {
		if h.ends(it, o) {
			ends = append(ends, it)
		}
	}
	if err := h.noteLaterSends(ctx, s, ends); err != nil {
		return nil, err
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
			out = append(out, jobs.Outcome{Item: it.id, Code: code, ErrorInfo: info, Attempts: it.prior + it.attempts + 1, InDoubt: it.unknown})
		}
	}
	if len(out) > 0 {
		s.log.Info("dead-lettering after call failure", "code", code, "class", class.String(), "messages", len(out))
	}
	return retry, h.record(ctx, s.jobID, s.target, out)
}

// retryOrDead keeps it for another call, or dead-letters it with its last
// code once its attempts are spent.
func (h *Handler) retryOrDead(it *item, retry []*item, out *[]jobs.Outcome) []*item {
	if it.attempts >= h.cfg.MaxAttempts {
		*out = append(*out, jobs.Outcome{Item: it.id, Code: it.lastCode, ErrorInfo: it.lastInfo, Attempts: it.prior + it.attempts, InDoubt: it.unknown})
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

// unanswered reports whether the server may have acted on a call whose answer
// we did not get: a timeout, a broken connection, or an HTTP 5xx. A call the
// Gate did not let go was never sent. An ErrorCode is an answer. Tencent
// documents a non-200 status as a network error in front of the service:
// a 4xx is the gateway refusing the request (it never reached the service),
// but a 5xx (502, 504) can come after the service acted, its answer lost on
// the way back, so the message is in doubt, like after a timeout: the next
// call's "not found" is checked against the history (counted recalled,
// attribution unknown, rather than dead-lettered not_found).
func unanswered(err error) bool {
	if errors.Is(err, tim.ErrGate) {
		return false // never sent: nothing happened
	}
	var te *tim.Error
	if errors.As(err, &te) && (te.Code != 0 || (te.HTTPStatus >= http.StatusBadRequest && te.HTTPStatus < http.StatusInternalServerError)) {
		return false
	}
	return true
}
