package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/imrecall/imrecall/producer"
)

// FuzzDecodeJobRequest feeds hostile bodies to the API's decoder and the
// checks a job request goes through before anything is written: they must
// answer an error or a valid request, never panic.
func FuzzDecodeJobRequest(f *testing.F) {
	f.Add([]byte(`{"kind":"recall","reason":"x","messages":[{"GroupId":"g","MsgSeq":1},{"From_Account":"a","To_Account":"b","MsgKey":"1_2_3"}]}`))
	f.Add([]byte(`{"kind":"purge_user","reason":"x","user":"u","since":"90d","until":"2026-11-22 14:00","source":"index"}`))
	f.Add([]byte(`{"kind":"purge_group","reason":"x","groups":["g"],"seq_from":1,"seq_to":1e400}`))
	f.Add([]byte(`{"messages":[{"MsgSeq":-9223372036854775808}]}`))
	f.Add([]byte(`[{"kind":null}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/v1/jobs", bytes.NewReader(body))
		var req CreateJobRequest
		if err := decode(httptest.NewRecorder(), r, MaxJobBody, &req); err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		for _, m := range req.Messages {
			msg := producer.Message{GroupID: m.GroupID, TopicID: m.TopicID, MsgSeq: m.MsgSeq, From: m.From, To: m.To, MsgKey: m.MsgKey}
			if err := msg.Validate(); err == nil && msg.GroupID != "" && msg.MsgSeq <= 0 {
				t.Fatalf("accepted %+v", msg)
			}
		}
		s := &Server{now: fixedNow}
		_, _ = s.window(req)
		_, _ = ParseTokens(strings.NewReader(req.Reason), "fuzz")
	})
}
