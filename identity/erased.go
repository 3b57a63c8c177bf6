package identity

import (
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/cdpstream/cdpstream/engine"
)

// ReasonErased is the drop reason of an event whose profile was erased
// while the event was on its way to a sink.
const ReasonErased engine.Reason = "erased"

// markGone adds the profile ids an erasure just committed to the erased
// set.
func (g *Graph) markGone(ids []uint32) {
	if len(ids) == 0 {
		return
	}
	g.goneMu.Lock()
	g.gone.AddMany(ids)
	g.goneN.Store(g.gone.GetCardinality())
	g.goneMu.Unlock()
}

// Erased reports whether pid was erased since the Graph was opened.
func (g *Graph) Erased(pid uint32) bool {
	if g.goneN.Load() == 0 {
		return false
	}
	g.goneMu.RLock()
	defer g.goneMu.RUnlock()
	return g.gone.Contains(pid)
}

// ErasedFilter returns the filter for one sink that keeps what next keeps
// (every row when next is nil) except the rows of profiles erased since
// the Graph was opened, which it drops with reason "erased".
//
// Those rows were resolved before the erasure and were still between the
// identity stage and the sink when it ran: with per-stage goroutines and
// sink queues, up to a few batches. Erase runs first among a privacy
// request's erasers, so from the moment it returns no sink with this
// filter receives the person's events, whether or not it has a consent
// policy. The set lives in memory only: after a restart the uncommitted
// batches are resolved again, and an erased identifier no longer resolves
// to the erased id (ids are never reused).
//
// The cost is one atomic load per batch while nothing was erased (the
// runner then writes the batch unselected when next is nil, see
// engine.AllPasser), and a bitmap lookup per kept row after an erasure.
func (g *Graph) ErasedFilter(next engine.Filter) engine.Filter {
	return &erasedFilter{g: g, next: next}
}

type erasedFilter struct {
	g    *Graph
	next engine.Filter
}

// PassesAll implements engine.AllPasser.
func (f *erasedFilter) PassesAll(*engine.Batch) bool {
	return f.next == nil && f.g.goneN.Load() == 0
}

// Select implements engine.Filter.
func (f *erasedFilter) Select(b *engine.Batch, dst []int, drop func(row int, r engine.Reason)) []int {
	start := len(dst)
	if f.next != nil {
		dst = f.next.Select(b, dst, drop)
	} else {
		for i := range b.Rows() {
			dst = append(dst, i)
		}
	}
	if f.g.goneN.Load() == 0 || len(dst) == start {
		return dst
	}
	pids := b.Rec.Column(engine.ColProfileID).(*array.Uint32).Uint32Values()
	g := f.g
	g.goneMu.RLock()
	defer g.goneMu.RUnlock()
	out := dst[:start]
	for _, i := range dst[start:] {
		if pid := pids[i]; pid != 0 && g.gone.Contains(pid) {
			if drop != nil {
				drop(i, ReasonErased)
			}
			continue
		}
		out = append(out, i)
	}
	return out
}
