package identity

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// OpKind names an identity operation.
type OpKind uint8

// Operation kinds. Each is deterministic: applying the same operations in
// the same order to the same graph gives the same graph, byte for byte.
const (
	// OpCreate creates profile Profile, which must be the next profile id,
	// holding Idents, none of which may belong to a profile yet.
	OpCreate OpKind = iota + 1
	// OpLink adds Idents (unowned) to the live profile Profile.
	OpLink
	// OpTouch advances the last-seen time of Idents of profile Profile to
	// Time (and first seen back to it, for late events).
	OpTouch
	// OpMerge merges the live profiles Merged into the live profile
	// Profile, which must be older (lower id) than each of them. Rule says
	// what allowed it.
	OpMerge
	// OpRefuse records in the merge log that merging Merged into Profile
	// was refused; Rule is the reason. It changes nothing else.
	OpRefuse
	// OpRemove removes the identifier Idents[0] from its profile.
	OpRemove
	// OpSplit splits Profile: a live profile is split back into every
	// profile merged into it; a merged profile (a redirect) is split out of
	// its survivor together with the profiles merged into it before.
	OpSplit
	// OpErase erases the live profile Profile and every profile merged
	// into it: their identifier keys, profile records and redirects go, and
	// the merge-log entries naming them become anonymous tombstones (see
	// erase.go). An unknown or already erased Profile is a no-op; a merged
	// one (a redirect) is a conflict.
	OpErase
	// OpSuppress adds the keyed hash of every identifier of the live
	// profile Profile, and the keyed hashes Hashes, to suppression group
	// Group (suppress.go), except hashes already suppressed, which stay in
	// their group. Group is at most the next group id, and equal to it
	// starts a group (as OpCreate takes the next profile id). Profile 0,
	// unknown or erased adds no profile's identifiers; a merged one is a
	// conflict. Erasure does not touch suppression.
	OpSuppress
	// OpUnsuppress removes suppression group Group and every hash in it. An
	// unknown group is a no-op.
	OpUnsuppress
	// OpReplace replaces the identifier Idents[0] of the live profile
	// Profile by Idents[1], of the same type, which must not belong to
	// another profile (rectification). The new value keeps the old one's
	// origin and first and last seen; if the profile holds it already the
	// old one is just removed. If the old one is suppressed, the new one
	// joins its group.
	OpReplace
)

var opKindNames = [...]string{"", "create", "link", "touch", "merge", "refuse", "remove", "split", "erase",
	"suppress", "unsuppress", "replace"}

func (k OpKind) String() string {
	if k > 0 && int(k) < len(opKindNames) {
		return opKindNames[k]
	}
	return "op(" + strconv.Itoa(int(k)) + ")"
}

// Op is one identity change: the unit of the identity log. The Stage
// produces Ops from events and applies them at once; a later issue writes
// them to a Kafka topic so that every instance applies the same Ops in the
// same order.
type Op struct {
	Kind OpKind
	// Time is when the change happened, in unix microseconds: the event's
	// timestamp for changes an event caused, the request time otherwise.
	Time    int64
	Profile uint32
	Merged  []uint32
	Idents  []Ident
	// MessageID is the event (or request) that caused the change.
	MessageID string
	Rule      string
	// Group is the suppression group of OpSuppress and OpUnsuppress.
	Group uint64
	// Hashes are keyed hashes (hmac16, doc.go) of identifiers OpSuppress
	// suppresses besides those of Profile: identities given to Suppress
	// that no profile holds (yet).
	Hashes [][hashLen]byte
}

// Ident is an identifier: a type name and its normalised value.
type Ident struct {
	Type  string
	Value string
	h     hash // set by the Stage, which hashed the value already
	hset  bool
}

