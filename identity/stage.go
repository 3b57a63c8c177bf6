package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// Stage resolves every event of a batch to a profile: it implements
// engine.Stage. Process must not be called concurrently (the runner calls
// stages one batch at a time).
type Stage struct {
	g       *Graph
	tx      *txn
	offsets map[topicPart]int64
	mem     memory.Allocator

	// Per-batch scratch, reused.
	slots   []slot
	rows    []int32 // rows[i]..rows[i+1] are the slots of row i
	misses  []int32
	arena   []byte
	out     []uint32
	cands   []cand
	parts   []*profile
	news    []Ident
	tl      []typeTime
	refused map[refusal]bool
	drops   map[dropKey]uint64
	it      *pebble.Iterator
	kbuf    []byte
	offs    []engine.Offset
	stats   rowStats
	// dropped lists, ascending, the rows of the batch that carry a
	// suppressed identifier; runs holds the kept row ranges.
	dropped []int32
	runs    [][2]int64
	// dropMem holds the records rebuilt without dropped rows; they are
	// released by the runner once every sink is done, and their buffers
	// come back for the next rebuild instead of becoming garbage.
	dropMem memory.Allocator
}

type topicPart struct {
	topic string
	part  int32
}

// slot is one identifier value found in a row, normalised and hashed.
type slot struct {
	t      *typeInfo
	off, n int32 // normalised value in arena
	h      hash
	ent    identEntry // committed at the start of the batch
	alt    uint8      // previous_id candidates: altUser, then altAnon
}

const (
	altNone uint8 = iota
	altUser
	altAnon
)

type cand struct {
	s    int32 // slot index
	pid  uint32
	last int64
}

type typeTime struct {
	t     *typeInfo
	first int64
	src   int // index in parts, or -1 for a new identifier
	value string
}

type refusal struct {
	survivor, other uint32
	reason          string
}

type dropKey struct{ reason, label string }

type rowStats struct{ resolved, unresolved, replayed, suppressed, demotions uint64 }

// NewStage returns the resolution stage over g. It reads the input offsets
// committed with the graph: rows below them were applied before a restart
// and are resolved read-only.
func NewStage(g *Graph) (*Stage, error) {
	offs, err := engine.LoadOffsets(g.db, stageName)
	if err != nil {
		return nil, err
	}
	s := &Stage{g: g, tx: g.newTxn(), offsets: make(map[topicPart]int64, len(offs)), mem: memory.DefaultAllocator,
		dropMem: engine.NewPoolAllocator(),
		refused: make(map[refusal]bool), drops: make(map[dropKey]uint64)}
	for _, o := range offs {
		s.offsets[topicPart{o.Topic, o.Partition}] = o.Next
	}
	return s, nil
}

// Name implements engine.Stage.
func (s *Stage) Name() string { return stageName }

// stageName names the stage in metrics and owns its input offsets in the
// store (engine.PutOffsets).
const stageName = "identity"

// Process resolves every row of b.Rec, replaces its profile_id column,
// appends the merges it caused to b.Merges, and commits the identity
// changes together with b.Offsets in one synced Pebble batch.
//
// Rows carrying a suppressed identifier (Graph.Suppress) are dropped
// before resolution: b.Rec is replaced by a record of the other rows (the
// old one is released), b.Drops counts them with reason "suppressed", and
// b.Offsets still cover them. When nothing is suppressed the check costs
// nothing.
func (s *Stage) Process(ctx context.Context, b *engine.Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	tx := s.tx
	tx.begin()
	clear(s.refused)
	s.stats = rowStats{}
	n := b.Rows()
	if n > 0 {
		if err := s.resolveBatch(b.Rec); err != nil {
			return err
		}
	}
	// Offsets only move forward: a replayed batch must not lower them, or
	// the batch after it would be applied a second time.
	s.offs = s.offs[:0]
	for _, o := range b.Offsets {
		if next, ok := s.offsets[topicPart{o.Topic, o.Partition}]; !ok || o.Next > next {
			s.offs = append(s.offs, o)
		}
	}
	if err := tx.commit(s.offs); err != nil {
		return err
	}
	for _, o := range s.offs {
		k := topicPart{o.Topic, o.Partition}
		if _, ok := s.offsets[k]; !ok {
			k.topic = strings.Clone(k.topic)
		}
		s.offsets[k] = o.Next
	}
	// After the offsets: they are committed, whatever happens here.
	if len(s.dropped) > 0 {
		if err := s.dropRows(b); err != nil {
			return err
		}
		b.Drops = append(b.Drops, engine.Drop{Reason: ReasonSuppressed, Rows: len(s.dropped)})
	}
	b.Merges = append(b.Merges, tx.merges...)
	s.publishStats()
	if n == 0 {
		return nil
	}
	return s.setColumn(b)
}

