package audience

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
)

func TestBenchSetExpr(t *testing.T) {
	res, err := BenchSetExpr(1<<20+17, 5)
	if err != nil {
		t.Fatal(err)
	}
	src := benchSource(1<<20+17, 1)
	e, _ := ParseExpr(res.Expression)
	all, _ := e.Eval(src)
	if res.Count != all.GetCardinality() || res.Count == 0 {
		t.Fatalf("count %d, eval %d", res.Count, all.GetCardinality())
	}
	// 12.5% × 75% × (1 - 3.1%) of the universe, give or take.
	if f := float64(res.Count) / float64(res.Universe); f < 0.085 || f > 0.097 {
		t.Fatalf("count %d is %.3f of the universe", res.Count, f)
	}
	if res.Sizes[1] > uint64(res.Universe) {
		t.Fatalf("a bitmap exceeds the universe: %v", res.Sizes)
	}
}

func BenchmarkSetExprCount(b *testing.B) {
	for _, n := range []int{1e6, 1e7} {
		src := benchSource(n, 1)
		e, _ := ParseExpr("vip AND consent:advertising AND NOT churned")
		b.Run(fmt.Sprintf("items_%.0e/count", float64(n)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Count(src); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("items_%.0e/eval", float64(n)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Eval(src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// containsStore returns a store holding audience "vip" with the vip
// bitmap of benchSource(n).
func containsStore(b *testing.B, n int) *Store {
	s, err := New(Config{}, openDB(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if _, err := s.Create(Definition{ID: "vip", Condition: Condition{Trait: &TraitCond{Path: "vip", Op: "exists"}}}); err != nil {
		b.Fatal(err)
	}
	s.Wait()
	s.mu.Lock()
	s.auds["vip"].members = benchSource(n, 1).sets[Term{Name: "vip"}]
	s.mu.Unlock()
	return s
}

func BenchmarkContains(b *testing.B) {
	for _, n := range []int{1e6, 1e7} {
		s := containsStore(b, n)
		b.Run(fmt.Sprintf("items_%.0e", float64(n)), func(b *testing.B) {
			b.ReportAllocs()
			r := rand.New(rand.NewPCG(1, 2))
			for b.Loop() {
				if _, err := s.Contains("vip", r.Uint32N(uint32(n))); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("items_%.0e/parallel", float64(n)), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(3, 4))
				for pb.Next() {
					if _, err := s.Contains("vip", r.Uint32N(uint32(n))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// benchAudiences defines n audiences mixing trait, windowed event,
// consent and nested conditions.
func benchAudiences(b *testing.B, s *Store, n int) {
	for i := 0; i < n; i++ {
		var c Condition
		switch i % 4 {
		case 0:
			c = Condition{Trait: &TraitCond{Path: "plan", Op: "eq", Value: json.RawMessage(fmt.Sprintf(`"p%d"`, i%7))}}
		case 1:
			mn := int64(2)
			c = Condition{Event: &EventCond{Name: fmt.Sprintf("e%d", i%20), Count: &CountRange{Min: &mn}, Within: "30d"}}
		case 2:
			c = Condition{And: []Condition{
				{Consent: &ConsentCond{Purpose: "advertising", State: StateGranted}},
				{Event: &EventCond{Name: fmt.Sprintf("e%d", i%20), Where: []TraitCond{{Path: "properties.total", Op: "gte", Value: json.RawMessage("50")}}}},
			}}
		default:
			c = Condition{Or: []Condition{{Audience: fmt.Sprintf("a%d", i-3)}, {Trait: &TraitCond{Path: "age", Op: "gt", Value: json.RawMessage("40")}}}}
		}
		if _, err := s.Create(Definition{ID: fmt.Sprintf("a%d", i), Condition: c}); err != nil {
			b.Fatal(err)
		}
	}
	s.Wait()
}

// BenchmarkStage is the cost of audience evaluation on the ingest path: one
// op is a batch of 4096 events (80% track over 20 names, 20% identify) of
// 100k profiles, with 0, 10 and 100 audiences defined, traits sealed.
func BenchmarkStage(b *testing.B) {
	const rows, profiles = 4096, 100_000
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(7, 8))
	batches := make([][]ev, 8)
	var bytes int64
	for i := range batches {
		for j := 0; j < rows; j++ {
			pid := 1 + r.Uint32N(profiles)
			var e ev
			if r.IntN(5) == 0 {
				e = identify(pid, fmt.Sprintf(`{"plan":"p%d","age":%d}`, r.IntN(7), 18+r.IntN(60)))
			} else {
				e = track(pid, fmt.Sprintf("e%d", r.IntN(20)), now.Add(-time.Duration(r.IntN(40*24))*time.Hour),
					fmt.Sprintf(`{"total":%d}`, r.IntN(100)))
			}
			if i == 0 {
				bytes += int64(len(e.raw))
			}
			batches[i] = append(batches[i], e)
		}
	}
	for _, n := range []int{0, 10, 100} {
		b.Run(fmt.Sprintf("audiences_%d", n), func(b *testing.B) {
			cv := newFakeConsent("advertising")
			for pid := uint32(1); pid <= profiles; pid += 2 {
				cv.granted["advertising"].Add(pid)
			}
			// The store cmd/cdpstream opens: bloom filters, block cache.
			db, err := engine.OpenStore(b.TempDir(), engine.StoreConfig{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			// Traits sealed as cmd/cdpstream stores them (the keyring's
			// default cache, 16384 keys, for 100k profiles).
			kr, err := engine.NewKeyring(engine.EncryptionConfig{MasterKey: testMasterKey}, db)
			if err != nil {
				b.Fatal(err)
			}
			s, err := New(Config{}, db, WithConsent(cv), WithClock(func() time.Time { return now }), WithKeyring(kr))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			benchAudiences(b, s, n)
			b.SetBytes(bytes)
			b.ReportAllocs()
			seq := uint64(0)
			i := 0
			for b.Loop() {
				seq++
				bt := makeBatch(seq, batches[i%len(batches)], now)
				i++
				if err := s.Process(context.Background(), bt); err != nil {
					b.Fatal(err)
				}
				bt.Release()
			}
			b.ReportMetric(float64(rows*i)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkLoad is the audience store's start: New reads the definitions,
// every audience's members and the known profiles (keys of the traits
// rows) from Pebble, on disk and compacted as after a restart. AUDIENCE_LOAD_PROFILES
// sets the number of profiles (default 1,000,000), each with about 100
// bytes of traits; audience "half" holds every other one, "all" every one.
func BenchmarkLoad(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("AUDIENCE_LOAD_PROFILES")); err == nil && v > 0 {
		n = v
	}
	dir := b.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{}, db)
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range []string{"half", "all"} {
		if _, err := s.Create(Definition{ID: id, Condition: Condition{Trait: &TraitCond{Path: id, Op: "exists"}}}); err != nil {
			b.Fatal(err)
		}
	}
	s.Wait()
	s.Close()
	traits := make([]byte, 100)
	for i := range traits {
		traits[i] = byte(rand.IntN(256)) // sealed traits look random
	}
	var key []byte
	wb := db.NewBatch()
	for pid := uint32(1); pid <= uint32(n); pid++ {
		key = traitsKey(key[:0], pid)
		_ = wb.Set(key, traits, nil)
		_ = wb.Set(memberKey(key[:0], "all", pid), nil, nil)
		if pid%2 == 0 {
			_ = wb.Set(memberKey(key[:0], "half", pid), nil, nil)
		}
		if wb.Len() > 4<<20 {
			if err := wb.Commit(pebble.NoSync); err != nil {
				b.Fatal(err)
			}
			wb = db.NewBatch()
		}
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		b.Fatal(err)
	}
	if err := db.Compact([]byte{0}, []byte{0xff}, true); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		db, err := pebble.Open(dir, &pebble.Options{})
		if err != nil {
			b.Fatal(err)
		}
		s, err := New(Config{}, db)
		if err != nil {
			b.Fatal(err)
		}
		if s.known.GetCardinality() != uint64(n) || s.auds["all"].members.GetCardinality() != uint64(n) || s.auds["half"].members.GetCardinality() != uint64(n/2) {
			b.Fatalf("known %d, all %d, half %d; want %d, %d, %d", s.known.GetCardinality(),
				s.auds["all"].members.GetCardinality(), s.auds["half"].members.GetCardinality(), n, n, n/2)
		}
		b.StopTimer()
		s.Close()
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/profile")
}
