package identity

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// BenchConfig configures RunBench.
type BenchConfig struct {
	// Dir is the Pebble directory; it must be empty or absent. The caller
	// removes it.
	Dir string
	// Identifiers is how many identifiers to load before measuring: one
	// profile per 4 identifiers (user_id, anonymous_id, email, device_id).
	Identifiers int
	// Events is how many events each measurement resolves. Default 1M.
	Events int
	// BatchRows is the rows per batch. Default 4096.
	BatchRows int
	// CacheBytes is Config.CacheBytes. Default: enough for every loaded
	// identifier and profile (about 300 bytes per identifier).
	CacheBytes int64
	// Progress, if set, is called after each loaded batch.
	Progress func(loaded int)
}

// BenchResult is what RunBench measured.
type BenchResult struct {
	Identifiers int
	Profiles    int
	// LoadPerSec is identifiers created per second while loading.
	LoadPerSec float64
	// WarmPerSec is events resolved per second with every identifier in the
	// cache; ColdPerSec starting from empty identity caches (they fill as
	// the run goes: with many identifiers most lookups still go to Pebble,
	// whose block cache and the OS page cache are warm). Both include the
	// synced Pebble commit of each batch. BenchmarkResolve/cold drops the
	// caches before every batch instead.
	WarmPerSec, ColdPerSec float64
	// DiskBytes is the size of identity's key families after compaction;
	// BytesPerIdentifier divides it by Identifiers.
	DiskBytes          uint64
	BytesPerIdentifier float64
	// EraseP50 and EraseP99 are the latencies of Graph.Erase of one
	// person (4 identifiers), including the flush and the compaction of
	// the erased keys, over EraseRuns people picked at random.
	EraseP50, EraseP99 time.Duration
	EraseRuns          int
}

// RunBench loads cfg.Identifiers identifiers into a fresh store through the
// Stage, then measures resolution of events naming two known identifiers
// each (user_id and anonymous_id of a random person), warm and cold. The
// `cdpstream bench` harness calls it for the 10M run.
func RunBench(ctx context.Context, cfg BenchConfig) (BenchResult, error) {
	if cfg.Events == 0 {
		cfg.Events = 1 << 20
	}
	if cfg.BatchRows == 0 {
		cfg.BatchRows = 4096
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = int64(cfg.Identifiers)*300 + 64<<20
	}
	env, err := OpenBenchEnv(cfg.Dir, cfg.CacheBytes)
	if err != nil {
		return BenchResult{}, err
	}
	defer env.Close()
	res := BenchResult{Identifiers: cfg.Identifiers}
	start := time.Now()
	if err := env.Load(ctx, cfg.Identifiers, cfg.BatchRows, cfg.Progress); err != nil {
		return res, err
	}
	res.Profiles = env.people
	res.LoadPerSec = float64(cfg.Identifiers) / time.Since(start).Seconds()
	r := rand.New(rand.NewPCG(1, 2))
	measure := func() (float64, error) {
		batches := env.EventBatches(r, cfg.Events, cfg.BatchRows)
		start := time.Now()
		err := env.Resolve(ctx, batches)
		return float64(cfg.Events) / time.Since(start).Seconds(), err
	}
	if res.WarmPerSec, err = measure(); err != nil {
		return res, err
	}
	env.g.DropCaches()
	if res.ColdPerSec, err = measure(); err != nil {
		return res, err
	}
	if res.DiskBytes, err = env.DiskBytes(); err != nil {
		return res, err
	}
	res.BytesPerIdentifier = float64(res.DiskBytes) / float64(max(cfg.Identifiers, 1))
	if res.EraseP50, res.EraseP99, res.EraseRuns, err = env.eraseLatency(ctx, r, 25); err != nil {
		return res, err
	}
	return res, nil
}

