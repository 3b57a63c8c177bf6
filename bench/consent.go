package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/ingest"
	"github.com/cdpstream/cdpstream/segments"
	"github.com/cdpstream/cdpstream/segments/audience"
)

// runConsentPipeline is PipelineInMemIdentity plus the consent stage and a
// sink whose policy needs analytics consent: the cost of consent is the
// ratio between the two.
func runConsentPipeline(ctx context.Context, opts Options, c *Corpus, progress func(int64)) (int64, int64, error) {
	return consentPipeline(ctx, opts, c, progress, true)
}

// consentPipeline is runConsentPipeline; check makes it fail unless the
// policy both kept and dropped rows (a go test benchmark's first run of
// one event cannot).
func consentPipeline(ctx context.Context, opts Options, c *Corpus, progress func(int64), check bool) (int64, int64, error) {
	dir, err := os.MkdirTemp(opts.Dir, "consent-pipeline-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	db, err := engine.OpenStore(dir, engine.StoreConfig{}, nil)
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	resolve, err := identityStageOn(db)
	if err != nil {
		return 0, 0, err
	}
	// The generator's Segment categoryPreferences carry analytics and
	// advertising (and necessary) for every event.
	ccfg := segments.Config{Purposes: []segments.Purpose{
		{Name: "analytics", Bit: 0, Default: "denied", Segment: []string{"analytics"}},
		{Name: "advertising", Bit: 1, Default: "denied", Segment: []string{"advertising"}},
	}}
	ccfg.Defaults()
	// As cmd wires it: one buffer pool for the batcher's columns and the
	// consent stage's consent_mask.
	pool := engine.NewPoolAllocator()
	cs, err := segments.New(ccfg, db, nil, segments.WithAllocator(pool))
	if err != nil {
		return 0, 0, err
	}
	pol, err := segments.NewPolicy(segments.PolicyConfig{Name: "discard", Purposes: []string{"analytics"}, Require: "all", Unknown: "deny", DecideBy: "profile"}, cs)
	if err != nil {
		return 0, 0, err
	}
	// As cmd wires it: the decoder cuts out the consent fields.
	b, err := ingest.NewBatcher(ingest.DecodeConfig{ConsentPaths: ccfg.Paths()}, ingest.BatchConfig{}, pool)
	if err != nil {
		return 0, 0, err
	}
	src := NewMemSource(c, b, opts.Events)
	defer src.Close()
	d := &DiscardSink{}
	r, err := engine.NewRunner(engine.RunnerConfig{SerialStages: opts.SerialStages}, src, []engine.Stage{resolve, cs}, []engine.SinkSpec{{Sink: d, Filter: pol}}, &DiscardDead{}, nil, nil)
	if err != nil {
		return 0, 0, err
	}
	stop := pollProgress(func() int64 { return int64(r.Stats().Received) }, progress)
	err = r.Run(ctx)
	stop()
	st := r.Stats()
	if check && (st.Dropped[0] == 0 || st.Sent[0] == 0) {
		return 0, 0, fmt.Errorf("the policy kept %d and dropped %d: not a consent workload", st.Sent[0], st.Dropped[0])
	}
	return int64(st.Received), d.Bytes, err
}

// bitmapMemory reports the consent bitmaps' size for n profiles.
func bitmapMemory(n int) Result {
	start := time.Now()
	ser, heap := segments.BitmapMemory(n)
	el := time.Since(start)
	return Result{Name: fmt.Sprintf("ConsentBitmapMemory/profiles=%d", n), Events: int64(n), Seconds: el.Seconds(),
		NsPerEvent: float64(el.Nanoseconds()) / float64(n), EventsPerSec: float64(n) / el.Seconds(), Reported: true,
		Extra: map[string]float64{"serialized-B": float64(ser), "heap-B": float64(heap), "B/profile": float64(heap) / float64(n)}}
}

// setExpr times `vip AND consent:advertising AND NOT churned` over three
// bitmaps of a universe of profiles (audience.BenchSetExpr).
func setExpr(universe int) (Result, error) {
	r, err := audience.BenchSetExpr(universe, 21)
	if err != nil {
		return Result{}, err
	}
	ns := float64(r.CountP50.Nanoseconds())
	return Result{Name: fmt.Sprintf("AudienceSetExprCount/universe=%d", universe), Events: int64(r.Runs), NsPerEvent: ns,
		EventsPerSec: 1e9 / ns, Seconds: ns * float64(r.Runs) / 1e9, Reported: true,
		Extra: map[string]float64{"p99-ms": float64(r.CountP99.Microseconds()) / 1000, "p50-ms": ns / 1e6,
			"eval-p50-ms": float64(r.EvalP50.Microseconds()) / 1000, "count": float64(r.Count)}}, nil
}
