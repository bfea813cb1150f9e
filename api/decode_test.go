package api

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/imrecall/imrecall/jobs"
)

// TestDecodeRefusesTrailingDataAndRepeatedKeys: a body with anything but
// whitespace after its JSON object, a key given twice, or a field's name
// in another case is answered 400 naming the problem, and creates no job
// (encoding/json would take the last of the repeated keys: true, true,
// false was a real job).
func TestDecodeRefusesTrailingDataAndRepeatedKeys(t *testing.T) {
	b := setup(t, nil)
	const msgs = `"messages":[{"GroupId":"g","MsgSeq":1}]`
	wantRefused(t, b, []refusal{
		{"/v1/jobs", `{"kind":"recall","reason":"x","dry_run":true,` + msgs + `} ]`, `data after the JSON object at byte 86: "]"`},
		{"/v1/jobs", `{"kind":"recall","reason":"x","dry_run":true,` + msgs + `}}}`, `data after the JSON object at byte 85: "}}"`},
		{"/v1/jobs", `{"kind":"recall","reason":"x","dry_run":true,` + msgs + "}\n,", "data after the JSON object"},
		{"/v1/jobs", `{"kind":"recall","reason":"x","dry_run":true,"dry_run":true,"dry_run":false,` + msgs + `}`, `key "dry_run" appears twice`},
		{"/v1/jobs", `{"kind":"recall","reason":"x","Dry_Run":true,"dry_run":false,` + msgs + `}`, `key "Dry_Run": the field is "dry_run"`},
		{"/v1/jobs", `{"kind":"recall","reason":"x","dry_run":true,"DRY_RUN":false,` + msgs + `}`, `keys "dry_run" and "DRY_RUN" differ only by case`},
		{"/v1/jobs", `{"kind":"recall","reason":"x","dry_run":false,"ſource":"list",` + msgs + `}`, `key "ſource": the field is "source"`},
		{"/v1/jobs", `{"kind":"recall","reason":"x","messages":[{"GroupId":"g","MsgSeq":1},{"GroupId":"g","MsgSeq":2,"MsgSeq":3}]}`, `key "messages[1].MsgSeq" appears twice`},
		{"/v1/jobs", `{"kind":"recall","reason":"x","messages":[{"GroupID":"g","MsgSeq":1}]}`, `key "messages[0].GroupID": the field is "GroupId"`},
		{"/v1/schedules", `{"name":"s","cron":"@daily","request":{"kind":"purge_user","user":"u","reason":"x","user":"v"}}`, `key "request.user" appears twice`},
		{"/v1/schedules", `{"name":"s","cron":"@daily","Name":"t","request":{"kind":"purge_user","user":"u","reason":"x"}}`, `keys "name" and "Name" differ only by case`},
		{"/v1/schedules", `{"name":"s","cron":"@daily","request":{"kind":"purge_user","user":"u","reason":"x"}}]`, "data after the JSON object"},
		{"/v1/jobs/20261122T230512Z-9f3a1c2b/cancel", `{"reason":"x","reason":"y"}`, `key "reason" appears twice`},
	})

	// Whitespace after the object is fine, and so are keys a map holds.
	var dry CreateJobResponse
	if got := b.call("POST", "/v1/jobs", adminSecret, `{"kind":"recall","reason":"x","dry_run":true,`+msgs+"} \r\n\t", &dry); got != http.StatusOK || !dry.DryRun {
		t.Fatalf("trailing whitespace: HTTP %d %+v", got, dry)
	}
}

// TestTypeErrorNamesTheElement: a value of the wrong type is answered 400
// naming it by its path, with its index in an array: encoding/json names
// the field alone ("messages.MsgSeq"), which in a request of 100,000
// messages does not say which one.
func TestTypeErrorNamesTheElement(t *testing.T) {
	b := setup(t, nil)
	many := strings.Repeat(`{"GroupId":"g","MsgSeq":1},`, 1000)
	wantRefused(t, b, []refusal{
		{"/v1/jobs", `{"kind":"recall","reason":"x","messages":[` + many + `{"GroupId":"g","MsgSeq":"2"}]}`, `field messages[1000].MsgSeq: want int64, got JSON string`},
		{"/v1/jobs", `{"kind":"recall","reason":"x","messages":[{"GroupId":"g","MsgSeq":1},{"GroupId":"g","MsgSeq":1e400}]}`, `field messages[1].MsgSeq: want int64, got JSON number 1e400`},
		{"/v1/jobs", `{"kind":"recall","reason":"x","messages":[{"GroupId":"g","MsgSeq":1},{"GroupId":["g"],"MsgSeq":1}]}`, `field messages[1].GroupId: want string, got JSON array`},
		{"/v1/jobs", `{"kind":"purge_user","reason":"x","user":"u","peers":["a","b",7]}`, `field peers[2]: want string, got JSON number`},
		{"/v1/jobs", `{"kind":"purge_group","reason":"x","groups":["g"],"seq_from":{"a":1}}`, `field seq_from: want int64, got JSON object`},
		{"/v1/schedules", `{"name":"s","cron":"@daily","request":{"kind":"purge_group","reason":"x","groups":["g",["h"]]}}`, `field request.groups[1]: want string, got JSON array`},
	})
}

// refusal is a POST the API must answer 400 naming want.
type refusal struct{ path, body, want string }

// wantRefused posts each refusal as an admin and checks that it is answered
// 400 naming its want, and that no job was created.
func wantRefused(t *testing.T, b *bundle, cases []refusal) {
	t.Helper()
	for _, c := range cases {
		var e apiError
		if got := b.call("POST", c.path, adminSecret, c.body, &e); got != http.StatusBadRequest || !strings.Contains(e.Error, c.want) {
			t.Errorf("POST %s %.200s: HTTP %d %q, want 400 naming %q", c.path, c.body, got, e.Error, c.want)
		}
	}
	var list []jobs.Job
	if b.call("GET", "/v1/jobs", readSecret, nil, &list); len(list) != 0 {
		t.Fatalf("refused requests created jobs: %+v", list)
	}
}

// TestCheckKeysFollowsTheTarget: maps and interfaces may hold keys that
// differ by case; they may not repeat one. Fields of embedded structs are
// the struct's own.
func TestCheckKeysFollowsTheTarget(t *testing.T) {
	type Inner struct {
		Code string `json:"code"`
	}
	type outer struct {
		Inner
		Labels map[string]any `json:"labels"`
		Any    any            `json:"any"`
		Skip   string         `json:"-"`
		Plain  int
	}
	for _, c := range []struct {
		body, want string // want "": accepted
	}{
		{`{"code":"a","labels":{"k":1,"K":2},"any":{"x":{"y":1,"Y":2}},"Plain":1}`, ""},
		{`{"labels":{"k":1,"k":2}}`, `key "labels.k" appears twice`},
		{`{"any":[{"x":1},{"x":1,"x":2}]}`, `key "any[1].x" appears twice`},
		{`{"Code":"a"}`, `key "Code": the field is "code"`},
		{`{"plain":1}`, `key "plain": the field is "Plain"`},
		{`{"code":"a","CODE":"b"}`, `keys "code" and "CODE" differ only by case`},
	} {
		err := checkKeys([]byte(c.body), reflect.TypeFor[*outer]())
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.body, err, c.want)
		}
	}
}
