package engine

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble"
)

func testID(b byte) KeyID { return KeyID{0: b, 15: b} }

// sealID seals pt for id in its own committed batch.
func sealID(t testing.TB, k *Keyring, db *pebble.DB, id KeyID, pt, aad string) []byte {
	t.Helper()
	return sealCommitted(t, k, db, func(w *pebble.Batch) ([]byte, error) { return k.SealID(nil, w, id, []byte(pt), []byte(aad)) })
}

// TestKeyringIDRoundTrip: a value sealed under a KeyID opens with any
// keyring on the store, for that id and aad only; its wrapped key sits at
// KeyringIDKey and is bound to its id.
func TestKeyringIDRoundTrip(t *testing.T) {
	db := openTestDB(t)
	k := testKeyring(t, db)
	ct := sealID(t, k, db, testID(1), "jane@example.com", "request")
	if len(ct) != len("jane@example.com")+SealOverhead || bytes.Contains(ct, []byte("jane")) {
		t.Fatalf("sealed %q", ct)
	}
	if pt, err := testKeyring(t, db).OpenID([]byte("p:"), testID(1), ct, []byte("request")); err != nil || string(pt) != "p:jane@example.com" {
		t.Fatalf("fresh keyring: %q, %v", pt, err)
	}
	sealID(t, k, db, testID(2), "other", "request")
	seal(t, k, db, 1, "a profile", "request") // profile 1: another space
	for name, c := range map[string]struct {
		id  KeyID
		ct  []byte
		aad string
	}{
		"other id":      {testID(2), ct, "request"},
		"other aad":     {testID(1), ct, "export"},
		"flipped bit":   {testID(1), append(bytes.Clone(ct[:len(ct)-1]), ct[len(ct)-1]^1), "request"},
		"truncated":     {testID(1), ct[:SealOverhead-1], "request"},
		"profile space": {testID(1), seal(t, k, db, 1, "x", "request"), "request"},
	} {
		if _, err := k.OpenID(nil, c.id, c.ct, []byte(c.aad)); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: %v, want ErrDecrypt", name, err)
		}
	}
	if _, err := k.Open(nil, 1, ct, []byte("request")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("an id-sealed value opened as profile 1's: %v", err)
	}
	// The wrapped key moved to another id's slot does not unwrap.
	v, closer, err := db.Get(KeyringIDKey(nil, testID(1)))
	if err != nil {
		t.Fatal(err)
	}
	stolen := bytes.Clone(v)
	closer.Close()
	if err := db.Set(KeyringIDKey(nil, testID(3)), stolen, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := k.OpenID(nil, testID(3), ct, []byte("request")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("key moved to another id: %v, want ErrDecrypt", err)
	}
}

// TestKeyringIDDestroy: after the destroying batch commits, nothing sealed
// under the id opens, here or in a fresh keyring, and its wrapped key is
// gone from the store; a later SealID makes a new key.
func TestKeyringIDDestroy(t *testing.T) {
	db := openTestDB(t)
	k := testKeyring(t, db)
	ct := sealID(t, k, db, testID(5), "rectified name", "r")
	w := db.NewBatch()
	if err := k.DestroyID(w, testID(5)); err != nil {
		t.Fatal(err)
	}
	if _, err := k.OpenID(nil, testID(5), ct, []byte("r")); err != nil {
		t.Fatalf("before the commit: %v", err)
	}
	if err := w.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	k.Committed(w)
	w.Close()
	for name, kr := range map[string]*Keyring{"same keyring": k, "fresh keyring": testKeyring(t, db)} {
		if _, err := kr.OpenID(nil, testID(5), ct, []byte("r")); !errors.Is(err, ErrKeyDestroyed) {
			t.Errorf("%s: %v, want ErrKeyDestroyed", name, err)
		}
	}
	if _, closer, err := db.Get(KeyringIDKey(nil, testID(5))); !errors.Is(err, pebble.ErrNotFound) {
		if err == nil {
			closer.Close()
		}
		t.Fatalf("the wrapped key is still stored: %v", err)
	}
	sealID(t, k, db, testID(5), "new", "r")
	if _, err := k.OpenID(nil, testID(5), ct, []byte("r")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("old bytes under the new key: %v, want ErrDecrypt", err)
	}
}

