package audience

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
	"github.com/valyala/fastjson"
)

const dayMicros = int64(24 * time.Hour / time.Microsecond)

func dayOf(t time.Time) uint32 { return uint32(t.UnixMicro() / dayMicros) }

// pidWork is what a batch did to one profile.
type pidWork struct {
	traits  bool
	consent bool // an event carried consent fields
	all     bool // merged into: every audience
	events  []string
	visited bool
}

type ctrInc struct {
	pid uint32
	ctr uint64
	day uint32
}

// Name implements engine.Stage.
func (s *Store) Name() string { return "audiences" }

// Process implements engine.Stage: it applies the batch's identify traits
// and track event counts to the profiles' state, moves the state of merged
// profiles into their survivors (b.Merges), re-evaluates for each profile
// of the batch only the audiences the batch could affect (those reading
// traits for identify rows, the event names seen, consent for every row,
// everything for a merge survivor, and the audiences referencing any that
// changed), and commits state, memberships and input offsets in one
// Pebble batch. Rows below the offset this store already applied for
// their partition (a replay after a crash) are skipped, so counts are
// applied exactly once. It runs after the identity and consent stages.
//
// Rows of an erased profile (resolved by identity before the erasure,
// still in flight) apply nothing: no traits, counters, key, known mark or
// membership. Merges naming an erased profile: see applyMerge.
func (s *Store) Process(ctx context.Context, b *engine.Batch) (err error) {
	n := b.Rows()
	if n == 0 && len(b.Merges) == 0 {
		return nil
	}
	// Profiles a merge into an erased survivor erased: the store's own
	// compactor pays their debt once the lock is released, as Erase does.
	compact := false
	defer func() {
		if compact && err == nil && s.ownComp {
			err = s.comp.CompactNow(context.Background())
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	w := s.db.NewIndexedBatch()
	defer w.Close()
	if s.kr != nil {
		defer s.kr.Abandon(w) // a no-op once Committed
	}
	clear(s.work)
	clear(s.incs)
	clear(s.csets)
	s.wlist = s.wlist[:0]
	s.chg = s.chg[:0]
	s.erasing = s.erasing[:0]
	if s.feed != nil {
		ids, next := s.feed(s.feedPos)
		s.feedPos = next
		s.erased.AddMany(ids)
	}

	if n > 0 {
		if err := s.applyRows(w, b); err != nil {
			return err
		}
	}
	if err := s.flushCounters(w); err != nil {
		return err
	}
	for _, m := range b.Merges {
		if err := s.applyMerge(w, m, now); err != nil {
			return err
		}
	}
	if len(s.erasing) > 0 {
		// The deleted ranges of the profiles erased by a merge leave the
		// files with the erasure's compaction debt, durable with it.
		slices.Sort(s.erasing)
		auds := make([]string, 0, len(s.order))
		for _, a := range s.order {
			auds = append(auds, a.def.ID)
		}
		for _, sp := range erasedSpans(slices.Compact(s.erasing), auds, s.kr != nil) {
			if err := s.comp.Stage(w, sp[0], sp[1]); err != nil {
				return fmt.Errorf("cannot stage compaction debt: %w", err)
			}
		}
	}
	sort.Slice(s.wlist, func(i, j int) bool { return s.wlist[i] < s.wlist[j] })
	env := evalEnv{s: s, r: w, now: now.UnixMicro(), today: dayOf(now)}
	defer env.close()
	for _, pid := range s.wlist {
		wk := s.work[pid]
		if wk.visited {
			continue
		}
		wk.visited = true
		if err := s.evalProfile(w, &env, pid, wk, "event", now); err != nil {
			return err
		}
	}
	env.close()
	for _, o := range b.Offsets {
		k := offsetKey(s.key[:0], o.Topic, o.Partition)
		if err := w.Set(k, binary.BigEndian.AppendUint64(nil, uint64(o.Next)), nil); err != nil {
			return fmt.Errorf("cannot stage offset: %w", err)
		}
	}
	if err := w.Commit(pebble.Sync); err != nil {
		// The bitmaps may be ahead of Pebble now; the runner stops on this
		// error and a restart reloads from Pebble.
		return fmt.Errorf("cannot commit audience state: %w", err)
	}
	if s.kr != nil {
		s.kr.Committed(w)
	}
	for _, o := range b.Offsets {
		s.offs[o.Topic+"\x00"+string(binary.BigEndian.AppendUint32(nil, uint32(o.Partition)))] = o.Next
	}
	if len(s.erasing) > 0 {
		s.comp.Staged()
		s.scrub()
		compact = true
	}
	s.flushChanges()
	return nil
}

func (s *Store) mark(pid uint32) *pidWork {
	wk := s.work[pid]
	if wk == nil {
		wk = &pidWork{}
		s.work[pid] = wk
		s.wlist = append(s.wlist, pid)
	}
	return wk
}

func (s *Store) applyRows(w *pebble.Batch, b *engine.Batch) error {
	rec := b.Rec
	pids := rec.Column(engine.ColProfileID).(*array.Uint32).Uint32Values()
	types := rec.Column(engine.ColType).(*array.Uint8).Uint8Values()
	events := rec.Column(engine.ColEvent).(*array.String)
	ts := rec.Column(engine.ColTimestamp).(*array.Timestamp)
	raws := rec.Column(engine.ColRaw).(*array.Binary)
	topics := rec.Column(engine.ColTopic).(*array.String)
	parts := rec.Column(engine.ColPartition).(*array.Int32).Int32Values()
	offs := rec.Column(engine.ColOffset).(*array.Int64).Int64Values()
	checkReplay := len(s.offs) > 0
	// Checked once per batch: with nothing erased (the common case) a row
	// costs one predictable branch more.
	er := !s.erased.IsEmpty()
	for i := range pids {
		pid := pids[i]
		if pid == 0 {
			continue // not resolved
		}
		if er && s.erased.Contains(pid) {
			continue // in flight since before its erasure
		}
		if checkReplay {
			k := topics.Value(i) + "\x00" + string(binary.BigEndian.AppendUint32(s.key[:0], uint32(parts[i])))
			if next, ok := s.offs[k]; ok && offs[i] < next {
				continue
			}
		}
		wk := s.mark(pid)
		if !wk.consent && mayCarryConsent(raws.Value(i)) {
			wk.consent = true
		}
		if !s.known.Contains(pid) {
			s.known.Add(pid)
			// A known profile has a traits key, even with no traits.
			if _, err := s.traits(w, pid); err != nil {
				return err
			}
		}
		switch engine.EventType(types[i]) {
		case engine.TypeIdentify:
			v, err := s.p1.ParseBytes(raws.Value(i))
			if err != nil {
				continue
			}
			t := v.Get("traits")
			if t == nil || t.Type() != fastjson.TypeObject {
				continue
			}
			ok, err := s.mergeTraits(w, pid, t, false)
			if err != nil {
				return err
			}
			if ok {
				wk.traits = true
			}
		case engine.TypeTrack:
			if events.IsNull(i) {
				continue
			}
			name := events.Value(i)
			day := uint32(int64(ts.Value(i)) / dayMicros)
			ctrs := s.ctrs[name]
			bare := false
			var v *fastjson.Value
			for _, c := range ctrs {
				if len(c.where) == 0 {
					bare = true
					s.incs[ctrInc{pid, c.id, day}]++
					continue
				}
				if v == nil {
					var err error
					if v, err = s.p1.ParseBytes(raws.Value(i)); err != nil {
						break
					}
				}
				match := true
				for j := range c.where {
					if !c.where[j].match(v, 0) {
						match = false
						break
					}
				}
				if match {
					s.incs[ctrInc{pid, c.id, day}]++
				}
			}
			if !bare {
				// Every event name is counted, so that an audience defined
				// later over a name without property conditions back-fills
				// from history.
				s.incs[ctrInc{pid, bareCounter(name), day}]++
			}
			if len(ctrs) > 0 && !containsStr(wk.events, name) {
				wk.events = append(wk.events, name)
			}
		}
	}
	return nil
}

// mayCarryConsent reports whether an event may have changed its profile's
// consent: every consent source the consent stage reads (Segment's
// context.consent, RudderStack's consentManagement, mParticle's
// consent_state, TCF/GPP/USP strings under context.consent) has "onsent"
// in its key, and GPC is context.gpc. A false positive costs an
// evaluation; consent changed by the API or by expiry is caught by Sweep
// or Refresh.
func mayCarryConsent(raw []byte) bool {
	return bytes.Contains(raw, []byte("onsent")) || bytes.Contains(raw, []byte(`"gpc"`))
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// bareCounter is the id of the counter of an event name without property
// conditions (the same as compile gives it).
func bareCounter(name string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= prime64
	}
	return h
}

// traits returns pid's stored traits as plain JSON (the bytes are valid
// until the next call), writing "{}" for a profile without a key.
func (s *Store) traits(r *pebble.Batch, pid uint32) ([]byte, error) {
	s.key = traitsKey(s.key[:0], pid)
	v, closer, err := r.Get(s.key)
	if errors.Is(err, pebble.ErrNotFound) {
		if err := r.Set(s.key, []byte{valueVersion, '{', '}'}, nil); err != nil {
			return nil, fmt.Errorf("cannot stage traits: %w", err)
		}
		return []byte("{}"), nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read traits of profile %d: %w", pid, err)
	}
	defer closer.Close()
	s.val, err = s.decodeTraits(s.val[:0], pid, v)
	return s.val, err
}

// mergeTraits sets the top-level keys of upd on pid's traits (keepOld:
// only keys pid does not have, for a merge). It reports whether anything
// was written.
func (s *Store) mergeTraits(w *pebble.Batch, pid uint32, upd *fastjson.Value, keepOld bool) (bool, error) {
	cur, err := s.traits(w, pid)
	if err != nil {
		return false, err
	}
	v, err := s.p2.ParseBytes(cur)
	if err != nil || v.Type() != fastjson.TypeObject {
		v = s.arena.NewObject()
	}
	obj, _ := v.Object()
	uo, _ := upd.Object()
	uo.Visit(func(k []byte, x *fastjson.Value) {
		if keepOld && obj.Get(string(k)) != nil {
			return
		}
		obj.Set(string(k), x)
	})
	s.js = v.MarshalTo(s.js[:0])
	s.arena.Reset()
	if len(s.js) > s.cfg.MaxTraitBytes {
		s.dropped.Add(1)
		return false, nil
	}
	return true, s.putTraits(w, pid, s.js)
}

// flushCounters adds the batch's increments to the stored day buckets, in
// key order (reads then walk the LSM's blocks in order, and a bucket that
// does not exist yet is answered by the bloom filters).
func (s *Store) flushCounters(w *pebble.Batch) error {
	s.incList = s.incList[:0]
	for inc := range s.incs {
		s.incList = append(s.incList, inc)
	}
	sort.Slice(s.incList, func(i, j int) bool {
		a, b := s.incList[i], s.incList[j]
		if a.pid != b.pid {
			return a.pid < b.pid
		}
		if a.ctr != b.ctr {
			return a.ctr < b.ctr
		}
		return a.day < b.day
	})
	for _, inc := range s.incList {
		if err := s.addCounter(w, inc.pid, inc.ctr, inc.day, s.incs[inc]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) addCounter(w *pebble.Batch, pid uint32, ctr uint64, day uint32, d int64) error {
	s.key = counterKey(s.key[:0], pid, ctr, day)
	var cur uint64
	v, closer, err := w.Get(s.key)
	switch {
	case err == nil:
		cur, _ = binary.Uvarint(v)
		closer.Close()
	case !errors.Is(err, pebble.ErrNotFound):
		return fmt.Errorf("cannot read counter: %w", err)
	}
	s.val = binary.AppendUvarint(s.val[:0], cur+uint64(d))
	if err := w.Set(s.key, s.val, nil); err != nil {
		return fmt.Errorf("cannot stage counter: %w", err)
	}
	return nil
}

// applyMerge moves the state of each merged profile into the survivor:
// traits (the survivor's values win), counters (summed); the merged ids
// leave every audience and the survivor is re-evaluated for all.
//
// A merge never moves state into or out of an erased profile:
//
//   - an erased merged profile has nothing left to move; the survivor is
//     left as it is;
//   - the profiles merged into an erased survivor are the erased person's
//     (identity merged them before erasing the survivor, and erased their
//     redirects with it): they are erased as Erase would (traits,
//     counters, key, membership rows, with exit records of cause "erase",
//     and compaction debt) and join the erased set; rows of theirs in this
//     batch were applied before the merges and go with them.
func (s *Store) applyMerge(w *pebble.Batch, m engine.Merge, now time.Time) error {
	sv := m.Survivor
	if !s.erased.IsEmpty() && s.erased.Contains(sv) {
		for _, x := range m.Merged {
			if x == sv || s.erased.Contains(x) {
				continue
			}
			if err := s.stageErase(w, x); err != nil {
				return err
			}
			s.forget(x, now)
			if wk := s.work[x]; wk != nil {
				wk.visited = true // not evaluated: it is gone
			}
			s.erasing = append(s.erasing, x)
		}
		return nil
	}
	moved := false
	for _, x := range m.Merged {
		if x == sv {
			continue
		}
		if !s.erased.IsEmpty() && s.erased.Contains(x) {
			continue
		}
		moved = true
		// traits: opened under x's key, sealed again under the
		// survivor's (x's key stays: identity keeps it for a split)
		s.key = traitsKey(s.key[:0], x)
		if v, closer, err := w.Get(s.key); err == nil {
			raw, err := s.decodeTraits(nil, x, v)
			closer.Close()
			if err != nil {
				return err
			}
			if len(raw) > 0 {
				if t, err := s.p1.ParseBytes(raw); err == nil && t.Type() == fastjson.TypeObject {
					if _, err := s.mergeTraits(w, sv, t, true); err != nil {
						return err
					}
				}
			}
			clear(raw)
			s.key = traitsKey(s.key[:0], x)
			if err := w.Delete(s.key, nil); err != nil {
				return fmt.Errorf("cannot stage merge: %w", err)
			}
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return fmt.Errorf("cannot read traits of profile %d: %w", x, err)
		}
		if _, err := s.traits(w, sv); err != nil { // the survivor is known
			return err
		}
		// counters
		lo := binary.BigEndian.AppendUint32([]byte{prefixCounter}, x)
		hi := binary.BigEndian.AppendUint32([]byte{prefixCounter}, x+1)
		if x == ^uint32(0) {
			hi = []byte{prefixCounter + 1}
		}
		it, err := w.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return fmt.Errorf("cannot read counters: %w", err)
		}
		type kv struct {
			ctr uint64
			day uint32
			n   uint64
		}
		var moved []kv
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			if len(k) != 17 {
				continue
			}
			n, _ := binary.Uvarint(it.Value())
			moved = append(moved, kv{binary.BigEndian.Uint64(k[5:13]), binary.BigEndian.Uint32(k[13:]), n})
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("cannot read counters: %w", err)
		}
		for _, e := range moved {
			if err := s.addCounter(w, sv, e.ctr, e.day, int64(e.n)); err != nil {
				return err
			}
		}
		if err := w.DeleteRange(lo, hi, nil); err != nil {
			return fmt.Errorf("cannot stage merge: %w", err)
		}
		// memberships
		for _, a := range s.order {
			if a.members.CheckedRemove(x) {
				a.changed = now
				s.key = memberKey(s.key[:0], a.def.ID, x)
				if err := w.Delete(s.key, nil); err != nil {
					return fmt.Errorf("cannot stage membership: %w", err)
				}
				s.chg = append(s.chg, Change{Audience: a.def.ID, Version: a.def.Version, ProfileID: x, Time: now.UTC(), Cause: "merge"})
			}
		}
		s.known.Remove(x)
		if wk := s.work[x]; wk != nil {
			wk.visited = true // its state now lives in the survivor
		}
	}
	if !moved {
		return nil
	}
	s.known.Add(sv)
	wk := s.mark(sv)
	wk.all = true
	wk.visited = false
	return nil
}

// evalEnv is the state one profile's evaluation reads.
type evalEnv struct {
	s      *Store
	r      pebble.Reader
	pid    uint32
	traits *fastjson.Value
	tload  bool
	tbuf   []byte // plain traits, scrubbed after parsing
	now    int64
	today  uint32
	key    []byte
	// counter reads: one iterator per evaluation run, counts cached per
	// profile (audiences share counters)
	it     *pebble.Iterator
	lo, hi [2][]byte
	flip   int
	counts map[countKey]int64
}

// affected reports whether audience a needs re-evaluation for wk.
func affected(a *audience, wk *pidWork) bool {
	if wk == nil {
		return true
	}
	if wk.all || (wk.consent && a.dp.consent) || (wk.traits && a.dp.traits) {
		return true
	}
	for _, e := range wk.events {
		if containsStr(a.dp.events, e) {
			return true
		}
	}
	return false
}

// evalProfile re-evaluates pid for the audiences wk affects (all when wk
// is nil), in dependency order, and records changes. only, if non-nil,
// restricts evaluation to that audience and its dependents.
func (s *Store) evalProfile(w *pebble.Batch, env *evalEnv, pid uint32, wk *pidWork, cause string, now time.Time) error {
	return s.evalFor(w, env, pid, wk, nil, cause, now)
}

func (s *Store) evalFor(w *pebble.Batch, env *evalEnv, pid uint32, wk *pidWork, only func(*audience) bool, cause string, now time.Time) error {
	env.pid, env.traits, env.tload = pid, nil, false
	clear(env.counts)
	var dirty uint64 // bit per position for the first 64 audiences; more use the map
	var dirtyMap map[int]bool
	isDirty := func(i int) bool {
		if i < 64 {
			return dirty&(1<<i) != 0
		}
		return dirtyMap[i]
	}
	setDirty := func(i int) {
		if i < 64 {
			dirty |= 1 << i
			return
		}
		if dirtyMap == nil {
			dirtyMap = map[int]bool{}
		}
		dirtyMap[i] = true
	}
	for _, a := range s.order {
		need := isDirty(a.idx)
		if !need {
			if only != nil {
				need = only(a)
			} else {
				need = affected(a, wk)
			}
		}
		if !need {
			continue
		}
		in, err := env.eval(a.root)
		if err != nil {
			return err
		}
		s.evalsCtr.Add(1)
		var changed bool
		if in {
			changed = a.members.CheckedAdd(pid)
		} else {
			changed = a.members.CheckedRemove(pid)
		}
		if !changed {
			continue
		}
		a.changed = now
		s.key = memberKey(s.key[:0], a.def.ID, pid)
		if in {
			err = w.Set(s.key, nil, nil)
		} else {
			err = w.Delete(s.key, nil)
		}
		if err != nil {
			return fmt.Errorf("cannot stage membership: %w", err)
		}
		s.chg = append(s.chg, Change{Audience: a.def.ID, Version: a.def.Version, ProfileID: pid, Entered: in, Time: now.UTC(), Cause: cause})
		for _, d := range a.dependents {
			setDirty(d.idx)
		}
	}
	return nil
}

func (e *evalEnv) loadTraits() error {
	if e.tload {
		return nil
	}
	e.tload = true
	e.key = traitsKey(e.key[:0], e.pid)
	v, closer, err := e.r.Get(e.key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read traits of profile %d: %w", e.pid, err)
	}
	defer closer.Close()
	e.tbuf, err = e.s.decodeTraits(e.tbuf[:0], e.pid, v)
	if err != nil {
		return err
	}
	if len(e.tbuf) > 0 {
		// p2 is free here: mergeTraits is not running during evaluation.
		// The parser copies its input, so tbuf is scrubbed at once.
		t, err := e.s.p2.ParseBytes(e.tbuf)
		if err == nil {
			e.traits = t
		}
		clear(e.tbuf)
	}
	return nil
}

func (e *evalEnv) count(ctr uint64, days int) (int64, error) {
	first := int64(e.today) - int64(days) + 1
	if days == 0 || first < 0 {
		first = 0 // ever
	}
	end := e.today + 1
	if days == 0 {
		end = ^uint32(0) // events dated in the future count too
	}
	ck := countKey{ctr, days}
	if n, ok := e.counts[ck]; ok {
		return n, nil
	}
	if e.it == nil {
		it, err := e.r.NewIter(nil)
		if err != nil {
			return 0, fmt.Errorf("cannot read counters: %w", err)
		}
		e.it = it
	}
	// The iterator keeps the bounds until the next SetBounds: alternate
	// between two pairs of buffers.
	e.flip ^= 1
	lo := counterKey(e.lo[e.flip][:0], e.pid, ctr, uint32(first))
	hi := counterKey(e.hi[e.flip][:0], e.pid, ctr, end)
	e.lo[e.flip], e.hi[e.flip] = lo, hi
	e.it.SetBounds(lo, hi)
	var total int64
	for e.it.First(); e.it.Valid(); e.it.Next() {
		n, _ := binary.Uvarint(e.it.Value())
		total += int64(n)
	}
	if err := e.it.Error(); err != nil {
		return 0, fmt.Errorf("cannot read counters: %w", err)
	}
	if e.counts == nil {
		e.counts = map[countKey]int64{}
	}
	e.counts[ck] = total
	return total, nil
}

type countKey struct {
	ctr  uint64
	days int
}

// close releases the iterator; call before the batch it reads commits.
func (e *evalEnv) close() {
	if e.it != nil {
		_ = e.it.Close()
		e.it = nil
	}
}

func (e *evalEnv) consent(purpose string) consentSets {
	s := e.s
	cs, ok := s.csets[purpose]
	if !ok {
		if s.consent != nil {
			if pv, ok := s.consent.(ConsentPair); ok {
				cs.granted, cs.denied = pv.Sets(purpose)
			} else {
				cs = consentSets{s.consent.Granted(purpose), s.consent.Denied(purpose)}
			}
		}
		s.csets[purpose] = cs
	}
	return cs
}

func (e *evalEnv) eval(n *node) (bool, error) {
	switch n.kind {
	case nAnd:
		for _, k := range n.kids {
			ok, err := e.eval(k)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case nOr:
		for _, k := range n.kids {
			ok, err := e.eval(k)
			if err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case nNot:
		ok, err := e.eval(n.kids[0])
		return !ok, err
	case nTrait:
		if err := e.loadTraits(); err != nil {
			return false, err
		}
		return n.pred.match(e.traits, e.now), nil
	case nEvent:
		c, err := e.count(n.ctr.id, n.days)
		if err != nil {
			return false, err
		}
		return c >= n.min && (n.max < 0 || c <= n.max), nil
	case nConsent:
		cs := e.consent(n.purpose)
		g := cs.granted != nil && cs.granted.Contains(e.pid)
		d := !g && cs.denied != nil && cs.denied.Contains(e.pid)
		switch n.state {
		case StateGranted:
			return g, nil
		case StateDenied:
			return d, nil
		}
		return !g && !d, nil
	case nAudience:
		a := e.s.auds[n.ref]
		return a != nil && a.members.Contains(e.pid), nil
	}
	return false, nil
}

func (s *Store) emit(c Change) {
	s.chg = append(s.chg[:0], c)
	s.flushChanges()
}

func (s *Store) flushChanges() {
	s.m.count(s.chg)
	if s.onChg != nil && len(s.chg) > 0 {
		s.onChg(s.chg)
	}
	s.chg = s.chg[:0]
}

// Sweep re-evaluates, over every known profile, the audiences whose
// result changes without events: those reading consent (a grant lapsed,
// the consent API changed it) or trait "within" times at every call, and
// those with event windows when the day changed since the last sweep
// (buckets are days, so windows move once a day). It returns the number of
// membership changes. The lead schedules it (e.g. every minute); its cost
// is O(known profiles × such audiences), paid in chunks of
// Config.BackfillChunk profiles under the write lock.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	s.mu.RLock()
	today := dayOf(s.now())
	newDay := today != s.day
	var sel []*audience
	for _, a := range s.order {
		if a.dp.consent || a.dp.exact || (a.dp.clock && newDay) {
			sel = append(sel, a)
		}
	}
	s.mu.RUnlock()
	if len(sel) == 0 {
		s.mu.Lock()
		s.day = today
		s.mu.Unlock()
		return 0, nil
	}
	pick := map[*audience]bool{}
	for _, a := range sel {
		pick[a] = true
	}
	only := func(a *audience) bool { return pick[a] }
	total, err := s.overKnown(ctx, only, "sweep", nil, nil)
	if err == nil {
		s.mu.Lock()
		s.day = today
		s.mu.Unlock()
	}
	return total, err
}

// Refresh re-evaluates every audience for the given profiles, e.g. after
// the consent API changed them outside the pipeline.
func (s *Store) Refresh(pids ...uint32) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.csets)
	now := s.now()
	w := s.db.NewIndexedBatch()
	defer w.Close()
	env := evalEnv{s: s, r: w, now: now.UnixMicro(), today: dayOf(now)}
	defer env.close()
	for _, pid := range pids {
		if !s.known.Contains(pid) {
			continue
		}
		if err := s.evalFor(w, &env, pid, nil, nil, "sweep", now); err != nil {
			return 0, err
		}
	}
	n := len(s.chg)
	env.close()
	if err := w.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("cannot commit memberships: %w", err)
	}
	s.flushChanges()
	return n, nil
}

