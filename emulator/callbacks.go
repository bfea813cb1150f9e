package emulator

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// CallbackConfig makes the emulator deliver after-send callbacks
// (Group.CallbackAfterSendMsg, C2C.CallbackAfterSendMsg) to URL, as Tencent
// does once a callback URL is configured in the console.
type CallbackConfig struct {
	// URL receives the callbacks; empty delivers none.
	URL string
	// Token, if set, adds Sign = hex sha256(Token + RequestTime) and
	// RequestTime to the query, as Tencent does once a token is configured.
	Token string
	// Workers is how many callbacks are in flight at once; zero is 8.
	Workers int
	// Timeout bounds one delivery; zero is 2 s (Tencent's before-callback
	// timeout). A failed delivery is not retried, as with Tencent.
	Timeout time.Duration
}

// CallbackStats counts callback deliveries.
type CallbackStats struct {
	Queued    int64 `json:"queued"`
	Delivered int64 `json:"delivered"` // answered HTTP 200
	Refused   int64 `json:"refused"`   // answered another status
	Failed    int64 `json:"failed"`    // no answer (network, timeout)
	Pending   int64 `json:"pending"`   // queued, not yet sent or answered
}

// callbacks delivers callbacks from an unbounded queue, so that sends
// (which hold the server's lock) never wait on the receiver.
type callbacks struct {
	cfg    CallbackConfig
	appID  int64
	client *http.Client

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []callbackEvent
	closed  bool
	stats   CallbackStats
	workers sync.WaitGroup
}

type callbackEvent struct {
	command string
	body    []byte
}

func newCallbacks(cfg CallbackConfig, appID int64) *callbacks {
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	c := &callbacks{cfg: cfg, appID: appID, client: &http.Client{
		Timeout:   cfg.Timeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Workers, IdleConnTimeout: 90 * time.Second},
	}}
	c.cond = sync.NewCond(&c.mu)
	for range cfg.Workers {
		c.workers.Add(1)
		go c.deliverLoop()
	}
	return c
}

func (c *callbacks) push(command string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		return // the bodies are our own structs: cannot fail
	}
	c.mu.Lock()
	if !c.closed {
		c.queue = append(c.queue, callbackEvent{command, body})
		c.stats.Queued++
		c.stats.Pending++
		c.cond.Signal()
	}
	c.mu.Unlock()
}

