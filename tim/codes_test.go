package tim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	want := map[Class][]int{
		ClassOK:   {0},
		ClassDone: {20023},
		ClassRetry: {10002, 91000, 60008, 60013, 60014, 70169, 70202, 70500, 20004, 20005,
			90992, 90994, 90995},
		ClassThrottled: {60007, 60011, 60018, 60019, 70050, 10006, 10023},
		ClassAuth:      {70001, 70002, 70003, 70004, 70005, 60004, 60005, 20002},
		ClassPermanent: {10030, 10031, 10032, 10033, 10041, 20022, 90054, 10004, 10010, 10015,
			90001, 90003, 90008, 90009, 10003, 10007, 10018, 60002, 60003, 60006, 60009, 60010,
			60012, 60015, 60016, 60017, 60020, 60021, 70009, 70013, 70014, 70016, 70020, 70051,
			70107, 70206, 70402, 70403, 80001, 80002,
			// undocumented codes
			1, -1, 12345, 99999},
	}
	seen := map[int]bool{}
	for class, list := range want {
		for _, code := range list {
			seen[code] = true
			t.Run(fmt.Sprintf("%s/%d", class, code), func(t *testing.T) {
				if got := Classify(code); got != class {
					t.Errorf("Classify(%d) = %v, want %v", code, got, class)
				}
			})
		}
	}
	// Every code in the table is covered above, so a new entry needs a test.
	for code := range codes {
		if !seen[code] {
			t.Errorf("code %d is in the table but not in this test", code)
		}
	}
}

func TestClassString(t *testing.T) {
	t.Parallel()
	for c, want := range map[Class]string{
		ClassOK: "ok", ClassDone: "done", ClassRetry: "retry", ClassThrottled: "throttled",
		ClassAuth: "auth", ClassPermanent: "permanent", Class(42): "Class(42)",
	} {
		if got := c.String(); got != want {
			t.Errorf("Class(%d).String() = %q, want %q", int(c), got, want)
		}
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code int
		want string
	}{
		{0, "success"},
		{10030, "message to recall does not exist"},
		{20023, "message was already recalled"},
		{60007, "REST API call frequency over the limit"},
		{70001, "UserSig expired"},
		{4242, "undocumented error code"},
	}
	for _, tt := range tests {
		if got := Describe(tt.code); got != tt.want {
			t.Errorf("Describe(%d) = %q, want %q", tt.code, got, tt.want)
		}
	}
	for code, info := range codes {
		if info.desc == "" {
			t.Errorf("code %d has no description", code)
		}
	}
}

