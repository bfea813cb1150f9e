package tim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultTimeout is the per-call timeout used when Config.Timeout is zero. It
// is above the server's own 3 s REST timeout, so the server's answer (often a
// retryable code) arrives before the client gives up.
const DefaultTimeout = 5 * time.Second

// maxResponseBytes caps a response body; a larger body is ErrBodyTooLarge.
const maxResponseBytes = 4 << 20

// Gate is consulted before every HTTP call to the IM API.
type Gate interface {
	// Wait blocks until a call of api may be made, or returns an error
	// (ctx done, limiter unavailable, wait too long) and the call is not
	// made. api is the path's last segment, e.g. "group_msg_recall".
	Wait(ctx context.Context, api string) error
	// Throttled reports that the server answered a throttle code for api.
	Throttled(ctx context.Context, api string, code int)
}

// Reserver is a Gate that can reserve a call's slot ahead of the call, so
// that a caller can do its own work (record the send) while the slot
// approaches. Client.Await uses it when the Gate has it.
type Reserver interface {
	Gate
	// Reserve reserves the next slot of api and returns shortly before it
	// (about the time the caller's own Redis write takes), or returns an
	// error as Wait does.
	Reserve(ctx context.Context, api string) (Slot, error)
}

// SlotWaiter is a Gate that hands back the slot it waited for, so that the
// call can tell it when it was written (SentReporter). Calls made without
// a permit use it instead of Wait when the Gate has it.
type SlotWaiter interface {
	Gate
	// WaitSlot blocks as Wait does and returns the slot granted.
	WaitSlot(ctx context.Context, api string) (Slot, error)
}

// Slot is a call slot reserved by a Reserver.
type Slot interface {
	// Wait blocks until the slot. A caller that comes back too late after
	// its slot is given a new one (the Gate reserves again) rather than
	// being let go next to calls that are on time. Its errors are those of
	// Gate.Wait.
	Wait(ctx context.Context) error
}

// SentReporter is a Slot that wants to know when its call was written:
// the limiter then bounds the call's arrival by that instead of the worst
// case. Calls made with a permit or through a SlotWaiter, and those made
// with WhenWritten, report to it.
type SentReporter interface {
	// Sent is told when the call's request was written to its socket (no
	// earlier than the write returned), each time it was: a transport may
	// replay a request on another connection.
	Sent(at time.Time)
}

// writtenKey is the context key of WhenWritten's hook.
type writtenKey struct{}

// WhenWritten returns ctx carrying f: the client calls f with the time the
// request of each HTTP call made with ctx was written to its socket, each
// time it was (see written.go: on NewTransport's HTTP/1 connections, once
// a write to the socket returned; otherwise when httptrace says the
// request was written). A write that wrote nothing is not reported: the
// transport writes the request again, or the call fails. The worker's send path passes its
// slot's Sent, so that the limiter learns how late the call really went.
func WhenWritten(ctx context.Context, f func(time.Time)) context.Context {
	return context.WithValue(ctx, writtenKey{}, f)
}

// ReportWrites returns ctx carrying slot's Sent when slot is a
// SentReporter (WhenWritten), ctx itself otherwise: calls made with it
// tell the slot when they were written.
func ReportWrites(ctx context.Context, slot Slot) context.Context {
	if sr, ok := slot.(SentReporter); ok {
		return WhenWritten(ctx, sr.Sent)
	}
	return ctx
}

// Config configures a Client. SDKAppID, Admin, SecretKey and BaseURL are
// required; every other zero value means the documented default.
type Config struct {
	// SDKAppID is the app's ID from the IM console.
	SDKAppID int64
	// Admin is an App administrator account; every call is made as it.
	Admin string
	// SecretKey is the app's key, used only to generate the UserSig.
	SecretKey Secret
	// BaseURL is a region name ("china", "singapore", ...), a documented
	// domain, or an http(s) URL such as the emulator's; see BaseURL.
	BaseURL string
	// HTTPClient makes the calls. Nil: a client of its own with a keep-alive
	// pool sized for hundreds of concurrent calls.
	HTTPClient *http.Client
	// Timeout bounds each HTTP call, including reading the body. Zero:
	// DefaultTimeout (5 s).
	Timeout time.Duration
	// SigTTL is the validity of generated UserSigs; the client renews a sig
	// when a tenth of it is left. Zero: DefaultSigTTL (24 h); else at least
	// a minute.
	SigTTL time.Duration
	// Gate is consulted before every HTTP call. Nil: no limiting.
	Gate Gate
	// Logger receives one debug record per HTTP call. Nil: no logging.
	Logger *slog.Logger
	// UserAgent is sent with every call. Empty: "imrecall-tim".
	UserAgent string
}

