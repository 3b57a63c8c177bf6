// Package engine is the base every other cdpstream package builds on: the
// event batch and its Arrow schema, the component interfaces (Source,
// Stage, Sink, DeadLetterSink, Filter), the pipeline Runner, the metrics
// wrapper, the HTTP server and the registry of Pebble key families.
//
// # Event batch schema
//
// A Batch carries one Arrow record in Schema. Columns, in order (the order
// is part of the Arrow IPC files sinks write, so columns are only ever
// appended):
//
//	message_id    utf8      the event's messageId, or "cdp-" + 32 hex digits
//	                        of SHA-256 of the raw bytes when it has none
//	type          uint8     EventType: 1 identify, 2 track, 3 page, 4 screen,
//	                        5 group, 6 alias, 7 consent (cdpstream's own)
//	event         utf8?     track event name (null for other types)
//	timestamp     ts[us,UTC] timestamp, else originalTimestamp, else
//	                        receivedAt, else the Kafka record time, else arrival
//	topic         utf8      source topic ("file:<path>" for files)
//	partition     int32     source partition (0 for files)
//	offset        int64     source offset (line number for files)
//	key           binary?   the Kafka record key
//	user_id       utf8?     userId (numbers kept as their JSON text)
//	anonymous_id  utf8?     anonymousId
//	previous_id   utf8?     previousId (alias)
//	group_id      utf8?     groupId (group)
//	identifiers   list<struct<type utf8, value utf8>>
//	                        further identifiers as found (email, phone,
//	                        device ids, context.externalIds), not normalised
//	profile_id    uint32    0 until the identity stage resolves the row
//	consent_mask  uint64    0 until the consent stage fills it: bit i set
//	                        when the person granted purpose i
//	raw           binary    the original record, byte for byte
//	consent_fields binary?  the event's consent fields as sparse JSON with
//	                        the event's nesting (null: not extracted, read raw)
//
// ("?" marks nullable columns.)
//
// # Invariants
//
//   - Ownership: a Batch has one owner at a time. The source creates it, the
//     runner passes it through the stages and to every sink, and releases
//     it once every sink acknowledged it and its offsets are committed.
//   - Offsets commit in batch order and only after the dead-letter sink and
//     every sink acknowledged the batch: at-least-once delivery; a crash
//     replays at most the batches in flight.
//   - No record disappears: each is either a row of a batch or a dead letter
//     with its original bytes, position and reason. A batch with dead
//     letters and no dead-letter sink stops the runner.
//   - Memory is bounded: the steps of the runner are joined by channels of
//     RunnerConfig.QueueDepth batches.
//
// # Metrics
//
// Every component is counted by one wrapper (see Metrics):
// cdp_engine_{received,sent,errors}_total{component},
// cdp_engine_batch_seconds{component},
// cdp_engine_dead_letter_total{reason}, cdp_engine_dropped_total{sink,reason},
// cdp_engine_committed_total, cdp_engine_inflight_batches,
// cdp_engine_batch_delay_seconds.
//
// # Pebble key families
//
// One byte of prefix per family (store.go): 0x02 input offsets per owning stage (engine),
// 0x10-0x1f identity, 0x20-0x2f segments, 0x30-0x3f privacy and audit.
package engine
