package audience

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	changes *prometheus.CounterVec
	erased  prometheus.Counter
	byKey   map[[2]string]prometheus.Counter
}

// WithRegisterer registers the store's metrics on reg (default: none):
//
//	cdp_segments_audience_changes_total{cause,kind}  entered/exited records (kind enter|exit)
//	cdp_segments_audience_erased_total               profiles erased (Erase)
//	cdp_segments_audience_evaluations_total          audience evaluations of one profile
//	cdp_segments_audience_traits_dropped_total       identify events not applied (max_trait_bytes)
//	cdp_segments_audience_profiles                   profiles known to the store
//	cdp_segments_audience_count                      audiences defined
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(s *Store) { s.reg = reg }
}

func (s *Store) registerMetrics() error {
	m := &metrics{
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_segments_audience_changes_total",
			Help: "Audience entered/exited records by cause (event, merge, sweep, backfill, delete, erase, rectify) and kind (enter, exit)."}, []string{"cause", "kind"}),
		erased: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_segments_audience_erased_total",
			Help: "Profiles erased from the audience store (privacy erasure)."}),
		byKey: map[[2]string]prometheus.Counter{},
	}
	s.m = m
	if s.reg == nil {
		return nil
	}
	cs := []prometheus.Collector{
		m.changes,
		m.erased,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cdp_segments_audience_evaluations_total",
			Help: "Audience evaluations of one profile."}, func() float64 { return float64(s.evalsCtr.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cdp_segments_audience_traits_dropped_total",
			Help: "Identify events whose traits were not applied because the profile's traits would exceed max_trait_bytes."},
			func() float64 { return float64(s.dropped.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cdp_segments_audience_profiles",
			Help: "Profiles known to the audience store."}, func() float64 { return float64(s.Known()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cdp_segments_audience_count",
			Help: "Audiences defined."}, func() float64 { s.mu.RLock(); defer s.mu.RUnlock(); return float64(len(s.auds)) }),
	}
	for _, c := range cs {
		if err := s.reg.Register(c); err != nil {
			return fmt.Errorf("cannot register audience metrics: %w", err)
		}
	}
	return nil
}

// count adds chg to the change counters (under the store's lock).
func (m *metrics) count(chg []Change) {
	for i := range chg {
		kind := "exit"
		if chg[i].Entered {
			kind = "enter"
		}
		k := [2]string{chg[i].Cause, kind}
		c := m.byKey[k]
		if c == nil {
			c = m.changes.WithLabelValues(k[0], k[1])
			m.byKey[k] = c
		}
		c.Inc()
	}
}
