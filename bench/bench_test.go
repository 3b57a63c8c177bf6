package bench

import (
	"context"
	"testing"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/ingest"
)

var benchCorpus = NewCorpus(20000, GenConfig{Seed: 1, MalformedShare: 0.01})

func avgSize(c *Corpus) int64 { return c.Bytes / int64(len(c.Records)) }

// BenchmarkPipelineInMem runs b.N generated events through the real
// Batcher, runner and a sink that reads every event's bytes.
func BenchmarkPipelineInMem(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(avgSize(benchCorpus))
	bt, err := ingest.NewBatcher(ingest.DecodeConfig{}, ingest.BatchConfig{}, engine.NewPoolAllocator())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	n, _, err := runPipeline(context.Background(), NewMemSource(benchCorpus, bt, b.N), func(int64) {})
	if err != nil || n != int64(b.N) {
		b.Fatalf("processed %d of %d: %v", n, b.N, err)
	}
}

// BenchmarkBaselineJSONInMem is the same job with encoding/json into a map.
func BenchmarkBaselineJSONInMem(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(avgSize(benchCorpus))
	b.ResetTimer()
	n, _, err := runPipeline(context.Background(), NewNaiveSource(benchCorpus, b.N, 4096), func(int64) {})
	if err != nil || n != int64(b.N) {
		b.Fatalf("processed %d of %d: %v", n, b.N, err)
	}
}

// TestBaselineAgreesWithPipeline makes sure the baseline does the same job:
// the same rows accepted and the same records rejected for the same
// reasons, so the ratio between them compares like with like.
func TestBaselineAgreesWithPipeline(t *testing.T) {
	c := NewCorpus(5000, GenConfig{Seed: 9, MalformedShare: 0.05})
	bt, err := ingest.NewBatcher(ingest.DecodeConfig{}, ingest.BatchConfig{}, engine.NewPoolAllocator())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fast, naive := NewMemSource(c, bt, len(c.Records)), NewNaiveSource(c, len(c.Records), 4096)
	defer fast.Close()
	defer naive.Close()
	collect := func(next func(context.Context) (*batchView, error)) (rows int, reasons map[string]int) {
		reasons = map[string]int{}
		for {
			v, err := next(ctx)
			if v != nil {
				rows += v.rows
				for _, r := range v.reasons {
					reasons[r]++
				}
			}
			if err != nil {
				return
			}
		}
	}
	fr, fReasons := collect(viewOf(fast.Next))
	nr, nReasons := collect(viewOf(naive.Next))
	if fr != nr || fr == 0 {
		t.Fatalf("accepted rows: pipeline %d, baseline %d", fr, nr)
	}
	if len(fReasons) < 5 {
		t.Fatalf("corpus rejected only %v", fReasons)
	}
	for r, n := range fReasons {
		if nReasons[r] != n {
			t.Errorf("reason %s: pipeline %d, baseline %d", r, n, nReasons[r])
		}
	}
}
