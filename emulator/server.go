package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"
)

// Config configures a Server. SDKAppID, Admin and SecretKey are required.
type Config struct {
	SDKAppID  int64
	Admin     string // the App admin identifier
	SecretKey string
	// Rate is the calls/s allowed per API over any sliding second; 0 is
	// unlimited. (The command's default is 200, as Tencent's.)
	Rate int
	// RateOf overrides Rate per API, keyed by the path's last segment;
	// 0 is unlimited.
	RateOf map[string]int
	// Latency is added before answering; with LatencyMax > Latency it is
	// uniform in [Latency, LatencyMax].
	Latency, LatencyMax time.Duration
	Faults              Faults
	// Seed seeds fault and latency randomness.
	Seed int64
	// Logger; nil discards.
	Logger *slog.Logger
	// Callbacks, if Callbacks.URL is set, delivers after-send callbacks.
	Callbacks CallbackConfig
}

// Faults are injected errors. Probabilities are per call (or per seq).
type Faults struct {
	// Codes answers a call with ErrorCode code (ActionStatus FAIL), with no effect.
	Codes map[int]float64
	// CodesOf does what Codes does for one API, keyed by the path's last
	// segment (as Config.RateOf).
	CodesOf map[string]map[int]float64
	// ItemCodes, on group_msg_recall only: a seq's RetCode is code and it is not recalled.
	ItemCodes map[int]float64
	// TopicCodes, on get_topic only, keyed by TopicId: that topic's entry
	// in TopicAndSelfInfo carries ErrorCode code with an ErrorInfo, and a
	// TopicInfo holding only its TopicId and GroupID, as Tencent answers a
	// topic it cannot describe; the call itself succeeds (ActionStatus OK,
	// ErrorCode 0) and the other topics are described as usual. Unlike the
	// other faults it is certain, not a probability: a test names the
	// topics that fail.
	TopicCodes map[string]int
	// OmitItem, on group_msg_recall only: a seq is recalled but its entry
	// is left out of RecallRetList (an answer incomplete for that seq).
	OmitItem float64
	// HTTP502 answers HTTP 502 with an HTML body, with no effect.
	HTTP502 float64
	// HTTP502AfterEffect lets the call take effect, then answers HTTP 502
	// in its place: a gateway that lost the service's answer (Tencent
	// documents a non-200 status as a network error in front of the
	// service, which does not say whether the service acted).
	HTTP502AfterEffect float64
	// Hang holds the call unanswered until the client gives up or HangFor
	// passes, with no effect.
	Hang    float64
	HangFor time.Duration // zero: 10 s
}

func (f Faults) validate() error {
	chk := func(name string, p float64) error {
		if p < 0 || p > 1 {
			return fmt.Errorf("emulator: Faults.%s %v: want a probability from 0 to 1", name, p)
		}
		return nil
	}
	for c, p := range f.Codes {
		if err := chk("Codes["+strconv.Itoa(c)+"]", p); err != nil {
			return err
		}
	}
	for api, codes := range f.CodesOf {
		if !knownAPI(api) {
			return fmt.Errorf("emulator: Faults.CodesOf[%s]: no such API (want the path's last segment, such as get_topic)", api)
		}
		for c, p := range codes {
			if err := chk("CodesOf["+api+"]["+strconv.Itoa(c)+"]", p); err != nil {
				return err
			}
		}
	}
	for c, p := range f.ItemCodes {
		if err := chk("ItemCodes["+strconv.Itoa(c)+"]", p); err != nil {
			return err
		}
	}
	for id, c := range f.TopicCodes {
		if id == "" || c == 0 {
			return fmt.Errorf("emulator: Faults.TopicCodes[%q] = %d: want a TopicId and a non-zero ErrorCode", id, c)
		}
	}
	if err := chk("OmitItem", f.OmitItem); err != nil {
		return err
	}
	if err := chk("HTTP502AfterEffect", f.HTTP502AfterEffect); err != nil {
		return err
	}
	if err := chk("HTTP502", f.HTTP502); err != nil {
		return err
	}
	return chk("Hang", f.Hang)
}

// Server is the emulator. It is safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger

	mu         sync.RWMutex
	users      []string
	userIdx    map[string]uint32
	groups     map[string]*group
	groupOrder []string
	joined     map[uint32][]*group
	convs      map[convKey]*conv
	groupSeq   int
	topicSeq   int

	fmu    sync.Mutex
	faults Faults
	rng    *rand.Rand

	smu     sync.Mutex
	started time.Time
	apis    map[string]*apiStats

	sigMu sync.Mutex
	sigs  map[string]time.Time // verified sig → when verified

	cb *callbacks // nil: no callback URL
}

