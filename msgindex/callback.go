package msgindex

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// The after-send callbacks the index records.
const (
	CommandGroupAfterSend = "Group.CallbackAfterSendMsg"
	CommandC2CAfterSend   = "C2C.CallbackAfterSendMsg"
)

// MaxCallbackBytes bounds a callback body. A message body is at most 12 KB;
// the rest of a callback is small.
const MaxCallbackBytes = 256 << 10

// MaxClockSkew is how far RequestTime may be from now, as Tencent advises.
const MaxClockSkew = 60 * time.Second

// Results of a callback, the label of imrecall_callbacks_total.
const (
	ResultIndexed  = "indexed"       // recorded in the index
	ResultSkipped  = "skipped"       // valid, but nothing to recall (failed send, online-only, AVChatRoom)
	ResultIgnored  = "ignored"       // another callback command
	ResultBadApp   = "refused_app"   // SdkAppid is not ours
	ResultBadSign  = "refused_sign"  // Sign missing or wrong
	ResultStale    = "refused_stale" // RequestTime missing or more than MaxClockSkew away
	ResultReplay   = "refused_replay"
	ResultBadInput = "refused_input" // bad body, method or size
	ResultError    = "error"         // Redis failed
)

// Callbacks is the HTTP handler of Tencent IM's callbacks: it verifies them
// and records after-send callbacks in the index.
type Callbacks struct {
	// Index receives the messages. Required.
	Index *Index
	// SDKAppID is the app whose callbacks are accepted. Required.
	SDKAppID int64
	// Token is the callback token configured in the IM console. When set,
	// Sign and RequestTime are required and checked; empty accepts unsigned
	// callbacks (then restrict who can reach the endpoint).
	Token string
	// Log; nil discards.
	Log *slog.Logger
	// Counter, if set, counts callbacks by command and result.
	Counter *prometheus.CounterVec
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Replica names this receiver among the replicas that beat (Beat):
	// the same after a restart in the same place (serve uses its host and
	// listen address), so that a run killed is known at once by the next;
	// empty: the host and a random name.
	Replica string

	busy atomic.Int64 // callbacks being indexed now

	mu    sync.Mutex
	life  string // this run of the replica: random
	stamp int64  // the Redis time of its last beat: a record holding another lost writes
	lost  *Gap   // callbacks lost while not even their gap could be recorded (RecordLost)
}

// NewCallbackCounter returns the imrecall_callbacks_total counter.
func NewCallbackCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imrecall_callbacks_total",
		Help: "Tencent IM callbacks received, by command and result (indexed, skipped, ignored, refused_*, error).",
	}, []string{"command", "result"})
}

// reply is Tencent's callback answer.
type reply struct {
	ActionStatus string `json:"ActionStatus"`
	ErrorInfo    string `json:"ErrorInfo"`
	ErrorCode    int    `json:"ErrorCode"`
}

// ServeHTTP handles one callback.
func (c *Callbacks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	command := q.Get("CallbackCommand")
	result, status, msg := c.handle(r)
	if c.Counter != nil {
		label := command
		if label != CommandGroupAfterSend && label != CommandC2CAfterSend {
			label = "other"
		}
		c.Counter.WithLabelValues(label, result).Inc()
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if status != http.StatusOK {
		// The query holds Sign, which is derived from the token: log fields, not the URL.
		log.LogAttrs(r.Context(), slog.LevelWarn, "callback refused", slog.String("command", command),
			slog.String("result", result), slog.String("reason", msg), slog.String("remote", r.RemoteAddr))
		writeReply(w, status, reply{ActionStatus: "FAIL", ErrorInfo: msg, ErrorCode: 1})
		return
	}
	writeReply(w, http.StatusOK, reply{ActionStatus: "OK"})
}

func writeReply(w http.ResponseWriter, status int, rep reply) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(rep)
}

