package engine

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
)

// PrefixKeyring is the keyring's key family (see Keyring):
//
//	0x03 0x00            → v1 | HMAC-SHA256(master key, "cdpstream keyring check v1")[:16]
//	0x03 0x01 | pid (4 BE) → v1 | nonce (12) | AES-256-GCM(master key, data key (32),
//	                         aad "cdpstream profile key v1" | pid (4 BE)) (48)
//	0x03 0x02 | id (16)    → v1 | nonce (12) | AES-256-GCM(master key, data key (32),
//	                         aad "cdpstream id key v1" | id (16)) (48)   (keyring_ids.go)
//	0x03 0x03            → only during a master-key rotation (keyring_rotate.go)
const PrefixKeyring byte = 0x03

const (
	keyringCheck byte = 0x00
	keyringKey   byte = 0x01
	keyringV1    byte = 1

	masterKeyLen = 32
	dataKeyLen   = 32
	nonceLen     = 12
	tagLen       = 16
	wrappedLen   = 1 + nonceLen + dataKeyLen + tagLen

	// SealOverhead is what Seal adds to a plaintext: the nonce and the tag.
	SealOverhead = nonceLen + tagLen
)

const (
	keyringCheckText = "cdpstream keyring check v1"
	wrapAADText      = "cdpstream profile key v1"
)

// DefaultMasterKeyEnv is the environment variable read for the master key
// when EncryptionConfig.MasterKey is empty.
const DefaultMasterKeyEnv = "CDPSTREAM_MASTER_KEY"

// Errors of the keyring; match with errors.Is.
var (
	// ErrMasterKeyMismatch: the store's profile keys were wrapped under
	// another master key (NewKeyring refuses to open it).
	ErrMasterKeyMismatch = errors.New("engine: the store's profile keys are wrapped under another master key")
	// ErrKeyDestroyed: the profile (or KeyID) has no key, because an
	// erasure destroyed it (crypto-shredding) or it never had one. What
	// was sealed under it cannot be read any more.
	ErrKeyDestroyed = errors.New("engine: the data key was destroyed (erased) or never created")
	// ErrDecrypt: authentication failed: the value was sealed for another
	// profile or purpose, or it is corrupt.
	ErrDecrypt = errors.New("engine: cannot decrypt: sealed for another profile or purpose, or corrupt")
)

// EncryptionConfig configures the keyring (the encryption block of the
// config file).
type EncryptionConfig struct {
	// MasterKey wraps every per-profile data key: 32 bytes written as 64
	// hex digits or as base64. Empty: read from the environment variable
	// named by MasterKeyEnv. It is never logged. Losing it makes every
	// encrypted value unreadable, and NewKeyring refuses a store whose
	// keys were wrapped under another one (ErrMasterKeyMismatch).
	MasterKey string `yaml:"master_key"`
	// MasterKeyEnv names the environment variable holding the master key
	// when MasterKey is empty. Default CDPSTREAM_MASTER_KEY.
	MasterKeyEnv string `yaml:"master_key_env"`
	// CacheEntries bounds the unwrapped profile keys kept in memory, each
	// a ready AES-256-GCM instance (about 1.5 KiB). A miss costs a Pebble
	// read, the unwrap, AES key expansion and GCM setup: 3-6 µs
	// against 0.25-0.5 µs for a cached Open of a small value
	// (BenchmarkKeyring). Default 16384 (about 24 MiB).
	CacheEntries int `yaml:"cache_entries"`
}

// Defaults fills unset fields.
func (c *EncryptionConfig) Defaults() {
	if c.MasterKeyEnv == "" {
		c.MasterKeyEnv = DefaultMasterKeyEnv
	}
	if c.CacheEntries == 0 {
		c.CacheEntries = 16384
	}
}

// Validate reports the first invalid field. The key itself never appears
// in an error.
func (c *EncryptionConfig) Validate() error {
	if c.CacheEntries < 0 {
		return errors.New("cache_entries: must be >= 0")
	}
	_, err := c.key()
	return err
}

// key returns the master key from the config or the environment.
func (c *EncryptionConfig) key() ([]byte, error) {
	s, field := c.MasterKey, "master_key"
	if s == "" {
		if c.MasterKeyEnv == "" {
			return nil, errors.New("master_key: must be set, or the environment variable named by master_key_env")
		}
		s = os.Getenv(c.MasterKeyEnv)
		if s == "" {
			return nil, fmt.Errorf("master_key: must be set, or the environment variable named by master_key_env (%s)", c.MasterKeyEnv)
		}
		field = "master_key_env: the value of " + c.MasterKeyEnv
	}
	k, ok := parseMasterKey(s)
	if !ok {
		return nil, fmt.Errorf("%s: must be 32 bytes written as 64 hex digits or as base64", field)
	}
	return k, nil
}

