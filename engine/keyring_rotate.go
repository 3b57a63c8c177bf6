package engine

import (
	"bytes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble"
)

// A master-key rotation re-wraps every data key (profile keys 0x03 0x01
// and id keys 0x03 0x02) from the current master key to a new one, a
// chunk per synced batch, then switches the check value (0x03 0x00) and
// compacts the keyring's range, so the keys wrapped under the old master
// key leave the store's files. While it runs, and after an interruption,
// the store holds keys under both and
//
//	0x03 0x03 → v1 | check value of the new key (17) | next key to re-wrap
//
// names the new key and how far it got; NewKeyring refuses such a store
// (ErrRotationInProgress) until RotateMasterKey, run again with the same
// two keys, finishes it. The data keys themselves do not change, so
// nothing sealed under them is touched: a rotation costs one unwrap and
// one wrap per key, not a rewrite of the data.
const keyringRotation byte = 0x03

// ErrRotationInProgress: a master-key rotation of the store was
// interrupted; NewKeyring refuses it until RotateMasterKey finishes the
// rotation (run again with the same current and new keys).
var ErrRotationInProgress = errors.New("engine: a master-key rotation of this store was interrupted; run it again with the same keys to finish it")

// RotateOptions tune RotateMasterKey.
type RotateOptions struct {
	// Chunk is the number of keys re-wrapped per synced batch. Default
	// 4096.
	Chunk int
	// AfterChunk, if set, is called after each committed chunk with the
	// number of keys re-wrapped so far; an error stops the rotation there,
	// as a crash would (tests interrupt one with it).
	AfterChunk func(rotated int) error
}

// RotateStats says what a rotation did.
type RotateStats struct {
	// Rotated is the number of data keys re-wrapped by this call (0 when
	// the store was already under the new key).
	Rotated int
	// Resumed: the call finished an interrupted rotation.
	Resumed bool
	// Switched: this call moved the store to the new master key (false
	// when it was under it already).
	Switched bool
}

// RotateMasterKey re-wraps every data key of the keyring in db from the
// master key of from to that of to (see keyringRotation), resuming an
// interrupted rotation to the same key. The store must not be in use
// (nothing else may open a Keyring on db meanwhile). It refuses a store
// whose keys are under neither key (ErrMasterKeyMismatch), a new key
// equal to the current one, an interrupted rotation to another key, and a
// keyring with a key that does not open under the current master key (it
// checks every key before it writes anything). Keep the new key until the
// rotation has finished: an interrupted one can only be finished. A
// store already under to is compacted again and left as it is, so the
// call can be repeated. Copies of the store made before the rotation
// (backups, snapshots) stay readable with the old key.
func RotateMasterKey(db *pebble.DB, from, to EncryptionConfig, opts RotateOptions) (RotateStats, error) {
	var st RotateStats
	if opts.Chunk <= 0 {
		opts.Chunk = 4096
	}
	oldKey, err := from.key()
	if err != nil {
		return st, fmt.Errorf("current %w", err)
	}
	defer clear(oldKey)
	newKey, err := to.key()
	if err != nil {
		return st, fmt.Errorf("new %w", err)
	}
	defer clear(newKey)
	if hmac.Equal(oldKey, newKey) {
		return st, errors.New("the new master key is the current one")
	}
	oldWrap, err := newAEAD(oldKey, "the master key")
	if err != nil {
		return st, err
	}
	newWrap, err := newAEAD(newKey, "the master key")
	if err != nil {
		return st, err
	}
	oldCheck, newCheck := checkValue(oldKey), checkValue(newKey)
	ck, rk := []byte{PrefixKeyring, keyringCheck}, []byte{PrefixKeyring, keyringRotation}

	check, err := getCopy(db, ck)
	if err != nil {
		return st, fmt.Errorf("cannot read the master key check: %w", err)
	}
	progress, err := getCopy(db, rk)
	if err != nil {
		return st, fmt.Errorf("cannot read the rotation state: %w", err)
	}
	next := []byte{PrefixKeyring, keyringKey}
	switch {
	case progress != nil:
		if len(progress) < 1+len(newCheck) || progress[0] != keyringV1 {
			return st, fmt.Errorf("%w (rotation state)", ErrDecrypt)
		}
		if !hmac.Equal(progress[1:1+len(newCheck)], newCheck) {
			return st, errors.New("an interrupted rotation to another master key is in progress: finish it with that key")
		}
		if !hmac.Equal(check, oldCheck) {
			return st, ErrMasterKeyMismatch
		}
		next = append([]byte(nil), progress[1+len(newCheck):]...)
		st.Resumed = true
	case check == nil:
		return st, errors.New("the store has no keyring: nothing to rotate")
	case hmac.Equal(check, newCheck):
		return st, compactKeyring(db) // done before; the compaction may not have been
	case !hmac.Equal(check, oldCheck):
		return st, ErrMasterKeyMismatch
	}
	end := []byte{PrefixKeyring, keyringIDKey + 1}
	// Every key still to re-wrap must open under the current master key
	// before anything is written: one that does not (corrupt) would stop
	// the rotation half way, with a store neither key opens.
	if err := checkOpens(db, next, end, oldWrap); err != nil {
		return st, err
	}
	if !st.Resumed {
		if err := db.Set(rk, rotationValue(newCheck, next), pebble.Sync); err != nil {
			return st, fmt.Errorf("cannot record the rotation: %w", err)
		}
	}

	var aad []byte
	for {
		type kv struct{ k, v []byte }
		var chunk []kv
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: next, UpperBound: end})
		if err != nil {
			return st, fmt.Errorf("cannot read the keyring: %w", err)
		}
		for it.First(); it.Valid() && len(chunk) < opts.Chunk; it.Next() {
			chunk = append(chunk, kv{bytes.Clone(it.Key()), bytes.Clone(it.Value())})
		}
		err = it.Error()
		if cerr := it.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return st, fmt.Errorf("cannot read the keyring: %w", err)
		}
		if len(chunk) == 0 {
			break
		}
		w := db.NewBatch()
		for _, e := range chunk {
			if aad, err = wrappedAAD(aad[:0], e.k); err != nil {
				w.Close()
				return st, err
			}
			v, err := rewrap(oldWrap, newWrap, e.v, aad)
			clear(e.v)
			if err != nil {
				w.Close()
				return st, fmt.Errorf("key %x: %w", e.k, err)
			}
			if err := w.Set(e.k, v, nil); err != nil {
				w.Close()
				return st, err
			}
		}
		next = append(chunk[len(chunk)-1].k, 0) // the successor of the last key
		if err := w.Set(rk, rotationValue(newCheck, next), nil); err != nil {
			w.Close()
			return st, err
		}
		err = w.Commit(pebble.Sync)
		w.Close()
		if err != nil {
			return st, fmt.Errorf("cannot store re-wrapped keys: %w", err)
		}
		st.Rotated += len(chunk)
		if opts.AfterChunk != nil {
			if err := opts.AfterChunk(st.Rotated); err != nil {
				return st, err
			}
		}
	}
	w := db.NewBatch()
	defer w.Close()
	if err := w.Set(ck, newCheck, nil); err != nil {
		return st, err
	}
	if err := w.Delete(rk, nil); err != nil {
		return st, err
	}
	if err := w.Commit(pebble.Sync); err != nil {
		return st, fmt.Errorf("cannot switch to the new master key: %w", err)
	}
	st.Switched = true
	return st, compactKeyring(db)
}