// txn collects the effects of a sequence of Ops over the committed graph.
// Reads see the txn's own writes first. Nothing reaches Pebble or the caches
// until commit succeeds, so a failed commit leaves the Graph as it was.
type txn struct {
	g       *Graph
	ids     map[hash]identEntry // identifiers written (pid 0: removed)
	profs   map[uint32]*profile // nil: the record is deleted (erased)
	newType []*typeInfo
	log     []LogEntry
	next    uint32
	seq     uint64
	merges  []engine.Merge
	tally   tally
	applied []Op // the ops applied, kept only when the Graph has a commit hook
	kbuf    []byte
	vbuf    []byte

	// Erasure (erase.go): committed log entries rewritten as tombstones,
	// log index keys deleted, profiles whose keys are destroyed, and the
	// keys to compact after the commit.
	rewrite map[uint64]LogEntry
	dels    [][]byte
	destroy []uint32
	compact [][]byte
	gone    []uint32 // profile ids erased (survivors and merged)

	seal []uint32 // commit: profiles with values to seal, sorted
	// Suppression (suppress.go): hashes written (group 0: removed), group
	// records written (nil: deleted), and the group counter.
	supp      map[hash]uint64
	groups    map[uint64][]hash
	nextGroup uint64
}

// tally counts what a txn did, for the metrics after commit.
type tally struct {
	created, merged, added, erased uint64
	ops                            [len(opKindNames)]uint64
}

func (g *Graph) newTxn() *txn {
	return &txn{g: g, ids: make(map[hash]identEntry), profs: make(map[uint32]*profile),
		rewrite: make(map[uint64]LogEntry), supp: make(map[hash]uint64), groups: make(map[uint64][]hash)}
}

// begin readies tx for a new batch of operations.
func (tx *txn) begin() {
	clear(tx.ids)
	clear(tx.profs)
	tx.newType = tx.newType[:0]
	tx.log = tx.log[:0]
	tx.merges = tx.merges[:0]
	tx.tally = tally{}
	tx.applied = tx.applied[:0]
	clear(tx.rewrite)
	tx.dels, tx.compact, tx.destroy, tx.gone = tx.dels[:0], tx.compact[:0], tx.destroy[:0], tx.gone[:0]
	clear(tx.supp)
	clear(tx.groups)
	tx.next, tx.seq, tx.nextGroup = tx.g.next, tx.g.seq, tx.g.nextGroup
}

func (tx *txn) ident(h *hash) (identEntry, error) {
	if e, ok := tx.ids[*h]; ok {
		return e, nil
	}
	return tx.g.lookupIdent(h)
}

func (tx *txn) get(id uint32) (*profile, error) {
	if p, ok := tx.profs[id]; ok {
		return p, nil
	}
	return tx.g.loadProfile(id)
}

// live returns the live profile id for writing, or an error if it is not live.
func (tx *txn) live(id uint32) (*profile, error) {
	p, ok := tx.profs[id]
	if !ok {
		q, err := tx.g.loadProfile(id)
		if err != nil {
			return nil, err
		}
		if q != nil {
			p = q.clone()
			tx.profs[id] = p
		}
	}
	if p == nil || p.redirect != 0 {
		return nil, fmt.Errorf("%w: profile %d is not live", ErrOpConflict, id)
	}
	return p, nil
}

func (tx *txn) typeID(t *typeInfo) (uint16, error) {
	if t.id != 0 {
		return t.id, nil
	}
	for i, n := range tx.newType {
		if n == t {
			return uint16(len(tx.g.byID) + i), nil
		}
	}
	id := len(tx.g.byID) + len(tx.newType)
	if id >= maxTypes {
		return 0, fmt.Errorf("%w: too many identifier types", ErrOpConflict)
	}
	tx.newType = append(tx.newType, t)
	return uint16(id), nil
}

// knownTypeID returns the id of the type called name if it has one.
func (tx *txn) knownTypeID(name string) (uint16, bool) {
	t := tx.g.types[name]
	if t == nil {
		return 0, false
	}
	if t.id != 0 {
		return t.id, true
	}
	for i, n := range tx.newType {
		if n == t {
			return uint16(len(tx.g.byID) + i), true
		}
	}
	return 0, false
}

func (tx *txn) typeName(id uint16) string {
	if int(id) < len(tx.g.byID) {
		return tx.g.byID[id].name
	}
	return tx.newType[int(id)-len(tx.g.byID)].name
}

