package segments

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"math/bits"
)

// Status is a consent decision's status.
type Status uint8

// Statuses. Unknown is never stored: it is the absence of a decision (or
// a grant past its expiry).
const (
	Unknown Status = iota
	Granted
	Denied
)

func (s Status) String() string {
	switch s {
	case Granted:
		return "granted"
	case Denied:
		return "denied"
	}
	return "unknown"
}

// Decision is one person's decision for one purpose.
type Decision struct {
	// Time is when the decision was made (unix µs): the event's timestamp,
	// an mParticle purpose timestamp, or the API's timestamp.
	Time int64
	// Expires is when a grant lapses (unix µs); 0 = never.
	Expires int64
	Status  Status
	Source  Source
}

// effective is the decision's status at now: a grant past its expiry is
// unknown.
func (d Decision) effective(now int64) Status {
	if d.Status == Granted && d.Expires != 0 && d.Expires <= now {
		return Unknown
	}
	return d.Status
}

// profile is the consent state of one profile: decisions for the bits in
// set, in bit order, and the effective granted/denied masks as of the
// last expiry sweep (the bitmaps hold the same). A profile with set == 0
// holds nothing: it is absent.
type profile struct {
	set             uint64
	granted, denied uint64
	// minT is the earliest Time in d. A decision older than minT, for a
	// purpose in set, is stale without reading d: Process rejects a row
	// whose decisions all are, touching only this struct.
	minT int64
	d    []Decision
	// mark is the epoch of Process or PUT that last listed the profile as
	// dirty (Consent.markDirty); scratch, not state.
	mark uint32
	// saved is when (the stage's clock, unix seconds) the profile was
	// last written; a repeated decision is written again only
	// StampGranularity later. Not state: 0 after a restart.
	saved uint32
}

func (p *profile) idx(bit int) int { return bits.OnesCount64(p.set & (1<<bit - 1)) }

func (p *profile) get(bit int) (Decision, bool) {
	if p == nil || p.set>>bit&1 == 0 {
		return Decision{}, false
	}
	return p.d[p.idx(bit)], true
}

func (p *profile) put(bit int, d Decision) {
	i := p.idx(bit)
	if p.set>>bit&1 == 1 {
		old := p.d[i].Time
		p.d[i] = d
		if d.Time < p.minT {
			p.minT = d.Time
		} else if old == p.minT && d.Time != old {
			p.resetMinT()
		}
		return
	}
	p.set |= 1 << bit
	if len(p.d) == cap(p.d) {
		// Grow by hand so that no decision stays behind in the old
		// backing array (it may be a load slab, which lives on).
		nd := make([]Decision, len(p.d), len(p.d)+2)
		copy(nd, p.d)
		clear(p.d)
		p.d = nd
	}
	p.d = append(p.d, Decision{})
	copy(p.d[i+1:], p.d[i:])
	p.d[i] = d
	if len(p.d) == 1 || d.Time < p.minT {
		p.minT = d.Time
	}
}

func (p *profile) resetMinT() {
	p.minT = p.d[0].Time
	for _, d := range p.d[1:] {
		p.minT = min(p.minT, d.Time)
	}
}

// table holds the profiles' consent state indexed by profile id. Profile
// ids are dense from 1 (identity hands them out in order), so a paged
// array replaces a map: no hashing, and a profile's masks, set and minT
// sit in one cache line, which is all a stale or repeated decision reads.
// Pages of pageSize profiles are allocated when a profile in them first
// gets a decision; an id never seen costs 8 bytes of the page directory
// per pageSize ids.
type table struct {
	pages []*[pageSize]profile
}

const pageBits = 10
const pageSize = 1 << pageBits

// get returns pid's profile, or nil when it holds no decision.
func (t *table) get(pid uint32) *profile {
	pg := int(pid >> pageBits)
	if pg >= len(t.pages) || t.pages[pg] == nil {
		return nil
	}
	p := &t.pages[pg][pid&(pageSize-1)]
	if p.set == 0 {
		return nil
	}
	return p
}

