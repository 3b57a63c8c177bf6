package identity

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/cdpstream/cdpstream/engine"
)

// Key families owned by identity (engine reserves 0x10-0x1f for it). The
// layout of each is documented in doc.go; every value starts with a version
// byte so that a layout change can be read side by side with the old one.
const (
	prefixMeta    byte = 0x10 // 0x10 | sub-key → meta values
	prefixIdent   byte = 0x11 // 0x11 | hmac[:16] → v1 | uvarint profile id | varint last seen
	prefixProfile byte = 0x12 // 0x12 | profile id (4 BE) → v1 (plain) or v2 (sealed) | profile record
	prefixLog     byte = 0x13 // 0x13 | seq (8 BE) → v1 | log entry
	prefixLogIdx  byte = 0x14 // 0x14 | profile id (4 BE) | seq (8 BE) → empty
	prefixType    byte = 0x15 // 0x15 | type name → v1 | uvarint type id

	metaCounters byte = 0x01 // → v1 | uvarint next profile id | uvarint next log seq
	metaSecret   byte = 0x02 // → HMAC(secret, secretCheck)[:16]
	// 0x03 is free: it held erased keys to compact, now engine compaction
	// debt (0x04).

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
	// sealed holds the values of idents[:nsealed], encrypted under the
	// profile's key in chunks as stored (a v2 record); the value field of
	// those identifiers is empty. idents[nsealed:] carry their plain value
	// until a commit seals them into a new chunk (or, without a keyring,
	// writes them plain in a v1 record).
	sealed  []chunk
	nsealed int
}

type mergedRef struct{ id, parent uint32 }

// chunk is one sealed run of identifier values: n values, as stored.
// The bytes are immutable and shared between clones.
type chunk struct {
	n int
	b []byte
}

// pident is one identifier held by a profile. h is its keyed hash (the
// identifier key), stored in the record so that resolution, merges and
// erasure never need the plain value; value is the normalised plain value
// when the profile holds it in plain (see profile.sealed), "" otherwise.
type pident struct {
	typ    uint16
	origin uint32 // the profile that first held it; split returns it there
	first  int64  // unix seconds
	last   int64
	h      hash
	value  string
}

const (
	kindLive     byte = 0
	kindRedirect byte = 1
)

// Profile record versions: v1 holds the plain values (written without a
// keyring, and by every version before encryption); v2 holds hashes and
// sealed value chunks. Redirects are always written as v1 (they hold no
// personal data) and read in both.
const (
	profileV1 byte = 1
	profileV2 byte = 2
)

func appendRedirect(dst []byte, p *profile) []byte {
	dst = append(dst, profileV1, kindRedirect)
	return binary.AppendUvarint(dst, uint64(p.redirect))
}

func appendProfileHead(dst []byte, v byte, p *profile) []byte {
	dst = append(dst, v, kindLive)
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
	return binary.AppendUvarint(dst, uint64(len(p.idents)))
}

func appendIdentHead(dst []byte, x *pident) []byte {
	dst = binary.AppendUvarint(dst, uint64(x.typ))
	dst = binary.AppendUvarint(dst, uint64(x.origin))
	dst = binary.AppendVarint(dst, x.first)
	return binary.AppendUvarint(dst, uint64(x.last-x.first))
}

// appendProfileV1 encodes p with plain values (no keyring).
func appendProfileV1(dst []byte, p *profile) []byte {
	if p.redirect != 0 {
		return appendRedirect(dst, p)
	}
	dst = appendProfileHead(dst, profileV1, p)
	for i := range p.idents {
		x := &p.idents[i]
		dst = appendIdentHead(dst, x)
		dst = binary.AppendUvarint(dst, uint64(len(x.value)))
		dst = append(dst, x.value...)
	}
	return dst
}