func (tx *txn) hashOf(x *Ident) *hash {
	if !x.hset {
		tx.g.hashInto(&x.h, x.Type, []byte(x.Value))
		x.hset = true
	}
	return &x.h
}

func (tx *txn) appendLog(e LogEntry) {
	e.Seq = tx.seq
	tx.seq++
	tx.log = append(tx.log, e)
}

func timeOf(us int64) time.Time { return time.UnixMicro(us).UTC() }

func micros2secs(t int64) int64 {
	if t < 0 {
		return (t - 999999) / 1e6
	}
	return t / 1e6
}

// apply applies one operation to the txn. It is the only code that changes
// the graph.
func (tx *txn) apply(op *Op) error {
	ts := micros2secs(op.Time)
	switch op.Kind {
	case OpCreate:
		if op.Profile != tx.next {
			return fmt.Errorf("%w: create %d, next profile id is %d", ErrOpConflict, op.Profile, tx.next)
		}
		if tx.next == 1<<32-1 {
			return fmt.Errorf("%w: profile ids exhausted", ErrOpConflict)
		}
		tx.next++
		p := &profile{id: op.Profile, created: ts}
		tx.profs[p.id] = p
		tx.tally.created++
		if err := tx.link(p, op.Idents, ts); err != nil {
			return err
		}
	case OpLink:
		p, err := tx.live(op.Profile)
		if err != nil {
			return err
		}
		if err := tx.link(p, op.Idents, ts); err != nil {
			return err
		}
	case OpTouch:
		p, err := tx.live(op.Profile)
		if err != nil {
			return err
		}
		for i := range op.Idents {
			x := &op.Idents[i]
			id, ok := tx.knownTypeID(x.Type)
			if !ok {
				continue
			}
			if j := p.findIdent(id, tx.hashOf(x)); j >= 0 {
				pi := &p.idents[j]
				pi.last = max(pi.last, ts)
				tx.ids[*tx.hashOf(x)] = identEntry{p.id, pi.last}
			}
		}
	case OpMerge:
		if err := tx.merge(op, ts); err != nil {
			return err
		}
	case OpRefuse:
		tx.appendLog(LogEntry{Kind: LogRefused, Time: op.Time, Survivor: op.Profile,
			Merged: slices.Clone(op.Merged), MessageID: op.MessageID, Rule: op.Rule})
	case OpRemove:
		if err := tx.remove(op); err != nil {
			return err
		}
	case OpSplit:
		if err := tx.split(op, ts); err != nil {
			return err
		}
	case OpErase:
		if err := tx.erase(op); err != nil {
			return err
		}
	case OpSuppress:
		if err := tx.suppress(op); err != nil {
			return err
		}
	case OpUnsuppress:
		if err := tx.unsuppress(op); err != nil {
			return err
		}
	case OpReplace:
		if err := tx.replace(op); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown op kind %d", ErrOpConflict, op.Kind)
	}
	tx.tally.ops[op.Kind]++
	if tx.g.onCommit != nil {
		tx.applied = append(tx.applied, *op)
	}
	return nil
}

func (tx *txn) link(p *profile, idents []Ident, ts int64) error {
	for i := range idents {
		x := &idents[i]
		h := tx.hashOf(x)
		cur, err := tx.ident(h)
		if err != nil {
			return err
		}
		if cur.pid != 0 {
			return fmt.Errorf("%w: identifier of type %s already belongs to profile %d", ErrOpConflict, x.Type, cur.pid)
		}
		t := tx.g.typeByName(x.Type)
		if t == nil {
			return fmt.Errorf("%w: unknown identifier type", ErrOpConflict)
		}
		id, err := tx.typeID(t)
		if err != nil {
			return err
		}
		p.idents = append(p.idents, pident{typ: id, origin: p.id, first: ts, last: ts, h: *h, value: x.Value})
		tx.ids[*h] = identEntry{p.id, ts}
		tx.tally.added++
	}
	return nil
}

