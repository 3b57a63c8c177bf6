package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
)

// Key families of the Pebble store. Every key starts with one of these
// bytes; each family owns its prefix and documents its layout where it is
// written. New families take a new byte; a family changes layout by taking a
// new byte too, so that old and new keys never mix.
const (
	// PrefixOffset: PrefixOffset | owner | 0x00 | topic | 0x00 |
	// partition (4 bytes BE) → next offset (8 bytes BE) | leader epoch
	// (4 bytes BE). The owner is the stage that derived state from the
	// input: each stage that keeps state commits its own position with its
	// own writes, so one stage committing before another crashes never
	// makes the other skip a batch.
	PrefixOffset byte = 0x02
	// PrefixKeyring (0x03, keyring.go) holds the master key check and the
	// wrapped per-profile data keys.
	// 0x10-0x1f belong to package identity.
	// 0x20-0x2f belong to package segments.
	// 0x30-0x3f belong to privacy requests and the audit log.
)

func offsetKey(dst []byte, owner, topic string, partition int32) []byte {
	dst = offsetPrefix(dst, owner)
	dst = append(dst, topic...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, uint32(partition))
}

func offsetPrefix(dst []byte, owner string) []byte {
	dst = append(dst, PrefixOffset)
	dst = append(dst, owner...)
	return append(dst, 0)
}

// PutOffsets adds owner's input offsets to w, so that the state written in
// the same Pebble batch and the position it was derived from commit
// atomically. owner names the stage (no NUL bytes).
func PutOffsets(w *pebble.Batch, owner string, offsets []Offset) error {
	var k, v []byte
	for _, o := range offsets {
		k = offsetKey(k[:0], owner, o.Topic, o.Partition)
		v = binary.BigEndian.AppendUint64(v[:0], uint64(o.Next))
		v = binary.BigEndian.AppendUint32(v, uint32(o.Epoch))
		if err := w.Set(k, v, nil); err != nil {
			return fmt.Errorf("cannot stage offset %s/%d: %w", o.Topic, o.Partition, err)
		}
	}
	return nil
}

// LoadOffsets returns every input offset owner stored in db, ordered by
// topic and partition.
func LoadOffsets(db *pebble.DB, owner string) ([]Offset, error) {
	lo := offsetPrefix(nil, owner)
	hi := append(offsetPrefix(nil, owner)[:len(lo)-1], 1)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("cannot read offsets: %w", err)
	}
	defer it.Close()
	var out []Offset
	for it.First(); it.Valid(); it.Next() {
		o, err := decodeOffset(it.Key()[len(lo):], it.Value())
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, it.Error()
}

var errBadOffset = errors.New("engine: corrupt offset entry")

// decodeOffset decodes topic | 0x00 | partition → value.
func decodeOffset(k, v []byte) (Offset, error) {
	if len(k) < 5 || k[len(k)-5] != 0 || len(v) != 12 {
		return Offset{}, errBadOffset
	}
	return Offset{
		Topic:     string(k[:len(k)-5]),
		Partition: int32(binary.BigEndian.Uint32(k[len(k)-4:])),
		Next:      int64(binary.BigEndian.Uint64(v)),
		Epoch:     int32(binary.BigEndian.Uint32(v[8:])),
	}, nil
}

// StoreConfig configures the instance's Pebble store.
type StoreConfig struct {
	// BlockCacheBytes is Pebble's cache of uncompressed blocks, shared by
	// every key family. Default 256 MiB. It matters when the identity graph
	// outgrows identity.cache_bytes: a lookup then reads blocks.
	BlockCacheBytes int64 `yaml:"block_cache_bytes"`
	// MemTableBytes is the size of one memtable. Default 64 MiB.
	MemTableBytes int `yaml:"memtable_bytes"`
	// TargetFileBytes is the size of one SST file, at every level. Default
	// 4 MiB. Pebble's own default doubles per level (128 MiB at the last);
	// erasure compacts each erased key through every level, rewriting the
	// files that hold it, so small files keep an erasure fast in a large
	// store.
	TargetFileBytes int64 `yaml:"target_file_bytes"`
}

// Defaults fills zero fields.
func (c *StoreConfig) Defaults() {
	if c.BlockCacheBytes == 0 {
		c.BlockCacheBytes = 256 << 20
	}
	if c.MemTableBytes == 0 {
		c.MemTableBytes = 64 << 20
	}
	if c.TargetFileBytes == 0 {
		c.TargetFileBytes = 4 << 20
	}
}

// Validate reports the first invalid field.
func (c StoreConfig) Validate() error {
	if c.BlockCacheBytes < 0 {
		return errors.New("block_cache_bytes: must be >= 0")
	}
	if c.MemTableBytes < 0 {
		return errors.New("memtable_bytes: must be >= 0")
	}
	if c.TargetFileBytes < 0 {
		return errors.New("target_file_bytes: must be >= 0")
	}
	return nil
}

// OpenStore opens (creating) the Pebble store in dir. Every level carries
// a bloom filter (10 bits per key, about 1% false positives), so a point
// lookup of a key that does not exist — a new visitor's anonymous id, the
// common case at ingest — is answered from the filter without reading data
// blocks; readers use Iterator.SeekPrefixGE (the default comparer's prefix
// is the whole key) to consult it. Pebble's job reports go to log at debug
// level.
func OpenStore(dir string, cfg StoreConfig, log *slog.Logger) (*pebble.DB, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cache := pebble.NewCache(cfg.BlockCacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{Cache: cache, MemTableSize: uint64(cfg.MemTableBytes), Logger: pebbleLogger{log},
		Cleaner: noRecycleCleaner{}}
	opts.Levels = make([]pebble.LevelOptions, 7)
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		opts.Levels[i].FilterType = pebble.TableFilter
		opts.Levels[i].TargetFileSize = cfg.TargetFileBytes
	}
	opts.EnsureDefaults()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("cannot open the state store in %s: %w", dir, err)
	}
	return db, nil
}

// noRecycleCleaner deletes obsolete files (DeleteCleaner's Clean, promoted
// from depth 1) and turns off WAL recycling: ArchiveCleaner, embedded one
// level deeper, contributes only its marker method, which tells Pebble the
// cleaner needs the files' contents, so an obsolete WAL is deleted instead
// of being kept for reuse with its old records in it. Without this, an
// erased person's values would survive in recycled WAL files (see
// identity's TestEraseRecycledWAL). The cost: a fresh WAL file per memtable.
type noRecycleCleaner struct {
	pebble.DeleteCleaner
	needsContents
}

type needsContents struct{ pebble.ArchiveCleaner }

func (noRecycleCleaner) String() string { return "delete-no-recycle" }

// pebbleLogger sends Pebble's messages to slog: its routine job reports
// at debug level, so a default run stays quiet.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
	os.Exit(1)
}
