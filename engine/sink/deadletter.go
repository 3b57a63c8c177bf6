package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/engine"
)

// Record headers written by the Kafka dead-letter sink.
const (
	HeaderDLQReason          = "cdp-dlq-reason"
	HeaderDLQDetail          = "cdp-dlq-detail"
	HeaderDLQTime            = "cdp-dlq-time" // RFC 3339 with nanoseconds
	HeaderDLQSourceTopic     = "cdp-source-topic"
	HeaderDLQSourcePartition = "cdp-source-partition" // decimal
	HeaderDLQSourceOffset    = "cdp-source-offset"    // decimal
)

// KafkaDeadLetter produces rejected records to a topic: value the original
// bytes, key the original key, the reason, detail, time and source position
// in headers. It uses the same idempotent, acks-all producer as Kafka.
type KafkaDeadLetter struct {
	topic string
	cl    *kgo.Client
}

// NewKafkaDeadLetter returns a Kafka dead-letter sink for cfg (Defaults
// are applied, then Validate). extra options are appended as in NewKafka.
func NewKafkaDeadLetter(cfg DeadLetterKafkaConfig, extra ...kgo.Opt) (*KafkaDeadLetter, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cl, err := newProducer(cfg.Client, cfg.Compression, cfg.Linger, extra...)
	if err != nil {
		return nil, err
	}
	return &KafkaDeadLetter{topic: cfg.Topic, cl: cl}, nil
}

// WriteDead produces every record of dead in order and returns when all
// are acknowledged, or with the first error. A zero Time is stamped with
// the current time. Not a hot path: records and headers are allocated.
func (s *KafkaDeadLetter) WriteDead(ctx context.Context, dead []engine.DeadLetter) error {
	if len(dead) == 0 {
		return nil
	}
	now := time.Now()
	recs := make([]kgo.Record, len(dead))
	ptrs := make([]*kgo.Record, len(dead))
	for i := range dead {
		d := &dead[i]
		t := d.Time
		if t.IsZero() {
			t = now
		}
		recs[i] = kgo.Record{
			Topic: s.topic,
			Key:   d.Key,
			Value: d.Raw,
			Headers: []kgo.RecordHeader{
				{Key: HeaderDLQReason, Value: []byte(d.Reason)},
				{Key: HeaderDLQDetail, Value: []byte(d.Detail)},
				{Key: HeaderDLQSourceTopic, Value: []byte(d.Pos.Topic)},
				{Key: HeaderDLQSourcePartition, Value: strconv.AppendInt(nil, int64(d.Pos.Partition), 10)},
				{Key: HeaderDLQSourceOffset, Value: strconv.AppendInt(nil, d.Pos.Offset, 10)},
				{Key: HeaderDLQTime, Value: t.UTC().AppendFormat(nil, time.RFC3339Nano)},
			},
			Timestamp: now,
		}
		ptrs[i] = &recs[i]
	}
	// ProduceSync waits for every promise, also when ctx ends (cancelling
	// fails the records not yet sent), so nothing is in flight afterwards.
	if err := s.cl.ProduceSync(ctx, ptrs...).FirstErr(); err != nil {
		return fmt.Errorf("dead-letter: cannot produce to %s: %w", s.topic, err)
	}
	return nil
}

// Ping checks that a broker answers and accepts the client's TLS and SASL
// settings (see Kafka.Ping).
func (s *KafkaDeadLetter) Ping(ctx context.Context) error {
	if err := s.cl.Ping(ctx); err != nil {
		return fmt.Errorf("dead-letter: kafka unreachable: %w", err)
	}
	return nil
}

// Close closes the client. Safe to call more than once.
func (s *KafkaDeadLetter) Close() error {
	s.cl.Close()
	return nil
}

// FileDeadLetter appends rejected records to a file, one JSON object per
// line:
//
//	{"reason":"bad_json","detail":"...","source":{"topic":"events","partition":3,"offset":1234},
//	 "time":"2026-01-02T03:04:05.123456789Z","key_b64":"dXNlci0x","raw":"{\"type\":...","raw_b64":"eyJ0eXBlIjo..."}
//
// raw_b64 is always present, so the original bytes survive whatever they
// are; raw repeats them as a JSON string when they are valid UTF-8, for
// people reading the file. key_b64 is omitted when the record had no key.
type FileDeadLetter struct {
	path    string
	sync    bool
	regular bool

	mu  sync.Mutex
	f   *os.File
	bw  *bufio.Writer
	enc *json.Encoder
	err error // sticky after a failed write
}

// DeadLetterLine is one line of a FileDeadLetter file.
type DeadLetterLine struct {
	Reason string           `json:"reason"`
	Detail string           `json:"detail"`
	Source DeadLetterSource `json:"source"`
	Time   string           `json:"time"`
	KeyB64 []byte           `json:"key_b64,omitempty"` // base64 in JSON
	Raw    *string          `json:"raw,omitempty"`
	RawB64 []byte           `json:"raw_b64"` // base64 in JSON
}

// DeadLetterSource is the input position of a dead-lettered record.
type DeadLetterSource struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// NewFileDeadLetter opens (creating with mode 0640) cfg.Path for appending.
func NewFileDeadLetter(cfg DeadLetterFileConfig) (*FileDeadLetter, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f, regular, err := openAppend(cfg.Path)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	return &FileDeadLetter{
		path:    cfg.Path,
		sync:    *cfg.Sync && regular,
		regular: regular,
		f:       f,
		bw:      bw,
		enc:     enc,
	}, nil
}

// WriteDead appends one line per record, flushes and (with sync) fsyncs.
func (s *FileDeadLetter) WriteDead(ctx context.Context, dead []engine.DeadLetter) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(dead) == 0 {
		return nil
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errClosed
	}
	if s.err != nil {
		return s.err
	}
	for i := range dead {
		d := &dead[i]
		t := d.Time
		if t.IsZero() {
			t = now
		}
		line := DeadLetterLine{
			Reason: string(d.Reason),
			Detail: d.Detail,
			Source: DeadLetterSource{Topic: d.Pos.Topic, Partition: d.Pos.Partition, Offset: d.Pos.Offset},
			Time:   t.UTC().Format(time.RFC3339Nano),
			KeyB64: d.Key,
			RawB64: d.Raw,
		}
		if line.RawB64 == nil {
			line.RawB64 = []byte{} // "" rather than null: raw_b64 is always a string
		}
		if utf8.Valid(d.Raw) {
			r := string(d.Raw)
			line.Raw = &r
		}
		if err := s.enc.Encode(&line); err != nil {
			s.err = fmt.Errorf("dead-letter: cannot encode record from %s: %w", d.Pos, err)
			return s.err
		}
	}
	if err := flushSync("dead-letter", "", s.path, s.bw, s.f, s.sync); err != nil {
		s.err = err
		return err
	}
	return nil
}

// Close flushes, syncs and closes the file. Safe to call more than once.
func (s *FileDeadLetter) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := closeFile(s.f, s.bw, s.regular)
	s.f = nil
	if err != nil {
		return fmt.Errorf("dead-letter: cannot close %s: %w", s.path, err)
	}
	return nil
}