func (tx *txn) merge(op *Op, ts int64) error {
	s, err := tx.live(op.Profile)
	if err != nil {
		return err
	}
	for _, m := range op.Merged {
		if m <= s.id {
			return fmt.Errorf("%w: merge of %d into younger profile %d", ErrOpConflict, m, s.id)
		}
		q, err := tx.live(m)
		if err != nil {
			return err
		}
		// The identifiers move to the survivor: their values are sealed
		// again under its key at commit. The merged profile's key stays
		// (Split restores the profile under it; Erase of the survivor
		// destroys it with the survivor's).
		if err := tx.g.reveal(q); err != nil {
			return err
		}
		for i := range q.idents {
			x := &q.idents[i]
			tx.ids[x.h] = identEntry{s.id, x.last}
		}
		s.idents = append(s.idents, q.idents...)
		s.merged = append(s.merged, mergedRef{q.id, s.id})
		for _, r := range q.merged {
			s.merged = append(s.merged, r)
			// Keep every redirect one hop from its live profile.
			tx.profs[r.id] = &profile{id: r.id, redirect: s.id}
		}
		for _, a := range q.apart {
			if !s.isApart(a) {
				s.apart = append(s.apart, a)
			}
		}
		tx.profs[q.id] = &profile{id: q.id, redirect: s.id}
		tx.tally.merged++
	}
	tx.appendLog(LogEntry{Kind: LogMerge, Time: op.Time, Survivor: s.id, Merged: slices.Clone(op.Merged),
		MessageID: op.MessageID, Rule: op.Rule})
	tx.merges = append(tx.merges, engine.Merge{Survivor: s.id, Merged: slices.Clone(op.Merged),
		Time: timeOf(op.Time), MessageID: op.MessageID, Rule: op.Rule})
	return nil
}

func (tx *txn) remove(op *Op) error {
	if len(op.Idents) != 1 {
		return fmt.Errorf("%w: remove takes one identifier", ErrOpConflict)
	}
	x := &op.Idents[0]
	h := tx.hashOf(x)
	e, err := tx.ident(h)
	if err != nil {
		return err
	}
	pid := e.pid
	if pid == 0 {
		return ErrNotFound
	}
	p, err := tx.live(pid)
	if err != nil {
		return err
	}
	j := -1
	if id, ok := tx.knownTypeID(x.Type); ok {
		j = p.findIdent(id, h)
	}
	if j < 0 {
		return fmt.Errorf("%w: identifier missing from profile %d", ErrOpConflict, pid)
	}
	if j < p.nsealed {
		// Its value sits in a sealed chunk: open them all, and seal what
		// remains again at commit.
		if err := tx.g.reveal(p); err != nil {
			return err
		}
	}
	p.idents = slices.Delete(p.idents, j, j+1)
	tx.ids[*h] = identEntry{}
	tx.appendLog(LogEntry{Kind: LogRemove, Time: op.Time, Survivor: pid, MessageID: op.MessageID,
		Rule: "type:" + x.Type})
	return nil
}

func (tx *txn) split(op *Op, ts int64) error {
	p, err := tx.get(op.Profile)
	if err != nil {
		return err
	}
	if p == nil {
		return ErrNotFound
	}
	if p.redirect == 0 {
		return tx.splitAll(op, ts)
	}
	return tx.splitOut(op, p.redirect, ts)
}

// splitAll splits the live profile op.Profile into every profile it absorbed.
func (tx *txn) splitAll(op *Op, ts int64) error {
	s, err := tx.live(op.Profile)
	if err != nil {
		return err
	}
	if len(s.merged) == 0 {
		return fmt.Errorf("%w: profile %d has no merges to split", ErrOpConflict, s.id)
	}
	// Every part gets its identifiers back in plain, sealed again under
	// its own key at commit (a merged profile's key survives the merge).
	if err := tx.g.reveal(s); err != nil {
		return err
	}
	parts := map[uint32]*profile{s.id: s}
	ids := []uint32{s.id}
	for _, m := range s.merged {
		parts[m.id] = &profile{id: m.id, created: ts}
		ids = append(ids, m.id)
	}
	for _, part := range parts {
		for _, id := range ids {
			if id != part.id && !part.isApart(id) {
				part.apart = append(part.apart, id)
			}
		}
	}
	kept := s.idents[:0:0]
	for _, x := range s.idents {
		q := parts[x.origin]
		if q == nil || q == s {
			kept = append(kept, x)
			continue
		}
		q.idents = append(q.idents, x)
		tx.ids[x.h] = identEntry{q.id, x.last}
	}
	s.idents = kept
	s.merged = nil
	for _, id := range ids[1:] {
		tx.profs[id] = parts[id]
	}
	tx.appendLog(LogEntry{Kind: LogSplit, Time: op.Time, Survivor: s.id, Merged: ids[1:],
		MessageID: op.MessageID, Rule: op.Rule})
	return nil
}