// TestKeyringIDPending: a new id key is staged into the caller's batch,
// shared by every batch staging it before one commits, staged once per
// batch however often it seals, and forgotten when abandoned.
func TestKeyringIDPending(t *testing.T) {
	db := openTestDB(t)
	k := testKeyring(t, db, WithRandom(rand.NewChaCha8([32]byte{1})))
	w1, w2 := db.NewBatch(), db.NewBatch()
	ct1, err := k.SealID(nil, w1, testID(9), []byte("one"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ct1b, err := k.SealID(nil, w1, testID(9), []byte("one again"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := w1.Count(); n != 1 {
		t.Fatalf("w1 holds %d writes, want the key once", n)
	}
	ct2, err := k.SealID(nil, w2, testID(9), []byte("two"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testKeyring(t, db).OpenID(nil, testID(9), ct1, nil); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("a key reached the store before its batch committed: %v", err)
	}
	if _, err := k.OpenID(nil, testID(9), ct1, nil); err != nil {
		t.Fatalf("the pending key does not open: %v", err)
	}
	k.Abandon(w1)
	w1.Close()
	if err := w2.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	k.Committed(w2)
	w2.Close()
	fresh := testKeyring(t, db)
	for _, ct := range [][]byte{ct1, ct1b, ct2} {
		if _, err := fresh.OpenID(nil, testID(9), ct, nil); err != nil {
			t.Fatalf("after w2 committed: %v", err)
		}
	}
	w3 := db.NewBatch()
	ct3, err := k.SealID(nil, w3, testID(10), []byte("three"), nil)
	if err != nil {
		t.Fatal(err)
	}
	k.Abandon(w3)
	w3.Close()
	if _, err := k.OpenID(nil, testID(10), ct3, nil); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("abandoned key: %v, want ErrKeyDestroyed", err)
	}
	if _, err := k.SealID(nil, nil, testID(11), []byte("x"), nil); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("SealID without a batch for a new id: %v, want ErrKeyDestroyed", err)
	}
	if len(k.ids) != 0 || len(k.staged) != 0 {
		t.Fatalf("left over: %d pending keys, %d batches", len(k.ids), len(k.staged))
	}
}

// TestKeyringIDConcurrent: writers sealing overlapping ids and profiles in
// their own batches while another id is sealed and destroyed over and
// over (run with -race): every committed value opens unless destroyed,
// and no id ends up with two keys.
func TestKeyringIDConcurrent(t *testing.T) {
	db := openTestDB(t)
	k := testKeyring(t, db)
	const writers, rounds, ids = 4, 100, 8
	type sealed struct {
		id KeyID
		ct []byte
	}
	out := make([][]sealed, writers)
	errs := make(chan error, 2*writers*rounds)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				id := testID(byte(1 + (i*5+w)%ids))
				b := db.NewBatch()
				ct, err := k.SealID(nil, b, id, []byte("v"), nil)
				if err == nil {
					_, err = k.Seal(nil, b, uint32(1+i%ids), []byte("p"), nil)
				}
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
				out[w] = append(out[w], sealed{id, ct})
			}
		})
	}
	wg.Go(func() {
		for range rounds {
			b := db.NewBatch()
			if _, err := k.SealID(nil, b, testID(100), []byte("x"), nil); err != nil {
				errs <- err
			}
			_ = b.Commit(pebble.NoSync)
			k.Committed(b)
			b.Close()
			b = db.NewBatch()
			if err := k.DestroyID(b, testID(100)); err != nil {
				errs <- err
			}
			_ = b.Commit(pebble.NoSync)
			k.Committed(b)
			b.Close()
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fresh := testKeyring(t, db)
	for w := range out {
		for _, s := range out[w] {
			if _, err := fresh.OpenID(nil, s.id, s.ct, nil); err != nil {
				t.Fatalf("id %x: %v (two keys for one id?)", s.id, err)
			}
		}
	}
	if len(k.ids) != 0 || len(k.staged) != 0 || len(k.pending) != 0 {
		t.Fatalf("left over: %d id keys, %d batches, %d pending", len(k.ids), len(k.staged), len(k.pending))
	}
}

// BenchmarkKeyringID measures SealID and OpenID of a 512-byte value (a
// request's identities, a small export) under a committed key: each reads
// and unwraps the key (id keys are not cached).
func BenchmarkKeyringID(b *testing.B) {
	db := openTestDB(b)
	k := testKeyring(b, db)
	pt := bytes.Repeat([]byte("x"), 512)
	aad := []byte("bench request")
	ct := sealID(b, k, db, testID(1), string(pt), string(aad))
	b.Run("seal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(pt)))
		dst := make([]byte, 0, 1024)
		for b.Loop() {
			var err error
			if dst, err = k.SealID(dst[:0], nil, testID(1), pt, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(pt)))
		dst := make([]byte, 0, 1024)
		for b.Loop() {
			var err error
			if dst, err = k.OpenID(dst[:0], testID(1), ct, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
}
