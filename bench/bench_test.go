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

// BenchmarkPipelineConsent prices the consent stage as the harness's
// PipelineInMemIdentity and PipelineInMemIdentityConsent do (identity on in
// both; on: the decoder's cut-out, the stage, a sink policy), each as a
// sub-benchmark, so each can be profiled on its own
// (-bench 'PipelineConsent/on' -cpuprofile).
func BenchmarkPipelineConsent(b *testing.B) {
	b.Run("off", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(avgSize(benchCorpus))
		stage, closeStage, err := identityStage(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer closeStage()
		bt, err := ingest.NewBatcher(ingest.DecodeConfig{}, ingest.BatchConfig{}, engine.NewPoolAllocator())
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		if n, _, err := runPipeline(context.Background(), NewMemSource(benchCorpus, bt, b.N), func(int64) {}, stage); err != nil || n != int64(b.N) {
			b.Fatalf("processed %d of %d: %v", n, b.N, err)
		}
	})
	b.Run("on", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(avgSize(benchCorpus))
		if n, _, err := consentPipeline(context.Background(), Options{Dir: b.TempDir(), Events: b.N}, benchCorpus, func(int64) {}, b.N >= 10000); err != nil || n != int64(b.N) {
			b.Fatalf("processed %d of %d: %v", n, b.N, err)
		}
	})
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