// splitOut splits the merged profile op.Profile, with the profiles merged
// into it before, out of its survivor sid.
func (tx *txn) splitOut(op *Op, sid uint32, ts int64) error {
	s, err := tx.live(sid)
	if err != nil {
		return err
	}
	if err := tx.g.reveal(s); err != nil {
		return err
	}
	// The subtree of op.Profile: it, and every profile whose parent chain
	// within s.merged reaches it.
	parent := make(map[uint32]uint32, len(s.merged))
	for _, m := range s.merged {
		parent[m.id] = m.parent
	}
	in := func(id uint32) bool {
		for n := 0; id != 0 && n <= len(s.merged); n++ {
			if id == op.Profile {
				return true
			}
			id = parent[id]
		}
		return false
	}
	q := &profile{id: op.Profile, created: ts, apart: []uint32{s.id}}
	keptM := s.merged[:0:0]
	for _, m := range s.merged {
		switch {
		case m.id == op.Profile:
		case in(m.id):
			q.merged = append(q.merged, m)
			tx.profs[m.id] = &profile{id: m.id, redirect: q.id}
		default:
			keptM = append(keptM, m)
		}
	}
	kept := s.idents[:0:0]
	for _, x := range s.idents {
		if !in(x.origin) {
			kept = append(kept, x)
			continue
		}
		q.idents = append(q.idents, x)
		tx.ids[x.h] = identEntry{q.id, x.last}
	}
	s.idents, s.merged = kept, keptM
	if !s.isApart(q.id) {
		s.apart = append(s.apart, q.id)
	}
	tx.profs[q.id] = q
	moved := []uint32{q.id}
	for _, m := range q.merged {
		moved = append(moved, m.id)
	}
	tx.appendLog(LogEntry{Kind: LogSplit, Time: op.Time, Survivor: s.id, Merged: moved,
		MessageID: op.MessageID, Rule: op.Rule})
	return nil
}