func (c *Callbacks) handle(r *http.Request) (result string, status int, msg string) {
	if r.Method != http.MethodPost {
		return ResultBadInput, http.StatusMethodNotAllowed, "callbacks are POSTed"
	}
	q := r.URL.Query()
	if app, err := strconv.ParseInt(q.Get("SdkAppid"), 10, 64); err != nil || app != c.SDKAppID {
		return ResultBadApp, http.StatusForbidden, fmt.Sprintf("SdkAppid %q is not this app's", q.Get("SdkAppid"))
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	if c.Token != "" {
		rt := q.Get("RequestTime")
		sec, err := strconv.ParseInt(rt, 10, 64)
		if err != nil {
			return ResultStale, http.StatusUnauthorized, fmt.Sprintf("RequestTime %q: want unix seconds", rt)
		}
		if d := now().Sub(time.Unix(sec, 0)); math.Abs(d.Seconds()) > MaxClockSkew.Seconds() {
			if cmd := q.Get("CallbackCommand"); (cmd == CommandGroupAfterSend || cmd == CommandC2CAfterSend) && ValidSign(c.Token, rt, q.Get("Sign")) {
				// Signed with our token: Tencent sent it (late, or our clock
				// is off), or an old one is replayed. Its message, if any, is
				// not indexed: a gap over its time (a replay can only make
				// a purge read the history instead).
				c.loseAt(context.WithoutCancel(r.Context()), time.Unix(sec, 0), now(),
					fmt.Errorf("a signed callback refused: RequestTime %d is %s away from the receiver's clock", sec, d.Round(time.Second)))
			}
			return ResultStale, http.StatusUnauthorized, fmt.Sprintf("RequestTime %d is %s away from now (limit %s)", sec, d.Round(time.Second), MaxClockSkew)
		}
		if !ValidSign(c.Token, rt, q.Get("Sign")) {
			return ResultBadSign, http.StatusUnauthorized, "Sign does not match sha256(token + RequestTime)"
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxCallbackBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return ResultBadInput, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", MaxCallbackBytes)
		}
		return ResultBadInput, http.StatusBadRequest, "reading the body: " + err.Error()
	}
	command := q.Get("CallbackCommand")
	if command != CommandGroupAfterSend && command != CommandC2CAfterSend {
		return ResultIgnored, http.StatusOK, ""
	}
	entry, index, err := ParseCallback(command, body)
	if err != nil {
		return ResultBadInput, http.StatusBadRequest, err.Error()
	}
	if !index {
		return ResultSkipped, http.StatusOK, ""
	}
	// The message was sent whatever becomes of this request, and Tencent
	// never sends its callback again: a sender that hangs up (its timeout
	// passed while Redis was slow) must not stop the writes half-way.
	ctx := context.WithoutCancel(r.Context())
	c.busy.Add(1)
	defer c.busy.Add(-1)
	// An exact replay (same query, same body) within the skew window is
	// refused; a new callback in the same second has another body.
	// The key holds a name of this request: go-redis sends a command again
	// after a timeout, and the try that timed out may have set the key.
	digest := sha256.Sum256(append([]byte(r.URL.RawQuery+"\n"), body...))
	seen := c.Index.seenKey(c.SDKAppID, hex.EncodeToString(digest[:16]))
	fresh, err := seenScript.Run(ctx, c.Index.rdb, []string{seen}, randomName(), int64((2*MaxClockSkew+time.Minute)/time.Second)).Bool()
	if err != nil {
		c.lose(ctx, entry, now(), err)
		return ResultError, http.StatusServiceUnavailable, "index unavailable"
	}
	if !fresh {
		return ResultReplay, http.StatusConflict, "this callback was already received"
	}
	if err := c.Index.Add(ctx, c.SDKAppID, entry); err != nil {
		// Let a retry of this callback through.
		_ = c.Index.rdb.Del(ctx, seen).Err()
		c.lose(ctx, entry, now(), err)
		return ResultError, http.StatusServiceUnavailable, "index unavailable"
	}
	if _, err := c.RecordLost(ctx); err != nil && c.Log != nil {
		c.Log.ErrorContext(ctx, "recording an index gap", "err", err)
	}
	return ResultIndexed, http.StatusOK, ""
}

// seenScript marks KEYS[1] (a callback's digest) seen by the request named
// ARGV[1] for ARGV[2] seconds. It answers 1 if the callback is new, or was
// marked by this same request (a command sent again after a timeout whose
// first try went in), and 0 if another request marked it.
var seenScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
if v == ARGV[1] then return 1 end
return 0
`)

// lose records that the callback of entry could not be indexed: Tencent
// does not retry, so the message is missing from the index unless a retry
// comes. When the gap cannot be recorded either (Redis unreachable), it is
// kept here and recorded once Redis answers again, by the next heartbeat
// (Beat) or callback indexed (RecordLost): a Redis back within two
// heartbeats leaves no silence for Index.Alive to see. A replica killed
// before then has not beaten since the callback: the next beat of another
// replica, or of one started after it, records its silence.
func (c *Callbacks) lose(ctx context.Context, entry Entry, now time.Time, cause error) {
	// The gap spans the message's time (Tencent's clock) and ours, which
	// may differ either way; ahead of ours, only as far as RequestTime may
	// be (a body's MsgTime is not signed).
	g := Gap{From: minTime(now, entry.Time), To: maxTime(now, minTime(entry.Time, now.Add(MaxClockSkew))), Reason: "a callback could not be indexed"}
	c.keep(g)
	_, gapErr := c.RecordLost(ctx)
	if c.Log != nil {
		c.Log.ErrorContext(ctx, "indexing a callback", "err", cause, "gap_recorded", gapErr == nil)
	}
}

// loseAt records that a callback sent at sent (Tencent's RequestTime) was
// refused: the gap spans it and our now, as for a callback that could not
// be indexed (lose).
func (c *Callbacks) loseAt(ctx context.Context, sent, now time.Time, cause error) {
	c.keep(Gap{From: minTime(now, sent), To: maxTime(now, sent), Reason: "a signed callback was refused as stale (delivered late, or the receiver's clock is off)"})
	_, gapErr := c.RecordLost(ctx)
	if c.Log != nil {
		c.Log.ErrorContext(ctx, "a callback refused", "err", cause, "gap_recorded", gapErr == nil)
	}
}

// keep adds g to the gap not recorded yet.
func (c *Callbacks) keep(g Gap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost != nil {
		g.From, g.To = minTime(g.From, c.lost.From), maxTime(g.To, c.lost.To)
	}
	c.lost = &g
}

// RecordLost records the gap of callbacks that could not be indexed and
// whose gap could not be recorded then, if there is one, and returns it.
// Every callback indexed calls it; serve's heartbeat carries the gap (Beat).
func (c *Callbacks) RecordLost(ctx context.Context) (*Gap, error) {
	c.mu.Lock()
	g := c.lost
	c.lost = nil
	c.mu.Unlock()
	if g == nil {
		return nil, nil
	}
	if err := c.Index.RecordGap(ctx, c.SDKAppID, g.From, g.To, g.Reason); err != nil {
		c.keep(*g)
		return nil, err
	}
	return g, nil
}

// Beat is this receiver's heartbeat (Index.Alive), which carries the gap
// of callbacks that could not be indexed and not recorded then, if there
// is one: a replica killed after a beat went in has left nothing in memory,
// and one killed before is found silent by the others' beats. It returns
// that gap (lost) and the gap the beat found (silence), if any. Serve calls
// it every interval.
func (c *Callbacks) Beat(ctx context.Context, interval time.Duration) (lost, silence *Gap, err error) {
	c.mu.Lock()
	if c.life == "" {
		c.life = randomName()
		if c.Replica == "" {
			c.Replica = hostName() + "/" + c.life
		}
	}
	g, replica, life, prev := c.lost, c.Replica, c.life, c.stamp
	c.lost = nil
	c.mu.Unlock()
	silence, stamp, err := c.Index.beat(ctx, c.SDKAppID, replica, life, prev, interval, g)
	if err != nil {
		if g != nil {
			c.keep(*g)
		}
		return nil, nil, err
	}
	c.mu.Lock()
	c.stamp = stamp
	c.mu.Unlock()
	return g, silence, nil
}

// Leave takes this receiver out of the replicas that beat (Index.Leave),
// with the gap it holds, if any. Call it once callbacks are no longer
// received (the HTTP server stopped) and Beat is no longer called. It
// waits for the callbacks still being indexed until ctx ends, and then
// stays if some still are; a receiver that does not leave is found silent
// two beats after its last.
func (c *Callbacks) Leave(ctx context.Context) error {
	// A callback still being indexed (Redis slow, serve's shutdown timed
	// out) may yet fail once the process is gone: then stay, so that this
	// receiver's silence is recorded as a gap.
	for c.busy.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d callbacks still being indexed: the receiver stays in the index's record, and its silence will be a gap", c.busy.Load())
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.mu.Lock()
	g, replica, life := c.lost, c.Replica, c.life
	c.lost = nil
	c.mu.Unlock()
	if life == "" {
		return nil // never beat
	}
	if err := c.Index.Leave(ctx, c.SDKAppID, replica, life, g); err != nil {
		if g != nil {
			c.keep(*g)
		}
		return err
	}
	return nil
}

func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func hostName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "localhost"
	}
	return host
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Sign is Tencent's callback signature: hex sha256(token + RequestTime).
func Sign(token, requestTime string) string {
	sum := sha256.Sum256([]byte(token + requestTime))
	return hex.EncodeToString(sum[:])
}

// ValidSign compares a callback's Sign with the expected one in constant time.
func ValidSign(token, requestTime, sign string) bool {
	want := Sign(token, requestTime)
	return len(sign) == len(want) && subtle.ConstantTimeCompare([]byte(want), bytes.ToLower([]byte(sign))) == 1
}

// groupAfterSend is the part of Group.CallbackAfterSendMsg the index uses.
type groupAfterSend struct {
	CallbackCommand string `json:"CallbackCommand"`
	GroupID         string `json:"GroupId"`
	TopicID         string `json:"TopicId"`
	Type            string `json:"Type"`
	From            string `json:"From_Account"`
	MsgSeq          int64  `json:"MsgSeq"`
	MsgTime         int64  `json:"MsgTime"`
	OnlineOnlyFlag  int    `json:"OnlineOnlyFlag"`
}

// c2cAfterSend is the part of C2C.CallbackAfterSendMsg the index uses.
type c2cAfterSend struct {
	CallbackCommand string `json:"CallbackCommand"`
	From            string `json:"From_Account"`
	To              string `json:"To_Account"`
	MsgTime         int64  `json:"MsgTime"`
	MsgKey          string `json:"MsgKey"`
	OnlineOnlyFlag  int    `json:"OnlineOnlyFlag"`
	SendMsgResult   int    `json:"SendMsgResult"`
}

// ParseCallback parses an after-send callback body. index is false for a
// message there is nothing to recall of: a one-to-one send that failed
// (SendMsgResult ≠ 0, e.g. a dirty-word filter), an online-only message, or
// an AVChatRoom message (no history, no recall). An error names the field.
func ParseCallback(command string, body []byte) (e Entry, index bool, err error) {
	switch command {
	case CommandGroupAfterSend:
		var cb groupAfterSend
		if err := json.Unmarshal(body, &cb); err != nil {
			return Entry{}, false, fmt.Errorf("%s body: %w", command, err)
		}
		if cb.CallbackCommand != "" && cb.CallbackCommand != command {
			return Entry{}, false, fmt.Errorf("%s body: CallbackCommand %q does not match the URL's", command, cb.CallbackCommand)
		}
		e = Entry{From: cb.From, Time: time.Unix(cb.MsgTime, 0), GroupID: cb.GroupID, TopicID: cb.TopicID, MsgSeq: cb.MsgSeq}
		if cb.GroupID == "" {
			return Entry{}, false, fmt.Errorf("%s body: GroupId: required", command)
		}
		if err := e.Validate(); err != nil {
			return Entry{}, false, fmt.Errorf("%s body: %w", command, err)
		}
		return e, cb.OnlineOnlyFlag == 0 && cb.Type != "AVChatRoom", nil
	case CommandC2CAfterSend:
		var cb c2cAfterSend
		if err := json.Unmarshal(body, &cb); err != nil {
			return Entry{}, false, fmt.Errorf("%s body: %w", command, err)
		}
		if cb.CallbackCommand != "" && cb.CallbackCommand != command {
			return Entry{}, false, fmt.Errorf("%s body: CallbackCommand %q does not match the URL's", command, cb.CallbackCommand)
		}
		e = Entry{From: cb.From, Time: time.Unix(cb.MsgTime, 0), To: cb.To, MsgKey: cb.MsgKey}
		if err := e.Validate(); err != nil {
			return Entry{}, false, fmt.Errorf("%s body: %w", command, err)
		}
		return e, cb.SendMsgResult == 0 && cb.OnlineOnlyFlag == 0, nil
	}
	return Entry{}, false, fmt.Errorf("CallbackCommand %q: not an after-send callback", command)
}
