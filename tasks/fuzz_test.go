package tasks

import (
	"testing"

	"github.com/hibiken/asynq"
)

// FuzzDecode: any payload decodes to a valid task or an error wrapping
// SkipRetry; never a panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"job_id":"j","sdkappid":1,"GroupId":"g","seqs":[1,2]}`))
	f.Add([]byte(`{"job_id":"j","sdkappid":1,"From_Account":"a","To_Account":"b","MsgKey":"1_1_1"}`))
	f.Add([]byte(`{"seqs":[0,-1,1e20]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := DecodeGroupRecall(asynq.NewTask(TypeGroupRecall, b)); err == nil {
			if p.Validate() != nil {
				t.Fatalf("decoded an invalid group recall %+v", p)
			}
		}
		if p, err := DecodeC2CWithdraw(asynq.NewTask(TypeC2CWithdraw, b)); err == nil {
			if p.Validate() != nil {
				t.Fatalf("decoded an invalid withdraw %+v", p)
			}
		}
		_, _ = DecodeDiscover(asynq.NewTask(TypeDiscover, b))
		_, _ = DecodeScheduleRun(asynq.NewTask(TypeScheduleRun, b))
	})
}