func (s *Stage) setColumn(b *engine.Batch) error {
	bld := array.NewUint32Builder(s.mem)
	defer bld.Release()
	bld.AppendValues(s.out, nil)
	arr := bld.NewUint32Array()
	defer arr.Release()
	rec, err := b.Rec.SetColumn(engine.ColProfileID, arr)
	if err != nil {
		return fmt.Errorf("cannot set profile ids: %w", err)
	}
	b.Rec.Release()
	b.Rec = rec
	return nil
}

func (s *Stage) publishStats() {
	m := s.g.m
	if s.stats.resolved > 0 {
		m.events.WithLabelValues("resolved").Add(float64(s.stats.resolved))
	}
	if s.stats.unresolved > 0 {
		m.events.WithLabelValues("unresolved").Add(float64(s.stats.unresolved))
	}
	if s.stats.replayed > 0 {
		m.events.WithLabelValues("replayed").Add(float64(s.stats.replayed))
	}
	if s.stats.suppressed > 0 {
		m.events.WithLabelValues("suppressed").Add(float64(s.stats.suppressed))
	}
	m.demotions.Add(float64(s.stats.demotions))
	for k, v := range s.drops {
		m.dropped.WithLabelValues(k.reason, k.label).Add(float64(v))
	}
	clear(s.drops)
	s.g.publishCacheMetrics()
}

// columns are the batch columns identity reads.
type columns struct {
	msg, user, anon, prev, topic *array.String
	typ                          *array.Uint8
	ts                           *array.Timestamp
	part                         *array.Int32
	off                          *array.Int64
	ids                          *array.List
	idType, idValue              *array.String
}

func batchColumns(rec arrow.RecordBatch) (c columns, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("identity: batch does not match engine.Schema: %v", r)
		}
	}()
	c.msg = rec.Column(engine.ColMessageID).(*array.String)
	c.typ = rec.Column(engine.ColType).(*array.Uint8)
	c.ts = rec.Column(engine.ColTimestamp).(*array.Timestamp)
	c.topic = rec.Column(engine.ColTopic).(*array.String)
	c.part = rec.Column(engine.ColPartition).(*array.Int32)
	c.off = rec.Column(engine.ColOffset).(*array.Int64)
	c.user = rec.Column(engine.ColUserID).(*array.String)
	c.anon = rec.Column(engine.ColAnonymousID).(*array.String)
	c.prev = rec.Column(engine.ColPreviousID).(*array.String)
	c.ids = rec.Column(engine.ColIdentifiers).(*array.List)
	st := c.ids.ListValues().(*array.Struct)
	c.idType = st.Field(0).(*array.String)
	c.idValue = st.Field(1).(*array.String)
	return c, nil
}

func (s *Stage) resolveBatch(rec arrow.RecordBatch) error {
	c, err := batchColumns(rec)
	if err != nil {
		return err
	}
	n := int(rec.NumRows())
	s.extract(&c, n)
	if err := s.prefetch(); err != nil {
		return err
	}
	s.out = slices.Grow(s.out[:0], n)
	var last topicPart
	lastNext, haveLast := int64(-1), false
	d := 0 // the next row of s.dropped
	for i := 0; i < n; i++ {
		if d < len(s.dropped) && int(s.dropped[d]) == i {
			d++
			continue
		}
		// Rows below the committed offset were applied before a restart.
		tp := topicPart{c.topic.Value(i), c.part.Value(i)}
		if !haveLast || tp != last {
			next, ok := s.offsets[tp]
			if !ok {
				next = -1
			}
			last, lastNext, haveLast = tp, next, true
		}
		st, en := s.rows[i], s.rows[i+1]
		var pid uint32
		if c.off.Value(i) < lastNext {
			pid = s.resolveReadOnly(st, en)
			s.stats.replayed++
		} else {
			pid, err = s.resolve(st, en, int64(c.ts.Value(i)), c.msg.Value(i), engine.EventType(c.typ.Value(i)) == engine.TypeAlias)
			if err != nil {
				return err
			}
			if pid == 0 {
				s.stats.unresolved++
			} else {
				s.stats.resolved++
			}
		}
		s.out = append(s.out, pid)
	}
	s.stats.suppressed += uint64(len(s.dropped))
	return nil
}

