package sink

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/cdpstream/cdpstream/engine"
)

// Stdout writes the raw JSON of every selected event as one line to an
// io.Writer, standard output by default. Write returns once the lines are
// handed to the writer; nothing is synced.
type Stdout struct {
	name string

	mu      sync.Mutex
	bw      *bufio.Writer
	scratch []int
	closed  bool
}

// NewStdout returns a stdout sink writing to w, or to os.Stdout when w is
// nil. Close does not close w.
func NewStdout(name string, w io.Writer) *Stdout {
	if w == nil {
		w = os.Stdout
	}
	return &Stdout{name: name, bw: bufio.NewWriterSize(w, 64<<10)}
}

// Name returns the sink's configured name.
func (s *Stdout) Name() string { return s.name }

// Write writes one line per selected row and flushes. Calls are
// serialised.
func (s *Stdout) Write(ctx context.Context, b *engine.Batch, sel []int) error {
	n, ok, err := begin(ctx, b, sel)
	if !ok {
		return err
	}
	raw, err := columnAs[*array.Binary](b, engine.ColRaw)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	var rows []int
	rows, s.scratch = rowsOf(sel, n, s.scratch)
	for _, i := range rows {
		writeLine(s.bw, raw.Value(i))
	}
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("sink %s: cannot write: %w", s.name, err)
	}
	return nil
}

// Close marks the sink closed; the writer is left open.
func (s *Stdout) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
