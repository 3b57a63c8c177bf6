package segments

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
)

// Consent is the consent stage (engine.Stage) and the owner of consent
// state: per profile and purpose the latest decision, per purpose the
// bitmaps of profiles granted and denied, and the suppression set. Its
// methods are safe for concurrent use: Process holds the write lock for a
// batch; policies' Select and the HTTP handlers take the read lock.
type Consent struct {
	cat *catalogue
	cfg Config
	db  *pebble.DB
	// comp takes the ranges Erase deleted as compaction debt: the
	// caller's (WithCompactor, paid in the background) or, ownComp, the
	// stage's own, paid before Erase returns.
	comp    *engine.Compactor
	ownComp bool
	// stampGran is Config.StampGranularity in µs; 0 (a granularity below
	// a second) writes every repeat.
	stampGran int64

	mu         sync.RWMutex
	changes    []engine.Record // consent-change records for the next batch
	records    bool            // WithChangeRecords
	profiles   table
	granted    [MaxPurposes]*roaring.Bitmap
	denied     [MaxPurposes]*roaring.Bitmap
	suppressed *roaring.Bitmap
	// erased holds the profile ids Erase erased since the process started
	// (and those merged into one of them since): Process records nothing
	// for their rows and merges, Select drops their rows (ReasonErased).
	// Not persisted: after a restart the batches not committed are
	// resolved again by identity, which resolves nothing to an erased id,
	// and ids are never reused. 32-bit roaring: a few bytes per id.
	erased *roaring.Bitmap
	// feed, when set, yields the ids the identity graph erased (and the
	// next position, feedPos): Process adds them to erased before each
	// batch, so an erased person's in-flight rows are not recorded from
	// the moment identity's erasure commits (WithErasedFeed).
	feed    func(from int) ([]uint32, int)
	feedPos int
	exp     expHeap

	// stage-only state (under mu's write lock)
	x       extractor
	ev      eventConsent
	dirty   []uint32 // profiles to write, each once (profile.mark)
	epoch   uint32   // the current dirty epoch (newEpoch)
	gone    map[uint32]struct{}
	erasing []uint32 // profiles a merge into an erased survivor erased (applyMerges)
	redir   map[uint32]uint32
	key     []byte
	val     []byte
	maskB   *array.Uint64Builder
	errSeen [4]uint64

	ann annRing

	pmu      sync.Mutex
	policies map[string]*Policy

	now func() time.Time
	m   *metrics
}

// stampGranularity is g in µs, or 0 when g is below a second (the
// profile's last write time is kept in seconds).
func stampGranularity(g time.Duration) int64 {
	if g < time.Second {
		return 0
	}
	return g.Microseconds()
}

// Option tunes New.
type Option func(*Consent)

// WithCompactor hands the key ranges Erase deleted to comp
// (engine.Compactor) instead of compacting them before Erase returns.
func WithCompactor(comp *engine.Compactor) Option { return func(c *Consent) { c.comp = comp } }

// WithErasedFeed makes Process, before each batch, add the profile ids
// feed reports erased to the erased set (identity.Graph.ErasedSince), and
// clear them from the policies' explain rings: rows still in flight for an
// erased person are then neither recorded nor forwarded as soon as the
// identity graph is erased, before this stage's own Erase runs.
func WithErasedFeed(feed func(from int) ([]uint32, int)) Option {
	return func(c *Consent) { c.feed = feed }
}

// WithClock sets the clock used for expiry (default time.Now); tests use
// it to step time.
func WithClock(now func() time.Time) Option { return func(c *Consent) { c.now = now } }

// WithChangeRecords makes Process attach a consent-change record to the
// batch for every status change (for sinks listing records: [consent]).
// Off by default: encoding them costs time nobody needs when no sink asks.
func WithChangeRecords() Option { return func(c *Consent) { c.records = true } }

// WithAllocator sets the Arrow allocator of the consent_mask column
// (default memory.DefaultAllocator).
func WithAllocator(mem memory.Allocator) Option {
	return func(c *Consent) { c.maskB = array.NewUint64Builder(mem) }
}

