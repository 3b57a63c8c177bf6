package identity

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// Suppression: the keyed hashes of a person's identifiers, kept so that
// the Stage drops every later event carrying any of them before resolving
// it, even once the person's profiles are erased. Layout in doc.go.
const (
	prefixSupp  byte = 0x18 // 0x18 | hmac16 → v1 | uvarint group
	prefixGroup byte = 0x19 // 0x19 | group (8 BE) → v1 | uvarint n | n × hmac16 (sorted)
	metaGroups  byte = 0x04 // 0x10 0x04 → v1 | uvarint next group id
)

// ReasonSuppressed is the drop reason of an event carrying a suppressed
// identifier (engine.Batch.Drops): the code the consent policies use for
// suppressed profiles.
const ReasonSuppressed engine.Reason = "suppressed"

func suppKey(dst []byte, h *hash) []byte {
	dst = append(dst, prefixSupp)
	return append(dst, h[:]...)
}

func groupKey(dst []byte, id uint64) []byte {
	dst = append(dst, prefixGroup)
	return binary.BigEndian.AppendUint64(dst, id)
}

func appendGroup(dst []byte, members []hash) []byte {
	dst = append(dst, valueV1)
	dst = binary.AppendUvarint(dst, uint64(len(members)))
	for i := range members {
		dst = append(dst, members[i][:]...)
	}
	return dst
}

func decodeGroup(v []byte) ([]hash, error) {
	if len(v) < 2 || v[0] != valueV1 {
		return nil, corrupt("suppression group")
	}
	d := decoder{b: v[1:]}
	n := d.count(hashLen)
	if d.err != nil || len(d.b) != n*hashLen {
		return nil, corrupt("suppression group")
	}
	out := make([]hash, n)
	for i := range out {
		copy(out[i][:], d.b[i*hashLen:])
	}
	return out, nil
}

func decodeGroupID(v []byte) (uint64, error) {
	if len(v) < 2 || v[0] != valueV1 {
		return 0, corrupt("suppressed identifier")
	}
	d := decoder{b: v[1:]}
	id := d.uvarint()
	if d.err != nil || len(d.b) != 0 || id == 0 {
		return 0, corrupt("suppressed identifier")
	}
	return id, nil
}

// loadSuppression reads the suppressed hashes into memory and the group
// counter.
func (g *Graph) loadSuppression() error {
	g.supp = make(map[hash]uint64)
	g.nextGroup = 1
	v, closer, err := g.db.Get([]byte{prefixMeta, metaGroups})
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("cannot read suppression counter: %w", err)
	default:
		g.nextGroup, err = decodeGroupID(v)
		closer.Close()
		if err != nil {
			return err
		}
	}
	it, err := g.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixSupp}, UpperBound: []byte{prefixSupp + 1}})
	if err != nil {
		return fmt.Errorf("cannot read suppressed identifiers: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 1+hashLen {
			return corrupt("suppressed identifier key")
		}
		id, err := decodeGroupID(it.Value())
		if err != nil {
			return err
		}
		g.supp[hash(k[1:])] = id
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("cannot read suppressed identifiers: %w", err)
	}
	g.m.suppressed.Set(float64(len(g.supp)))
	return nil
}

// Suppress keeps the keyed hash of every identifier the profiles pids hold
// (those of profiles merged into them included), and of the identifiers
// refs name (raw values normalised, or SHA-256 of the normalised value;
// they need not belong to any profile: a person never seen yet can be
// suppressed), so that the Stage drops every later event carrying any of
// them, before resolution: no profile is created, no identifier linked,
// no last seen moved. The hashes outlive Erase: call Suppress first, then
// Erase, for erase-and-suppress.
//
// A merged id stands for its survivor; unknown and erased ids are
// skipped, and so are refs of an unknown type or invalid for their type.
// All hashes of one call form one suppression group, which
// UnsuppressIdentities lifts as a whole (by any identifier of the group,
// even after the profiles are erased). When some hashes are suppressed
// already, the call joins the lowest of their groups instead of starting
// one, and merges the other groups it touches into it, so suppressing a
// person twice is a no-op (Suppress is idempotent) and suppressing two
// people found to be one makes one group. The change is one synced batch of OpSuppress ops. It
// returns the group (0 when there was nothing to suppress).
func (g *Graph) Suppress(ctx context.Context, pids []uint32, refs ...Ref) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var live []uint32
	for _, id := range pids {
		p, err := g.loadProfile(id)
		if err != nil {
			return 0, err
		}
		switch {
		case p == nil:
		case p.redirect != 0:
			live = append(live, p.redirect)
		default:
			live = append(live, id)
		}
	}
	slices.Sort(live)
	live = slices.Compact(live)
	var touched []uint64 // groups already holding one of the hashes
	var h hash
	var given [][hashLen]byte
	for _, r := range refs {
		if err := g.hashRef(&h, r); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return 0, err
		}
		given = append(given, h)
		if gr := g.supp[h]; gr != 0 {
			touched = append(touched, gr)
		}
	}
	if len(live) == 0 && len(given) == 0 {
		return 0, nil
	}
	for _, id := range live {
		p, err := g.loadProfile(id)
		if err != nil {
			return 0, err
		}
		if p == nil || p.redirect != 0 {
			return 0, fmt.Errorf("%w: profile %d is not live", ErrCorrupt, id)
		}
		for i := range p.idents {
			h = p.idents[i].h // values may be sealed; hashes are kept in plain
			if gr := g.supp[h]; gr != 0 {
				touched = append(touched, gr)
			}
		}
	}
	slices.Sort(touched)
	touched = slices.Compact(touched)
	group := g.nextGroup
	now := g.now().UnixMicro()
	ops := make([]Op, 0, len(touched)+len(live)+1)
	if len(touched) > 0 {
		// The call joins the lowest group it touches; the other groups it
		// touches are merged into that one (lifted and their hashes
		// suppressed again in it, in the same batch), so the person is
		// one group and unsuppress by any of their identifiers lifts all.
		group = touched[0]
		for _, gr := range touched[1:] {
			members, err := g.groupMembers(gr)
			if err != nil {
				return 0, err
			}
			ops = append(ops, Op{Kind: OpUnsuppress, Time: now, Group: gr})
			given = append(given, members...)
		}
	}
	for _, id := range live {
		ops = append(ops, Op{Kind: OpSuppress, Time: now, Profile: id, Group: group})
	}
	if len(given) > 0 {
		ops = append(ops, Op{Kind: OpSuppress, Time: now, Group: group, Hashes: given})
	}
	if err := g.applyLocked(ops); err != nil {
		return 0, err
	}
	return group, nil
}

