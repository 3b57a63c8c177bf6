package ingest

import (
	"bytes"
	"errors"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
)

// BatchConfig says when a batch is full.
type BatchConfig struct {
	// MaxRows is the number of records (valid and rejected) after which
	// Add reports the batch full. Default 4096.
	MaxRows int `yaml:"max_rows"`
	// MaxBytes is the raw input size after which Add reports the batch
	// full. Default 4 MiB.
	MaxBytes int `yaml:"max_bytes"`
	// MaxAge is how long a batch may stay open. The source enforces it,
	// using Created; the Batcher only carries it. Default 250ms.
	MaxAge time.Duration `yaml:"max_age"`
}

// Defaults fills the zero fields of c with their defaults.
func (c *BatchConfig) Defaults() {
	if c.MaxRows == 0 {
		c.MaxRows = 4096
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 4 << 20
	}
	if c.MaxAge == 0 {
		c.MaxAge = 250 * time.Millisecond
	}
}

// Validate reports the first invalid field of c, naming it by its yaml path.
func (c *BatchConfig) Validate() error {
	switch {
	case c.MaxRows <= 0:
		return errors.New("batch.max_rows: must be > 0")
	case c.MaxBytes <= 0:
		return errors.New("batch.max_bytes: must be > 0")
	case c.MaxAge <= 0:
		return errors.New("batch.max_age: must be > 0")
	}
	return nil
}

// Batcher decodes records and appends them to an Arrow record in
// engine.Schema, collecting rejected records as dead letters and the next
// offset of every topic-partition it saw. One goroutine uses a Batcher at a
// time (a source's consume loop); it is not safe for concurrent use.
type Batcher struct {
	dec *Decoder
	cfg BatchConfig
	now func() time.Time

	// The builders of rb, typed. rb is reused across batches: Flush turns
	// its content into a record and leaves it empty.
	rb                              *array.RecordBuilder
	msgID, event, topic             *array.StringBuilder
	userID, anonID, prevID, groupID *array.StringBuilder
	typ                             *array.Uint8Builder
	ts                              *array.TimestampBuilder
	part                            *array.Int32Builder
	off                             *array.Int64Builder
	key, raw, cfields               *array.BinaryBuilder
	idList                          *array.ListBuilder
	idStruct                        *array.StructBuilder
	idType, idValue                 *array.StringBuilder
	profile                         *array.Uint32Builder
	consent                         *array.Uint64Builder

	bins    [numBins]*array.BinaryBuilder    // variable-length builders
	rowBins [numRowBins]*array.BinaryBuilder // those appended once per row
	rowCap  int                              // rows rowBins and idList hold without growing

	// Fixed-width columns of the open batch, copied into their builders
	// by Flush; reused across batches.
	colType []uint8
	colTS   []arrow.Timestamp
	colPart []int32
	colOff  []int64

	// Sizes of the previous batch, reserved up front for the next one.
	hintRows, hintIdents, hintOffsets int
	hintData                          [numBins]int

	// The open batch.
	records, bytes int
	created        time.Time
	dead           []engine.DeadLetter
	offsets        []engine.Offset
	lastOff        int // index in offsets of the last partition seen
}

// numBins is the number of variable-length columns whose data size the
// Batcher remembers from one batch to reserve it for the next; the first
// numRowBins of them get exactly one value per row.
const (
	numBins    = 12
	numRowBins = 10
)

