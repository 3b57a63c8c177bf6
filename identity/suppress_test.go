package identity

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
)

// TestPropertySuppressionIsFiltering: resolving events with some people
// suppressed gives the same graph as resolving, without the Stage's check,
// only the events that carry no suppressed identifier (the oracle's
// filter); and exactly those events stay in the batches.
func TestPropertySuppressionIsFiltering(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		evs, ids := randomEvents(r, 600, 60)
		a, b := newTestGraph(t, rulesOff()), newTestGraph(t, rulesOff())
		for i := 0; i < 200; i += 50 {
			a.process(evs[i : i+50])
			b.process(evs[i : i+50])
		}
		var pids []uint32
		for id := uint32(1); id < a.g.next; id++ {
			if r.IntN(4) == 0 {
				pids = append(pids, id)
			}
		}
		supp := map[genIdent]bool{}
		for _, id := range pids {
			if v, err := a.g.Profile(id); err == nil {
				for _, x := range v.Identifiers {
					supp[genIdent{x.Type, x.Value}] = true
				}
			}
		}
		if _, err := a.g.Suppress(t.Context(), pids); err != nil {
			t.Fatal(err)
		}
		if _, err := b.g.Suppress(t.Context(), pids); err != nil {
			t.Fatal(err)
		}
		var kept []testEvent
		for i := 200; i < len(evs); i++ {
			if !slices.ContainsFunc(ids[i], func(x genIdent) bool { return supp[x] }) {
				kept = append(kept, evs[i])
			}
		}
		var gotMsgs []string
		drops := 0
		for i := 200; i < len(evs); i += 50 {
			bt, _ := a.process(evs[i : i+50])
			msgs := bt.Rec.Column(engine.ColMessageID).(*array.String)
			for j := 0; j < msgs.Len(); j++ {
				gotMsgs = append(gotMsgs, msgs.Value(j))
			}
			for _, d := range bt.Drops {
				drops += d.Rows
			}
			if len(bt.Offsets) != 1 || bt.Offsets[0].Next != int64(i+50) {
				t.Fatalf("offsets %+v changed", bt.Offsets)
			}
		}
		// b resolves the filtered events with its check off: nothing in
		// them is suppressed anyway, so the check must not matter.
		saved := b.g.supp
		b.g.supp = map[hash]uint64{}
		for i := 0; i < len(kept); i += 50 {
			b.process(kept[i:min(i+50, len(kept))])
		}
		b.g.supp = saved
		var want []string
		for _, e := range kept {
			want = append(want, e.msg)
		}
		if !slices.Equal(gotMsgs, want) {
			t.Fatalf("seed %d: kept rows %v, want %v", seed, gotMsgs, want)
		}
		if drops != 400-len(kept) || drops == 0 {
			t.Fatalf("seed %d: %d drops counted, %d events suppressed", seed, drops, 400-len(kept))
		}
		if ga, gb := a.dump(), b.dump(); ga != gb {
			t.Fatalf("seed %d: graph with suppression differs from the filtered run:\n%s\nwant:\n%s", seed, ga, gb)
		}
		if strings.Contains(a.dump(), "CHECK FAILED") {
			t.Fatal(a.dump())
		}
	}
}