// checkOpens opens every wrapped key in [lo, hi) with wrap, writing
// nothing; the first that does not open is an error naming its key.
func checkOpens(db *pebble.DB, lo, hi []byte, wrap cipher.AEAD) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("cannot read the keyring: %w", err)
	}
	defer it.Close()
	var aad []byte
	var raw [dataKeyLen]byte
	defer clear(raw[:])
	for it.First(); it.Valid(); it.Next() {
		if aad, err = wrappedAAD(aad[:0], it.Key()); err != nil {
			return err
		}
		if err := unwrapKey(wrap, &raw, it.Value(), aad); err != nil {
			return fmt.Errorf("keyring key %x does not open under the current master key (corrupt?): nothing was changed", it.Key())
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("cannot read the keyring: %w", err)
	}
	return nil
}

// compactKeyring rewrites the keyring's range (flushing the memtable
// first), so the keys wrapped under an old master key leave the SSTs;
// OpenStore deletes obsolete WAL files rather than recycling them.
func compactKeyring(db *pebble.DB) error {
	if err := db.Compact([]byte{PrefixKeyring}, []byte{PrefixKeyring + 1}, true); err != nil {
		return fmt.Errorf("cannot compact the keyring: %w", err)
	}
	return nil
}

// wrappedAAD appends to dst what binds the wrapped key stored under k to
// its slot: a profile key's pid or an id key's id.
func wrappedAAD(dst, k []byte) ([]byte, error) {
	switch {
	case len(k) == 6 && k[1] == keyringKey:
		return wrapAAD(dst, uint32(k[2])<<24|uint32(k[3])<<16|uint32(k[4])<<8|uint32(k[5])), nil
	case len(k) == 2+len(KeyID{}) && k[1] == keyringIDKey:
		return wrapIDAAD(dst, KeyID(k[2:])), nil
	}
	return dst, fmt.Errorf("%w: unexpected keyring key %x", ErrDecrypt, k)
}

// rewrap opens a wrapped data key with oldWrap and wraps it with newWrap
// under a fresh nonce.
func rewrap(oldWrap, newWrap cipher.AEAD, v, aad []byte) ([]byte, error) {
	var raw [dataKeyLen]byte
	defer clear(raw[:])
	if err := unwrapKey(oldWrap, &raw, v, aad); err != nil {
		return nil, err
	}
	out := make([]byte, 1+nonceLen, wrappedLen)
	out[0] = keyringV1
	if _, err := io.ReadFull(rand.Reader, out[1:]); err != nil {
		return nil, fmt.Errorf("cannot draw a nonce: %w", err)
	}
	return newWrap.Seal(out, out[1:1+nonceLen], raw[:], aad), nil
}

func rotationValue(newCheck, next []byte) []byte {
	v := append([]byte{keyringV1}, newCheck...)
	return append(v, next...)
}

// checkValue is the stored check of a master key: v1 | HMAC-SHA256(key,
// keyringCheckText)[:16].
func checkValue(master []byte) []byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte(keyringCheckText))
	return append([]byte{keyringV1}, m.Sum(nil)[:16]...)
}

// getCopy returns a copy of k's value in db, or nil when k is absent.
func getCopy(db *pebble.DB, k []byte) ([]byte, error) {
	v, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}