// groupMembers reads the committed members of suppression group id.
func (g *Graph) groupMembers(id uint64) ([][hashLen]byte, error) {
	m, err := readGroup(g.db, id)
	out := make([][hashLen]byte, len(m))
	for i := range m {
		out[i] = m[i]
	}
	return out, err
}

// readGroup reads the committed members of suppression group id; nil if
// there is no such group.
func readGroup(db *pebble.DB, id uint64) ([]hash, error) {
	v, closer, err := db.Get(groupKey(nil, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read suppression group: %w", err)
	}
	defer closer.Close()
	return decodeGroup(v)
}

// UnsuppressIdentities lifts every suppression group holding one of the
// identifiers refs name (raw values are normalised; hashed ones are the
// SHA-256 of the normalised value): all the hashes of those groups go, so
// unsuppressing a person by one email lets events carrying any identifier
// suppressed with it through again. Identifiers that are not suppressed,
// of an unknown type, or not valid for their type are skipped, so it is
// idempotent. The change is one synced batch of OpUnsuppress ops.
func (g *Graph) UnsuppressIdentities(ctx context.Context, refs []Ref) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var groups []uint64
	var h hash
	for _, r := range refs {
		if err := g.hashRef(&h, r); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return err
		}
		if gr := g.supp[h]; gr != 0 {
			groups = append(groups, gr)
		}
	}
	slices.Sort(groups)
	groups = slices.Compact(groups)
	if len(groups) == 0 {
		return nil
	}
	now := g.now().UnixMicro()
	ops := make([]Op, 0, len(groups))
	for _, gr := range groups {
		ops = append(ops, Op{Kind: OpUnsuppress, Time: now, Group: gr})
	}
	return g.applyLocked(ops)
}

// Suppressed reports whether the identifier r names is suppressed.
func (g *Graph) Suppressed(r Ref) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var h hash
	if err := g.hashRef(&h, r); err != nil {
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return g.supp[h] != 0, nil
}

// suppGroup returns the group of the suppressed hash h, 0 if it is not
// suppressed, with the txn's own changes.
func (tx *txn) suppGroup(h *hash) uint64 {
	if gr, ok := tx.supp[*h]; ok {
		return gr
	}
	return tx.g.supp[*h]
}

// group returns the members of suppression group id, with the txn's own
// changes; nil if there is no such group. The result must not be modified.
func (tx *txn) group(id uint64) ([]hash, error) {
	if m, ok := tx.groups[id]; ok {
		return m, nil
	}
	return readGroup(tx.g.db, id)
}