// Validate reports the first invalid field, by name.
func (c Config) Validate() error {
	switch {
	case c.SDKAppID <= 0 || c.SDKAppID > math.MaxUint32:
		return fmt.Errorf("tim: Config.SDKAppID %d: want a positive 32-bit app ID", c.SDKAppID)
	case strings.TrimSpace(c.Admin) == "":
		return errors.New("tim: Config.Admin is empty: want an App administrator account")
	case c.SecretKey.IsZero():
		return errors.New("tim: Config.SecretKey is empty")
	case c.Timeout < 0:
		return fmt.Errorf("tim: Config.Timeout %v is negative", c.Timeout)
	case c.SigTTL < 0 || (c.SigTTL > 0 && c.SigTTL < time.Minute):
		return fmt.Errorf("tim: Config.SigTTL %v: want 0 (default %v) or at least 1m", c.SigTTL, DefaultSigTTL)
	}
	if _, err := BaseURL(c.BaseURL); err != nil {
		return fmt.Errorf("tim: Config.BaseURL: %w", err)
	}
	return nil
}

// LogValue logs the configuration without the secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("sdkappid", c.SDKAppID),
		slog.String("admin", c.Admin),
		slog.Any("secret_key", c.SecretKey),
		slog.String("base_url", c.BaseURL),
		slog.Duration("timeout", c.Timeout),
		slog.Duration("sig_ttl", c.SigTTL),
		slog.Bool("gate", c.Gate != nil),
	)
}

// Client calls the Tencent IM REST API as the App administrator. It is safe
// for concurrent use. Every error its methods return is a *Error.
type Client struct {
	appID     int64
	admin     string
	base      string
	http      *http.Client
	timeout   time.Duration
	gate      Gate
	log       *slog.Logger
	userAgent string
	sigs      *sigCache
	maxBody   int64
	paced     bool // the caller waited on its limiter: see Paced
}

// New returns a client for cfg, after cfg.Validate.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base, _ := BaseURL(cfg.BaseURL) // validated above
	c := &Client{
		appID:     cfg.SDKAppID,
		admin:     cfg.Admin,
		base:      base,
		http:      cfg.HTTPClient,
		timeout:   cfg.Timeout,
		gate:      cfg.Gate,
		log:       cfg.Logger,
		userAgent: cfg.UserAgent,
		maxBody:   maxResponseBytes,
	}
	if c.http == nil {
		c.http = &http.Client{Transport: NewTransport()}
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.userAgent == "" {
		c.userAgent = "imrecall-tim"
	}
	ttl := cfg.SigTTL
	if ttl == 0 {
		ttl = DefaultSigTTL
	}
	c.sigs = newSigCache(cfg.SDKAppID, cfg.Admin, cfg.SecretKey, ttl, time.Now)
	return c, nil
}

// NewTransport returns the keep-alive transport a Client uses when
// Config.HTTPClient is nil: a large idle pool per host, so hundreds of
// concurrent calls reuse connections instead of opening new ones. Its
// connections report their writes to the Client's call they carry
// (written.go): give it to Clients only; a request of another user's on one
// of its connections may be reported to the Client's call before it.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: reportingDial((&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext),
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// SDKAppID returns the app the client calls for.
func (c *Client) SDKAppID() int64 { return c.appID }

// InvalidateSig drops the cached UserSig; the next call generates a new one.
// The client does this itself after an auth code.
func (c *Client) InvalidateSig() { c.sigs.invalidateAll() }

// response is implemented by every response type through the embedded
// Response.
type response interface{ base() *Response }

// Response is the part every answer has. Response types embed it.
type Response struct {
	ActionStatus string `json:"ActionStatus"` // "OK" or "FAIL"
	ErrorInfo    string `json:"ErrorInfo"`
	ErrorCode    int    `json:"ErrorCode"`
	RequestID    string `json:"RequestId,omitempty"` // newer APIs only
}

func (r *Response) base() *Response { return r }

// callOpts adjusts how call treats an answer.
type callOpts struct {
	// itemized: the top-level ErrorCode is meaningless when items came back
	// (get_group_info); ok reports whether resp carries items.
	itemized func() bool
}

// throttledReadTries is how many times a read (API.ReadOnly) is asked when
// the server answers a throttle code: the Gate pauses the API for every
// process on each, and the next try waits that out.
const throttledReadTries = 4

