package audience

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fastjson"

	"github.com/cdpstream/cdpstream/engine"
)

// Errors of the store; match with errors.Is.
var (
	ErrNotFound = errors.New("audience: not found")
	ErrExists   = errors.New("audience: already exists")
	ErrInUse    = errors.New("audience: referenced by another audience")
)

// ConsentView gives audiences the per-purpose consent state without
// depending on the consent stage's types. Granted and Denied return the
// profiles that granted (denied) purpose, nil for an unknown purpose; a
// profile in neither is unknown. The audience store never modifies the
// bitmaps, and reads them only while it is called (Process, Sweep, reads),
// so an implementation may return shared bitmaps if it serialises with its
// own writer, or copies.
type ConsentView interface {
	Granted(purpose string) *roaring.Bitmap
	Denied(purpose string) *roaring.Bitmap
}

// ConsentPair is optionally implemented by a ConsentView: both sets of a
// purpose read at one instant. The consent stage runs beside the
// audience stage, so two separate reads could see a profile that moved
// from denied to granted in between in neither set (unknown).
type ConsentPair interface {
	Sets(purpose string) (granted, denied *roaring.Bitmap)
}

// PurposeLister is optionally implemented by a ConsentView: definitions
// naming a purpose outside Purposes() are then rejected.
type PurposeLister interface {
	Purposes() []string
}

// Resolver finds a profile by identifier for contains?type=&value=
// (package identity provides it; wired by the caller).
type Resolver interface {
	Lookup(typ, value string) (uint32, bool, error)
}

// IdentifierLister is optionally implemented by a Resolver: it lists the
// values of one identifier type that a profile holds, for members?as=TYPE
// (activation tools want emails or device ids, not profile ids).
type IdentifierLister interface {
	Identifiers(pid uint32, typ string) ([]string, error)
}

// Change is one entry into or exit from an audience.
type Change struct {
	Audience  string    `json:"audience"`
	Version   uint32    `json:"version"`
	ProfileID uint32    `json:"profile_id"`
	Entered   bool      `json:"entered"`
	Time      time.Time `json:"time"`
	// Cause: "event" (a batch), "merge" (the profile merged into another;
	// exits only), "sweep" (a window slid, consent changed), "backfill",
	// "delete" (the audience was deleted; exits are not listed per
	// profile, ProfileID is 0), "erase" (the profile was erased for a
	// privacy request; exits only), "rectify" (SetTraits changed its
	// traits).
	Cause string `json:"cause"`
}

// Config tunes a Store.
type Config struct {
	// BackfillChunk is the number of profiles evaluated per lock hold
	// while back-filling; the pipeline waits at most that long. Default
	// 2048.
	BackfillChunk int `yaml:"backfill_chunk"`
	// MaxTraitBytes bounds the stored traits of one profile; an identify
	// event that would grow them past it is not applied (counted). Default
	// 16 KiB.
	MaxTraitBytes int `yaml:"max_trait_bytes"`
	// MaxAudiences bounds the number of audiences. Default 1000.
	MaxAudiences int `yaml:"max_audiences"`
}