// New builds the consent stage over db (which the caller owns and closes
// after the stage), loading the state stored under this package's key
// prefixes and rebuilding the bitmaps from it. cfg is completed with
// Defaults and validated. reg may be nil.
func New(cfg Config, db *pebble.DB, reg prometheus.Registerer, opts ...Option) (*Consent, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("consent.%w", err)
	}
	if db == nil {
		return nil, errors.New("segments: nil pebble.DB")
	}
	c := &Consent{
		cat: compile(cfg), cfg: cfg, db: db,
		stampGran:  stampGranularity(cfg.StampGranularity),
		suppressed: roaring.New(),
		erased:     roaring.New(),
		gone:       map[uint32]struct{}{},
		redir:      map[uint32]uint32{},
		policies:   map[string]*Policy{},
		now:        time.Now,
	}
	for i := range c.granted {
		c.granted[i], c.denied[i] = roaring.New(), roaring.New()
	}
	for _, o := range opts {
		o(c)
	}
	if c.comp == nil {
		comp, err := engine.NewCompactor(db, nil, nil)
		if err != nil {
			return nil, err
		}
		c.comp, c.ownComp = comp, true
	}
	if c.maskB == nil {
		c.maskB = array.NewUint64Builder(memory.DefaultAllocator)
	}
	c.x = extractor{cat: c.cat, cache: newStringCache(cfg.CacheEntries)}
	m, err := newMetrics(reg, c)
	if err != nil {
		return nil, err
	}
	c.m = m
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// Name implements engine.Stage.
func (c *Consent) Name() string { return "consent" }

// load reads every profile's consent and the suppression set from Pebble.
func (c *Consent) load() error {
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixProfile}, UpperBound: []byte{prefixSuppressed + 1}})
	if err != nil {
		return fmt.Errorf("cannot read consent state: %w", err)
	}
	defer it.Close()
	now := c.now().UnixMicro()
	// Keys come in profile id order, so each bitmap's ids arrive sorted:
	// they are gathered per bitmap and added a run at a time (AddMany),
	// the decisions are cut from slabs, and the expiry heap is built once
	// at the end.
	var slab []Decision
	var pend [2][MaxPurposes][]uint32
	flush := func(st, bit int) {
		if len(pend[st][bit]) > 0 {
			[2]*[MaxPurposes]*roaring.Bitmap{&c.granted, &c.denied}[st][bit].AddMany(pend[st][bit])
			pend[st][bit] = pend[st][bit][:0]
		}
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 5 {
			return fmt.Errorf("cannot load consent state: key %x: %w", k, errCorrupt)
		}
		pid := uint32(k[1])<<24 | uint32(k[2])<<16 | uint32(k[3])<<8 | uint32(k[4])
		if k[0] == prefixSuppressed {
			c.suppressed.Add(pid)
			continue
		}
		p := c.profiles.slot(pid)
		if err := decodeProfile(it.Value(), p, &slab); err != nil {
			c.profiles.del(pid)
			return fmt.Errorf("cannot load consent of profile %d: %w", pid, err)
		}
		for i, b := 0, p.set; b != 0; i, b = i+1, b&(b-1) {
			bit := tz(b)
			d := p.d[i]
			st := 0
			switch d.effective(now) {
			case Granted:
				p.granted |= 1 << bit
				if d.Expires != 0 {
					c.exp = append(c.exp, expiry{at: d.Expires, pid: pid, bit: uint8(bit)})
				}
			case Denied:
				p.denied |= 1 << bit
				st = 1
			default:
				continue
			}
			if pend[st][bit] = append(pend[st][bit], pid); len(pend[st][bit]) == loadRun {
				flush(st, bit)
			}
		}
	}
	for st := range pend {
		for bit := range pend[st] {
			flush(st, bit)
		}
	}
	heap.Init(&c.exp)
	return it.Error()
}

// loadRun is how many profile ids load gathers per bitmap before adding
// them.
const loadRun = 4096

