package msgindex

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseCallback feeds hostile callback bodies to the parser: it must
// answer an error or a valid entry, never panic, and never accept an entry
// whose fields could corrupt the index's encoding.
func FuzzParseCallback(f *testing.F) {
	now := time.Unix(1_800_000_000, 0).Unix()
	f.Add(CommandGroupAfterSend, []byte(groupBody("u", "@TGS#1", 5, now)))
	f.Add(CommandC2CAfterSend, []byte(c2cBody("u", "v", "1_2_3", now, 0)))
	f.Add(CommandGroupAfterSend, []byte(`{"GroupId":"@TGS#1","From_Account":"u","MsgSeq":1e309,"MsgTime":1}`))
	f.Add(CommandC2CAfterSend, []byte(`{"From_Account":["u"],"To_Account":null,"MsgKey":1}`))
	f.Add(CommandGroupAfterSend, []byte(`{"GroupId":"a\u001fb","From_Account":"u","MsgSeq":1,"MsgTime":1}`))
	f.Add(CommandGroupAfterSend, []byte(`[`))
	f.Fuzz(func(t *testing.T, command string, body []byte) {
		e, _, err := ParseCallback(command, body)
		if err != nil {
			return
		}
		if verr := e.Validate(); verr != nil {
			t.Fatalf("accepted an invalid entry %+v: %v", e, verr)
		}
		member := e.member()
		kind := "c"
		if e.IsGroup() {
			kind = "g"
		}
		back, perr := parseMember(kind, member)
		if perr != nil {
			t.Fatalf("entry %+v does not round-trip: %v", e, perr)
		}
		back.From, back.Time = e.From, e.Time
		if back != e {
			t.Fatalf("round trip: %+v became %+v", e, back)
		}
		if strings.Contains(e.From, sep) {
			t.Fatalf("separator in From_Account %q", e.From)
		}
	})
}
