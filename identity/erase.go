package identity

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
)

// Erase erases the live profiles pids for a data subject request: for each,
// every identifier key pointing to it, its profile record, the redirect
// records of the profiles merged into it, and the message ids and rules of
// the merge-log entries naming any of them (which become anonymous
// tombstones, see LogEntry.Erased) — all in one synced Pebble batch of
// OpErase ops applied through the single writer, so OnCommit hooks see
// them. Caches drop the records. The erased keys are staged in the same
// batch as compaction debt (engine.Compactor); without WithCompactor the
// Graph's own compactor then flushes Pebble and compacts them before Erase
// returns, so the old bytes leave the SSTs.
//
// pids are live (canonical) profile ids; Erase does not follow a redirect.
// A merged id is fine when its survivor is in pids too (it is erased with
// it); otherwise Erase fails with ErrOpConflict and erases nothing, because
// the person's identifiers now live in the survivor and erasing only the
// redirect would leave them there. An unknown or already erased id is not
// an error: Erase is idempotent, and a call that finds nothing left to
// erase still pays any debt an interrupted call left (the keys to compact
// are recorded in the erase batch).
//
// Profile ids are never reused: an event carrying an erased identifier
// later creates a new profile with a new id.
func (g *Graph) Erase(ctx context.Context, pids []uint32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := g.erase(pids); err != nil {
		return err
	}
	return g.compactErased(ctx)
}

// compactErased hands the debt an erasure staged to the compactor: the
// shared one compacts in the background; the Graph's own compacts now,
// without g.mu (the resolution stage goes on meanwhile).
func (g *Graph) compactErased(ctx context.Context) error {
	if !g.ownComp {
		g.comp.Staged()
		return nil
	}
	return g.comp.CompactNow(ctx)
}

func (g *Graph) erase(pids []uint32) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	ids := slices.Clone(pids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var ops []Op
	now := g.now().UnixMicro()
	for _, id := range ids {
		p, err := g.loadProfile(id)
		if err != nil {
			return err
		}
		switch {
		case p == nil: // unknown, or erased already
			continue
		case p.redirect != 0:
			if _, ok := slices.BinarySearch(ids, p.redirect); ok {
				continue // erased with its survivor, which sorts before it
			}
			return fmt.Errorf("%w: profile %d is merged into %d; erase that profile", ErrOpConflict, id, p.redirect)
		}
		ops = append(ops, Op{Kind: OpErase, Time: now, Profile: id})
	}
	if len(ops) == 0 {
		return nil
	}
	return g.applyLocked(ops)
}

// erase applies OpErase: see the OpErase and Erase docs.
func (tx *txn) erase(op *Op) error {
	p, err := tx.get(op.Profile)
	if err != nil {
		return err
	}
	if p == nil {
		return nil // unknown or erased: idempotent
	}
	if p.redirect != 0 {
		return fmt.Errorf("%w: profile %d is merged into %d; erase that profile", ErrOpConflict, p.id, p.redirect)
	}
	ids := make([]uint32, 0, 1+len(p.merged))
	ids = append(ids, p.id)
	for _, m := range p.merged {
		q, err := tx.get(m.id)
		if err != nil {
			return err
		}
		if q != nil && q.redirect != p.id {
			return fmt.Errorf("%w: profile %d lists %d as merged, which does not redirect to it", ErrOpConflict, p.id, m.id)
		}
		ids = append(ids, m.id)
	}
	for i := range p.idents {
		h := &p.idents[i].h
		cur, err := tx.ident(h)
		if err != nil {
			return err
		}
		if cur.pid != p.id {
			return fmt.Errorf("%w: identifier of profile %d points to %d", ErrOpConflict, p.id, cur.pid)
		}
		tx.ids[*h] = identEntry{}
		tx.compact = append(tx.compact, identKey(nil, h))
	}
	tx.gone = append(tx.gone, ids...)
	for _, id := range ids {
		tx.profs[id] = nil
		tx.compact = append(tx.compact, profileKey(nil, id))
		if tx.g.kr != nil {
			// Crypto-shredding: every copy of the values sealed under
			// these keys, wherever its bytes survive, becomes unreadable.
			tx.destroy = append(tx.destroy, id)
			tx.compact = append(tx.compact, engine.KeyringKey(nil, id))
		}
	}
	if err := tx.eraseLog(ids); err != nil {
		return err
	}
	tx.tally.erased++
	return nil
}