// call makes one API call: it marshals req (nil sends {}), waits on the Gate,
// sends the request and decodes the answer into resp. After an auth code it
// renews the UserSig and tries once more, through the Gate again. A read
// answered with a throttle code (another caller on the app's budget, or a
// call counted late) is asked again through the Gate, which paused the API,
// up to throttledReadTries times in all; other calls are not (a recall's
// outcome is its caller's to settle).
func (c *Client) call(ctx context.Context, api API, req any, resp response, opts callOpts) error {
	body := []byte("{}")
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return &Error{API: api.Name(), Err: fmt.Errorf("%w: encode: %w", ErrInvalidRequest, err)}
		}
		body = b
	}
	renewed, throttled := false, 0
	for attempt := 1; ; attempt++ {
		sig, err := c.attempt(ctx, api, body, resp, opts, attempt)
		var e *Error
		if errors.As(err, &e) && e.Code != 0 {
			switch Classify(e.Code) {
			case ClassAuth:
				if !renewed {
					renewed = true
					c.sigs.invalidate(sig)
					continue
				}
			case ClassThrottled:
				if throttled++; api.ReadOnly() && c.gate != nil && throttled < throttledReadTries {
					continue
				}
			}
		}
		return err
	}
}

// Paced returns a client that shares c's connections and UserSigs and
// sends each call's first try without consulting the Gate: its caller
// waits on the limiter itself, where it makes the call (the worker's send
// path: reserve a slot, record the send, wait for the slot, call). The
// client's own second try after an auth code, and its throttle reports, go
// through the Gate as usual.
func (c *Client) Paced() *Client {
	p := *c
	p.paced = true
	return &p
}

// Await waits on the Gate for one call of api and returns a context that
// carries the permission: the next call of api made with it uses that
// permission instead of waiting on the Gate again (any other call waits as
// usual). It lets a caller record that a call is being sent between the wait
// and the send, so that a process stopped while it waits for its share of
// the cap has recorded nothing.
//
// With a Gate that is a Reserver, Await reserves the call's slot and returns
// shortly before it; the call then sleeps out the rest of the slot, and if
// it comes later than the Gate's tolerance after the slot (the caller's work
// was slow) the Gate reserves a new slot for it. The permission never
// expires: one wait per call, whatever the caller's work in between costs.
// With any other Gate, Await is Gate.Wait and the call goes at once. The
// error is the one the call itself would have returned from the Gate.
func (c *Client) Await(ctx context.Context, api API) (context.Context, error) {
	if c.gate == nil {
		return ctx, nil
	}
	p := &permit{api: api.Name()}
	if r, ok := c.gate.(Reserver); ok {
		s, err := r.Reserve(ctx, api.Name())
		if err != nil {
			return ctx, &Error{API: api.Name(), Err: fmt.Errorf("%w: %w", ErrGate, err)}
		}
		p.slot = s
	} else if err := c.gate.Wait(ctx, api.Name()); err != nil {
		return ctx, &Error{API: api.Name(), Err: fmt.Errorf("%w: %w", ErrGate, err)}
	}
	return context.WithValue(ctx, permitKey{}, p), nil
}

// permitKey is the context key of a permit from Await.
type permitKey struct{}

// permit is one call's permission from the Gate, used once.
type permit struct {
	api  string
	slot Slot // nil: granted already
	used atomic.Bool
}

// usePermit returns ctx's unused permit for api, marking it used, or nil.
func usePermit(ctx context.Context, api string) *permit {
	p, _ := ctx.Value(permitKey{}).(*permit)
	if p != nil && p.api == api && p.used.CompareAndSwap(false, true) {
		return p
	}
	return nil
}

// pass waits on the Gate for one call of api (SlotWaiter.WaitSlot where
// the Gate has it), or uses ctx's permit. A slot that is a SentReporter is
// told when the call is written: the context returned carries it.
func (c *Client) pass(ctx context.Context, api string) (context.Context, error) {
	var slot Slot
	var err error
	if p := usePermit(ctx, api); p != nil {
		if p.slot != nil {
			slot, err = p.slot, p.slot.Wait(ctx)
		}
	} else if w, ok := c.gate.(SlotWaiter); ok {
		slot, err = w.WaitSlot(ctx, api)
	} else {
		err = c.gate.Wait(ctx, api)
	}
	if err != nil {
		return ctx, &Error{API: api, Err: fmt.Errorf("%w: %w", ErrGate, err)}
	}
	return ReportWrites(ctx, slot), nil
}