// extract normalises and hashes every identifier of every row. A row
// carrying a suppressed identifier keeps no slots and is listed in
// s.dropped.
func (s *Stage) extract(c *columns, n int) {
	g := s.g
	s.slots = s.slots[:0]
	s.arena = s.arena[:0]
	s.rows = append(s.rows[:0], 0)
	s.dropped = s.dropped[:0]
	supp := len(g.supp) > 0
	user, anon := g.types[TypeUserID], g.types[TypeAnonymousID]
	offs := c.ids.Offsets()
	for i := 0; i < n; i++ {
		first := len(s.slots)
		if user != nil && c.user.IsValid(i) {
			s.add(user, c.user.Value(i), altNone)
		}
		if anon != nil && c.anon.IsValid(i) {
			s.add(anon, c.anon.Value(i), altNone)
		}
		if c.prev.IsValid(i) {
			// previousId names a user id or an anonymous id: both are looked
			// up, and resolve picks the user id if it is known.
			if user != nil {
				s.add(user, c.prev.Value(i), altUser)
			}
			if anon != nil {
				s.add(anon, c.prev.Value(i), altAnon)
			}
		}
		if c.ids.IsValid(i) {
			for j := int(offs[i]); j < int(offs[i+1]); j++ {
				if c.idType.IsNull(j) || c.idValue.IsNull(j) {
					continue
				}
				t := g.typeByName(c.idType.Value(j))
				if t == nil || !t.use {
					s.drops[dropKey{"unknown_type", "other"}]++
					continue
				}
				s.add(t, c.idValue.Value(j), altNone)
			}
		}
		if supp && s.suppressed(first) {
			s.slots = s.slots[:first]
			s.dropped = append(s.dropped, int32(i))
		}
		s.rows = append(s.rows, int32(len(s.slots)))
	}
}

// suppressed reports whether a slot from first on holds a suppressed
// identifier.
func (s *Stage) suppressed(first int) bool {
	for i := first; i < len(s.slots); i++ {
		if _, ok := s.g.supp[s.slots[i].h]; ok {
			return true
		}
	}
	return false
}

// dropRows replaces b.Rec by a record of the rows not in s.dropped, in
// order, and releases the old one.
func (s *Stage) dropRows(b *engine.Batch) error {
	rec := b.Rec
	n := rec.NumRows()
	s.runs = s.runs[:0]
	var from int64
	for _, d := range s.dropped {
		if int64(d) > from {
			s.runs = append(s.runs, [2]int64{from, int64(d)})
		}
		from = int64(d) + 1
	}
	if from < n {
		s.runs = append(s.runs, [2]int64{from, n})
	}
	if len(s.runs) == 0 {
		s.runs = append(s.runs, [2]int64{0, 0})
	}
	cols := make([]arrow.Array, 0, rec.NumCols())
	release := func() {
		for _, c := range cols {
			c.Release()
		}
	}
	parts := make([]arrow.Array, len(s.runs))
	for j := 0; j < int(rec.NumCols()); j++ {
		for k, r := range s.runs {
			parts[k] = array.NewSlice(rec.Column(j), r[0], r[1])
		}
		col, err := array.Concatenate(parts, s.dropMem)
		for _, p := range parts {
			p.Release()
		}
		if err != nil {
			release()
			return fmt.Errorf("cannot drop suppressed rows: %w", err)
		}
		cols = append(cols, col)
	}
	b.Rec = array.NewRecordBatch(rec.Schema(), cols, n-int64(len(s.dropped)))
	release()
	rec.Release()
	return nil
}

