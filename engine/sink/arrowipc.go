package sink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/cdpstream/cdpstream/engine"
)

// maxSliceRuns is the number of contiguous runs of a selection up to which
// ArrowIPC writes each run as its own zero-copy slice (one IPC message per
// run). Beyond it the selected rows are copied into one record first (see
// gatherer): every IPC message costs about a kilobyte of metadata and
// padding for the event schema, so a selection that drops every other row
// would otherwise write more framing than data.
const maxSliceRuns = 16

// ArrowIPC writes selected rows to a file as an Arrow IPC stream in
// engine.Schema, optionally with zstd or lz4 body compression. See the
// package documentation for its guarantees.
//
// The file holds one stream across restarts: when it exists, NewArrowIPC
// checks that it is a stream of engine.Schema, cuts off the end-of-stream
// marker and any torn message after the last complete batch (a crash in
// the middle of a Write, never acknowledged), and continues the stream
// without repeating the schema.
type ArrowIPC struct {
	name    string
	path    string
	sync    bool
	regular bool

	mu     sync.Mutex
	f      *os.File
	bw     *bufio.Writer
	w      *ipc.Writer
	gather gatherer
	err    error // sticky: after a failed write the stream may hold a torn message
}

// NewArrowIPC opens cfg.Path (creating it with mode 0640) for an Arrow IPC
// stream; cfg must be valid with Format arrow. See ArrowIPC for how an
// existing file is continued. An existing file that is not a stream of
// engine.Schema is left untouched and reported as an error.
func NewArrowIPC(name string, cfg FileConfig) (*ArrowIPC, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Format != FormatArrow {
		return nil, fmt.Errorf("format: %q is not %q", cfg.Format, FormatArrow)
	}
	codec, _ := arrowCodec(cfg.Compression) // validated
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("path: cannot open: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("path: cannot stat: %w", err)
	}
	regular := fi.Mode().IsRegular()
	continuing := false
	if regular && fi.Size() > 0 {
		end, err := scanArrowStream(f, fi.Size())
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("path: %s is not an Arrow IPC stream of the event schema (move it away): %w", cfg.Path, err)
		}
		if err := f.Truncate(end); err != nil {
			f.Close()
			return nil, fmt.Errorf("path: cannot truncate to the last complete batch: %w", err)
		}
		if _, err := f.Seek(end, io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("path: cannot seek: %w", err)
		}
		continuing = true
	}
	bw := bufio.NewWriterSize(f, bufSize)
	opts := []ipc.Option{ipc.WithSchema(engine.Schema), ipc.WithAllocator(memory.DefaultAllocator)}
	if codec != nil {
		opts = append(opts, codec)
	}
	pw := &streamPayloadWriter{w: bw, skipSchema: continuing}
	return &ArrowIPC{
		name:    name,
		path:    cfg.Path,
		sync:    *cfg.Sync && regular,
		regular: regular,
		f:       f,
		bw:      bw,
		w:       ipc.NewWriterWithPayloadWriter(pw, opts...),
	}, nil
}

// arrowCodec maps a compression name to its IPC option (nil for none).
func arrowCodec(name string) (ipc.Option, error) {
	switch name {
	case CompressionNone, "":
		return nil, nil
	case CompressionZstd:
		return ipc.WithZstd(), nil
	case CompressionLZ4:
		return ipc.WithLZ4(), nil
	}
	return nil, fmt.Errorf("compression: unknown codec %q for format arrow (want none, zstd, lz4)", name)
}

// Name returns the sink's configured name.
func (s *ArrowIPC) Name() string { return s.name }

