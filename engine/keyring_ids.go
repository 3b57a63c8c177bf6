package engine

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble"
)

// KeyID names a data key of the keyring's id space, beside the profile
// ids: 16 bytes the caller chooses. Callers derive it from what the key
// protects under a label of their own (privacy: SHA-256 of a label and a
// request id, or of another label and an export token), so two owners
// never share a key by accident, and nobody who picks an id (a
// controller picks request ids) can make it another owner's.
type KeyID [16]byte

const (
	keyringIDKey  byte = 0x02
	wrapIDAADText      = "cdpstream id key v1"
)

// KeyringIDKey appends the Pebble key of id's wrapped data key to dst. A
// caller that destroys the key also compacts [key, key+0x00) (an
// engine.Compactor span) so the wrapped key leaves the SSTs.
func KeyringIDKey(dst []byte, id KeyID) []byte {
	return append(append(dst, PrefixKeyring, keyringIDKey), id[:]...)
}

// SealID is Seal in the id space: it appends to dst nonce | ciphertext |
// tag of plaintext under id's data key (AES-256-GCM, a random 96-bit
// nonce), authenticated with id | aad, and returns it. When id has no
// key, one is created and its wrapped form staged into w (nil w:
// ErrKeyDestroyed); the caller must then call Committed(w) once w
// committed, or Abandon(w). Until then the key is pinned in memory, so
// every SealID of id meanwhile uses it. The arguments are not retained.
func (k *Keyring) SealID(dst []byte, w *pebble.Batch, id KeyID, plaintext, aad []byte) ([]byte, error) {
	return k.sealUnder(dst, plaintext, idAAD(id, aad), func() (*dataKey, error) { return k.lookupID(id, w) })
}

// OpenID appends to dst the plaintext of sealed (made by SealID for id and
// aad) and returns it. ErrKeyDestroyed: id's key is gone; ErrDecrypt:
// sealed was made for another id or aad, or is corrupt. sealed is not
// retained.
func (k *Keyring) OpenID(dst []byte, id KeyID, sealed, aad []byte) ([]byte, error) {
	out, err := k.openUnder(dst, sealed, idAAD(id, aad), func() (*dataKey, error) { return k.lookupID(id, nil) })
	if err == ErrDecrypt {
		err = fmt.Errorf("data key %x: %w", id[:], ErrDecrypt)
	}
	return out, err
}

// DestroyID stages the deletion of id's data key into w: once w commits,
// nothing sealed under it opens again. A key pending in another batch is
// forgotten, so a later SealID makes a new one. Report w's fate with
// Committed or Abandon as for Destroy. Destroying an id without a key is a
// no-op write.
//
// Unlike Destroy, nothing tracks the destruction until w commits: a
// SealID of the same id in another batch meanwhile would create or reuse
// a key that w then deletes, and an abandoned w leaves the key as it was
// in Pebble but forgotten in memory. Callers serialise every batch that
// seals or destroys one id (package privacy does: one step at a time,
// under its lock).
func (k *Keyring) DestroyID(w *pebble.Batch, id KeyID) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kbuf = KeyringIDKey(k.kbuf[:0], id)
	if err := w.Delete(k.kbuf, nil); err != nil {
		return fmt.Errorf("cannot stage key destruction: %w", err)
	}
	delete(k.ids, id)
	return nil
}

// lookupID returns id's key: pending, or read from Pebble and unwrapped;
// when there is none and w is not nil, a new one staged into w. k.mu is
// held. Keys of the id space are not cached: each is used a few times (a
// request's seal and opens, an export's downloads), a SealID or OpenID of
// 512 bytes with the read and the unwrap costs 6-8 µs (BenchmarkKeyringID)
// next to the synced commits around it, and no unwrapped key outlives its
// use in memory.
func (k *Keyring) lookupID(id KeyID, w *pebble.Batch) (*dataKey, error) {
	if d := k.ids[id]; d != nil {
		if w != nil {
			st := k.stagedFor(w)
			if !slices.Contains(st.ids, id) {
				if err := w.Set(KeyringIDKey(k.kbuf[:0], id), d.wrapped, nil); err != nil {
					return nil, fmt.Errorf("cannot stage a data key: %w", err)
				}
				st.ids = append(st.ids, id)
				d.refs++
			}
		}
		return d, nil
	}
	k.kbuf = KeyringIDKey(k.kbuf[:0], id)
	v, closer, err := k.db.Get(k.kbuf)
	switch {
	case err == nil:
		k.wbuf = wrapIDAAD(k.wbuf[:0], id)
		d, err := k.openKey(v, k.wbuf)
		closer.Close()
		if err != nil {
			return nil, fmt.Errorf("data key %x: %w", id[:], err)
		}
		return d, nil
	case !errors.Is(err, pebble.ErrNotFound):
		return nil, fmt.Errorf("cannot read data key %x: %w", id[:], err)
	case w == nil:
		return nil, fmt.Errorf("data key %x: %w", id[:], ErrKeyDestroyed)
	}
	k.wbuf = wrapIDAAD(k.wbuf[:0], id)
	d, err := k.newKey(k.wbuf)
	if err != nil {
		return nil, err
	}
	if err := w.Set(KeyringIDKey(k.kbuf[:0], id), d.wrapped, nil); err != nil {
		return nil, fmt.Errorf("cannot stage a data key: %w", err)
	}
	d.refs = 1
	k.ids[id] = d
	st := k.stagedFor(w)
	st.ids = append(st.ids, id)
	return d, nil
}

// finishIDs reports the fate of a batch to the id keys created for it: a
// committed key is in the store (and read from there from now on); an
// abandoned one is forgotten unless another pending batch holds it. k.mu
// is held.
func (k *Keyring) finishIDs(ids []KeyID, committed bool) {
	for _, id := range ids {
		d := k.ids[id]
		if d == nil {
			continue // destroyed meanwhile, or committed through another batch
		}
		d.refs--
		if committed || d.refs == 0 {
			delete(k.ids, id)
		}
	}
}

// idAAD is id (16) | aad.
func idAAD(id KeyID, aad []byte) []byte {
	b := make([]byte, len(id), len(id)+len(aad))
	copy(b, id[:])
	return append(b, aad...)
}

func wrapIDAAD(dst []byte, id KeyID) []byte {
	return append(append(dst, wrapIDAADText...), id[:]...)
}
