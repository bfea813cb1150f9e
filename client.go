package imrecall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
	"github.com/redis/go-redis/v9"
)

// DefaultConfirmAbove is the confirmation threshold when Config.ConfirmAbove is zero.
const DefaultConfirmAbove = 1000

// Config configures a Client. Redis is required; Plan and Create need
// AppID and Queue too.
type Config struct {
	// Redis holds the job records (and the callback index). Required.
	Redis redis.UniversalClient
	// Prefix is the prefix of imrecall's own keys; empty is jobs.DefaultPrefix.
	Prefix string
	// Queue enqueues tasks: an *asynq.Client on the same Redis. Nil:
	// Create and Requeue are refused, and Cancel and Resume leave parked
	// tasks to the workers' unparkers.
	Queue producer.Enqueuer
	// AppID is the Tencent SDKAppID the jobs are for. Zero: Plan and
	// Create are refused.
	AppID int64
	// IM reads histories: purges by scan, their dry runs, and the sender
	// check of purges by index. Nil: purges are refused; recalls of listed
	// messages need no IM client.
	IM producer.IM
	// Index is the callback index for purges by index. Nil: none (auto
	// scans; index is refused).
	Index *msgindex.Index
	// ConfirmAbove: a job with more messages needs confirmation. Zero is
	// DefaultConfirmAbove; negative makes every job need it.
	ConfirmAbove int
	// DiscoveryConcurrency is how many histories a dry run reads at once
	// (the limiter still caps the calls). Zero is 16.
	DiscoveryConcurrency int
	// PlannerLease is how long a planner's lease lasts without renewal
	// (jobs.Store.SetLeaseTTL). Zero keeps the store's default.
	PlannerLease time.Duration
	// ApprovalAbove: a job of more messages (per its plan) is created held,
	// status awaiting_approval, until an actor other than its requester
	// approves it (Approve). Zero: no job waits for approval.
	ApprovalAbove int
	// ApprovalDelay is the cool-off after an approval in which the job can
	// still be cancelled before it starts. Zero: it starts at once.
	ApprovalDelay time.Duration
	// Backlog bounds each job's work queued ahead of the workers: its
	// planners plan no further while it has that many messages pending,
	// and go on as the workers settle them (jobs.Spec.Backlog), so Redis
	// holds a bounded queue whatever the job's size. Create then returns
	// when planning ends, about when the job does. Zero: the whole plan is
	// queued at once (producer.DefaultBacklog is the CLI's default).
	Backlog int64
	// Poll is how often Wait reads the job. Zero is 500 ms.
	Poll time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock relative times (since 90d) are taken from; nil is time.Now.
	Now func() time.Time
	// IndexSettle is how long a purge by index whose range reaches its
	// start waits for the callbacks then in flight before it reads the index
	// again for the messages they bring (and for the gaps recorded meanwhile).
	// Zero is DefaultIndexSettle; negative reads the index once, waiting
	// for nothing (the CLI's --index-settle 0), and the job's coverage has
	// an index gap for the callbacks it did not wait for.
	IndexSettle time.Duration
}

// DefaultIndexSettle is Config.IndexSettle's default: Tencent sends an
// after-send callback once the message is sent, and it takes its time
// (the emulator's deliveries time out after 2 s), so messages sent just
// before a purge starts may reach the index after the purge has read it.
const DefaultIndexSettle = 10 * time.Second

// Client plans, creates and follows jobs: the one place that decides index
// or scan, runs dry runs and asks for confirmation. The CLI, the HTTP API,
// schedules and any Go program use it.
type Client struct {
	cfg   Config
	store *jobs.Store
	bg    background // plans going on in the background (background.go)
}

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.Redis == nil:
		return nil, errors.New("imrecall: Config.Redis is required")
	case cfg.AppID < 0:
		return nil, fmt.Errorf("imrecall: Config.AppID %d: want the app's SDKAppID", cfg.AppID)
	case cfg.Backlog < 0:
		return nil, fmt.Errorf("imrecall: Config.Backlog %d: must not be negative", cfg.Backlog)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = jobs.DefaultPrefix
	}
	if cfg.ConfirmAbove == 0 {
		cfg.ConfirmAbove = DefaultConfirmAbove
	}
	if cfg.DiscoveryConcurrency <= 0 {
		cfg.DiscoveryConcurrency = 16
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	store := jobs.NewStore(cfg.Redis, cfg.Prefix)
	if cfg.PlannerLease > 0 {
		store.SetLeaseTTL(cfg.PlannerLease)
	}
	return &Client{cfg: cfg, store: store}, nil
}

