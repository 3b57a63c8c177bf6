package identity

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
)

// dropOdd keeps even rows and drops odd ones with reason "odd".
type dropOdd struct{}

func (dropOdd) Select(b *engine.Batch, dst []int, drop func(int, engine.Reason)) []int {
	for i := range b.Rows() {
		if i%2 == 0 {
			dst = append(dst, i)
		} else {
			drop(i, "odd")
		}
	}
	return dst
}

// dropAll drops every row with reason "all".
type dropAll struct{}

func (dropAll) Select(b *engine.Batch, dst []int, drop func(int, engine.Reason)) []int {
	for i := range b.Rows() {
		drop(i, "all")
	}
	return dst
}

// dropRecords keeps every row and withholds every record, reason "mine".
type dropRecords struct{}

func (dropRecords) Select(b *engine.Batch, dst []int, _ func(int, engine.Reason)) []int {
	for i := range b.Rows() {
		dst = append(dst, i)
	}
	return dst
}

func (dropRecords) DropRecord(*engine.Record) engine.Reason { return "mine" }

// TestErasedFilter: a batch resolved before an erasure (in flight to the
// sinks when it ran) loses the rows of the erased profile and of the
// profile merged into it, reason erased; other rows pass; a wrapped
// filter's own drops keep their reason; the change records whose subject
// is the erased profile are withheld, exits and others delivered; nothing is filtered and the
// runner may skip Select until something is erased; the set does not
// survive a restart.
func TestErasedFilter(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	ev := func(msg string, user, anon string) testEvent {
		tg.off++
		return testEvent{msg: msg, typ: engine.TypeTrack, ts: testEpoch.Add(time.Duration(tg.off) * time.Minute), topic: "events", off: tg.off, user: user, anon: anon}
	}
	inflight, pids := tg.process([]testEvent{ev("m1", "", "anon-a"), ev("m2", "", "anon-b"), ev("m3", "u1", "anon-c"), ev("m4", "", "anon-b")})
	if pids[0] == pids[2] || pids[1] != pids[3] {
		t.Fatalf("profiles %v: want a, b, c distinct and b twice", pids)
	}
	// u1 and anon-a meet: the two profiles merge.
	tg.process([]testEvent{ev("m5", "u1", "anon-a")})
	v, err := tg.g.Lookup(TypeUserID, "u1")
	if err != nil {
		t.Fatal(err)
	}
	survivor := v.ProfileID

	type dropped struct {
		row    int
		reason engine.Reason
	}
	sel := func(f engine.Filter) ([]int, []dropped) {
		var ds []dropped
		kept := f.Select(inflight, []int{99}, func(row int, r engine.Reason) { ds = append(ds, dropped{row, r}) })
		if len(kept) == 0 || kept[0] != 99 {
			t.Fatalf("Select did not append to dst: %v", kept)
		}
		return kept[1:], ds
	}
	f, odd := tg.g.ErasedFilter(nil), tg.g.ErasedFilter(dropOdd{})
	if !f.(engine.AllPasser).PassesAll(inflight) || odd.(engine.AllPasser).PassesAll(inflight) {
		t.Fatal("PassesAll before any erasure: want true without a wrapped filter, false with one")
	}
	if kept, ds := sel(f); !slices.Equal(kept, []int{0, 1, 2, 3}) || len(ds) != 0 {
		t.Fatalf("before erasure: kept %v, dropped %v", kept, ds)
	}

	// Change records attached to the batch: an entry about the survivor,
	// one about b, and an exit (no subject).
	recs := []engine.Record{{Type: "audience", Subject: survivor}, {Type: "consent", Subject: pids[1]}, {Type: "audience"}}
	withheld := func(f engine.Filter) []engine.Reason {
		var out []engine.Reason
		for i := range recs {
			out = append(out, f.(engine.RecordFilter).DropRecord(&recs[i]))
		}
		return out
	}
	if got := withheld(f); !slices.Equal(got, []engine.Reason{"", "", ""}) {
		t.Fatalf("records before erasure: %q, want every one delivered", got)
	}

	if err := tg.g.Erase(t.Context(), []uint32{survivor}); err != nil {
		t.Fatal(err)
	}
	if got := withheld(f); !slices.Equal(got, []engine.Reason{ReasonErased, "", ""}) {
		t.Fatalf("records after erasure: %q, want the erased survivor's withheld, b's and the exit delivered", got)
	}
	if got := withheld(tg.g.ErasedFilter(dropRecords{})); !slices.Equal(got, []engine.Reason{ReasonErased, "mine", "mine"}) {
		t.Fatalf("records through a wrapped record filter: %q, want erased first, then its reason", got)
	}
	for i, pid := range pids {
		if want := i != 1 && i != 3; tg.g.Erased(pid) != want {
			t.Errorf("Erased(%d) (row %d) = %v, want %v", pid, i, !want, want)
		}
	}
	if f.(engine.AllPasser).PassesAll(inflight) {
		t.Fatal("PassesAll after an erasure")
	}
	kept, ds := sel(f)
	if want := []dropped{{0, ReasonErased}, {2, ReasonErased}}; !slices.Equal(kept, []int{1, 3}) || !slices.Equal(ds, want) {
		t.Fatalf("after erasure: kept %v, dropped %v; want [1 3], %v", kept, ds, want)
	}
	kept, ds = sel(odd)
	if want := []dropped{{1, "odd"}, {3, "odd"}, {0, ReasonErased}, {2, ReasonErased}}; len(kept) != 0 || !slices.Equal(ds, want) {
		t.Fatalf("wrapped filter after erasure: kept %v, dropped %v; want none, %v", kept, ds, want)
	}
	// A wrapped filter's drop of an erased profile's row counts as erased.
	kept, ds = sel(tg.g.ErasedFilter(dropAll{}))
	if want := []dropped{{0, ReasonErased}, {1, "all"}, {2, ReasonErased}, {3, "all"}}; len(kept) != 0 || !slices.Equal(ds, want) {
		t.Fatalf("wrapped filter after erasure: kept %v, dropped %v; want none, %v", kept, ds, want)
	}
	// A batch resolved after the erasure: anon-a is unknown again and
	// makes a new profile, which passes.
	after, npids := tg.process([]testEvent{ev("m6", "", "anon-a")})
	if slices.Contains(pids, npids[0]) {
		t.Fatalf("an erased identifier resolved to an old id %d", npids[0])
	}
	if kept := f.Select(after, nil, func(int, engine.Reason) { t.Error("dropped a new profile's row") }); !slices.Equal(kept, []int{0}) {
		t.Fatalf("new profile: kept %v", kept)
	}

	if ids, next := tg.g.ErasedSince(0); len(ids) != 2 || next != 2 || !slices.Contains(ids, pids[0]) || !slices.Contains(ids, pids[2]) {
		t.Fatalf("ErasedSince(0) = %v, %d; want the rows 0 and 2 profiles, 2", ids, next)
	}
	if ids, next := tg.g.ErasedSince(2); len(ids) != 0 || next != 2 {
		t.Fatalf("ErasedSince(2) = %v, %d; want nothing new", ids, next)
	}
	tg.restart()
	if f := tg.g.ErasedFilter(nil); !f.(engine.AllPasser).PassesAll(inflight) || tg.g.Erased(pids[0]) {
		t.Fatal("the erased set outlived a restart; it is documented as in memory only")
	}
}

