// Package engine is the base every other cdpstream package builds on: the
// event batch and its Arrow schema, the component interfaces (Source,
// Stage, Sink, DeadLetterSink, Filter), the pipeline Runner, the metrics
// wrapper, the HTTP server, the registry of Pebble key families and the
// Keyring of per-profile encryption keys.
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
// cdp_engine_records_dropped_total{sink,type,reason},
// cdp_engine_committed_total, cdp_engine_inflight_batches,
// cdp_engine_batch_delay_seconds.
//
// # Pebble key families
//
// One byte of prefix per family (store.go): 0x02 input offsets per owning
// stage (engine), 0x03 the keyring (engine), 0x04 compaction debt
// (engine), 0x10-0x1f identity, 0x20-0x2f segments, 0x30-0x3f privacy and
// audit. Engine owns 0x00-0x0f.
//
// # Compaction debt (compact.go)
//
// Erasers (identity, consent, audiences) delete a person's keys and stage
// the deleted spans as debt — identity in the erasure's own synced batch,
// consent and audiences in a synced batch right after theirs (a crash in
// between is covered by the privacy request running Erase again):
//
//	0x04 | SHA-256(value)[:16] → value: uvarint len(lo) | lo | hi
//
// Compactor.Run pays it in the background, woken by each erasure: one
// flush (the memtable and the WAL files holding the deleted values become
// obsolete), each span (overlapping ones merged) compacted through every
// level, then the debt records deleted; debt left by a crash is paid after
// the next start. A privacy request is completed when the person is gone
// from every lookup and their keys are destroyed; the physical removal
// follows within the next pass (cdp_engine_compaction_debt_spans,
// cdp_engine_compaction_debt_seconds). Erasing inline instead cost one
// flush and a run of per-level compactions per eraser, each rewriting much
// of the base level: seconds per request at a million people.
//
// # Keyring (keyring.go): encryption at rest, crypto-shredding
//
// Personal values at rest (identity's identifier values, audience traits)
// are sealed with AES-256-GCM under a random 256-bit data key per profile
// id (crypto/rand, or WithRandom in tests). Data keys are stored wrapped
// (AES-256-GCM) by a 32-byte master key from EncryptionConfig (config or
// environment; never logged, never stored):
//
//	0x03 0x00              → 1 | HMAC-SHA256(master key, "cdpstream keyring check v1")[:16]
//	0x03 0x01 | pid (4 BE) → 1 | nonce (12) | sealed data key (32) | tag (16);
//	                          aad "cdpstream profile key v1" | pid
//	0x03 0x02 | id (16)    → 1 | nonce (12) | sealed data key (32) | tag (16);
//	                          aad "cdpstream id key v1" | id
//
// The id space (keyring_ids.go: KeyID, SealID, OpenID, DestroyID) is for
// personal data that belongs to no profile id: privacy keeps one key per
// request (its identities and rectification while it is open) and one per
// export, and destroys them when the request finishes and when the export
// expires or its person is erased. Its keys follow the invariants below
// (staged into the caller's batch, pinned until Committed or Abandon,
// sealed values bound to id | aad), except that they are not cached:
// each is used a handful of times, and a SealID or OpenID with its read
// and unwrap (6-8 µs for 512 bytes, BenchmarkKeyringID) is small beside
// the synced commits around it.
//
// NewKeyring records the check value in an empty store and refuses another
// master key (ErrMasterKeyMismatch). RotateMasterKey (keyring_rotate.go,
// `cdpstream keys rotate`) moves a stopped store to a new master key: it
// re-wraps every data key a synced chunk at a time (the data sealed under
// them is untouched), recording its progress under 0x03 0x03 so that an
// interrupted rotation resumes (NewKeyring refuses the store meanwhile,
// ErrRotationInProgress), then switches the check value and compacts the
// keyring's range, so no key wrapped under the old master key stays in
// the store's files. A sealed value is nonce (96 random
// bits, fresh per Seal) | ciphertext | tag, authenticated with aad = pid
// (4 BE) | the caller's aad (its purpose, and what else the value must stay
// bound to): it opens only for its profile and purpose (ErrDecrypt
// otherwise), so no ciphertext can be moved to another profile. With 2^32
// random nonces per key the collision odds stay below 2^-32; no profile
// comes near that many writes.
//
// Invariants:
//
//   - A key is created on a profile's first Seal and staged into the
//     caller's Pebble batch, so it commits atomically with the first data
//     it protects. Until the caller reports the batch's fate (Committed,
//     Abandon) the key is pinned in memory, and every Seal of the profile
//     meanwhile, from any caller and batch, uses it and stages the same
//     wrapped bytes: two writers can never commit different keys for one
//     profile. A batch that never commits leaves no key behind.
//   - Destroy(w, pid) stages the key's deletion into the eraser's batch
//     (with the rest of the erasure), drops it from memory and keeps it
//     out of the cache until the batch is reported; after the commit Open
//     fails with ErrKeyDestroyed, here and in any keyring on the store, and
//     every copy of what was sealed under the key (old SSTs, backups, WAL
//     tails, free disk blocks) is unreadable. Erasers also compact the
//     key's range (KeyringKey, KeyringSpan) so the wrapped key leaves the
//     SSTs; with Pebble's WAL recycling on, a recycled WAL can still hold
//     it (engine.OpenStore turns recycling off; audience's
//     TestErase/sealed-pebble-default shows the difference).
//   - Unwrapped keys are cached, at most EncryptionConfig.CacheEntries, in
//     two generations (approximate LRU): a cached Open of 64 bytes costs
//     0.25-0.5 µs, a miss 3-6 µs (a Pebble read, the unwrap, AES key
//     expansion and GCM setup; BenchmarkKeyring).
//   - A destroyed key is never re-created: a profile written again after
//     its erasure gets a new key, under which the old copies do not open.
//
// Metrics (WithKeyringRegisterer): cdp_engine_keyring_cache_total{result},
// cdp_engine_keyring_keys_total{event} (created, destroyed).
package engine
