// Package tim is the Tencent Cloud IM (即时通信 IM) REST client used by imrecall.
//
// It does one job: turn typed requests into calls of the admin REST API
//
//	POST {base}/v4/{service}/{command}?sdkappid=&identifier=&usersig=&random=&contenttype=json
//
// and the JSON answers back into typed responses or a *Error. Around that it
// owns what every call needs: the administrator's UserSig (generated with
// tencentyun.GenUserSig, cached, renewed before it expires and once more after
// an auth error code), a keep-alive connection pool, a per-call timeout above
// the server's 3 s, size-limited response bodies, and a Gate consulted before
// every HTTP request so a shared rate limiter sees retries and seeding calls too.
//
// The client does not retry, except once after an auth code with a fresh
// UserSig: retry policy belongs to the caller. To decide what to do with a
// failed call or a failed item, use Classify on a code (ErrorCode, or an item's
// RetCode) or ClassOf on an error; both use the one code table in codes.go.
//
// Secrets stay secret: the SecretKey has the type Secret, whose String,
// LogValue and MarshalJSON redact it, and errors and logs never carry the
// UserSig (the usersig query parameter is stripped from transport errors).
package tim
