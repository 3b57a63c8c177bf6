package privacy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// Export formats (one byte in the export value).
const (
	formatJSON   byte = 1
	formatNDJSON byte = 2
)

// PastRequest is one privacy request of the person, as listed in exports.
type PastRequest struct {
	ID         string `json:"subject_request_id"`
	Type       string `json:"subject_request_type"`
	Regulation string `json:"regulation"`
	Status     string `json:"request_status"`
	Submitted  string `json:"submitted_time"`
	Received   string `json:"received_time"`
	Finished   string `json:"finished_time,omitempty"`
}

// ExportDoc is the access export (JSON). Portability exports carry the
// same content as NDJSON: a first line {"type":"request",...} without
// Data and Requests, then one line {"type": section, "record": ...} per
// element of each section (a section that is not a JSON array is one
// line), then one {"type":"privacy_request","record":...} per request.
type ExportDoc struct {
	ID          string                     `json:"subject_request_id"`
	Regulation  string                     `json:"regulation"`
	GeneratedAt string                     `json:"generated_at"`
	Profiles    []uint32                   `json:"profile_ids"`
	Data        map[string]json.RawMessage `json:"data,omitempty"`
	Requests    []PastRequest              `json:"privacy_requests,omitempty"`
}

func (s *Service) export(ctx context.Context, rec *record, subj Subject) error {
	doc := ExportDoc{ID: rec.Req.ID, Regulation: rec.Req.Regulation, GeneratedAt: rfc3339(s.now()),
		Profiles: slices.Clip(subj.Profiles), Data: map[string]json.RawMessage{}}
	if doc.Profiles == nil {
		doc.Profiles = []uint32{}
	}
	names := make([]string, 0, len(s.work.Exporters))
	for _, e := range s.work.Exporters {
		v, err := e.Export(ctx, subj)
		if err != nil {
			return fmt.Errorf("exporter %s: %w", e.Name(), err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("exporter %s: cannot encode: %w", e.Name(), err)
		}
		doc.Data[e.Name()] = b
		names = append(names, e.Name())
	}
	past, err := s.pastRequests(rec)
	if err != nil {
		return err
	}
	doc.Requests = past
	var body []byte
	var format byte
	count := 0
	if rec.Req.Type == TypePortability {
		format = formatNDJSON
		var buf bytes.Buffer
		head := doc
		head.Data, head.Requests = nil, nil
		line := func(v any) {
			b, _ := json.Marshal(v)
			buf.Write(b)
			buf.WriteByte('\n')
			count++
		}
		line(struct {
			Type string `json:"type"`
			ExportDoc
		}{"request", head})
		for _, n := range names {
			var elems []json.RawMessage
			if json.Unmarshal(doc.Data[n], &elems) != nil {
				elems = []json.RawMessage{doc.Data[n]}
			}
			for _, e := range elems {
				line(map[string]any{"type": n, "record": e})
			}
		}
		for _, p := range past {
			line(map[string]any{"type": "privacy_request", "record": p})
		}
		body = buf.Bytes()
	} else {
		format = formatJSON
		body, err = json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		body = append(body, '\n')
		count = 1
	}
	if rec.ResultsToken == "" {
		rec.ResultsToken = newToken()
	}
	rec.ResultsExpires = s.now().Add(s.cfg.ResultsTTL)
	rec.ResultsCount = count
	tok, _ := hex.DecodeString(rec.ResultsToken)
	b := s.db.NewBatch()
	defer b.Close()
	defer s.kr.Abandon(b)
	head := binary.BigEndian.AppendUint64(make([]byte, 0, exportHeadLen+len(body)+engine.SealOverhead), uint64(rec.ResultsExpires.UnixNano()))
	head = append(append(head, format|formatSealed), uuidBytes(rec.Req.ID)...)
	v, err := s.kr.SealID(head, b, exportKeyID(tok), body, exportAAD(head))
	clear(body)
	if err != nil {
		return fmt.Errorf("cannot seal the export: %w", err)
	}
	_ = b.Set(append([]byte{prefixExport}, tok...), v, nil)
	ek := binary.BigEndian.AppendUint64([]byte{prefixExpiry}, uint64(rec.ResultsExpires.UnixNano()))
	_ = b.Set(append(ek, tok...), nil, nil)
	// The record names its token in the same batch: if the step fails
	// after this (the transition to completed), the retry finds the token
	// and overwrites this export instead of leaving it, under a live key,
	// where the person's erasure would not find it.
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.put(b, rec, rec.Due); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	s.kr.Committed(b)
	return nil
}

// pastRequests lists the requests sharing an identity hash or a profile
// with rec (rec included), oldest first. It scans every request: fine for
// the request volumes of a privacy desk; an index by identity hash is the
// next step when it is not.
func (s *Service) pastRequests(rec *record) ([]PastRequest, error) {
	var out []PastRequest
	err := s.scan([]byte{prefixRequest}, []byte{prefixRequest + 1}, func(_, v []byte) error {
		r, err := decodeRecord(v)
		if err != nil {
			return err
		}
		if r.Req.ID != rec.Req.ID && !overlaps(r.IdentityHashes, rec.IdentityHashes) && !overlaps(r.Profiles, rec.Profiles) {
			return nil
		}
		p := PastRequest{ID: r.Req.ID, Type: r.Req.Type, Regulation: r.Req.Regulation, Status: r.Status,
			Submitted: rfc3339(r.Req.Submitted), Received: rfc3339(r.Received)}
		if r.Req.ID == rec.Req.ID {
			p.Status = rec.Status
		}
		if !r.Finished.IsZero() {
			p.Finished = rfc3339(r.Finished)
		}
		out = append(out, p)
		return nil
	})
	slices.SortStableFunc(out, func(a, b PastRequest) int {
		if a.Received != b.Received {
			if a.Received < b.Received {
				return -1
			}
			return 1
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out, err
}

func overlaps[T comparable](a, b []T) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// dropExportsOf expires at once the exports of earlier requests of the
// person an erasure is about: an export is a copy of the erased data.
func (s *Service) dropExportsOf(rec *record) error {
	var toks []string
	err := s.scan([]byte{prefixRequest}, []byte{prefixRequest + 1}, func(_, v []byte) error {
		r, err := decodeRecord(v)
		if err != nil {
			return err
		}
		if r.ResultsToken != "" && r.Req.ID != rec.Req.ID &&
			(overlaps(r.IdentityHashes, rec.IdentityHashes) || overlaps(r.Profiles, rec.Profiles)) {
			toks = append(toks, r.ResultsToken)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, t := range toks {
		if err := s.expireExport(t); err != nil {
			return err
		}
	}
	return nil
}

// expireExport replaces an export by its tombstone (header without body),
// so its url answers 410, and destroys its key in the same synced batch:
// every copy of the body is unreadable from then on. The export's and the
// wrapped key's spans are staged as compaction debt in that batch, so
// both leave the files at the next pass.
func (s *Service) expireExport(token string) error {
	tok, err := hex.DecodeString(token)
	if err != nil {
		return nil
	}
	k := append([]byte{prefixExport}, tok...)
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(v) <= exportHeadLen {
		closer.Close()
		return nil // already a tombstone
	}
	head := append([]byte(nil), v[:exportHeadLen]...)
	closer.Close()
	b := s.db.NewBatch()
	defer b.Close()
	defer s.kr.Abandon(b)
	_ = b.Set(k, head, nil)
	ek := binary.BigEndian.AppendUint64([]byte{prefixExpiry}, binary.BigEndian.Uint64(head))
	_ = b.Delete(append(ek, tok...), nil)
	id := exportKeyID(tok)
	if err := s.kr.DestroyID(b, id); err != nil {
		return err
	}
	kk := engine.KeyringIDKey(nil, id)
	if err := s.comp.Stage(b, kk, append(kk, 0)); err != nil {
		return err
	}
	if err := s.comp.Stage(b, k, append(k, 0)); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	s.kr.Committed(b)
	// The compactor is not woken: an erasure that expired the export
	// wakes it when it completes; an export that outlived its TTL waits
	// for the next pass.
	_, err = s.audit.Append(Record{Actor: "processor", Action: "export.expired", Target: "request:" + uuidString(head[9:25]), Outcome: "ok"})
	return err
}

// sweepExports expires every export whose time has come.
func (s *Service) sweepExports() error {
	hi := binary.BigEndian.AppendUint64([]byte{prefixExpiry}, uint64(s.now().UnixNano())+1)
	var toks []string
	err := s.scan([]byte{prefixExpiry}, hi, func(k, _ []byte) error {
		toks = append(toks, hex.EncodeToString(k[9:]))
		return nil
	})
	if err != nil {
		return err
	}
	for _, t := range toks {
		if err := s.expireExport(t); err != nil {
			return err
		}
	}
	return nil
}

// result returns the export behind token: its body and content type, the
// request id, and whether it has expired (gone). ErrNotFound for unknown
// tokens.
func (s *Service) result(token string) (body []byte, ctype, id string, gone bool, err error) {
	tok, err := hex.DecodeString(token)
	if err != nil || len(tok) != 16 {
		return nil, "", "", false, ErrNotFound
	}
	v, closer, err := s.db.Get(append([]byte{prefixExport}, tok...))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, "", "", false, ErrNotFound
	}
	if err != nil {
		return nil, "", "", false, err
	}
	defer closer.Close()
	if len(v) < exportHeadLen {
		return nil, "", "", false, errors.New("privacy: corrupt export")
	}
	id = uuidString(v[9:25])
	exp := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	if len(v) == exportHeadLen || !s.now().Before(exp) {
		return nil, "", id, true, nil
	}
	ctype = "application/json"
	if v[8]&^formatSealed == formatNDJSON {
		ctype = "application/x-ndjson"
	}
	if v[8]&formatSealed == 0 {
		return append([]byte(nil), v[exportHeadLen:]...), ctype, id, false, nil
	}
	body, err = s.kr.OpenID(nil, exportKeyID(tok), v[exportHeadLen:], exportAAD(v[:exportHeadLen]))
	if errors.Is(err, engine.ErrKeyDestroyed) {
		return nil, "", id, true, nil // shredded: gone, whatever the expiry says
	}
	if err != nil {
		return nil, "", id, false, fmt.Errorf("cannot open export of request %s: %w", id, err)
	}
	return body, ctype, id, false, nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
