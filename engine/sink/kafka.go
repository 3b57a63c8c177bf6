package sink

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/engine"
)

// Record headers written by the Kafka sink.
const (
	// HeaderMessageID carries the event's message id, for downstream
	// de-duplication of at-least-once redeliveries.
	HeaderMessageID = "cdp-message-id"
	// HeaderProfileID carries the resolved profile id as decimal text; "0"
	// when the event was not resolved.
	HeaderProfileID = "cdp-profile-id"
)

// Kafka produces the raw JSON of every selected event to one topic with an
// idempotent producer (acks all). See the package documentation for its
// guarantees.
type Kafka struct {
	name  string
	topic string
	key   KeyMode
	cl    *kgo.Client
	pool  sync.Pool // *produceState
}

// NewKafka returns a Kafka sink for cfg (Defaults are applied, then
// Validate). extra options are appended after the ones cfg implies (for
// tests: a logger, hooks); they must not disable idempotence or acks.
// The client connects lazily.
func NewKafka(name string, cfg KafkaConfig, extra ...kgo.Opt) (*Kafka, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cl, err := newProducer(cfg.Client, cfg.Compression, cfg.Linger, extra...)
	if err != nil {
		return nil, err
	}
	return &Kafka{name: name, topic: cfg.Topic, key: cfg.Key, cl: cl}, nil
}

// newProducer returns the producer client shared by the Kafka sinks, the
// dead-letter sink and the mirror: acks all, the codec and linger given,
// then extra. Idempotence is franz-go's default and is kept: with it a
// retried produce request cannot duplicate or reorder records within a
// partition.
func newProducer(client KafkaClientConfig, compression string, linger time.Duration, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := client.Opts()
	if err != nil {
		return nil, prefix("client.", err)
	}
	codec, err := kafkaCodec(compression)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(linger),
	)
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("cannot create kafka client: %w", err)
	}
	return cl, nil
}

// Name returns the sink's configured name.
func (s *Kafka) Name() string { return s.name }

// Write produces every selected row of b and returns when each record is
// acknowledged by the brokers (acks all), or with the first error. Records
// are produced in row order, so rows with the same key stay in order.
//
// Record values and headers point into b.Rec's buffers without copying;
// Write retains b.Rec until the last record's promise, so if ctx ends
// first Write returns ctx's error at once and the record is released when
// franz-go has finished with the records (the outcome of those records is
// then unknown: they may or may not have been written).
func (s *Kafka) Write(ctx context.Context, b *engine.Batch, sel []int) error {
	n := b.Rows()
	if n == 0 || (sel != nil && len(sel) == 0) {
		return nil
	}
	if err := checkSel(sel, n); err != nil {
		return err
	}
	st, err := s.getState(b)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		s.putState(st)
		return err
	}
	var rows []int
	rows, st.scratch = rowsOf(sel, n, st.scratch)
	st.fill(s, rows)
	st.pending.Store(int64(len(rows)))
	b.Rec.Retain()
	st.rec = b.Rec
	for i := range st.recs {
		s.cl.Produce(ctx, &st.recs[i], st.promise)
	}
	select {
	case <-st.done:
	case <-ctx.Done():
		if st.phase.CompareAndSwap(phaseRunning, phaseAbandoned) {
			// The last promise releases the record and the state.
			return fmt.Errorf("sink %s: %w (%d records not acknowledged)", s.name, ctx.Err(), st.pending.Load())
		}
		// The last promise won the race and is signalling done.
		<-st.done
	}
	err = st.err
	st.release()
	s.putState(st)
	return err
}

// Ping checks that a broker answers and accepts the client's TLS and SASL
// settings: for start-up checks and readiness probes. A Write to an
// unreachable or refusing cluster only reports ctx's deadline, since
// franz-go retries until then; Ping returns the cause.
func (s *Kafka) Ping(ctx context.Context) error {
	if err := s.cl.Ping(ctx); err != nil {
		return fmt.Errorf("sink %s: kafka unreachable: %w", s.name, err)
	}
	return nil
}

// Close closes the client. Records of an abandoned Write still buffered
// fail with kgo.ErrClientClosed. Safe to call more than once.
func (s *Kafka) Close() error {
	s.cl.Close()
	return nil
}