// TestDropRows: the record left after dropping suppressed rows holds the
// other rows, every column intact, in order; all-dropped leaves an empty
// record; no Arrow memory leaks.
func TestDropRows(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	tg.process([]testEvent{{msg: "seed", ts: testEpoch, topic: "events", off: 1, user: "u-bad", ids: [][2]string{{TypeEmail, "bad@example.com"}}}})
	if _, err := tg.g.Suppress(t.Context(), []uint32{1}); err != nil {
		t.Fatal(err)
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	tg.st.mem, tg.st.dropMem = mem, mem
	for _, c := range []struct {
		name string
		bad  []bool // per row: carries a suppressed identifier
	}{
		{"first", []bool{true, false, false, false}},
		{"middle_run", []bool{false, true, true, false, false}},
		{"last", []bool{false, false, true}},
		{"alternate", []bool{true, false, true, false, true}},
		{"all", []bool{true, true}},
		{"none", []bool{false, false}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var evs []testEvent
			var want []string
			for i, bad := range c.bad {
				tg.off++
				e := testEvent{msg: c.name + "-" + string(rune('a'+i)), ts: testEpoch, topic: "events", off: tg.off,
					anon: "anon-" + c.name + string(rune('a'+i)), ids: [][2]string{{TypeDeviceID, "dev-" + string(rune('a'+i))}}}
				if bad {
					e.ids = append(e.ids, [2]string{TypeEmail, " BAD@example.com"})
				} else {
					want = append(want, e.msg)
				}
				evs = append(evs, e)
			}
			b := buildBatchMem(t, mem, evs)
			if err := tg.st.Process(t.Context(), b); err != nil {
				t.Fatal(err)
			}
			defer b.Release()
			if int(b.Rec.NumRows()) != len(want) {
				t.Fatalf("%d rows, want %d", b.Rec.NumRows(), len(want))
			}
			msgs := b.Rec.Column(engine.ColMessageID).(*array.String)
			anon := b.Rec.Column(engine.ColAnonymousID).(*array.String)
			idl := b.Rec.Column(engine.ColIdentifiers).(*array.List)
			pids := b.Rec.Column(engine.ColProfileID).(*array.Uint32)
			for j, m := range want {
				if msgs.Value(j) != m || anon.Value(j) != "anon-"+c.name+m[len(m)-1:] {
					t.Fatalf("row %d: %s %s, want %s", j, msgs.Value(j), anon.Value(j), m)
				}
				if st, en := idl.ValueOffsets(j); en-st != 1 {
					t.Fatalf("row %d has %d identifiers, want 1", j, en-st)
				}
				if pids.Value(j) == 0 {
					t.Fatalf("row %d unresolved", j)
				}
			}
			if n := len(c.bad) - len(want); n > 0 {
				if len(b.Drops) != 1 || b.Drops[0] != (engine.Drop{Reason: ReasonSuppressed, Rows: n}) {
					t.Fatalf("drops %+v, want %d suppressed", b.Drops, n)
				}
			} else if len(b.Drops) != 0 {
				t.Fatalf("drops %+v, want none", b.Drops)
			}
			for j := 0; j < int(b.Rec.NumCols()); j++ {
				if v, ok := b.Rec.Column(j).(interface{ ValidateFull() error }); ok {
					if err := v.ValidateFull(); err != nil {
						t.Fatalf("column %d: %v", j, err)
					}
				}
			}
		})
	}
	if err := tg.g.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSuppressByHashAndReplace: a replaced identifier passes its
// suppression on; unsuppress by a hashed identity; Suppressed reports it.
func TestSuppressByHashAndReplace(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	tg.process([]testEvent{{msg: "m1", ts: testEpoch, topic: "events", off: 1, user: "u-1", ids: [][2]string{{TypeEmail, "old@example.com"}}}})
	if _, err := tg.g.Suppress(t.Context(), []uint32{1}); err != nil {
		t.Fatal(err)
	}
	if err := tg.g.ReplaceIdentifier(t.Context(), 1, TypeEmail, "old@example.com", "New@Example.com"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"old@example.com", "new@example.com"} {
		if ok, err := tg.g.Suppressed(Ref{Type: TypeEmail, Value: v}); err != nil || !ok {
			t.Fatalf("%s suppressed = %v, %v", v, ok, err)
		}
	}
	if d := tg.dump(); strings.Contains(d, "CHECK FAILED") || !strings.Contains(d, "suppression group 1: 3 hashes") {
		t.Fatal(d)
	}
	r := Ref{Type: TypeUserID, SHA256: sha256.Sum256([]byte("u-1")), Hashed: true}
	if err := tg.g.UnsuppressIdentities(t.Context(), []Ref{r}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := tg.g.Suppressed(Ref{Type: TypeEmail, Value: "new@example.com"}); ok {
		t.Fatal("still suppressed after unsuppress by the user id's hash")
	}
	if err := tg.g.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSuppressMergesGroups: two people suppressed apart (two groups), then
// found to be one person by a later suppression naming identifiers of
// both: their groups become one, so unsuppress by any one identifier
// lifts all of them.
func TestSuppressMergesGroups(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	tg.process([]testEvent{
		{msg: "m1", ts: testEpoch, topic: "events", off: 1, user: "u-1", ids: [][2]string{{TypeEmail, "one@example.com"}}},
		{msg: "m2", ts: testEpoch, topic: "events", off: 2, user: "u-2", ids: [][2]string{{TypeEmail, "two@example.com"}}},
	})
	g1, err := tg.g.Suppress(t.Context(), []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	g2, err := tg.g.Suppress(t.Context(), []uint32{2})
	if err != nil || g1 == g2 {
		t.Fatalf("groups %d and %d (%v): want two", g1, g2, err)
	}
	// A request naming both emails and a phone seen nowhere yet.
	g3, err := tg.g.Suppress(t.Context(), nil, Ref{Type: TypeEmail, Value: "two@example.com"},
		Ref{Type: TypeEmail, Value: "one@example.com"}, Ref{Type: TypePhone, Value: "+14155550123"})
	if err != nil || g3 != min(g1, g2) {
		t.Fatalf("third suppression: group %d, %v; want the lower group %d", g3, err, min(g1, g2))
	}
	if d := tg.dump(); strings.Contains(d, "CHECK FAILED") || !strings.Contains(d, fmt.Sprintf("suppression group %d: 5 hashes", g3)) ||
		strings.Contains(d, fmt.Sprintf("suppression group %d:", max(g1, g2))) {
		t.Fatalf("want one group of 5 hashes (2 user ids, 2 emails, the phone):\n%s", d)
	}
	if err := tg.g.UnsuppressIdentities(t.Context(), []Ref{{Type: TypeUserID, Value: "u-2"}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Ref{{Type: TypeUserID, Value: "u-1"}, {Type: TypeEmail, Value: "one@example.com"}, {Type: TypePhone, Value: "+14155550123"}} {
		if ok, err := tg.g.Suppressed(r); err != nil || ok {
			t.Errorf("%s %s still suppressed (%v) after unsuppress by u-2", r.Type, r.Value, err)
		}
	}
	tg.restart()
	if err := tg.g.Check(); err != nil {
		t.Fatal(err)
	}
}

// buildBatchMem is buildBatch with the record's memory from mem.
func buildBatchMem(t testing.TB, mem memory.Allocator, evs []testEvent) *engine.Batch {
	t.Helper()
	b := buildBatch(t, evs)
	defer b.Release()
	cols := make([]arrow.Array, b.Rec.NumCols())
	for i := range cols {
		c, err := array.Concatenate([]arrow.Array{b.Rec.Column(i)}, mem)
		if err != nil {
			t.Fatal(err)
		}
		cols[i] = c
	}
	rec := array.NewRecordBatch(b.Rec.Schema(), cols, b.Rec.NumRows())
	for _, c := range cols {
		c.Release()
	}
	return &engine.Batch{Rec: rec, Offsets: b.Offsets}
}

// BenchmarkSuppressLookup is the ingest check alone: the Stage's look-up
// of each identifier hash of an event (2 here, as a track event with a
// user id and an anonymous id) in the suppressed set, finding none, with
// 0, 1e5 and 1e6 suppressed hashes. With 0 the Stage skips the check.
func BenchmarkSuppressLookup(b *testing.B) {
	for _, n := range []int{0, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("set_%.0e", float64(n)), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 1))
			fill := func(h *hash) {
				binary.LittleEndian.PutUint64(h[:8], r.Uint64())
				binary.LittleEndian.PutUint64(h[8:], r.Uint64())
			}
			g := &Graph{supp: make(map[hash]uint64, n)}
			for i := 0; i < n; i++ {
				var h hash
				fill(&h)
				g.supp[h] = 1
			}
			const events = 4096
			all := make([]slot, 2*events)
			for i := range all {
				fill(&all[i].h)
			}
			s := &Stage{g: g}
			b.ReportAllocs()
			for b.Loop() {
				supp := len(g.supp) > 0
				for e := 0; e < events; e++ {
					s.slots = all[:2*e+2]
					if supp && s.suppressed(2*e) {
						b.Fatal("random hash found")
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
		})
	}
}

// BenchmarkDropRows is the cost of removing suppressed rows from a batch:
// a 4096-row record rebuilt without 1% (41) or 10% of its rows, spread at
// random (each dropped row splits a run), or 41 rows in one run, with the
// Stage's pool allocator. ns/op is per batch.
func BenchmarkDropRows(b *testing.B) {
	env := &BenchEnv{bld: array.NewRecordBuilder(memory.DefaultAllocator, engine.Schema)}
	defer env.bld.Release()
	for i := 0; i < 4096; i++ {
		p := strconv.Itoa(i)
		env.appendRow(engine.TypeIdentify, "u"+p, "a"+p, [][2]string{{TypeEmail, "p" + p + "@example.com"}})
	}
	rec := env.flush().Rec
	defer rec.Release()
	r := rand.New(rand.NewPCG(1, 1))
	for _, c := range []struct {
		name    string
		dropped []int32
	}{
		{"spread_1pct", slices.Sorted(func(yield func(int32) bool) {
			for _, i := range r.Perm(4096)[:41] {
				yield(int32(i))
			}
		})},
		{"spread_10pct", slices.Sorted(func(yield func(int32) bool) {
			for _, i := range r.Perm(4096)[:410] {
				yield(int32(i))
			}
		})},
		{"one_run_1pct", func() []int32 {
			var d []int32
			for i := int32(1000); i < 1041; i++ {
				d = append(d, i)
			}
			return d
		}()},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := &Stage{mem: memory.DefaultAllocator, dropMem: engine.NewPoolAllocator(), dropped: c.dropped}
			b.ReportAllocs()
			for b.Loop() {
				rec.Retain()
				bt := &engine.Batch{Rec: rec}
				if err := s.dropRows(bt); err != nil {
					b.Fatal(err)
				}
				bt.Release()
			}
		})
	}
}
