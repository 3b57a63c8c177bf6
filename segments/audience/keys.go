package audience

import (
	"encoding/binary"
)

// Pebble layout. Prefixes 0x28-0x2f are this package's (0x20-0x27 are the
// consent state of package segments). Values that can change format start
// with a version byte, 1.
//
//	0x28 | id | 0x00 | version (4 BE)          → 1 | Definition as JSON; 1 alone: deleted
//	0x29 | profile id (4 BE)                     → 1 | traits as a JSON object ("{}" when none)
//	                                               2 | nonce | sealed traits JSON | tag (keyring)
//	0x2a | profile id | counter (8 BE) | day (4 BE) → uvarint count of that day (UTC)
//	0x2b | id | 0x00 | profile id (4 BE)         → "" (membership)
//	0x2c | topic | 0x00 | partition (4 BE)       → next offset (8 BE) this store has applied
//	0x2d | id                                    → version (4 BE) whose back-fill completed
//
// A profile id is "known" when it has a 0x29 key: every profile a batch
// carried gets one, so NOT and back-fill range over every profile seen.
const (
	prefixDef      byte = 0x28
	prefixTraits   byte = 0x29
	prefixCounter  byte = 0x2a
	prefixMember   byte = 0x2b
	prefixOffset   byte = 0x2c
	prefixBackfill byte = 0x2d

	valueVersion byte = 1
)

func defKey(dst []byte, id string, version uint32) []byte {
	dst = append(dst, prefixDef)
	dst = append(dst, id...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, version)
}

func traitsKey(dst []byte, pid uint32) []byte {
	return binary.BigEndian.AppendUint32(append(dst, prefixTraits), pid)
}

func counterKey(dst []byte, pid uint32, ctr uint64, day uint32) []byte {
	dst = binary.BigEndian.AppendUint32(append(dst, prefixCounter), pid)
	dst = binary.BigEndian.AppendUint64(dst, ctr)
	return binary.BigEndian.AppendUint32(dst, day)
}

func memberKey(dst []byte, id string, pid uint32) []byte {
	dst = append(dst, prefixMember)
	dst = append(dst, id...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, pid)
}

func memberPrefix(id string) (lo, hi []byte) {
	lo = append(append([]byte{prefixMember}, id...), 0)
	hi = append(append([]byte{prefixMember}, id...), 1)
	return lo, hi
}

func offsetKey(dst []byte, topic string, partition int32) []byte {
	dst = append(dst, prefixOffset)
	dst = append(dst, topic...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, uint32(partition))
}

func backfillKey(id string) []byte { return append([]byte{prefixBackfill}, id...) }