// overKnown evaluates the audiences selected by only (and their
// dependents) for every known profile, in chunks. keep, if non-nil, is
// called under the write lock before each chunk and stops the run when it
// returns false; progress, if non-nil, after each chunk with done and
// total.
func (s *Store) overKnown(ctx context.Context, only func(*audience) bool, cause string, keep func() bool, progress func(done, total int64)) (int, error) {
	s.mu.RLock()
	total := int64(s.known.GetCardinality())
	s.mu.RUnlock()
	var done int64
	changes := 0
	next := uint32(0)
	buf := make([]uint32, s.cfg.BackfillChunk)
	for {
		if err := ctx.Err(); err != nil {
			return changes, err
		}
		if s.closed.Load() {
			return changes, errors.New("audience: store closed")
		}
		s.mu.Lock()
		it := s.known.Iterator()
		it.AdvanceIfNeeded(next)
		k := 0
		for k < len(buf) && it.HasNext() {
			buf[k] = it.Next()
			k++
		}
		if k == 0 {
			s.mu.Unlock()
			return changes, nil
		}
		if keep != nil && !keep() {
			s.mu.Unlock()
			return changes, nil
		}
		now := s.now()
		clear(s.csets)
		w := s.db.NewIndexedBatch()
		env := evalEnv{s: s, r: w, now: now.UnixMicro(), today: dayOf(now)}
		var err error
		for _, pid := range buf[:k] {
			if err = s.evalFor(w, &env, pid, nil, only, cause, now); err != nil {
				break
			}
		}
		env.close()
		if err == nil {
			err = w.Commit(pebble.Sync)
		}
		w.Close()
		changes += len(s.chg)
		s.flushChanges()
		s.mu.Unlock()
		if err != nil {
			return changes, fmt.Errorf("cannot %s: %w", cause, err)
		}
		done += int64(k)
		if progress != nil {
			progress(done, max(total, done))
		}
		if buf[k-1] == ^uint32(0) {
			return changes, nil
		}
		next = buf[k-1] + 1
	}
}

// startBackfill evaluates a (and its dependents) over every known profile
// in the background; Info.Backfill shows the progress. Called under the
// write lock.
func (s *Store) startBackfill(a *audience) {
	a.bfRunning.Store(true)
	a.bfDone.Store(0)
	a.bfTotal.Store(int64(s.known.GetCardinality()))
	s.bf.Add(1)
	go func() {
		defer s.bf.Done()
		defer a.bfRunning.Store(false)
		only := func(x *audience) bool { return x == a }
		current := func() bool { return s.auds[a.def.ID] == a } // under the lock
		_, err := s.overKnown(context.Background(), only, "backfill", current, func(done, total int64) {
			a.bfDone.Store(done)
			a.bfTotal.Store(total)
		})
		if err != nil {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if current() {
			_ = s.db.Set(backfillKey(a.def.ID), binary.BigEndian.AppendUint32(nil, a.def.Version), pebble.Sync)
		}
	}()
}

// Evaluations returns how many audience evaluations ran (a metric).
func (s *Store) Evaluations() uint64 { return s.evalsCtr.Load() }

var _ engine.Stage = (*Store)(nil)
var _ Source = (*Store)(nil)