// setBits puts d's effective status for bit into p's masks and the
// bitmaps, and schedules its expiry.
func (c *Consent) setBits(pid uint32, p *profile, bit int, d Decision, now int64) {
	m := uint64(1) << bit
	switch d.effective(now) {
	case Granted:
		p.granted |= m
		p.denied &^= m
		c.granted[bit].Add(pid)
		c.denied[bit].Remove(pid)
		if d.Expires != 0 {
			heap.Push(&c.exp, expiry{at: d.Expires, pid: pid, bit: uint8(bit)})
		}
	case Denied:
		p.denied |= m
		p.granted &^= m
		c.denied[bit].Add(pid)
		c.granted[bit].Remove(pid)
	default:
		p.granted &^= m
		p.denied &^= m
		c.granted[bit].Remove(pid)
		c.denied[bit].Remove(pid)
	}
}

// expire lapses the grants whose expiry is at or before now.
func (c *Consent) expire(now int64) {
	for len(c.exp) > 0 && c.exp[0].at <= now {
		e := heap.Pop(&c.exp).(expiry)
		p := c.profiles.get(e.pid)
		d, ok := p.get(int(e.bit))
		if !ok || d.Status != Granted || d.Expires != e.at {
			continue // superseded
		}
		c.setBits(e.pid, p, int(e.bit), d, now)
		c.m.expired(int(e.bit))
	}
}

// apply records decision d of profile pid for bit, if it is not older
// than the decision held: the latest timestamp wins, and on a tie a
// denial beats a grant (so replaying a batch is idempotent).
func (c *Consent) apply(pid uint32, bit int, d Decision, now int64) bool {
	return c.applyTo(c.profiles.slot(pid), pid, bit, d, now)
}

// applyTo is apply on p, pid's slot in c.profiles.
func (c *Consent) applyTo(p *profile, pid uint32, bit int, d Decision, now int64) bool {
	prev, had := p.get(bit)
	if had {
		if d.Time < prev.Time {
			c.m.stale(d.Source)
			return false
		}
		if d.Time == prev.Time && (d == prev || prev.Status == Denied) {
			return false
		}
	}
	if c.records && (!had || prev.Status != d.Status) {
		c.changes = append(c.changes, consentRecord(pid, c.cat.purposeName(bit), d))
	}
	p.put(bit, d)
	// A later decision with the same status and no expiry (the person's
	// preferences repeated on every event, the common case) only moves
	// the timestamp: the bitmaps already say the same.
	if !had || prev.Status != d.Status || prev.Expires != 0 || d.Expires != 0 {
		c.setBits(pid, p, bit, d, now)
		c.markDirty(pid, p)
	} else if prev.Source != d.Source || c.stampGran == 0 || now-int64(p.saved)*1e6 >= c.stampGran {
		// A repeat is written at most once per StampGranularity.
		c.markDirty(pid, p)
	}
	c.m.decision(bit, d.Source, d.Status)
	return true
}

// markDirty lists p (pid's profile) for persist, once per epoch.
func (c *Consent) markDirty(pid uint32, p *profile) {
	if p.mark != c.epoch {
		p.mark = c.epoch
		c.dirty = append(c.dirty, pid)
	}
}

// newEpoch starts a unit of changes (a batch, a PUT): nothing is dirty
// and nothing is gone.
func (c *Consent) newEpoch() {
	c.dirty = c.dirty[:0]
	clear(c.gone)
	c.erasing = c.erasing[:0]
	c.epoch++
	if c.epoch == 0 {
		// Wrapped: no profile's mark may read as current.
		for _, pg := range c.profiles.pages {
			if pg != nil {
				for i := range pg {
					pg[i].mark = 0
				}
			}
		}
		c.epoch = 1
	}
}

// merge moves the consent of merged into survivor: per purpose the later
// decision (or, with merge: most_restrictive, a denial over a grant).
func (c *Consent) merge(survivor, merged uint32, now int64) {
	if survivor == merged {
		return
	}
	pm := c.profiles.get(merged)
	if pm == nil {
		return
	}
	// Pages never move, so pm stays valid while slot allocates.
	ps := c.profiles.slot(survivor)
	for b := pm.set; b != 0; b &= b - 1 {
		bit := tz(b)
		dm, _ := pm.get(bit)
		if ds, ok := ps.get(bit); ok && !c.mergeWins(dm, ds, now) {
			continue
		}
		ps.put(bit, dm)
		c.setBits(survivor, ps, bit, dm, now)
	}
	for b := pm.set; b != 0; b &= b - 1 {
		bit := tz(b)
		c.granted[bit].Remove(merged)
		c.denied[bit].Remove(merged)
	}
	c.profiles.del(merged) // persist skips it if it was dirty
	c.gone[merged] = struct{}{}
	c.markDirty(survivor, ps)
	c.m.merges.Inc()
}