func parseMasterKey(s string) ([]byte, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 2*masterKeyLen {
		if k, err := hex.DecodeString(s); err == nil {
			return k, true
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == masterKeyLen {
			return k, true
		}
	}
	return nil, false
}

// Keyring holds one random AES-256 data key per profile id, stored in
// Pebble under PrefixKeyring wrapped (AES-256-GCM) by the master key, and
// seals and opens values under them. Destroying a profile's key makes
// every copy of what was sealed under it unreadable, wherever the bytes
// survive (old SSTs, backups, free disk blocks): crypto-shredding.
//
// Keys are created on first Seal and staged into the caller's batch, so a
// key commits atomically with the first data it protects. Until the
// caller reports the batch's fate (Committed or Abandon), a new key is
// pinned in memory, so every Seal of that profile in the meantime, from
// any caller, uses the same key and stages the same wrapped bytes.
// Unwrapped keys are cached (EncryptionConfig.CacheEntries, two
// generations of approximate LRU).
//
// A second id space (keyring_ids.go: SealID, OpenID, DestroyID) keys
// data that belongs to no profile id by a 16-byte KeyID: privacy keeps
// one key per request and one per export there.
//
// Every method is safe for concurrent use. They serialise on one mutex
// for the key lookup (including a Pebble read on a cache miss) and the
// nonce; encryption itself runs outside it.
type Keyring struct {
	db   *pebble.DB
	wrap cipher.AEAD // AES-256-GCM under the master key
	reg  prometheus.Registerer
	m    keyringMetrics

	mu      sync.Mutex
	rand    io.Reader
	cur     map[uint32]*dataKey // cache generations
	prev    map[uint32]*dataKey
	half    int                 // entries per generation; 0: no cache
	pending map[uint32]*dataKey // created, not known to be committed
	ids     map[KeyID]*dataKey  // the same for the id space (keyring_ids.go)
	staged  map[*pebble.Batch]*stagedKeys
	doomed  map[uint32]int // destroyed in batches not yet committed
	kbuf    []byte
	wbuf    []byte // aad of a wrapped key
}

// dataKey is one profile's unwrapped key.
type dataKey struct {
	aead    cipher.AEAD
	wrapped []byte // the stored value, to stage into another batch
	refs    int    // pending: batches it is staged in
}

// stagedKeys is what the keyring staged into one batch.
type stagedKeys struct {
	created, destroyed []uint32
	ids                []KeyID // created in the id space
}

type keyringMetrics struct {
	hits, misses, created, destroyed prometheus.Counter
}

// KeyringOption tunes NewKeyring.
type KeyringOption func(*Keyring)

// WithRandom sets the source of data keys and nonces (default
// crypto/rand.Reader). Tests pass a seeded generator to make every sealed
// byte reproducible; anything else must stay cryptographically random.
func WithRandom(r io.Reader) KeyringOption { return func(k *Keyring) { k.rand = r } }

// WithKeyringRegisterer registers the keyring's metrics on reg:
// cdp_engine_keyring_cache_total{result="hit"|"miss"} (key lookups) and
// cdp_engine_keyring_keys_total{event="created"|"destroyed"} (committed).
func WithKeyringRegisterer(reg prometheus.Registerer) KeyringOption {
	return func(k *Keyring) { k.reg = reg }
}

func (k *Keyring) registerMetrics() error {
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_engine_keyring_cache_total",
		Help: "Profile key lookups by the result in the keyring's cache."}, []string{"result"})
	keys := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdp_engine_keyring_keys_total",
		Help: "Profile keys created and destroyed (counted when their batch commits)."}, []string{"event"})
	if k.reg != nil {
		for _, c := range []prometheus.Collector{cache, keys} {
			if err := k.reg.Register(c); err != nil {
				return fmt.Errorf("cannot register keyring metrics: %w", err)
			}
		}
	}
	k.m = keyringMetrics{cache.WithLabelValues("hit"), cache.WithLabelValues("miss"),
		keys.WithLabelValues("created"), keys.WithLabelValues("destroyed")}
	return nil
}

