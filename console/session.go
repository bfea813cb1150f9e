package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/imrecall/imrecall/api"
	"github.com/redis/go-redis/v9"
)

// Cookie names.
const (
	sessionCookie = "imrecall_session"
	loginCookie   = "imrecall_login" // the sign-in form's CSRF token, before a session exists
)

// session is a signed-in operator: the token's name and role, never the
// token, and the CSRF token every form of the session carries.
type session struct {
	id     string // the cookie's value; in Redis only as a digest
	Name   string
	Role   api.Role
	CSRF   string
	secret string // secretDigest of the token's secret at sign-in
}

// Admin reports whether the session may act.
func (s *session) Admin() bool { return s.Role == api.RoleAdmin }

// sessions keeps sessions in Redis, each under the digest of its id with a
// TTL: a reader of Redis cannot take one over.
type sessions struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
}

// secretDigest is what a session keeps of its token's secret: enough to
// tell that the secret was changed since, nothing to sign in with.
func secretDigest(secret string) string {
	sum := sha256.Sum256([]byte("imrecall console session\x00" + secret))
	return hex.EncodeToString(sum[:])
}

// randomToken returns 32 random bytes, URL-safe.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *sessions) key(id string) string {
	sum := sha256.Sum256([]byte(id))
	return s.prefix + hex.EncodeToString(sum[:])
}

// create starts a session for a token.
func (s *sessions) create(ctx context.Context, t api.Token) (*session, error) {
	ss := &session{id: randomToken(), Name: t.Name, Role: t.Role, CSRF: randomToken(), secret: secretDigest(t.Secret)}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.key(ss.id), "name", ss.Name, "role", string(ss.Role), "csrf", ss.CSRF, "secret", ss.secret)
		p.Expire(ctx, s.key(ss.id), s.ttl)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console: starting a session: %w", err)
	}
	return ss, nil
}

// errNoSession is a request without a live session.
var errNoSession = errors.New("not signed in")

// get returns the session of a request's cookie.
func (s *sessions) get(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 100 {
		return nil, errNoSession
	}
	h, err := s.rdb.HGetAll(r.Context(), s.key(c.Value)).Result()
	if err != nil {
		return nil, fmt.Errorf("console: reading a session: %w", err)
	}
	if h["name"] == "" {
		return nil, errNoSession
	}
	return &session{id: c.Value, Name: h["name"], Role: api.Role(h["role"]), CSRF: h["csrf"], secret: h["secret"]}, nil
}

// remove ends a session.
func (s *sessions) remove(ctx context.Context, ss *session) error {
	return s.rdb.Del(ctx, s.key(ss.id)).Err()
}

// setCookie writes a console cookie: HttpOnly, SameSite=Strict, Path=/,
// Secure when the browser reached the server over TLS (overTLS). maxAge < 0
// deletes it.
func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: overTLS(r), MaxAge: int(maxAge.Seconds())}
	if maxAge < 0 {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

// overTLS reports whether the browser reached the server over TLS: the
// connection is TLS, or the reverse proxy that terminates TLS in front of
// serve (docs/SECURITY.md) says so in X-Forwarded-Proto or Forwarded. serve
// itself listens in plain HTTP, so r.TLS alone never marked a cookie
// Secure, and a browser sent the session over any http:// URL of the host.
// A client that claims https falsely only keeps its own cookie off plain
// HTTP.
func overTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if p, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); strings.EqualFold(strings.TrimSpace(p), "https") {
		return true
	}
	first, _, _ := strings.Cut(r.Header.Get("Forwarded"), ",")
	for _, pair := range strings.Split(first, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(pair), "=")
		if strings.EqualFold(k, "proto") && strings.EqualFold(strings.Trim(v, `"`), "https") {
			return true
		}
	}
	return false
}

