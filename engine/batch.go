package engine

import (
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
)

// Position is where a record came from: a Kafka topic, partition and offset,
// or for a file source the file name as Topic, partition 0 and the 1-based
// line number as Offset.
type Position struct {
	Topic     string
	Partition int32
	Offset    int64
}

// String formats p as topic/partition@offset.
func (p Position) String() string {
	return p.Topic + "/" + strconv.Itoa(int(p.Partition)) + "@" + strconv.FormatInt(p.Offset, 10)
}

// Reason is a low-cardinality reason code: why a record was dead-lettered or
// why an event was dropped for a sink. It is used as a metric label.
type Reason string

// DeadLetter is a record that could not be accepted. Raw is the original
// record, byte for byte; it is owned by the DeadLetter (the decoder copies
// it, since source buffers are reused).
type DeadLetter struct {
	Pos    Position
	Key    []byte
	Raw    []byte
	Reason Reason
	// Detail is a human-readable explanation without personal data, e.g.
	// "timestamp: parsing time \"x\" as RFC 3339".
	Detail string
	Time   time.Time
}

// Batch is the unit that flows through the pipeline: a few thousand decoded
// events as one Arrow record, the records that were rejected while building
// it, and the input positions it covers.
//
// Ownership: a Batch has exactly one owner at a time. The source creates it
// and hands it to the runner; the runner hands it to each stage in turn and
// to every sink, and calls Release once every sink has acknowledged it and
// its offsets are committed. Stages and sinks must not keep Rec (or slices
// of its buffers) after they return unless they Retain it.
type Batch struct {
	// Seq numbers batches of one runner from 1 upwards.
	Seq uint64
	// Rec holds the valid events, in Schema. It may have zero rows when
	// every record of the batch was rejected.
	Rec arrow.RecordBatch
	// Dead holds the rejected records, in input order.
	Dead []DeadLetter
	// Offsets holds, per topic-partition, the next offset to consume after
	// this batch (last offset + 1), covering valid and rejected records.
	Offsets []Offset
	// Created is when the first record entered the batch; Flushed is when
	// the batch was closed. Their difference is the batching delay.
	Created, Flushed time.Time
	// Bytes is the total size of the raw input records of the batch.
	Bytes int
	// Merges lists the profile merges that resolving this batch caused, in
	// order; the runner forwards them to sinks that implement MergeSink.
	Merges []Merge
	// Records holds control records stages produced with this batch (e.g.
	// audience entries and exits); the runner forwards each to the sinks
	// that implement RecordSink and want its type, before the batch's
	// offsets commit.
	Records []Record
	// Drops counts the rows stages removed from Rec, by reason (identity
	// removes the events of suppressed people before resolving them). They
	// reach no sink: the runner counts them as dropped for every sink that
	// takes events (cdp_engine_dropped_total{sink,reason}, Stats.Dropped).
	// Offsets still cover them.
	Drops []Drop
}

// Drop is a number of rows a stage removed from a batch, for one reason.
type Drop struct {
	Reason Reason
	Rows   int
}

// Record is a control record: not an event, but news about profiles that
// downstream tools act on. Value is JSON with a "type" field; Key is the
// Kafka key (the profile id, so a person's records stay in order).
type Record struct {
	Type  string
	Key   []byte
	Value []byte
	// Subject is the profile whose data the record adds downstream (an
	// audience entry, a consent grant), or 0 for a record that must
	// always be delivered (an exit, a denial, a deletion notice). A sink's
	// filter that implements RecordFilter may withhold a record by its
	// Subject: the erased-profile filter withholds those of profiles
	// erased while the record was on its way, so no sink re-learns about
	// a person from a record that was in flight when the erasure
	// committed.
	Subject uint32
}

// Merge records that profiles were merged into a survivor, so downstream
// tools can re-key what they hold under the merged ids.
type Merge struct {
	Survivor uint32
	Merged   []uint32
	Time     time.Time
	// MessageID is the event that proved the link.
	MessageID string
	// Rule names what allowed the merge (e.g. "shared:user_id").
	Rule string
}

// Rows returns the number of valid events in b.
func (b *Batch) Rows() int {
	if b == nil || b.Rec == nil {
		return 0
	}
	return int(b.Rec.NumRows())
}

// Release releases the Arrow record. It is safe to call more than once.
func (b *Batch) Release() {
	if b != nil && b.Rec != nil {
		b.Rec.Release()
		b.Rec = nil
	}
}

// Offset is the next offset to consume for one topic-partition.
type Offset struct {
	Topic     string
	Partition int32
	// Next is the offset of the first record not yet covered.
	Next int64
	// Epoch is the leader epoch of the last record covered, -1 if unknown.
	Epoch int32
}