// appendProfileV2 encodes p with hashes and its sealed chunks; every value
// must be sealed (nsealed == len(idents)).
func appendProfileV2(dst []byte, p *profile) []byte {
	if p.redirect != 0 {
		return appendRedirect(dst, p)
	}
	dst = appendProfileHead(dst, profileV2, p)
	for i := range p.idents {
		x := &p.idents[i]
		dst = appendIdentHead(dst, x)
		dst = append(dst, x.h[:]...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(p.sealed)))
	for _, c := range p.sealed {
		dst = binary.AppendUvarint(dst, uint64(c.n))
		dst = binary.AppendUvarint(dst, uint64(len(c.b)))
		dst = append(dst, c.b...)
	}
	return dst
}

// decodeProfile decodes a profile record of profile id. The result does not
// alias v. The identifiers of a v1 record carry their plain values and no
// hashes (Graph.fillHashes computes them).
func decodeProfile(id uint32, v []byte) (*profile, error) {
	if len(v) < 2 || (v[0] != profileV1 && v[0] != profileV2) {
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
		minBytes := 5
		if v[0] == profileV2 {
			minBytes = 4 + hashLen
		}
		if n := d.count(minBytes); n > 0 {
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
				if v[0] == profileV2 {
					d.hash(&x.h)
				} else {
					x.value = d.str(maxValueLen)
					if d.err == nil && !utf8.ValidString(x.value) {
						d.fail("identifier")
					}
				}
				if d.err == nil && x.origin == 0 {
					d.fail("identifier")
				}
			}
		}
		if v[0] == profileV2 {
			decodeChunks(&d, p)
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

// decodeChunks reads the sealed chunks of a v2 record: they must cover
// every identifier, in order.
func decodeChunks(d *decoder, p *profile) {
	n := d.count(2 + engine.SealOverhead)
	if n > 0 {
		p.sealed = make([]chunk, n)
	}
	total := 0
	for i := range p.sealed {
		c := &p.sealed[i]
		k := d.uvarint()
		b := d.bytes(1 << 20)
		if d.err != nil {
			return
		}
		if k == 0 || k > uint64(len(p.idents)-total) || len(b) < engine.SealOverhead {
			d.fail("sealed chunk")
			return
		}
		c.n, c.b = int(k), b
		total += c.n
	}
	if total != len(p.idents) {
		d.fail("sealed chunks do not cover the identifiers")
	}
	p.nsealed = total
}

// appendValues encodes plain values for sealing: uvarint len | value, each.
func appendValues(dst []byte, xs []pident) []byte {
	for i := range xs {
		dst = binary.AppendUvarint(dst, uint64(len(xs[i].value)))
		dst = append(dst, xs[i].value...)
	}
	return dst
}

// decodeValues decodes n values of a chunk's plaintext into out.
func decodeValues(out []string, pt []byte) error {
	d := decoder{b: pt}
	for i := range out {
		out[i] = d.str(maxValueLen)
		if d.err == nil && !utf8.ValidString(out[i]) {
			d.fail("sealed identifier value")
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("sealed chunk trailing bytes")
	}
	return d.err
}

// valuesAAD is what a chunk of values is bound to, besides its profile
// (the keyring adds the profile id): the purpose and the hashes of the
// identifiers whose values it holds, in order, so a chunk cannot be
// replayed for other identifiers or moved within or between records.
func valuesAAD(dst []byte, xs []pident) []byte {
	dst = append(dst, valuesPurpose...)
	for i := range xs {
		dst = append(dst, xs[i].h[:]...)
	}
	return dst
}

const valuesPurpose = "cdpstream identity values v1"

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

func (d *decoder) hash(h *hash) {
	if d.err != nil {
		return
	}
	if len(d.b) < hashLen {
		d.fail("hash")
		return
	}
	copy(h[:], d.b)
	d.b = d.b[hashLen:]
}

// bytes reads a length-prefixed byte string, copied.
func (d *decoder) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) || n > uint64(max) {
		d.fail("bytes length")
		return nil
	}
	b := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return b
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
