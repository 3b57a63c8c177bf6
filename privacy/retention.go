package privacy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble"
)

// OriginRetention marks the internal erasure requests of retention.
const OriginRetention = "retention"

// keyRetention holds the id of the last retention request, so a sweep
// does not list the profiles of an unfinished one a second time.
var keyRetention = []byte{prefixMeta, metaRetention}

const (
	prefixMeta    byte = 0x39
	metaRetention byte = 0x01
)

// errBatchFull stops the listing once a request's worth is collected.
var errBatchFull = errors.New("retention batch full")

// Retain runs one retention sweep (Config.Retention): unless the previous
// retention request is unfinished, it lists up to Retention.Batch
// profiles inactive since now - InactiveAfter and stores one erasure
// request for them, due now. It returns the request id ("" when nothing
// was due or retention is off). Run calls it every Retention.Interval;
// tests call it with a fake clock.
func (s *Service) Retain(ctx context.Context) (string, error) {
	rc := s.cfg.Retention
	if rc.InactiveAfter <= 0 {
		return "", nil
	}
	s.mu.Lock()
	last, err := s.lastRetention()
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	if last != nil && !last.finished() {
		return "", nil
	}
	before := s.now().Add(-rc.InactiveAfter)
	var pids []uint32
	err = s.work.Inactive.Inactive(ctx, before, func(pid uint32) error {
		pids = append(pids, pid)
		if len(pids) == rc.Batch {
			return errBatchFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errBatchFull) {
		return "", fmt.Errorf("cannot list inactive profiles: %w", err)
	}
	if len(pids) == 0 {
		return "", nil
	}
	now := s.now().UTC()
	rec := &record{
		Req:        Request{ID: retentionID(now, pids), Type: TypeErasure, Regulation: OriginRetention, Submitted: now, APIVersion: apiVersion},
		Origin:     OriginRetention,
		Controller: s.cfg.ControllerID, Actor: OriginRetention, Status: StatusPending,
		Received: now, NotBefore: now, Due: now, Expected: now.Add(s.cfg.ExpectedDuration),
		Profiles: pids, BaseURL: s.cfg.PublicURL,
	}
	rec.Digest = s.digest(rec.Req.digest())
	s.mu.Lock()
	err = s.transition(rec, StatusPending, OriginRetention, time.Time{}, func(b *pebble.Batch) error {
		return b.Set(keyRetention, uuidBytes(rec.Req.ID), nil)
	})
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	s.m.retained.Add(float64(len(pids)))
	s.log.Info("retention: erasing inactive profiles", "request", rec.Req.ID, "profiles", len(pids), "inactive_since", before)
	s.kick()
	return rec.Req.ID, nil
}

// lastRetention loads the last retention request, nil if none; under mu.
func (s *Service) lastRetention() (*record, error) {
	v, closer, err := s.db.Get(keyRetention)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the retention state: %w", err)
	}
	id := uuidString(v)
	closer.Close()
	rec, err := s.load(id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return rec, err
}

// retentionID names the retention request for pids at now: a UUID
// (version 8, RFC 9562) made of SHA-256 of both, so the same sweep gives
// the same id and ids sort by nothing personal.
func retentionID(now time.Time, pids []uint32) string {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(now.UnixNano()))
	h.Write([]byte("cdpstream retention\x00"))
	h.Write(b[:])
	for _, p := range pids {
		binary.BigEndian.PutUint32(b[:4], p)
		h.Write(b[:4])
	}
	sum := h.Sum(nil)
	sum[6] = sum[6]&0x0f | 0x80
	sum[8] = sum[8]&0x3f | 0x80
	return uuidString(sum[:16])
}