// NewBatcher returns a Batcher; dc and bc get their defaults filled in and
// are validated. mem allocates the Arrow buffers; nil means a new
// engine.PoolAllocator, whose recycled buffers keep the garbage collector
// (and its write barriers, which slow the JSON parser down) mostly idle:
// see "Memory" in the package doc. The caller must call Release when done.
func NewBatcher(dc DecodeConfig, bc BatchConfig, mem memory.Allocator) (*Batcher, error) {
	dec, err := NewDecoder(dc)
	if err != nil {
		return nil, err
	}
	bc.Defaults()
	if err := bc.Validate(); err != nil {
		return nil, err
	}
	if mem == nil {
		mem = engine.NewPoolAllocator()
	}
	rb := array.NewRecordBuilder(mem, engine.Schema)
	b := &Batcher{
		dec:     dec,
		cfg:     bc,
		rb:      rb,
		msgID:   rb.Field(engine.ColMessageID).(*array.StringBuilder),
		typ:     rb.Field(engine.ColType).(*array.Uint8Builder),
		event:   rb.Field(engine.ColEvent).(*array.StringBuilder),
		ts:      rb.Field(engine.ColTimestamp).(*array.TimestampBuilder),
		topic:   rb.Field(engine.ColTopic).(*array.StringBuilder),
		part:    rb.Field(engine.ColPartition).(*array.Int32Builder),
		off:     rb.Field(engine.ColOffset).(*array.Int64Builder),
		key:     rb.Field(engine.ColKey).(*array.BinaryBuilder),
		userID:  rb.Field(engine.ColUserID).(*array.StringBuilder),
		anonID:  rb.Field(engine.ColAnonymousID).(*array.StringBuilder),
		prevID:  rb.Field(engine.ColPreviousID).(*array.StringBuilder),
		groupID: rb.Field(engine.ColGroupID).(*array.StringBuilder),
		idList:  rb.Field(engine.ColIdentifiers).(*array.ListBuilder),
		profile: rb.Field(engine.ColProfileID).(*array.Uint32Builder),
		consent: rb.Field(engine.ColConsentMask).(*array.Uint64Builder),
		raw:     rb.Field(engine.ColRaw).(*array.BinaryBuilder),
		cfields: rb.Field(engine.ColConsentFields).(*array.BinaryBuilder),
		now:     time.Now,
	}
	b.idStruct = b.idList.ValueBuilder().(*array.StructBuilder)
	b.idType = b.idStruct.FieldBuilder(0).(*array.StringBuilder)
	b.idValue = b.idStruct.FieldBuilder(1).(*array.StringBuilder)
	b.bins = [numBins]*array.BinaryBuilder{
		b.msgID.BinaryBuilder, b.event.BinaryBuilder, b.topic.BinaryBuilder,
		b.userID.BinaryBuilder, b.anonID.BinaryBuilder, b.prevID.BinaryBuilder,
		b.groupID.BinaryBuilder, b.key, b.raw, b.cfields,
		b.idType.BinaryBuilder, b.idValue.BinaryBuilder,
	}
	copy(b.rowBins[:], b.bins[:numRowBins])
	return b, nil
}

// Add decodes one record and adds it to the open batch: a valid event as a
// row of the Arrow record, an invalid one as an engine.DeadLetter holding
// copies of raw and key. raw and key are not retained; the caller may
// reuse them once Add returns. A nil key is stored as null, an empty one
// as an empty value.
//
// pos is where the record came from; the batch's offset for pos's
// topic-partition becomes pos.Offset+1 with leader epoch epoch (-1 if
// unknown). recTime is the record's timestamp (zero when the source has
// none), used when the event carries no timestamp of its own.
//
// Add reports whether the batch has reached MaxRows records or MaxBytes
// bytes; the caller should then Flush. Adding to a full batch works, it
// just grows.
func (b *Batcher) Add(raw, key []byte, pos engine.Position, epoch int32, recTime time.Time) (full bool) {
	if b.records == 0 {
		b.open()
	}
	b.records++
	b.bytes += len(raw)
	b.trackOffset(pos, epoch)

	ev, reason, detail := b.dec.Decode(raw, recTime)
	if reason != "" {
		b.dead = append(b.dead, engine.DeadLetter{
			Pos:    pos,
			Key:    bytes.Clone(key),
			Raw:    bytes.Clone(raw),
			Reason: reason,
			Detail: detail,
			Time:   b.now(),
		})
	} else {
		b.appendEvent(ev, raw, key, pos)
	}
	return b.records >= b.cfg.MaxRows || b.bytes >= b.cfg.MaxBytes
}

// open starts a batch. It reserves builder space for what the previous
// batch needed, so that appends inside a batch of similar shape do not
// allocate or copy.
func (b *Batcher) open() {
	b.created = b.now()
	b.rowCap = 0
	if b.hintRows > 0 {
		rows := b.hintRows + b.hintRows/8
		for _, bin := range b.rowBins {
			bin.Reserve(rows)
		}
		b.idList.Reserve(rows)
		b.rowCap = rows
		b.idStruct.Reserve(b.hintIdents + b.hintIdents/8)
		for i, bin := range b.bins {
			bin.ReserveData(b.hintData[i] + b.hintData[i]/8)
		}
	}
	b.offsets = make([]engine.Offset, 0, max(b.hintOffsets, 1))
	b.lastOff = 0
}

func (b *Batcher) trackOffset(pos engine.Position, epoch int32) {
	// Records of one partition come in runs: check the last one first.
	if b.lastOff < len(b.offsets) {
		o := &b.offsets[b.lastOff]
		if o.Partition == pos.Partition && o.Topic == pos.Topic {
			o.Next, o.Epoch = pos.Offset+1, epoch
			return
		}
	}
	for i := range b.offsets {
		o := &b.offsets[i]
		if o.Partition == pos.Partition && o.Topic == pos.Topic {
			o.Next, o.Epoch = pos.Offset+1, epoch
			b.lastOff = i
			return
		}
	}
	b.offsets = append(b.offsets, engine.Offset{Topic: pos.Topic, Partition: pos.Partition, Next: pos.Offset + 1, Epoch: epoch})
	b.lastOff = len(b.offsets) - 1
}

