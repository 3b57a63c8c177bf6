package engine

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/internal/disktest"
)

const (
	rotNewHex   = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	rotOtherHex = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
)

// rotFixture is a store with sealed values under testMasterHex: profiles
// 1..n (7 erased: its key destroyed) and three id keys.
type rotFixture struct {
	dir     string
	db      *pebble.DB
	pids    map[uint32][]byte // pid → sealed "value-PID"
	ids     map[KeyID][]byte
	wrapped [][]byte // the wrapped keys as stored under the old master key
}

func newRotFixture(t *testing.T, n int) *rotFixture {
	t.Helper()
	f := &rotFixture{dir: t.TempDir(), pids: map[uint32][]byte{}, ids: map[KeyID][]byte{}}
	t.Cleanup(func() {
		if f.db != nil {
			f.db.Close()
		}
	})
	f.open(t)
	k := testKeyring(t, f.db)
	for pid := uint32(1); pid <= uint32(n); pid++ {
		f.pids[pid] = seal(t, k, f.db, pid, fmt.Sprint("value-", pid), "traits")
	}
	for b := byte(1); b <= 3; b++ {
		id := testID(b)
		f.ids[id] = sealCommitted(t, k, f.db, func(w *pebble.Batch) ([]byte, error) {
			return k.SealID(nil, w, id, []byte(fmt.Sprint("request-", b)), []byte("request"))
		})
	}
	w := f.db.NewBatch()
	if err := k.Destroy(w, 7); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	k.Committed(w)
	w.Close()
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: []byte{PrefixKeyring, keyringKey}, UpperBound: []byte{PrefixKeyring, keyringIDKey + 1}})
	if err != nil {
		t.Fatal(err)
	}
	for it.First(); it.Valid(); it.Next() {
		f.wrapped = append(f.wrapped, bytes.Clone(it.Value()))
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if len(f.wrapped) != n-1+3 {
		t.Fatalf("%d wrapped keys stored, want %d", len(f.wrapped), n-1+3)
	}
	return f
}