// eraseLatency erases runs random people (looked up by email, as a
// privacy request would) and returns the p50 and p99 of Erase.
func (e *BenchEnv) eraseLatency(ctx context.Context, r *rand.Rand, runs int) (p50, p99 time.Duration, n int, err error) {
	var lat []time.Duration
	for i := 0; i < runs && e.people > 0; i++ {
		v, err := e.g.Lookup(TypeEmail, "p"+strconv.Itoa(r.IntN(e.people))+"@example.com")
		if err != nil {
			continue // erased already
		}
		start := time.Now()
		if err := e.g.Erase(ctx, []uint32{v.ProfileID}); err != nil {
			return 0, 0, 0, err
		}
		lat = append(lat, time.Since(start))
	}
	if len(lat) == 0 {
		return 0, 0, 0, nil
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[(len(lat)*99)/100], len(lat), nil
}

// BenchMasterKey is the benchmarks' keyring master key. It is public:
// never use it for real data.
const BenchMasterKey = "62656e63682d6d61737465722d6b65792d6e6f742d666f722d7265616c2d6461"

// BenchEnv is a Graph and Stage on a Pebble store for benchmarks.
type BenchEnv struct {
	db     *pebble.DB
	g      *Graph
	st     *Stage
	people int
	off    int64
	ts     time.Time
	bld    *array.RecordBuilder
}

// OpenBenchEnv opens a benchmark store in dir.
func OpenBenchEnv(dir string, cacheBytes int64) (*BenchEnv, error) {
	// The store cmd/cdpstream opens: bloom filters, 256 MiB block cache.
	db, err := engine.OpenStore(dir, engine.StoreConfig{}, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot open bench store: %w", err)
	}
	// Values are sealed as in production (cmd/cdpstream always passes a
	// keyring), under a fixed, public master key.
	kr, err := engine.NewKeyring(engine.EncryptionConfig{MasterKey: BenchMasterKey}, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	g, err := New(Config{Secret: "bench-secret", CacheBytes: cacheBytes}, db, nil, WithKeyring(kr))
	if err != nil {
		db.Close()
		return nil, err
	}
	st, err := NewStage(g)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &BenchEnv{db: db, g: g, st: st, ts: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		bld: array.NewRecordBuilder(memory.DefaultAllocator, engine.Schema)}, nil
}

// Close closes the store.
func (e *BenchEnv) Close() error {
	e.bld.Release()
	return e.db.Close()
}

// Load creates people with 4 identifiers each until n identifiers exist.
func (e *BenchEnv) Load(ctx context.Context, n, batchRows int, progress func(int)) error {
	for e.people*4 < n {
		rows := min(batchRows, (n-e.people*4+3)/4)
		for i := 0; i < rows; i++ {
			p := strconv.Itoa(e.people + i)
			e.appendRow(engine.TypeIdentify, "u"+p, "a"+p, [][2]string{{TypeEmail, "p" + p + "@example.com"}, {TypeDeviceID, "d" + p}})
		}
		b := e.flush()
		err := e.st.Process(ctx, b)
		b.Release()
		if err != nil {
			return err
		}
		e.people += rows
		if progress != nil {
			progress(e.people * 4)
		}
	}
	return nil
}

// EventBatches builds batches of track events, each naming the user_id and
// anonymous_id of a random loaded person.
func (e *BenchEnv) EventBatches(r *rand.Rand, events, batchRows int) []*engine.Batch {
	var out []*engine.Batch
	for events > 0 {
		rows := min(batchRows, events)
		for i := 0; i < rows; i++ {
			p := strconv.Itoa(r.IntN(max(e.people, 1)))
			e.appendRow(engine.TypeTrack, "u"+p, "a"+p, nil)
		}
		out = append(out, e.flush())
		events -= rows
	}
	return out
}

// Resolve processes and releases batches.
func (e *BenchEnv) Resolve(ctx context.Context, batches []*engine.Batch) error {
	for i, b := range batches {
		err := e.st.Process(ctx, b)
		b.Release()
		if err != nil {
			for _, b := range batches[i+1:] {
				b.Release()
			}
			return err
		}
	}
	return nil
}

// DiskBytes compacts the store and returns the size of identity's keys.
func (e *BenchEnv) DiskBytes() (uint64, error) {
	if err := e.db.Flush(); err != nil {
		return 0, err
	}
	lo, hi := []byte{prefixMeta}, []byte{prefixType + 1}
	if err := e.db.Compact(lo, hi, true); err != nil {
		return 0, err
	}
	return e.db.EstimateDiskUsage(lo, hi)
}

func (e *BenchEnv) appendRow(typ engine.EventType, user, anon string, ids [][2]string) {
	b := e.bld
	e.off++
	b.Field(engine.ColMessageID).(*array.StringBuilder).Append("m" + strconv.FormatInt(e.off, 10))
	b.Field(engine.ColType).(*array.Uint8Builder).Append(uint8(typ))
	b.Field(engine.ColEvent).(*array.StringBuilder).AppendNull()
	b.Field(engine.ColTimestamp).(*array.TimestampBuilder).Append(arrow.Timestamp(e.ts.UnixMicro()))
	b.Field(engine.ColTopic).(*array.StringBuilder).Append("bench")
	b.Field(engine.ColPartition).(*array.Int32Builder).Append(0)
	b.Field(engine.ColOffset).(*array.Int64Builder).Append(e.off)
	b.Field(engine.ColKey).(*array.BinaryBuilder).AppendNull()
	b.Field(engine.ColUserID).(*array.StringBuilder).Append(user)
	b.Field(engine.ColAnonymousID).(*array.StringBuilder).Append(anon)
	b.Field(engine.ColPreviousID).(*array.StringBuilder).AppendNull()
	b.Field(engine.ColGroupID).(*array.StringBuilder).AppendNull()
	lb := b.Field(engine.ColIdentifiers).(*array.ListBuilder)
	sb := lb.ValueBuilder().(*array.StructBuilder)
	lb.Append(true)
	for _, id := range ids {
		sb.Append(true)
		sb.FieldBuilder(0).(*array.StringBuilder).Append(id[0])
		sb.FieldBuilder(1).(*array.StringBuilder).Append(id[1])
	}
	b.Field(engine.ColProfileID).(*array.Uint32Builder).Append(0)
	b.Field(engine.ColConsentMask).(*array.Uint64Builder).Append(0)
	b.Field(engine.ColRaw).(*array.BinaryBuilder).Append(nil)
	b.Field(engine.ColConsentFields).(*array.BinaryBuilder).AppendNull()
}

func (e *BenchEnv) flush() *engine.Batch {
	rec := e.bld.NewRecordBatch()
	return &engine.Batch{Rec: rec, Offsets: []engine.Offset{{Topic: "bench", Partition: 0, Next: e.off + 1, Epoch: -1}}}
}
