// Package ingest turns input records into event batches: it decodes
// Segment-spec JSON events, validates them, and appends them to Arrow
// records in engine.Schema. The Kafka and file sources of this package feed
// a Batcher and hand the batches it flushes to the runner.
//
// # What it owns
//
//   - Decoder: one record in, one Event (or a rejection) out. It holds a
//     fastjson.Parser and scratch buffers reused for every record, so it is
//     per goroutine; decoding allocates nothing in steady state.
//   - Batcher: a Decoder plus an Arrow RecordBuilder reused across batches.
//     It appends every valid event as a row, collects every rejected record
//     as an engine.DeadLetter, and tracks the next offset per
//     topic-partition. Flush hands the whole batch to the caller, who owns
//     it from then on (engine.Batch documents the ownership chain).
//
// # Decoding rules
//
// A record goes through these checks in order; the first failure decides
// the reason code:
//
//  1. size: more than DecodeConfig.MaxEventBytes bytes → too_large (checked
//     before anything else, so an oversized record costs nothing);
//  2. utf8.Valid → invalid_utf8;
//  3. fastjson parse → malformed_json; the top-level value must be an
//     object → not_object;
//  4. a field the decoder reads (type, messageId, event, userId,
//     anonymousId, previousId, groupId, timestamp, originalTimestamp,
//     receivedAt, traits, properties, context) given twice → bad_field.
//     Parsers disagree on which duplicate wins, and a sink reading the raw
//     JSON must see the same userId that identity resolution saw;
//  5. type: absent, null or "" → missing_type; not a string → bad_field;
//     not one of identify, track, page, screen, group, alias
//     (case-sensitive) → unknown_type;
//  6. field types: the ids (messageId, userId, anonymousId, previousId,
//     groupId) must be strings or numbers (a number is kept as its JSON
//     text, "userId": 42 gives "42"; a malformed number such as NaN →
//     bad_field); event must be a string; traits, properties and context
//     must be objects. null counts as absent everywhere, and so does ""
//     for ids and event;
//  7. timestamps: every one of timestamp, originalTimestamp and receivedAt
//     that is present must be a string that time.Parse(time.RFC3339, s)
//     accepts (the common forms take a fast path that does not allocate)
//     → else bad_timestamp. The
//     event time is the first present of timestamp, originalTimestamp,
//     receivedAt, then the record's time (Kafka record timestamp), then the
//     wall clock;
//  8. identity: alias needs userId and previousId, every other type userId
//     or anonymousId → missing_identity; track needs event →
//     missing_event; group needs groupId → missing_group_id;
//  9. identifiers: the values at the configured identifier paths (by
//     default traits.email, context.traits.email,
//     traits.phone, context.traits.phone, context.device.id,
//     context.device.advertisingId) and every {"type", "id"} entry of
//     context.externalIds, duplicates removed, in configuration order then
//     array order; more than DecodeConfig.MaxIdentifiers → bad_field.
//     A value that is not a non-empty string or a number is skipped, not
//     rejected: traits are free-form and an odd shape there says nothing
//     about the event.
//
// A record without messageId gets "cdp-" followed by the hex of the first
// 16 bytes of the SHA-256 of its bytes: the same record always gets the
// same id, so replays are de-duplicated downstream like any other event.
//
// fastjson is lenient where the decoder does not look: it accepts NaN,
// numbers like 1.2.3, raw control characters and unknown escapes inside
// strings. Such an event is accepted and its raw bytes are forwarded as
// they came. Set DecodeConfig.StrictJSON to reject it as malformed_json
// instead; that runs fastjson's validator first and about doubles the
// parse cost. One divergence remains even then: a lone UTF-16 surrogate
// escape in a field the decoder reads ("\ud800") is kept as its six
// characters, or becomes U+FFFD together with the escape after it, where
// encoding/json writes U+FFFD for it alone. FuzzDecode checks agreement
// with encoding/json on everything else.
//
// # Columns
//
// Every valid event fills every column of engine.Schema: message_id, type,
// event (null unless present), timestamp (microseconds, UTC), topic,
// partition and offset (engine.Position; for files the file name, 0 and the
// line number), key (the Kafka key; null when the record had none), the
// four id columns (null when absent), identifiers (a possibly empty list of
// {type, value}, values as found, not normalised), profile_id = 0 and
// consent_mask = 0 (filled later by identity and consent), raw (the
// record's bytes, unchanged, so a sink forwards the event without
// re-encoding it). Everything else in the event (context.consent,
// context.consentManagement, context.ip, traits, properties) stays
// reachable for later stages through raw; the decoder does not copy it out.
//
// # Invariants
//
//   - Every record given to Batcher.Add ends up in exactly one place: a row
//     of Batch.Rec or an entry of Batch.Dead, in input order within each.
//     Nothing is dropped silently.
//   - Batch.Offsets covers every record of the batch, valid or not: the
//     next offset of each topic-partition is the last record's offset + 1.
//   - A DeadLetter owns copies of the record's bytes and key; its Detail
//     names the failing field but never quotes the record (it may be
//     logged; events carry personal data).
//   - Nothing the caller passes to Add is retained: raw and key may be
//     reused as soon as Add returns.
//   - Decoding and appending an event allocate nothing once the builders
//     have grown to the batch size (asserted by TestBatcherAddZeroAllocs).
//
// # Memory
//
// With a nil allocator NewBatcher uses an engine.PoolAllocator, which
// recycles the buffers of released batches for later ones. The reason is
// the garbage collector more than the allocation itself: a batch of 4096
// events is several MiB of fresh buffers; with the Go allocator that keeps
// a collection running most of the time, and during a collection every
// pointer the JSON parser writes into its value tree pays a write barrier.
// Measured on a 600-byte event, decode+append runs about twice as fast with
// recycling (BenchmarkBatcherAdd/alloc=pool against alloc=go). The price
// is that a holder that keeps a slice of a column past Release reads later
// events instead of keeping stale memory alive; engine.Batch forbids that
// already.
//
// Within a batch the Batcher reserves builder capacity for the size of the
// previous batch, so that appends neither allocate nor copy, and it buffers
// the fixed-width columns in reused slices that Flush copies into their
// builders in one call each.
//
// # Metrics
//
// The package counts nothing itself. The runner's stage wrapper counts
// received events from Batch.Rec, dead letters by reason from Batch.Dead
// (Reasons lists every label value, for registering them up front), and
// the batching delay from Batch.Created and Batch.Flushed.
package ingest
