package identity

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Key families owned by identity (engine reserves 0x10-0x1f for it). The
// layout of each is documented in doc.go; every value starts with a version
// byte so that a layout change can be read side by side with the old one.
const (
	prefixMeta    byte = 0x10 // 0x10 | sub-key → meta values
	prefixIdent   byte = 0x11 // 0x11 | hmac[:16] → v1 | uvarint profile id | varint last seen
	prefixProfile byte = 0x12 // 0x12 | profile id (4 BE) → v1 | profile record
	prefixLog     byte = 0x13 // 0x13 | seq (8 BE) → v1 | log entry
	prefixLogIdx  byte = 0x14 // 0x14 | profile id (4 BE) | seq (8 BE) → empty
	prefixType    byte = 0x15 // 0x15 | type name → v1 | uvarint type id

	metaCounters byte = 0x01 // → v1 | uvarint next profile id | uvarint next log seq
	metaSecret   byte = 0x02 // → HMAC(secret, secretCheck)[:16]
	metaCompact  byte = 0x03 // → v1 | uvarint n | n × (uvarint len | key): erased keys still to compact

	valueV1 byte = 1
)

// hashLen is the length of the stored keyed hash. 128 bits keep the chance
// of any collision among 10^10 identifiers below 10^-18.
const hashLen = 16

type hash [hashLen]byte

// ErrCorrupt is returned for a stored value that cannot be decoded.
var ErrCorrupt = errors.New("identity: corrupt value")

func corrupt(what string) error { return fmt.Errorf("%w: %s", ErrCorrupt, what) }

func identKey(dst []byte, h *hash) []byte {
	dst = append(dst, prefixIdent)
	return append(dst, h[:]...)
}

func profileKey(dst []byte, id uint32) []byte {
	dst = append(dst, prefixProfile)
	return binary.BigEndian.AppendUint32(dst, id)
}