// ErrNotConfigured is the error of Plan, Create and Requeue on a client
// without Config.AppID or Config.Queue.
var ErrNotConfigured = errors.New("imrecall: this client has no AppID or Queue: it can read and act on jobs, not create them")

// Store is the job store the client writes to.
func (c *Client) Store() *jobs.Store { return c.store }

// ApprovalAbove is the client's approval threshold (Config.ApprovalAbove;
// zero: none), for a schedule to carry to the worker that fires it.
func (c *Client) ApprovalAbove() int { return c.cfg.ApprovalAbove }

// approvalAbove is the threshold of a job: the lower positive of
// Config.ApprovalAbove and the request's own (CreateOptions.ApprovalAbove).
func (c *Client) approvalAbove(requested int) int {
	switch a := c.cfg.ApprovalAbove; {
	case requested <= 0:
		return a
	case a <= 0:
		return requested
	default:
		return min(a, requested)
	}
}

// ConfirmationRequired is the error of Create for a job that needs a
// person's confirmation: more than Above messages, or a purge by history
// scan whose size is unknown until scanned (Messages -1).
type ConfirmationRequired struct {
	Messages int64
	Above    int
	// Plan is what the job would do, for the question put to a person.
	Plan Plan
}

func (e *ConfirmationRequired) Error() string {
	if e.Messages < 0 {
		return "confirmation required: a purge by history scan learns its size only as it scans (dry-run first)"
	}
	return fmt.Sprintf("confirmation required: %d messages would be recalled (more than %d), and recalled messages cannot be restored", e.Messages, e.Above)
}