// mergeWins reports whether the merged profile's decision dm replaces the
// survivor's ds.
func (c *Consent) mergeWins(dm, ds Decision, now int64) bool {
	if c.cfg.Merge == MergeMostRestrictive {
		em, es := dm.effective(now), ds.effective(now)
		if (em == Denied) != (es == Denied) {
			return em == Denied
		}
	}
	if dm.Time != ds.Time {
		return dm.Time > ds.Time
	}
	return dm.Status == Denied && ds.Status != Denied
}

// Process implements engine.Stage: it applies the batch's merges, then
// each row's consent to its profile (rows with profile id 0 only inform
// their own mask), writes the changed profiles to Pebble in one synced
// batch, and replaces the consent_mask column.
//
// consent_mask of a row is the effective consent after the row: bit i is
// set when the profile (or, unresolved, the event) granted purpose i, or
// nothing is known and purpose i defaults to granted.
//
// Rows of an erased profile (resolved by identity before the erasure,
// still in flight) record nothing and read nothing: no decision, no
// profile, no write, no change record, no expiry; their consent_mask is 0
// and every policy drops them (ReasonErased). Merges naming an erased
// profile: see applyMerges.
//
// Pebble: one Pebble batch per engine.Batch, separate from identity's
// batch (which commits identity and input offsets atomically). Applying a
// decision is idempotent (latest wins, ties deny), so replaying batches
// after a crash gives the same state; committing both in one Pebble batch
// is the next step.
func (c *Consent) Process(ctx context.Context, b *engine.Batch) (err error) {
	if b.Rows() == 0 && len(b.Merges) == 0 {
		return nil
	}
	now := c.now().UnixMicro()
	// Profiles a merge into an erased survivor erased: once the lock is
	// released (Select takes a policy's lock before c.mu), the policies'
	// explain rings forget them and the stage's own compactor pays their
	// debt, as Erase does.
	var erasedNow, fed map[uint32]struct{}
	defer func() {
		if fed != nil {
			c.erasePolicies(fed)
		}
		if erasedNow == nil {
			return
		}
		c.erasePolicies(erasedNow)
		if err == nil && c.ownComp {
			err = c.comp.CompactNow(context.Background())
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	// Consent changes of this batch, and those the API made since the last
	// one, travel with the batch to the sinks that list records: [consent].
	defer func() {
		b.Records = append(b.Records, c.changes...)
		c.changes = nil
		c.m.flushCounts()
	}()
	fed = c.pullErased()
	c.expire(now)
	c.newEpoch()
	clear(c.redir)
	c.applyMerges(b.Merges, now)
	if len(c.erasing) > 0 {
		erasedNow = make(map[uint32]struct{}, len(c.erasing))
		for _, id := range c.erasing {
			erasedNow[id] = struct{}{}
		}
		c.forget(erasedNow)
	}
	n := b.Rows()
	if n == 0 {
		return c.persist()
	}
	rec := b.Rec
	pids, ok1 := rec.Column(engine.ColProfileID).(*array.Uint32)
	raws, ok2 := rec.Column(engine.ColRaw).(*array.Binary)
	tss, ok3 := rec.Column(engine.ColTimestamp).(*array.Timestamp)
	// The decoder's cut-out of the consent fields, when it made one.
	cfs, _ := rec.Column(engine.ColConsentFields).(*array.Binary)
	if !ok1 || !ok2 || !ok3 {
		return errors.New("segments: batch not in engine.Schema")
	}
	a := c.ann.claim(b.Seq, n)
	pidv, tsv := pids.Uint32Values(), tss.TimestampValues()
	a.pids = append(a.pids[:0], pidv...)
	c.maskB.Reserve(n)
	def := c.cat.defGranted
	ev := &c.ev
	// Checked once per batch: with nothing erased (the common case) a row
	// costs one predictable branch more.
	er := !c.erased.IsEmpty()
	for i := 0; i < n; i++ {
		pid := pidv[i]
		if len(c.redir) > 0 {
			if s, ok := c.redir[pid]; ok {
				pid = s
			}
		}
		if er && pid != 0 && c.erased.Contains(pid) {
			// In flight since before the erasure: the event is neither
			// read nor recorded (applyMerges never redirects to or from an
			// erased id, so pid is the row's own or a live survivor's).
			c.maskB.UnsafeAppend(0)
			a.ek[i], a.eg[i], a.pk[i] = 0, 0, 0
			continue
		}
		ts := int64(tsv[i]) // µs, per engine.Schema
		c.x.extractRow(cfs, raws, i, ts, ev)
		var p *profile
		if pid != 0 {
			p = c.profiles.get(pid)
		}
		if ev.known != 0 && pid != 0 {
			if p != nil && ev.own == 0 && ev.known&^p.set == 0 && ts < p.minT {
				// Every decision of the row is older than the profile's
				// for its purpose (minT is the profile's oldest): all
				// stale, as apply would find bit by bit, without reading
				// the decisions. Replayed and late events take this path.
				for bb := ev.known; bb != 0; bb &= bb - 1 {
					c.m.stale(ev.src[tz(bb)])
				}
			} else {
				if p == nil {
					p = c.profiles.slot(pid)
				}
				for bb := ev.known; bb != 0; bb &= bb - 1 {
					bit := tz(bb)
					d := Decision{Status: Denied, Time: ts, Source: ev.src[bit]}
					if ev.ts[bit] != 0 {
						d.Time = ev.ts[bit]
					}
					if ev.granted>>bit&1 == 1 {
						d.Status = Granted
						if ttl := c.cat.ttl[bit]; ttl > 0 {
							d.Expires = d.Time + ttl
						}
					}
					c.applyTo(p, pid, bit, d, now)
				}
			}
		}
		var known, granted uint64
		if pid == 0 {
			known, granted = ev.known, ev.granted
		} else if p != nil {
			known, granted = p.granted|p.denied, p.granted
		}
		c.maskB.UnsafeAppend(granted | def&^known)
		a.ek[i], a.eg[i], a.pk[i] = ev.known, ev.granted, known
	}
	c.m.flushExtractor(&c.x, &c.errSeen)
	err = c.persist()
	col := c.maskB.NewUint64Array()
	nrec, serr := rec.SetColumn(engine.ColConsentMask, col)
	col.Release()
	if serr != nil {
		return fmt.Errorf("cannot set consent_mask: %w", serr)
	}
	rec.Release()
	b.Rec = nrec
	c.ann.publish(a, b.Seq, nrec)
	c.m.gauges(c)
	return err
}

// pullErased adds the ids the feed reports erased since the last call to
// the erased set and returns those new to it (nil if none). Their state,
// if any, stays until Erase runs; nothing more is recorded for them. The
// caller holds c.mu.
func (c *Consent) pullErased() map[uint32]struct{} {
	if c.feed == nil {
		return nil
	}
	ids, next := c.feed(c.feedPos)
	c.feedPos = next
	var fed map[uint32]struct{}
	for _, id := range ids {
		if c.erased.CheckedAdd(id) {
			if fed == nil {
				fed = make(map[uint32]struct{}, len(ids))
			}
			fed[id] = struct{}{}
		}
	}
	return fed
}

// applyMerges applies the batch's merges and fills c.redir. A merge never
// moves consent out of or into an erased profile:
//
//   - an erased merged profile holds nothing to move; its rows keep their
//     id (no redirect) and are dropped as the erased id's;
//   - the profiles merged into an erased survivor are the erased person's
//     (identity merged them before erasing the survivor, and erased their
//     redirects with it; their consent reached this stage only now): their
//     consent is erased as Erase would (memory, bitmaps, Pebble, with
//     compaction debt) and they join the erased set, so their rows, in this
//     batch and still in flight, are dropped too; so does a profile merged
//     earlier in the batch into one of them.
//
// The caller holds c.mu.
func (c *Consent) applyMerges(merges []engine.Merge, now int64) {
	er := !c.erased.IsEmpty()
	for _, mg := range merges {
		for _, id := range mg.Merged {
			if er && (c.erased.Contains(id) || c.erased.Contains(mg.Survivor)) {
				if !c.erased.Contains(id) {
					c.eraseMerged(id)
				}
				continue
			}
			c.merge(mg.Survivor, id, now)
			c.redir[id] = mg.Survivor
		}
	}
	// a redirect chain within one batch (a merged into b, b into c)
	for id, s := range c.redir {
		for i := 0; i < 8; i++ {
			next, ok := c.redir[s]
			if !ok {
				break
			}
			s = next
		}
		c.redir[id] = s
	}
	if len(c.erasing) == 0 {
		return
	}
	// a merged into b, then b into an erased survivor: a's consent moved
	// into b, and went with it.
	for id, s := range c.redir {
		if c.erased.Contains(s) {
			c.eraseMerged(id)
			delete(c.redir, id)
		}
	}
}

// eraseMerged erases profile id, merged into an erased survivor: its
// consent leaves memory and the bitmaps, persist deletes its record and
// stages the compaction of its key range, and it joins the erased set.
// The caller holds c.mu and calls forget for c.erasing.
func (c *Consent) eraseMerged(id uint32) {
	if p := c.profiles.get(id); p != nil {
		for b := p.set; b != 0; b &= b - 1 {
			bit := tz(b)
			c.granted[bit].Remove(id)
			c.denied[bit].Remove(id)
		}
		c.profiles.del(id)
		c.m.erased.Inc()
	}
	c.gone[id] = struct{}{}
	c.erased.Add(id)
	c.erasing = append(c.erasing, id)
}

// persist writes the dirty profiles and deletes the merged ones.
func (c *Consent) persist() error {
	if len(c.dirty) == 0 && len(c.gone) == 0 {
		return nil
	}
	w := c.db.NewBatch()
	defer w.Close()
	for pid := range c.gone {
		c.key = profileKey(c.key[:0], prefixProfile, pid)
		if err := w.Delete(c.key, nil); err != nil {
			return fmt.Errorf("cannot stage consent delete: %w", err)
		}
	}
	// Profiles erased by a merge: their deleted records must leave the
	// files (engine.Compactor), as Erase's do.
	for _, sp := range profileSpans(erasedPrefixes, c.erasing) {
		if err := c.comp.Stage(w, sp[0], sp[1]); err != nil {
			return fmt.Errorf("cannot stage compaction debt: %w", err)
		}
	}
	// In key order: the memtable inserts a sorted run far faster (each
	// insert starts from the previous one's position in the skiplist).
	slices.Sort(c.dirty)
	saved := uint32(c.now().Unix())
	for _, pid := range c.dirty {
		p := c.profiles.get(pid)
		if p == nil {
			continue // merged away
		}
		p.saved = saved
		c.key = profileKey(c.key[:0], prefixProfile, pid)
		c.val = appendProfile(c.val[:0], p)
		if err := w.Set(c.key, c.val, nil); err != nil {
			return fmt.Errorf("cannot stage consent: %w", err)
		}
	}
	if err := w.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("cannot commit consent: %w", err)
	}
	if len(c.erasing) > 0 {
		c.comp.Staged()
	}
	return nil
}

// Suppress adds profiles to the suppression set, persistently: policies
// drop every event of a suppressed profile (reason "suppressed").
func (c *Consent) Suppress(pids ...uint32) error { return c.setSuppressed(true, pids) }

// Unsuppress removes profiles from the suppression set.
func (c *Consent) Unsuppress(pids ...uint32) error { return c.setSuppressed(false, pids) }

// Suppressed reports whether pid is suppressed.
func (c *Consent) Suppressed(pid uint32) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.suppressed.Contains(pid)
}

