package engine

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the engine's Prometheus collectors. Every component of the
// pipeline (source, each stage, each sink, the dead-letter sink) is counted
// by one wrapper, observe, instead of counting itself, so every component
// reports the same series:
//
//	cdp_engine_received_total{component}   rows handed to the component
//	cdp_engine_sent_total{component}       rows it passed on (for a sink: wrote)
//	cdp_engine_errors_total{component}     failed calls
//	cdp_engine_batch_seconds{component}    time per batch call
//	cdp_engine_dropped_total{sink,reason}  rows a sink did not get: its filter did not
//	                                       select them, or a stage removed them (Batch.Drops)
//	cdp_engine_dead_letter_total{reason}   rejected records, by reason code
//	cdp_engine_committed_total             batches whose offsets were committed
//	cdp_engine_inflight_batches            batches between source and commit
//	cdp_engine_batch_delay_seconds         from first record to commit
type Metrics struct {
	received, sent, errors *prometheus.CounterVec
	seconds                *prometheus.HistogramVec
	dropped, dead          *prometheus.CounterVec
	recordsDropped         *prometheus.CounterVec
	committed              prometheus.Counter
	inflight               prometheus.Gauge
	delay                  prometheus.Histogram
}

// NewMetrics registers the engine's collectors on reg (a fresh registry
// per runner in tests; prometheus.DefaultRegisterer is not used implicitly).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_engine_received_total", Help: "Rows handed to a pipeline component."}, []string{"component"}),
		sent:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_engine_sent_total", Help: "Rows a pipeline component passed on or wrote."}, []string{"component"}),
		errors:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_engine_errors_total", Help: "Failed batch calls of a pipeline component."}, []string{"component"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cdp_engine_batch_seconds", Help: "Time a component spent on one batch.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)}, []string{"component"}),
		dropped:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_engine_dropped_total", Help: "Events a sink did not get, by reason: its filter did not select them, or a stage removed them from the batch."}, []string{"sink", "reason"}),
		recordsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_engine_records_dropped_total", Help: "Control records a sink that lists their type did not get, by reason: its filter withheld them."}, []string{"sink", "type", "reason"}),
		dead:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_engine_dead_letter_total", Help: "Rejected records sent to the dead-letter sink, by reason."}, []string{"reason"}),
		committed:      prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_engine_committed_total", Help: "Batches whose input offsets were committed."}),
		inflight:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "cdp_engine_inflight_batches", Help: "Batches between the source and the offset commit."}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cdp_engine_batch_delay_seconds", Help: "Time from a batch's first record to its commit.",
			Buckets: prometheus.ExponentialBuckets(1e-3, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.received, m.sent, m.errors, m.seconds, m.dropped, m.recordsDropped, m.dead, m.committed, m.inflight, m.delay)
	}
	return m
}

// PreregisterReasons creates the dead-letter series for every reason with a
// zero value, so dashboards see them before the first rejection.
func (m *Metrics) PreregisterReasons(reasons []Reason) {
	for _, r := range reasons {
		m.dead.WithLabelValues(string(r))
	}
}

// component binds the metric series of one named pipeline component once,
// so the per-batch path does no label lookups.
type component struct {
	name                  string
	received, sent, error prometheus.Counter
	seconds               prometheus.Observer
}

func (m *Metrics) component(name string) *component {
	return &component{
		name:     name,
		received: m.received.WithLabelValues(name),
		sent:     m.sent.WithLabelValues(name),
		error:    m.errors.WithLabelValues(name),
		seconds:  m.seconds.WithLabelValues(name),
	}
}

// observe runs fn for one batch and records rows in, rows out, errors and
// time. fn returns the number of rows it passed on.
func (c *component) observe(ctx context.Context, in int, fn func(ctx context.Context) (int, error)) error {
	start := time.Now()
	c.received.Add(float64(in))
	out, err := fn(ctx)
	c.seconds.Observe(time.Since(start).Seconds())
	if err != nil {
		c.error.Inc()
		return err
	}
	c.sent.Add(float64(out))
	return nil
}