// appendEvent appends one row. The fixed-width columns go to plain slices
// that Flush copies into their builders in one call each: per-row builder
// calls cost more than the copy. Variable-length values go straight into
// their builders through UnsafeAppend once capacity is ensured, which
// skips the per-call Reserve of Append.
func (b *Batcher) appendEvent(ev *Event, raw, key []byte, pos engine.Position) {
	if len(b.colType) >= b.rowCap {
		b.growRows()
	}
	b.colType = append(b.colType, uint8(ev.Type))
	b.colTS = append(b.colTS, arrow.Timestamp(ev.Timestamp))
	b.colPart = append(b.colPart, pos.Partition)
	b.colOff = append(b.colOff, pos.Offset)

	appendBin(b.msgID.BinaryBuilder, ev.MessageID)
	appendNullable(b.event.BinaryBuilder, ev.Event)
	appendBin(b.topic.BinaryBuilder, unsafeBytes(pos.Topic)) // copied
	appendNullable(b.key, key)
	appendNullable(b.userID.BinaryBuilder, ev.UserID)
	appendNullable(b.anonID.BinaryBuilder, ev.AnonymousID)
	appendNullable(b.prevID.BinaryBuilder, ev.PreviousID)
	appendNullable(b.groupID.BinaryBuilder, ev.GroupID)
	appendBin(b.raw, raw)
	appendNullable(b.cfields, ev.ConsentFields)
	b.idList.Append(true)
	for i := range ev.Identifiers {
		id := &ev.Identifiers[i]
		b.idStruct.Append(true)
		b.idType.BinaryBuilder.Append(id.Type)
		b.idValue.BinaryBuilder.Append(id.Value)
	}
}

// growRows makes room for more rows in the builders appended to per row.
func (b *Batcher) growRows() {
	n := max(len(b.colType), 256)
	for _, bin := range b.rowBins {
		bin.Reserve(n)
	}
	b.idList.Reserve(n)
	b.rowCap = len(b.colType) + n
}

// appendBin appends a valid value. Capacity for the row (validity bitmap)
// is ensured by the caller through rowCap; data capacity grows here
// geometrically, since ReserveData alone grows to the exact size.
func appendBin(bb *array.BinaryBuilder, v []byte) {
	if bb.DataLen()+len(v) > bb.DataCap() {
		bb.ReserveData(max(len(v), bb.DataCap()))
	}
	bb.UnsafeAppend(v)
}

func appendNullable(bb *array.BinaryBuilder, v []byte) {
	if v == nil {
		bb.AppendNull()
		return
	}
	appendBin(bb, v)
}

// Len returns the number of records, valid and rejected, added since the
// last Flush.
func (b *Batcher) Len() int { return b.records }

// Created returns when the first record of the open batch was added, zero
// when the batch is empty. The source flushes once it is MaxAge old.
func (b *Batcher) Created() time.Time {
	if b.records == 0 {
		return time.Time{}
	}
	return b.created
}

// MaxAge returns the configured BatchConfig.MaxAge (after defaults).
func (b *Batcher) MaxAge() time.Duration { return b.cfg.MaxAge }

// Flush closes the open batch and returns it, nil if nothing was added
// since the last Flush. The caller owns the Batch and everything in it
// (Rec must be released once, through Batch.Release); the Batcher keeps no
// reference to it and builds the next batch in fresh buffers. Seq is left
// 0 for the runner to number.
func (b *Batcher) Flush() *engine.Batch {
	if b.records == 0 {
		return nil
	}
	b.hintRows = b.idList.Len()
	b.hintIdents = b.idStruct.Len()
	b.hintOffsets = len(b.offsets)
	for i, bin := range b.bins {
		b.hintData[i] = bin.DataLen()
	}
	rows := len(b.colType)
	b.typ.AppendValues(b.colType, nil)
	b.ts.AppendValues(b.colTS, nil)
	b.part.AppendValues(b.colPart, nil)
	b.off.AppendValues(b.colOff, nil)
	b.profile.AppendEmptyValues(rows)
	b.consent.AppendEmptyValues(rows)
	b.colType, b.colTS, b.colPart, b.colOff = b.colType[:0], b.colTS[:0], b.colPart[:0], b.colOff[:0]
	batch := &engine.Batch{
		Rec:     b.rb.NewRecordBatch(),
		Dead:    b.dead,
		Offsets: b.offsets,
		Created: b.created,
		Flushed: b.now(),
		Bytes:   b.bytes,
	}
	b.dead, b.offsets = nil, nil
	b.records, b.bytes = 0, 0
	b.created = time.Time{}
	return batch
}

// Release frees the builders; the Batcher must not be used afterwards. A
// batch still open is dropped: Flush it first. Batches already flushed stay
// valid: they own their records.
func (b *Batcher) Release() {
	if b.rb != nil {
		b.rb.Release()
		b.rb = nil
	}
}
