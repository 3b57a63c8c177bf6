package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/cdpstream/cdpstream/engine"
)

// FileConfig configures the NDJSON file source: one event per line, from a
// file or standard input, for backfills and tests.
type FileConfig struct {
	// Path of the NDJSON file; "-" reads standard input.
	Path string `yaml:"path"`
}

// Validate reports the first invalid field.
func (c *FileConfig) Validate() error {
	if c.Path == "" {
		return errors.New("path: required (use \"-\" for standard input)")
	}
	return nil
}

// FileSource reads NDJSON lines into batches. A reader goroutine hands over
// chunks of whole lines, so a slow pipe still flushes batches on age. The
// position of a record is the path as topic, partition 0 and the 1-based
// line number as offset. Blank lines are skipped. Commit records how far
// the pipeline got (Committed); the file itself is never modified.
type FileSource struct {
	name   string
	b      *Batcher
	closer io.Closer
	chunks chan chunk
	free   chan []byte
	done   chan struct{}

	held      []byte // the chunk being parsed, returned to free when done
	rest      []byte // its unparsed lines
	line      int64
	committed atomic.Int64
	err       error
}

type chunk struct {
	buf []byte // whole lines, each ending in '\n' except maybe the last of the input
	err error  // io.EOF after the last chunk, or a read error
}

const chunkSize = 256 << 10

// NewFileSource opens cfg.Path (or takes r when it is not nil, naming the
// source cfg.Path). b is owned by the source from now on.
func NewFileSource(cfg FileConfig, b *Batcher, r io.Reader) (*FileSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("source.file.%w", err)
	}
	s := &FileSource{name: "file:" + cfg.Path, b: b, chunks: make(chan chunk, 2), free: make(chan []byte, 3), done: make(chan struct{})}
	switch {
	case r != nil:
	case cfg.Path == "-":
		r = os.Stdin
	default:
		f, err := os.Open(cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("source.file.path: %w", err)
		}
		r, s.closer = f, f
	}
	for i := 0; i < cap(s.free); i++ {
		s.free <- make([]byte, 0, chunkSize)
	}
	go s.read(r)
	return s, nil
}

// read splits the input into chunks of whole lines. A line longer than a
// chunk grows that chunk: no line is ever cut (the decoder rejects it as
// too_large with the whole record in the dead letter).
func (s *FileSource) read(r io.Reader) {
	defer close(s.chunks)
	br := bufio.NewReaderSize(r, chunkSize)
	for {
		var buf []byte
		select {
		case buf = <-s.free:
		case <-s.done:
			return
		}
		buf = buf[:0]
		var err error
		for {
			var line []byte
			line, err = br.ReadSlice('\n')
			buf = append(buf, line...)
			if errors.Is(err, bufio.ErrBufferFull) {
				err = nil
				continue // the same line goes on: a chunk ends only at a line end
			}
			if err != nil || br.Buffered() == 0 || len(buf) >= chunkSize-4096 {
				break
			}
		}
		select {
		case s.chunks <- chunk{buf: buf, err: err}:
		case <-s.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// Next implements engine.Source. It returns io.EOF after the last batch.
func (s *FileSource) Next(ctx context.Context) (*engine.Batch, error) {
	for {
		for len(s.rest) > 0 {
			line := s.rest
			if i := bytes.IndexByte(line, '\n'); i >= 0 {
				line, s.rest = line[:i], s.rest[i+1:]
			} else {
				s.rest = nil
			}
			s.line++
			line = bytes.TrimSuffix(line, []byte{'\r'})
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			// Add copies what it keeps, so the chunk can be reused.
			if s.b.Add(line, nil, engine.Position{Topic: s.name, Offset: s.line}, -1, time.Time{}) {
				return s.b.Flush(), nil
			}
		}
		if s.held != nil {
			s.free <- s.held[:0]
			s.held = nil
		}
		if s.err != nil {
			if errors.Is(s.err, io.EOF) {
				return s.b.Flush(), io.EOF
			}
			return s.b.Flush(), fmt.Errorf("cannot read %s: %w", s.name, s.err)
		}
		if err := ctx.Err(); err != nil {
			return s.b.Flush(), err
		}
		var timer *time.Timer
		var timeout <-chan time.Time
		if created := s.b.Created(); !created.IsZero() {
			wait := s.b.MaxAge() - time.Since(created)
			if wait <= 0 {
				return s.b.Flush(), nil
			}
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case c, ok := <-s.chunks:
			if !ok {
				s.err = io.EOF
				break
			}
			s.held, s.rest, s.err = c.buf, c.buf, c.err
		case <-timeout:
			return s.b.Flush(), nil
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return s.b.Flush(), ctx.Err()
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// Commit implements engine.Source: it records the last committed line.
func (s *FileSource) Commit(_ context.Context, offsets []engine.Offset) error {
	for _, o := range offsets {
		if last := o.Next - 1; last > s.committed.Load() {
			s.committed.Store(last)
		}
	}
	return nil
}

// Committed returns the last line number whose batch was committed.
func (s *FileSource) Committed() int64 { return s.committed.Load() }

// Close stops the reader and closes the file.
func (s *FileSource) Close() error {
	close(s.done)
	s.b.Release()
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}
