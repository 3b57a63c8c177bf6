package privacy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// Sealing (see doc.go, Encryption): a request's identities and
// rectification are sealed under a data key of the request's own, an
// export's body under one of the export's own, both in the keyring's id
// space (engine.KeyID) wrapped by the master key.

// Labels: of the key ids (so a request and an export never share a key,
// whatever id a controller picks) and of the sealed values' aad.
const (
	labelRequestKey = "cdpstream privacy request key v1\x00"
	labelExportKey  = "cdpstream privacy export key v1\x00"
	aadRequest      = "cdpstream privacy request v1"
	aadExport       = "cdpstream privacy export v1"
)

// Record versions (the byte before the JSON of 0x31).
const (
	recordPlain  byte = 1 // before sealing: identities and rectification in plain
	recordSealed byte = 2 // identities and rectification in "sealed"
)

// formatSealed is or-ed into an export's format byte when its body is
// sealed (every export since sealing; New seals the older ones).
const formatSealed byte = 0x80

func keyID(label string, b []byte) engine.KeyID {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(b)
	var id engine.KeyID
	copy(id[:], h.Sum(nil))
	return id
}

func requestKeyID(id string) engine.KeyID { return keyID(labelRequestKey, uuidBytes(id)) }

func exportKeyID(token []byte) engine.KeyID { return keyID(labelExportKey, token) }

// sealedPart is the plaintext of a record's Sealed.
type sealedPart struct {
	Identities    []Identity     `json:"subject_identities,omitempty"`
	Rectification *Rectification `json:"rectification,omitempty"`
}

// encodeRecord returns the stored form of rec (recordSealed | JSON). While
// rec is unfinished and its identities are in memory (rec.open), they and
// the rectification are sealed afresh under the request's key, which is
// created and staged into b on first use; a loaded record that was not
// opened keeps its sealed bytes. A finished record holds none.
func (s *Service) encodeRecord(b *pebble.Batch, rec *record) ([]byte, error) {
	switch {
	case rec.finished():
		rec.Sealed = nil
	case rec.open:
		rec.Sealed = nil
		if len(rec.Req.Identities) > 0 || rec.Req.Rectification != nil {
			pt, err := json.Marshal(sealedPart{rec.Req.Identities, rec.Req.Rectification})
			if err != nil {
				return nil, err
			}
			rec.Sealed, err = s.kr.SealID(nil, b, requestKeyID(rec.Req.ID), pt, []byte(aadRequest))
			clear(pt)
			if err != nil {
				return nil, fmt.Errorf("cannot seal request %s: %w", rec.Req.ID, err)
			}
		}
	}
	stored := *rec
	stored.Req.Identities, stored.Req.Rectification = nil, nil
	v, err := json.Marshal(&stored)
	if err != nil {
		return nil, err
	}
	return append([]byte{recordSealed}, v...), nil
}

// openRecord puts rec's identities and rectification back in memory from
// its sealed bytes. engine.ErrKeyDestroyed: the request finished (or its
// key is gone).
func (s *Service) openRecord(rec *record) error {
	if rec.open {
		return nil
	}
	if rec.Sealed != nil {
		pt, err := s.kr.OpenID(nil, requestKeyID(rec.Req.ID), rec.Sealed, []byte(aadRequest))
		if err != nil {
			return fmt.Errorf("cannot open request %s: %w", rec.Req.ID, err)
		}
		var p sealedPart
		err = json.Unmarshal(pt, &p)
		clear(pt)
		if err != nil {
			return fmt.Errorf("privacy: corrupt sealed part of request %s: %w", rec.Req.ID, err)
		}
		rec.Req.Identities, rec.Req.Rectification = p.Identities, p.Rectification
	}
	rec.open = true
	return nil
}

// destroyRequestKey stages, into the batch that finishes rec, the
// destruction of its key and the compaction of the wrapped key's span:
// every copy of the record made while it was open is unreadable once b
// commits, and the wrapped key leaves the files at the next compaction
// pass.
func (s *Service) destroyRequestKey(b *pebble.Batch, rec *record) error {
	id := requestKeyID(rec.Req.ID)
	if err := s.kr.DestroyID(b, id); err != nil {
		return err
	}
	k := engine.KeyringIDKey(nil, id)
	return s.comp.Stage(b, k, append(k, 0))
}

// digest identifies a request's content for the idempotency check of
// Submit: HMAC-SHA256 under the audit key of the SHA-256 of its canonical
// JSON (Request.digest). Keyed, so the digest a finished record keeps
// confirms no guess of the identities it covered.
func (s *Service) digest(contentSHA256 string) string {
	m := hmac.New(sha256.New, s.audit.key)
	m.Write([]byte("request digest\x00"))
	m.Write([]byte(contentSHA256))
	return hex.EncodeToString(m.Sum(nil))
}

// exportAAD binds an export body to its header: expiry, format, request.
func exportAAD(head []byte) []byte {
	return append([]byte(aadExport), head...)
}

// upgrade seals what a store written before sealing holds in plain, in
// one synced batch with the new keys: every plain (version 1) request
// record is rewritten as version 2, its identities and rectification
// sealed if it is unfinished, its unkeyed digest keyed; every plain
// export body is sealed under a new key of its own. The plain versions'
// spans are staged as compaction debt in the same batch, so they leave
// the files at the next pass. A store with nothing plain costs two scans.
func (s *Service) upgrade() error {
	var recs []*record
	err := s.scan([]byte{prefixRequest}, []byte{prefixRequest + 1}, func(_, v []byte) error {
		if len(v) > 0 && v[0] == recordPlain {
			r, err := decodeRecord(v)
			if err != nil {
				return err
			}
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	type export struct{ key, head, body []byte }
	var exps []export
	err = s.scan([]byte{prefixExport}, []byte{prefixExport + 1}, func(k, v []byte) error {
		if len(k) == 17 && len(v) > exportHeadLen && v[8]&formatSealed == 0 {
			exps = append(exps, export{key: append([]byte(nil), k...), head: append([]byte(nil), v[:exportHeadLen]...),
				body: append([]byte(nil), v[exportHeadLen:]...)})
		}
		return nil
	})
	if err != nil || len(recs)+len(exps) == 0 {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	defer s.kr.Abandon(b)
	for _, r := range recs {
		if _, err := hex.DecodeString(r.Digest); err == nil && len(r.Digest) == 64 {
			r.Digest = s.digest(r.Digest)
		}
		v, err := s.encodeRecord(b, r)
		if err != nil {
			return err
		}
		if err := b.Set(requestKey(r.Req.ID), v, nil); err != nil {
			return err
		}
	}
	for _, e := range exps {
		e.head[8] |= formatSealed
		v, err := s.kr.SealID(e.head, b, exportKeyID(e.key[1:]), e.body, exportAAD(e.head))
		clear(e.body)
		if err != nil {
			return fmt.Errorf("cannot seal an export: %w", err)
		}
		if err := b.Set(e.key, v, nil); err != nil {
			return err
		}
	}
	for _, span := range [][2]byte{{prefixRequest, prefixRequest + 1}, {prefixExport, prefixExport + 1}} {
		if err := s.comp.Stage(b, span[:1], span[1:]); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("cannot seal the privacy store: %w", err)
	}
	s.kr.Committed(b)
	s.comp.Staged()
	s.log.Info("privacy: sealed the plain request records and exports of an older version",
		"records", len(recs), "exports", len(exps))
	return nil
}

// exportHeadLen is the export value's header: expires (8) | format | uuid (16).
const exportHeadLen = 25
