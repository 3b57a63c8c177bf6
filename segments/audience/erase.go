package audience

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/valyala/fastjson"

	"github.com/cdpstream/cdpstream/engine"
)

// Erase removes everything the audience store holds about pids, for a
// privacy erasure (issue 6):
//
//   - Pebble, in one synced batch: the profile's traits (0x29, which also
//     makes it unknown), every day-bucket counter (0x2a, one range
//     deletion per profile), its membership row in every audience (0x2b)
//     and, with a keyring, its key (engine's 0x03: every older copy of
//     its sealed traits is unreadable from then on); definitions, offsets
//     and back-fill marks hold nothing about a profile;
//   - memory: its id in every audience's membership bitmap (nested ones
//     included) and in the known-profiles universe (so NOT and back-fill
//     no longer range over it), and the per-batch scratch (parsers, arena,
//     buffers) that may hold its last traits;
//   - records: after the commit, an exit (Entered false, Cause "erase")
//     per audience the profile was a member of, through WithOnChange like
//     every other change, so activation tools drop it too;
//   - disk: the memtable is flushed and the erased key ranges compacted
//     (db.Flush, then db.Compact), the keys' range included, so the
//     deleted values and the wrapped key leave the SSTs.
//
// Erase is idempotent: a second call finds nothing, emits no record, and
// compacts the ranges again (completing a call interrupted by a crash
// after its commit).
//
// The ids join the erased set (in memory, for the life of the process):
// their rows still in flight, resolved by identity before the erasure,
// apply nothing in Process, and merges naming them move nothing (profiles
// merged into one are erased with it; see applyMerge). The caller erases
// identity first, so that nothing new resolves to them.
//
// Pebble recycles obsolete WAL files, so trait bytes written before the
// flush can remain in a recycled *.log file until it is overwritten; see
// the package doc for the Pebble option that prevents it.
//
// Counted in cdp_segments_audience_erased_total (profiles the store knew).
func (s *Store) Erase(pids ...uint32) error {
	if len(pids) == 0 {
		return nil
	}
	ids := slices.Clone(pids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	auds, err := s.eraseState(ids)
	if err != nil {
		return err
	}
	return s.compactErased(ids, auds)
}

// eraseState commits the deletes, updates the bitmaps and emits the exits
// under the write lock; it returns the audience ids whose membership rows
// it deleted.
func (s *Store) eraseState(ids []uint32) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.db.NewBatch()
	defer w.Close()
	if s.kr != nil {
		defer s.kr.Abandon(w)
	}
	auds := make([]string, 0, len(s.order))
	for _, a := range s.order {
		auds = append(auds, a.def.ID)
	}
	for _, pid := range ids {
		if err := s.stageErase(w, pid); err != nil {
			return nil, err
		}
	}
	if err := w.Commit(pebble.Sync); err != nil {
		return nil, fmt.Errorf("cannot commit erasure: %w", err)
	}
	if s.kr != nil {
		s.kr.Committed(w)
	}
	now := s.now()
	s.chg = s.chg[:0]
	for _, pid := range ids {
		s.forget(pid, now)
	}
	// Process's scratch (cleared at every batch anyway) and the buffers and
	// parsers that may still hold the last traits read or written.
	clear(s.work)
	s.wlist = s.wlist[:0]
	clear(s.incs)
	s.incList = s.incList[:0]
	clear(s.csets)
	s.scrub()
	s.flushChanges()
	return auds, nil
}

// stageErase stages in w the deletion of everything pid has in the
// store: traits, day counters, its key (with a keyring) and its row in
// every audience, not only those the bitmaps name (the rows are what a
// restart rebuilds memberships from). The caller holds the write lock.
func (s *Store) stageErase(w *pebble.Batch, pid uint32) error {
	s.key = traitsKey(s.key[:0], pid)
	if err := w.Delete(s.key, nil); err != nil {
		return fmt.Errorf("cannot stage erasure: %w", err)
	}
	lo, hi := counterRange(pid)
	if err := w.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("cannot stage erasure: %w", err)
	}
	if s.kr != nil {
		// Crypto-shredding: every older copy of its sealed traits
		// becomes unreadable (identity, erased first, destroyed it
		// already; this makes the store's erasure whole by itself).
		if err := s.kr.Destroy(w, pid); err != nil {
			return err
		}
	}
	for _, a := range s.order {
		s.key = memberKey(s.key[:0], a.def.ID, pid)
		if err := w.Delete(s.key, nil); err != nil {
			return fmt.Errorf("cannot stage erasure: %w", err)
		}
	}
	return nil
}

