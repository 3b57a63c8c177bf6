package privacy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reg        prometheus.Registerer
	requests   *prometheus.CounterVec   // type, status
	duration   *prometheus.HistogramVec // type
	stepErrors *prometheus.CounterVec   // step
	callbacks  *prometheus.CounterVec   // result
	retained   prometheus.Counter
	spared     prometheus.Counter
	steps      *prometheus.HistogramVec // step
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_privacy_requests_total",
			Help: "Privacy request status changes, by request type and the status entered."}, []string{"type", "status"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cdp_privacy_step_seconds",
			Help:    "Duration of each successful step of a request (resolve, suppress, notify, erase:NAME, rectify, export, ...).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"step"}),
		retained: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_privacy_retention_profiles_total",
			Help: "Inactive profiles handed to retention erasure requests."}),
		spared: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_privacy_retention_spared_total",
			Help: "Profiles a retention erasure request left alone: seen again between the sweep that listed them and the request's run."}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cdp_privacy_request_seconds",
			Help:    "Time from submission to completed, by request type (includes any waiting period).",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 12)}, []string{"type"}),
		stepErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_privacy_step_errors_total",
			Help: "Failed request steps (the request is retried), by step: resolve, suppress, notify, erase:NAME, export, ..."}, []string{"step"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_privacy_callbacks_total",
			Help: "Status callbacks, by result: delivered, retried (one failed attempt), failed (given up)."}, []string{"result"}),
	}
}

func (m *metrics) register() error {
	if m.reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.stepErrors, m.callbacks, m.retained, m.spared, m.steps} {
		if err := m.reg.Register(c); err != nil {
			return fmt.Errorf("cannot register privacy metrics: %w", err)
		}
	}
	return nil
}
