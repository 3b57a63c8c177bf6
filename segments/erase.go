package segments

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble"
)

// erasedPrefixes are the key families of this package that hold data
// about one profile, keyed prefix | profile id (4 BE). A new per-profile
// family (0x22-0x27) must be added here; TestEraseConsent fails on any
// key left in 0x20-0x27 naming the erased profile other than its
// suppression key.
var erasedPrefixes = []byte{prefixProfile}

// Erase removes everything the consent stage holds about pids, for a
// privacy erasure (issue 6):
//
//   - Pebble: every key of the per-profile families (0x20: the consent
//     decisions), deleted in one synced batch;
//   - memory: the profile's decisions, its ids in every purpose's granted
//     and denied bitmap, its pending grant expiries, the consent-change
//     records the API made for it that no batch took yet, the stage's
//     per-batch scratch, the "profile knew these purposes" part of the
//     per-batch annotations of its rows, and the entries naming it in
//     every policy's explain ring of recent drops; the decoded TCF/GPP
//     string caches are emptied (they are keyed by string, so the
//     person's cannot be picked out);
//   - disk: after the commit the memtable is flushed and the erased key
//     ranges are compacted (db.Flush, then db.Compact over each range), so
//     the deleted records leave the SSTs.
//
// The suppression set (0x21) is not touched: erase-and-suppress suppresses
// first and needs the suppression to outlive the erasure; Unsuppress
// lifts it.
//
// The ids join the erased set (in memory, for the life of the process):
// rows of theirs still in flight, resolved by identity before the
// erasure, record nothing in Process, merges naming them move nothing
// (profiles merged into one are erased with it), and every policy drops
// their rows with reason erased, also those of batches processed before
// the erasure (see the package doc). The caller erases identity first, so
// that nothing new resolves to them.
//
// Erase is idempotent: erasing a profile without consent state (or twice)
// deletes nothing, yet still compacts its ranges, so a call repeated after
// a crash between the commit and the compaction completes it.
//
// Left on disk outside the compacted SSTs: Pebble recycles obsolete WAL
// files, so the bytes of decisions written before the flush can remain in
// a recycled *.log file (and in free filesystem blocks) until overwritten;
// the data directory owner opens Pebble with a Cleaner that disables WAL
// recycling to avoid it (see the package doc).
//
// Counted in cdp_segments_erased_total (profiles that held consent state;
// Process counts those a merge into an erased profile erased).
func (c *Consent) Erase(pids ...uint32) error {
	if len(pids) == 0 {
		return nil
	}
	set := make(map[uint32]struct{}, len(pids))
	for _, pid := range pids {
		set[pid] = struct{}{}
	}
	if err := c.eraseState(set); err != nil {
		return err
	}
	c.erasePolicies(set)
	if err := c.comp.Add(profileSpans(erasedPrefixes, pids)...); err != nil {
		return err
	}
	if c.ownComp {
		return c.comp.CompactNow(context.Background())
	}
	return nil
}

// eraseState commits the deletes and drops the in-memory state, under the
// write lock.
func (c *Consent) eraseState(set map[uint32]struct{}) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.db.NewBatch()
	defer w.Close()
	var key []byte
	for pid := range set {
		for _, p := range erasedPrefixes {
			key = profileKey(key[:0], p, pid)
			if err := w.Delete(key, nil); err != nil {
				return fmt.Errorf("cannot stage consent erasure: %w", err)
			}
		}
	}
	if err := w.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("cannot commit consent erasure: %w", err)
	}
	erased := 0
	for pid := range set {
		if c.profiles.del(pid) {
			erased++
		}
		for bit := range c.granted {
			c.granted[bit].Remove(pid)
			c.denied[bit].Remove(pid)
		}
		// From now on Process records nothing for it and policies drop
		// its rows still in flight (ReasonErased).
		c.erased.Add(pid)
	}
	// Process's scratch (it clears these at every batch anyway), including
	// the buffers that may hold the last record written.
	c.newEpoch()
	clear(c.dirty[:cap(c.dirty)])
	clear(c.redir)
	clear(c.key[:cap(c.key)])
	clear(c.val[:cap(c.val)])
	c.ev = eventConsent{}
	c.x.cache.reset()
	c.forget(set)
	c.m.erased.Add(float64(erased))
	c.m.gauges(c)
	return nil
}

