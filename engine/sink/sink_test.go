package sink

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/cdpstream/cdpstream/engine"
)

// row is one test event. A nil key is a null key column.
type row struct {
	msgID string
	key   []byte
	pid   uint32
	raw   string
	ids   [][2]string // (type, value); type nullID makes a null element
	// nullIDs makes the identifiers list null (the schema allows it
	// though the decoder writes an empty list).
	nullIDs bool
}

const nullID = "\x00null"

// testRows returns n distinct events; every third is unresolved (pid 0)
// and every fifth has no key.
func testRows(n int) []row {
	rows := make([]row, n)
	for i := range rows {
		r := row{
			msgID: fmt.Sprintf("msg-%04d", i),
			key:   fmt.Appendf(nil, "key-%d", i),
			pid:   uint32(1000 + i),
			ids:   [][2]string{{"email", fmt.Sprintf("u%d@example.com", i)}, {"device_id", fmt.Sprintf("dev-%d", i%7)}},
		}
		if i%3 == 0 {
			r.pid = 0
		}
		if i%5 == 0 {
			r.key = nil
		}
		r.raw = fmt.Sprintf(`{"type":"track","messageId":%q,"userId":"u%d","event":"Order Completed","properties":{"revenue":%d.5,"note":"<b>&</b> ü"}}`, r.msgID, i, i)
		rows[i] = r
	}
	return rows
}

// makeBatch builds a batch in engine.Schema from rows with mem, so that a
// test can check with a CheckedAllocator that sinks release what they
// retain. The caller releases the batch.
func makeBatch(tb testing.TB, mem memory.Allocator, rows ...row) *engine.Batch {
	tb.Helper()
	rb := array.NewRecordBuilder(mem, engine.Schema)
	defer rb.Release()
	ts := arrow.Timestamp(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMicro())
	for i, r := range rows {
		rb.Field(engine.ColMessageID).(*array.StringBuilder).Append(r.msgID)
		rb.Field(engine.ColType).(*array.Uint8Builder).Append(uint8(engine.TypeTrack))
		rb.Field(engine.ColEvent).(*array.StringBuilder).Append("Order Completed")
		rb.Field(engine.ColTimestamp).(*array.TimestampBuilder).Append(ts)
		rb.Field(engine.ColTopic).(*array.StringBuilder).Append("events")
		rb.Field(engine.ColPartition).(*array.Int32Builder).Append(int32(i % 3))
		rb.Field(engine.ColOffset).(*array.Int64Builder).Append(int64(i))
		if r.key == nil {
			rb.Field(engine.ColKey).(*array.BinaryBuilder).AppendNull()
		} else {
			rb.Field(engine.ColKey).(*array.BinaryBuilder).Append(r.key)
		}
		rb.Field(engine.ColUserID).(*array.StringBuilder).Append(fmt.Sprintf("u%d", i))
		rb.Field(engine.ColAnonymousID).(*array.StringBuilder).AppendNull()
		rb.Field(engine.ColPreviousID).(*array.StringBuilder).AppendNull()
		rb.Field(engine.ColGroupID).(*array.StringBuilder).AppendNull()
		lb := rb.Field(engine.ColIdentifiers).(*array.ListBuilder)
		if r.nullIDs {
			lb.AppendNull()
		} else {
			lb.Append(true)
		}
		sb := lb.ValueBuilder().(*array.StructBuilder)
		for _, id := range r.ids {
			if id[0] == nullID {
				sb.AppendNull()
				continue
			}
			sb.Append(true)
			sb.FieldBuilder(0).(*array.StringBuilder).Append(id[0])
			sb.FieldBuilder(1).(*array.StringBuilder).Append(id[1])
		}
		rb.Field(engine.ColProfileID).(*array.Uint32Builder).Append(r.pid)
		rb.Field(engine.ColConsentMask).(*array.Uint64Builder).Append(uint64(i))
		rb.Field(engine.ColRaw).(*array.BinaryBuilder).Append([]byte(r.raw))
		rb.Field(engine.ColConsentFields).(*array.BinaryBuilder).AppendNull()
	}
	return &engine.Batch{Seq: 1, Rec: rb.NewRecordBatch()}
}

// selected returns the rows of sel (all rows when sel is nil).
func selected(rows []row, sel []int) []row {
	if sel == nil {
		return rows
	}
	out := make([]row, 0, len(sel))
	for _, i := range sel {
		out = append(out, rows[i])
	}
	return out
}

// selections to test every sink with: all rows, none, sparse, runs.
func selections(n int) map[string][]int {
	var odd, runs []int
	for i := 1; i < n; i += 2 {
		odd = append(odd, i)
	}
	for i := range n {
		if i%10 < 4 {
			runs = append(runs, i)
		}
	}
	return map[string][]int{
		"all":    nil,
		"empty":  {},
		"first":  {0},
		"last":   {n - 1},
		"odd":    odd,  // fragmented: gather path for ArrowIPC
		"runs":   runs, // few runs: slice path
		"middle": {2, 3, 4, 5},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestCheckSel(t *testing.T) {
	for _, c := range []struct {
		sel []int
		n   int
		ok  bool
	}{
		{nil, 0, true}, {[]int{}, 3, true}, {[]int{0, 2}, 3, true},
		{[]int{0, 3}, 3, false}, {[]int{-1, 0}, 3, false},
	} {
		if err := checkSel(c.sel, c.n); (err == nil) != c.ok {
			t.Errorf("checkSel(%v, %d) = %v, want ok=%v", c.sel, c.n, err, c.ok)
		}
	}
}

// TestWriteOutOfRange: every sink rejects a selection beyond the batch
// instead of panicking.
func TestWriteOutOfRange(t *testing.T) {
	dir := t.TempDir()
	b := makeBatch(t, memory.NewGoAllocator(), testRows(3)...)
	defer b.Release()
	nd, err := NewNDJSON("n", FileConfig{Path: dir + "/a.ndjson"})
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	ar, err := NewArrowIPC("a", FileConfig{Path: dir + "/a.arrows", Format: FormatArrow})
	if err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	for _, s := range []engine.Sink{nd, ar, NewStdout("s", &discard{})} {
		if err := s.Write(context.Background(), b, []int{1, 3}); err == nil {
			t.Errorf("%s: Write with row 3 of 3 succeeded", s.Name())
		}
	}
}

type discard struct{ n int }

func (d *discard) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

// testDeadLetters covers a plain record, one with invalid UTF-8 in key and
// raw bytes, and one without key or time.
func testDeadLetters() []engine.DeadLetter {
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("x", 3600))
	return []engine.DeadLetter{
		{
			Pos: engine.Position{Topic: "events", Partition: 2, Offset: 41}, Key: []byte("k1"),
			Raw: []byte(`{"type":"track"`), Reason: "bad_json", Detail: "unexpected end of JSON", Time: t0,
		},
		{
			Pos: engine.Position{Topic: "events", Partition: 0, Offset: 9}, Key: []byte{0xff, 0},
			Raw: []byte{0xff, 0xfe, 'x'}, Reason: "not_utf8", Detail: "invalid UTF-8 at byte 0", Time: t0.Add(time.Second),
		},
		{
			Pos: engine.Position{Topic: "in.ndjson", Partition: 0, Offset: 7},
			Raw: []byte(`{"type":"nope","userId":"<u&>"}`), Reason: "unknown_type", Detail: `type: "nope"`,
		},
	}
}