func TestIsNotFoundIsDone(t *testing.T) {
	t.Parallel()
	for _, code := range []int{0, 10030, 20022, 20023, 10031, 91000} {
		wantNF := code == 10030 || code == 20022
		if got := IsNotFound(code); got != wantNF {
			t.Errorf("IsNotFound(%d) = %v, want %v", code, got, wantNF)
		}
		if got := IsDone(code); got != (code == 20023) {
			t.Errorf("IsDone(%d) = %v, want %v", code, got, code == 20023)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassOf(t *testing.T) {
	t.Parallel()
	api := "group_msg_recall"
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, ClassOK},
		{"code permanent", &Error{API: api, Code: 10030}, ClassPermanent},
		{"code done", &Error{API: api, Code: 20023}, ClassDone},
		{"code throttled", &Error{API: api, Code: 60007}, ClassThrottled},
		{"code auth", &Error{API: api, Code: 70001}, ClassAuth},
		{"code retry wrapped", fmt.Errorf("recall: %w", &Error{API: api, Code: 91000}), ClassRetry},
		{"http 502", &Error{API: api, HTTPStatus: 502, Err: fmt.Errorf("%w 502", ErrHTTPStatus)}, ClassRetry},
		{"http 503", &Error{API: api, HTTPStatus: 503, Err: fmt.Errorf("%w 503", ErrHTTPStatus)}, ClassRetry},
		{"http 408", &Error{API: api, HTTPStatus: 408, Err: fmt.Errorf("%w 408", ErrHTTPStatus)}, ClassRetry},
		{"http 429", &Error{API: api, HTTPStatus: 429, Err: fmt.Errorf("%w 429", ErrHTTPStatus)}, ClassThrottled},
		{"http 404", &Error{API: api, HTTPStatus: 404, Err: fmt.Errorf("%w 404", ErrHTTPStatus)}, ClassPermanent},
		{"timeout", &Error{API: api, Err: &url.Error{Op: "Post", URL: "x", Err: context.DeadlineExceeded}}, ClassRetry},
		{"net timeout", &Error{API: api, Err: &url.Error{Op: "Post", URL: "x", Err: timeoutErr{}}}, ClassRetry},
		{"conn refused", &Error{API: api, Err: &url.Error{Op: "Post", URL: "x", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}}, ClassRetry},
		{"canceled", &Error{API: api, Err: context.Canceled}, ClassRetry},
		{"malformed", &Error{API: api, HTTPStatus: 200, Err: fmt.Errorf("%w: x", ErrMalformedResponse)}, ClassRetry},
		{"too large", &Error{API: api, HTTPStatus: 200, Err: fmt.Errorf("%w: x", ErrBodyTooLarge)}, ClassPermanent},
		{"invalid", &Error{API: api, Err: fmt.Errorf("%w: x", ErrInvalidRequest)}, ClassPermanent},
		{"incomplete", &Error{API: api, Err: fmt.Errorf("%w: x", ErrIncompleteResult)}, ClassRetry},
		{"gate throttled", &Error{API: api, Err: fmt.Errorf("gate: %w", fmt.Errorf("wait 3s: %w", ErrThrottled))}, ClassThrottled},
		{"gate other", &Error{API: api, Err: fmt.Errorf("gate: %w", errors.New("redis down"))}, ClassRetry},
		{"plain error", errors.New("boom"), ClassRetry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ClassOf(tt.err); got != tt.want {
				t.Errorf("ClassOf(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{API: "group_msg_recall", Code: 10010, Info: "group not found"},
			"tim group_msg_recall: ErrorCode 10010 (group does not exist or was dissolved): group not found"},
		{&Error{API: "sendmsg", HTTPStatus: 502, Err: fmt.Errorf("%w 502", ErrHTTPStatus)},
			"tim sendmsg: HTTP 502: unexpected HTTP status 502"},
		{&Error{API: "sendmsg", Err: context.DeadlineExceeded}, "tim sendmsg: context deadline exceeded"},
		{&Error{API: "sendmsg"}, "tim sendmsg: unknown error"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if CodeOf(fmt.Errorf("x: %w", tests[0].err)) != 10010 || CodeOf(errors.New("x")) != 0 {
		t.Error("CodeOf does not find the wrapped code")
	}
	if !(&Error{Err: context.DeadlineExceeded}).Timeout() || (&Error{Code: 1}).Timeout() {
		t.Error("Timeout() wrong")
	}
}

func TestAPIs(t *testing.T) {
	t.Parallel()
	if got, want := GroupMsgRecall.Path(), "/v4/group_open_http_svc/group_msg_recall"; got != want {
		t.Errorf("Path() = %q, want %q", got, want)
	}
	if got := AdminMsgWithdraw.Name(); got != "admin_msgwithdraw" {
		t.Errorf("Name() = %q", got)
	}
	names := map[string]bool{}
	for _, a := range AllAPIs {
		if a.Service == "" || a.Command == "" || names[a.Name()] {
			t.Errorf("bad or duplicate API %v", a)
		}
		names[a.Name()] = true
	}
	if len(AllAPIs) != 15 {
		t.Errorf("len(AllAPIs) = %d, want 15", len(AllAPIs))
	}
}
