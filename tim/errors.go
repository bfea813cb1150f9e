package tim

import (
	"context"
	"errors"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Sentinel errors, matched with errors.Is on a *Error's chain.
var (
	// ErrInvalidRequest marks a request the client refused to send (for
	// example more than 10 seqs to group_msg_recall). ClassPermanent.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrMalformedResponse marks a response body that is not the JSON the API
	// documents. ClassRetry: a truncated or garbled body is usually transient.
	ErrMalformedResponse = errors.New("malformed response")
	// ErrBodyTooLarge marks a response body over the client's size limit.
	// ClassPermanent: the same request would get the same body.
	ErrBodyTooLarge = errors.New("response body too large")
	// ErrHTTPStatus marks a response whose HTTP status is not 200; the status
	// is in Error.HTTPStatus.
	ErrHTTPStatus = errors.New("unexpected HTTP status")
	// ErrIncompleteResult marks a group_msg_recall answer without a result for
	// every requested seq (see Client.RecallGroup). ClassRetry.
	ErrIncompleteResult = errors.New("incomplete per-item result")
	// ErrGate marks a call the Gate did not let go (its Wait failed): the
	// request was never sent. The Gate's own error is wrapped beside it.
	ErrGate = errors.New("gate")
	// ErrThrottled may be wrapped by a Gate's Wait error to say the limiter
	// refused to wait long enough, or refuses to grant for now (a cap
	// mismatch); ClassOf then returns ClassThrottled.
	ErrThrottled = errors.New("throttled")
)

// Error is the error every Client method returns. For an error answer from
// the API, Code and Info carry its ErrorCode and ErrorInfo. For everything
// else (validation, the Gate, transport errors, timeouts, HTTP status, bad
// bodies) Code is 0 and Err says what went wrong. It never contains the
// UserSig or the SecretKey.
type Error struct {
	API        string // the API's Name, e.g. "group_msg_recall"
	HTTPStatus int    // the HTTP status, or 0 when no response arrived
	Code       int    // the response's ErrorCode, or 0
	Info       string // the response's ErrorInfo
	Err        error  // the underlying error when Code is 0, or nil
}

// Error describes the failure: API, code, documented meaning and ErrorInfo,
// or the underlying error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("tim ")
	b.WriteString(e.API)
	b.WriteString(": ")
	switch {
	case e.Code != 0:
		b.WriteString("ErrorCode ")
		b.WriteString(strconv.Itoa(e.Code))
		b.WriteString(" (")
		b.WriteString(Describe(e.Code))
		b.WriteString(")")
		if e.Info != "" {
			b.WriteString(": ")
			b.WriteString(e.Info)
		}
	case e.Err != nil:
		if e.HTTPStatus != 0 && errors.Is(e.Err, ErrHTTPStatus) {
			b.WriteString("HTTP ")
			b.WriteString(strconv.Itoa(e.HTTPStatus))
			b.WriteString(": ")
		}
		b.WriteString(e.Err.Error())
	default:
		b.WriteString("unknown error")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Class returns ClassOf(e).
func (e *Error) Class() Class { return ClassOf(e) }

// Timeout reports whether the call timed out (the per-call timeout or the
// caller's deadline) before an answer arrived.
func (e *Error) Timeout() bool {
	if errors.Is(e.Err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// CodeOf returns the ErrorCode carried by err's *Error, or 0.
func CodeOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// ClassOf classifies an error returned by a Client method:
//   - nil is ClassOK;
//   - an API error code is Classify(Code);
//   - a Gate error wrapping ErrThrottled, or HTTP 429, is ClassThrottled;
//   - ErrInvalidRequest, ErrBodyTooLarge and HTTP 4xx other than 408/429 are
//     ClassPermanent;
//   - everything else is ClassRetry: HTTP 5xx and 408, timeouts, connection
//     errors, ErrMalformedResponse, ErrIncompleteResult, other Gate errors,
//     and context.Canceled. A canceled call says nothing about the message
//     and its outcome is unknown, so it is worth retrying later; a caller
//     that is shutting down should check its own ctx.Err() first.
func ClassOf(err error) Class {
	if err == nil {
		return ClassOK
	}
	var e *Error
	if errors.As(err, &e) && e.Code != 0 {
		return Classify(e.Code)
	}
	switch {
	case errors.Is(err, ErrThrottled):
		return ClassThrottled
	case errors.Is(err, ErrInvalidRequest), errors.Is(err, ErrBodyTooLarge):
		return ClassPermanent
	}
	if e != nil && errors.Is(err, ErrHTTPStatus) {
		switch s := e.HTTPStatus; {
		case s == 429:
			return ClassThrottled
		case s == 408 || s >= 500:
			return ClassRetry
		case s >= 400:
			return ClassPermanent
		}
	}
	return ClassRetry
}

// redactSig replaces sig in text (an answer's ErrorInfo) as it was sent,
// in the URL's query: a server or a gateway in front of it that echoes the
// request's query quotes it percent-encoded ("*" as "%2A"), and the bare
// sig would not match it.
func redactSig(text, sig string) string {
	if sig == "" {
		return text
	}
	for _, form := range []string{sig, url.QueryEscape(sig), url.PathEscape(sig)} {
		text = strings.ReplaceAll(text, form, redacted)
		if strings.Contains(form, "%") {
			// A gateway may re-encode with lower-case hex (%2a for %2A).
			text = escapesAnyCase(form).ReplaceAllLiteralString(text, redacted)
		}
	}
	return text
}

// escapesAnyCase matches form with the hex digits of its %XX escapes in
// either case; everything else as it is.
func escapesAnyCase(form string) *regexp.Regexp {
	var b strings.Builder
	for i := 0; i < len(form); i++ {
		if form[i] == '%' && i+2 < len(form) {
			b.WriteString("%")
			for _, h := range form[i+1 : i+3] {
				b.WriteString("[" + strings.ToLower(string(h)) + strings.ToUpper(string(h)) + "]")
			}
			i += 2
			continue
		}
		b.WriteString(regexp.QuoteMeta(form[i : i+1]))
	}
	return regexp.MustCompile(b.String())
}

// redactURLError returns err with the usersig query parameter of any
// *url.Error replaced, so the error can be logged.
func redactURLError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: ue.Err}
}

// redactURL replaces the value of the usersig query parameter.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[unparsable URL]"
	}
	q := u.Query()
	if q.Has("usersig") {
		q.Set("usersig", redacted)
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