// produceState is what one Write needs while its records are in flight.
// States are pooled per sink: the kgo.Record values, their headers and the
// decimal profile-id text are reused across Writes, so a Write in steady
// state allocates nothing per row.
//
// Reuse is safe only once franz-go is done with every record: it calls a
// record's promise after its last access to it (it even captures the size
// before the promise, so the promise may modify the record). A state is
// therefore put back only after the last promise: by Write when it saw
// done, or by the last promise itself when Write was abandoned. phase
// decides which of the two, exactly once.
type produceState struct {
	recs    []kgo.Record
	hdrs    []kgo.RecordHeader
	ids     []byte // decimal profile ids, sliced by keys and headers
	scratch []int

	// columns of the current batch
	msgID strCol
	key   *array.Binary
	pid   *array.Uint32
	raw   *array.Binary
	rec   arrow.RecordBatch // retained while records are in flight

	pending atomic.Int64
	phase   atomic.Int32
	errMu   sync.Mutex
	err     error
	done    chan struct{} // buffered 1; the last promise sends once
	promise func(*kgo.Record, error)
	sink    *Kafka
}

const (
	phaseRunning int32 = iota
	phaseFinished
	phaseAbandoned
)

func (s *Kafka) getState(b *engine.Batch) (*produceState, error) {
	st, _ := s.pool.Get().(*produceState)
	if st == nil {
		st = &produceState{done: make(chan struct{}, 1), sink: s}
		st.promise = st.onPromise // one closure per state, not per Write
	}
	st.phase.Store(phaseRunning)
	st.err = nil
	msgID, err := columnAs[*array.String](b, engine.ColMessageID)
	if err != nil {
		return nil, err
	}
	if st.key, err = columnAs[*array.Binary](b, engine.ColKey); err != nil {
		return nil, err
	}
	if st.pid, err = columnAs[*array.Uint32](b, engine.ColProfileID); err != nil {
		return nil, err
	}
	if st.raw, err = columnAs[*array.Binary](b, engine.ColRaw); err != nil {
		return nil, err
	}
	st.msgID = newStrCol(msgID)
	return st, nil
}

func (s *Kafka) putState(st *produceState) {
	st.msgID, st.key, st.pid, st.raw, st.rec = strCol{}, nil, nil, nil, nil
	// Drop references into the batch's buffers so a pooled state does not
	// keep Arrow memory reachable.
	clear(st.recs)
	clear(st.hdrs)
	s.pool.Put(st)
}

// fill builds one record per row.
func (st *produceState) fill(s *Kafka, rows []int) {
	n := len(rows)
	st.recs = slices.Grow(st.recs[:0], n)[:n]
	st.hdrs = slices.Grow(st.hdrs[:0], 2*n)[:2*n]
	// Reserve the longest decimal uint32 per row up front: appends below
	// never reallocate, so earlier slices of ids stay valid.
	st.ids = slices.Grow(st.ids[:0], 10*n)
	now := time.Now() // one clock read per Write, not per record
	for j, i := range rows {
		mid := st.msgID.at(i)
		pid := st.pid.Value(i)
		start := len(st.ids)
		st.ids = strconv.AppendUint(st.ids, uint64(pid), 10)
		pidText := st.ids[start:len(st.ids):len(st.ids)]

		var key []byte
		switch s.key {
		case KeyProfileID:
			if pid != 0 {
				key = pidText
			} else if st.key.IsValid(i) {
				key = st.key.Value(i)
			}
		case KeyOriginal:
			if st.key.IsValid(i) {
				key = st.key.Value(i)
			}
		case KeyMessageID:
			key = mid
		}
		h := st.hdrs[2*j : 2*j+2 : 2*j+2]
		h[0] = kgo.RecordHeader{Key: HeaderMessageID, Value: mid}
		h[1] = kgo.RecordHeader{Key: HeaderProfileID, Value: pidText}
		st.recs[j] = kgo.Record{
			Topic:     s.topic,
			Key:       key,
			Value:     st.raw.Value(i),
			Headers:   h,
			Timestamp: now,
		}
	}
}

// onPromise is called by franz-go once per record, serially.
func (st *produceState) onPromise(r *kgo.Record, err error) {
	if err != nil {
		st.errMu.Lock()
		if st.err == nil {
			st.err = fmt.Errorf("sink %s: cannot produce to %s: %w", st.sink.name, r.Topic, err)
		}
		st.errMu.Unlock()
	}
	if st.pending.Add(-1) != 0 {
		return
	}
	if st.phase.CompareAndSwap(phaseRunning, phaseFinished) {
		st.done <- struct{}{}
		return
	}
	// Write gave up waiting: clean up in its place.
	st.release()
	st.sink.putState(st)
}

func (st *produceState) release() {
	if st.rec != nil {
		st.rec.Release()
		st.rec = nil
	}
}
