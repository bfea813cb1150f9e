package serveproc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/msgindex"
)

// TestCheckIndex: an index without a callback token is refused unless
// insecure, and each bad confirmer or heartbeat setting names its flag.
func TestCheckIndex(t *testing.T) {
	t.Parallel()
	good := msgindex.ServiceConfig{ConfirmRate: 5, ConfirmEvery: time.Second, Heartbeat: time.Second}
	for _, c := range []struct {
		index, insecure bool
		token           string
		mod             func(*msgindex.ServiceConfig)
		want            string // "" for no error
	}{
		{index: true, token: "t", want: ""},
		{index: true, insecure: true, want: ""},
		{index: false, want: ""},
		{index: true, want: "no callback token"},
		{token: "t", mod: func(s *msgindex.ServiceConfig) { s.Heartbeat = 0 }, want: "--index-heartbeat"},
		{token: "t", mod: func(s *msgindex.ServiceConfig) { s.ConfirmRate = -1 }, want: "--confirm-rate"},
		{token: "t", mod: func(s *msgindex.ServiceConfig) { s.ConfirmEvery = 0 }, want: "--confirm-every"},
	} {
		s := good
		if c.mod != nil {
			c.mod(&s)
		}
		err := CheckIndex(c.index, c.insecure, c.token, s)
		var ie *InputError
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v, want none", c, err)
		case c.want != "" && (!errors.As(err, &ie) || !strings.HasPrefix(err.Error(), c.want)):
			t.Errorf("CheckIndex = %v, want an InputError starting %q", err, c.want)
		}
	}
}
