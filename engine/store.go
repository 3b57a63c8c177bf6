package engine

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"
)

// Key families of the Pebble store. Every key starts with one of these
// bytes; each family owns its prefix and documents its layout where it is
// written. New families take a new byte; a family changes layout by taking a
// new byte too, so that old and new keys never mix.
const (
	// PrefixOffset: PrefixOffset | topic | 0x00 | partition (4 bytes BE)
	// → next offset (8 bytes BE) | leader epoch (4 bytes BE).
	PrefixOffset byte = 0x01
	// 0x10-0x1f belong to package identity.
	// 0x20-0x2f belong to package segments.
	// 0x30-0x3f belong to privacy requests and the audit log.
)

func offsetKey(dst []byte, topic string, partition int32) []byte {
	dst = append(dst, PrefixOffset)
	dst = append(dst, topic...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, uint32(partition))
}

// PutOffsets adds the input offsets to w, so that the state written in the
// same Pebble batch and the position it was derived from commit atomically.
func PutOffsets(w *pebble.Batch, offsets []Offset) error {
	var k, v []byte
	for _, o := range offsets {
		k = offsetKey(k[:0], o.Topic, o.Partition)
		v = binary.BigEndian.AppendUint64(v[:0], uint64(o.Next))
		v = binary.BigEndian.AppendUint32(v, uint32(o.Epoch))
		if err := w.Set(k, v, nil); err != nil {
			return fmt.Errorf("cannot stage offset %s/%d: %w", o.Topic, o.Partition, err)
		}
	}
	return nil
}

// LoadOffsets returns every input offset stored in db, ordered by topic and
// partition.
func LoadOffsets(db *pebble.DB) ([]Offset, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{PrefixOffset}, UpperBound: []byte{PrefixOffset + 1}})
	if err != nil {
		return nil, fmt.Errorf("cannot read offsets: %w", err)
	}
	defer it.Close()
	var out []Offset
	for it.First(); it.Valid(); it.Next() {
		o, err := decodeOffset(it.Key(), it.Value())
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, it.Error()
}

var errBadOffset = errors.New("engine: corrupt offset entry")

func decodeOffset(k, v []byte) (Offset, error) {
	if len(k) < 6 || k[0] != PrefixOffset || k[len(k)-5] != 0 || len(v) != 12 {
		return Offset{}, errBadOffset
	}
	return Offset{
		Topic:     string(k[1 : len(k)-5]),
		Partition: int32(binary.BigEndian.Uint32(k[len(k)-4:])),
		Next:      int64(binary.BigEndian.Uint64(v)),
		Epoch:     int32(binary.BigEndian.Uint32(v[8:])),
	}, nil
}