// eraseLog turns every merge-log entry naming one of ids into a tombstone:
// committed entries through the 0x14 index (whose keys for ids are
// deleted), and entries appended earlier in this txn in place.
func (tx *txn) eraseLog(ids []uint32) error {
	var seqs []uint64
	for _, id := range ids {
		it, err := tx.g.db.NewIter(&pebble.IterOptions{LowerBound: logIdxKey(nil, id, 0),
			UpperBound: logIdxKey(nil, id+1, 0)})
		if err != nil {
			return fmt.Errorf("cannot read merge log index: %w", err)
		}
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			if len(k) != 13 {
				it.Close()
				return corrupt("merge log index key")
			}
			seqs = append(seqs, be64(k[5:]))
			tx.dels = append(tx.dels, slices.Clone(k))
			tx.compact = append(tx.compact, slices.Clone(k))
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("cannot read merge log index: %w", err)
		}
	}
	slices.Sort(seqs)
	for _, seq := range slices.Compact(seqs) {
		e, ok := tx.rewrite[seq]
		if !ok {
			v, closer, err := tx.g.db.Get(logKey(nil, seq))
			if errors.Is(err, pebble.ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("cannot read merge log: %w", err)
			}
			e, err = decodeLogEntry(seq, v)
			closer.Close()
			if err != nil {
				return err
			}
		}
		tombstone(&e, ids)
		tx.rewrite[seq] = e
		tx.compact = append(tx.compact, logKey(nil, seq))
	}
	for i := range tx.log {
		e := &tx.log[i]
		if slices.Contains(ids, e.Survivor) || slices.ContainsFunc(e.Merged, func(m uint32) bool { return slices.Contains(ids, m) }) {
			tombstone(e, ids)
		}
	}
	return nil
}

// tombstone makes e anonymous: the erased ids leave it (Survivor 0), the
// message id and rule go; seq, kind and time stay.
func tombstone(e *LogEntry, erased []uint32) {
	if slices.Contains(erased, e.Survivor) {
		e.Survivor = 0
	}
	e.Merged = slices.DeleteFunc(slices.Clone(e.Merged), func(m uint32) bool { return slices.Contains(erased, m) })
	if len(e.Merged) == 0 {
		e.Merged = nil
	}
	e.MessageID, e.Rule, e.Erased = "", "", true
}

// stageErasure adds the txn's tombstones, index deletions, key
// destructions and the keys to compact (merged with those pending from
// earlier erasures) to w.
func (tx *txn) stageErasure(w *pebble.Batch) error {
	for _, id := range tx.destroy {
		if err := tx.g.kr.Destroy(w, id); err != nil {
			return err
		}
	}
	for seq, e := range tx.rewrite {
		tx.kbuf = logKey(tx.kbuf[:0], seq)
		tx.vbuf = appendLogEntry(tx.vbuf[:0], &e)
		if err := w.Set(tx.kbuf, tx.vbuf, nil); err != nil {
			return fmt.Errorf("cannot stage identity write: %w", err)
		}
	}
	for _, k := range tx.dels {
		if err := w.Delete(k, nil); err != nil {
			return fmt.Errorf("cannot stage identity write: %w", err)
		}
	}
	if len(tx.compact) == 0 {
		return nil
	}
	for _, k := range tx.compact {
		if err := tx.g.comp.Stage(w, k, append(slices.Clip(k), 0)); err != nil {
			return fmt.Errorf("cannot stage identity write: %w", err)
		}
	}
	return nil
}
