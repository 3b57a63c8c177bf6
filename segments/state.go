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
	Status Status
	// Time is when the decision was made (unix µs): the event's timestamp,
	// an mParticle purpose timestamp, or the API's timestamp.
	Time int64
	// Expires is when a grant lapses (unix µs); 0 = never.
	Expires int64
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
// last expiry sweep (the bitmaps hold the same).
type profile struct {
	set             uint64
	d               []Decision
	granted, denied uint64
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
		p.d[i] = d
		return
	}
	p.set |= 1 << bit
	p.d = append(p.d, Decision{})
	copy(p.d[i+1:], p.d[i:])
	p.d[i] = d
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

func decodeProfile(v []byte) (*profile, error) {
	if len(v) < 2 || v[0] != valueVersion {
		return nil, errCorrupt
	}
	v = v[1:]
	set, n := binary.Uvarint(v)
	if n <= 0 {
		return nil, errCorrupt
	}
	v = v[n:]
	p := &profile{set: set, d: make([]Decision, 0, bits.OnesCount64(set))}
	for range bits.OnesCount64(set) {
		if len(v) < 2 {
			return nil, errCorrupt
		}
		d := Decision{Status: Status(v[0]), Source: Source(v[1])}
		if d.Status != Granted && d.Status != Denied || d.Source >= numSources {
			return nil, errCorrupt
		}
		v = v[2:]
		if d.Time, n = binary.Varint(v); n <= 0 {
			return nil, errCorrupt
		}
		v = v[n:]
		if d.Expires, n = binary.Varint(v); n <= 0 {
			return nil, errCorrupt
		}
		v = v[n:]
		p.d = append(p.d, d)
	}
	if len(v) != 0 {
		return nil, errCorrupt
	}
	return p, nil
}

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