// forget drops what memory holds about the erased profiles of set beside
// their decisions: their pending grant expiries, the consent-change
// records naming them not yet handed to a batch (from the API), and what
// the kept batch annotations of their rows say about the profile. The
// caller holds c.mu.
func (c *Consent) forget(set map[uint32]struct{}) {
	n := 0
	for _, e := range c.exp {
		if _, ok := set[e.pid]; !ok {
			c.exp[n] = e
			n++
		}
	}
	clear(c.exp[n:])
	c.exp = c.exp[:n]
	heap.Init(&c.exp)
	n = 0
	for _, r := range c.changes {
		if pid, err := strconv.ParseUint(string(r.Key), 10, 32); err == nil {
			if _, ok := set[uint32(pid)]; ok {
				continue
			}
		}
		c.changes[n] = r
		n++
	}
	clear(c.changes[n:])
	c.changes = c.changes[:n]
	c.eraseAnnotations(set)
}

// eraseAnnotations forgets, in every kept batch annotation, what the
// erased profiles' rows said about the profile's consent (the event's own
// consent stays: it is the row's, which the batch still carries). The
// caller holds c.mu.
func (c *Consent) eraseAnnotations(set map[uint32]struct{}) {
	c.ann.mu.Lock()
	defer c.ann.mu.Unlock()
	for i := range c.ann.a {
		a := &c.ann.a[i]
		if a.rec == nil {
			continue
		}
		// Not a.rec's columns: the batch may be released by now.
		for row, pid := range a.pids {
			if _, ok := set[pid]; ok && row < len(a.pk) {
				a.pk[row] = 0
			}
		}
	}
}

// erasePolicies drops the erased profiles from every policy's explain
// ring and empties the policies' string caches. It runs without c.mu
// (Select takes p.mu before c.mu).
func (c *Consent) erasePolicies(set map[uint32]struct{}) {
	c.pmu.Lock()
	ps := make([]*Policy, 0, len(c.policies))
	for _, p := range c.policies {
		ps = append(ps, p)
	}
	c.pmu.Unlock()
	for _, p := range ps {
		p.mu.Lock()
		for i := range p.drops.e {
			e := &p.drops.e[i]
			if _, ok := set[e.pid]; ok && e.reason != "" {
				clear(e.msg)
				e.msg, e.pid, e.reason, e.at = e.msg[:0], 0, "", time.Time{}
			}
		}
		p.x.cache.reset()
		p.ev = eventConsent{}
		p.rmemo = nil
		p.mu.Unlock()
	}
}

// reset empties the cache, keeping its hit and miss counts (the metrics
// are deltas of them).
func (c *stringCache) reset() {
	if c == nil {
		return
	}
	clear(c.cur)
	clear(c.prev)
}

// profileSpans returns, for each family prefix, the key span of each run
// of consecutive profile ids.
func profileSpans(prefixes []byte, pids []uint32) [][2][]byte {
	var out [][2][]byte
	for _, r := range runs(pids) {
		for _, p := range prefixes {
			lo := profileKey(nil, p, r[0])
			hi := []byte{p + 1}
			if r[1] != ^uint32(0) {
				hi = profileKey(nil, p, r[1]+1)
			}
			out = append(out, [2][]byte{lo, hi})
		}
	}
	return out
}

// runs returns the sorted distinct ids as runs of consecutive ids [first,
// last].
func runs(ids []uint32) [][2]uint32 {
	s := slices.Clone(ids)
	slices.Sort(s)
	s = slices.Compact(s)
	var out [][2]uint32
	for _, id := range s {
		if n := len(out); n > 0 && out[n-1][1]+1 == id && out[n-1][1] != ^uint32(0) {
			out[n-1][1] = id
			continue
		}
		out = append(out, [2]uint32{id, id})
	}
	return out
}