// Defaults fills zero fields with their defaults.
func (c *Config) Defaults() {
	if c.BackfillChunk == 0 {
		c.BackfillChunk = 2048
	}
	if c.MaxTraitBytes == 0 {
		c.MaxTraitBytes = 16 << 10
	}
	if c.MaxAudiences == 0 {
		c.MaxAudiences = 1000
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.BackfillChunk < 1 {
		return errors.New("backfill_chunk: must be >= 1")
	}
	if c.MaxTraitBytes < 2 {
		return errors.New("max_trait_bytes: must be >= 2")
	}
	if c.MaxAudiences < 1 {
		return errors.New("max_audiences: must be >= 1")
	}
	return nil
}

// Store owns audience definitions and memberships and is the audience
// stage (engine.Stage). Methods are safe for concurrent use: Process,
// Sweep, back-fill chunks and definition changes take the write lock;
// reads take the read lock.
type Store struct {
	cfg     Config
	db      *pebble.DB
	consent ConsentView
	onChg   func([]Change)
	kr      *engine.Keyring // nil: traits in plain
	// comp takes the ranges Erase deleted as compaction debt: the caller's
	// (WithCompactor, paid in the background) or, ownComp, the store's
	// own, paid before Erase returns.
	comp    *engine.Compactor
	ownComp bool
	now     func() time.Time
	reg     prometheus.Registerer
	m       *metrics

	mu    sync.RWMutex
	auds  map[string]*audience
	order []*audience // topological: an audience after those it references
	known *roaring.Bitmap
	// erased holds the profile ids erased since the process started
	// (Erase, and merges into an erased survivor): Process applies
	// nothing of their rows or merges. Not persisted: after a restart
	// identity resolves nothing to an erased id, and ids are never reused.
	erased *roaring.Bitmap
	// feed, when set, yields the ids the identity graph erased (from
	// feedPos): Process adds them to erased before each batch
	// (WithErasedFeed).
	feed    func(from int) ([]uint32, int)
	feedPos int
	ctrs    map[string][]*counterDef // event name → counters to keep
	offs    map[string]int64         // topic \x00 partition → next applied offset
	day     uint32                   // day of the last sweep

	// per-Process scratch, under mu
	p1, p2  fastjson.Parser
	arena   fastjson.Arena
	key     []byte
	val     []byte // plain traits read
	js      []byte // plain traits written
	sbuf    []byte // the stored value written
	work    map[uint32]*pidWork
	wlist   []uint32
	incs    map[ctrInc]int64
	incList []ctrInc
	chg     []Change
	csets   map[string]consentSets
	erasing []uint32 // profiles a merge into an erased survivor erased

	bf       sync.WaitGroup
	closed   atomic.Bool
	dropped  atomic.Uint64 // identify events not applied (traits too large)
	evalsCtr atomic.Uint64
}

type consentSets struct{ granted, denied *roaring.Bitmap }

type audience struct {
	def     Definition
	root    *node
	dp      *deps
	members *roaring.Bitmap
	changed time.Time
	// back-fill progress
	bfDone, bfTotal atomic.Int64
	bfRunning       atomic.Bool
	idx             int // position in order
	dependents      []*audience
}

// Info is what reads return about an audience.
type Info struct {
	Definition
	// Size is the number of members (after the activation purpose, if
	// any).
	Size uint64 `json:"size"`
	// Changed is when membership last changed (zero: never).
	Changed  time.Time `json:"changed"`
	Backfill Progress  `json:"backfill"`
}

// Progress of a back-fill.
type Progress struct {
	Running bool  `json:"running"`
	Done    int64 `json:"done"`
	Total   int64 `json:"total"`
}

// Option tunes New.
type Option func(*Store)

// WithClock sets the clock used for windows, trait "within" conditions
// and record times (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithCompactor hands the key ranges Erase deleted to c (engine.Compactor)
// instead of compacting them before Erase returns.
func WithCompactor(c *engine.Compactor) Option { return func(s *Store) { s.comp = c } }

// WithErasedFeed makes Process, before each batch, add the profile ids
// feed reports erased to the erased set (identity.Graph.ErasedSince):
// rows still in flight for an erased person then write no traits,
// counters or memberships (and create no key) from the moment the
// identity graph is erased, before this store's own Erase runs.
func WithErasedFeed(feed func(from int) ([]uint32, int)) Option {
	return func(s *Store) { s.feed = feed }
}

// WithConsent sets the consent state that consent conditions, consent:X
// terms and activation purposes read. Without it every profile's consent
// is unknown.
func WithConsent(v ConsentView) Option { return func(s *Store) { s.consent = v } }

// WithOnChange sets a function called with the entered/exited records of
// each Process, Sweep and back-fill chunk, after they are committed, in
// order and under the store's write lock (so records of two calls never
// interleave). The slice is reused after fn returns. A sink for activation
// tools subscribes here.
func WithOnChange(fn func([]Change)) Option { return func(s *Store) { s.onChg = fn } }

// New opens the store over db (which the caller owns and closes after the
// store), loading definitions, memberships and known profiles. Audiences
// whose back-fill did not complete are back-filled again in the
// background.
func New(cfg Config, db *pebble.DB, opts ...Option) (*Store, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("audiences.%w", err)
	}
	if db == nil {
		return nil, errors.New("audience: nil pebble.DB")
	}
	s := &Store{cfg: cfg, db: db, now: time.Now, auds: map[string]*audience{}, known: roaring.New(), erased: roaring.New(),
		ctrs: map[string][]*counterDef{}, offs: map[string]int64{}, work: map[uint32]*pidWork{},
		incs: map[ctrInc]int64{}, csets: map[string]consentSets{}}
	for _, o := range opts {
		o(s)
	}
	if s.comp == nil {
		c, err := engine.NewCompactor(db, nil, nil)
		if err != nil {
			return nil, err
		}
		s.comp, s.ownComp = c, true
	}
	if err := s.registerMetrics(); err != nil {
		return nil, err
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	s.day = dayOf(s.now())
	return s, nil
}

// Close waits for running back-fills to stop. The db stays open.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.bf.Wait()
	return nil
}

