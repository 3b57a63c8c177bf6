package identity

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	stdhash "hash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdpstream/cdpstream/engine"
)

// Errors returned by Graph.
var (
	ErrSecretMismatch = errors.New("identity: store was written under another identifier secret")
	// ErrOldDerivation: the store keys identifiers by the first derivation
	// (HMAC of the plain value). This version keys them by HMAC of the
	// value's SHA-256 (see doc.go), so every lookup in such a store would
	// find nothing; New refuses it instead.
	ErrOldDerivation = errors.New("identity: store keys identifiers by the v1 derivation (HMAC of the plain value); " +
		"this version derives keys from SHA-256 of the value (v2): rebuild the store from the input topics")
	ErrNotFound   = errors.New("identity: not found")
	ErrOpConflict = errors.New("identity: operation conflicts with the graph")
)

// secretCheck is hashed as an identifier of type "" under the configured
// secret and stored (0x10 0x02), so New can tell another secret, or another
// key derivation, from the right one. Its version names the derivation.
const (
	secretCheck   = "cdpstream identity secret check v2"
	secretCheckV1 = "cdpstream identity secret check v1" // HMAC(secret, 0x00 | check), the v1 derivation
)

// Graph is the identity graph in Pebble: identifiers, profiles, and the
// merge log. All its methods are safe for concurrent use; they serialise on
// one mutex, and the Stage holds it for the whole of a batch.
type Graph struct {
	cfg Config
	db  *pebble.DB
	m   *metrics
	// now stamps operations that do not come from an event (removal, split).
	now func() time.Time

	mu     sync.Mutex
	mac    stdhash.Hash
	macBuf []byte
	sumBuf []byte
	kbuf   []byte
	types  map[string]*typeInfo
	byID   []*typeInfo // by persisted type id; byID[0] is nil
	maxPri int
	next   uint32 // next profile id
	seq    uint64 // next merge-log sequence number
	idc    *genCache[hash, identEntry]
	pc     *genCache[uint32, *profile]
	// supp holds every suppressed identifier hash and its group (0x18),
	// for the Stage's check; nextGroup is the next suppression group id.
	supp      map[hash]uint64
	nextGroup uint64

	// kr seals identifier values in profile records (nil: plain v1
	// records); pt is plaintext scratch, scrubbed after each use.
	kr *engine.Keyring
	// comp takes the erased keys as compaction debt: the caller's
	// (WithCompactor, paid in the background) or, ownComp, the Graph's
	// own, paid before Erase returns.
	comp    *engine.Compactor
	ownComp bool
	pt      []byte

	onCommit func([]Op)

	// gone holds the profile ids erased since the Graph was opened (the
	// survivors and what was merged into them), for ErasedFilter; goneN
	// is its size, read without goneMu.
	goneMu  sync.RWMutex
	gone    *roaring.Bitmap
	goneLog []uint32 // the same ids in the order erased, for ErasedSince
	goneN   atomic.Uint64
	// held holds, per key (a privacy request), the profile ids about to be
	// erased (Hold), which ErasedFilter also drops; heldAll is their
	// union and heldN its size, read without goneMu. Memory only.
	held    map[string][]uint32
	heldAll *roaring.Bitmap
	heldN   atomic.Uint64
}

// Option tunes New.
type Option func(*Graph)

// WithKeyring encrypts the identifier values of profile records under
// each profile's key (see the package doc). Without it records hold the
// values in plain (v1), as before encryption existed; a store written
// with a keyring cannot be opened without one.
func WithKeyring(k *engine.Keyring) Option { return func(g *Graph) { g.kr = k } }

// WithCompactor hands the keys an erasure deleted to c, staged in the
// erasure's own synced batch, instead of compacting them before Erase
// returns: Erase then costs one synced commit, and c compacts in the
// background (see engine.Compactor).
func WithCompactor(c *engine.Compactor) Option { return func(g *Graph) { g.comp = c } }

// typeInfo is the runtime form of one identifier type.
type typeInfo struct {
	name   string
	id     uint16 // persisted id; 0 until the type is first stored
	norm   normFunc
	prio   int
	unique bool
	limit  Limit
	block  *matcher
	label  string // metric label: the name for configured types, "other" otherwise
	use    bool   // values of this type take part in resolution
}

// New opens the identity graph stored in db. db stays owned by the caller
// and must outlive the Graph. Metrics are registered on reg (nil: not
// registered).
func New(cfg Config, db *pebble.DB, reg prometheus.Registerer, opts ...Option) (*Graph, error) {
	cfg.Types = slices.Clone(cfg.Types)
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	g := &Graph{
		cfg:    cfg,
		db:     db,
		m:      m,
		now:    time.Now,
		mac:    hmac.New(sha256.New, []byte(cfg.secret())),
		types:  make(map[string]*typeInfo),
		byID:   []*typeInfo{nil},
		next:   1,
		seq:    1,
		gone:   roaring.New(),
		sumBuf: make([]byte, 0, sha256.Size),
	}
	for _, o := range opts {
		o(g)
	}
	if g.comp == nil {
		c, err := engine.NewCompactor(db, nil, nil)
		if err != nil {
			return nil, err
		}
		g.comp, g.ownComp = c, true
	}
	g.idc = newGenCache[hash](cfg.CacheBytes*3/4, identSize)
	g.pc = newGenCache[uint32](cfg.CacheBytes/4, profileSize)
	for i := range cfg.Types {
		t := &cfg.Types[i]
		blk, err := newMatcher(t.Blocked, t.BlockedRegex)
		if err != nil {
			return nil, err // Validate compiled them already
		}
		g.types[t.Name] = &typeInfo{name: t.Name, norm: normalisers[t.Normalize], prio: t.Priority,
			unique: t.Unique, limit: t.Limit, block: blk, label: t.Name, use: true}
		g.maxPri = max(g.maxPri, t.Priority)
	}
	if err := g.load(); err != nil {
		return nil, err
	}
	return g, nil
}