// Plan is a dry run: what a job would recall, and what it cannot reach.
type Plan struct {
	Kind string `json:"kind"`
	// Source is where the messages come from: list, index or scan;
	// SourceWhy says why auto chose scan.
	Source    string `json:"source"`
	SourceWhy string `json:"source_why,omitempty"`
	// Messages are the distinct messages found (-1: unknown, a purge by
	// scan that has not scanned).
	Messages int64 `json:"messages"`
	// GroupCalls and C2CCalls are the recall calls they take, and
	// SecondsAtCap the time at the default cap of 200 calls/s per API.
	GroupCalls   int     `json:"group_calls"`
	C2CCalls     int     `json:"c2c_calls"`
	SecondsAtCap float64 `json:"seconds_at_cap"`
	// Summary is what a list file holds (ListRecall with File).
	Summary *producer.ListSummary `json:"summary,omitempty"`
	// Report is a scan's per-target count (purges by scan; its groups that
	// cannot recall even when not counted).
	Report *producer.Report `json:"report,omitempty"`
	// Index and IndexCoverage are the callback index's counts and coverage
	// (purges that read the index).
	Index         *msgindex.Counts   `json:"index,omitempty"`
	IndexCoverage *msgindex.Coverage `json:"coverage,omitempty"`
	// SenderUnconfirmed counts index entries left out because the history
	// does not show the user sent them.
	SenderUnconfirmed int64 `json:"sender_unconfirmed,omitempty"`
	// Scans is how many histories a purge by scan reads.
	Scans int `json:"scans,omitempty"`
	// Scope is a purge's scope and gaps; Warnings say, one per gap, why the
	// purge cannot be complete.
	Scope    *jobs.Coverage `json:"scope,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	// ApprovalAbove, when set, is the approval threshold (Config.ApprovalAbove)
	// that Messages exceed: created, the job waits in awaiting_approval
	// until an actor other than its requester approves it.
	ApprovalAbove int `json:"approval_above,omitempty"`
}

// CreateOptions say who asks, why, and how the job runs.
type CreateOptions struct {
	// Actor is who asks (recorded in the job and the audit log).
	Actor string
	// Reason is why (recorded in the job and the audit log); required, as
	// Actor is: a recall cannot be undone, and its record says who and why.
	Reason string
	// Queue: incident, purge or backfill; empty is the kind's default
	// (purge for user purges and list files, incident otherwise).
	Queue string
	// Requester is the identity an approver must differ from (an API
	// token's principal, "token:NAME"); empty is Actor.
	Requester string
	// ApprovalAbove is an approval threshold in force where the request
	// was accepted (a schedule added through an API server with approval
	// on, fired by a worker whose Client has none): the lower of it and
	// Config.ApprovalAbove applies. Zero: Config.ApprovalAbove alone.
	ApprovalAbove int
	// Confirmed: the job goes ahead whatever its size.
	Confirmed bool
	// Confirm, if set and not Confirmed, is asked when a job needs
	// confirmation (a nil answer goes ahead); a purge by scan is then
	// scanned first to learn its size. Nil: Create returns
	// *ConfirmationRequired instead (a purge by scan always needs it).
	Confirm func(ctx context.Context, need *ConfirmationRequired) error
	// InBackground, with a bound on queued work (Config.Backlog): Create
	// returns once planning first waits for the job's backlog, with
	// Created.Planning set, and planning goes on in the background until
	// it ends or Close (a server answering a request). Planning that never
	// waits ends before Create returns, as without it.
	InBackground bool

	onWait func(Created) // createInBackground's signal
	// onJob, if set, is called with the job once it exists, before
	// anything of it is planned; its error stops the planning.
	onJob func(context.Context, jobs.Job) error
}

// Created is a created job and how it was planned.
type Created struct {
	Job  jobs.Job `json:"job"`
	Plan Plan     `json:"plan"`
	// Planned, Duplicates and Tasks are known at once for listed and
	// indexed messages; a purge by scan plans as its discovery tasks run.
	Planned    int64 `json:"planned"`
	Duplicates int64 `json:"duplicates"`
	Tasks      int64 `json:"tasks"`
	// Planning: Create returned while planning goes on in the background
	// (CreateOptions.InBackground); the counts are those so far.
	Planning bool `json:"planning,omitempty"`
}

// prepared is a plan and what creating its job needs.
type prepared struct {
	Plan
	w     producer.Window
	msgs  []producer.Message
	file  string   // a list file, as given (absolute)
	spool *os.File // the bytes of file that were checked (unlinked): the job plans from them
	scans []producer.Scan
	check *producer.SenderCheck // purge by index, after a count
	user  string
	at    time.Time // purge by index: when its range was read (now, for an open end)
	// recent is what the index held of the last moments of a purge by
	// index's range before it was first read (settleIndex).
	recent map[string]bool
}

// close releases what prepare kept for planning (a list file's spool).
func (p *prepared) close() {
	if p != nil && p.spool != nil {
		p.spool.Close()
	}
}

// Plan is the dry run of req: it reads the list, the index or the
// histories and changes nothing.
func (c *Client) Plan(ctx context.Context, req Request) (Plan, error) {
	p, err := c.prepare(ctx, req, true, true)
	defer p.close()
	if err != nil {
		return Plan{}, err
	}
	if c.cfg.ApprovalAbove > 0 && p.Messages > int64(c.cfg.ApprovalAbove) {
		p.ApprovalAbove = c.cfg.ApprovalAbove
	}
	return p.Plan, nil
}

// countIndex reads a purge by index's senders now (to count them);
// countScan reads a purge by scan's histories now.
func (c *Client) prepare(ctx context.Context, req Request, countIndex, countScan bool) (*prepared, error) {
	if c.cfg.AppID == 0 || c.cfg.Queue == nil {
		return nil, ErrNotConfigured
	}
	if req == nil {
		return nil, fieldErr("kind", "", "required")
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	p := &prepared{Plan: Plan{Kind: req.Kind(), Source: SourceList}}
	switch r := req.(type) {
	case GroupRecall:
		p.msgs = r.messages()
		return p, p.listed()
	case C2CRecall:
		p.msgs = []producer.Message{{From: r.From, To: r.To, MsgKey: r.MsgKey}}
		return p, p.listed()
	case ListRecall:
		if r.File == "" {
			for _, m := range r.Messages {
				p.msgs = append(p.msgs, m.Message())
			}
			return p, p.listed()
		}
		return p, c.prepareFile(ctx, p, r.File)
	case UserPurge:
		return p, c.prepareUser(ctx, p, r, countIndex, countScan)
	case GroupPurge:
		return p, c.prepareGroup(ctx, p, r, countScan)
	}
	return nil, fieldErr("kind", req.Kind(), "not a kind this client plans")
}

// listed counts the messages a request lists.
func (p *prepared) listed() error {
	p.Messages = int64(len(p.msgs))
	targets := map[jobs.Target]int{}
	for _, m := range p.msgs {
		if m.GroupID != "" {
			targets[m.Target()]++
		} else {
			p.C2CCalls++
		}
	}
	for _, n := range targets {
		p.GroupCalls += (n + 9) / 10
	}
	p.SecondsAtCap = secondsAtCap(p.GroupCalls, p.C2CCalls)
	return nil
}

// secondsAtCap is the time the calls take at the default cap of 200 calls/s
// per API; the two APIs run in parallel.
func secondsAtCap(groupCalls, c2cCalls int) float64 {
	return float64(max(groupCalls, c2cCalls)) / float64(tim.DefaultRateLimit)
}

func (c *Client) prepareFile(ctx context.Context, p *prepared, path string) error {
	spool, sum, err := producer.SpoolListFile(ctx, path, "")
	if err != nil {
		var le *producer.LineError
		var pe *os.PathError
		// A bad line, or a file that cannot be opened or read (missing, a
		// directory): bad input. The spool's own errors are not.
		if errors.As(err, &le) || errors.As(err, &pe) && pe.Path == path {
			return &FieldError{Field: "file", Reason: err.Error(), Err: err}
		}
		return err
	}
	p.spool = spool
	if sum.Messages == 0 {
		return &FieldError{Field: "file", Reason: path + ": no messages in the file"}
	}
	abs, _ := filepath.Abs(path)
	p.file, p.Summary = abs, &sum
	p.Messages, p.GroupCalls, p.C2CCalls = int64(sum.Messages), sum.GroupCalls, sum.C2CCalls
	p.SecondsAtCap = secondsAtCap(sum.GroupCalls, sum.C2CCalls)
	return nil
}

func (c *Client) needIM(field string) error {
	if c.cfg.IM == nil {
		return fieldErr(field, "", "this client has no IM credentials to read histories")
	}
	return nil
}

func (c *Client) prepareUser(ctx context.Context, p *prepared, r UserPurge, countIndex, countScan bool) error {
	now := c.cfg.Now()
	w, err := producer.ParseWindow(r.Since, r.Until, now)
	if err != nil {
		return err
	}
	p.w, p.user, p.at = w, r.User, now
	source := r.Source
	if source == "" {
		source = SourceAuto
	}
	if source != SourceScan {
		// One place decides index or scan: the index if it covers the
		// range (auto), or because it was asked for.
		if c.cfg.Index == nil {
			if source == SourceIndex {
				return fieldErr("source", SourceIndex, "this client keeps no callback index")
			}
			source, p.SourceWhy = SourceScan, "no callback index is kept"
		} else {
			cov, err := c.cfg.Index.Coverage(ctx, c.cfg.AppID)
			if err != nil {
				return err
			}
			p.IndexCoverage = &cov
			if why := cov.Why(w.Since, now); why != "" && source == SourceAuto {
				source, p.SourceWhy = SourceScan, "the callback index does not cover the range ("+why+")"
			} else {
				source = SourceIndex
			}
		}
	}
	p.Source = source
	if err := c.needIM("source"); err != nil {
		return err
	}
	spec := r.spec(w, c.cfg.DiscoveryConcurrency)
	if source == SourceIndex {
		rep := &producer.Report{}
		if why := p.IndexCoverage.Why(w.Since, now); why != "" {
			rep.AddGap(jobs.Gap{Kind: jobs.GapIndex, What: "the callback index does not cover the whole range: " + why})
		}
		if c.settle() < 0 && (w.Until.IsZero() || !w.Until.Before(now.Add(-msgindex.MaxClockSkew))) {
			rep.AddGap(jobs.Gap{Kind: jobs.GapIndex, What: "the purge waits for no after-send callback in flight (index settle 0): " +
				"a message sent in the last seconds before it, whose callback had not reached the index, is not planned"})
		}
		producer.RoamingGap(rep, w, now)
		p.setScope(producer.Coverage(r.User, w, nil, []string{producer.SourceNameIndex}, rep))
		if !countIndex {
			return nil
		}
		// The index holds what callbacks claimed; Sign does not cover
		// their bodies. Only what the history shows the user sent counts.
		tally := &producer.Tally{}
		p.check = producer.NewSenderCheck(c.cfg.IM, r.User, tally)
		p.check.Window = w
		if p.recent, err = c.recentIndex(ctx, p, nil); err != nil {
			return err
		}
		counts, err := c.cfg.Index.Plan(ctx, c.cfg.AppID, r.User, w.Since, w.Until, p.check)
		if err == nil {
			err = p.check.Flush(ctx)
		}
		if err != nil {
			return err
		}
		p.Scope.Peers = p.check.Peers()
		p.confirmed(r.User, counts, p.check, tally)
		return nil
	}
	scans, rep, err := producer.UserScans(ctx, c.cfg.IM, spec)
	if err != nil {
		return err
	}
	if c.cfg.Index != nil {
		// Groups the user left are not listed; the index may know them.
		indexed := map[string]bool{}
		err := c.cfg.Index.Lookup(ctx, c.cfg.AppID, r.User, w.Since, w.Until, func(e msgindex.Entry) error {
			if e.IsGroup() {
				indexed[e.GroupID] = true
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading the callback index for the groups of %s: %w", r.User, err)
		}
		if scans, err = producer.AddIndexedGroups(ctx, c.cfg.IM, spec, scans, rep, indexed); err != nil {
			return err
		}
	}
	return c.scanned(ctx, p, scans, rep, producer.Coverage(r.User, w, r.Peers, producer.ScanSources(len(r.Peers)), rep), countScan)
}

func (c *Client) prepareGroup(ctx context.Context, p *prepared, r GroupPurge, count bool) error {
	w, err := producer.ParseWindow(r.Since, r.Until, c.cfg.Now())
	if err != nil {
		return err
	}
	p.w, p.Source = w, SourceScan
	if err := c.needIM("groups"); err != nil {
		return err
	}
	scans, rep, err := producer.GroupScans(ctx, c.cfg.IM, r.spec(w, c.cfg.DiscoveryConcurrency))
	if err != nil {
		return err
	}
	subject := ""
	if len(r.Senders) == 1 {
		subject = r.Senders[0]
	}
	return c.scanned(ctx, p, scans, rep, producer.Coverage(subject, w, nil, producer.ScanSources(0), rep), count)
}

// scanned records a purge's scans and, when count is set, reads them into a
// tally (the histories are read once more by the job's discovery tasks).
func (c *Client) scanned(ctx context.Context, p *prepared, scans []producer.Scan, rep *producer.Report, cov jobs.Coverage, count bool) error {
	p.scans, p.Scans, p.Messages, p.Report = scans, len(scans), -1, rep
	p.setScope(cov)
	if !count {
		return nil
	}
	tally := &producer.Tally{}
	if err := producer.RunScans(ctx, c.cfg.IM, scans, c.cfg.DiscoveryConcurrency, tally, rep); err != nil {
		return err
	}
	cov.Targets = rep.TargetCoverage()
	p.setScope(cov)
	p.Messages = int64(tally.Count())
	p.GroupCalls, p.C2CCalls, p.SecondsAtCap = rep.GroupCalls, rep.C2CCalls, rep.SecondsAtCap
	return nil
}

// confirmed sets a purge by index's figures from what its sender check
// confirmed (tally) and refused, whether counted in a dry run or as the job
// was planned: the messages, and the calls of what will be recalled (the
// index's counts include what the history refused), target by target.
func (p *Plan) confirmed(user string, counts msgindex.Counts, check *producer.SenderCheck, tally *producer.Tally) {
	p.Index, p.Messages, p.SenderUnconfirmed = &counts, int64(tally.Count()), int64(check.Refused)
	if p.SenderUnconfirmed > 0 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("callback index entries the history does not show as %s's (forged, deleted or expired), not recalled: %d", user, p.SenderUnconfirmed))
	}
	p.GroupCalls, p.C2CCalls = tally.Calls()
	p.SecondsAtCap = secondsAtCap(p.GroupCalls, p.C2CCalls)
}

func (p *prepared) setScope(cov jobs.Coverage) {
	p.Scope, p.Warnings = &cov, producer.Warnings(cov.Gaps)
}

// Create plans req into a new job on behalf of opts.Actor. A job above the
// confirmation threshold, or a purge by scan, needs opts.Confirmed (or
// opts.Confirm's consent); without it Create returns *ConfirmationRequired
// and changes nothing. Bad input is a *FieldError. Cancelling ctx while the
// job is planned interrupts planning (what was planned is queued first, see
// producer.NewJob); a caller whose job must outlive it (an HTTP request)
// passes context.WithoutCancel.
func (c *Client) Create(ctx context.Context, req Request, opts CreateOptions) (Created, error) {
	if opts.InBackground && c.cfg.Backlog > 0 {
		return c.createInBackground(ctx, req, opts)
	}
	var out Created
	queue := opts.Queue
	if queue == "" {
		queue = defaultQueue(req)
	} else if err := producer.CheckQueue(queue); err != nil {
		return out, err
	}
	if strings.TrimSpace(opts.Actor) == "" {
		return out, fieldErr("actor", "", "required (who asks, for the audit record)")
	}
	if strings.TrimSpace(opts.Reason) == "" {
		return out, fieldErr("reason", "", "required (why, for the audit record)")
	}
	if err := producer.CheckWhoAndWhy(opts.Actor, opts.Reason); err != nil {
		return out, err
	}
	// A purge by scan is counted only when someone can be asked; a purge
	// by index is counted to decide, unless confirmed (it then plans as
	// senders are confirmed).
	// With approval on, a purge by scan is counted too: the plan decides.
	approval := c.approvalAbove(opts.ApprovalAbove)
	p, err := c.prepare(ctx, req, !opts.Confirmed || approval > 0, (!opts.Confirmed && opts.Confirm != nil) || approval > 0)
	defer p.close()
	if err != nil {
		return out, err
	}
	if !opts.Confirmed && (p.Messages < 0 || p.Messages > int64(c.cfg.ConfirmAbove)) {
		need := &ConfirmationRequired{Messages: p.Messages, Above: c.cfg.ConfirmAbove, Plan: p.Plan}
		if opts.Confirm == nil {
			return Created{Plan: p.Plan}, need
		}
		if err := opts.Confirm(ctx, need); err != nil {
			return Created{Plan: p.Plan}, err
		}
	}
	out.Plan = p.Plan
	spec := jobs.Spec{Kind: req.Kind(), Queue: queue, AppID: c.cfg.AppID, RequestedBy: opts.Actor, Reason: opts.Reason, Params: params(req, p),
		Requester: opts.Requester, HoldForApproval: approval > 0 && p.Messages > int64(approval), Backlog: c.cfg.Backlog}
	job, b, err := producer.NewJob(ctx, c.store, c.cfg.Queue, spec, c.planFunc(p, &out, opts.onWait, opts.onJob))
	var cancelled *producer.CancelledError
	if errors.As(err, &cancelled) {
		out.Job = job
		if j, gerr := c.store.Get(ctx, job.ID); gerr == nil {
			out.Job = j
		}
	}
	if err != nil {
		return out, err
	}
	if j, gerr := c.store.Get(ctx, job.ID); gerr == nil {
		job = j
	}
	out.Job = job
	if b != nil {
		out.Planned, out.Duplicates, out.Tasks = b.Planned, b.Seen-b.Planned, b.Tasks
	}
	return out, nil
}

// planFunc plans a prepared job: listed messages, a list file, the index
// (replaying a counted sender check, or confirming senders as it plans) or
// discovery tasks, one per scan.
func (c *Client) planFunc(p *prepared, out *Created, onWait func(Created), onJob func(context.Context, jobs.Job) error) producer.PlanFunc {
	return func(ctx context.Context, job jobs.Job, q producer.Enqueuer, b *producer.Batcher) error {
		if onJob != nil {
			if err := onJob(ctx, job); err != nil {
				return err
			}
		}
		if onWait != nil {
			b.OnWait = func() {
				cr := *out
				cr.Job, cr.Planned, cr.Duplicates, cr.Tasks = job, b.Planned, b.Seen-b.Planned, b.Tasks
				onWait(cr)
			}
		}
		if p.Scope != nil {
			// The scope and its gaps first; each target as its discovery ends.
			if err := c.store.SaveCoverage(ctx, job.ID, *p.Scope); err != nil {
				return err
			}
		}
		switch {
		case p.file != "":
			// The bytes checked (and confirmed), not the file as it is now.
			return producer.ReadList(ctx, p.spool, p.file, func(_ int, m producer.Message) error { return b.AddMessage(ctx, m) })
		case p.Source == SourceList:
			for _, m := range p.msgs {
				if err := b.AddMessage(ctx, m); err != nil {
					return err
				}
			}
			return nil
		case p.Source == SourceIndex:
			check := p.check
			if check != nil {
				if err := check.Replay(ctx, b); err != nil {
					return err
				}
			} else {
				// Confirmed up front: plan as senders are confirmed, so
				// that recalls start while later history pages are read.
				check = producer.NewSenderCheck(c.cfg.IM, p.user, b)
				check.Window = p.w
				var err error
				if p.recent, err = c.recentIndex(ctx, p, nil); err != nil {
					return err
				}
				counts, err := c.cfg.Index.Plan(ctx, c.cfg.AppID, p.user, p.w.Since, p.w.Until, check)
				if err != nil {
					return err
				}
				if err := check.Flush(ctx); err != nil {
					return err
				}
				// The figures a dry run gives, from what was confirmed
				// (kept by the check: no history call).
				tally := &producer.Tally{}
				if err := check.Replay(ctx, tally); err != nil {
					return err
				}
				out.Plan.confirmed(p.user, counts, check, tally)
				if p.Scope != nil {
					// The chats the index named, for a verification.
					p.Scope.Peers = check.Peers()
					if err := c.store.SaveCoverage(ctx, job.ID, *p.Scope); err != nil {
						return err
					}
				}
			}
			if err := c.store.AddRefused(ctx, job.ID, jobs.RefusedSenderUnconfirmed, int64(check.Refused)); err != nil {
				return err
			}
			return c.settleIndex(ctx, p, job, b)
		}
		n, err := producer.EnqueueScans(ctx, c.store, q, job, p.scans)
		out.Plan.Scans = n
		return err
	}
}

// settleIndex waits, for a purge by index whose range reaches the moment
// it read the index, until the callbacks then in flight have arrived
// (Config.IndexSettle), and plans the messages of the range they brought:
// a message sent just before the purge started, whose callback came after
// the index was read, was otherwise missed while the coverage said
// complete. It also waits for every receiver replica to beat once more
// or be found silent (Index.AwaitBeats). A gap recorded meanwhile that falls
// in the range (a callback refused, a receiver found silent) is added to
// the job's coverage.
func (c *Client) settleIndex(ctx context.Context, p *prepared, job jobs.Job, b *producer.Batcher) error {
	if p.recent == nil {
		return nil // no need (the range ended long before), or none asked
	}
	// Every receiver beats once more (with the gap of a callback it could
	// not index), or is found silent; meanwhile the callbacks arrive.
	if err := c.cfg.Index.AwaitBeats(ctx, c.cfg.AppID); err != nil {
		return err
	}
	t := time.NewTimer(time.Until(p.at.Add(c.settle())))
	select {
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	case <-t.C:
	}
	check := producer.NewSenderCheck(c.cfg.IM, p.user, b)
	check.Window = p.w
	if _, err := c.recentIndex(ctx, p, check); err != nil {
		return err
	}
	if err := check.Flush(ctx); err != nil {
		return err
	}
	if err := c.store.AddRefused(ctx, job.ID, jobs.RefusedSenderUnconfirmed, int64(check.Refused)); err != nil {
		return err
	}
	if p.Scope == nil {
		return nil
	}
	changed := false
	for _, peer := range check.Peers() {
		if !slices.Contains(p.Scope.Peers, peer) {
			p.Scope.Peers, changed = append(p.Scope.Peers, peer), true
		}
	}
	cov, err := c.cfg.Index.Coverage(ctx, c.cfg.AppID)
	if err != nil {
		return err
	}
	if why := cov.Why(p.w.Since, p.at); why != "" && (p.IndexCoverage == nil || p.IndexCoverage.Why(p.w.Since, p.at) == "") {
		p.Scope.Gaps = append(p.Scope.Gaps, jobs.Gap{Kind: jobs.GapIndex, What: "the callback index does not cover the whole range: " + why})
		changed = true
	}
	if !changed {
		return nil
	}
	return c.store.SaveCoverage(ctx, job.ID, *p.Scope)
}

func (c *Client) settle() time.Duration {
	if c.cfg.IndexSettle == 0 {
		return DefaultIndexSettle
	}
	return c.cfg.IndexSettle
}

// recentIndex reads what the index holds of the last moments of a purge
// by index's range: the messages whose callbacks may still have been in
// flight when it was first read (sent within the settle, by Tencent's
// clock, which may be MaxClockSkew from ours). With sink nil it returns
// them (nil when the range ended long before, or no settle is asked); else
// it hands sink those not in p.recent, as Index.Plan would.
func (c *Client) recentIndex(ctx context.Context, p *prepared, sink msgindex.Sink) (map[string]bool, error) {
	settle := c.settle()
	from := p.at.Add(-settle - msgindex.MaxClockSkew)
	if settle < 0 || (!p.w.Until.IsZero() && p.w.Until.Before(from)) {
		return nil, nil
	}
	if from.Before(p.w.Since) {
		from = p.w.Since
	}
	seen := map[string]bool{}
	err := c.cfg.Index.Lookup(ctx, c.cfg.AppID, p.user, from, p.w.Until, func(e msgindex.Entry) error {
		key := strings.Join([]string{e.GroupID, e.TopicID, strconv.FormatInt(e.MsgSeq, 10), e.To, e.MsgKey}, "\x1f")
		switch {
		case sink == nil:
			seen[key] = true
		case p.recent[key] || seen[key]:
		case e.IsGroup():
			seen[key] = true
			return sink.AddGroup(ctx, jobs.Target{GroupID: e.GroupID, TopicID: e.TopicID}, e.MsgSeq)
		default:
			seen[key] = true
			return sink.AddC2C(ctx, jobs.Target{From: p.user, To: e.To}, e.MsgKey)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the callback index again: %w", err)
	}
	return seen, nil
}

// defaultQueue is the queue of a kind when the request names none.
func defaultQueue(req Request) string {
	switch r := req.(type) {
	case UserPurge:
		return tasks.QueuePurge
	case ListRecall:
		if r.File != "" {
			return tasks.QueuePurge
		}
	}
	return tasks.QueueIncident
}

// params is the job record's parameters: the typed request, with the
// source a user purge used and a list's count rather than its messages.
func params(req Request, p *prepared) json.RawMessage {
	var v any = req
	switch r := req.(type) {
	case UserPurge:
		r.Source = p.Source
		v = r
	case ListRecall:
		v = struct {
			File         string `json:"file,omitempty"`
			MessageCount int64  `json:"message_count"`
		}{p.file, p.Messages}
	}
	raw, _ := json.Marshal(v)
	return raw
}
