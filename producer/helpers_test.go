package producer

import (
	"testing"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
)

// onMiniredis starts a miniredis for one test and returns a job store, a
// task client and a queue inspector on it, closed when the test ends.
func onMiniredis(t *testing.T) (*jobs.Store, *asynq.Client, *asynq.Inspector) {
	t.Helper()
	mr, rdb := redistest.Mini(t)
	opt := asynq.RedisClientOpt{Addr: mr.Addr()}
	client, insp := asynq.NewClient(opt), asynq.NewInspector(opt)
	t.Cleanup(func() { client.Close(); insp.Close() })
	return jobs.NewStore(rdb, ""), client, insp
}