// attempt makes one HTTP call and returns the UserSig it used.
func (c *Client) attempt(ctx context.Context, api API, body []byte, resp response, opts callOpts, attempt int) (sig string, err error) {
	name := api.Name()
	if c.gate != nil && !(c.paced && attempt == 1) {
		if ctx, err = c.pass(ctx, name); err != nil {
			return "", err
		}
	}
	sig, err = c.sigs.get()
	if err != nil {
		return "", &Error{API: name, Err: err}
	}
	start := time.Now()
	status, code, err := c.do(ctx, api, sig, body, resp, opts)
	level := slog.LevelDebug
	if c.log.Enabled(ctx, level) {
		attrs := []slog.Attr{
			slog.String("api", name),
			slog.Int("code", code),
			slog.Int("http_status", status),
			slog.Duration("duration", time.Since(start)),
			slog.Int("attempt", attempt),
		}
		if err != nil && code == 0 {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		c.log.LogAttrs(ctx, level, "tim call", attrs...)
	}
	if err != nil && code != 0 && Classify(code) == ClassThrottled && c.gate != nil {
		c.gate.Throttled(ctx, name, code)
	}
	return sig, err
}

// do sends one request and decodes the answer. It returns the HTTP status and
// the ErrorCode (0 when none).
func (c *Client) do(ctx context.Context, api API, sig string, body []byte, resp response, opts callOpts) (status, code int, err error) {
	name := api.Name()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	q := url.Values{}
	q.Set("sdkappid", strconv.FormatInt(c.appID, 10))
	q.Set("identifier", c.admin)
	q.Set("usersig", sig)
	q.Set("random", strconv.FormatUint(uint64(rand.Uint32()), 10))
	q.Set("contenttype", "json")
	u := c.base + api.Path() + "?" + q.Encode()

	f, _ := ctx.Value(writtenKey{}).(func(time.Time))
	trace, done := writeTrace(f)
	defer done()
	ctx = httptrace.WithClientTrace(ctx, trace)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, 0, &Error{API: name, Err: redactURLError(fmt.Errorf("build request: %w", err))}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)

	hr, err := c.http.Do(req)
	if err != nil {
		return 0, 0, &Error{API: name, Err: redactURLError(err)}
	}
	defer hr.Body.Close()
	if hr.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(hr.Body, 64<<10)) // let a short body free the connection
		return hr.StatusCode, 0, &Error{API: name, HTTPStatus: hr.StatusCode, Err: fmt.Errorf("%w %d", ErrHTTPStatus, hr.StatusCode)}
	}
	raw, err := io.ReadAll(io.LimitReader(hr.Body, c.maxBody+1))
	if err != nil {
		return hr.StatusCode, 0, &Error{API: name, HTTPStatus: hr.StatusCode, Err: fmt.Errorf("read response: %w", redactURLError(err))}
	}
	if int64(len(raw)) > c.maxBody {
		return hr.StatusCode, 0, &Error{API: name, HTTPStatus: hr.StatusCode, Err: fmt.Errorf("%w: over %d bytes", ErrBodyTooLarge, c.maxBody)}
	}
	if err := decodeResponse(raw, resp, opts); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.API, e.HTTPStatus = name, hr.StatusCode
			e.Info = redactSig(e.Info, sig) // never echo the sig
			return hr.StatusCode, e.Code, e
		}
		return hr.StatusCode, 0, &Error{API: name, HTTPStatus: hr.StatusCode, Err: err}
	}
	return hr.StatusCode, 0, nil
}

// decodeResponse decodes a 200 answer into resp. An error answer becomes a
// *Error with Code and Info (API unset); a body that is not the documented
// JSON becomes an error wrapping ErrMalformedResponse.
func decodeResponse(raw []byte, resp response, opts callOpts) error {
	// Start from the zero value: an auth retry decodes into the same resp,
	// and json.Unmarshal would keep fields the second body lacks.
	reflect.ValueOf(resp).Elem().SetZero()
	if err := json.Unmarshal(raw, resp); err != nil {
		// An error answer may lack or mistype the payload fields: still
		// report its code rather than the decoding failure.
		var b Response
		if json.Unmarshal(raw, &b) == nil && b.ErrorCode != 0 {
			return &Error{Code: b.ErrorCode, Info: b.ErrorInfo}
		}
		return fmt.Errorf("%w: %w", ErrMalformedResponse, err)
	}
	b := resp.base()
	if b.ErrorCode != 0 {
		if opts.itemized != nil && opts.itemized() {
			return nil
		}
		return &Error{Code: b.ErrorCode, Info: b.ErrorInfo}
	}
	if b.ActionStatus != "OK" {
		return fmt.Errorf("%w: ActionStatus %q with ErrorCode 0", ErrMalformedResponse, b.ActionStatus)
	}
	return nil
}

// invalid returns the *Error for a request refused before sending.
func invalid(api API, format string, args ...any) error {
	return &Error{API: api.Name(), Err: fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))}
}
