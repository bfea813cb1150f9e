package api

import (
	"context"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/prometheus/client_golang/prometheus"
)

// JobCollector exports the progress of recent jobs as
// imrecall_job_messages{job_id, kind, state}: every unfinished job, and
// jobs finished within the last hour, among the newest 200.
type JobCollector struct {
	Store *jobs.Store
	desc  *prometheus.Desc
}

// NewJobCollector returns a collector of store's jobs.
func NewJobCollector(store *jobs.Store) *JobCollector {
	return &JobCollector{Store: store, desc: prometheus.NewDesc("imrecall_job_messages",
		"Messages of recent jobs by state: planned, recalled, dead_lettered, pending.",
		[]string{"job_id", "kind", "state"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *JobCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *JobCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	list, err := c.Store.List(ctx, 200)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, j := range list {
		if j.Finished() && j.FinishedAt != nil && time.Since(*j.FinishedAt) > time.Hour {
			continue
		}
		for state, n := range map[string]int64{"planned": j.Counts.Planned, "recalled": j.Counts.Recalled,
			"dead_lettered": j.Counts.DeadLettered, "pending": j.Counts.Pending} {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), j.ID, j.Kind, state)
		}
	}
}