// NewKeyring opens the keyring stored in db (which the caller owns and
// closes after it). On a store without keys it records a check value of
// the master key; on a store with one it refuses another master key
// (ErrMasterKeyMismatch).
func NewKeyring(cfg EncryptionConfig, db *pebble.DB, opts ...KeyringOption) (*Keyring, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("encryption.%w", err)
	}
	master, _ := cfg.key()
	defer clear(master)
	wrap, err := newAEAD(master, "the master key")
	if err != nil {
		return nil, err
	}
	k := &Keyring{db: db, wrap: wrap, rand: rand.Reader, half: (cfg.CacheEntries + 1) / 2,
		cur: map[uint32]*dataKey{}, pending: map[uint32]*dataKey{}, staged: map[*pebble.Batch]*stagedKeys{},
		doomed: map[uint32]int{}, ids: map[KeyID]*dataKey{}}
	for _, o := range opts {
		o(k)
	}
	if err := k.registerMetrics(); err != nil {
		return nil, err
	}
	switch rot, err := getCopy(db, []byte{PrefixKeyring, keyringRotation}); {
	case err != nil:
		return nil, fmt.Errorf("cannot read the rotation state: %w", err)
	case rot != nil:
		return nil, ErrRotationInProgress
	}
	want := checkValue(master)
	ck := []byte{PrefixKeyring, keyringCheck}
	v, closer, err := db.Get(ck)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := db.Set(ck, want, pebble.Sync); err != nil {
			return nil, fmt.Errorf("cannot store the master key check: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("cannot read the master key check: %w", err)
	default:
		same := hmac.Equal(v, want)
		closer.Close()
		if !same {
			return nil, ErrMasterKeyMismatch
		}
	}
	return k, nil
}

// KeyringKey appends the Pebble key of pid's wrapped data key to dst.
// Erasers compact it (the range [key, key+0x00)) so the wrapped key leaves
// the SSTs.
func KeyringKey(dst []byte, pid uint32) []byte {
	dst = append(dst, PrefixKeyring, keyringKey)
	return binary.BigEndian.AppendUint32(dst, pid)
}

// KeyringSpan is the key range of the data keys of profiles first..last.
func KeyringSpan(first, last uint32) (lo, hi []byte) {
	lo = KeyringKey(nil, first)
	if last == ^uint32(0) {
		return lo, []byte{PrefixKeyring, keyringKey + 1}
	}
	return lo, KeyringKey(nil, last+1)
}

// Seal appends to dst nonce | ciphertext | tag of plaintext under pid's
// data key (AES-256-GCM, a random 96-bit nonce) and returns it. aad is
// authenticated together with pid, so the result opens only for the same
// profile and the same aad: callers put the purpose there ("identity
// values", "audience traits") and whatever else the value must stay bound
// to. When pid has no key, one is created and its wrapped form is staged
// into w (nil w: ErrKeyDestroyed); the caller must then call Committed(w)
// once w committed, or Abandon(w). The arguments are not retained.
func (k *Keyring) Seal(dst []byte, w *pebble.Batch, pid uint32, plaintext, aad []byte) ([]byte, error) {
	return k.sealUnder(dst, plaintext, fullAAD(pid, aad), func() (*dataKey, error) { return k.lookup(pid, w) })
}

// Open appends to dst the plaintext of sealed (made by Seal for pid and
// aad) and returns it. ErrKeyDestroyed: pid's key is gone; ErrDecrypt:
// sealed was made for another profile or aad, or is corrupt. sealed is
// not retained.
func (k *Keyring) Open(dst []byte, pid uint32, sealed, aad []byte) ([]byte, error) {
	out, err := k.openUnder(dst, sealed, fullAAD(pid, aad), func() (*dataKey, error) { return k.lookup(pid, nil) })
	if err == ErrDecrypt {
		err = fmt.Errorf("profile %d: %w", pid, ErrDecrypt)
	}
	return out, err
}

// sealUnder is Seal and SealID: lookup finds (or stages) the key under
// k.mu, and the result is bound to full, the key's id and the caller's
// aad.
func (k *Keyring) sealUnder(dst, plaintext, full []byte, lookup func() (*dataKey, error)) ([]byte, error) {
	n := len(dst)
	dst = slices.Grow(dst, nonceLen+len(plaintext)+tagLen)[:n+nonceLen]
	k.mu.Lock()
	d, err := lookup()
	if err == nil {
		// The nonce is drawn in place: no copy of it escapes.
		if _, err = io.ReadFull(k.rand, dst[n:]); err != nil {
			err = fmt.Errorf("cannot draw a nonce: %w", err)
		}
	}
	k.mu.Unlock()
	if err != nil {
		return dst[:n], err
	}
	// Seal appends after dst's length: the nonce it reads there stays.
	return d.aead.Seal(dst, dst[n:], plaintext, full), nil
}

