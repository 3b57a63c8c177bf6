package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/engine/sink"
)

// KafkaConfig configures the Kafka source: a consumer group over topics.
type KafkaConfig struct {
	// Client is the connection (brokers, TLS, SASL); its fields sit inline
	// in the source's YAML block.
	Client sink.KafkaClientConfig `yaml:",inline"`
	// Group is the consumer group. Default "cdpstream".
	Group string `yaml:"group"`
	// Topics to consume. Required.
	Topics []string `yaml:"topics"`
	// Start is where a group without committed offsets begins: "earliest"
	// (default: a new deployment processes the backlog) or "latest".
	Start string `yaml:"start"`
	// FetchMaxBytes caps one fetch response. Default 50 MiB (franz-go's).
	FetchMaxBytes int32 `yaml:"fetch_max_bytes"`
	// SessionTimeout is how long the group waits for a silent member (a
	// crashed instance) before its partitions move. Default 45s (franz-go's);
	// the broker bounds it with group.min/max.session.timeout.ms.
	SessionTimeout time.Duration `yaml:"session_timeout"`
}

// Defaults fills zero fields with their defaults.
func (c *KafkaConfig) Defaults() {
	c.Client.Defaults()
	if c.Group == "" {
		c.Group = "cdpstream"
	}
	if c.Start == "" {
		c.Start = "earliest"
	}
}

// Validate reports the first invalid field, named relative to the source's
// kafka block.
func (c *KafkaConfig) Validate() error {
	if err := c.Client.Validate(); err != nil {
		return err
	}
	if len(c.Client.Brokers) == 0 {
		return errors.New("brokers: at least one broker is required")
	}
	if len(c.Topics) == 0 {
		return errors.New("topics: at least one topic is required")
	}
	for i, t := range c.Topics {
		if t == "" {
			return fmt.Errorf("topics[%d]: empty topic name", i)
		}
	}
	if c.Start != "earliest" && c.Start != "latest" {
		return fmt.Errorf("start: %q is not earliest or latest", c.Start)
	}
	if c.FetchMaxBytes < 0 {
		return errors.New("fetch_max_bytes: must be >= 0")
	}
	if c.SessionTimeout < 0 {
		return errors.New("session_timeout: must be >= 0")
	}
	return nil
}

// KafkaSource consumes a consumer group with franz-go and decodes records
// into batches. Offsets are never auto-committed: the runner calls Commit
// once every sink has acknowledged a batch (at-least-once).
//
// Rebalances are not blocked: a batch in flight for a partition that moved
// to another member fails to commit, which is logged and tolerated; the new
// owner reads those records again (duplicates, never loss).
type KafkaSource struct {
	cl  *kgo.Client
	b   *Batcher
	log *slog.Logger

	pending []*kgo.Record
	pi      int

	lagMu  sync.Mutex
	lag    map[topicPartition]int64
	lagSum atomic.Int64
	lagG   *prometheus.GaugeVec
	fetchE prometheus.Counter
	lastE  time.Time
}

type topicPartition struct {
	topic     string
	partition int32
}