// commit writes the txn and offsets in one synced Pebble batch, then makes
// the txn visible to the caches and counters.
func (tx *txn) commit(offsets []engine.Offset) error {
	g := tx.g
	w := g.db.NewBatch()
	defer w.Close()
	if g.kr != nil {
		defer g.kr.Abandon(w) // a no-op once Committed
	}
	set := func(k, v []byte) error {
		if err := w.Set(k, v, nil); err != nil {
			return fmt.Errorf("cannot stage identity write: %w", err)
		}
		return nil
	}
	for h, e := range tx.ids {
		tx.kbuf = identKey(tx.kbuf[:0], &h)
		if e.pid == 0 {
			if err := w.Delete(tx.kbuf, nil); err != nil {
				return fmt.Errorf("cannot stage identity write: %w", err)
			}
			continue
		}
		tx.vbuf = appendIdentValue(tx.vbuf[:0], e)
		if err := set(tx.kbuf, tx.vbuf); err != nil {
			return err
		}
	}
	if err := tx.sealValues(w); err != nil {
		return err
	}
	for id, p := range tx.profs {
		tx.kbuf = profileKey(tx.kbuf[:0], id)
		if p == nil {
			if err := w.Delete(tx.kbuf, nil); err != nil {
				return fmt.Errorf("cannot stage identity write: %w", err)
			}
			continue
		}
		if g.kr != nil {
			tx.vbuf = appendProfileV2(tx.vbuf[:0], p)
		} else {
			tx.vbuf = appendProfileV1(tx.vbuf[:0], p)
		}
		if err := set(tx.kbuf, tx.vbuf); err != nil {
			return err
		}
	}
	for i := range tx.log {
		e := &tx.log[i]
		tx.kbuf = logKey(tx.kbuf[:0], e.Seq)
		tx.vbuf = appendLogEntry(tx.vbuf[:0], e)
		if err := set(tx.kbuf, tx.vbuf); err != nil {
			return err
		}
		for _, id := range append([]uint32{e.Survivor}, e.Merged...) {
			if id == 0 { // erased in this txn
				continue
			}
			tx.kbuf = logIdxKey(tx.kbuf[:0], id, e.Seq)
			if err := set(tx.kbuf, nil); err != nil {
				return err
			}
		}
	}
	if err := tx.stageErasure(w); err != nil {
		return err
	}
	if err := tx.stageSuppression(w); err != nil {
		return err
	}
	for i, t := range tx.newType {
		tx.vbuf = append(tx.vbuf[:0], valueV1)
		tx.vbuf = binary.AppendUvarint(tx.vbuf, uint64(len(g.byID)+i))
		if err := set(typeKey(tx.kbuf[:0], t.name), tx.vbuf); err != nil {
			return err
		}
	}
	if tx.next != g.next || tx.seq != g.seq {
		if err := set([]byte{prefixMeta, metaCounters}, appendCounters(tx.vbuf[:0], tx.next, tx.seq)); err != nil {
			return err
		}
	}
	if err := engine.PutOffsets(w, stageName, offsets); err != nil {
		return err
	}
	if w.Empty() {
		return nil
	}
	if err := w.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("cannot commit identity batch: %w", err)
	}
	if g.kr != nil {
		g.kr.Committed(w)
	}
	tx.publish()
	return nil
}

// maxChunks bounds the sealed chunks of one record: a commit that would
// add one more seals all the values again as one chunk. Each chunk costs
// 30 bytes or so (count, length, nonce, tag); links are rarer than
// touches, so most records have one or two.
const maxChunks = 4

// sealValues seals, with a keyring, the plain values each written profile
// gained (idents past nsealed) into a new chunk under the profile's key,
// in profile id order (so a seeded keyring gives the same bytes), staging
// a new key into w where a profile has none. The sealed profiles keep no
// plain value: they go to the cache as stored.
func (tx *txn) sealValues(w *pebble.Batch) error {
	kr := tx.g.kr
	if kr == nil {
		return nil
	}
	tx.seal = tx.seal[:0]
	for id, p := range tx.profs {
		if p != nil && p.redirect == 0 && p.nsealed < len(p.idents) {
			tx.seal = append(tx.seal, id)
		}
	}
	slices.Sort(tx.seal)
	for _, id := range tx.seal {
		p := tx.profs[id]
		if len(p.sealed) >= maxChunks {
			if err := tx.g.reveal(p); err != nil {
				return err
			}
		}
		fresh := p.idents[p.nsealed:]
		g := tx.g
		g.pt = appendValues(g.pt[:0], fresh)
		tx.vbuf = valuesAAD(tx.vbuf[:0], fresh)
		b, err := kr.Seal(nil, w, id, g.pt, tx.vbuf)
		clear(g.pt)
		if err != nil {
			return fmt.Errorf("cannot seal the identifiers of profile %d: %w", id, err)
		}
		p.sealed = append(p.sealed, chunk{n: len(fresh), b: b})
		for i := range fresh {
			fresh[i].value = ""
		}
		p.nsealed = len(p.idents)
	}
	return nil
}

