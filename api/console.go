package api

import (
	"net/http"

	"github.com/imrecall/imrecall"
)

// Authenticate finds the token whose secret is secret, in constant time per
// token, as the bearer check does: for the console's sign-in form.
func (s *Server) Authenticate(secret string) (Token, bool) {
	if secret == "" {
		return Token{}, false
	}
	r := &http.Request{Header: http.Header{"Authorization": {"Bearer " + secret}}}
	return s.auth.find(r, false)
}

// CrossSite explains why a request comes from another site's page, or is ""
// if it does not: the refusal every mutating route applies, for the console.
func CrossSite(r *http.Request) string { return crossSite(r) }

// Principal is who a token's requests are recorded as ("token:NAME"): the
// actor and requester of what it creates, and the approver it approves as.
// The console records its signed-in token the same way.
func (t Token) Principal() string { return t.principal() }

// ResponseOf is a plan (a dry run) in the API's shape, for the console.
func ResponseOf(p imrecall.Plan) CreateJobResponse { return responseOf(p) }
