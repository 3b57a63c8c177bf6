package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
)

// ErrInvalid is returned for an identifier value that its type's rules
// refuse (the normaliser rejects it, or it is a blocked value).
var ErrInvalid = errors.New("identity: invalid identifier value")

// ReplaceIdentifier replaces the identifier (typ, oldValue) of profile pid
// by (typ, newValue), for rectification. Both values are normalised by
// typ's rule first; the new one must be valid and not blocked (ErrInvalid). pid may be a
// merged id: its survivor is changed. The new value takes the old one's
// place: it keeps its origin (a split returns it where the old one would
// have gone) and its first and last seen (a correction is neither
// activity nor a new value counted against the type's limit). If the old
// identifier was suppressed, the new one is suppressed in the same group.
//
// Errors: ErrNotFound when pid is unknown or erased, or the profile holds
// neither value; ErrOpConflict when the new value belongs to another
// profile. It is idempotent: when the profile holds the new value and not
// the old one there is nothing to do; when it holds both, the old one is
// removed. The change is one
// OpReplace through txn.apply, logged (LogReplace, rule "type:<typ>"), in
// one synced batch.
func (g *Graph) ReplaceIdentifier(ctx context.Context, pid uint32, typ, oldValue, newValue string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	o, err := g.normIdent(typ, oldValue)
	if err != nil {
		return err
	}
	t := g.types[typ]
	nv, ok := t.norm(nil, newValue)
	if !ok || t.block.blocked(nv) {
		return fmt.Errorf("%w: new %s value", ErrInvalid, typ)
	}
	n := Ident{Type: t.name, Value: string(nv)}
	p, err := g.loadProfile(pid)
	if err != nil {
		return err
	}
	if p != nil && p.redirect != 0 {
		if p, err = g.loadProfile(p.redirect); err != nil {
			return err
		}
	}
	if p == nil || p.redirect != 0 {
		return fmt.Errorf("%w: profile %d", ErrNotFound, pid)
	}
	if o.Value == n.Value {
		return nil
	}
	var ho, hn hash
	g.hashInto(&ho, t.name, []byte(o.Value))
	g.hashInto(&hn, t.name, nv)
	if t.id != 0 && p.findIdent(t.id, &ho) < 0 && p.findIdent(t.id, &hn) >= 0 {
		return nil // replaced already (a retried request)
	}
	return g.applyLocked([]Op{{Kind: OpReplace, Time: g.now().UnixMicro(), Profile: p.id,
		Idents: []Ident{o, n}, Rule: "api"}})
}

// replace applies OpReplace: see the OpReplace doc.
func (tx *txn) replace(op *Op) error {
	if len(op.Idents) != 2 || op.Idents[0].Type != op.Idents[1].Type || op.Idents[0].Value == op.Idents[1].Value {
		return fmt.Errorf("%w: replace takes two values of one type", ErrOpConflict)
	}
	p, err := tx.live(op.Profile)
	if err != nil {
		return err
	}
	o, n := &op.Idents[0], &op.Idents[1]
	ho, hn := tx.hashOf(o), tx.hashOf(n)
	j := -1
	if id, ok := tx.knownTypeID(o.Type); ok {
		j = p.findIdent(id, ho)
	}
	if j < 0 {
		return fmt.Errorf("%w: profile %d holds no such %s", ErrNotFound, p.id, o.Type)
	}
	if e, err := tx.ident(ho); err != nil {
		return err
	} else if e.pid != p.id {
		return fmt.Errorf("%w: identifier of profile %d points to %d", ErrOpConflict, p.id, e.pid)
	}
	en, err := tx.ident(hn)
	if err != nil {
		return err
	}
	if en.pid == 0 || en.pid == p.id {
		if j < p.nsealed {
			// The old value sits in a sealed chunk: open them all; the
			// commit seals every value again under the profile's key.
			if err := tx.g.reveal(p); err != nil {
				return err
			}
		}
	}
	switch en.pid {
	case p.id:
		p.idents = slices.Delete(p.idents, j, j+1)
	case 0:
		p.idents[j].value = n.Value
		p.idents[j].h = *hn
		tx.ids[*hn] = identEntry{p.id, p.idents[j].last}
	default:
		return fmt.Errorf("%w: the new %s belongs to profile %d", ErrOpConflict, n.Type, en.pid)
	}
	tx.ids[*ho] = identEntry{}
	if gr := tx.suppGroup(ho); gr != 0 && tx.suppGroup(hn) == 0 {
		cur, err := tx.group(gr)
		if err != nil {
			return err
		}
		members := append(slices.Clone(cur), *hn)
		slices.SortFunc(members, func(a, b hash) int { return bytes.Compare(a[:], b[:]) })
		tx.groups[gr] = members
		tx.supp[*hn] = gr
	}
	tx.appendLog(LogEntry{Kind: LogReplace, Time: op.Time, Survivor: p.id, MessageID: op.MessageID,
		Rule: "type:" + o.Type})
	return nil
}