func (tx *txn) publish() {
	g := tx.g
	for h, e := range tx.ids {
		g.idc.put(h, e)
	}
	for id, p := range tx.profs {
		if p == nil {
			g.pc.drop(id)
			continue
		}
		g.pc.put(id, p)
	}
	for _, t := range tx.newType {
		t.id = uint16(len(g.byID))
		g.byID = append(g.byID, t)
	}
	g.next, g.seq = tx.next, tx.seq
	tx.publishSuppression()
	g.markGone(tx.gone)
	if g.onCommit != nil && len(tx.applied) > 0 {
		g.onCommit(tx.applied)
	}
	m := g.m
	m.created.Add(float64(tx.tally.created))
	m.merges.Add(float64(tx.tally.merged))
	m.added.Add(float64(tx.tally.added))
	m.erased.Add(float64(tx.tally.erased))
	for k, n := range tx.tally.ops {
		if n > 0 {
			m.ops.WithLabelValues(OpKind(k).String()).Add(float64(n))
		}
	}
	// The txn's profiles now belong to the cache: begin clears the map, and
	// live clones a cached record before changing it.
}

// OnCommit sets f to be called with the ops of every commit, in order,
// after they are durable; f runs under the Graph's lock and must not keep
// the slice. It is how the identity log will be fed (a later issue); nil
// removes the hook.
func (g *Graph) OnCommit(f func(ops []Op)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.onCommit = f
}

// Apply applies ops in order and commits them in one synced Pebble batch.
// It is how a replica replays the identity log, and how removal and split
// are carried out. On error nothing is applied. When ops hold an OpErase,
// Apply then compacts the erased keys as Erase does.
func (g *Graph) Apply(ops []Op) error {
	g.mu.Lock()
	err := g.applyLocked(ops)
	g.mu.Unlock()
	if err != nil || !slices.ContainsFunc(ops, func(op Op) bool { return op.Kind == OpErase }) {
		return err
	}
	return g.compactErased(context.Background())
}

func (g *Graph) applyLocked(ops []Op) error {
	tx := g.newTxn()
	tx.begin()
	for i := range ops {
		if err := tx.apply(&ops[i]); err != nil {
			if len(ops) == 1 {
				return fmt.Errorf("cannot apply %s: %w", ops[i].Kind, err)
			}
			return fmt.Errorf("cannot apply %s op %d: %w", ops[i].Kind, i, err)
		}
	}
	return tx.commit(nil)
}

// RemoveIdentifier removes one identifier from its profile. value is
// normalised by its type's rule first. The removal is logged; a later event
// carrying the value may add it again (block it in config to prevent that).
func (g *Graph) RemoveIdentifier(typ, value, requestID string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	x, err := g.normIdent(typ, value)
	if err != nil {
		return err
	}
	return g.applyLocked([]Op{{Kind: OpRemove, Time: g.now().UnixMicro(), Idents: []Ident{x},
		MessageID: requestID, Rule: "api"}})
}

// Split undoes merges using the merge log: a live profile is split back
// into every profile it absorbed, each with the identifiers it brought (an
// identifier added after a merge stays with the profile that added it); a
// merged profile id is split out of its survivor with what it brought. The
// parts are marked apart: no event merges them again (such merges are
// refused with reason "apart" and matching retries without the
// lowest-priority identifier).
func (g *Graph) Split(profileID uint32, requestID string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.applyLocked([]Op{{Kind: OpSplit, Time: g.now().UnixMicro(), Profile: profileID,
		MessageID: requestID, Rule: "api"}})
}

// normIdent normalises an identifier given by a caller (not an event).
func (g *Graph) normIdent(typ, value string) (Ident, error) {
	t := g.types[typ]
	if t == nil {
		return Ident{}, fmt.Errorf("%w: unknown identifier type %q", ErrNotFound, typ)
	}
	v, ok := t.norm(nil, value)
	if !ok {
		return Ident{}, fmt.Errorf("%w: invalid %s value", ErrNotFound, typ)
	}
	return Ident{Type: t.name, Value: string(v)}, nil
}

// typeAt returns the type with persisted (or in-txn) id, nil if unknown.
func (tx *txn) typeAt(id uint16) *typeInfo {
	if int(id) < len(tx.g.byID) {
		return tx.g.byID[id]
	}
	if i := int(id) - len(tx.g.byID); i < len(tx.newType) {
		return tx.newType[i]
	}
	return nil
}
