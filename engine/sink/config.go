package sink

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/engine"
)

// Config is one named sink as it appears in the YAML config: a name and
// exactly one of the kafka, file or stdout blocks.
//
//	sinks:
//	  - name: analytics
//	    kafka: {topic: events.analytics, key: profile_id, compression: zstd}
//	  - name: archive
//	    file: {path: /var/lib/cdpstream/events.arrows, format: arrow, compression: zstd}
//	  - name: debug
//	    stdout: {}
//
// A block must be present to count: write `stdout: {}`, since a bare
// `stdout:` is null in YAML.
type Config struct {
	// Name identifies the sink in metrics, logs and per-sink policies; it
	// is used as a Prometheus label. Letters, digits, '_' and '-', at most
	// 64 characters.
	Name string `yaml:"name"`
	// Events says whether the sink receives events. Default true; false
	// makes a sink for control records only (see Records).
	Events *bool `yaml:"events,omitempty"`
	// Records lists the control records the sink receives besides events:
	// "merge" (profile merges, for re-keying downstream), "audience"
	// (audience entries and exits), "deletion" (erasure notices). Default none.
	// Kafka, NDJSON and stdout sinks can carry them.
	Records []string `yaml:"records,omitempty"`
	// Minimize limits what of each event the sink sees: allow/deny JSON
	// paths and SHA-256 of chosen fields. Kafka, NDJSON and stdout sinks
	// (they write the raw event); not Arrow files.
	Minimize *MinimizeConfig `yaml:"minimize,omitempty"`
	Kafka    *KafkaConfig    `yaml:"kafka,omitempty"`
	File     *FileConfig     `yaml:"file,omitempty"`
	Stdout   *StdoutConfig   `yaml:"stdout,omitempty"`
}

// KafkaConfig is a Kafka topic sink.
type KafkaConfig struct {
	// Topic receives the events. It must exist (the producer does not create
	// topics).
	Topic string `yaml:"topic"`
	// Key selects the record key: profile_id (default), original,
	// message_id or none. See KeyMode.
	Key KeyMode `yaml:"key"`
	// Compression of produced batches: none, gzip, snappy (default), lz4 or
	// zstd. zstd needs brokers ≥ 2.1.
	Compression string `yaml:"compression"`
	// Linger is how long a partition waits for more records before a
	// produce request is built. Default 0: Write hands over a whole batch
	// at once and waits for it, so batches fill while the previous request
	// is in flight, and lingering would only add latency to every Write.
	Linger time.Duration `yaml:"linger"`
	// Client is the connection. When Client.Brokers is empty the caller
	// fills it from the source (KafkaClientConfig.Inherit) before New.
	Client KafkaClientConfig `yaml:"client"`
}

// FileConfig is a file sink.
type FileConfig struct {
	// Path of the file, created with mode 0640 if missing and appended to
	// otherwise. "-" is not allowed: use the stdout sink.
	Path string `yaml:"path"`
	// Format is ndjson (default: the raw JSON of each event on its own
	// line) or arrow (an Arrow IPC stream in engine.Schema).
	Format string `yaml:"format"`
	// Sync fsyncs the file before every Write returns (default true). With
	// false an acknowledged batch can be lost in a machine crash (not in a
	// process crash).
	Sync *bool `yaml:"sync"`
	// Compression of Arrow IPC bodies: none (default), zstd or lz4. Only
	// for format arrow.
	Compression string `yaml:"compression"`
}

// StdoutConfig is the stdout sink: the raw JSON of each event on its own
// line on standard output. It has no options.
type StdoutConfig struct{}

// DeadLetterConfig is the dead-letter sink: exactly one of kafka or file.
type DeadLetterConfig struct {
	Kafka *DeadLetterKafkaConfig `yaml:"kafka,omitempty"`
	File  *DeadLetterFileConfig  `yaml:"file,omitempty"`
}

// DeadLetterKafkaConfig is a dead-letter topic. Fields mean what they mean
// in KafkaConfig; the record key is always the original key.
type DeadLetterKafkaConfig struct {
	Topic       string            `yaml:"topic"`
	Compression string            `yaml:"compression"`
	Linger      time.Duration     `yaml:"linger"`
	Client      KafkaClientConfig `yaml:"client"`
}

// DeadLetterFileConfig is a dead-letter NDJSON file (one JSON object per
// rejected record, see FileDeadLetter).
type DeadLetterFileConfig struct {
	// Path of the file, created with mode 0640 and appended to.
	Path string `yaml:"path"`
	// Sync fsyncs before every WriteDead returns (default true).
	Sync *bool `yaml:"sync"`
}

// KeyMode selects the Kafka record key of an event.
type KeyMode string

const (
	// KeyProfileID keys by the resolved profile id as decimal text, so that
	// every event of a person lands in one partition, in order. A row not
	// yet resolved (profile id 0) falls back to the original key.
	KeyProfileID KeyMode = "profile_id"
	// KeyOriginal keeps the key of the input record (nil if it had none).
	KeyOriginal KeyMode = "original"
	// KeyMessageID keys by the message id: spreads load evenly and lets a
	// compacted topic de-duplicate redeliveries.
	KeyMessageID KeyMode = "message_id"
	// KeyNone writes no key; franz-go's sticky partitioner fills one
	// partition at a time.
	KeyNone KeyMode = "none"
)