// NewKafkaSource connects to the brokers (lazily: franz-go dials on first
// use) and joins the group. b is owned by the source from now on. reg may
// be nil.
func NewKafkaSource(cfg KafkaConfig, b *Batcher, reg prometheus.Registerer, log *slog.Logger) (*KafkaSource, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("source.kafka.%w", err)
	}
	opts, err := cfg.Client.Opts()
	if err != nil {
		return nil, fmt.Errorf("source.kafka: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := kgo.NewOffset().AtStart()
	if cfg.Start == "latest" {
		start = kgo.NewOffset().AtEnd()
	}
	opts = append(opts,
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeResetOffset(start),
		kgo.DisableAutoCommit(),
		// Bound what franz-go buffers ahead of the pipeline (backpressure
		// reaches the brokers instead of memory).
		kgo.MaxConcurrentFetches(2),
	)
	if cfg.FetchMaxBytes > 0 {
		opts = append(opts, kgo.FetchMaxBytes(cfg.FetchMaxBytes))
	}
	if cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(cfg.SessionTimeout))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("source.kafka: cannot create client: %w", err)
	}
	s := &KafkaSource{cl: cl, b: b, log: log, lag: map[topicPartition]int64{},
		lagG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cdp_ingest_consumer_lag",
			Help: "Records between the last fetched offset and the high watermark, per partition."}, []string{"topic", "partition"}),
		fetchE: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_ingest_fetch_errors_total",
			Help: "Errors reported by Kafka fetches (franz-go retries them)."}),
	}
	if reg != nil {
		if err := reg.Register(s.lagG); err != nil {
			return nil, err
		}
		if err := reg.Register(s.fetchE); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Client exposes the franz-go client (e.g. for a readiness ping).
func (s *KafkaSource) Client() *kgo.Client { return s.cl }

// Ping checks that a broker answers.
func (s *KafkaSource) Ping(ctx context.Context) error { return s.cl.Ping(ctx) }

// Lag returns the summed consumer lag over the partitions seen so far.
func (s *KafkaSource) Lag() int64 { return s.lagSum.Load() }

// idleWait is how long one poll waits when the batch is empty.
const idleWait = time.Second

// Next implements engine.Source.
func (s *KafkaSource) Next(ctx context.Context) (*engine.Batch, error) {
	for {
		for s.pi < len(s.pending) {
			r := s.pending[s.pi]
			s.pending[s.pi] = nil
			s.pi++
			if s.b.Add(r.Value, r.Key, engine.Position{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}, r.LeaderEpoch, r.Timestamp) {
				return s.b.Flush(), nil
			}
		}
		s.pending, s.pi = s.pending[:0], 0
		if err := ctx.Err(); err != nil {
			// Records fetched but not added are not committed: they are
			// read again after a restart.
			return s.b.Flush(), err
		}
		wait := idleWait
		if created := s.b.Created(); !created.IsZero() {
			wait = s.b.MaxAge() - time.Since(created)
			if wait <= 0 {
				return s.b.Flush(), nil
			}
		}
		pctx, cancel := context.WithTimeout(ctx, wait)
		fetches := s.cl.PollRecords(pctx, 0)
		cancel()
		if fetches.IsClientClosed() {
			return s.b.Flush(), kgo.ErrClientClosed
		}
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			s.fetchE.Inc()
			if time.Since(s.lastE) > 10*time.Second {
				s.lastE = time.Now()
				s.log.Warn("kafka fetch error (retrying)", "topic", t, "partition", p, "err", err)
			}
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			s.setLag(p.Topic, p.Partition, p.HighWatermark-p.Records[len(p.Records)-1].Offset-1)
			s.pending = append(s.pending, p.Records...)
		})
	}
}

func (s *KafkaSource) setLag(topic string, partition int32, lag int64) {
	if lag < 0 {
		lag = 0
	}
	s.lagMu.Lock()
	tp := topicPartition{topic, partition}
	old, ok := s.lag[tp]
	s.lag[tp] = lag
	s.lagMu.Unlock()
	s.lagSum.Add(lag - old)
	if !ok || old != lag {
		s.lagG.WithLabelValues(topic, strconv.Itoa(int(partition))).Set(float64(lag))
	}
}

// Commit implements engine.Source: it commits the group offsets
// synchronously. Commits refused because the group rebalanced are logged
// and tolerated (the partition's new owner replays from its last commit).
func (s *KafkaSource) Commit(ctx context.Context, offsets []engine.Offset) error {
	m := make(map[string]map[int32]kgo.EpochOffset, 1)
	for _, o := range offsets {
		if m[o.Topic] == nil {
			m[o.Topic] = map[int32]kgo.EpochOffset{}
		}
		m[o.Topic][o.Partition] = kgo.EpochOffset{Epoch: o.Epoch, Offset: o.Next}
	}
	var cerr error
	s.cl.CommitOffsetsSync(ctx, m, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil && cerr == nil {
					cerr = e
				}
			}
		}
	})
	switch {
	case cerr == nil:
		return nil
	case errors.Is(cerr, kerr.RebalanceInProgress), errors.Is(cerr, kerr.IllegalGeneration),
		errors.Is(cerr, kerr.UnknownMemberID), errors.Is(cerr, kerr.FencedInstanceID):
		s.log.Warn("offset commit refused by a rebalance; records will be replayed", "err", cerr)
		return nil
	}
	return fmt.Errorf("cannot commit offsets: %w", cerr)
}

// Close leaves the group and releases the Batcher.
func (s *KafkaSource) Close() error {
	s.cl.Close()
	s.b.Release()
	return nil
}
