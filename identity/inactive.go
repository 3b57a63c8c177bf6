package identity

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble"
)

// inactiveChunk is how many profiles Inactive reads before it calls fn for
// them with no iterator open.
const inactiveChunk = 1024

// Inactive calls fn, in profile id order, for every live profile whose
// last seen time is before before: the latest last seen of its identifiers
// (those merged into it included), or its creation time when it holds no
// identifier. Creation is not activity otherwise: a profile restored by a
// split is created at the split but keeps its identifiers' times. It is
// the scan behind automatic retention erasure.
//
// Granularity: last seen is kept in whole seconds and moves only when an
// event is at least Config.SeenGranularity (default 24h) newer than the
// stored value, so a profile's true last event may be up to one
// granularity later than the lastSeen reported. To find profiles with no
// event since a cutoff, pass before = cutoff - SeenGranularity.
//
// It reads the committed graph without holding the Graph's lock (the
// Stage goes on meanwhile), inactiveChunk profiles at a time with no
// iterator open while fn runs, so fn may call Erase (an open iterator
// would pin the files an erasure compacts). A profile changed by an event
// meanwhile is reported as it was read. An error from fn stops the scan
// and is returned.
func (g *Graph) Inactive(before time.Time, fn func(pid uint32, lastSeen time.Time) error) error {
	type hit struct {
		pid  uint32
		last int64
	}
	var hits []hit
	from := uint32(0) // the next profile id to read
	for {
		hits = hits[:0]
		it, err := g.db.NewIter(&pebble.IterOptions{LowerBound: profileKey(nil, from), UpperBound: []byte{prefixProfile + 1}})
		if err != nil {
			return fmt.Errorf("cannot read profiles: %w", err)
		}
		n := 0
		for it.First(); it.Valid() && n < inactiveChunk; it.Next() {
			k := it.Key()
			if len(k) != 5 {
				it.Close()
				return corrupt("profile key")
			}
			n++
			from = be32(k[1:]) + 1 // ids stay below 1<<32-1 (OpCreate)
			p, err := decodeProfile(be32(k[1:]), it.Value())
			if err != nil {
				it.Close()
				return err
			}
			if p.redirect != 0 {
				continue
			}
			if last := lastSeen(p); time.Unix(last, 0).Before(before) {
				hits = append(hits, hit{p.id, last})
			}
		}
		err = it.Error()
		if cerr := it.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("cannot read profiles: %w", err)
		}
		for _, h := range hits {
			if err := fn(h.pid, time.Unix(h.last, 0).UTC()); err != nil {
				return err
			}
		}
		if n < inactiveChunk {
			return nil
		}
	}
}

// lastSeen is p's last seen time (unix seconds) as Inactive reports it:
// the latest of its identifiers', or its creation when it holds none.
func lastSeen(p *profile) int64 {
	last := p.created
	if len(p.idents) > 0 {
		last = p.idents[0].last
		for i := range p.idents[1:] {
			last = max(last, p.idents[1+i].last)
		}
	}
	return last
}

// LastSeen returns the live profile pid stands for (pid itself, or the
// survivor it was merged into: a redirect is one hop, doc.go) and that
// profile's last seen time as Inactive computes it, with the same
// granularity. live is 0 when pid is unknown or erased. Retention checks
// with it, just before erasing, that the profiles a sweep listed are
// still inactive.
func (g *Graph) LastSeen(pid uint32) (live uint32, last time.Time, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, err := g.loadProfile(pid)
	if err == nil && p != nil && p.redirect != 0 {
		pid = p.redirect
		p, err = g.loadProfile(pid)
	}
	if err != nil || p == nil {
		return 0, time.Time{}, err
	}
	if p.redirect != 0 {
		return 0, time.Time{}, corrupt("redirect to a merged profile")
	}
	return pid, time.Unix(lastSeen(p), 0).UTC(), nil
}
