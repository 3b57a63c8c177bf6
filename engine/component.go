package engine

import "context"

// Source produces batches. Next blocks until a batch is ready, the source
// is exhausted (io.EOF) or ctx is done. When ctx is cancelled Next flushes
// what it holds: it returns the partial batch if there is one, then
// context.Canceled (or ctx.Err()).
//
// Commit is called with the offsets of batches, in order, once every sink
// has acknowledged them. A source must accept Commit concurrently with Next.
type Source interface {
	Next(ctx context.Context) (*Batch, error)
	Commit(ctx context.Context, offsets []Offset) error
	Close() error
}

// Stage transforms a batch in place between the source and the sinks:
// identity resolution fills the profile-id column, consent fills the
// consent mask. Stages run one batch at a time, in order.
type Stage interface {
	Name() string
	Process(ctx context.Context, b *Batch) error
}

// Sink receives the events of a batch. Write returns once the events are
// durably handed over (for Kafka: acknowledged by the brokers), so that the
// runner may commit the batch's input offsets afterwards. sel lists the row
// indices of b.Rec the sink must write, ascending; nil means every row.
// Write must not keep b or sel after returning.
type Sink interface {
	Name() string
	Write(ctx context.Context, b *Batch, sel []int) error
	Close() error
}

// DeadLetterSink receives rejected records. Like Sink.Write, WriteDead
// returns once the records are durably handed over.
type DeadLetterSink interface {
	WriteDead(ctx context.Context, dead []DeadLetter) error
	Close() error
}

// Filter selects the rows of a batch that one sink may receive. Select
// appends the kept row indices to dst (ascending) and returns it; for each
// dropped row it reports a reason through drop. Filters are attached per
// sink with SinkSpec; consent policies (issue 4) implement this interface.
type Filter interface {
	Select(b *Batch, dst []int, drop func(row int, r Reason)) []int
}

// AllPasser is implemented by filters that can tell before Select that
// they keep every row of b. The runner then skips Select and writes the
// batch unselected (a nil selection), which sinks write fastest.
type AllPasser interface {
	PassesAll(b *Batch) bool
}

// RecordFilter is implemented by filters that also decide which control
// records (Batch.Records) their sink receives. DropRecord returns the
// reason to withhold r, or "" to deliver it. The runner counts withheld
// records in cdp_engine_records_dropped_total{sink,type,reason}.
type RecordFilter interface {
	DropRecord(r *Record) Reason
}

// Flusher is implemented by sinks that buffer: Flush is called on shutdown
// after the last Write.
type Flusher interface {
	Flush(ctx context.Context) error
}

// MergeSink is implemented by sinks that want profile-merge records
// (Batch.Merges). The runner calls WriteMerges after Write for the same batch.
type MergeSink interface {
	WriteMerges(ctx context.Context, merges []Merge) error
}

// EventTaker is implemented by sinks that may decline events, such as a
// sink for control records only. When TakesEvents is false the runner
// neither writes nor counts events for that sink.
type EventTaker interface {
	TakesEvents() bool
}

// RecordSink is implemented by sinks that carry control records
// (Batch.Records). WantsRecord says which types; WriteRecords returns once
// the records are durably handed over.
type RecordSink interface {
	WantsRecord(typ string) bool
	WriteRecords(ctx context.Context, recs []Record) error
}
