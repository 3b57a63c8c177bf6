package identity

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Prometheus metrics of a Graph; see doc.go.
type metrics struct {
	events      *prometheus.CounterVec // result
	refused     *prometheus.CounterVec // reason, type
	dropped     *prometheus.CounterVec // reason, type: values that did not become identifiers
	merges      prometheus.Counter
	created     prometheus.Counter
	added       prometheus.Counter
	erased      prometheus.Counter
	demotions   prometheus.Counter
	cacheHits   *prometheus.CounterVec // cache
	cacheMisses *prometheus.CounterVec // cache
	cacheBytes  *prometheus.GaugeVec   // cache
	ops         *prometheus.CounterVec // kind
	suppressed  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_identity_events_total",
			Help: "Events resolved, by result: resolved, unresolved (no usable identifier), replayed (resolved read-only after a restart), suppressed (dropped: it carried a suppressed identifier)."}, []string{"result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_identity_refused_total",
			Help: "Merges or identifier additions refused, by reason (limit, unique, apart, cap_merges, cap_identifiers) and identifier type."}, []string{"reason", "type"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_identity_values_dropped_total",
			Help: "Identifier values that did not become identifiers, by reason (blocked, invalid, unknown_type) and type."}, []string{"reason", "type"}),
		merges: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_identity_merges_total",
			Help: "Profiles merged into an older profile."}),
		created: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_identity_profiles_created_total",
			Help: "Profiles created."}),
		added: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_identity_identifiers_added_total",
			Help: "Identifiers added to profiles."}),
		erased: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_identity_erased_total",
			Help: "Live profiles erased (each with the profiles merged into it)."}),
		demotions: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_identity_demotions_total",
			Help: "Identifiers dropped from matching because a merge would break a rule."}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_identity_cache_hits_total",
			Help: "Cache hits, by cache (identifier, profile)."}, []string{"cache"}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_identity_cache_misses_total",
			Help: "Cache misses (read from Pebble), by cache (identifier, profile)."}, []string{"cache"}),
		cacheBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cdp_identity_cache_bytes",
			Help: "Estimated memory held by each cache."}, []string{"cache"}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_identity_ops_total",
			Help: "Identity log operations applied, by kind."}, []string{"kind"}),
		suppressed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cdp_identity_suppressed_identifiers",
			Help: "Keyed hashes of suppressed identifiers held: events carrying one are dropped at ingest."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.events, m.refused, m.dropped, m.merges, m.created, m.added,
		m.erased, m.demotions, m.cacheHits, m.cacheMisses, m.cacheBytes, m.ops, m.suppressed} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("cannot register identity metrics: %w", err)
		}
	}
	return m, nil
}