// Wait blocks until every running back-fill has finished.
func (s *Store) Wait() { s.bf.Wait() }

func (s *Store) purposes() []string {
	if pl, ok := s.consent.(PurposeLister); ok {
		return pl.Purposes()
	}
	return nil
}

func (s *Store) load() error {
	// Definitions: the highest version of each id wins.
	latest := map[string][]byte{}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixDef}, UpperBound: []byte{prefixDef + 1}})
	if err != nil {
		return fmt.Errorf("cannot read audiences: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) < 7 || k[len(k)-5] != 0 {
			it.Close()
			return fmt.Errorf("cannot load audiences: bad key %x", k)
		}
		latest[string(k[1:len(k)-5])] = append([]byte(nil), it.Value()...)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("cannot read audiences: %w", err)
	}
	var defs []Definition
	for id, v := range latest {
		if len(v) == 0 || v[0] != valueVersion {
			return fmt.Errorf("cannot load audience %s: unknown value version", id)
		}
		if len(v) == 1 {
			continue // deleted
		}
		var d Definition
		if err := json.Unmarshal(v[1:], &d); err != nil {
			return fmt.Errorf("cannot load audience %s: %w", id, err)
		}
		defs = append(defs, d)
	}
	// Compile without checking references first, then order.
	for i := range defs {
		d := defs[i]
		root, dp, err := compile(&d, nil, nil)
		if err != nil {
			return fmt.Errorf("cannot load audience %s: %w", d.ID, err)
		}
		s.auds[d.ID] = &audience{def: d, root: root, dp: dp, members: roaring.New()}
	}
	if err := s.reorder(); err != nil {
		return err
	}
	// Memberships.
	for id, a := range s.auds {
		lo, hi := memberPrefix(id)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return fmt.Errorf("cannot read members of %s: %w", id, err)
		}
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			a.members.Add(binary.BigEndian.Uint32(k[len(k)-4:]))
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("cannot read members of %s: %w", id, err)
		}
	}
	// Known profiles.
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixTraits}, UpperBound: []byte{prefixTraits + 1}})
	if err != nil {
		return fmt.Errorf("cannot read profiles: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) == 5 {
			s.known.Add(binary.BigEndian.Uint32(k[1:]))
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("cannot read profiles: %w", err)
	}
	// Offsets.
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixOffset}, UpperBound: []byte{prefixOffset + 1}})
	if err != nil {
		return fmt.Errorf("cannot read offsets: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		if v := it.Value(); len(v) == 8 {
			s.offs[string(it.Key()[1:])] = int64(binary.BigEndian.Uint64(v))
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("cannot read offsets: %w", err)
	}
	// Restart unfinished back-fills.
	for _, a := range s.order {
		v, closer, err := s.db.Get(backfillKey(a.def.ID))
		done := err == nil && len(v) == 4 && binary.BigEndian.Uint32(v) == a.def.Version
		if closer != nil {
			closer.Close()
		}
		if err != nil && !errors.Is(err, pebble.ErrNotFound) {
			return fmt.Errorf("cannot read back-fill state of %s: %w", a.def.ID, err)
		}
		if !done {
			s.startBackfill(a)
		}
	}
	return nil
}

