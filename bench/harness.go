package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/engine/sink"
	"github.com/cdpstream/cdpstream/ingest"
)

// Options selects and sizes the harness's workloads.
type Options struct {
	// Events per in-memory workload. Default 1,000,000.
	Events int
	// KafkaEvents for the run through the embedded broker; 0 skips it.
	KafkaEvents int
	// Corpus is the number of distinct generated records (cycled). Default 100,000.
	Corpus int
	// IdentityIDs sizes the identity resolution run (identifiers loaded
	// before resolving); 0 skips it.
	IdentityIDs int
	// BitmapProfiles sizes the consent bitmap memory figure; 0 skips it.
	BitmapProfiles int
	// ContainsProfiles sizes the HTTP contains load run (profiles in the
	// universe; 0 skips it).
	ContainsProfiles int
	// SetExprUniverse sizes the audience set-expression count (three
	// bitmaps over this many profile ids); 0 skips it.
	SetExprUniverse int
	// Dir holds the Pebble stores of the runs that need one; default a
	// temporary directory, removed afterwards.
	Dir string
	// Only runs the workloads whose name contains this string ("" = all).
	Only string
	// Progress receives a progress bar; nil for none.
	Progress io.Writer
	// Count runs the stream workloads (in memory and Kafka) this many
	// times, interleaved (a, b, c, a, b, c, ...), so a neighbour's burst
	// hits one run of each rather than every run of one; each run is a
	// result line and ratios are taken between medians. Default 1.
	Count int
	// SerialStages runs the pipelines' stages on one goroutine
	// (engine.RunnerConfig.SerialStages), to price the per-stage
	// goroutines.
	SerialStages bool
}

