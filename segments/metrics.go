package segments

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the consent stage. Counters per (purpose, source, status) are
// resolved once and kept, so the event path never formats label values.
type metrics struct {
	cat       *catalogue
	decisions *prometheus.CounterVec
	staleV    *prometheus.CounterVec
	expiredV  *prometheus.CounterVec
	decodeErr *prometheus.CounterVec
	cacheHit  prometheus.Counter
	cacheMiss prometheus.Counter
	merges    prometheus.Counter
	erased    prometheus.Counter
	profilesG *prometheus.GaugeVec

	dec [MaxPurposes][numSources][3]prometheus.Counter
	st  [numSources]prometheus.Counter
	// staleN and decN count stale and applied decisions until
	// flushCounts: a batch has one per row and purpose.
	staleN [numSources]uint64
	decN   [MaxPurposes][numSources][3]uint64
	exp    [MaxPurposes]prometheus.Counter
	hits   uint64
	miss   uint64
}

func newMetrics(reg prometheus.Registerer, c *Consent) (*metrics, error) {
	m := &metrics{cat: c.cat,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_segments_decisions_total",
			Help: "Consent decisions applied to profiles."}, []string{"purpose", "source", "status"}),
		staleV: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_segments_stale_total",
			Help: "Consent decisions ignored because the profile holds a later one."}, []string{"source"}),
		expiredV: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_segments_expired_total",
			Help: "Grants that lapsed at their expiry."}, []string{"purpose"}),
		decodeErr: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_segments_decode_errors_total",
			Help: "Consent fields that could not be decoded (the event carries no consent from them)."}, []string{"format"}),
		cacheHit: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_segments_string_cache_hits_total",
			Help: "TCF/GPP strings found in the decoded-string cache."}),
		cacheMiss: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_segments_string_cache_misses_total",
			Help: "TCF/GPP strings decoded."}),
		merges: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_segments_merges_total",
			Help: "Profile merges whose consent was combined."}),
		erased: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_segments_erased_total",
			Help: "Profiles whose consent state was erased (privacy erasure)."}),
		profilesG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cdp_segments_profiles",
			Help: "Profiles per purpose and effective status (bitmap cardinality)."}, []string{"purpose", "status"}),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{m.decisions, m.staleV, m.expiredV, m.decodeErr, m.cacheHit, m.cacheMiss, m.merges, m.erased, m.profilesG} {
			if err := reg.Register(col); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, fmt.Errorf("cannot register consent metrics: %w", err)
				}
			}
		}
	}
	return m, nil
}

func (m *metrics) decision(bit int, src Source, st Status) { m.decN[bit][src][st]++ }

func (m *metrics) stale(src Source) { m.staleN[src]++ }

// flushCounts adds the counts kept since the last call to the counters;
// the stage calls it at the end of every batch and PUT.
func (m *metrics) flushCounts() {
	for b := m.cat.all; b != 0; b &= b - 1 {
		bit := tz(b)
		for src := range m.decN[bit] {
			for st, n := range m.decN[bit][src] {
				if n == 0 {
					continue
				}
				c := m.dec[bit][src][st]
				if c == nil {
					c = m.decisions.WithLabelValues(m.cat.purposeName(bit), Source(src).String(), Status(st).String())
					m.dec[bit][src][st] = c
				}
				c.Add(float64(n))
				m.decN[bit][src][st] = 0
			}
		}
	}
	for src, n := range m.staleN {
		if n == 0 {
			continue
		}
		if m.st[src] == nil {
			m.st[src] = m.staleV.WithLabelValues(Source(src).String())
		}
		m.st[src].Add(float64(n))
		m.staleN[src] = 0
	}
}

func (m *metrics) expired(bit int) {
	if m.exp[bit] == nil {
		m.exp[bit] = m.expiredV.WithLabelValues(m.cat.purposeName(bit))
	}
	m.exp[bit].Inc()
}

// flushExtractor moves the extractor's counts into the metrics.
func (m *metrics) flushExtractor(x *extractor, seen *[4]uint64) {
	for i, f := range [...]string{"tcf", "gpp", "usp", "json"} {
		if d := x.errs[i] - seen[i]; d > 0 {
			m.decodeErr.WithLabelValues(f).Add(float64(d))
			seen[i] = x.errs[i]
		}
	}
	if x.cache != nil {
		m.cacheHit.Add(float64(x.cache.hits - m.hits))
		m.cacheMiss.Add(float64(x.cache.miss - m.miss))
		m.hits, m.miss = x.cache.hits, x.cache.miss
	}
}

// gauges sets the bitmap cardinalities; the caller holds c.mu.
func (m *metrics) gauges(c *Consent) {
	for b := c.cat.all; b != 0; b &= b - 1 {
		bit := tz(b)
		name := c.cat.purposeName(bit)
		m.profilesG.WithLabelValues(name, "granted").Set(float64(c.granted[bit].GetCardinality()))
		m.profilesG.WithLabelValues(name, "denied").Set(float64(c.denied[bit].GetCardinality()))
	}
}
