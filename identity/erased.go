package identity

import (
	"slices"

	"github.com/RoaringBitmap/roaring/v2"
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
	g.goneLog = append(g.goneLog, ids...)
	g.goneN.Store(g.gone.GetCardinality())
	g.goneMu.Unlock()
}

// ErasedSince returns the profile ids erased since the Graph was opened,
// from position from of the order they were erased in, and the position
// to ask from next time (0 the first time). The consent and audience
// stages poll it once per batch (segments.WithErasedFeed,
// audience.WithErasedFeed), so they stop recording an erased person's
// in-flight rows from the moment identity's erasure commits, not only
// from their own Erase.
func (g *Graph) ErasedSince(from int) ([]uint32, int) {
	if g.goneN.Load() == 0 {
		return nil, from
	}
	g.goneMu.RLock()
	defer g.goneMu.RUnlock()
	if from >= len(g.goneLog) {
		return nil, len(g.goneLog)
	}
	return slices.Clone(g.goneLog[from:]), len(g.goneLog)
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

// Hold makes ErasedFilter drop the rows (and withhold the change records)
// of pids from now on, under key, until Release(key): a privacy request
// holds its profiles before it sends the deletion notices, so no sink
// receives the person's events between the notice and the erasure's
// commit (after which the erased set covers them). Holding under a key
// again replaces its ids. The ids still resolve and are recorded by the
// stages as usual; only the sinks stop getting them. Memory only: a
// request resumed after a restart holds them again.
func (g *Graph) Hold(key string, pids []uint32) {
	g.goneMu.Lock()
	defer g.goneMu.Unlock()
	if g.held == nil {
		g.held = map[string][]uint32{}
	}
	if len(pids) == 0 {
		delete(g.held, key)
	} else {
		g.held[key] = slices.Clone(pids)
	}
	g.rebuildHeld()
}

// Release ends Hold(key).
func (g *Graph) Release(key string) {
	g.goneMu.Lock()
	defer g.goneMu.Unlock()
	if _, ok := g.held[key]; !ok {
		return
	}
	delete(g.held, key)
	g.rebuildHeld()
}

// rebuildHeld recomputes the union of the held ids; goneMu is held.
func (g *Graph) rebuildHeld() {
	all := roaring.New()
	for _, ids := range g.held {
		all.AddMany(ids)
	}
	g.heldAll = all
	g.heldN.Store(all.GetCardinality())
}

// dropped reports whether ErasedFilter drops pid's rows: erased, or held;
// goneMu is held (read).
func (g *Graph) dropped(pid uint32) bool {
	return pid != 0 && (g.gone.Contains(pid) || (g.heldAll != nil && g.heldAll.Contains(pid)))
}

// filtering reports whether ErasedFilter has anything to drop.
func (g *Graph) filtering() bool { return g.goneN.Load() != 0 || g.heldN.Load() != 0 }

// ErasedFilter returns the filter for one sink that keeps what next keeps
// (every row when next is nil) except the rows of profiles erased since
// the Graph was opened, or held for an erasure under way (Hold), which it
// drops with reason "erased".
//
// Those rows were resolved before the erasure and were still between the
// identity stage and the sink when it ran: with per-stage goroutines and
// sink queues, up to a few batches. Erase runs first among a privacy
// request's erasers, so every batch a sink filters after it returned
// carries none of the person's rows, whether or not the sink has a
// consent policy. It also withholds the change records attached to those
// batches whose subject is an erased or held profile (consent grants,
// audience entries; engine.Record.Subject), so a downstream tool does not
// re-learn about the person from a record that was in flight when the
// erasure committed; exits, denials and deletion notices have no subject
// and pass. A privacy request holds its profiles (Hold, privacy.Holder)
// before it sends the deletion notices, so from the notice on no sink
// filters in any of the person's rows or records. Not covered: a batch the sink had already filtered (being
// written, or held in a buffering sink), profile merges (Batch.Merges:
// ids only, no data), and, after a crash, the replay of
// uncommitted batches: the set lives in memory only, and the replayed
// events resolve anew (an erased identifier no longer resolves to the
// erased id, which is never reused; the deletion notice went out before
// the erasure).
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

// DropRecord implements engine.RecordFilter.
func (f *erasedFilter) DropRecord(r *engine.Record) engine.Reason {
	if r.Subject != 0 && f.g.filtering() {
		f.g.goneMu.RLock()
		drop := f.g.dropped(r.Subject)
		f.g.goneMu.RUnlock()
		if drop {
			return ReasonErased
		}
	}
	if rf, ok := f.next.(engine.RecordFilter); ok {
		return rf.DropRecord(r)
	}
	return ""
}

// PassesAll implements engine.AllPasser.
func (f *erasedFilter) PassesAll(*engine.Batch) bool {
	return f.next == nil && !f.g.filtering()
}

// Select implements engine.Filter.
func (f *erasedFilter) Select(b *engine.Batch, dst []int, drop func(row int, r engine.Reason)) []int {
	start := len(dst)
	if f.next != nil {
		d := drop
		if f.g.filtering() && drop != nil {
			// A row of an erased profile that next drops (say, for its
			// consent) is counted as erased, as if this filter ran first.
			pids := b.Rec.Column(engine.ColProfileID).(*array.Uint32).Uint32Values()
			d = func(row int, r engine.Reason) {
				f.g.goneMu.RLock()
				if f.g.dropped(pids[row]) {
					r = ReasonErased
				}
				f.g.goneMu.RUnlock()
				drop(row, r)
			}
		}
		dst = f.next.Select(b, dst, d)
	} else {
		for i := range b.Rows() {
			dst = append(dst, i)
		}
	}
	if !f.g.filtering() || len(dst) == start {
		return dst
	}
	pids := b.Rec.Column(engine.ColProfileID).(*array.Uint32).Uint32Values()
	g := f.g
	g.goneMu.RLock()
	defer g.goneMu.RUnlock()
	out := dst[:start]
	for _, i := range dst[start:] {
		if g.dropped(pids[i]) {
			if drop != nil {
				drop(i, ReasonErased)
			}
			continue
		}
		out = append(out, i)
	}
	return out
}
