package engine

import (
	"bytes"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble"
)

const testMasterHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

func testKeyring(t testing.TB, db *pebble.DB, opts ...KeyringOption) *Keyring {
	t.Helper()
	k, err := NewKeyring(EncryptionConfig{MasterKey: testMasterHex}, db, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openTestDB(t testing.TB) *pebble.DB {
	t.Helper()
	db, err := pebble.Open(t.TempDir(), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// seal seals pt for pid in its own committed batch.
func seal(t testing.TB, k *Keyring, db *pebble.DB, pid uint32, pt, aad string) []byte {
	t.Helper()
	return sealCommitted(t, k, db, func(w *pebble.Batch) ([]byte, error) { return k.Seal(nil, w, pid, []byte(pt), []byte(aad)) })
}

// sealCommitted runs sealFn on a batch of its own, commits it and reports
// the commit to k.
func sealCommitted(t testing.TB, k *Keyring, db *pebble.DB, sealFn func(*pebble.Batch) ([]byte, error)) []byte {
	t.Helper()
	w := db.NewBatch()
	defer w.Close()
	defer k.Abandon(w)
	out, err := sealFn(w)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	k.Committed(w)
	return out
}

func TestKeyringRoundTrip(t *testing.T) {
	db := openTestDB(t)
	k := testKeyring(t, db)
	ct := seal(t, k, db, 7, "jane@example.com", "test values")
	if len(ct) != len("jane@example.com")+SealOverhead || bytes.Contains(ct, []byte("jane")) {
		t.Fatalf("sealed %q", ct)
	}
	pt, err := k.Open([]byte("prefix:"), 7, ct, []byte("test values"))
	if err != nil || string(pt) != "prefix:jane@example.com" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	// A second seal of the same value differs (random nonce), and uses the same key.
	if ct2 := seal(t, k, db, 7, "jane@example.com", "test values"); bytes.Equal(ct, ct2) {
		t.Fatal("two seals gave the same bytes")
	}
	// A keyring opened later on the store reads it.
	k2 := testKeyring(t, db)
	if pt, err := k2.Open(nil, 7, ct, []byte("test values")); err != nil || string(pt) != "jane@example.com" {
		t.Fatalf("fresh keyring: %q, %v", pt, err)
	}
}

// TestKeyringBinding: a sealed value opens only for its profile and its
// aad (purpose), and not when corrupt.
func TestKeyringBinding(t *testing.T) {
	db := openTestDB(t)
	k := testKeyring(t, db)
	ct := seal(t, k, db, 1, "secret", "purpose a")
	seal(t, k, db, 2, "other", "purpose a")
	for name, c := range map[string]struct {
		pid uint32
		ct  []byte
		aad string
	}{
		"other profile": {2, ct, "purpose a"},
		"other purpose": {1, ct, "purpose b"},
		"flipped bit":   {1, append(bytes.Clone(ct[:len(ct)-1]), ct[len(ct)-1]^1), "purpose a"},
		"truncated":     {1, ct[:SealOverhead-1], "purpose a"},
	} {
		if _, err := k.Open(nil, c.pid, c.ct, []byte(c.aad)); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: %v, want ErrDecrypt", name, err)
		}
	}
	// The same key bytes moved to another profile's slot do not unwrap:
	// the wrapped key is bound to its profile id too.
	v, closer, err := db.Get(KeyringKey(nil, 1))
	if err != nil {
		t.Fatal(err)
	}
	stolen := bytes.Clone(v)
	closer.Close()
	if err := db.Set(KeyringKey(nil, 3), stolen, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := testKeyring(t, db).Open(nil, 3, ct, []byte("purpose a")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("key moved to another profile: %v, want ErrDecrypt", err)
	}
}

func TestKeyringMasterKeyMismatch(t *testing.T) {
	db := openTestDB(t)
	testKeyring(t, db)
	other := strings.Repeat("ab", 32)
	_, err := NewKeyring(EncryptionConfig{MasterKey: other}, db)
	if !errors.Is(err, ErrMasterKeyMismatch) {
		t.Fatalf("another master key: %v, want ErrMasterKeyMismatch", err)
	}
	if strings.Contains(err.Error(), other) || strings.Contains(err.Error(), testMasterHex) {
		t.Fatalf("the error shows a key: %v", err)
	}
	// The same key as base64 is the same key.
	raw := []byte{}
	for i := range 32 {
		raw = append(raw, byte(i))
	}
	if _, err := NewKeyring(EncryptionConfig{MasterKey: base64.StdEncoding.EncodeToString(raw)}, db); err != nil {
		t.Fatalf("the same key in base64: %v", err)
	}
}

func TestEncryptionConfig(t *testing.T) {
	t.Setenv("CDPSTREAM_TEST_MASTER", base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)))
	for _, c := range []struct {
		cfg  EncryptionConfig
		want string // "" valid; else a substring of the error
	}{
		{EncryptionConfig{MasterKey: testMasterHex}, ""},
		{EncryptionConfig{MasterKeyEnv: "CDPSTREAM_TEST_MASTER"}, ""},
		{EncryptionConfig{MasterKeyEnv: "CDPSTREAM_TEST_UNSET_MASTER"}, "master_key: must be set, or the environment variable named by master_key_env (CDPSTREAM_TEST_UNSET_MASTER)"},
		{EncryptionConfig{MasterKey: "too-short-key-value"}, "master_key: must be 32 bytes"},
		{EncryptionConfig{MasterKey: testMasterHex[:62] + "zz"}, "master_key: must be 32 bytes"},
		{EncryptionConfig{MasterKey: testMasterHex, CacheEntries: -1}, "cache_entries"},
	} {
		c.cfg.Defaults()
		err := c.cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.cfg, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		case err != nil && c.cfg.MasterKey != "" && strings.Contains(err.Error(), c.cfg.MasterKey):
			t.Errorf("the error shows the key: %v", err)
		}
	}
}

// TestKeyringDestroy: after Destroy commits, Open fails with
// ErrKeyDestroyed, in this keyring and in a fresh one; a later Seal makes
// a new key, under which the old bytes still do not open.
func TestKeyringDestroy(t *testing.T) {
	db := openTestDB(t)
	k := testKeyring(t, db)
	ct := seal(t, k, db, 5, "traits of five", "p")
	w := db.NewBatch()
	if err := k.Destroy(w, 5); err != nil {
		t.Fatal(err)
	}
	// Not committed yet: still readable (and not cached again meanwhile).
	if _, err := k.Open(nil, 5, ct, []byte("p")); err != nil {
		t.Fatalf("before the commit: %v", err)
	}
	if err := w.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	k.Committed(w)
	w.Close()
	for name, kr := range map[string]*Keyring{"same keyring": k, "fresh keyring": testKeyring(t, db)} {
		_, err := kr.Open(nil, 5, ct, []byte("p"))
		if !errors.Is(err, ErrKeyDestroyed) {
			t.Errorf("%s: %v, want ErrKeyDestroyed", name, err)
		}
	}
	seal(t, k, db, 5, "new life", "p")
	if _, err := k.Open(nil, 5, ct, []byte("p")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("old bytes under the new key: %v, want ErrDecrypt", err)
	}
}

// TestKeyringPending: a new key is staged into the caller's batch: nothing
// is stored before it commits, the key is shared by every batch staging
// it meanwhile, and an abandoned batch forgets it.
func TestKeyringPending(t *testing.T) {
	db := openTestDB(t)
	k := testKeyring(t, db, WithRandom(rand.NewChaCha8([32]byte{1})))
	w1, w2 := db.NewBatch(), db.NewBatch()
	ct1, err := k.Seal(nil, w1, 9, []byte("one"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ct2, err := k.Seal(nil, w2, 9, []byte("two"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testKeyring(t, db).Open(nil, 9, ct1, nil); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("a key reached the store before its batch committed: %v", err)
	}
	// w1 is abandoned; w2 commits: the key is w2's, and ct1 used it too.
	k.Abandon(w1)
	w1.Close()
	if err := w2.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	k.Committed(w2)
	w2.Close()
	fresh := testKeyring(t, db)
	for _, ct := range [][]byte{ct1, ct2} {
		if _, err := fresh.Open(nil, 9, ct, nil); err != nil {
			t.Fatalf("after w2 committed: %v", err)
		}
	}
	// Abandoned alone: forgotten, and the next Seal makes another key.
	w3 := db.NewBatch()
	ct3, err := k.Seal(nil, w3, 10, []byte("three"), nil)
	if err != nil {
		t.Fatal(err)
	}
	k.Abandon(w3)
	w3.Close()
	if _, err := k.Open(nil, 10, ct3, nil); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("abandoned key: %v, want ErrKeyDestroyed", err)
	}
	if len(k.pending) != 0 || len(k.staged) != 0 {
		t.Fatalf("left over: %d pending keys, %d batches", len(k.pending), len(k.staged))
	}
}

// TestKeyringCacheEviction: the cache holds at most CacheEntries keys; an
// evicted key is read and unwrapped again.
func TestKeyringCacheEviction(t *testing.T) {
	db := openTestDB(t)
	k, err := NewKeyring(EncryptionConfig{MasterKey: testMasterHex, CacheEntries: 4}, db)
	if err != nil {
		t.Fatal(err)
	}
	var cts [][]byte
	for pid := uint32(1); pid <= 20; pid++ {
		cts = append(cts, seal(t, k, db, pid, "v", "p"))
		if n := len(k.cur) + len(k.prev); n > 4 {
			t.Fatalf("%d keys cached, bound 4", n)
		}
	}
	for i, ct := range cts {
		if _, err := k.Open(nil, uint32(i+1), ct, []byte("p")); err != nil {
			t.Fatalf("profile %d after eviction: %v", i+1, err)
		}
	}
	if n := len(k.cur) + len(k.prev); n > 4 {
		t.Fatalf("%d keys cached, bound 4", n)
	}
	if k.get(20) == nil || k.get(1) != nil {
		t.Fatalf("the most recent key is not cached, or the oldest is")
	}
}

// TestKeyringDeterministic: with a seeded random source, the same calls
// give the same bytes (what replay tests rely on).
func TestKeyringDeterministic(t *testing.T) {
	run := func() ([]byte, []byte) {
		db := openTestDB(t)
		k := testKeyring(t, db, WithRandom(rand.NewChaCha8([32]byte{7})))
		ct := seal(t, k, db, 3, "value", "p")
		v, closer, err := db.Get(KeyringKey(nil, 3))
		if err != nil {
			t.Fatal(err)
		}
		defer closer.Close()
		return ct, bytes.Clone(v)
	}
	a1, a2 := run()
	b1, b2 := run()
	if !bytes.Equal(a1, b1) || !bytes.Equal(a2, b2) {
		t.Fatal("seeded keyrings differ")
	}
}

// BenchmarkKeyring measures Seal and Open of a 64-byte value with the
// profile key cached and not cached (a Pebble read, the unwrap, AES key
// expansion and GCM setup), and the setup alone.
func BenchmarkKeyring(b *testing.B) {
	db := openTestDB(b)
	const profiles = 4096
	pt := bytes.Repeat([]byte("x"), 64)
	aad := []byte("bench values")
	setup := func(cache int) (*Keyring, [][]byte) {
		k, err := NewKeyring(EncryptionConfig{MasterKey: testMasterHex, CacheEntries: cache}, db)
		if err != nil {
			b.Fatal(err)
		}
		cts := make([][]byte, profiles)
		w := db.NewBatch()
		for i := range cts {
			if cts[i], err = k.Seal(nil, w, uint32(i+1), pt, aad); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		k.Committed(w)
		w.Close()
		return k, cts
	}
	for _, c := range []struct {
		name  string
		cache int
	}{{"cached", 4 * profiles}, {"uncached", 2}} {
		k, cts := setup(c.cache)
		b.Run("open/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(pt)))
			dst := make([]byte, 0, 128)
			i := 0
			for b.Loop() {
				var err error
				if dst, err = k.Open(dst[:0], uint32(i%profiles+1), cts[i%profiles], aad); err != nil {
					b.Fatal(err)
				}
				i += 7
			}
		})
		b.Run("seal/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(pt)))
			dst := make([]byte, 0, 128)
			i := 0
			for b.Loop() {
				var err error
				if dst, err = k.Seal(dst[:0], nil, uint32(i%profiles+1), pt, aad); err != nil {
					b.Fatal(err)
				}
				i += 7
			}
		})
	}
	b.Run("setup", func(b *testing.B) {
		key := bytes.Repeat([]byte{1}, 32)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := newAEAD(key, "a data key"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestKeyringConcurrent: writers sealing overlapping profiles in their own
// batches, readers opening, and a destroyer, at once (run with -race):
// every committed value opens unless its profile was destroyed after it,
// and no profile ends up with two keys.
func TestKeyringConcurrent(t *testing.T) {
	db := openTestDB(t)
	k, err := NewKeyring(EncryptionConfig{MasterKey: testMasterHex, CacheEntries: 8}, db)
	if err != nil {
		t.Fatal(err)
	}
	const writers, rounds, profiles = 4, 200, 16
	type sealed struct {
		pid uint32
		ct  []byte
	}
	out := make([][]sealed, writers)
	done := make(chan struct{})
	errs := make(chan error, writers+2)
	for w := range writers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range rounds {
				pid := uint32(1 + (i*7+w)%profiles)
				b := db.NewBatch()
				ct, err := k.Seal(nil, b, pid, []byte("v"), nil)
				if err == nil {
					err = b.Commit(pebble.NoSync)
				}
				if err != nil {
					k.Abandon(b)
					b.Close()
					errs <- err
					return
				}
				k.Committed(b)
				b.Close()
				out[w] = append(out[w], sealed{pid, ct})
				if _, err := k.Open(nil, pid, ct, nil); err != nil && !errors.Is(err, ErrKeyDestroyed) {
					errs <- err
					return
				}
			}
		}()
	}
	// Profile 100 is sealed and destroyed over and over meanwhile.
	go func() {
		defer func() { done <- struct{}{} }()
		for range rounds {
			b := db.NewBatch()
			if _, err := k.Seal(nil, b, 100, []byte("x"), nil); err != nil {
				errs <- err
			}
			_ = b.Commit(pebble.NoSync)
			k.Committed(b)
			b.Close()
			b = db.NewBatch()
			if err := k.Destroy(b, 100); err != nil {
				errs <- err
			}
			_ = b.Commit(pebble.NoSync)
			k.Committed(b)
			b.Close()
		}
	}()
	for range writers + 1 {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fresh := testKeyring(t, db)
	for w := range out {
		for _, s := range out[w] {
			if _, err := fresh.Open(nil, s.pid, s.ct, nil); err != nil {
				t.Fatalf("profile %d: %v (two keys for one profile?)", s.pid, err)
			}
		}
	}
	if len(k.pending) != 0 || len(k.staged) != 0 || len(k.doomed) != 0 {
		t.Fatalf("left over: %d pending, %d batches, %d doomed", len(k.pending), len(k.staged), len(k.doomed))
	}
}