// BenchmarkErasedFilter prices the filter on a 4096-row batch over 1000
// profiles: nothing erased (the runner skips Select; measured here through
// Select anyway) and with 10,000 other profiles erased.
func BenchmarkErasedFilter(b *testing.B) {
	tg := newTestGraph(b, testConfig())
	evs := make([]testEvent, 4096)
	for i := range evs {
		evs[i] = testEvent{msg: fmt.Sprint("m", i), typ: engine.TypeTrack, ts: testEpoch, topic: "events", off: int64(i), anon: fmt.Sprint("anon-", i%1000)}
	}
	batch, _ := tg.process(evs)
	f := tg.g.ErasedFilter(nil)
	run := func(b *testing.B) {
		dst := make([]int, 0, 4096)
		for b.Loop() {
			dst = f.Select(batch, dst[:0], nil)
		}
		if len(dst) != 4096 {
			b.Fatalf("kept %d", len(dst))
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/4096, "ns/row")
	}
	b.Run("none_erased", run)
	gone := make([]uint32, 10_000)
	for i := range gone {
		gone[i] = uint32(1_000_000 + i)
	}
	tg.g.markGone(gone)
	b.Run("10k_erased", run)
}

// TestHold: rows and change records of held profiles are dropped by every
// sink's filter, as erased, while the hold lasts; the profiles still
// resolve; releasing the hold (or holding nothing under its key) lets them
// through again, and holds under other keys stay.
func TestHold(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	batch, pids := tg.process([]testEvent{
		{msg: "m1", typ: engine.TypeTrack, ts: testEpoch, topic: "events", off: 1, anon: "anon-a"},
		{msg: "m2", typ: engine.TypeTrack, ts: testEpoch, topic: "events", off: 2, anon: "anon-b"},
	})
	a, b := pids[0], pids[1]
	f := tg.g.ErasedFilter(nil)
	sel := func() ([]int, []engine.Reason) {
		var rs []engine.Reason
		kept := f.Select(batch, nil, func(_ int, r engine.Reason) { rs = append(rs, r) })
		return kept, rs
	}
	rec := engine.Record{Type: "audience", Subject: a}
	tg.g.Hold("req-1", []uint32{a})
	tg.g.Hold("req-2", []uint32{b})
	if f.(engine.AllPasser).PassesAll(batch) {
		t.Fatal("PassesAll with profiles held")
	}
	if kept, rs := sel(); len(kept) != 0 || !slices.Equal(rs, []engine.Reason{ReasonErased, ReasonErased}) {
		t.Fatalf("both held: kept %v, dropped %v", kept, rs)
	}
	if r := f.(engine.RecordFilter).DropRecord(&rec); r != ReasonErased {
		t.Fatalf("record about a held profile: %q", r)
	}
	if v, err := tg.g.Lookup(TypeAnonymousID, "anon-a"); err != nil || v.ProfileID != a {
		t.Fatalf("a held profile no longer resolves: %v %v", v, err)
	}
	tg.g.Release("req-1")
	if kept, rs := sel(); !slices.Equal(kept, []int{0}) || !slices.Equal(rs, []engine.Reason{ReasonErased}) {
		t.Fatalf("req-1 released: kept %v, dropped %v; want a kept, b dropped", kept, rs)
	}
	if r := f.(engine.RecordFilter).DropRecord(&rec); r != "" {
		t.Fatalf("record about a released profile: %q", r)
	}
	tg.g.Hold("req-2", nil)
	if !f.(engine.AllPasser).PassesAll(batch) || tg.g.Erased(a) || tg.g.Erased(b) {
		t.Fatal("holds left after releasing both; or a hold counted as an erasure")
	}
}