func logKey(dst []byte, seq uint64) []byte {
	dst = append(dst, prefixLog)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func logIdxKey(dst []byte, id uint32, seq uint64) []byte {
	dst = append(dst, prefixLogIdx)
	dst = binary.BigEndian.AppendUint32(dst, id)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func typeKey(dst []byte, name string) []byte {
	dst = append(dst, prefixType)
	return append(dst, name...)
}

// identEntry is what an identifier key holds: its profile, and its last
// seen time (unix seconds, a copy of the profile record's) so that the
// resolution fast path never needs the profile record. pid 0: no such
// identifier.
type identEntry struct {
	pid  uint32
	last int64
}

func appendIdentValue(dst []byte, e identEntry) []byte {
	dst = append(dst, valueV1)
	dst = binary.AppendUvarint(dst, uint64(e.pid))
	return binary.AppendVarint(dst, e.last)
}

func decodeIdentValue(v []byte) (identEntry, error) {
	if len(v) < 3 || v[0] != valueV1 {
		return identEntry{}, corrupt("identifier value")
	}
	d := decoder{b: v[1:]}
	e := identEntry{pid: d.u32(), last: d.varint()}
	if d.err != nil || len(d.b) != 0 || e.pid == 0 {
		return identEntry{}, corrupt("identifier value")
	}
	return e, nil
}

// profile is the decoded profile record. A profile is either live (redirect
// == 0) or a redirect to the live profile it was merged into.
type profile struct {
	id       uint32
	redirect uint32
	created  int64 // unix seconds
	// merged lists every profile merged into this one, directly or through
	// an earlier merge, with the profile it was merged into (its parent).
	// Its length is the number of merges the profile absorbed.
	merged []mergedRef
	// apart lists profiles this one must never merge with (after a split).
	apart  []uint32
	idents []pident
}

type mergedRef struct{ id, parent uint32 }

// pident is one identifier held by a profile. value is the normalised plain
// value (the only place it is kept; a later issue encrypts it per profile).
type pident struct {
	typ    uint16
	origin uint32 // the profile that first held it; split returns it there
	first  int64  // unix seconds
	last   int64
	value  string
}

const (
	kindLive     byte = 0
	kindRedirect byte = 1
)

func appendProfile(dst []byte, p *profile) []byte {
	dst = append(dst, valueV1)
	if p.redirect != 0 {
		dst = append(dst, kindRedirect)
		return binary.AppendUvarint(dst, uint64(p.redirect))
	}
	dst = append(dst, kindLive)
	dst = binary.AppendVarint(dst, p.created)
	dst = binary.AppendUvarint(dst, uint64(len(p.merged)))
	for _, m := range p.merged {
		dst = binary.AppendUvarint(dst, uint64(m.id))
		dst = binary.AppendUvarint(dst, uint64(m.parent))
	}
	dst = binary.AppendUvarint(dst, uint64(len(p.apart)))
	for _, a := range p.apart {
		dst = binary.AppendUvarint(dst, uint64(a))
	}
	dst = binary.AppendUvarint(dst, uint64(len(p.idents)))
	for i := range p.idents {
		x := &p.idents[i]
		dst = binary.AppendUvarint(dst, uint64(x.typ))
		dst = binary.AppendUvarint(dst, uint64(x.origin))
		dst = binary.AppendVarint(dst, x.first)
		dst = binary.AppendUvarint(dst, uint64(x.last-x.first))
		dst = binary.AppendUvarint(dst, uint64(len(x.value)))
		dst = append(dst, x.value...)
	}
	return dst
}

// decodeProfile decodes a profile record of profile id. The result does not
// alias v.
func decodeProfile(id uint32, v []byte) (*profile, error) {
	if len(v) < 2 || v[0] != valueV1 {
		return nil, corrupt("profile version")
	}
	p := &profile{id: id}
	d := decoder{b: v[2:]}
	switch v[1] {
	case kindRedirect:
		p.redirect = d.u32()
		if d.err == nil && (p.redirect == 0 || p.redirect == id) {
			d.err = corrupt("profile redirect")
		}
	case kindLive:
		p.created = d.varint()
		if n := d.count(2); n > 0 {
			p.merged = make([]mergedRef, n)
			for i := range p.merged {
				p.merged[i] = mergedRef{d.u32(), d.u32()}
			}
		}
		if n := d.count(1); n > 0 {
			p.apart = make([]uint32, n)
			for i := range p.apart {
				p.apart[i] = d.u32()
			}
		}
		if n := d.count(5); n > 0 {
			p.idents = make([]pident, n)
			for i := range p.idents {
				x := &p.idents[i]
				t := d.uvarint()
				if t >= maxTypes {
					d.fail("identifier type")
				}
				x.typ = uint16(t)
				x.origin = d.u32()
				x.first = d.varint()
				x.last = x.first + int64(d.uvarint())
				if x.last < x.first {
					d.fail("identifier times")
				}
				x.value = d.str(maxValueLen)
				if d.err == nil && (x.origin == 0 || !utf8.ValidString(x.value)) {
					d.fail("identifier")
				}
			}
		}
	default:
		return nil, corrupt("profile kind")
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("profile trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return p, nil
}

// LogKind says what a merge-log entry records.
type LogKind uint8

// Merge-log entry kinds.
const (
	LogMerge   LogKind = 1 // Merged were merged into Survivor
	LogRefused LogKind = 2 // a merge of Merged into Survivor was refused; Rule is the reason
	LogSplit   LogKind = 3 // Merged were split out of Survivor
	LogRemove  LogKind = 4 // an identifier of type Rule was removed from Survivor
	LogReplace LogKind = 5 // an identifier of type Rule of Survivor was replaced by another value
)

var logKindNames = [...]string{"", "merge", "refused", "split", "remove", "replace"}

func (k LogKind) String() string {
	if int(k) < len(logKindNames) && k > 0 {
		return logKindNames[k]
	}
	return "unknown"
}

// LogEntry is one entry of the append-only merge log.
type LogEntry struct {
	Seq       uint64
	Kind      LogKind
	Time      int64 // unix microseconds
	Survivor  uint32
	Merged    []uint32
	MessageID string
	// Rule is what allowed a merge ("shared:email", "alias"), or why a merge
	// was refused ("limit:user_id", "unique:user_id", "apart",
	// "cap_merges", "cap_identifiers"), or who asked for a split or removal.
	Rule string
	// Erased marks a tombstone: a profile it named was erased, so the
	// erased ids are gone from Survivor (0) and Merged, and MessageID and
	// Rule are empty. Seq, Kind and Time are kept.
	Erased bool
}

// logErased is set in the stored kind byte of a tombstone.
const logErased byte = 0x80

func appendLogEntry(dst []byte, e *LogEntry) []byte {
	k := byte(e.Kind)
	if e.Erased {
		k |= logErased
	}
	dst = append(dst, valueV1, k)
	dst = binary.AppendVarint(dst, e.Time)
	dst = binary.AppendUvarint(dst, uint64(e.Survivor))
	dst = binary.AppendUvarint(dst, uint64(len(e.Merged)))
	for _, m := range e.Merged {
		dst = binary.AppendUvarint(dst, uint64(m))
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.MessageID)))
	dst = append(dst, e.MessageID...)
	dst = binary.AppendUvarint(dst, uint64(len(e.Rule)))
	return append(dst, e.Rule...)
}

func decodeLogEntry(seq uint64, v []byte) (LogEntry, error) {
	if len(v) < 2 || v[0] != valueV1 || v[1]&^logErased == 0 || int(v[1]&^logErased) >= len(logKindNames) {
		return LogEntry{}, corrupt("log entry header")
	}
	e := LogEntry{Seq: seq, Kind: LogKind(v[1] &^ logErased), Erased: v[1]&logErased != 0}
	d := decoder{b: v[2:]}
	e.Time = d.varint()
	e.Survivor = d.u32()
	if n := d.count(1); n > 0 {
		e.Merged = make([]uint32, n)
		for i := range e.Merged {
			e.Merged[i] = d.u32()
		}
	}
	e.MessageID = d.str(1 << 16)
	e.Rule = d.str(1 << 10)
	if d.err == nil && len(d.b) != 0 {
		d.fail("log entry trailing bytes")
	}
	return e, d.err
}

func appendCounters(dst []byte, next uint32, seq uint64) []byte {
	dst = append(dst, valueV1)
	dst = binary.AppendUvarint(dst, uint64(next))
	return binary.AppendUvarint(dst, seq)
}

func decodeCounters(v []byte) (next uint32, seq uint64, err error) {
	if len(v) < 1 || v[0] != valueV1 {
		return 0, 0, corrupt("counters")
	}
	d := decoder{b: v[1:]}
	next = d.u32()
	seq = d.uvarint()
	if d.err == nil && (len(d.b) != 0 || next == 0 || seq == 0) {
		d.fail("counters")
	}
	return next, seq, d.err
}

// decoder reads varints with bounds checks; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = corrupt(what)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) u32() uint32 {
	x := d.uvarint()
	if x > 1<<32-1 {
		d.fail("uint32 out of range")
		return 0
	}
	return uint32(x)
}

// count reads a length whose elements take at least minBytes each, so a
// corrupt length cannot make the decoder allocate more than the input.
func (d *decoder) count(minBytes int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/minBytes) {
		d.fail("count")
		return 0
	}
	return int(n)
}

func (d *decoder) str(max int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) || n > uint64(max) {
		d.fail("string length")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
