package demo

import (
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/worker"
)

// InProcessWorker is the StartWorker of "imrecall demo": imrecall worker's
// lanes (worker.Server) in this process, logging only errors of asynq.
func InProcessWorker(opt asynq.RedisConnOpt, h *worker.Handler, discover *producer.DiscoverHandler, concurrency int, log *slog.Logger) (func(), error) {
	srv, err := worker.NewServer(worker.ServerConfig{Redis: opt, Handler: h,
		Discovery: asynq.HandlerFunc(discover.Handle), DiscoveryErrors: asynq.ErrorHandlerFunc(discover.HandleError),
		Concurrency: concurrency, Logger: log, LogLevel: asynq.ErrorLevel})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		return nil, err
	}
	return srv.Shutdown, nil
}