// openUnder is Open and OpenID: a short, forged or mismatched sealed value
// is ErrDecrypt itself (the caller names the key); lookup's errors are
// returned as they are.
func (k *Keyring) openUnder(dst, sealed, full []byte, lookup func() (*dataKey, error)) ([]byte, error) {
	if len(sealed) < SealOverhead {
		return dst, ErrDecrypt
	}
	k.mu.Lock()
	d, err := lookup()
	k.mu.Unlock()
	if err != nil {
		return dst, err
	}
	out, err := d.aead.Open(dst, sealed[:nonceLen], sealed[nonceLen:], full)
	if err != nil {
		return dst, ErrDecrypt
	}
	return out, nil
}

// fullAAD is pid (4 BE) | aad.
func fullAAD(pid uint32, aad []byte) []byte {
	b := make([]byte, 4, 4+len(aad))
	binary.BigEndian.PutUint32(b, pid)
	return append(b, aad...)
}

// Destroy stages the deletion of pid's data key into w and drops it from
// memory: once w commits, nothing sealed under it can be opened again.
// Report w's fate with Committed or Abandon; until then the key is not
// cached again. Destroying a profile without a key is a no-op write.
func (k *Keyring) Destroy(w *pebble.Batch, pid uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kbuf = KeyringKey(k.kbuf[:0], pid)
	if err := w.Delete(k.kbuf, nil); err != nil {
		return fmt.Errorf("cannot stage key destruction: %w", err)
	}
	k.evict(pid)
	delete(k.pending, pid)
	k.doomed[pid]++
	st := k.stagedFor(w)
	st.destroyed = append(st.destroyed, pid)
	return nil
}

// Committed reports that w, into which Seal or Destroy staged keys,
// committed: its new keys become ordinary cached keys, its destroyed keys
// are forgotten for good. A batch the keyring staged nothing into is
// ignored, and so is a second call.
func (k *Keyring) Committed(w *pebble.Batch) {
	k.finish(w, true)
}

// Abandon reports that w will not commit (an error before or during
// Commit): keys created for it and used by no other pending batch are
// forgotten, its destructions are void. Calling it after Committed is a
// no-op, so `defer k.Abandon(w)` next to `defer w.Close()` (and before
// it) is the pattern.
func (k *Keyring) Abandon(w *pebble.Batch) {
	k.finish(w, false)
}

func (k *Keyring) finish(w *pebble.Batch, committed bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.staged[w]
	if st == nil {
		return
	}
	delete(k.staged, w)
	for _, pid := range st.created {
		d := k.pending[pid]
		if d == nil {
			continue // destroyed meanwhile, or committed through another batch
		}
		d.refs--
		if committed {
			delete(k.pending, pid)
			k.m.created.Inc()
			if k.doomed[pid] == 0 {
				k.put(pid, d)
			}
		} else if d.refs == 0 {
			delete(k.pending, pid)
		}
	}
	for _, pid := range st.destroyed {
		if k.doomed[pid]--; k.doomed[pid] <= 0 {
			delete(k.doomed, pid)
		}
		if committed {
			k.evict(pid)
			k.m.destroyed.Inc()
		}
	}
	k.finishIDs(st.ids, committed)
}

func (k *Keyring) stagedFor(w *pebble.Batch) *stagedKeys {
	st := k.staged[w]
	if st == nil {
		st = &stagedKeys{}
		k.staged[w] = st
	}
	return st
}

// lookup returns pid's key: pending, cached, or read from Pebble; when
// there is none and w is not nil, a new one staged into w. k.mu is held.
func (k *Keyring) lookup(pid uint32, w *pebble.Batch) (*dataKey, error) {
	if d := k.pending[pid]; d != nil {
		if w != nil {
			st := k.stagedFor(w)
			if !containsU32(st.created, pid) {
				if err := w.Set(KeyringKey(k.kbuf[:0], pid), d.wrapped, nil); err != nil {
					return nil, fmt.Errorf("cannot stage a profile key: %w", err)
				}
				st.created = append(st.created, pid)
				d.refs++
			}
		}
		return d, nil
	}
	if d := k.get(pid); d != nil {
		k.m.hits.Inc()
		return d, nil
	}
	k.m.misses.Inc()
	k.kbuf = KeyringKey(k.kbuf[:0], pid)
	v, closer, err := k.db.Get(k.kbuf)
	switch {
	case err == nil:
		d, err := k.unwrap(pid, v)
		closer.Close()
		if err != nil {
			return nil, err
		}
		if k.doomed[pid] == 0 {
			k.put(pid, d)
		}
		return d, nil
	case !errors.Is(err, pebble.ErrNotFound):
		return nil, fmt.Errorf("cannot read the key of profile %d: %w", pid, err)
	case w == nil:
		return nil, fmt.Errorf("profile %d: %w", pid, ErrKeyDestroyed)
	}
	d, err := k.create(pid)
	if err != nil {
		return nil, err
	}
	if err := w.Set(k.kbuf, d.wrapped, nil); err != nil {
		return nil, fmt.Errorf("cannot stage a profile key: %w", err)
	}
	d.refs = 1
	k.pending[pid] = d
	st := k.stagedFor(w)
	st.created = append(st.created, pid)
	return d, nil
}

