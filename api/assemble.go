package api

import (
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynq/x/metrics"
	"github.com/hibiken/asynqmon"
	"github.com/imrecall/imrecall/jobs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry is the Prometheus registry serve's /metrics shows: the Go
// and process collectors, asynq's queue metrics (read through insp) and
// the jobs' progress.
func NewRegistry(insp *asynq.Inspector, store *jobs.Store) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		metrics.NewQueueMetricsCollector(insp), NewJobCollector(store))
	return reg
}

// AddMonitor sets Monitor and MonitorReadOnly to the asynq dashboard of
// the queues at opt, under /monitor; the returned func closes both.
func (c *Config) AddMonitor(opt asynq.RedisConnOpt) (closeAll func()) {
	full := asynqmon.New(asynqmon.Options{RootPath: "/monitor", RedisConnOpt: opt})
	ro := asynqmon.New(asynqmon.Options{RootPath: "/monitor", RedisConnOpt: opt, ReadOnly: true})
	c.Monitor, c.MonitorReadOnly = full, ro
	return func() {
		_ = ro.Close()
		_ = full.Close()
	}
}