// New validates cfg and returns an empty server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.SDKAppID <= 0:
		return nil, fmt.Errorf("emulator: SDKAppID %d: want a positive app ID", cfg.SDKAppID)
	case strings.TrimSpace(cfg.Admin) == "":
		return nil, errors.New("emulator: Admin is empty")
	case cfg.SecretKey == "":
		return nil, errors.New("emulator: SecretKey is empty")
	case cfg.Rate < 0:
		return nil, fmt.Errorf("emulator: Rate %d is negative", cfg.Rate)
	case cfg.Latency < 0 || cfg.LatencyMax < 0:
		return nil, errors.New("emulator: Latency is negative")
	}
	for api, n := range cfg.RateOf {
		switch {
		case n < 0:
			return nil, fmt.Errorf("emulator: RateOf[%s] %d is negative", api, n)
		case !knownAPI(api):
			return nil, fmt.Errorf("emulator: RateOf[%s]: no such API (want the path's last segment, such as group_msg_recall)", api)
		}
	}
	if err := cfg.Faults.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, log: log,
		userIdx: map[string]uint32{}, groups: map[string]*group{}, joined: map[uint32][]*group{}, convs: map[convKey]*conv{},
		faults: cfg.Faults, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x1e3779b97f4a7c15)),
		started: time.Now(), apis: map[string]*apiStats{}, sigs: map[string]time.Time{},
	}
	s.addUser(cfg.Admin)
	if cfg.Callbacks.URL != "" {
		if u, err := url.Parse(cfg.Callbacks.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("emulator: Callbacks.URL %q: want an http(s) URL", cfg.Callbacks.URL)
		}
		s.cb = newCallbacks(cfg.Callbacks, cfg.SDKAppID)
	}
	return s, nil
}

// SetFaults replaces the injected faults.
func (s *Server) SetFaults(f Faults) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.faults = f
}

func (s *Server) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.rng.Float64() < p
}

func (s *Server) currentFaults() Faults {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.faults
}

func (s *Server) latency() time.Duration {
	lo, hi := s.cfg.Latency, s.cfg.LatencyMax
	if hi <= lo {
		return lo
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

func (s *Server) addUser(id string) uint32 {
	if i, ok := s.userIdx[id]; ok {
		return i
	}
	i := uint32(len(s.users))
	s.users = append(s.users, id)
	s.userIdx[id] = i
	return i
}

// reply is the common part of every answer.
type reply struct {
	ActionStatus string `json:"ActionStatus"`
	ErrorInfo    string `json:"ErrorInfo"`
	ErrorCode    int    `json:"ErrorCode"`
}

func ok() reply { return reply{ActionStatus: "OK"} }

// apiError is an API-level error answer.
type apiError struct {
	code int
	info string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.code, e.info) }

func fail(code int, format string, args ...any) *apiError {
	return &apiError{code: code, info: fmt.Sprintf(format, args...)}
}

// handler handles one API: the raw JSON body in, an answer (marshalled with
// the common fields filled in) or an *apiError out.
type handler func(s *Server, body []byte) (any, *apiError)

// ServeHTTP serves the IM API under /v4/ and the emulator's own endpoints
// under /emulator/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/emulator/stats" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Stats())
		return
	case r.URL.Path == "/emulator/stats/reset" && r.Method == http.MethodPost:
		s.ResetStats()
		writeJSON(w, http.StatusOK, ok())
		return
	case r.URL.Path == "/emulator/callbacks" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.CallbackStats())
		return
	case r.URL.Path == "/emulator/truth" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Truth())
		return
	case strings.HasPrefix(r.URL.Path, "/v4/"):
		s.serveAPI(w, r)
		return
	}
	http.NotFound(w, r)
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v4/"), "/")
	api := parts[len(parts)-1]
	st := s.stats(api)
	st.call()
	answer := func(v any, e *apiError) {
		if d := s.latency(); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
		}
		if e != nil {
			writeJSON(w, http.StatusOK, reply{ActionStatus: "FAIL", ErrorCode: e.code, ErrorInfo: e.info})
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
	if len(parts) != 2 {
		answer(nil, fail(60009, "bad resource URL %s", r.URL.Path))
		return
	}
	h, known := handlers[parts[0]+"/"+parts[1]]
	if r.Method != http.MethodPost {
		answer(nil, fail(60002, "HTTP method %s: POST only", r.Method))
		return
	}
	if e := s.checkQuery(r, parts[0]); e != nil {
		answer(nil, e)
		return
	}
	if !known {
		answer(nil, fail(60009, "unknown command %s/%s", parts[0], parts[1]))
		return
	}
	if !st.admit(arrivalOf(r), s.capOf(api)) {
		answer(nil, fail(60007, "REST API call frequency over the limit of %d/s", s.capOf(api)))
		return
	}
	f := s.currentFaults()
	if s.chance(f.Hang) {
		st.fault()
		hang := f.HangFor
		if hang <= 0 {
			hang = 10 * time.Second
		}
		select {
		case <-time.After(hang):
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusGatewayTimeout)
		return
	}
	if s.chance(f.HTTP502) {
		st.fault()
		badGateway(w)
		return
	}
	for _, codes := range []map[int]float64{f.Codes, f.CodesOf[api]} {
		for code, p := range codes {
			if s.chance(p) {
				st.fault()
				answer(nil, fail(code, "injected fault %d", code))
				return
			}
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		answer(nil, fail(60002, "reading body: %v", err))
		return
	}
	if !json.Valid(body) || len(strings.TrimSpace(string(body))) == 0 {
		if parts[0] == "openim" {
			answer(nil, fail(90001, "Fail to Parse json data of body, Please check it"))
		} else {
			answer(nil, fail(60003, "bad JSON body"))
		}
		return
	}
	v, e := h(s, body)
	if e == nil {
		if ia, ok := v.(interface{ itemFaults() int }); ok {
			for range ia.itemFaults() {
				st.fault()
			}
		}
	}
	if s.chance(f.HTTP502AfterEffect) {
		st.fault()
		if la, ok := v.(interface{ answerLost() }); ok {
			s.mu.Lock()
			la.answerLost()
			s.mu.Unlock()
		}
		badGateway(w)
		return
	}
	answer(v, e)
}

// badGateway answers as Tencent's gateway does when the service behind it
// failed or its answer was lost: HTTP 502 with an HTML body.
func badGateway(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusBadGateway)
	_, _ = io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
}