func (c *Consent) setSuppressed(on bool, pids []uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.db.NewBatch()
	defer w.Close()
	for _, pid := range pids {
		k := profileKey(nil, prefixSuppressed, pid)
		var err error
		if on {
			err = w.Set(k, nil, nil)
		} else {
			err = w.Delete(k, nil)
		}
		if err != nil {
			return fmt.Errorf("cannot stage suppression: %w", err)
		}
	}
	if err := w.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("cannot commit suppression: %w", err)
	}
	for _, pid := range pids {
		if on {
			c.suppressed.Add(pid)
		} else {
			c.suppressed.Remove(pid)
		}
	}
	return nil
}

// PurposeSets returns copies of the bitmaps of profiles that granted and
// that denied purpose name (unknown = in neither), for audiences and
// tests.
func (c *Consent) PurposeSets(name string) (granted, denied *roaring.Bitmap, ok bool) {
	bit, ok := c.cat.bitOf(name)
	if !ok {
		return nil, nil, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.granted[bit].Clone(), c.denied[bit].Clone(), true
}

// annotation keeps, for one processed batch, each row's event consent and
// profile knowledge, which the consent_mask column cannot carry: policies
// that decide by the event's consent, or that treat unknown differently
// from the purpose default, read it. It is keyed by batch sequence and the
// record Process produced, so a policy never reads another batch's rows.
type annotation struct {
	seq uint64
	// rec identifies the batch (compared by pointer only: the runner may
	// have released it, so it is never read through).
	rec        arrow.RecordBatch
	ek, eg, pk []uint64
	pids       []uint32 // the rows' profile ids, for Erase
}

// annRing holds the annotations of the last len(a) batches. Select falls
// back to the bitmaps and to parsing raw events for older batches.
type annRing struct {
	mu   sync.RWMutex
	a    [64]annotation
	next int
	maxN int // rows of the largest batch claimed (under the stage's lock)
}

func (r *annRing) claim(seq uint64, n int) *annotation {
	r.mu.Lock()
	a := &r.a[r.next]
	r.next = (r.next + 1) % len(r.a)
	a.seq, a.rec = 0, nil
	r.mu.Unlock()
	// Sized for the largest batch seen, so that batch sizes varying
	// around the batcher's limit allocate each slot once.
	r.maxN = max(r.maxN, n)
	grow := func(s []uint64) []uint64 {
		if cap(s) < n {
			return make([]uint64, n, r.maxN)
		}
		return s[:n]
	}
	a.ek, a.eg, a.pk = grow(a.ek), grow(a.eg), grow(a.pk)
	return a
}

func (r *annRing) publish(a *annotation, seq uint64, rec arrow.RecordBatch) {
	r.mu.Lock()
	a.seq, a.rec = seq, rec
	r.mu.Unlock()
}

// find returns the annotation of b; the caller holds r.mu.RLock.
func (r *annRing) find(b *engine.Batch) *annotation {
	for i := range r.a {
		if a := &r.a[i]; a.rec != nil && a.seq == b.Seq && a.rec == b.Rec {
			return a
		}
	}
	return nil
}

// consentRecord encodes one consent change as a control record:
// {"type":"consent","profile_id":7,"purpose":"analytics","status":"denied",
// "time":"...","source":"segment"}, keyed by the profile id. A grant's
// subject is the profile (a sink withholds it once the profile is
// erased); a denial has none, so it always goes: it only restricts, and a
// sink that tracks consent without deletion notices must not keep a
// stale grant.
func consentRecord(pid uint32, purpose string, d Decision) engine.Record {
	v, _ := json.Marshal(struct {
		Type      string    `json:"type"`
		ProfileID uint32    `json:"profile_id"`
		Purpose   string    `json:"purpose"`
		Status    string    `json:"status"`
		Time      time.Time `json:"time"`
		Source    string    `json:"source"`
	}{"consent", pid, purpose, d.Status.String(), time.UnixMicro(d.Time).UTC(), d.Source.String()})
	r := engine.Record{Type: "consent", Key: strconv.AppendUint(nil, uint64(pid), 10), Value: v}
	if d.Status == Granted {
		r.Subject = pid
	}
	return r
}