// Compression codec names, for KafkaConfig.Compression and, for none, zstd
// and lz4, FileConfig.Compression.
const (
	CompressionNone   = "none"
	CompressionGzip   = "gzip"
	CompressionSnappy = "snappy"
	CompressionLZ4    = "lz4"
	CompressionZstd   = "zstd"
)

// File formats for FileConfig.Format.
const (
	FormatNDJSON = "ndjson"
	FormatArrow  = "arrow"
)

// Defaults fills unset fields of c and of its one block.
func (c *Config) Defaults() {
	if c.Kafka != nil {
		c.Kafka.Defaults()
	}
	if c.File != nil {
		c.File.Defaults()
	}
}

// Validate checks c. Messages name the yaml field relative to the sink
// ("kafka.compression: ..."); the caller prefixes the sink's position
// ("sinks[2].").
func (c *Config) Validate() error {
	if err := validName(c.Name); err != nil {
		return err
	}
	var set []string
	if c.Kafka != nil {
		set = append(set, "kafka")
	}
	if c.File != nil {
		set = append(set, "file")
	}
	if c.Stdout != nil {
		set = append(set, "stdout")
	}
	switch len(set) {
	case 0:
		return errors.New("kafka: one of kafka, file, stdout is required (for stdout write `stdout: {}`)")
	case 1:
	default:
		return fmt.Errorf("%s: only one of kafka, file, stdout may be set, found %s and %s", set[1], set[0], set[1])
	}
	for i, r := range c.Records {
		if !slices.Contains(recordTypes, r) {
			return fmt.Errorf("records[%d]: unknown record type %q (want %s)", i, r, strings.Join(recordTypes, ", "))
		}
		if c.File != nil && c.File.Format == FormatArrow {
			return fmt.Errorf("records[%d]: an arrow file cannot carry control records", i)
		}
	}
	if !c.Minimize.empty() {
		if c.File != nil && c.File.Format == FormatArrow {
			return errors.New("minimize: an arrow file carries every column; minimise with an ndjson file, kafka or stdout sink")
		}
		if err := c.Minimize.Validate(); err != nil {
			return prefix("minimize.", err)
		}
	}
	if c.Events != nil && !*c.Events && len(c.Records) == 0 {
		return errors.New("events: false with no records: the sink would receive nothing")
	}
	switch {
	case c.Kafka != nil:
		return prefix("kafka.", c.Kafka.Validate())
	case c.File != nil:
		return prefix("file.", c.File.Validate())
	}
	return nil
}

// Defaults fills unset fields: key profile_id, compression snappy, client
// id.
func (c *KafkaConfig) Defaults() {
	if c.Key == "" {
		c.Key = KeyProfileID
	}
	if c.Compression == "" {
		c.Compression = CompressionSnappy
	}
	c.Client.Defaults()
}

// Validate checks c; messages name the field relative to the kafka block.
func (c *KafkaConfig) Validate() error {
	if err := validTopic(c.Topic); err != nil {
		return err
	}
	switch c.Key {
	case KeyProfileID, KeyOriginal, KeyMessageID, KeyNone:
	default:
		return fmt.Errorf("key: unknown mode %q (want profile_id, original, message_id, none)", c.Key)
	}
	if _, err := kafkaCodec(c.Compression); err != nil {
		return err
	}
	if c.Linger < 0 {
		return fmt.Errorf("linger: %s is negative", c.Linger)
	}
	return prefix("client.", c.Client.Validate())
}

// Defaults fills unset fields: format ndjson, sync true, compression none.
func (c *FileConfig) Defaults() {
	if c.Format == "" {
		c.Format = FormatNDJSON
	}
	if c.Sync == nil {
		t := true
		c.Sync = &t
	}
	if c.Compression == "" {
		c.Compression = CompressionNone
	}
}

// Validate checks c; messages name the field relative to the file block.
func (c *FileConfig) Validate() error {
	if err := validPath(c.Path); err != nil {
		return err
	}
	switch c.Format {
	case FormatNDJSON:
		if c.Compression != "" && c.Compression != CompressionNone {
			return fmt.Errorf("compression: %q is only supported with format arrow", c.Compression)
		}
	case FormatArrow:
		if _, err := arrowCodec(c.Compression); err != nil {
			return err
		}
	default:
		return fmt.Errorf("format: unknown format %q (want ndjson, arrow)", c.Format)
	}
	return nil
}

// Defaults fills unset fields of the one block.
func (c *DeadLetterConfig) Defaults() {
	if c.Kafka != nil {
		c.Kafka.Defaults()
	}
	if c.File != nil {
		c.File.Defaults()
	}
}