// forget drops pid from memory once its erasure committed (or is staged
// in the batch Process commits): from the known universe and every
// membership bitmap, with an exit record (cause "erase") per audience it
// left; and adds it to the erased set, so that Process applies nothing of
// its rows still in flight. The caller holds the write lock and flushes
// s.chg.
func (s *Store) forget(pid uint32, now time.Time) {
	if s.known.CheckedRemove(pid) && s.m.erased != nil {
		s.m.erased.Inc()
	}
	for _, a := range s.order {
		if a.members.CheckedRemove(pid) {
			a.changed = now
			s.chg = append(s.chg, Change{Audience: a.def.ID, Version: a.def.Version, ProfileID: pid, Time: now.UTC(), Cause: "erase"})
		}
	}
	s.erased.Add(pid)
}

// scrub empties the buffers and parsers that may still hold the last
// traits read or written.
func (s *Store) scrub() {
	clear(s.key[:cap(s.key)])
	clear(s.val[:cap(s.val)])
	clear(s.js[:cap(s.js)])
	clear(s.sbuf[:cap(s.sbuf)])
	s.p1, s.p2, s.arena = fastjson.Parser{}, fastjson.Parser{}, fastjson.Arena{}
}

// compactErased stages the erased profiles' traits, counters, keys and
// membership rows (per run of consecutive ids, per audience for
// memberships) as compaction debt, after the erasure committed (a crash in
// between is covered by the privacy request running Erase again). The
// store's own compactor pays it at once, outside the store's lock; a
// shared one (WithCompactor) in the background.
func (s *Store) compactErased(ids []uint32, auds []string) error {
	if err := s.comp.Add(erasedSpans(ids, auds, s.kr != nil)...); err != nil {
		return err
	}
	if s.ownComp {
		return s.comp.CompactNow(context.Background())
	}
	return nil
}

// erasedSpans returns the key spans of the erased profiles ids (sorted,
// distinct): per run of consecutive ids their traits, counters, keys
// (with a keyring) and their membership rows in each audience of auds.
func erasedSpans(ids []uint32, auds []string, keys bool) [][2][]byte {
	var spans [][2][]byte
	for _, r := range runs(ids) {
		first, last := r[0], r[1]
		hiTraits := []byte{prefixTraits + 1}
		if last != ^uint32(0) {
			hiTraits = traitsKey(nil, last+1)
		}
		lo, _ := counterRange(first)
		_, hi := counterRange(last)
		spans = append(spans, [2][]byte{traitsKey(nil, first), hiTraits}, [2][]byte{lo, hi})
		if keys {
			klo, khi := engine.KeyringSpan(first, last)
			spans = append(spans, [2][]byte{klo, khi})
		}
		for _, id := range auds {
			hi := append(append([]byte{prefixMember}, id...), 1)
			if last != ^uint32(0) {
				hi = memberKey(nil, id, last+1)
			}
			spans = append(spans, [2][]byte{memberKey(nil, id, first), hi})
		}
	}
	return spans
}

// counterRange is the key range of pid's day counters.
func counterRange(pid uint32) (lo, hi []byte) {
	lo = binary.BigEndian.AppendUint32([]byte{prefixCounter}, pid)
	if pid == ^uint32(0) {
		return lo, []byte{prefixCounter + 1}
	}
	return lo, binary.BigEndian.AppendUint32([]byte{prefixCounter}, pid+1)
}

// runs returns sorted distinct ids as runs of consecutive ids [first,
// last].
func runs(ids []uint32) [][2]uint32 {
	var out [][2]uint32
	for _, id := range ids {
		if n := len(out); n > 0 && out[n-1][1] != ^uint32(0) && out[n-1][1]+1 == id {
			out[n-1][1] = id
			continue
		}
		out = append(out, [2]uint32{id, id})
	}
	return out
}