// checkQuery checks the common URL parameters and the UserSig.
func (s *Server) checkQuery(r *http.Request, service string) *apiError {
	q := r.URL.Query()
	app := q.Get("sdkappid")
	if app == "" {
		return fail(60012, "sdkappid missing")
	}
	if app != strconv.FormatInt(s.cfg.SDKAppID, 10) {
		return fail(60006, "SDKAppID %s invalid", app)
	}
	id := q.Get("identifier")
	if id == "" {
		return fail(60004, "identifier missing")
	}
	if e := s.verifySig(id, q.Get("usersig")); e != nil {
		return e
	}
	if id != s.cfg.Admin {
		if service == "openim" {
			return fail(90009, "the request requires App administrator permission")
		}
		return fail(60010, "the request requires App administrator permission")
	}
	if _, err := strconv.ParseUint(q.Get("random"), 10, 32); err != nil {
		return fail(60002, "random %q: want an unsigned 32-bit integer", q.Get("random"))
	}
	if q.Get("contenttype") != "json" {
		return fail(60002, "contenttype %q: want json", q.Get("contenttype"))
	}
	return nil
}

// sigCacheFor is how long a verified UserSig is trusted before it is checked
// again (so expiry is still noticed).
const sigCacheFor = time.Minute

func (s *Server) verifySig(id, sig string) *apiError {
	if sig == "" {
		return fail(70002, "UserSig is empty")
	}
	cacheKey := id + "\x00" + sig
	s.sigMu.Lock()
	at, cached := s.sigs[cacheKey]
	s.sigMu.Unlock()
	if cached && time.Since(at) < sigCacheFor {
		return nil
	}
	err := tencentyun.VerifyUserSig(uint64(s.cfg.SDKAppID), s.cfg.SecretKey, id, sig, time.Now())
	switch {
	case err == nil:
		s.sigMu.Lock()
		if len(s.sigs) > 10000 {
			clear(s.sigs)
		}
		s.sigs[cacheKey] = time.Now()
		s.sigMu.Unlock()
		return nil
	case errors.Is(err, tencentyun.ErrExpired):
		return fail(70001, "UserSig expired")
	case errors.Is(err, tencentyun.ErrIdentifierNotMatch):
		return fail(70013, "identifier does not match the UserSig")
	case errors.Is(err, tencentyun.ErrSdkAppIDNotMatch):
		return fail(70014, "SDKAppID does not match the UserSig")
	}
	return fail(70003, "UserSig invalid")
}

// knownAPI reports whether api is the last segment of a path the emulator
// answers.
func knownAPI(api string) bool {
	for path := range handlers {
		if strings.HasSuffix(path, "/"+api) {
			return true
		}
	}
	return false
}

func (s *Server) capOf(api string) int {
	if n, ok := s.cfg.RateOf[api]; ok {
		return n
	}
	return s.cfg.Rate
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"ActionStatus":"FAIL","ErrorCode":70500,"ErrorInfo":"encoding the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
