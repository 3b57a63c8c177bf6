package sink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/cdpstream/cdpstream/engine"
)

// fileMode is the permission of files the sinks create: events are personal
// data, so no access for others.
const fileMode = 0o640

// bufSize is the buffer between the sinks and their file: large enough that
// a batch of events costs a few write syscalls.
const bufSize = 256 << 10

// NDJSON writes the raw JSON of every selected event as one line to a file,
// appending. See the package documentation for its guarantees.
type NDJSON struct {
	name    string
	path    string
	sync    bool // fsync in every Write
	regular bool // fsync possible (not a pipe or device)

	mu      sync.Mutex
	f       *os.File
	bw      *bufio.Writer
	scratch []int
	err     error // sticky: after a failed write the file may hold a torn line
}

// NewNDJSON opens (creating with mode 0640) the file cfg.Path for appending.
// cfg must be valid with Format ndjson (see FileConfig). When the file ends
// in a torn line (a crash in the middle of a write), a newline is appended
// first so that the next event starts on its own line; the torn line is
// kept, since its event was never acknowledged it will be written again.
func NewNDJSON(name string, cfg FileConfig) (*NDJSON, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Format != FormatNDJSON {
		return nil, fmt.Errorf("format: %q is not %q", cfg.Format, FormatNDJSON)
	}
	f, regular, err := openAppend(cfg.Path)
	if err != nil {
		return nil, err
	}
	return &NDJSON{
		name:    name,
		path:    cfg.Path,
		sync:    *cfg.Sync && regular,
		regular: regular,
		f:       f,
		bw:      bufio.NewWriterSize(f, bufSize),
	}, nil
}

// Name returns the sink's configured name.
func (s *NDJSON) Name() string { return s.name }

// Write appends the raw event of every selected row and a newline, flushes
// and, with sync on, fsyncs before returning. Calls are serialised.
func (s *NDJSON) Write(ctx context.Context, b *engine.Batch, sel []int) error {
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
	if s.f == nil {
		return errClosed
	}
	if s.err != nil {
		return s.err
	}
	var rows []int
	rows, s.scratch = rowsOf(sel, n, s.scratch)
	for _, i := range rows {
		writeLine(s.bw, raw.Value(i))
	}
	if err := flushSync("sink", s.name, s.path, s.bw, s.f, s.sync); err != nil {
		s.err = err
		return err
	}
	return nil
}

// Close flushes what is buffered (nothing after a successful Write), syncs
// (also with sync off) and closes the file. It is safe to call more than once.
func (s *NDJSON) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := closeFile(s.f, s.bw, s.regular)
	s.f = nil
	if err != nil {
		return fmt.Errorf("sink %s: cannot close %s: %w", s.name, s.path, err)
	}
	return nil
}

// openAppend opens path for appending, creating it with fileMode, and
// terminates a torn last line with a newline. regular reports whether f is a
// regular file: fsync fails on pipes and devices (a path such as /dev/null
// is allowed), so only regular files are synced.
func openAppend(path string) (f *os.File, regular bool, err error) {
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return nil, false, fmt.Errorf("path: cannot open: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("path: cannot stat: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return f, false, nil
	}
	if err := terminateLastLine(f, path, fi.Size()); err != nil {
		f.Close()
		return nil, false, err
	}
	return f, true, nil
}

func terminateLastLine(f *os.File, path string, size int64) error {
	if size == 0 {
		return nil
	}
	// f is write-only; read the last byte through a second descriptor.
	r, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("path: cannot read: %w", err)
	}
	defer r.Close()
	var last [1]byte
	if _, err := r.ReadAt(last[:], size-1); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("path: cannot read: %w", err)
	}
	if last[0] == '\n' {
		return nil
	}
	if _, err := f.Write([]byte{'\n'}); err != nil {
		return fmt.Errorf("path: cannot terminate torn last line: %w", err)
	}
	return nil
}

// closeFile flushes bw (if any), syncs f (if sync) and closes it, returning
// every error.
func closeFile(f *os.File, bw *bufio.Writer, sync bool) error {
	var errs []error
	if bw != nil {
		errs = append(errs, bw.Flush())
	}
	if sync {
		errs = append(errs, f.Sync())
	}
	errs = append(errs, f.Close())
	return errors.Join(errs...)
}
