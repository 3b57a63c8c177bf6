package bench

import (
	"context"
	"io"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/ingest"
)

// Corpus is a pre-generated set of records, so benchmarks measure the
// pipeline and not the generator.
type Corpus struct {
	Records [][]byte
	Keys    [][]byte
	Bytes   int64
}

// NewCorpus generates n records with cfg.
func NewCorpus(n int, cfg GenConfig) *Corpus {
	g := NewGenerator(cfg)
	c := &Corpus{Records: make([][]byte, n), Keys: make([][]byte, n)}
	for i := range c.Records {
		rec, key, _ := g.Next(nil)
		c.Records[i], c.Keys[i] = rec, []byte(key)
		c.Bytes += int64(len(rec))
	}
	return c
}

// MemSource replays a corpus through a Batcher, as the Kafka source does
// with fetched records, for n records in total (cycling the corpus).
type MemSource struct {
	c   *Corpus
	b   *ingest.Batcher
	n   int
	pos int
}

// NewMemSource returns a source of n records from c. b is owned by the
// source.
func NewMemSource(c *Corpus, b *ingest.Batcher, n int) *MemSource {
	return &MemSource{c: c, b: b, n: n}
}

// Next implements engine.Source.
func (s *MemSource) Next(ctx context.Context) (*engine.Batch, error) {
	for s.pos < s.n {
		i := s.pos % len(s.c.Records)
		s.pos++
		if s.b.Add(s.c.Records[i], s.c.Keys[i], engine.Position{Topic: "mem", Offset: int64(s.pos - 1)}, -1, time.Time{}) {
			return s.b.Flush(), nil
		}
		if s.pos&1023 == 0 && ctx.Err() != nil {
			return s.b.Flush(), ctx.Err()
		}
	}
	return s.b.Flush(), io.EOF
}

// Commit implements engine.Source.
func (s *MemSource) Commit(context.Context, []engine.Offset) error { return nil }

// Close implements engine.Source.
func (s *MemSource) Close() error { s.b.Release(); return nil }

// DiscardSink reads every selected row's raw bytes (as a real sink must)
// and drops them. It counts rows and bytes.
type DiscardSink struct {
	Rows, Bytes int64
}

// Name implements engine.Sink.
func (d *DiscardSink) Name() string { return "discard" }

// Write implements engine.Sink.
func (d *DiscardSink) Write(_ context.Context, b *engine.Batch, sel []int) error {
	raw := b.Rec.Column(engine.ColRaw).(*array.Binary)
	if sel == nil {
		for i := 0; i < raw.Len(); i++ {
			d.Bytes += int64(len(raw.Value(i)))
		}
		d.Rows += int64(raw.Len())
		return nil
	}
	for _, i := range sel {
		d.Bytes += int64(len(raw.Value(i)))
	}
	d.Rows += int64(len(sel))
	return nil
}

// Close implements engine.Sink.
func (d *DiscardSink) Close() error { return nil }

// DiscardDead counts dead letters.
type DiscardDead struct{ N int64 }

// WriteDead implements engine.DeadLetterSink.
func (d *DiscardDead) WriteDead(_ context.Context, dl []engine.DeadLetter) error {
	d.N += int64(len(dl))
	return nil
}

// Close implements engine.DeadLetterSink.
func (d *DiscardDead) Close() error { return nil }