// create draws a data key for pid and wraps it.
func (k *Keyring) create(pid uint32) (*dataKey, error) {
	k.wbuf = wrapAAD(k.wbuf[:0], pid)
	return k.newKey(k.wbuf)
}

// newKey draws a data key and wraps it with aad (what binds the wrapped
// key to its slot).
func (k *Keyring) newKey(aad []byte) (*dataKey, error) {
	var buf [dataKeyLen + nonceLen]byte // one read: the key, then the nonce that wraps it
	defer clear(buf[:])
	if _, err := io.ReadFull(k.rand, buf[:]); err != nil {
		return nil, fmt.Errorf("cannot draw a data key: %w", err)
	}
	raw := buf[:dataKeyLen]
	v := make([]byte, 1+nonceLen, wrappedLen)
	v[0] = keyringV1
	copy(v[1:], buf[dataKeyLen:])
	v = k.wrap.Seal(v, v[1:1+nonceLen], raw, aad)
	aead, err := newAEAD(raw, "a data key")
	if err != nil {
		return nil, err
	}
	return &dataKey{aead: aead, wrapped: v}, nil
}

// unwrap decrypts the stored data key of pid.
func (k *Keyring) unwrap(pid uint32, v []byte) (*dataKey, error) {
	k.wbuf = wrapAAD(k.wbuf[:0], pid)
	d, err := k.openKey(v, k.wbuf)
	if err != nil {
		return nil, fmt.Errorf("profile %d: %w", pid, err)
	}
	return d, nil
}

// openKey decrypts a stored data key wrapped with aad.
func (k *Keyring) openKey(v, aad []byte) (*dataKey, error) {
	var raw [dataKeyLen]byte
	defer clear(raw[:])
	if err := unwrapKey(k.wrap, &raw, v, aad); err != nil {
		return nil, err
	}
	aead, err := newAEAD(raw[:], "a data key")
	if err != nil {
		return nil, err
	}
	return &dataKey{aead: aead, wrapped: append([]byte(nil), v...)}, nil
}

// unwrapKey opens the stored wrapped key v (version | nonce | sealed key)
// with wrap into raw.
func unwrapKey(wrap cipher.AEAD, raw *[dataKeyLen]byte, v, aad []byte) error {
	if len(v) != wrappedLen || v[0] != keyringV1 {
		return fmt.Errorf("%w (wrapped key)", ErrDecrypt)
	}
	if _, err := wrap.Open(raw[:0], v[1:1+nonceLen], v[1+nonceLen:], aad); err != nil {
		return fmt.Errorf("%w (wrapped key)", ErrDecrypt)
	}
	return nil
}

func wrapAAD(dst []byte, pid uint32) []byte {
	return binary.BigEndian.AppendUint32(append(dst, wrapAADText...), pid)
}

// newAEAD sets up AES-256-GCM with key; what names the key in errors.
func newAEAD(key []byte, what string) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cannot set up %s: %w", what, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cannot set up %s: %w", what, err)
	}
	return aead, nil
}

// get, put and evict are the cache: entries go into cur; when cur holds
// half the budget it becomes prev and a new cur starts; a hit in prev
// moves the entry to cur. k.mu is held.
func (k *Keyring) get(pid uint32) *dataKey {
	if d := k.cur[pid]; d != nil {
		return d
	}
	if d := k.prev[pid]; d != nil {
		delete(k.prev, pid)
		k.put(pid, d)
		return d
	}
	return nil
}

func (k *Keyring) put(pid uint32, d *dataKey) {
	if k.half <= 0 {
		return
	}
	if len(k.cur) >= k.half {
		k.prev, k.cur = k.cur, make(map[uint32]*dataKey, k.half)
	}
	k.cur[pid] = d
}

func (k *Keyring) evict(pid uint32) {
	delete(k.cur, pid)
	delete(k.prev, pid)
}

func containsU32(s []uint32, x uint32) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
