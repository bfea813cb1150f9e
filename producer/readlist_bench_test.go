package producer

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// listFile is a list file of n lines shaped like the after-send callbacks,
// one in 20 a one-to-one message.
func listFile(n int) []byte {
	var buf bytes.Buffer
	for i := range n {
		if i%20 == 0 {
			fmt.Fprintf(&buf, `{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"spammer1","To_Account":"peer%d","MsgKey":"%d_%d_%d","MsgTime":1700000000}`+"\n", i%25, i, 1000+i, 1700000000+i)
			continue
		}
		fmt.Fprintf(&buf, `{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":"@TGS#group%d","From_Account":"spammer1","MsgSeq":%d,"MsgTime":1700000000}`+"\n", i%200, i)
	}
	return buf.Bytes()
}

// BenchmarkReadList measures the read of a list file: recall file checks
// the whole file so before it plans (the job's lead-in, docs/BENCHMARKS.md).
func BenchmarkReadList(b *testing.B) {
	const lines = 10000
	data := listFile(lines)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		err := ReadList(context.Background(), bytes.NewReader(data), "list.jsonl", func(int, Message) error { n++; return nil })
		if err != nil || n != lines {
			b.Fatalf("read %d of %d: %v", n, lines, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*lines), "ns/line")
}