// sameToken compares two CSRF tokens in constant time; empty never matches.
func sameToken(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// handlerFunc is a console handler with the request's session.
type handlerFunc func(w http.ResponseWriter, r *http.Request, s *session)

// signedIn wraps h: without a session a page redirects to the sign-in form;
// a POST must come from this site, carry the session's CSRF token and, for
// need admin, an admin's session.
func (c *Console) signedIn(need api.Role, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		post := r.Method == http.MethodPost
		if post {
			if why := api.CrossSite(r); why != "" {
				c.refuse(w, r, nil, http.StatusForbidden, "cross-site request refused: "+why)
				return
			}
		}
		s, err := c.current(r)
		if err != nil {
			if errors.Is(err, errNoSession) {
				if post || strings.HasSuffix(r.URL.Path, "/stream") {
					c.refuse(w, r, nil, http.StatusUnauthorized, "sign in first")
					return
				}
				http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, err)
			return
		}
		if post {
			r.Body = http.MaxBytesReader(w, r.Body, api.MaxJobBody)
			if !sameToken(r.FormValue("csrf"), s.CSRF) {
				c.refuse(w, r, s, http.StatusForbidden, "the form's CSRF token is missing or stale: reload the page and try again")
				return
			}
		}
		if need == api.RoleAdmin && !s.Admin() {
			c.refuse(w, r, s, http.StatusForbidden, fmt.Sprintf("token %s has role %s: only admin tokens act", s.Name, s.Role))
			return
		}
		h(w, r, s)
	}
}

// current is the request's session, if it has one whose token the server
// still accepts (errNoSession when not).
func (c *Console) current(r *http.Request) (*session, error) {
	s, err := c.sessions.get(r)
	if err == nil {
		err = c.stillAccepted(r, s)
	}
	return s, err
}

// stillAccepted checks a session's token against the tokens the server
// accepts now (Config.Current): a session whose token was revoked (the
// server restarted without it, or with a new secret for its name) ends, as errNoSession, rather than reading
// on for the rest of its life; a token whose role changed acts in its
// current role.
func (c *Console) stillAccepted(r *http.Request, s *session) error {
	if c.cfg.Current == nil {
		return nil
	}
	t, ok := c.cfg.Current(s.Name)
	if !ok || !sameToken(secretDigest(t.Secret), s.secret) { // revoked, or its secret rotated
		c.log.InfoContext(r.Context(), "console session ended: its token is no longer accepted", "token", s.Name)
		if err := c.sessions.remove(r.Context(), s); err != nil {
			return err
		}
		return errNoSession
	}
	s.Role = t.Role
	return nil
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	tok := randomToken()
	setCookie(w, r, loginCookie, tok, 30*time.Minute)
	c.render(w, r, http.StatusOK, "login", nil, view{Title: "Sign in", CSRF: tok, Data: safeNext(r.URL.Query().Get("next"))})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if why := api.CrossSite(r); why != "" {
		c.refuse(w, r, nil, http.StatusForbidden, "cross-site request refused: "+why)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxSmallBody)
	ck, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(r.FormValue("csrf"), ck.Value) {
		c.refuse(w, r, nil, http.StatusForbidden, "the sign-in form's CSRF token is missing or stale: reload the page and try again")
		return
	}
	t, ok := c.cfg.Authenticate(r.FormValue("token"))
	if !ok {
		c.log.WarnContext(r.Context(), "console sign-in refused", "remote", r.RemoteAddr)
		tok := randomToken()
		setCookie(w, r, loginCookie, tok, 30*time.Minute)
		c.render(w, r, http.StatusUnauthorized, "login", nil, view{Title: "Sign in", CSRF: tok, Error: "that token is not valid", Data: safeNext(r.FormValue("next"))})
		return
	}
	s, err := c.sessions.create(r.Context(), t)
	if err != nil {
		c.fail(w, r, nil, err)
		return
	}
	setCookie(w, r, loginCookie, "", -1)
	setCookie(w, r, sessionCookie, s.id, c.cfg.SessionTTL)
	c.log.InfoContext(r.Context(), "console sign-in", "token", t.Name, "role", string(t.Role))
	http.Redirect(w, r, safeNext(r.FormValue("next")), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	if err := c.sessions.remove(r.Context(), s); err != nil {
		c.fail(w, r, s, err)
		return
	}
	setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// safeNext keeps a redirect after sign-in on this site.
func safeNext(next string) string {
	// A browser drops tabs and line breaks from a URL ("/\t/evil.example"
	// is "//evil.example") and reads a backslash as a slash: a path with
	// any of them is not one of ours.
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsRune(next, '\\') ||
		strings.ContainsFunc(next, unicode.IsControl) {
		return "/jobs"
	}
	return next
}
