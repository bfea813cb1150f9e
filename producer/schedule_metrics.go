package producer

import "github.com/prometheus/client_golang/prometheus"

// SchedulerMetrics counts a scheduler's firings, by schedule and result:
// fired (its task queued), skipped (its previous run had not finished, or
// another scheduler fired it meanwhile: logged and audited too), failed
// (not queued: an error, logged) and refused (a stored schedule the
// scheduler will not fire, counted each time it reads the schedules: a
// spec or request this version refuses, a legacy command line; logged
// once). A schedule skipped at every firing, or never fired, shows here
// before anyone reads the audit log.
type SchedulerMetrics struct {
	firings *prometheus.CounterVec
}

// Firing results, the values of the result label.
const (
	FiringFired   = "fired"
	FiringSkipped = "skipped"
	FiringFailed  = "failed"
	FiringRefused = "refused"
)

// NewSchedulerMetrics registers the scheduler's metrics with reg.
func NewSchedulerMetrics(reg prometheus.Registerer) *SchedulerMetrics {
	m := &SchedulerMetrics{firings: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imrecall_schedule_firings_total",
		Help: "Due times of schedules this scheduler claimed, by schedule and result (fired, skipped, failed); refused: a stored schedule it will not fire, counted at each read of the schedules.",
	}, []string{"schedule", "result"})}
	reg.MustRegister(m.firings)
	return m
}

// count counts one firing of schedule; a nil m counts nothing.
func (m *SchedulerMetrics) count(schedule, result string) {
	if m != nil {
		m.firings.WithLabelValues(schedule, result).Inc()
	}
}