// reorder recomputes the topological order, dependents and the counters to
// keep; it fails on a reference cycle or a dangling reference.
func (s *Store) reorder() error {
	ids := make([]string, 0, len(s.auds))
	for id := range s.auds {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	state := map[string]int{} // 1 visiting, 2 done
	var order []*audience
	var visit func(id string, path []string) error
	visit = func(id string, path []string) error {
		a := s.auds[id]
		if a == nil {
			return fmt.Errorf("audience %s references unknown audience %s", path[len(path)-1], id)
		}
		switch state[id] {
		case 1:
			return fmt.Errorf("audience reference cycle: %v", append(path, id))
		case 2:
			return nil
		}
		state[id] = 1
		for _, r := range a.dp.audiences {
			if err := visit(r, append(path, id)); err != nil {
				return err
			}
		}
		state[id] = 2
		order = append(order, a)
		return nil
	}
	for _, id := range ids {
		if err := visit(id, nil); err != nil {
			return err
		}
	}
	ctrs := map[string][]*counterDef{}
	for i, a := range order {
		a.idx = i
		a.dependents = nil
	}
	for _, a := range order {
		for _, r := range a.dp.audiences {
			ref := s.auds[r]
			ref.dependents = append(ref.dependents, a)
		}
		for _, c := range a.dp.counters {
			dup := false
			for _, x := range ctrs[c.name] {
				dup = dup || x.id == c.id
			}
			if !dup {
				ctrs[c.name] = append(ctrs[c.name], c)
			}
		}
	}
	s.order, s.ctrs = order, ctrs
	return nil
}

// Create stores a new audience (version 1) and starts its back-fill over
// the profiles already known. A *ValidationError names the bad node.
func (s *Store) Create(d Definition) (Info, error) {
	return s.put(d, true)
}

// Update stores a new version of an existing audience; its membership is
// recomputed by a back-fill (members stay visible meanwhile and converge).
func (s *Store) Update(d Definition) (Info, error) {
	return s.put(d, false)
}

func (s *Store) put(d Definition, create bool) (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.auds[d.ID]
	if create && old != nil {
		return Info{}, fmt.Errorf("%w: %s", ErrExists, d.ID)
	}
	if !create && old == nil {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, d.ID)
	}
	if create && len(s.auds) >= s.cfg.MaxAudiences {
		return Info{}, verr("id", "the store holds max_audiences (%d) audiences already", s.cfg.MaxAudiences)
	}
	root, dp, err := compile(&d, func(id string) bool { return s.auds[id] != nil }, s.purposes())
	if err != nil {
		return Info{}, err
	}
	now := s.now().UTC()
	d.Version, d.Created, d.Updated = 1, now, now
	if old != nil {
		d.Version, d.Created = old.def.Version+1, old.def.Created
	} else if v, err := s.lastVersion(d.ID); err != nil {
		return Info{}, err
	} else {
		d.Version = v + 1 // an id deleted before starts after its last version
	}
	a := &audience{def: d, root: root, dp: dp, members: roaring.New()}
	if old != nil {
		a.members = old.members
		a.changed = old.changed
	}
	prev := s.auds[d.ID]
	s.auds[d.ID] = a
	if err := s.reorder(); err != nil {
		s.auds[d.ID] = prev
		_ = s.reorder()
		return Info{}, verr("condition", "%v", err)
	}
	body, _ := json.Marshal(d)
	if err := s.db.Set(defKey(nil, d.ID, d.Version), append([]byte{valueVersion}, body...), pebble.Sync); err != nil {
		s.auds[d.ID] = prev
		_ = s.reorder()
		return Info{}, fmt.Errorf("cannot store audience %s: %w", d.ID, err)
	}
	s.startBackfill(a)
	return s.info(a), nil
}

func (s *Store) lastVersion(id string) (uint32, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: defKey(nil, id, 0), UpperBound: append(append([]byte{prefixDef}, id...), 1)})
	if err != nil {
		return 0, fmt.Errorf("cannot read audience %s: %w", id, err)
	}
	defer it.Close()
	if it.Last() {
		k := it.Key()
		return binary.BigEndian.Uint32(k[len(k)-4:]), nil
	}
	return 0, it.Error()
}

// Delete removes an audience and its memberships. An audience another one
// references cannot be deleted (ErrInUse).
func (s *Store) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.auds[id]
	if a == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if len(a.dependents) > 0 {
		return fmt.Errorf("%w: %s is used by %s", ErrInUse, id, a.dependents[0].def.ID)
	}
	w := s.db.NewBatch()
	defer w.Close()
	lo, hi := memberPrefix(id)
	_ = w.DeleteRange(lo, hi, nil)
	_ = w.Set(defKey(nil, id, a.def.Version+1), []byte{valueVersion}, nil)
	_ = w.Delete(backfillKey(id), nil)
	if err := w.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("cannot delete audience %s: %w", id, err)
	}
	delete(s.auds, id)
	_ = s.reorder()
	s.emit(Change{Audience: id, Version: a.def.Version, Time: s.now().UTC(), Cause: "delete"})
	return nil
}

// Versions returns every stored version of an audience, oldest first
// (deleted versions are not listed).
func (s *Store) Versions(id string) ([]Definition, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: defKey(nil, id, 0), UpperBound: append(append([]byte{prefixDef}, id...), 1)})
	if err != nil {
		return nil, fmt.Errorf("cannot read audience %s: %w", id, err)
	}
	defer it.Close()
	var out []Definition
	for it.First(); it.Valid(); it.Next() {
		v := it.Value()
		if len(v) <= 1 {
			continue
		}
		var d Definition
		if err := json.Unmarshal(v[1:], &d); err != nil {
			return nil, fmt.Errorf("cannot decode audience %s: %w", id, err)
		}
		out = append(out, d)
	}
	return out, it.Error()
}

