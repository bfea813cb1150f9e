package producer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// FuzzReadList: any input gives messages that validate, or an error; never
// a panic.
func FuzzReadList(f *testing.F) {
	for _, s := range []string{
		`{"GroupId":"g","MsgSeq":1}`,
		`{"From_Account":"a","To_Account":"b","MsgKey":"1_2_3"}`,
		"GroupId,MsgSeq,TopicId\ng,5,t\n",
		"From_Account,To_Account,MsgKey\na,b,1_1_1\n",
		`{"GroupId":"g","MsgSeq":1e3}`,
		"\ufeff{\"GroupId\":\"g\",\"MsgSeq\":\"7\"}",
		`{"GroupId":null,"MsgSeq":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = ReadList(context.Background(), bytes.NewReader(b), "fuzz", func(line int, m Message) error {
			if line < 1 {
				t.Fatalf("line %d", line)
			}
			if err := validate(m); err != nil {
				t.Fatalf("delivered an invalid message %+v: %v", m, err)
			}
			if m.GroupID != "" && m.MsgSeq <= 0 {
				t.Fatalf("delivered MsgSeq %d", m.MsgSeq)
			}
			return nil
		})
	})
}

// FuzzParseJSONLine: a list line is read as encoding/json reads it into a
// map (what this package did before fastjson): the same lines accepted, the
// same message from each. Only a line whose bytes are not valid UTF-8 may
// differ (encoding/json replaces the bad bytes in an ID; a list line with
// one is refused).
func FuzzParseJSONLine(f *testing.F) {
	for _, s := range []string{
		`{"GroupId":"g","MsgSeq":1}`,
		`{"GroupId":"g","TopicId":"t","MsgSeq":12,"From_Account":"x"}`,
		`{"From_Account":"a","To_Account":"b","MsgKey":"1_2_3"}`,
		`{"GroupId":"g","MsgSeq":1,"GroupId":"h"}`,
		`{"GroupId":5,"GroupId":"g","MsgSeq":1}`,
		`{"GroupId":"g\u00e9\ud83d\ude00","MsgSeq":"7"}`,
		`{"GroupId":null,"MsgSeq":null,"From_Account":"a\\b","To_Account":"b","MsgKey":"1_2_3"}`,
		`{"groupid":"g","MsgSeq":1}`,
		`{"GroupId":"g","MsgSeq":1} {}`,
		`[{"GroupId":"g","MsgSeq":1}]`,
		`{"GroupId":"g","MsgSeq":01}`,
		`{"GroupId":"g","MsgSeq":1, "X":"\q"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseJSONLine(b)
		if !utf8.Valid(b) {
			return
		}
		want, wantErr := referenceParse(b)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%q: parsed %+v, %v; encoding/json: %+v, %v", b, got, err, want, wantErr)
		}
		if err == nil && got != want {
			t.Fatalf("%q: parsed %+v; encoding/json: %+v", b, got, want)
		}
	})
}

// referenceParse reads a list line with encoding/json, as this package did
// before it read lines with fastjson.
func referenceParse(text []byte) (Message, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(text, &raw); err != nil {
		return Message{}, err
	}
	var m Message
	for i, dst := range []*string{&m.GroupID, &m.TopicID, &m.From, &m.To, &m.MsgKey} {
		v, ok := raw[listFields[i]]
		if !ok || string(v) == "null" {
			continue
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return Message{}, err
		}
	}
	if m.GroupID != "" {
		v, ok := raw["MsgSeq"]
		if !ok {
			return m, errors.New("MsgSeq: required")
		}
		var err error
		if m.MsgSeq, err = parseSeq(string(v)); err != nil {
			return m, err
		}
	}
	return m, validate(m)
}
