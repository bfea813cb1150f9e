package api

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Role is what a token may do.
type Role string

// The roles. A read token may call every GET route (and see the dashboard
// read-only); an admin token may also create, cancel and re-queue.
const (
	RoleRead  Role = "read"
	RoleAdmin Role = "admin"
)

func (r Role) allows(need Role) bool { return r == RoleAdmin || need == RoleRead && r == RoleRead }

// Token is an API bearer token. Name is recorded as who asked; Secret is
// compared in constant time and never logged.
type Token struct {
	Name   string
	Role   Role
	Secret string
}

// String hides the secret.
func (t Token) String() string { return t.Name + ":" + string(t.Role) + ":[REDACTED]" }

// minSecretLen refuses guessable tokens.
const minSecretLen = 16

// ParseTokens reads tokens as NAME:ROLE:SECRET, one per line or separated
// by commas; blank lines and lines starting with # are skipped. source names
// the input in errors (a file name or an environment variable); errors never
// include a secret.
func ParseTokens(r io.Reader, source string) ([]Token, error) {
	var out []Token
	names := map[string]bool{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		for i, entry := range strings.Split(text, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			where := fmt.Sprintf("%s:%d", source, line)
			if strings.Contains(text, ",") {
				where = fmt.Sprintf("%s:%d: entry %d", source, line, i+1)
			}
			parts := strings.SplitN(entry, ":", 3)
			if len(parts) != 3 {
				return nil, fmt.Errorf("%s: want NAME:ROLE:SECRET", where)
			}
			t := Token{Name: strings.TrimSpace(parts[0]), Role: Role(strings.TrimSpace(parts[1])), Secret: strings.TrimSpace(parts[2])}
			switch {
			case t.Name == "" || strings.ContainsAny(t.Name, " \t"):
				return nil, fmt.Errorf("%s: name %q: want a word", where, t.Name)
			case t.Role != RoleRead && t.Role != RoleAdmin:
				return nil, fmt.Errorf("%s: token %s: role %q: want read or admin", where, t.Name, t.Role)
			case len(t.Secret) < minSecretLen:
				return nil, fmt.Errorf("%s: token %s: secret shorter than %d characters", where, t.Name, minSecretLen)
			case names[t.Name]:
				return nil, fmt.Errorf("%s: token %s: name given twice", where, t.Name)
			}
			names[t.Name] = true
			out = append(out, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading tokens from %s: %w", source, err)
	}
	return out, nil
}

// authenticator finds the token of a request in constant time per token.
type authenticator struct {
	tokens []Token
	sums   [][32]byte
}

func newAuthenticator(tokens []Token) *authenticator {
	a := &authenticator{tokens: tokens}
	for _, t := range tokens {
		a.sums = append(a.sums, sha256.Sum256([]byte(t.Secret)))
	}
	return a
}

// find returns the token presented as "Authorization: Bearer SECRET" or,
// with basic (only the dashboard under /monitor/, for browsers), as the
// password of Basic auth. Tokens are taken from the Authorization header
// only: never from a query, a cookie or a form.
func (a *authenticator) find(r *http.Request, basic bool) (Token, bool) {
	secret := ""
	if h := r.Header.Get("Authorization"); h != "" {
		if s, ok := strings.CutPrefix(h, "Bearer "); ok {
			secret = strings.TrimSpace(s)
		} else if _, p, ok := r.BasicAuth(); ok && basic {
			secret = p
		}
	}
	if secret == "" {
		return Token{}, false
	}
	// Compare digests of equal length against every token, without an
	// early exit, so timing says nothing about which (if any) matched.
	got := sha256.Sum256([]byte(secret))
	match := -1
	for i := range a.sums {
		if subtle.ConstantTimeCompare(got[:], a.sums[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Token{}, false
	}
	return a.tokens[match], true
}

// mutating reports whether a method can change something.
func mutating(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// crossSite explains why a request comes from another site, or is "" if it
// does not: a browser says so in Sec-Fetch-Site, and an Origin header that
// does not name this host (or is "null") is another site's page. Requests
// without either (curl, scripts) are same-site.
func crossSite(r *http.Request) string {
	if s := r.Header.Get("Sec-Fetch-Site"); s == "cross-site" || s == "same-site" {
		return "Sec-Fetch-Site: " + s
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return "Origin " + strconv.Quote(origin) + " is not this server (" + r.Host + ")"
	}
	return ""
}

// jsonContent reports whether a request's body is declared JSON: what an
// HTML form on another site cannot send without a CORS preflight (which
// this server never grants).
func jsonContent(r *http.Request) bool {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && ct == "application/json"
}
