package producer

import (
	"bytes"
	"context"
	"testing"
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
