package identity

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
)

var (
	benchDir  string
	benchEnvs = map[int]*BenchEnv{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, e := range benchEnvs {
		e.Close()
	}
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// loadedEnv returns a store loaded with n identifiers, shared by the
// benchmarks of one run.
func loadedEnv(b *testing.B, n int) *BenchEnv {
	if e := benchEnvs[n]; e != nil {
		return e
	}
	if benchDir == "" {
		var err error
		if benchDir, err = os.MkdirTemp("", "identity-bench-"); err != nil {
			b.Fatal(err)
		}
	}
	e, err := OpenBenchEnv(fmt.Sprintf("%s/%d", benchDir, n), int64(n)*300+64<<20)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Load(context.Background(), n, 4096, nil); err != nil {
		b.Fatal(err)
	}
	benchEnvs[n] = e
	return e
}

// BenchmarkResolve resolves track events naming two known identifiers, with
// the identity caches warm or dropped before every batch (cold: every
// lookup reads Pebble). Each batch of 4096 rows includes its synced commit.
func BenchmarkResolve(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		for _, cold := range []bool{false, true} {
			name := fmt.Sprintf("warm/ids_%.0e", float64(n))
			if cold {
				name = fmt.Sprintf("cold/ids_%.0e", float64(n))
			}
			b.Run(name, func(b *testing.B) {
				env := loadedEnv(b, n)
				batches := env.EventBatches(rand.New(rand.NewPCG(uint64(b.N), 1)), b.N, 4096)
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				for i, batch := range batches {
					if cold {
						b.StopTimer()
						env.g.DropCaches()
						b.StartTimer()
					}
					if err := env.st.Process(ctx, batch); err != nil {
						b.Fatal(err)
					}
					batch.Release()
					batches[i] = nil
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkLoad creates profiles of 4 new identifiers each, and reports
// the bytes on disk per identifier after compaction.
func BenchmarkLoad(b *testing.B) {
	e, err := OpenBenchEnv(b.TempDir(), 256<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.ReportAllocs()
	b.ResetTimer()
	if err := e.Load(context.Background(), b.N, 4096, nil); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "identifiers/s")
	if b.N >= 10000 {
		n, err := e.DiskBytes()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(n)/float64(e.people*4), "disk-B/identifier")
	}
}

func BenchmarkNormalize(b *testing.B) {
	in := "  Jane.Doe+News@Example.COM "
	dst := make([]byte, 0, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		dst, _ = normEmail(dst[:0], in)
	}
}

func BenchmarkHash(b *testing.B) {
	g := newTestGraph(b, testConfig()).g
	v := []byte("jane.doe@example.com")
	var h hash
	b.ReportAllocs()
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		g.hashInto(&h, TypeEmail, v)
	}
}

// TestWarmAllocs: resolving a warm batch allocates per batch, not per event.
func TestWarmAllocs(t *testing.T) {
	e, err := OpenBenchEnv(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	if err := e.Load(ctx, 4000, 1024, nil); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	batches := e.EventBatches(r, 1024*12, 1024)
	if err := e.Resolve(ctx, batches[:2]); err != nil {
		t.Fatal(err)
	}
	i := 2
	allocs := testing.AllocsPerRun(8, func() {
		if err := e.st.Process(ctx, batches[i]); err != nil {
			t.Fatal(err)
		}
		batches[i].Release()
		i++
	})
	// Per batch: the output column, the record, the Pebble batch, metrics.
	if allocs > 100 {
		t.Fatalf("%.0f allocations per 1024-row warm batch", allocs)
	}
	t.Logf("%.0f allocations per 1024-row warm batch", allocs)
}

// TestRunBench runs the harness entry point small; IDENTITY_BENCH_IDS=N
// runs it at N identifiers (e.g. 10000000) and logs the result.
func TestRunBench(t *testing.T) {
	n, events := 20_000, 20_000
	if s := os.Getenv("IDENTITY_BENCH_IDS"); s != "" {
		if _, err := fmt.Sscan(s, &n); err != nil {
			t.Fatal(err)
		}
		events = 1 << 20
	}
	res, err := RunBench(context.Background(), BenchConfig{Dir: t.TempDir(), Identifiers: n, Events: events})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Profiles != n/4 || res.WarmPerSec <= 0 || res.ColdPerSec <= 0 || res.BytesPerIdentifier < 16 {
		t.Fatalf("implausible result %+v", res)
	}
}
