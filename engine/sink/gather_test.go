package sink

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// TestGather checks the typed gather against the generic one
// (array.Concatenate of slices) on rows with nulls, empty and null lists
// and null list elements, for several selections and for a sliced record.
func TestGather(t *testing.T) {
	rows := testRows(40)
	for i := range rows {
		switch i % 4 {
		case 1:
			rows[i].ids = nil // empty list
		case 2:
			rows[i].nullIDs, rows[i].ids = true, nil
		case 3:
			rows[i].ids = append(rows[i].ids, [2]string{nullID, ""})
		}
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	b := makeBatch(t, mem, rows...)
	sliced := b.Rec.NewSlice(5, 35)
	var g gatherer
	for name, sel := range selections(30) {
		if len(sel) == 0 {
			continue
		}
		if sel == nil {
			sel = []int{0, 1, 2, 29}
		}
		for which, r := range map[string]arrow.RecordBatch{"whole": b.Rec, "sliced": sliced} {
			typed, err := g.gather(r, sel)
			if err != nil {
				t.Fatal(err)
			}
			generic, err := gatherConcat(r, sel)
			if err != nil {
				t.Fatal(err)
			}
			if !array.RecordEqual(typed, generic) {
				t.Errorf("%s/%s: typed gather differs:\n%v\nwant\n%v", which, name, typed, generic)
			}
			if typed.NumRows() != int64(len(sel)) {
				t.Errorf("%s/%s: %d rows, want %d", which, name, typed.NumRows(), len(sel))
			}
			typed.Release()
			generic.Release()
		}
	}
	g.release()
	sliced.Release()
	b.Release()
	mem.AssertSize(t, 0)
}
