package sink

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaMirror copies an append-only log (the audit trail) to a topic:
// Produce hands a record over without waiting, and every record carries
// the same key, so they land on one partition in the order produced; the
// producer is idempotent with acks all, as the other Kafka sinks. It is a
// copy, not the log, and never holds the log up: Produce never blocks (a
// record that finds MirrorBuffered records still unacknowledged fails at
// once), and a record the brokers do not acknowledge within
// MirrorDeliveryTimeout fails. A failed record is counted in Failed,
// reported to onError, and not produced again.
// Bounds of a KafkaMirror's producer.
const (
	MirrorBuffered        = 10000
	MirrorDeliveryTimeout = 30 * time.Second
)

type KafkaMirror struct {
	topic   string
	key     []byte
	cl      *kgo.Client
	failed  atomic.Uint64
	onError func(error)
}

// NewKafkaMirror returns a mirror producing to cfg.Topic with key (Defaults
// are applied, then Validate); onError, if set, is called from franz-go's
// goroutine for each record that failed. extra options are appended.
func NewKafkaMirror(cfg DeadLetterKafkaConfig, key string, onError func(error), extra ...kgo.Opt) (*KafkaMirror, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bounds := []kgo.Opt{kgo.MaxBufferedRecords(MirrorBuffered), kgo.RecordDeliveryTimeout(MirrorDeliveryTimeout)}
	cl, err := newProducer(cfg.Client, cfg.Compression, cfg.Linger, append(bounds, extra...)...)
	if err != nil {
		return nil, err
	}
	return &KafkaMirror{topic: cfg.Topic, key: []byte(key), cl: cl, onError: onError}, nil
}

// Produce hands value over to the producer and returns at once; with
// MirrorBuffered records unacknowledged, the record fails instead.
// value must not be modified afterwards.
func (m *KafkaMirror) Produce(value []byte) {
	m.cl.TryProduce(context.Background(), &kgo.Record{Topic: m.topic, Key: m.key, Value: value}, func(_ *kgo.Record, err error) {
		if err != nil {
			m.failed.Add(1)
			if m.onError != nil {
				m.onError(err)
			}
		}
	})
}

// Failed is the number of records the brokers did not acknowledge.
func (m *KafkaMirror) Failed() uint64 { return m.failed.Load() }

// Close waits until every produced record is acknowledged or failed
// (bounded by ctx), then closes the client.
func (m *KafkaMirror) Close(ctx context.Context) error {
	err := m.cl.Flush(ctx)
	m.cl.Close()
	return err
}