func (f *rotFixture) open(t *testing.T) {
	t.Helper()
	db, err := OpenStore(f.dir, StoreConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.db = db
}

// restart closes the store and opens it again.
func (f *rotFixture) restart(t *testing.T) {
	t.Helper()
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	f.db = nil
	f.open(t)
}

// readAll opens every sealed value with a keyring under master.
func (f *rotFixture) readAll(t *testing.T, master string) {
	t.Helper()
	k, err := NewKeyring(EncryptionConfig{MasterKey: master}, f.db)
	if err != nil {
		t.Fatalf("keyring under the new key: %v", err)
	}
	for pid, sealed := range f.pids {
		pt, err := k.Open(nil, pid, sealed, []byte("traits"))
		switch {
		case pid == 7:
			if !errors.Is(err, ErrKeyDestroyed) {
				t.Fatalf("erased profile 7: %q, %v; want ErrKeyDestroyed", pt, err)
			}
		case err != nil || string(pt) != fmt.Sprint("value-", pid):
			t.Fatalf("profile %d: %q, %v", pid, pt, err)
		}
	}
	for id, sealed := range f.ids {
		if pt, err := k.OpenID(nil, id, sealed, []byte("request")); err != nil || string(pt) != fmt.Sprint("request-", id[0]) {
			t.Fatalf("id %x: %q, %v", id, pt, err)
		}
	}
}

// TestRotateMasterKey: every data key is re-wrapped under the new master
// key: the old key no longer opens the store, the new one opens every
// sealed value (an erased profile's stays destroyed), and no file of the
// store holds a key as wrapped under the old master key. Running it again
// is a no-op; a key that is neither the store's nor the new one is
// refused.
func TestRotateMasterKey(t *testing.T) {
	f := newRotFixture(t, 50)
	old, neu := EncryptionConfig{MasterKey: testMasterHex}, EncryptionConfig{MasterKey: rotNewHex}
	if err := f.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if hits, err := disktest.Find(f.dir, f.wrapped...); err != nil || len(hits) == 0 {
		t.Fatalf("control: the old wrapped keys are in no file (%v): the scan cannot see them", err)
	}
	if _, err := RotateMasterKey(f.db, old, old, RotateOptions{}); err == nil || !strings.Contains(err.Error(), "is the current one") {
		t.Fatalf("rotation to the same key: %v", err)
	}
	st, err := RotateMasterKey(f.db, old, neu, RotateOptions{Chunk: 8})
	if err != nil || st.Rotated != 52 || st.Resumed || !st.Switched {
		t.Fatalf("rotation: %+v, %v; want 52 keys", st, err)
	}
	if _, err := NewKeyring(old, f.db); !errors.Is(err, ErrMasterKeyMismatch) {
		t.Fatalf("keyring under the old key after the rotation: %v, want ErrMasterKeyMismatch", err)
	}
	f.readAll(t, rotNewHex)
	// Pebble deletes obsolete files in the background, moments after the
	// compaction that made them obsolete.
	f.db.TestOnlyWaitForCleaning()
	if hits, err := disktest.Find(f.dir, f.wrapped...); err != nil || len(hits) != 0 {
		var files []string
		for _, fs := range hits {
			files = append(files, fs...)
		}
		t.Fatalf("%d keys wrapped under the old master key are still on disk, in %v (%v)", len(hits), files, err)
	}
	if st, err := RotateMasterKey(f.db, old, neu, RotateOptions{}); err != nil || st.Rotated != 0 || st.Switched {
		t.Fatalf("second rotation: %+v, %v; want a no-op", st, err)
	}
	other := EncryptionConfig{MasterKey: rotOtherHex}
	if _, err := RotateMasterKey(f.db, other, old, RotateOptions{}); !errors.Is(err, ErrMasterKeyMismatch) {
		t.Fatalf("rotation from a key the store is not under: %v, want ErrMasterKeyMismatch", err)
	}
	// And back, after a restart.
	f.restart(t)
	if st, err := RotateMasterKey(f.db, neu, old, RotateOptions{}); err != nil || st.Rotated != 52 {
		t.Fatalf("rotation back: %+v, %v", st, err)
	}
	f.readAll(t, testMasterHex)
}

// TestRotateMasterKeyInterrupted: a rotation stopped after its first
// chunk leaves a store no keyring opens, under either key; run again with
// the same keys it resumes where it stopped and finishes; run towards
// another key it is refused.
func TestRotateMasterKeyInterrupted(t *testing.T) {
	f := newRotFixture(t, 30)
	old, neu := EncryptionConfig{MasterKey: testMasterHex}, EncryptionConfig{MasterKey: rotNewHex}
	stop := errors.New("power cut")
	st, err := RotateMasterKey(f.db, old, neu, RotateOptions{Chunk: 10, AfterChunk: func(int) error { return stop }})
	if !errors.Is(err, stop) || st.Rotated != 10 {
		t.Fatalf("interrupted rotation: %+v, %v", st, err)
	}
	f.restart(t)
	for _, c := range []EncryptionConfig{old, neu} {
		if _, err := NewKeyring(c, f.db); !errors.Is(err, ErrRotationInProgress) {
			t.Fatalf("keyring during a rotation: %v, want ErrRotationInProgress", err)
		}
	}
	if _, err := RotateMasterKey(f.db, old, EncryptionConfig{MasterKey: rotOtherHex}, RotateOptions{}); err == nil || !strings.Contains(err.Error(), "another master key") {
		t.Fatalf("resuming towards another key: %v", err)
	}
	st, err = RotateMasterKey(f.db, old, neu, RotateOptions{Chunk: 10})
	if err != nil || !st.Resumed || st.Rotated != 32-10 {
		t.Fatalf("resumed rotation: %+v, %v; want the 22 keys left", st, err)
	}
	f.readAll(t, rotNewHex)
}

// BenchmarkRotateMasterKey re-wraps 100,000 profile keys (on disk, synced
// per chunk, then the keyring's range compacted), rotating back and forth.
func BenchmarkRotateMasterKey(b *testing.B) {
	db, err := OpenStore(b.TempDir(), StoreConfig{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	k, err := NewKeyring(EncryptionConfig{MasterKey: testMasterHex}, db)
	if err != nil {
		b.Fatal(err)
	}
	const n = 100_000
	w := db.NewBatch()
	for pid := uint32(1); pid <= n; pid++ {
		if _, err := k.Seal(nil, w, pid, []byte("x"), nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Commit(pebble.Sync); err != nil {
		b.Fatal(err)
	}
	k.Committed(w)
	w.Close()
	keys := [2]EncryptionConfig{{MasterKey: testMasterHex}, {MasterKey: rotNewHex}}
	i := 0
	for b.Loop() {
		st, err := RotateMasterKey(db, keys[i%2], keys[(i+1)%2], RotateOptions{})
		if err != nil || st.Rotated != n {
			b.Fatalf("%+v %v", st, err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/key")
}

// TestRotateMasterKeyCorruptKey: a wrapped key that does not open under
// the current master key stops the rotation before anything is written:
// the store still opens under the current key, every other value reads.
func TestRotateMasterKeyCorruptKey(t *testing.T) {
	f := newRotFixture(t, 12)
	k := KeyringKey(nil, 9)
	v, err := getCopy(f.db, k)
	if err != nil || v == nil {
		t.Fatal(err)
	}
	v[len(v)-1] ^= 1
	if err := f.db.Set(k, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	st, err := RotateMasterKey(f.db, EncryptionConfig{MasterKey: testMasterHex}, EncryptionConfig{MasterKey: rotNewHex}, RotateOptions{Chunk: 4})
	if err == nil || !strings.Contains(err.Error(), "nothing was changed") || st.Rotated != 0 {
		t.Fatalf("rotation over a corrupt key: %+v, %v", st, err)
	}
	delete(f.pids, 9)
	f.readAll(t, testMasterHex)
}