// List returns every audience, by id.
func (s *Store) List() []Info {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Info, 0, len(s.auds))
	for _, a := range s.auds {
		out = append(out, s.info(a))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Get returns one audience.
func (s *Store) Get(id string) (Info, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a := s.auds[id]
	if a == nil {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return s.info(a), nil
}

func (s *Store) info(a *audience) Info {
	return Info{Definition: a.def, Size: s.size(a), Changed: a.changed,
		Backfill: Progress{Running: a.bfRunning.Load(), Done: a.bfDone.Load(), Total: a.bfTotal.Load()}}
}

// granted returns purpose's granted bitmap, or an empty one.
func (s *Store) granted(purpose string) *roaring.Bitmap {
	if s.consent != nil {
		if g := s.consent.Granted(purpose); g != nil {
			return g
		}
	}
	return roaring.New()
}

func (s *Store) size(a *audience) uint64 {
	if a.def.ActivationPurpose != "" {
		return a.members.AndCardinality(s.granted(a.def.ActivationPurpose))
	}
	return a.members.GetCardinality()
}

// Contains reports whether pid is a member of audience id (and, for an
// activation-safe audience, granted its purpose).
func (s *Store) Contains(id string, pid uint32) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a := s.auds[id]
	if a == nil {
		return false, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if !a.members.Contains(pid) {
		return false, nil
	}
	if a.def.ActivationPurpose != "" {
		return s.granted(a.def.ActivationPurpose).Contains(pid), nil
	}
	return true, nil
}

// Members appends to dst the members of audience id above after, in
// ascending order, at most limit of them, and returns dst. A cursor that
// is the last id returned never skips or repeats a profile that stays a
// member while a caller pages, whatever changes meanwhile: ids only grow.
func (s *Store) Members(id string, after uint32, limit int, dst []uint32) ([]uint32, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a := s.auds[id]
	if a == nil {
		return dst, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	var g *roaring.Bitmap
	if a.def.ActivationPurpose != "" {
		g = s.granted(a.def.ActivationPurpose)
	}
	return page(a.members, g, after, limit, dst), nil
}

// page appends up to limit values of bm (that are also in filter, if
// non-nil) above after.
func page(bm, filter *roaring.Bitmap, after uint32, limit int, dst []uint32) []uint32 {
	if after == ^uint32(0) {
		return dst
	}
	it := bm.Iterator()
	it.AdvanceIfNeeded(after + 1)
	for n := 0; n < limit && it.HasNext(); {
		v := it.Next()
		if filter != nil && !filter.Contains(v) {
			continue
		}
		dst = append(dst, v)
		n++
	}
	return dst
}

// Bitmap implements Source: an audience's members (intersected with its
// activation purpose's grants) or a purpose's grants. Call it only under
// the read lock (Query does).
func (s *Store) Bitmap(t Term) (*roaring.Bitmap, error) {
	if t.Consent {
		if s.consent == nil || s.consent.Granted(t.Name) == nil {
			return nil, fmt.Errorf("%w: unknown purpose %q", ErrNotFound, t.Name)
		}
		return s.consent.Granted(t.Name), nil
	}
	a := s.auds[t.Name]
	if a == nil {
		return nil, fmt.Errorf("%w: unknown audience %q", ErrNotFound, t.Name)
	}
	if a.def.ActivationPurpose != "" {
		return roaring.And(a.members, s.granted(a.def.ActivationPurpose)), nil
	}
	return a.members, nil
}

// Universe implements Source: every profile the store has seen.
func (s *Store) Universe() *roaring.Bitmap { return s.known }

// QueryResult is the answer of Query.
type QueryResult struct {
	Count   uint64
	Members []uint32 // only when asked: ids above the cursor, ascending
}

// Query evaluates a set expression. With members false only the count is
// computed (AndCardinality where the shape allows); otherwise up to limit
// member ids above after are returned too.
func (s *Store) Query(e *Expr, members bool, after uint32, limit int) (QueryResult, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !members {
		n, err := e.Count(s)
		return QueryResult{Count: n}, err
	}
	bm, err := e.Eval(s)
	if err != nil {
		return QueryResult{}, err
	}
	return QueryResult{Count: bm.GetCardinality(), Members: page(bm, nil, after, limit, []uint32{})}, nil
}

// Known reports the number of profiles the store has seen.
func (s *Store) Known() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.known.GetCardinality()
}

// Traits returns the traits stored for pid (a JSON object) and whether
// the profile is known. The bytes are the caller's.
func (s *Store) Traits(pid uint32) (json.RawMessage, bool, error) {
	v, closer, err := s.db.Get(traitsKey(nil, pid))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cannot read traits of profile %d: %w", pid, err)
	}
	defer closer.Close()
	out, err := s.decodeTraits(nil, pid, v)
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}
