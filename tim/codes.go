package tim

import (
	"errors"
	"strconv"
)

// Class says what a caller should do about an error code (a response's
// ErrorCode or an item's RetCode) or a failed call.
type Class int

// The classes, from best to worst.
const (
	// ClassOK: the call or item succeeded (code 0).
	ClassOK Class = iota
	// ClassDone: the wanted state already holds (20023, already recalled).
	// Count it as success.
	ClassDone
	// ClassRetry: a transient failure (internal errors, timeouts, 5xx,
	// connection errors). Retry later with backoff, a bounded number of times.
	ClassRetry
	// ClassThrottled: over a frequency limit. Back off without counting an
	// attempt; 70050 asks for at least a minute.
	ClassThrottled
	// ClassAuth: the UserSig or account in the URL was refused. The client has
	// already renewed the UserSig and retried once; a repeat means the
	// SecretKey, SDKAppID or admin account is wrong.
	ClassAuth
	// ClassPermanent: retrying cannot help (not found, not recallable, bad
	// request, configuration). Dead-letter it.
	ClassPermanent
)

var classNames = [...]string{"ok", "done", "retry", "throttled", "auth", "permanent"}

// String returns the class's lower-case name: "ok", "done", "retry",
// "throttled", "auth" or "permanent".
func (c Class) String() string {
	if c >= 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// codeInfo is one documented code: its class and meaning.
type codeInfo struct {
	class Class
	desc  string
}

// codes is the one table of documented codes. Sources: the group_msg_recall
// and admin_msgwithdraw pages, the public error code page (60000–79999), and
// the reference notes on neighbouring APIs. Codes not listed are permanent.
var codes = map[int]codeInfo{
	0: {ClassOK, "success"},

	// Group APIs (group_open_http_svc).
	10002: {ClassRetry, "internal server error, retry"},
	10003: {ClassPermanent, "invalid command"},
	10004: {ClassPermanent, "invalid parameter"},
	10006: {ClassThrottled, "group operation frequency over the limit"},
	10007: {ClassPermanent, "operator lacks permission for this operation"},
	10010: {ClassPermanent, "group does not exist or was dissolved"},
	10015: {ClassPermanent, "invalid group ID"},
	10018: {ClassPermanent, "response would exceed 1 MB; request fewer items per page"},
	10023: {ClassThrottled, "message send frequency over the limit"},
	10030: {ClassPermanent, "message to recall does not exist"},
	10031: {ClassPermanent, "message is past the recall time limit"},
	10032: {ClassPermanent, "message does not support recall"},
	10033: {ClassPermanent, "group type does not support message recall"},
	10041: {ClassPermanent, "group message recall is disabled for this app"},

	// One-to-one messages (openim).
	20002: {ClassAuth, "UserSig or A2 invalid"},
	20004: {ClassRetry, "network error, retry"},
	20005: {ClassRetry, "internal server error, retry"},
	20022: {ClassPermanent, "message to recall does not exist"},
	20023: {ClassDone, "message was already recalled"},
	90001: {ClassPermanent, "request body is not valid JSON"},
	90003: {ClassPermanent, "To_Account missing or the account does not exist"},
	90008: {ClassPermanent, "From_Account missing or the account does not exist"},
	90009: {ClassPermanent, "request needs the App administrator"},
	90054: {ClassPermanent, "invalid MsgKey"},
	90992: {ClassRetry, "internal server error, retry"},
	90994: {ClassRetry, "internal server error, retry"},
	90995: {ClassRetry, "internal server error, retry"},
	91000: {ClassRetry, "internal server error, retry"},

	// Public codes (60000–79999).
	60002: {ClassPermanent, "invalid HTTP URL"},
	60003: {ClassPermanent, "request body is not valid JSON"},
	60004: {ClassAuth, "account or signature in the URL or body is wrong"},
	60005: {ClassAuth, "account or signature in the URL or body is wrong"},
	60006: {ClassPermanent, "SDKAppID is invalid"},
	60007: {ClassThrottled, "REST API call frequency over the limit"},
	60008: {ClassRetry, "service timeout or bad HTTP format, retry"},
	60009: {ClassPermanent, "invalid resource URL"},
	60010: {ClassPermanent, "request needs the App administrator"},
	60011: {ClassThrottled, "SDKAppID request frequency over the limit"},
	60012: {ClassPermanent, "sdkappid missing from the request"},
	60013: {ClassRetry, "response JSON could not be parsed, retry"},
	60014: {ClassRetry, "account swap timed out, retry"},
	60015: {ClassPermanent, "account must be a string"},
	60016: {ClassPermanent, "SDKAppID is disabled"},
	60017: {ClassPermanent, "request is disabled"},
	60018: {ClassThrottled, "requests too frequent, retry later"},
	60019: {ClassThrottled, "requests too frequent, retry later"},
	60020: {ClassPermanent, "package expired or not available"},
	60021: {ClassPermanent, "caller IP not allowed"},
	70001: {ClassAuth, "UserSig expired"},
	70002: {ClassAuth, "UserSig is empty"},
	70003: {ClassAuth, "UserSig is invalid"},
	70004: {ClassAuth, "UserSig is invalid"},
	70005: {ClassAuth, "UserSig is invalid, generate a new one"},
	70009: {ClassPermanent, "UserSig verification failed: wrong key"},
	70013: {ClassPermanent, "identifier does not match the UserSig's user"},
	70014: {ClassPermanent, "SDKAppID does not match the UserSig's"},
	70016: {ClassPermanent, "key not found for this SDKAppID (wrong region?)"},
	70020: {ClassPermanent, "SDKAppID not found (wrong region?)"},
	70050: {ClassThrottled, "too many UserSig verifications, retry after a minute"},
	70051: {ClassPermanent, "account is blacklisted"},
	70107: {ClassPermanent, "user was not imported"},
	70169: {ClassRetry, "internal timeout, retry"},
	70202: {ClassRetry, "internal timeout, retry"},
	70206: {ClassPermanent, "illegal batch size"},
	70402: {ClassPermanent, "invalid parameter"},
	70403: {ClassPermanent, "request needs the App administrator"},
	70500: {ClassRetry, "internal server error, retry"},
	80001: {ClassPermanent, "content blocked by the security filter"},
	80002: {ClassPermanent, "message too long (over 8 KB)"},
}

// Classify returns the class of a response's ErrorCode or an item's RetCode.
// 0 is ClassOK, 20023 ClassDone; documented transient, frequency and
// signature codes are ClassRetry, ClassThrottled and ClassAuth; every other
// code, documented or not, is ClassPermanent.
func Classify(code int) Class {
	if info, ok := codes[code]; ok {
		return info.class
	}
	return ClassPermanent
}

// Describe returns the documented meaning of a code, for reports, or
// "undocumented error code" for a code the table does not know.
func Describe(code int) string {
	if info, ok := codes[code]; ok {
		return info.desc
	}
	return "undocumented error code"
}

// IsNotFound reports whether code says the message to recall does not exist:
// 10030 (group) or 20022 (one-to-one). It may have expired, been deleted, or
// (for groups) been recalled already.
func IsNotFound(code int) bool { return code == 10030 || code == 20022 }

// IsGone reports whether code says a history read's group or account does
// not exist (10010, 10015, 90003, 90008): there is nothing to read there.
func IsGone(code int) bool {
	switch code {
	case 10010, 10015, 90003, 90008:
		return true
	}
	return false
}

// TargetRefused reports whether err is IM refusing, for good, a call about
// one group, topic or account (a permanent code that says nothing of the
// app's configuration: no such group, topic or account, a group type
// without history): a call about another one may succeed. A history read
// of a target named by a callback (which anyone holding a signed URL can
// forge) fails this way on that target alone.
func TargetRefused(err error) bool {
	var te *Error
	if !errors.As(err, &te) || te.Code == 0 {
		return false
	}
	if _, appWide := AppWideOf(err); appWide {
		return false
	}
	return Classify(te.Code) == ClassPermanent
}

// IsDone reports whether code says the message was already recalled (20023).
func IsDone(code int) bool { return code == 20023 }
