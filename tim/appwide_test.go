package tim

import (
	"fmt"
	"strings"
	"testing"
)

func TestAppWideOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
		hint string
	}{
		{&Error{API: "group_msg_recall", HTTPStatus: 200, Code: 70001}, true, "IMRECALL_SECRET_KEY"},
		{fmt.Errorf("wrapped: %w", &Error{Code: 90009}), true, "IMRECALL_ADMIN"},
		{&Error{Code: 70020}, true, "IMRECALL_API_BASE"},
		{&Error{Code: 10002}, false, ""},
		{&Error{Code: 10030}, false, ""},
		{&Error{HTTPStatus: 502}, false, ""},
		{fmt.Errorf("plain"), false, ""},
	} {
		a, ok := AppWideOf(tc.err)
		if ok != tc.want || !strings.Contains(a.Hint, tc.hint) {
			t.Errorf("AppWideOf(%v) = %+v, %v; want %v with hint %q", tc.err, a, ok, tc.want, tc.hint)
		}
		if ok && !strings.HasPrefix(a.Reason(), "paused: IM rejected ") {
			t.Errorf("Reason = %q", a.Reason())
		}
	}
	a, _ := AppWideOf(&Error{Code: 70001})
	if got := a.Reason(); got != "paused: IM rejected the admin credential (70001 UserSig expired): check IMRECALL_SECRET_KEY (and the host's clock), then resume the job" {
		t.Errorf("Reason = %q", got)
	}
}