// slot returns pid's profile, allocating its page; it may be empty (set
// == 0) and must then get a decision (put) before the caller lets go, or
// be left empty.
func (t *table) slot(pid uint32) *profile {
	pg := int(pid >> pageBits)
	if pg >= len(t.pages) {
		t.pages = append(t.pages, make([]*[pageSize]profile, pg+1-len(t.pages))...)
	}
	if t.pages[pg] == nil {
		t.pages[pg] = new([pageSize]profile)
	}
	return &t.pages[pg][pid&(pageSize-1)]
}

// del forgets pid's decisions; it reports whether it held any.
func (t *table) del(pid uint32) bool {
	pg := int(pid >> pageBits)
	if pg >= len(t.pages) || t.pages[pg] == nil {
		return false
	}
	p := &t.pages[pg][pid&(pageSize-1)]
	had := p.set != 0
	clear(p.d) // no decision stays behind in the backing array
	*p = profile{}
	return had
}

// each calls fn for every profile with a decision, in id order.
func (t *table) each(fn func(pid uint32, p *profile)) {
	for pg, page := range t.pages {
		if page == nil {
			continue
		}
		for i := range page {
			if p := &page[i]; p.set != 0 {
				fn(uint32(pg)<<pageBits|uint32(i), p)
			}
		}
	}
}

// Pebble layout (prefixes 0x20-0x27 are this package's; values start with
// a version byte, 1):
//
//	0x20 | profile id (4 BE) → 1 | uvarint set | per bit of set, ascending:
//	                           status (1) | source (1) | varint time | varint expires
//	0x21 | profile id (4 BE) → empty: the profile is suppressed
const (
	prefixProfile    byte = 0x20
	prefixSuppressed byte = 0x21
	valueVersion     byte = 1
)

var errCorrupt = errors.New("segments: corrupt consent record")

func profileKey(dst []byte, prefix byte, pid uint32) []byte {
	return binary.BigEndian.AppendUint32(append(dst, prefix), pid)
}

func appendProfile(dst []byte, p *profile) []byte {
	dst = append(dst, valueVersion)
	dst = binary.AppendUvarint(dst, p.set)
	for _, d := range p.d {
		dst = append(dst, byte(d.Status), byte(d.Source))
		dst = binary.AppendVarint(dst, d.Time)
		dst = binary.AppendVarint(dst, d.Expires)
	}
	return dst
}

// decodeProfile reads v into p, which must be empty. Its decisions are
// cut from *slab (refilled by slabDecisions at a time): one allocation per
// slabDecisions decisions instead of one per profile, for loading
// millions of them at start.
func decodeProfile(v []byte, p *profile, slab *[]Decision) error {
	if len(v) < 2 || v[0] != valueVersion {
		return errCorrupt
	}
	v = v[1:]
	set, n := binary.Uvarint(v)
	if n <= 0 {
		return errCorrupt
	}
	v = v[n:]
	k := bits.OnesCount64(set)
	if cap(*slab)-len(*slab) < k { // k <= 64: set is a uint64
		*slab = make([]Decision, 0, slabDecisions)
	}
	d := (*slab)[len(*slab) : len(*slab) : len(*slab)+k]
	*slab = (*slab)[:len(*slab)+k]
	for range k {
		if len(v) < 2 {
			return errCorrupt
		}
		x := Decision{Status: Status(v[0]), Source: Source(v[1])}
		if x.Status != Granted && x.Status != Denied || x.Source >= numSources {
			return errCorrupt
		}
		v = v[2:]
		if x.Time, n = binary.Varint(v); n <= 0 {
			return errCorrupt
		}
		v = v[n:]
		if x.Expires, n = binary.Varint(v); n <= 0 {
			return errCorrupt
		}
		v = v[n:]
		d = append(d, x)
	}
	if len(v) != 0 {
		return errCorrupt
	}
	p.set, p.d = set, d
	if len(d) > 0 {
		p.resetMinT()
	}
	return nil
}

// slabDecisions is how many decisions one load allocation holds (24 bytes
// each).
const slabDecisions = 4096

// expiry is a grant that lapses at at.
type expiry struct {
	at  int64
	pid uint32
	bit uint8
}

type expHeap []expiry

func (h expHeap) Len() int           { return len(h) }
func (h expHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

var _ heap.Interface = (*expHeap)(nil)
