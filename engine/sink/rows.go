package sink

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/cdpstream/cdpstream/engine"
)

// errClosed is returned by Write after Close.
var errClosed = errors.New("sink: closed")

// begin checks a Write's arguments: ctx still live, rows to write, sel in
// range. It returns the batch's row count and false, with a nil error,
// when there is nothing to write.
func begin(ctx context.Context, b *engine.Batch, sel []int) (n int, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	n = b.Rows()
	if n == 0 || (sel != nil && len(sel) == 0) {
		return n, false, nil
	}
	if err := checkSel(sel, n); err != nil {
		return n, false, err
	}
	return n, true, nil
}

// checkSel reports whether sel is a valid selection of n rows. sel is
// ascending by contract, so its ends bound every index.
func checkSel(sel []int, n int) error {
	if len(sel) == 0 {
		return nil
	}
	if sel[0] < 0 || sel[len(sel)-1] >= n {
		return fmt.Errorf("sink: selection [%d..%d] out of range for %d rows", sel[0], sel[len(sel)-1], n)
	}
	return nil
}

// rowsOf returns the rows to write: sel itself, or when sel is nil the
// indices 0..n-1 written into scratch (grown as needed and returned so the
// caller can keep it for the next call).
func rowsOf(sel []int, n int, scratch []int) (rows, newScratch []int) {
	if sel != nil {
		return sel, scratch
	}
	if cap(scratch) < n {
		scratch = make([]int, n)
	}
	scratch = scratch[:n]
	for i := range scratch {
		scratch[i] = i
	}
	return scratch, scratch
}

// columnAs returns column col of b.Rec as T, or an error naming the column
// when the batch is not in engine.Schema.
func columnAs[T any](b *engine.Batch, col int) (T, error) {
	a, ok := b.Rec.Column(col).(T)
	if !ok {
		var zero T
		return zero, fmt.Errorf("sink: column %s is %s, not in engine.Schema", engine.Schema.Field(col).Name, b.Rec.Column(col).DataType())
	}
	return a, nil
}

// strCol reads a string column as bytes without copying: the slices point
// into the Arrow buffer and live as long as the record.
type strCol struct {
	vals []byte
	offs []int32
}

func newStrCol(a *array.String) strCol {
	var vals []byte
	if buf := a.Data().Buffers()[2]; buf != nil {
		vals = buf.Bytes()
	}
	// ValueOffsets is already adjusted for the array's offset.
	return strCol{vals: vals, offs: a.ValueOffsets()}
}

func (c strCol) at(i int) []byte {
	lo, hi := c.offs[i], c.offs[i+1]
	return c.vals[lo:hi:hi]
}

// writeLine writes one raw event and a newline. JSON allows a line break
// only as whitespace between tokens (inside strings it must be escaped), so
// a pretty-printed event is turned into one line by replacing CR and LF
// with spaces: the event means the same and the NDJSON framing holds. The
// common case, an event without line breaks, is written as is.
func writeLine(w *bufio.Writer, raw []byte) {
	if bytes.IndexByte(raw, '\n') < 0 && bytes.IndexByte(raw, '\r') < 0 {
		w.Write(raw)
	} else {
		for _, c := range raw {
			if c == '\n' || c == '\r' {
				c = ' '
			}
			w.WriteByte(c)
		}
	}
	w.WriteByte('\n')
}

// flushSync hands what bw buffers to f and, with sync, to the disk: the
// point at which a file sink may acknowledge. Errors name the writer as
// "kind name" (name may be empty); the name is only formatted on error, so
// the success path does not allocate.
func flushSync(kind, name, path string, bw *bufio.Writer, f *os.File, sync bool) error {
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%s: cannot write %s: %w", who(kind, name), path, err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("%s: cannot sync %s: %w", who(kind, name), path, err)
		}
	}
	return nil
}

func who(kind, name string) string {
	if name == "" {
		return kind
	}
	return kind + " " + name
}