// suppress applies OpSuppress: see the OpSuppress doc.
func (tx *txn) suppress(op *Op) error {
	switch {
	case op.Group == 0 || op.Group > tx.nextGroup:
		return fmt.Errorf("%w: suppression group %d, next group is %d", ErrOpConflict, op.Group, tx.nextGroup)
	case op.Group == tx.nextGroup:
		tx.nextGroup++
	}
	var p *profile
	if op.Profile != 0 {
		var err error
		if p, err = tx.get(op.Profile); err != nil {
			return err
		}
		if p != nil && p.redirect != 0 {
			return fmt.Errorf("%w: profile %d is merged into %d; suppress that profile", ErrOpConflict, p.id, p.redirect)
		}
	}
	if p == nil && len(op.Hashes) == 0 {
		return nil // unknown or erased: nothing to suppress
	}
	cur, err := tx.group(op.Group)
	if err != nil {
		return err
	}
	members := slices.Clone(cur)
	add := func(h hash) {
		if tx.suppGroup(&h) == 0 {
			tx.supp[h] = op.Group
			members = append(members, h)
		}
	}
	if p != nil {
		for i := range p.idents {
			add(p.idents[i].h)
		}
	}
	for _, k := range op.Hashes {
		add(k)
	}
	if len(members) == len(cur) {
		return nil
	}
	slices.SortFunc(members, func(a, b hash) int { return bytes.Compare(a[:], b[:]) })
	tx.groups[op.Group] = members
	return nil
}

// unsuppress applies OpUnsuppress: see the OpUnsuppress doc.
func (tx *txn) unsuppress(op *Op) error {
	members, err := tx.group(op.Group)
	if err != nil || members == nil {
		return err // unknown or lifted already: idempotent
	}
	for i := range members {
		if tx.suppGroup(&members[i]) == op.Group {
			tx.supp[members[i]] = 0
		}
	}
	tx.groups[op.Group] = nil
	return nil
}

// stageSuppression adds the txn's suppression changes to w.
func (tx *txn) stageSuppression(w *pebble.Batch) error {
	for h, gr := range tx.supp {
		tx.kbuf = suppKey(tx.kbuf[:0], &h)
		var err error
		if gr == 0 {
			err = w.Delete(tx.kbuf, nil)
		} else {
			tx.vbuf = binary.AppendUvarint(append(tx.vbuf[:0], valueV1), gr)
			err = w.Set(tx.kbuf, tx.vbuf, nil)
		}
		if err != nil {
			return fmt.Errorf("cannot stage identity write: %w", err)
		}
	}
	for id, m := range tx.groups {
		tx.kbuf = groupKey(tx.kbuf[:0], id)
		var err error
		if m == nil {
			err = w.Delete(tx.kbuf, nil)
		} else {
			err = w.Set(tx.kbuf, appendGroup(tx.vbuf[:0], m), nil)
		}
		if err != nil {
			return fmt.Errorf("cannot stage identity write: %w", err)
		}
	}
	if tx.nextGroup != tx.g.nextGroup {
		tx.vbuf = binary.AppendUvarint(append(tx.vbuf[:0], valueV1), tx.nextGroup)
		if err := w.Set([]byte{prefixMeta, metaGroups}, tx.vbuf, nil); err != nil {
			return fmt.Errorf("cannot stage identity write: %w", err)
		}
	}
	return nil
}

// publishSuppression makes the txn's suppression changes visible.
func (tx *txn) publishSuppression() {
	g := tx.g
	for h, gr := range tx.supp {
		if gr == 0 {
			delete(g.supp, h)
		} else {
			g.supp[h] = gr
		}
	}
	g.nextGroup = tx.nextGroup
	if len(tx.supp) > 0 {
		g.m.suppressed.Set(float64(len(g.supp)))
	}
}

// checkSuppression verifies the suppression families: every suppressed
// hash names a group that lists it, every group member is suppressed in
// that group, every group is below the counter, and memory matches disk.
// g.mu must be held.
func (g *Graph) checkSuppression() error {
	onDisk := map[hash]uint64{}
	it, err := g.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixSupp}, UpperBound: []byte{prefixGroup + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	groups := map[uint64][]hash{}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		switch {
		case k[0] == prefixSupp && len(k) == 1+hashLen:
			id, err := decodeGroupID(it.Value())
			if err != nil {
				return err
			}
			onDisk[hash(k[1:])] = id
		case k[0] == prefixGroup && len(k) == 9:
			m, err := decodeGroup(it.Value())
			if err != nil {
				return err
			}
			if len(m) == 0 {
				return fmt.Errorf("suppression group %d is empty", be64(k[1:]))
			}
			groups[be64(k[1:])] = m
		default:
			return corrupt("suppression key")
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	n := 0
	for id, m := range groups {
		if id == 0 || id >= g.nextGroup {
			return fmt.Errorf("suppression group %d not below the counter %d", id, g.nextGroup)
		}
		for _, h := range m {
			if onDisk[h] != id {
				return fmt.Errorf("group %d lists a hash suppressed in group %d", id, onDisk[h])
			}
		}
		n += len(m)
	}
	if n != len(onDisk) {
		return fmt.Errorf("%d suppressed hashes, %d group members", len(onDisk), n)
	}
	if len(onDisk) != len(g.supp) {
		return fmt.Errorf("%d suppressed hashes on disk, %d in memory", len(onDisk), len(g.supp))
	}
	for h, id := range onDisk {
		if g.supp[h] != id {
			return fmt.Errorf("suppressed hash in group %d on disk, %d in memory", id, g.supp[h])
		}
	}
	return nil
}
