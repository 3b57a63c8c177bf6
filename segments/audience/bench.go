package audience

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/cockroachdb/pebble"
)

// SetExprResult is what BenchSetExpr measured.
type SetExprResult struct {
	Universe   int
	Expression string
	// Sizes of the three input bitmaps and their serialized bytes.
	Sizes [3]uint64
	Bytes [3]uint64
	Build time.Duration
	// Count is the answer; CountP50/P99 the time of Expr.Count (bitmap
	// cardinality operations, no result set built), EvalP50 of Expr.Eval
	// (the member set built).
	Count              uint64
	CountP50, CountP99 time.Duration
	EvalP50            time.Duration
	Runs               int
}

// BenchSetExpr builds three bitmaps over a universe of profile ids, as
// audiences and a purpose would hold them (vip ≈ 12.5% of profiles,
// consent:advertising ≈ 75%, churned ≈ 3%, spread uniformly, seeded), and
// times `vip AND consent:advertising AND NOT churned` runs times (at least
// 5). It is the workload behind BenchmarkSetExprCount and the
// 100M-universe run of `cdpstream bench` (about 60 MB of bitmaps at 100M).
func BenchSetExpr(universe, runs int) (SetExprResult, error) {
	runs = max(runs, 5)
	start := time.Now()
	src := benchSource(universe, 1)
	res := SetExprResult{Universe: universe, Expression: "vip AND consent:advertising AND NOT churned", Build: time.Since(start), Runs: runs}
	for i, t := range []Term{{Name: "vip"}, {Consent: true, Name: "advertising"}, {Name: "churned"}} {
		res.Sizes[i] = src.sets[t].GetCardinality()
		res.Bytes[i] = src.sets[t].GetSerializedSizeInBytes()
	}
	e, err := ParseExpr(res.Expression)
	if err != nil {
		return res, err
	}
	counts := make([]time.Duration, runs)
	evals := make([]time.Duration, runs)
	for i := 0; i < runs; i++ {
		t0 := time.Now()
		if res.Count, err = e.Count(src); err != nil {
			return res, err
		}
		counts[i] = time.Since(t0)
		t0 = time.Now()
		if _, err := e.Eval(src); err != nil {
			return res, err
		}
		evals[i] = time.Since(t0)
	}
	sort.Slice(counts, func(i, j int) bool { return counts[i] < counts[j] })
	sort.Slice(evals, func(i, j int) bool { return evals[i] < evals[j] })
	res.CountP50, res.CountP99 = counts[runs/2], counts[(runs*99)/100]
	res.EvalP50 = evals[runs/2]
	return res, nil
}

// benchSource builds the three bitmaps from random 64-bit words: an AND of
// k words sets a bit with probability 2^-k, an OR of two with 3/4.
func benchSource(universe int, seed uint64) mapSource {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	words := (universe + 63) / 64
	vip, ads, churned := make([]uint64, words), make([]uint64, words), make([]uint64, words)
	for i := range vip {
		vip[i] = r.Uint64() & r.Uint64() & r.Uint64()
		ads[i] = r.Uint64() | r.Uint64()
		churned[i] = r.Uint64() & r.Uint64() & r.Uint64() & r.Uint64() & r.Uint64()
	}
	if rem := universe % 64; rem != 0 {
		mask := uint64(1)<<rem - 1
		vip[words-1] &= mask
		ads[words-1] &= mask
		churned[words-1] &= mask
	}
	u := roaring.New()
	u.AddRange(0, uint64(universe))
	return mapSource{universe: u, sets: map[Term]*roaring.Bitmap{
		{Name: "vip"}:                        roaring.FromDense(vip, false),
		{Consent: true, Name: "advertising"}: roaring.FromDense(ads, false),
		{Name: "churned"}:                    roaring.FromDense(churned, false),
	}}
}

// mapSource is a Source over fixed bitmaps.
type mapSource struct {
	sets     map[Term]*roaring.Bitmap
	universe *roaring.Bitmap
}

func (m mapSource) Bitmap(t Term) (*roaring.Bitmap, error) {
	if b, ok := m.sets[t]; ok {
		return b, nil
	}
	return nil, &ValidationError{Path: "expression", Msg: "unknown term " + t.String()}
}

func (m mapSource) Universe() *roaring.Bitmap { return m.universe }

// BenchContainsStore opens a store over db holding one audience, "vip",
// whose members are a seeded eighth of the profile ids 0..n-1, set directly
// rather than built from events (which would take minutes at 10M). It is
// the server side of the HTTP contains load benchmark in package bench.
func BenchContainsStore(db *pebble.DB, n int) (*Store, error) {
	s, err := New(Config{}, db)
	if err != nil {
		return nil, err
	}
	if _, err := s.Create(Definition{ID: "vip", Condition: Condition{Trait: &TraitCond{Path: "vip", Op: "exists"}}}); err != nil {
		s.Close()
		return nil, err
	}
	s.Wait()
	s.mu.Lock()
	s.auds["vip"].members = benchSource(n, 1).sets[Term{Name: "vip"}]
	s.mu.Unlock()
	return s, nil
}