// Validate checks c; messages name the field relative to the dead-letter
// block ("kafka.topic: ...").
func (c *DeadLetterConfig) Validate() error {
	switch {
	case c.Kafka == nil && c.File == nil:
		return errors.New("kafka: one of kafka, file is required")
	case c.Kafka != nil && c.File != nil:
		return errors.New("file: only one of kafka, file may be set")
	case c.Kafka != nil:
		return prefix("kafka.", c.Kafka.Validate())
	default:
		return prefix("file.", c.File.Validate())
	}
}

// Defaults fills unset fields: compression snappy, client id.
func (c *DeadLetterKafkaConfig) Defaults() {
	if c.Compression == "" {
		c.Compression = CompressionSnappy
	}
	c.Client.Defaults()
}

// Validate checks c; messages name the field relative to the kafka block.
func (c *DeadLetterKafkaConfig) Validate() error {
	if err := validTopic(c.Topic); err != nil {
		return err
	}
	if _, err := kafkaCodec(c.Compression); err != nil {
		return err
	}
	if c.Linger < 0 {
		return fmt.Errorf("linger: %s is negative", c.Linger)
	}
	return prefix("client.", c.Client.Validate())
}

// Defaults fills unset fields: sync true.
func (c *DeadLetterFileConfig) Defaults() {
	if c.Sync == nil {
		t := true
		c.Sync = &t
	}
}

// Validate checks c; messages name the field relative to the file block.
func (c *DeadLetterFileConfig) Validate() error {
	return validPath(c.Path)
}

// New returns the sink cfg describes. It applies Defaults and Validate;
// errors name the field as Validate does. A Kafka sink needs brokers
// (fill them with KafkaClientConfig.Inherit first); the client connects
// lazily, so an unreachable broker shows up at the first Write.
func New(cfg Config) (engine.Sink, error) {
	s, err := newSink(cfg)
	if err != nil {
		return nil, err
	}
	events := s
	if !cfg.Minimize.empty() {
		m, err := NewMinimizer(*cfg.Minimize)
		if err != nil {
			s.Close()
			return nil, prefix("minimize.", err)
		}
		events = &minimized{Sink: s, m: m}
	}
	r, err := route(events, s, cfg)
	if err != nil {
		s.Close()
		return nil, err
	}
	return r, nil
}

func newSink(cfg Config) (engine.Sink, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Each branch returns its own nil on error: a nil *Kafka in an
	// engine.Sink would not compare equal to nil.
	switch {
	case cfg.Kafka != nil:
		s, err := NewKafka(cfg.Name, *cfg.Kafka)
		if err != nil {
			return nil, prefix("kafka.", err)
		}
		return s, nil
	case cfg.File != nil && cfg.File.Format == FormatArrow:
		s, err := NewArrowIPC(cfg.Name, *cfg.File)
		if err != nil {
			return nil, prefix("file.", err)
		}
		return s, nil
	case cfg.File != nil:
		s, err := NewNDJSON(cfg.Name, *cfg.File)
		if err != nil {
			return nil, prefix("file.", err)
		}
		return s, nil
	default:
		return NewStdout(cfg.Name, nil), nil
	}
}

// NewDeadLetter returns the dead-letter sink cfg describes, applying
// Defaults and Validate.
func NewDeadLetter(cfg DeadLetterConfig) (engine.DeadLetterSink, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Kafka != nil {
		s, err := NewKafkaDeadLetter(*cfg.Kafka)
		if err != nil {
			return nil, prefix("kafka.", err)
		}
		return s, nil
	}
	s, err := NewFileDeadLetter(*cfg.File)
	if err != nil {
		return nil, prefix("file.", err)
	}
	return s, nil
}

// prefix puts a field path in front of a validation error.
func prefix(p string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s%w", p, err)
}

func validName(n string) error {
	if n == "" {
		return errors.New("name: required")
	}
	if len(n) > 64 {
		return fmt.Errorf("name: %q is longer than 64 characters", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("name: %q: use letters, digits, '_' and '-'", n)
		}
	}
	return nil
}

// validTopic applies Kafka's topic name rules.
func validTopic(t string) error {
	switch {
	case t == "":
		return errors.New("topic: required")
	case len(t) > 249:
		return fmt.Errorf("topic: %q is longer than 249 characters", t)
	case t == "." || t == "..":
		return fmt.Errorf("topic: %q is not a valid topic name", t)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic: %q: use letters, digits, '.', '_' and '-'", t)
		}
	}
	return nil
}

func validPath(p string) error {
	switch p {
	case "":
		return errors.New("path: required")
	case "-":
		return errors.New(`path: "-" is not a file; use the stdout sink`)
	}
	return nil
}

// kafkaCodec maps a compression name to its franz-go codec.
func kafkaCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case CompressionNone:
		return kgo.NoCompression(), nil
	case CompressionGzip:
		return kgo.GzipCompression(), nil
	case CompressionSnappy:
		return kgo.SnappyCompression(), nil
	case CompressionLZ4:
		return kgo.Lz4Compression(), nil
	case CompressionZstd:
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("compression: unknown codec %q (want none, gzip, snappy, lz4, zstd)", name)
}