func (c *callbacks) deliverLoop() {
	defer c.workers.Done()
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closed {
			c.cond.Wait()
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		ev := c.queue[0]
		c.queue[0] = callbackEvent{}
		c.queue = c.queue[1:]
		c.mu.Unlock()

		outcome := c.deliver(ev)

		c.mu.Lock()
		c.stats.Pending--
		switch outcome {
		case http.StatusOK:
			c.stats.Delivered++
		case 0:
			c.stats.Failed++
		default:
			c.stats.Refused++
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// deliver posts one callback and returns the HTTP status, 0 if none came.
func (c *callbacks) deliver(ev callbackEvent) int {
	q := url.Values{
		"SdkAppid":        {strconv.FormatInt(c.appID, 10)},
		"CallbackCommand": {ev.command},
		"contenttype":     {"json"},
		"ClientIP":        {"127.0.0.1"},
		"OptPlatform":     {"RESTAPI"},
	}
	if c.cfg.Token != "" {
		rt := strconv.FormatInt(time.Now().Unix(), 10)
		sum := sha256.Sum256([]byte(c.cfg.Token + rt))
		q.Set("RequestTime", rt)
		q.Set("Sign", hex.EncodeToString(sum[:]))
	}
	sepr := "?"
	if bytes.ContainsRune([]byte(c.cfg.URL), '?') {
		sepr = "&"
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, c.cfg.URL+sepr+q.Encode(), bytes.NewReader(ev.body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return resp.StatusCode
}

// wait blocks until nothing is pending or ctx ends.
func (c *callbacks) wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.stats.Pending > 0 && !c.closed {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %d callbacks: %w", c.stats.Pending, ctx.Err())
		}
		c.cond.Wait()
	}
	return nil
}

func (c *callbacks) close() {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	c.workers.Wait()
	c.client.CloseIdleConnections()
}

// groupAfterSend is Group.CallbackAfterSendMsg's body (doc/2661).
type groupAfterSend struct {
	CallbackCommand string    `json:"CallbackCommand"`
	GroupID         string    `json:"GroupId"`
	TopicID         string    `json:"TopicId,omitempty"`
	Type            string    `json:"Type"`
	From            string    `json:"From_Account"`
	Operator        string    `json:"Operator_Account"`
	Random          uint32    `json:"Random"`
	MsgSeq          int64     `json:"MsgSeq"`
	MsgID           string    `json:"MsgId"`
	MsgTime         int64     `json:"MsgTime"`
	OnlineOnlyFlag  int       `json:"OnlineOnlyFlag"`
	MsgBody         []msgBody `json:"MsgBody"`
	CloudCustomData string    `json:"CloudCustomData"`
	EventTime       int64     `json:"EventTime"`
}

// c2cAfterSend is C2C.CallbackAfterSendMsg's body (doc/2716).
type c2cAfterSend struct {
	CallbackCommand string    `json:"CallbackCommand"`
	From            string    `json:"From_Account"`
	To              string    `json:"To_Account"`
	MsgSeq          int64     `json:"MsgSeq"`
	MsgRandom       uint32    `json:"MsgRandom"`
	MsgTime         int64     `json:"MsgTime"`
	MsgKey          string    `json:"MsgKey"`
	MsgID           string    `json:"MsgId"`
	OnlineOnlyFlag  int       `json:"OnlineOnlyFlag"`
	SendMsgResult   int       `json:"SendMsgResult"`
	ErrorInfo       string    `json:"ErrorInfo"`
	UnreadMsgNum    int       `json:"UnreadMsgNum"`
	MsgBody         []msgBody `json:"MsgBody"`
	CloudCustomData string    `json:"CloudCustomData"`
}

// groupSent queues the callback of a group message; s.mu is held.
func (s *Server) groupSent(g *group, topicID string, seq int64, m gmsg) {
	if s.cb == nil {
		return
	}
	from := s.users[m.from]
	s.cb.push("Group.CallbackAfterSendMsg", groupAfterSend{
		CallbackCommand: "Group.CallbackAfterSendMsg", GroupID: g.id, TopicID: topicID, Type: g.typ,
		From: from, Operator: from, Random: m.random, MsgSeq: seq,
		MsgID:   strconv.FormatInt(seq, 10) + "-" + strconv.FormatUint(uint64(m.random), 10),
		MsgTime: m.time, MsgBody: textBody(int(seq)), EventTime: m.time * 1000,
	})
}

// c2cSent queues the callback of a one-to-one message; s.mu is held.
func (s *Server) c2cSent(m cmsg, seq int) {
	if s.cb == nil {
		return
	}
	s.cb.push("C2C.CallbackAfterSendMsg", c2cAfterSend{
		CallbackCommand: "C2C.CallbackAfterSendMsg", From: s.users[m.from], To: s.users[m.to],
		MsgSeq: int64(seq), MsgRandom: m.random, MsgTime: m.time, MsgKey: m.key(seq),
		MsgID: m.key(seq), MsgBody: textBody(seq),
	})
}

// ReplayCallbacks queues the after-send callback of every message the
// emulator holds, recalled or not, as if each had just been sent: a way to
// feed a callback receiver the history Generate wrote. It returns how many
// were queued; WaitCallbacks waits for their delivery.
func (s *Server) ReplayCallbacks() int {
	if s.cb == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, id := range s.groupOrder {
		g := s.groups[id]
		for i, m := range g.msgs {
			s.groupSent(g, "", int64(i+1), m)
			n++
		}
		for _, tid := range g.topicOrder {
			for i, m := range g.topics[tid].msgs {
				s.groupSent(g, tid, int64(i+1), m)
				n++
			}
		}
	}
	keys := make([]convKey, 0, len(s.convs))
	for k := range s.convs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y convKey) int { return cmp.Or(cmp.Compare(x.a, y.a), cmp.Compare(x.b, y.b)) })
	for _, k := range keys {
		for i, m := range s.convs[k].msgs {
			s.c2cSent(m, i+1)
			n++
		}
	}
	return n
}

// WaitCallbacks blocks until every queued callback was delivered or failed.
func (s *Server) WaitCallbacks(ctx context.Context) error {
	if s.cb == nil {
		return nil
	}
	return s.cb.wait(ctx)
}

// CallbackStats returns the callback delivery counts.
func (s *Server) CallbackStats() CallbackStats {
	if s.cb == nil {
		return CallbackStats{}
	}
	s.cb.mu.Lock()
	defer s.cb.mu.Unlock()
	return s.cb.stats
}

// Close stops delivering callbacks; queued ones are dropped.
func (s *Server) Close() {
	if s.cb != nil {
		s.cb.close()
	}
}
