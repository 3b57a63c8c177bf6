package sink

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/cdpstream/cdpstream/engine"
)

// readArrow reads the IPC stream at path and returns its rows (message id,
// key, profile id, raw, identifiers) and the number of batches.
func readArrow(t *testing.T, path string) (rows []row, batches int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	r, err := ipc.NewReader(f, ipc.WithAllocator(mem), ipc.WithSchema(engine.Schema))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	for r.Next() {
		rec := r.RecordBatch()
		for c, col := range rec.Columns() {
			if v, ok := col.(interface{ ValidateFull() error }); ok {
				if err := v.ValidateFull(); err != nil {
					t.Fatalf("column %d: %v", c, err)
				}
			}
		}
		batches++
		msg := rec.Column(engine.ColMessageID).(*array.String)
		key := rec.Column(engine.ColKey).(*array.Binary)
		pid := rec.Column(engine.ColProfileID).(*array.Uint32)
		raw := rec.Column(engine.ColRaw).(*array.Binary)
		ids := rec.Column(engine.ColIdentifiers).(*array.List)
		st := ids.ListValues().(*array.Struct)
		typ, val := st.Field(0).(*array.String), st.Field(1).(*array.String)
		for i := 0; i < int(rec.NumRows()); i++ {
			x := row{msgID: msg.Value(i), pid: pid.Value(i), raw: string(raw.Value(i))}
			if key.IsValid(i) {
				x.key = append([]byte{}, key.Value(i)...)
			}
			lo, hi := ids.ValueOffsets(i)
			for j := lo; j < hi; j++ {
				x.ids = append(x.ids, [2]string{typ.Value(int(j)), val.Value(int(j))})
			}
			rows = append(rows, x)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return rows, batches
}

func checkRows(t *testing.T, got, want []row) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d rows, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.msgID != w.msgID || string(g.key) != string(w.key) || (g.key == nil) != (w.key == nil) ||
			g.pid != w.pid || g.raw != w.raw || len(g.ids) != len(w.ids) {
			t.Fatalf("row %d:\n got %+v\nwant %+v", i, g, w)
		}
		for j := range w.ids {
			if g.ids[j] != w.ids[j] {
				t.Fatalf("row %d identifier %d: got %v, want %v", i, j, g.ids[j], w.ids[j])
			}
		}
	}
}

func TestArrowIPCSelections(t *testing.T) {
	rows := testRows(50)
	sels := selections(len(rows))
	for _, codec := range []string{CompressionNone, CompressionZstd, CompressionLZ4} {
		for _, name := range sortedKeys(sels) {
			sel := sels[name]
			t.Run(codec+"/"+name, func(t *testing.T) {
				mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
				b := makeBatch(t, mem, rows...)
				path := filepath.Join(t.TempDir(), "out.arrows")
				s, err := NewArrowIPC("arrow", FileConfig{Path: path, Format: FormatArrow, Compression: codec})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Write(context.Background(), b, sel); err != nil {
					t.Fatal(err)
				}
				b.Release()
				mem.AssertSize(t, 0) // slices and gathered copies released
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				got, batches := readArrow(t, path)
				checkRows(t, got, selected(rows, sel))
				wantBatches := 0
				switch {
				case sel == nil:
					wantBatches = 1
				case len(sel) == 0:
				case countRuns(sel) > maxSliceRuns:
					wantBatches = 1
				default:
					wantBatches = countRuns(sel)
				}
				if batches != wantBatches {
					t.Errorf("%d batches, want %d", batches, wantBatches)
				}
			})
		}
	}
}

// TestArrowIPCContinue: reopening continues one stream, also after a
// crash that left no end-of-stream marker and a torn message.
func TestArrowIPCContinue(t *testing.T) {
	rows := testRows(30)
	b := makeBatch(t, memory.NewGoAllocator(), rows...)
	defer b.Release()
	path := filepath.Join(t.TempDir(), "out.arrows")
	cfg := FileConfig{Path: path, Format: FormatArrow, Compression: CompressionZstd}
	open := func() *ArrowIPC {
		t.Helper()
		s, err := NewArrowIPC("arrow", cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	write := func(s *ArrowIPC, sel []int) {
		t.Helper()
		if err := s.Write(context.Background(), b, sel); err != nil {
			t.Fatal(err)
		}
	}

	s := open()
	write(s, []int{0, 1, 2})
	s.Close()

	s = open() // after a clean close: the marker is cut off
	write(s, []int{3, 4})
	write(s, []int{5})
	// Crash: no Close. Simulate a Write torn in the middle of a message.
	s.f.Write([]byte{0xff, 0xff, 0xff, 0xff, 0x40, 0x01, 0, 0, 0x10, 0x00})
	s.f.Close()

	s = open()
	write(s, []int{6, 7})
	s.Close()

	s = open() // reopen and close without writing: still one valid stream
	s.Close()

	got, batches := readArrow(t, path)
	checkRows(t, got, selected(rows, []int{0, 1, 2, 3, 4, 5, 6, 7}))
	if batches != 4 {
		t.Errorf("%d batches, want 4", batches)
	}
}

func TestArrowIPCRefusesForeignFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"text":  "hello, not arrow\n",
		"other": otherSchemaStream(t),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := NewArrowIPC("arrow", FileConfig{Path: path, Format: FormatArrow}); err == nil {
			t.Errorf("%s: opened a file that is not an event stream", name)
		}
		after, _ := os.ReadFile(path)
		if string(after) != content {
			t.Errorf("%s: file changed", name)
		}
	}
}

// otherSchemaStream returns a valid IPC stream of a different schema.
func otherSchemaStream(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "x")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.NewGoAllocator()
	bld := array.NewInt64Builder(mem)
	bld.AppendValues([]int64{1, 2, 3}, nil)
	col := bld.NewArray()
	schema := arrow.NewSchema([]arrow.Field{engine.Schema.Field(engine.ColOffset)}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, 3)
	w := ipc.NewWriter(f, ipc.WithSchema(rec.Schema()))
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	w.Close()
	f.Close()
	data, _ := os.ReadFile(path)
	return string(data)
}
