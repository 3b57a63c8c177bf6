package audience

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
)

// Traits values (0x29): version 1 holds the JSON in plain (written
// without a keyring, and for the "{}" of a profile without traits, which
// says nothing about the person); version 2 holds it sealed under the
// profile's key (engine.Keyring), bound to the profile and to
// traitsPurpose.
const (
	traitsSealed byte = 2
	// traitsPurpose is the aad of sealed traits.
	traitsPurpose = "cdpstream audience traits v1"
)

// WithKeyring seals every profile's traits under the profile's key, so
// they are ciphertext at rest and Erase's key destruction leaves every
// older copy unreadable. Without it traits are stored in plain; a store
// holding sealed traits needs it.
func WithKeyring(k *engine.Keyring) Option { return func(s *Store) { s.kr = k } }

// decodeTraits appends the plain JSON of a stored traits value of pid to
// dst. Traits sealed under a destroyed key (the profile was erased
// elsewhere first) read as "{}": what they held is gone.
func (s *Store) decodeTraits(dst []byte, pid uint32, v []byte) ([]byte, error) {
	if len(v) < 1 {
		return dst, fmt.Errorf("cannot read traits of profile %d: empty value", pid)
	}
	switch v[0] {
	case valueVersion:
		return append(dst, v[1:]...), nil
	case traitsSealed:
		if s.kr == nil {
			return dst, fmt.Errorf("cannot read traits of profile %d: they are encrypted and the store has no keyring", pid)
		}
		out, err := s.kr.Open(dst, pid, v[1:], []byte(traitsPurpose))
		if errors.Is(err, engine.ErrKeyDestroyed) {
			return append(dst, "{}"...), nil
		}
		if err != nil {
			return dst, fmt.Errorf("cannot read traits of profile %d: %w", pid, err)
		}
		return out, nil
	}
	return dst, fmt.Errorf("cannot read traits of profile %d: unknown value version", pid)
}

// putTraits stages pid's traits (plain JSON js) into w, sealed when the
// store has a keyring (a new profile key is staged into w too).
func (s *Store) putTraits(w *pebble.Batch, pid uint32, js []byte) error {
	if s.kr == nil {
		s.sbuf = append(append(s.sbuf[:0], valueVersion), js...)
	} else {
		var err error
		s.sbuf, err = s.kr.Seal(append(s.sbuf[:0], traitsSealed), w, pid, js, []byte(traitsPurpose))
		if err != nil {
			return fmt.Errorf("cannot seal traits of profile %d: %w", pid, err)
		}
	}
	s.key = traitsKey(s.key[:0], pid)
	if err := w.Set(s.key, s.sbuf, nil); err != nil {
		return fmt.Errorf("cannot stage traits: %w", err)
	}
	return nil
}

// ErrTraitsTooLarge is returned by SetTraits when the result would exceed
// Config.MaxTraitBytes.
var ErrTraitsTooLarge = errors.New("audience: traits too large")

// SetTraits changes pid's traits by patch, with JSON merge-patch
// semantics (RFC 7396): a nil value removes the key, a map is merged into
// the object under its key (recursively, replacing a non-object), any
// other value (string, number, bool, slice) replaces what is there. It is
// how a privacy rectification corrects traits. The audiences reading
// traits (and those referencing them) are re-evaluated for pid, and the
// traits and memberships commit in one synced batch; entered/exited
// records carry cause "rectify". The traits are written again as
// encoding/json marshals them (keys sorted).
//
// ErrNotFound: the store does not know pid. ErrTraitsTooLarge: the
// result would exceed Config.MaxTraitBytes (nothing changes). patch is
// not retained.
func (s *Store) SetTraits(pid uint32, patch map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.known.Contains(pid) {
		return fmt.Errorf("%w: profile %d", ErrNotFound, pid)
	}
	w := s.db.NewIndexedBatch()
	defer w.Close()
	if s.kr != nil {
		defer s.kr.Abandon(w)
	}
	cur, err := s.traits(w, pid)
	if err != nil {
		return err
	}
	obj := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(cur))
	dec.UseNumber() // numbers keep their text
	if err := dec.Decode(&obj); err != nil || obj == nil {
		obj = map[string]any{} // unreadable traits are replaced
	}
	clear(cur)
	obj = mergePatch(obj, patch)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(obj); err != nil {
		return fmt.Errorf("cannot encode traits of profile %d: %w", pid, err)
	}
	js := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	defer clear(buf.Bytes())
	if len(js) > s.cfg.MaxTraitBytes {
		return fmt.Errorf("%w: %d bytes for profile %d, max_trait_bytes is %d", ErrTraitsTooLarge, len(js), pid, s.cfg.MaxTraitBytes)
	}
	if err := s.putTraits(w, pid, js); err != nil {
		return err
	}
	now := s.now()
	s.chg = s.chg[:0]
	clear(s.csets)
	env := evalEnv{s: s, r: w, now: now.UnixMicro(), today: dayOf(now)}
	err = s.evalFor(w, &env, pid, &pidWork{traits: true}, nil, "rectify", now)
	env.close()
	if err != nil {
		s.chg = s.chg[:0]
		return err
	}
	if err := w.Commit(pebble.Sync); err != nil {
		// The bitmaps may be ahead of Pebble now, as after a failed
		// Process; a restart reloads them.
		s.chg = s.chg[:0]
		return fmt.Errorf("cannot commit traits: %w", err)
	}
	if s.kr != nil {
		s.kr.Committed(w)
	}
	s.flushChanges()
	return nil
}

// mergePatch applies patch to target (RFC 7396) and returns the result.
func mergePatch(target map[string]any, patch map[string]any) map[string]any {
	if target == nil {
		target = map[string]any{}
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(target, k)
		case map[string]any:
			tv, _ := target[k].(map[string]any)
			target[k] = mergePatch(tv, pv)
		default:
			target[k] = v
		}
	}
	return target
}
