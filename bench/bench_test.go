package bench

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/ingest"
)

// benchCorpus holds 20,000 records, or BENCH_CORPUS of them (e.g.
// 1000000 for a live-like stream in BenchmarkPipelineConsent, as
// `cdpstream bench -corpus`).
var benchCorpus = NewCorpus(corpusSize(), GenConfig{Seed: 1, MalformedShare: 0.01})

func corpusSize() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_CORPUS")); err == nil && n > 0 {
		return n
	}
	return 20000
}

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

// TestRunCountInterleaves: with Count 3 every selected workload runs three
// times, in turn, each run its own result, and the ratios are between the
// medians of the runs.
func TestRunCountInterleaves(t *testing.T) {
	rep, err := Run(context.Background(), Options{Events: 20_000, Corpus: 20_000, Dir: t.TempDir(), Only: "PipelineInMemIdentity", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var off, on []float64
	for _, r := range rep.Results {
		names = append(names, r.Name)
		switch r.Name {
		case "PipelineInMemIdentity":
			off = append(off, r.EventsPerSec)
		case "PipelineInMemIdentityConsent":
			on = append(on, r.EventsPerSec)
		}
		if r.Events != 20_000 {
			t.Errorf("%s processed %d events, want 20000", r.Name, r.Events)
		}
	}
	want := []string{"PipelineInMemIdentity", "PipelineInMemIdentityConsent", "PipelineInMemIdentity", "PipelineInMemIdentityConsent", "PipelineInMemIdentity", "PipelineInMemIdentityConsent"}
	if !slices.Equal(names, want) {
		t.Fatalf("results %v, want %v", names, want)
	}
	got := rep.Ratios["pipeline_consent_on_vs_off_events_per_sec"]
	if r := median(on) / median(off); got != r {
		t.Errorf("consent ratio %v, want the ratio of the medians %v (off %v, on %v)", got, r, off, on)
	}
	if _, ok := rep.Ratios["pipeline_consent_on_vs_off_events_per_cpu_sec"]; !ok {
		t.Error("no per-CPU consent ratio")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(slices.Clone(c.xs)); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}
