// Package sink holds the outputs of the pipeline: the engine.Sink
// implementations (Kafka topic, NDJSON file, Arrow IPC stream file,
// stdout), the engine.DeadLetterSink implementations (Kafka topic, NDJSON
// file), their YAML configuration (Config, DeadLetterConfig) and the Kafka
// connection settings shared with the Kafka source (KafkaClientConfig).
//
// # Contract
//
// Write(ctx, b, sel) writes the rows of b.Rec listed in sel (ascending;
// nil means every row, an empty non-nil sel writes nothing) and returns
// only once they are durably handed over, so that the runner may commit
// the batch's input offsets afterwards. What "durably" means per sink:
//
//   - Kafka: every record acknowledged by the brokers with acks=all, by
//     franz-go's idempotent producer (a retried request cannot duplicate or
//     reorder records within a partition).
//   - NDJSON and Arrow IPC file: written and fsynced (sync: true, the
//     default). With sync: false, written to the OS: survives a process
//     crash, not a machine crash.
//   - stdout: handed to the io.Writer.
//   - dead-letter: as the Kafka or NDJSON file sink.
//
// Delivery is at-least-once: a batch whose Write failed, or that was
// written but not committed before a crash, is written again after the
// restart. Every event carries a stable message id (the cdp-message-id
// header, the messageId in the raw JSON, the message_id column) for
// downstream de-duplication.
//
// Ownership: no sink keeps b or sel after Write returns. The Kafka sink
// hands the Arrow buffers to franz-go without copying (record values point
// into the raw column), so it retains b.Rec until the last record's promise
// has run; if ctx ends first, Write returns ctx's error at once and the
// last promise releases the record.
//
// Concurrency: the Kafka sinks accept concurrent Writes (each Write has
// its own pooled state); the file and stdout sinks serialise them.
//
// No sink buffers between Writes (each Write flushes or waits for its
// acks), so none implements engine.Flusher, and Close loses nothing that a Write
// acknowledged.
//
// # Ordering
//
// Rows are written in sel order. Files keep that order across Writes. In
// Kafka, order holds per partition: with key profile_id every event of a
// resolved person goes to one partition, in order (until a merge, after
// which the person's events follow the surviving profile id's partition);
// concurrent Writes interleave.
//
// # Kafka sink
//
// The record value is the raw JSON of the event, byte for byte (no
// re-encoding). The key is chosen by KeyMode:
//
//   - profile_id (default): the profile id as decimal text; a row not yet
//     resolved (profile id 0) falls back to the original key.
//   - original: the key of the input record, nil when it had none.
//   - message_id: the message id.
//   - none: no key (franz-go's sticky partitioner).
//
// Headers: cdp-message-id and cdp-profile-id (decimal, "0" when not
// resolved). Batches are compressed with none, gzip, snappy (default), lz4
// or zstd; franz-go sends a batch uncompressed when compression would not
// make it smaller. Linger defaults to 0 (see KafkaConfig.Linger). The
// record timestamp is the time of the Write. The producer does not create
// topics. A Write against unreachable or refusing brokers only reports
// ctx's deadline, since franz-go retries until then; Kafka.Ping reports the
// cause and suits start-up checks and /readyz.
//
// # NDJSON file and stdout
//
// One event per line: the raw JSON and '\n'. A raw event with CR or LF
// (pretty-printed JSON from Kafka) has them replaced by spaces, which JSON
// treats as whitespace, so the line means the same event. The file is
// opened for appending and created with mode 0640; if it ends in a torn
// line (a crash mid-write) a newline is added before the first new event,
// leaving the torn line in place for the reader to skip (its event was not
// acknowledged and is written again).
//
// # Arrow IPC stream file
//
// An Arrow IPC stream in engine.Schema, optionally with zstd or lz4 body
// compression. A nil sel writes b.Rec as one record batch; a selection of
// up to 16 contiguous runs writes each run as a zero-copy slice; a more
// fragmented selection is first copied into one record (an IPC message per
// run would cost more framing than data). The file stays one stream across
// restarts: on open, an existing stream is checked against engine.Schema,
// its end-of-stream marker and any torn tail message are cut off, and new
// batches continue it without repeating the schema. A file that is not such
// a stream is never modified.
//
// # Dead-letter sinks
//
// Kafka: value the original bytes, key the original key, headers
// cdp-dlq-reason, cdp-dlq-detail, cdp-source-topic, cdp-source-partition,
// cdp-source-offset and cdp-dlq-time (RFC 3339 with nanoseconds, UTC).
// File: one JSON object per line (DeadLetterLine) with reason, detail,
// source {topic, partition, offset}, time, key_b64, raw (the original
// bytes as a string when they are valid UTF-8) and raw_b64 (always). A zero
// DeadLetter.Time is stamped with the time of the write.
//
// # Configuration
//
// Config and DeadLetterConfig are the YAML blocks; Defaults fills them,
// Validate names the offending field relative to the block
// ("kafka.compression: unknown codec ..."), and the caller prefixes the
// block's position ("sinks[2]."). New and NewDeadLetter build a sink from
// a block. A Kafka block without brokers takes the source's connection
// through KafkaClientConfig.Inherit, which the caller applies before New.
//
// # Metrics
//
// Sinks do not count themselves: the runner's one wrapper (engine.Metrics)
// counts every sink the same way, with component "sink:<name>":
// cdp_engine_received_total and cdp_engine_sent_total (rows written),
// cdp_engine_errors_total, cdp_engine_batch_seconds (Write latency), and
// cdp_engine_dropped_total{sink,reason} for rows the sink's filter did not
// select; the dead-letter sink's records are cdp_engine_dead_letter_total
// by reason. The Kafka client's own metrics (buffered records, request
// latency) are franz-go's, reachable through kgo hooks passed as extra
// options to NewKafka.
package sink

import "github.com/cdpstream/cdpstream/engine"

var (
	_ engine.Sink           = (*Kafka)(nil)
	_ engine.Sink           = (*NDJSON)(nil)
	_ engine.Sink           = (*ArrowIPC)(nil)
	_ engine.Sink           = (*Stdout)(nil)
	_ engine.DeadLetterSink = (*KafkaDeadLetter)(nil)
	_ engine.DeadLetterSink = (*FileDeadLetter)(nil)
)