// Write appends the selected rows as record batches, flushes and (with
// sync) fsyncs before returning. A nil sel writes b.Rec as is; otherwise
// each contiguous run of sel is a zero-copy slice of b.Rec, unless sel is
// fragmented into more than maxSliceRuns runs, then the selected rows are
// copied into one record. Calls are serialised.
func (s *ArrowIPC) Write(ctx context.Context, b *engine.Batch, sel []int) error {
	_, ok, err := begin(ctx, b, sel)
	if !ok {
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
	if err := s.write(b.Rec, sel); err != nil {
		s.err = fmt.Errorf("sink %s: cannot write %s: %w", s.name, s.path, err)
		return s.err
	}
	if err := flushSync("sink", s.name, s.path, s.bw, s.f, s.sync); err != nil {
		s.err = err
		return err
	}
	return nil
}

func (s *ArrowIPC) write(rec arrow.RecordBatch, sel []int) error {
	if sel == nil {
		return s.w.Write(rec)
	}
	if countRuns(sel) > maxSliceRuns {
		g, err := s.gather.gather(rec, sel)
		if err != nil {
			return err
		}
		defer g.Release()
		return s.w.Write(g)
	}
	for i := 0; i < len(sel); {
		j := runEnd(sel, i)
		sl := rec.NewSlice(int64(sel[i]), int64(sel[j-1]+1))
		err := s.w.Write(sl)
		sl.Release()
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}

// runEnd returns the end (exclusive) of the run of consecutive row indices
// starting at sel[i].
func runEnd(sel []int, i int) int {
	j := i + 1
	for j < len(sel) && sel[j] == sel[j-1]+1 {
		j++
	}
	return j
}

func countRuns(sel []int) int {
	runs := 0
	for i := 0; i < len(sel); i = runEnd(sel, i) {
		runs++
	}
	return runs
}

// Close ends the stream (end-of-stream marker), flushes, syncs and closes
// the file. Safe to call more than once.
func (s *ArrowIPC) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	var errs []error
	if s.err == nil {
		errs = append(errs, s.w.Close())
	}
	errs = append(errs, closeFile(s.f, s.bw, s.regular))
	s.f = nil
	s.gather.release()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sink %s: cannot close %s: %w", s.name, s.path, err)
	}
	return nil
}

// streamPayloadWriter writes IPC messages in stream framing, like the
// writer ipc.NewWriter uses, but can skip the schema message: when an
// existing stream is continued the schema is already in the file.
type streamPayloadWriter struct {
	w          io.Writer
	skipSchema bool
	started    bool
}

func (p *streamPayloadWriter) Start() error { return nil }

func (p *streamPayloadWriter) WritePayload(pl ipc.Payload) error {
	// The ipc.Writer writes exactly one schema message first (the event
	// schema has no dictionaries), then record batches.
	first := !p.started
	p.started = true
	if first && p.skipSchema {
		return nil
	}
	_, err := pl.WritePayload(p.w)
	return err
}

// eos is the IPC end-of-stream marker: continuation token, zero length.
var eos = [8]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}

func (p *streamPayloadWriter) Close() error {
	_, err := p.w.Write(eos[:])
	return err
}

// scanArrowStream reads the stream in f (size bytes) from the start and
// returns the offset just after its last complete record batch message. The
// stream must start with the schema of engine.Schema and hold only record
// batches, optionally followed by the end-of-stream marker or by a torn
// message that runs into the end of the file. Anything else (a damaged
// message, data after the marker) is an error: cutting there could lose
// acknowledged batches. Message bodies are read but not decoded.
func scanArrowStream(f *os.File, size int64) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	cr := &countingReader{r: bufio.NewReaderSize(f, bufSize)}
	mr := ipc.NewMessageReader(cr)
	// The reader takes over mr (it releases it, also on error) and reads
	// only the schema; the batches are walked with mr directly.
	rd, err := ipc.NewReaderFromMessageReader(mr, ipc.WithSchema(engine.Schema))
	if err != nil {
		return 0, err
	}
	defer rd.Release()
	end := cr.n
	for {
		msg, err := mr.Message()
		switch {
		case err == nil:
		case errors.Is(err, io.ErrUnexpectedEOF):
			return end, nil // torn tail
		case errors.Is(err, io.EOF):
			// The end-of-stream marker, or the file ends right after a
			// complete message.
			if cr.n != size {
				return 0, fmt.Errorf("%d bytes after the end-of-stream marker at offset %d", size-cr.n, end)
			}
			return end, nil
		default:
			return 0, fmt.Errorf("damaged message at offset %d: %w", end, err)
		}
		if msg.Type() != ipc.MessageRecordBatch {
			return 0, fmt.Errorf("unexpected %s message at offset %d", msg.Type(), end)
		}
		end = cr.n
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
