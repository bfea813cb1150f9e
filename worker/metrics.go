package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/tim"
)

// Metrics are the worker's Prometheus metrics. The zero value is not usable;
// call NewMetrics.
type Metrics struct {
	calls        *prometheus.CounterVec
	callDuration *prometheus.HistogramVec
	messages     *prometheus.CounterVec
	limiterWait  *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, useful in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imrecall_api_calls_total",
			Help: "Tencent IM API calls by API and outcome code (0, an ErrorCode, timeout, transport).",
		}, []string{"api", "code"}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imrecall_api_call_duration_seconds",
			Help:    "Duration of Tencent IM API calls, limiter wait included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"api"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imrecall_messages_total",
			Help: "Messages that reached a terminal state, by outcome (recalled, or the dead-letter category).",
		}, []string{"outcome"}),
		limiterWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imrecall_limiter_wait_seconds",
			Help:    "Time calls waited on the shared rate limiter, by API.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"api"}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.callDuration, m.messages, m.limiterWait)
	}
	return m
}

func (m *Metrics) call(api, code string, d time.Duration) {
	if m == nil {
		return
	}
	m.calls.WithLabelValues(api, code).Inc()
	m.callDuration.WithLabelValues(api).Observe(d.Seconds())
}

func (m *Metrics) message(outcome string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.messages.WithLabelValues(outcome).Add(float64(n))
}

// ObserveLimiterWait records a limiter wait; wire it to the limiter's observer.
func (m *Metrics) ObserveLimiterWait(api string, waited time.Duration) {
	if m == nil {
		return
	}
	m.limiterWait.WithLabelValues(api).Observe(waited.Seconds())
}

// limiterCollector reports the shared limiter as one process sees it: the
// mean slot interval at the last slot Redis granted per API (1 ÷ it is the
// rate the calls' bounds allow now) and the slots given up because a call
// would have gone late.
type limiterCollector struct {
	lim      *limiter.Limiter
	app      int64
	apis     []string
	interval *prometheus.Desc
	late     *prometheus.Desc
}

// RegisterLimiter adds lim's figures for app's recall and discovery APIs
// to reg: imrecall_limiter_interval_seconds{api} and
// imrecall_limiter_late_slots_total.
func RegisterLimiter(reg prometheus.Registerer, lim *limiter.Limiter, app int64) {
	var apis []string
	for _, a := range tim.AllAPIs {
		apis = append(apis, a.Name())
	}
	reg.MustRegister(&limiterCollector{
		lim: lim, app: app, apis: apis,
		interval: prometheus.NewDesc("imrecall_limiter_interval_seconds",
			"Mean spacing of the shared limiter's slots at the last one granted to this process, by API: 1 s ÷ cap, plus how late the calls a second before were bounded to arrive, ÷ cap.", []string{"api"}, nil),
		late: prometheus.NewDesc("imrecall_limiter_late_slots_total",
			"Slots this process gave up because the call would have gone later than the limiter's tolerance.", nil, nil),
	})
}

func (c *limiterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.interval
	ch <- c.late
}

func (c *limiterCollector) Collect(ch chan<- prometheus.Metric) {
	for _, api := range c.apis {
		if d := c.lim.Interval(limiter.Key{AppID: c.app, API: api}); d > 0 {
			ch <- prometheus.MustNewConstMetric(c.interval, prometheus.GaugeValue, d.Seconds(), api)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.late, prometheus.CounterValue, float64(c.lim.Late()))
}