// Result is one workload's measurement.
type Result struct {
	Name            string  `json:"name"`
	Events          int64   `json:"events"`
	Bytes           int64   `json:"bytes"`
	Seconds         float64 `json:"seconds"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	EventsPerSec    float64 `json:"events_per_sec"`
	EventsPerCPUSec float64 `json:"events_per_cpu_sec"`
	NsPerEvent      float64 `json:"ns_per_event"`
	MBPerSec        float64 `json:"mb_per_sec"`
	AllocsPerEvent  float64 `json:"allocs_per_event"`
	BytesPerEvent   float64 `json:"alloc_bytes_per_event"`
	// Extra holds workload-specific figures, by unit (e.g. "B/identifier").
	Extra map[string]float64 `json:"extra,omitempty"`
	// Reported marks a rate the workload measured itself (no CPU, bytes or
	// allocation figures).
	Reported bool `json:"reported,omitempty"`
}

// Report is what `cdpstream bench -json` writes.
type Report struct {
	Machine struct {
		CPUs   int    `json:"cpus"`
		GOOS   string `json:"goos"`
		GOARCH string `json:"goarch"`
		Go     string `json:"go"`
	} `json:"machine"`
	Started time.Time          `json:"started"`
	Results []Result           `json:"results"`
	Ratios  map[string]float64 `json:"ratios"`
}

// workload runs once and returns the events and input bytes it processed.
// setup, if set, runs before the clock starts and returns a cleanup.
type workload struct {
	name  string
	setup func(ctx context.Context) (cleanup func(), err error)
	// run processes the events; it may call finished (on its own
	// goroutine) when the work is done but before its teardown.
	run func(ctx context.Context, progress func(done int64), finished func()) (events, bytes int64, err error)
	n   int64
}

// Run runs the workloads in order, on one machine in one process, so their
// ratios are comparable, and returns the report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Events <= 0 {
		opts.Events = 1_000_000
	}
	if opts.Corpus <= 0 {
		opts.Corpus = 100_000
	}
	opts.Count = max(opts.Count, 1)
	rep := &Report{Started: time.Now().UTC(), Ratios: map[string]float64{}}
	rep.Machine.CPUs, rep.Machine.GOOS, rep.Machine.GOARCH, rep.Machine.Go = runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version()

	corpus := NewCorpus(min(opts.Corpus, max(opts.Events, opts.KafkaEvents)), GenConfig{Seed: 1, MalformedShare: 0.01})
	ws := []workload{
		{name: "DecodeBatch", n: int64(opts.Events), run: func(_ context.Context, p func(int64), _ func()) (int64, int64, error) {
			return decodeBatch(corpus, opts.Events, p)
		}},
		{name: "PipelineInMem", n: int64(opts.Events), run: func(ctx context.Context, p func(int64), _ func()) (int64, int64, error) {
			b, err := ingest.NewBatcher(ingest.DecodeConfig{}, ingest.BatchConfig{}, engine.NewPoolAllocator())
			if err != nil {
				return 0, 0, err
			}
			return runPipeline(ctx, NewMemSource(corpus, b, opts.Events), p)
		}},
		{name: "BaselineJSONInMem", n: int64(opts.Events), run: func(ctx context.Context, p func(int64), _ func()) (int64, int64, error) {
			return runPipeline(ctx, NewNaiveSource(corpus, opts.Events, 4096), p)
		}},
		{name: "PipelineInMemIdentity", n: int64(opts.Events), run: func(ctx context.Context, p func(int64), _ func()) (int64, int64, error) {
			dir, err := os.MkdirTemp(opts.Dir, "identity-pipeline-")
			if err != nil {
				return 0, 0, err
			}
			defer os.RemoveAll(dir)
			stage, closeStage, err := identityStage(dir)
			if err != nil {
				return 0, 0, err
			}
			defer closeStage()
			b, err := ingest.NewBatcher(ingest.DecodeConfig{}, ingest.BatchConfig{}, engine.NewPoolAllocator())
			if err != nil {
				return 0, 0, err
			}
			return runPipeline(ctx, NewMemSource(corpus, b, opts.Events), p, stage)
		}},
		{name: "PipelineInMemIdentityConsent", n: int64(opts.Events), run: func(ctx context.Context, p func(int64), _ func()) (int64, int64, error) {
			return runConsentPipeline(ctx, opts, corpus, p)
		}},
	}
	if opts.KafkaEvents > 0 {
		var brokers []string
		ws = append(ws, workload{name: "PipelineKafka", n: int64(opts.KafkaEvents),
			setup: func(ctx context.Context) (func(), error) {
				cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "bench.in"), kfake.SeedTopics(3, "bench.out"))
				if err != nil {
					return nil, err
				}
				brokers = cluster.ListenAddrs()
				return cluster.Close, preload(ctx, brokers, corpus, opts.KafkaEvents)
			},
			run: func(ctx context.Context, p func(int64), finished func()) (int64, int64, error) {
				return runKafka(ctx, brokers, corpus, opts.KafkaEvents, p, finished)
			}})
	}
	for range opts.Count {
		for _, w := range ws {
			if opts.Only != "" && !strings.Contains(w.name, opts.Only) {
				continue
			}
			r, err := measure(ctx, w, opts.Progress)
			if err != nil {
				return rep, fmt.Errorf("%s: %w", w.name, err)
			}
			rep.Results = append(rep.Results, r)
		}
	}
	if opts.IdentityIDs > 0 && (opts.Only == "" || strings.Contains("IdentityResolveWarm IdentityResolveCold IdentityLoad", opts.Only)) {
		rs, err := runIdentity(ctx, opts)
		if err != nil {
			return rep, fmt.Errorf("identity: %w", err)
		}
		rep.Results = append(rep.Results, rs...)
	}
	get := func(name string) *Result { return medianOf(rep.Results, name) }
	if p, b := get("PipelineInMem"), get("BaselineJSONInMem"); p != nil && b != nil {
		rep.Ratios["pipeline_vs_baseline_events_per_sec"] = p.EventsPerSec / b.EventsPerSec
		rep.Ratios["pipeline_vs_baseline_events_per_cpu_sec"] = p.EventsPerCPUSec / b.EventsPerCPUSec
	}
	if p, i := get("PipelineInMem"), get("PipelineInMemIdentity"); p != nil && i != nil {
		rep.Ratios["pipeline_identity_vs_without_events_per_sec"] = i.EventsPerSec / p.EventsPerSec
	}
	if i, c := get("PipelineInMemIdentity"), get("PipelineInMemIdentityConsent"); i != nil && c != nil {
		rep.Ratios["pipeline_consent_on_vs_off_events_per_sec"] = c.EventsPerSec / i.EventsPerSec
		rep.Ratios["pipeline_consent_on_vs_off_events_per_cpu_sec"] = c.EventsPerCPUSec / i.EventsPerCPUSec
	}
	if opts.BitmapProfiles > 0 && (opts.Only == "" || strings.Contains("ConsentBitmapMemory", opts.Only)) {
		rep.Results = append(rep.Results, bitmapMemory(opts.BitmapProfiles))
	}
	if opts.ContainsProfiles > 0 && (opts.Only == "" || strings.Contains("AudienceContainsHTTP AudienceMemberExportHTTP", opts.Only)) {
		// The load generator shares the machine's cores with the server:
		// 2 clients keep both busy without queueing, 16 show the tail under
		// contention.
		for _, clients := range []int{2, 16} {
			r, err := ContainsLoad(ctx, opts.Dir, opts.ContainsProfiles, clients, 100_000)
			if err != nil {
				return rep, fmt.Errorf("contains load: %w", err)
			}
			rep.Results = append(rep.Results, r)
		}
		r, err := MemberExport(ctx, opts.Dir, opts.ContainsProfiles, 100_000)
		if err != nil {
			return rep, fmt.Errorf("member export: %w", err)
		}
		rep.Results = append(rep.Results, r)
	}
	if opts.SetExprUniverse > 0 && (opts.Only == "" || strings.Contains("AudienceSetExprCount", opts.Only)) {
		r, err := setExpr(opts.SetExprUniverse)
		if err != nil {
			return rep, fmt.Errorf("set expression: %w", err)
		}
		rep.Results = append(rep.Results, r)
	}
	return rep, nil
}

// medianOf returns the results named name reduced to their median
// events/s and median events/CPU-s (each taken on its own), or nil if there
// are none. With one run it is that run.
func medianOf(rs []Result, name string) *Result {
	var perSec, perCPU []float64
	var m *Result
	for i := range rs {
		if rs[i].Name != name {
			continue
		}
		if m == nil {
			c := rs[i]
			m = &c
		}
		perSec = append(perSec, rs[i].EventsPerSec)
		perCPU = append(perCPU, rs[i].EventsPerCPUSec)
	}
	if m != nil {
		m.EventsPerSec, m.EventsPerCPUSec = median(perSec), median(perCPU)
	}
	return m
}

// median of xs (the mean of the middle two for an even count); it sorts xs.
func median(xs []float64) float64 {
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func measure(ctx context.Context, w workload, progress io.Writer) (Result, error) {
	if w.setup != nil {
		cleanup, err := w.setup(ctx)
		if cleanup != nil {
			defer cleanup()
		}
		if err != nil {
			return Result{}, fmt.Errorf("setup: %w", err)
		}
	}
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, t0 := cpuTime(), time.Now()
	bar := newBar(progress, w.name, w.n)
	var el, cpu time.Duration
	events, bytes, err := w.run(ctx, bar.set, func() {
		// Every event is through: stop the clock before the teardown
		// (closing clients, leaving the group), which is not throughput.
		el, cpu = time.Since(t0), cpuTime()-cpu0
	})
	if el == 0 {
		el, cpu = time.Since(t0), cpuTime()-cpu0
	}
	bar.done()
	runtime.ReadMemStats(&ms1)
	if err != nil {
		return Result{}, err
	}
	if events == 0 {
		return Result{}, errors.New("processed no events")
	}
	r := Result{Name: w.name, Events: events, Bytes: bytes, Seconds: el.Seconds(), CPUSeconds: cpu.Seconds()}
	r.EventsPerSec = float64(events) / r.Seconds
	if r.CPUSeconds > 0 {
		r.EventsPerCPUSec = float64(events) / r.CPUSeconds
	}
	r.NsPerEvent = float64(el.Nanoseconds()) / float64(events)
	r.MBPerSec = float64(bytes) / 1e6 / r.Seconds
	r.AllocsPerEvent = float64(ms1.Mallocs-ms0.Mallocs) / float64(events)
	r.BytesPerEvent = float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(events)
	return r, nil
}

// decodeBatch measures decode + Arrow append on one goroutine.
func decodeBatch(c *Corpus, n int, progress func(int64)) (int64, int64, error) {
	b, err := ingest.NewBatcher(ingest.DecodeConfig{}, ingest.BatchConfig{}, engine.NewPoolAllocator())
	if err != nil {
		return 0, 0, err
	}
	defer b.Release()
	var bytes int64
	for i := 0; i < n; i++ {
		j := i % len(c.Records)
		bytes += int64(len(c.Records[j]))
		if b.Add(c.Records[j], c.Keys[j], engine.Position{Topic: "mem", Offset: int64(i)}, -1, time.Time{}) {
			b.Flush().Release()
			progress(int64(i + 1))
		}
	}
	if fb := b.Flush(); fb != nil {
		fb.Release()
	}
	return int64(n), bytes, nil
}

// runPipeline runs src through the runner into a discarding sink.
func runPipeline(ctx context.Context, src engine.Source, progress func(int64), stages ...engine.Stage) (int64, int64, error) {
	defer src.Close()
	d := &DiscardSink{}
	dead := &DiscardDead{}
	r, err := engine.NewRunner(engine.RunnerConfig{}, src, stages, []engine.SinkSpec{{Sink: d}}, dead, nil, nil)
	if err != nil {
		return 0, 0, err
	}
	stop := pollProgress(func() int64 { return int64(r.Stats().Received) }, progress)
	err = r.Run(ctx)
	stop()
	st := r.Stats()
	if st.Received == 0 {
		return 0, 0, errors.New("runner received nothing")
	}
	return int64(st.Received), d.Bytes, err
}

func pollProgress(get func() int64, progress func(int64)) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				progress(get())
			}
		}
	}()
	return func() { close(done) }
}

// runKafka runs the real Kafka source and a real Kafka sink (lz4) against
// the embedded broker that setup pre-loaded with n records, until every
// record is consumed and committed. The broker runs in this process, so its
// CPU time is part of the measurement.
func runKafka(ctx context.Context, brokers []string, c *Corpus, n int, progress func(int64), finished func()) (int64, int64, error) {
	b, err := ingest.NewBatcher(ingest.DecodeConfig{}, ingest.BatchConfig{}, engine.NewPoolAllocator())
	if err != nil {
		return 0, 0, err
	}
	src, err := ingest.NewKafkaSource(ingest.KafkaConfig{Client: sink.KafkaClientConfig{Brokers: brokers}, Group: "bench", Topics: []string{"bench.in"}}, b, nil, nil)
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	out, err := sink.New(sink.Config{Name: "kafka", Kafka: &sink.KafkaConfig{Topic: "bench.out", Compression: "lz4", Client: sink.KafkaClientConfig{Brokers: brokers}}})
	if err != nil {
		return 0, 0, err
	}
	defer out.Close()
	r, err := engine.NewRunner(engine.RunnerConfig{}, src, nil, []engine.SinkSpec{{Sink: out}}, &DiscardDead{}, nil, nil)
	if err != nil {
		return 0, 0, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(runCtx) }()
	for {
		st := r.Stats()
		progress(int64(st.Received))
		if st.Received >= uint64(n) && st.Committed == st.Batches {
			finished()
			break
		}
		select {
		case err := <-errc:
			return int64(st.Received), 0, fmt.Errorf("pipeline stopped early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-errc; err != nil {
		return 0, 0, err
	}
	var bytes int64
	for i := 0; i < n; i++ {
		bytes += int64(len(c.Records[i%len(c.Records)]))
	}
	return int64(n), bytes, nil
}

func preload(ctx context.Context, brokers []string, c *Corpus, n int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("bench.in"), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	var perr error
	for i := 0; i < n; i++ {
		j := i % len(c.Records)
		cl.Produce(ctx, &kgo.Record{Key: c.Keys[j], Value: c.Records[j]}, func(_ *kgo.Record, err error) {
			if err != nil && perr == nil {
				perr = err
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	return perr
}

// WriteBenchstat writes one benchstat-format line per result.
func (r *Report) WriteBenchstat(w io.Writer) {
	fmt.Fprintf(w, "goos: %s\ngoarch: %s\npkg: github.com/cdpstream/cdpstream/bench\ncpu-count: %d\n", r.Machine.GOOS, r.Machine.GOARCH, r.Machine.CPUs)
	for _, x := range r.Results {
		if x.Reported {
			fmt.Fprintf(w, "BenchmarkE2E/%s-%d\t%d\t%.1f ns/op\t%.0f events/s",
				x.Name, runtime.GOMAXPROCS(0), x.Events, x.NsPerEvent, x.EventsPerSec)
		} else {
			fmt.Fprintf(w, "BenchmarkE2E/%s-%d\t%d\t%.1f ns/op\t%.2f MB/s\t%.0f events/s\t%.0f events/cpu-s\t%.2f allocs/op\t%.0f B/op",
				x.Name, runtime.GOMAXPROCS(0), x.Events, x.NsPerEvent, x.MBPerSec, x.EventsPerSec, x.EventsPerCPUSec, x.AllocsPerEvent, x.BytesPerEvent)
		}
		units := make([]string, 0, len(x.Extra))
		for u := range x.Extra {
			units = append(units, u)
		}
		sort.Strings(units)
		for _, u := range units {
			fmt.Fprintf(w, "\t%.4g %s", x.Extra[u], u)
		}
		fmt.Fprintln(w)
	}
	keys := make([]string, 0, len(r.Ratios))
	for k := range r.Ratios {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "# ratio %s = %.2fx\n", k, r.Ratios[k])
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// bar is a one-line progress bar on a terminal or log.
type bar struct {
	w     io.Writer
	name  string
	total int64
	last  time.Time
}

func newBar(w io.Writer, name string, total int64) *bar { return &bar{w: w, name: name, total: total} }

func (b *bar) set(done int64) {
	if b.w == nil || time.Since(b.last) < 200*time.Millisecond {
		return
	}
	b.last = time.Now()
	b.draw(done)
}

func (b *bar) draw(done int64) {
	const width = 30
	f := float64(done) / float64(max(b.total, 1))
	f = min(f, 1)
	n := int(f * width)
	fmt.Fprintf(b.w, "\r%-18s [%s%s] %3.0f%%", b.name, strings.Repeat("=", n), strings.Repeat(" ", width-n), f*100)
}

func (b *bar) done() {
	if b.w != nil {
		b.draw(b.total)
		fmt.Fprintln(b.w)
	}
}
