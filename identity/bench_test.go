package identity

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/cdpstream/cdpstream/engine"
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
	for _, e := range suppressEnvs {
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

// BenchmarkSuppressCheck resolves warm batches of track events (user_id
// and anonymous_id of a random person, as BenchmarkResolve) on a store of
// 50k people (200k identifiers): set_0 with nothing suppressed, set_1e+05
// with the other 25k people's 100k identifier hashes suppressed and no
// event of theirs (the cost of the ingest check when it finds nothing),
// and set_1e+05_hit_1pct where 1% of events are theirs and are dropped
// (the batch's record is rebuilt without them). ns/op is per event.
func BenchmarkSuppressCheck(b *testing.B) {
	for _, c := range []struct {
		name string
		supp bool
		hit  float64
	}{{"set_0", false, 0}, {"set_1e+05", true, 0}, {"set_1e+05_hit_1pct", true, 0.01}} {
		b.Run(c.name, func(b *testing.B) {
			env := suppressEnv(b, c.supp)
			r := rand.New(rand.NewPCG(uint64(b.N), 2))
			var batches []*engine.Batch
			for n := b.N; n > 0; n -= 4096 {
				for i := 0; i < min(n, 4096); i++ {
					p := r.IntN(suppressPeople / 2)
					if r.Float64() < c.hit {
						p += suppressPeople / 2
					}
					ps := strconv.Itoa(p)
					env.appendRow(engine.TypeTrack, "u"+ps, "a"+ps, nil)
				}
				batches = append(batches, env.flush())
			}
			ctx := context.Background()
			dropped := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i, batch := range batches {
				if err := env.st.Process(ctx, batch); err != nil {
					b.Fatal(err)
				}
				for _, d := range batch.Drops {
					dropped += d.Rows
				}
				batch.Release()
				batches[i] = nil
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(dropped)/float64(b.N), "dropped/event")
		})
	}
}

// suppressPeople is the size of the suppression benchmark's store.
const suppressPeople = 50_000

var suppressEnvs = map[bool]*BenchEnv{}

// suppressEnv returns a store of suppressPeople people, with the second
// half suppressed when supp is set.
func suppressEnv(b *testing.B, supp bool) *BenchEnv {
	if e := suppressEnvs[supp]; e != nil {
		return e
	}
	if benchDir == "" {
		var err error
		if benchDir, err = os.MkdirTemp("", "identity-bench-"); err != nil {
			b.Fatal(err)
		}
	}
	e, err := OpenBenchEnv(fmt.Sprintf("%s/supp-%v", benchDir, supp), suppressPeople*4*300+64<<20)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Load(ctx, suppressPeople*4, 4096, nil); err != nil {
		b.Fatal(err)
	}
	if supp {
		pids := make([]uint32, 0, suppressPeople/2)
		for p := suppressPeople / 2; p < suppressPeople; p++ {
			pids = append(pids, uint32(p+1)) // person p is profile p+1
		}
		if _, err := e.g.Suppress(ctx, pids); err != nil {
			b.Fatal(err)
		}
		if n := len(e.g.supp); n != suppressPeople*2 {
			b.Fatalf("%d hashes suppressed, want %d", n, suppressPeople*2)
		}
	}
	suppressEnvs[supp] = e
	return e
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