func (s *Stage) add(t *typeInfo, raw string, alt uint8) {
	if !t.use {
		return
	}
	off := len(s.arena)
	var ok bool
	s.arena, ok = t.norm(s.arena, raw)
	if !ok {
		s.drops[dropKey{"invalid", t.label}]++
		return
	}
	v := s.arena[off:]
	if t.block.blocked(v) {
		s.arena = s.arena[:off]
		s.drops[dropKey{"blocked", t.label}]++
		return
	}
	s.slots = append(s.slots, slot{t: t, off: int32(off), n: int32(len(v)), alt: alt})
	sl := &s.slots[len(s.slots)-1]
	s.g.hashInto(&sl.h, t.name, v)
}

func (s *Stage) value(sl *slot) []byte { return s.arena[sl.off : sl.off+sl.n] }

// prefetch finds the committed profile of every slot: from the cache, and
// for the misses from Pebble in one pass over the sorted, de-duplicated
// keys with one iterator.
func (s *Stage) prefetch() error {
	g := s.g
	s.misses = s.misses[:0]
	for i := range s.slots {
		sl := &s.slots[i]
		if e, ok := g.idc.get(sl.h); ok {
			sl.ent = e
		} else {
			s.misses = append(s.misses, int32(i))
		}
	}
	if len(s.misses) == 0 {
		return nil
	}
	slices.SortFunc(s.misses, func(a, b int32) int { return bytes.Compare(s.slots[a].h[:], s.slots[b].h[:]) })
	// Point lookups in key order: DB.Get consults the bloom filters
	// (engine.OpenStore), so a new identifier costs no data-block read, and
	// sorted keys keep the blocks that are read warm for their neighbours.
	for i := 0; i < len(s.misses); {
		h := &s.slots[s.misses[i]].h
		s.kbuf = identKey(s.kbuf[:0], h)
		var e identEntry
		v, closer, err := g.db.Get(s.kbuf)
		switch {
		case err == nil:
			e, err = decodeIdentValue(v)
			closer.Close()
			if err != nil {
				return err
			}
		case !errors.Is(err, pebble.ErrNotFound):
			return fmt.Errorf("cannot read identifiers: %w", err)
		}
		g.idc.put(*h, e)
		for ; i < len(s.misses) && s.slots[s.misses[i]].h == *h; i++ {
			s.slots[s.misses[i]].ent = e
		}
	}
	return nil
}

// cur is the entry of sl now, with this batch's earlier changes.
func (s *Stage) cur(sl *slot) identEntry {
	if len(s.tx.ids) > 0 {
		if e, ok := s.tx.ids[sl.h]; ok {
			return e
		}
	}
	return sl.ent
}

// gather fills s.cands with the identifiers of the slots st..en and their
// current profiles, choosing how previous_id is read and dropping
// duplicates.
func (s *Stage) gather(st, en int32) {
	s.cands = s.cands[:0]
	for i := st; i < en; i++ {
		sl := &s.slots[i]
		e := s.cur(sl)
		switch sl.alt {
		case altUser:
			if e.pid == 0 {
				continue // not a known user id: read it as an anonymous id
			}
		case altAnon:
			if i > st && s.slots[i-1].alt == altUser && s.cur(&s.slots[i-1]).pid != 0 {
				continue // read as the known user id
			}
		}
		dup := false
		for _, c := range s.cands {
			if s.slots[c.s].h == sl.h {
				dup = true
				break
			}
		}
		if !dup {
			s.cands = append(s.cands, cand{s: i, pid: e.pid, last: e.last})
		}
	}
}

// resolveReadOnly resolves a row that was applied before a restart: to the
// profile that now holds its first identifier in priority order, which is
// where resolving it the first time put it (demotion drops from the end).
func (s *Stage) resolveReadOnly(st, en int32) uint32 {
	s.gather(st, en)
	s.sortCands()
	for _, c := range s.cands {
		if c.pid != 0 {
			return c.pid
		}
	}
	return 0
}
