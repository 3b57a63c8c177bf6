package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
)

// PrefixCompact holds compaction debt: PrefixCompact | SHA-256(value)[:16]
// → value = uvarint len(lo) | lo | hi, one key span whose deleted values
// must leave the SSTs. Keys are derived from the span, so any number of
// Compactors on one store never overwrite each other's debt, and a span
// staged twice is one record.
const PrefixCompact byte = 0x04

// Compactor forces deleted values out of the store's files, off the
// caller's path. An eraser stages the spans it deleted into its own
// synced batch (Stage), so the debt is durable exactly when the deletion
// is; Run compacts the debt in the background: one flush, then every
// span through every level, then the debt records are deleted. A debt
// left by a crash is compacted after the next start.
//
// Why not compact in the eraser: each Pebble manual compaction of a
// point runs level by level, and the flushed L0 file of a busy store
// spans every key family, so its first compaction rewrites much of the
// base level. Three erasers doing that in turn took seconds per request
// in a store of a million people; done once for all the spans of every
// request that arrived meanwhile, it is paid once.
type Compactor struct {
	db   *pebble.DB
	log  *slog.Logger
	mu   sync.Mutex
	wake chan struct{}
	idle chan struct{} // closed when no debt is left; replaced on Stage

	pending   prometheus.Gauge
	compacted prometheus.Counter
	seconds   prometheus.Histogram
}

// NewCompactor opens the debt of db; reg and log may be nil.
func NewCompactor(db *pebble.DB, reg prometheus.Registerer, log *slog.Logger) (*Compactor, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Compactor{db: db, log: log, wake: make(chan struct{}, 1), idle: make(chan struct{}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cdp_engine_compaction_debt_spans",
			Help: "Key spans of erased data not yet compacted out of the store's files."}),
		compacted: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_engine_compaction_debt_compacted_total",
			Help: "Key spans of erased data compacted out of the store's files."}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cdp_engine_compaction_debt_seconds",
			Help: "Duration of one pass over the compaction debt (flush and every span).", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
	}
	if reg != nil {
		for _, m := range []prometheus.Collector{c.pending, c.compacted, c.seconds} {
			if err := reg.Register(m); err != nil {
				return nil, err
			}
		}
	}
	spans, err := c.debt()
	if err != nil {
		return nil, err
	}
	if n := len(spans); n > 0 {
		c.pending.Set(float64(n))
	} else {
		close(c.idle)
	}
	return c, nil
}

type debtSpan struct{ key, lo, hi []byte }

// Stage adds the span [lo, hi) to the debt in w, the batch that deletes
// it. Call Staged after w committed.
func (c *Compactor) Stage(w *pebble.Batch, lo, hi []byte) error {
	v := binary.AppendUvarint(nil, uint64(len(lo)))
	v = append(append(v, lo...), hi...)
	sum := sha256.Sum256(v)
	return w.Set(append([]byte{PrefixCompact}, sum[:16]...), v, nil)
}

// Add records spans in a synced batch of their own (for erasers whose
// deletion committed already; a crash before Add is covered by the
// caller retrying the erasure) and wakes Run.
func (c *Compactor) Add(spans ...[2][]byte) error {
	if len(spans) == 0 {
		return nil
	}
	w := c.db.NewBatch()
	defer w.Close()
	for _, s := range spans {
		if err := c.Stage(w, s[0], s[1]); err != nil {
			return err
		}
	}
	if err := w.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("cannot record compaction debt: %w", err)
	}
	c.Staged()
	return nil
}

// Staged tells the compactor that spans were committed: it wakes Run.
func (c *Compactor) Staged() {
	c.mu.Lock()
	select {
	case <-c.idle:
		c.idle = make(chan struct{})
	default:
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Idle returns a channel closed once no debt is left (as of the last
// pass); tests and benchmarks wait on it.
func (c *Compactor) Idle() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idle
}

// Run compacts the debt whenever spans are staged, and every interval
// (a retry after an error, and debt left by a previous run), until ctx
// is done.
func (c *Compactor) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		// A failed pass keeps its debt: retried at the next tick.
		if err := c.CompactNow(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("compaction of erased data failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.wake:
		case <-t.C:
		}
	}
}

// CompactNow pays the whole debt: one flush (the memtable and the WAL
// files that held the deleted values become obsolete), each span merged
// with those it overlaps compacted through every level, then the debt
// records deleted.
func (c *Compactor) CompactNow(ctx context.Context) error {
	spans, err := c.debt()
	if err != nil || len(spans) == 0 {
		if err == nil {
			c.markIdle()
		}
		return err
	}
	c.pending.Set(float64(len(spans)))
	start := time.Now()
	if err := c.db.Flush(); err != nil {
		return fmt.Errorf("cannot flush before compacting erased data: %w", err)
	}
	slices.SortFunc(spans, func(a, b debtSpan) int { return bytes.Compare(a.lo, b.lo) })
	var runs [][2][]byte
	for _, s := range spans {
		if n := len(runs); n > 0 && bytes.Compare(s.lo, runs[n-1][1]) <= 0 {
			if bytes.Compare(s.hi, runs[n-1][1]) > 0 {
				runs[n-1][1] = s.hi
			}
			continue
		}
		runs = append(runs, [2][]byte{s.lo, s.hi})
	}
	for _, r := range runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.db.Compact(r[0], r[1], false); err != nil {
			return fmt.Errorf("cannot compact erased data: %w", err)
		}
	}
	w := c.db.NewBatch()
	defer w.Close()
	for _, s := range spans {
		if err := w.Delete(s.key, nil); err != nil {
			return err
		}
	}
	if err := w.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("cannot clear compaction debt: %w", err)
	}
	c.compacted.Add(float64(len(spans)))
	c.seconds.Observe(time.Since(start).Seconds())
	left, err := c.debt()
	if err == nil {
		c.pending.Set(float64(len(left)))
		if len(left) == 0 {
			c.markIdle()
		}
	}
	return err
}

func (c *Compactor) markIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.idle:
	default:
		close(c.idle)
	}
}

func (c *Compactor) debt() ([]debtSpan, error) {
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: []byte{PrefixCompact}, UpperBound: []byte{PrefixCompact + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []debtSpan
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		n, w := binary.Uvarint(v)
		if len(k) != 17 || w <= 0 || uint64(len(v)-w) < n {
			return nil, errors.New("engine: corrupt compaction debt record")
		}
		v = v[w:]
		out = append(out, debtSpan{key: slices.Clone(k), lo: slices.Clone(v[:n]), hi: slices.Clone(v[n:])})
	}
	return out, it.Error()
}
