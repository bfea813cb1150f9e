package imclient

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/tim"
)

// TestSlackReachesTheLimiter: the operator's slack is the limiter's (its
// rate is the cap over one second plus the slack, before it knows Redis's
// clock), and a slack out of range is an InputError naming the flag and its
// variable, with no limiter built.
func TestSlackReachesTheLimiter(t *testing.T) {
	_, rdb := redistest.Mini(t)
	cfg := func(slack time.Duration) Config {
		return Config{Redis: rdb, Prefix: "t", Cap: 200, Slack: slack,
			IM: tim.Config{BaseURL: "http://127.0.0.1:1", SDKAppID: 1400000001, Admin: "administrator", SecretKey: tim.Secret(imtest.Secret)}}
	}
	key := limiter.Key{AppID: 1400000001, API: "group_msg_recall"}
	for _, slack := range []time.Duration{limiter.DefaultSlack, 50 * time.Millisecond, MaxSlack} {
		_, lim, err := New(t.Context(), cfg(slack))
		if err != nil {
			t.Fatalf("slack %v: %v", slack, err)
		}
		// Before any reservation the clock's uncertainty is unknown; the
		// rate holds the slack and at most that.
		want := 200 * float64(time.Second) / float64(time.Second+slack)
		if got := lim.Rate(key); got > want || got < want*0.95 {
			t.Errorf("slack %v: Rate = %.2f, want at most %.2f and close to it", slack, got, want)
		}
	}
	for _, slack := range []time.Duration{0, -time.Millisecond, MaxSlack + time.Millisecond} {
		cl, lim, err := New(t.Context(), cfg(slack))
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "--slack (IMRECALL_SLACK)") || cl != nil || lim != nil {
			t.Errorf("slack %v: New = %v, %v, %v; want an InputError naming --slack", slack, cl, lim, err)
		}
	}
}
