package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/imrecall/imrecall"
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
		if err := decodeRequest(httptest.NewRecorder(), r, MaxJobBody, &req); err != nil {
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
		if _, err := imrecall.RequestOf(req); err != nil && err.Error() == "" {
			t.Fatal("an empty error")
		}
		_, _ = ParseTokens(strings.NewReader(req.Reason), "fuzz")
	})
}

// FuzzDecodeScheduleRequest feeds hostile bodies to POST /v1/schedules'
// decoder and the schedule's validation: they answer an error or a valid
// schedule holding a typed request, never panic, and a body that names a
// connection setting (at the top or in the request) is never accepted.
func FuzzDecodeScheduleRequest(f *testing.F) {
	f.Add([]byte(`{"name":"nightly","cron":"0 3 * * *","reason":"r","request":{"kind":"purge_group","groups":["g"],"until":"90d"}}`))
	f.Add([]byte(`{"name":"n","cron":"@every 1h","request":{"kind":"purge_user","user":"u","reason":"x","api_base":"http://203.0.113.9"}}`))
	f.Add([]byte(`{"name":"n","cron":"@daily","request":{"kind":"recall","reason":"x","messages":[{"GroupId":"g","MsgSeq":1}]},"ADMIN":"x"}`))
	f.Add([]byte(`{"name":"n","cron":"@daily","args":["purge","user","--peers-file","/proc/self/environ"]}`))
	f.Add([]byte(`{"request":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/v1/schedules", bytes.NewReader(body))
		req, err := decodeSchedule(httptest.NewRecorder(), r)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		sc := producer.Schedule{Name: req.Name, Cron: req.Cron, Request: req.Request, CreatedBy: "fuzz", Reason: req.Reason}
		if sc.Validate() != nil {
			return
		}
		if sc.Request == nil || len(sc.Args) > 0 {
			t.Fatalf("accepted a schedule without a typed request: %+v", sc)
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(body, &top) == nil {
			var inner map[string]json.RawMessage
			_ = json.Unmarshal(top["request"], &inner)
			for _, m := range []map[string]json.RawMessage{top, inner} {
				for k := range m {
					if producer.IsConnectionSetting(k) {
						t.Fatalf("accepted a body naming %q: %s", k, body)
					}
				}
			}
		}
	})
}