// load reads the secret check, the counters and the type dictionary.
func (g *Graph) load() error {
	var want hash
	g.hashInto(&want, "", []byte(secretCheck))
	k := []byte{prefixMeta, metaSecret}
	v, closer, err := g.db.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := g.db.Set(k, want[:], pebble.Sync); err != nil {
			return fmt.Errorf("cannot store identity secret check: %w", err)
		}
	case err != nil:
		return fmt.Errorf("cannot read identity secret check: %w", err)
	default:
		same := bytes.Equal(v, want[:])
		old := !same && bytes.Equal(v, g.checkV1())
		closer.Close()
		switch {
		case old:
			return ErrOldDerivation
		case !same:
			return ErrSecretMismatch
		}
	}
	v, closer, err = g.db.Get([]byte{prefixMeta, metaCounters})
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("cannot read identity counters: %w", err)
	default:
		g.next, g.seq, err = decodeCounters(v)
		closer.Close()
		if err != nil {
			return err
		}
	}
	it, err := g.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixType}, UpperBound: []byte{prefixType + 1}})
	if err != nil {
		return fmt.Errorf("cannot read identifier types: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		name := string(it.Key()[1:])
		val := it.Value()
		d := decoder{b: val[min(1, len(val)):]}
		id := d.uvarint()
		if len(val) < 2 || val[0] != valueV1 || d.err != nil || id == 0 || id >= maxTypes {
			return corrupt("type dictionary")
		}
		for len(g.byID) <= int(id) {
			g.byID = append(g.byID, nil)
		}
		t := g.types[name]
		if t == nil {
			t = g.newUnknownType(name)
		}
		t.id = uint16(id)
		g.byID[id] = t
	}
	for i, t := range g.byID {
		if i > 0 && t == nil {
			return corrupt("type dictionary has a gap")
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	return g.loadSuppression()
}

// newUnknownType registers a type that is not configured. It resolves only
// when UnknownTypes is "accept".
func (g *Graph) newUnknownType(name string) *typeInfo {
	blk, _ := newMatcher(defaultBlocked, defaultBlockedRegex)
	t := &typeInfo{name: name, norm: normTrim, prio: g.maxPri + 1, block: blk, label: "other",
		use: g.cfg.UnknownTypes == "accept"}
	g.types[name] = t
	return t
}

// typeByName returns the type called name, registering an unknown type on
// first sight; nil when the type table is full. name may alias a reused
// buffer: it is copied when kept.
func (g *Graph) typeByName(name string) *typeInfo {
	if t := g.types[name]; t != nil {
		return t
	}
	if len(g.types) >= maxTypes-1 || g.cfg.UnknownTypes != "accept" {
		return nil
	}
	return g.newUnknownType(strings.Clone(name))
}

// hashInto sets h to the keyed hash of a normalised identifier:
// HMAC-SHA256(secret, type | 0x00 | SHA-256(value))[:16]. Hashing the value
// first lets a caller who holds only the SHA-256 of a value find it
// (hashSumInto, LookupHash); it costs one SHA-256 per identifier.
func (g *Graph) hashInto(h *hash, typ string, val []byte) {
	sum := sha256.Sum256(val)
	g.hashSumInto(h, typ, &sum)
}

// hashSumInto sets h to the keyed hash of the identifier of type typ whose
// normalised value has SHA-256 sum.
func (g *Graph) hashSumInto(h *hash, typ string, sum *[sha256.Size]byte) {
	b := append(g.macBuf[:0], typ...)
	b = append(b, 0)
	b = append(b, sum[:]...)
	g.macBuf = b
	g.mac.Reset()
	g.mac.Write(b)
	copy(h[:], g.mac.Sum(g.sumBuf[:0]))
}

// checkV1 is what a store written with the v1 derivation holds under
// 0x10 0x02 for the configured secret.
func (g *Graph) checkV1() []byte {
	m := hmac.New(sha256.New, []byte(g.cfg.secret()))
	m.Write([]byte{0})
	m.Write([]byte(secretCheckV1))
	return m.Sum(nil)[:hashLen]
}

// lookupIdent returns the entry of the identifier with hash h; pid 0 if
// there is none.
func (g *Graph) lookupIdent(h *hash) (identEntry, error) {
	if e, ok := g.idc.get(*h); ok {
		return e, nil
	}
	g.kbuf = identKey(g.kbuf[:0], h)
	v, closer, err := g.db.Get(g.kbuf)
	if errors.Is(err, pebble.ErrNotFound) {
		g.idc.put(*h, identEntry{})
		return identEntry{}, nil
	}
	if err != nil {
		return identEntry{}, fmt.Errorf("cannot read identifier: %w", err)
	}
	e, err := decodeIdentValue(v)
	closer.Close()
	if err != nil {
		return identEntry{}, err
	}
	g.idc.put(*h, e)
	return e, nil
}

// loadProfile returns the stored profile id, nil if there is none. The
// result is shared with the cache and must not be modified.
func (g *Graph) loadProfile(id uint32) (*profile, error) {
	if p, ok := g.pc.get(id); ok {
		return p, nil
	}
	g.kbuf = profileKey(g.kbuf[:0], id)
	v, closer, err := g.db.Get(g.kbuf)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read profile %d: %w", id, err)
	}
	p, err := g.decodeProfile(id, v)
	closer.Close()
	if err != nil {
		return nil, err
	}
	g.pc.put(id, p)
	return p, nil
}

// decodeProfile decodes a stored record and fills the hashes a v1 record
// does not store. The result does not alias v.
func (g *Graph) decodeProfile(id uint32, v []byte) (*profile, error) {
	p, err := decodeProfile(id, v)
	if err != nil {
		return nil, fmt.Errorf("profile %d: %w", id, err)
	}
	if p.nsealed > 0 && g.kr == nil {
		return nil, fmt.Errorf("profile %d: %w: its values are encrypted and the graph has no keyring", id, ErrCorrupt)
	}
	if v[0] == profileV1 {
		for i := range p.idents {
			x := &p.idents[i]
			if int(x.typ) >= len(g.byID) || x.typ == 0 {
				return nil, fmt.Errorf("profile %d: %w", id, corrupt("identifier type"))
			}
			g.hashInto(&x.h, g.byID[x.typ].name, []byte(x.value))
		}
	}
	return p, nil
}

// values returns the plain values of p's identifiers, in order, opening
// its sealed chunks; p is not changed.
func (g *Graph) values(p *profile) ([]string, error) {
	out := make([]string, len(p.idents))
	i := 0
	for _, c := range p.sealed {
		var err error
		g.pt, err = g.kr.Open(g.pt[:0], p.id, c.b, valuesAAD(nil, p.idents[i:i+c.n]))
		if err == nil {
			err = decodeValues(out[i:i+c.n], g.pt)
		}
		clear(g.pt)
		if err != nil {
			return nil, fmt.Errorf("cannot read the identifiers of profile %d: %w", p.id, err)
		}
		i += c.n
	}
	for ; i < len(p.idents); i++ {
		out[i] = p.idents[i].value
	}
	return out, nil
}

// reveal gives every identifier of p (which the caller owns: a txn's
// clone) its plain value and drops the sealed chunks, so the next commit
// seals all of them again, as one chunk.
func (g *Graph) reveal(p *profile) error {
	if p.nsealed == 0 {
		return nil
	}
	vals, err := g.values(p)
	if err != nil {
		return err
	}
	for i := range p.idents {
		p.idents[i].value = vals[i]
	}
	p.sealed, p.nsealed = nil, 0
	return nil
}

// publishCacheMetrics moves the caches' hit counts into the metrics.
func (g *Graph) publishCacheMetrics() {
	h, m := g.idc.takeStats()
	g.m.cacheHits.WithLabelValues("identifier").Add(float64(h))
	g.m.cacheMisses.WithLabelValues("identifier").Add(float64(m))
	h, m = g.pc.takeStats()
	g.m.cacheHits.WithLabelValues("profile").Add(float64(h))
	g.m.cacheMisses.WithLabelValues("profile").Add(float64(m))
	g.m.cacheBytes.WithLabelValues("identifier").Set(float64(g.idc.bytes()))
	g.m.cacheBytes.WithLabelValues("profile").Set(float64(g.pc.bytes()))
}

// DropCaches empties the in-memory caches, so that the next lookups read
// Pebble (used by the cold benchmark).
func (g *Graph) DropCaches() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.idc.reset()
	g.pc.reset()
}

// NextProfileID returns the id the next new profile will get.
func (g *Graph) NextProfileID() uint32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.next
}

func (p *profile) clone() *profile {
	c := *p
	c.merged = slices.Clone(p.merged)
	c.apart = slices.Clone(p.apart)
	c.idents = slices.Clone(p.idents)
	c.sealed = slices.Clone(p.sealed)
	return &c
}

func (p *profile) isMerged(id uint32) bool {
	for _, m := range p.merged {
		if m.id == id {
			return true
		}
	}
	return false
}

func (p *profile) isApart(id uint32) bool { return slices.Contains(p.apart, id) }

// findIdent returns the index of the identifier of type typ and hash h in
// p, -1 if absent.
func (p *profile) findIdent(typ uint16, h *hash) int {
	for i := range p.idents {
		if p.idents[i].h == *h && p.idents[i].typ == typ {
			return i
		}
	}
	return -1
}

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
