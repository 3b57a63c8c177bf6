// Package identity resolves every event to one profile: it owns identifier
// normalisation, the identity graph in Pebble, the merge rules, and the
// merge log.
//
// # Pieces
//
//   - Config: identifier types (priority, normaliser, limit with optional
//     window, unique, blocked values exact and regex), caps, cache size, and
//     the HMAC secret (from config or an environment variable).
//   - Graph (New): the graph over a *pebble.DB the caller owns. Lookup,
//     LookupHash and LookupRef (by SHA-256 of the value), Profile, Log,
//     RemoveIdentifier, ReplaceIdentifier (rectification), Split, Erase,
//     Suppress, UnsuppressIdentities, Suppressed, Inactive (retention),
//     Apply, Check, Routes/Handler. WithKeyring (an engine.Keyring) seals
//     identifier values per profile; see Encryption.
//   - Stage (NewStage): the engine.Stage that resolves a batch.
//   - Op and Apply: every change is an Op (create, link, touch, merge,
//     refuse, remove, split, erase, suppress, unsuppress, replace). Ops are
//     deterministic: the same Ops applied in the same order to the same
//     graph give the same graph: the same identifiers, profiles, merge log,
//     suppression and counters (TestOpsReplay compares the decoded,
//     decrypted graphs). Sealed values are not the same bytes on two
//     stores, since each draws its own profile keys and nonces and a
//     record's sealed chunks follow its commits; with the same random
//     source and the same commits they are (TestOpsReplay checks two such
//     replicas byte for byte, as the tests' seeded keyrings rely on). The
//     Ops carry plain values; the identity log that publishes them (a later
//     issue) must protect them itself. The Stage decides Ops from events and applies
//     them; txn.apply is the only code that mutates the graph. OnCommit
//     hands each commit's Ops to a hook: the later identity-log issue
//     publishes them to Kafka and replicas call Apply.
//   - RunBench / BenchEnv: the workload behind `go test -bench` and the
//     10M-identifier run of `cdpstream bench`.
//
// # Where identifiers come from
//
// user_id from the user_id column, anonymous_id from anonymous_id, and
// every type of the identifiers column (email, phone, device_id,
// advertising_id, context.externalIds types) as named by the decoder; types
// not in Config.Types are ignored unless unknown_types is "accept". An
// alias event's previousId is not a type of its own: Segment documents it
// as "an anonymous id or a user id you previously identified the user
// with". It is read as a user_id when that user id is already known, and as
// an anonymous_id otherwise, so aliasing an anonymous visitor links their
// anonymous id, and aliasing a known user id merges the two profiles (which
// the user_id limit may refuse: aliasing one user id to another then needs
// a limit above 1). The decoder does not normalise; identity does, per
// type, then drops blocked values (the value stays in the event; it just
// never becomes an identifier, counted in cdp_identity_values_dropped_total).
//
// # Resolution
//
// For each event, in batch order: if all its identifiers belong to one
// profile, that is the answer (fast path). Otherwise the identifiers are
// ordered by priority (then type name, then value) and the union of their
// profiles plus the new identifiers is checked: profiles marked apart by a
// split must not merge; a unique type may hold one value; a limit counts
// the values first seen within any window of its length. A type is checked
// only if the union changes its values. On a violation the lowest-priority
// identifier is dropped from matching and matching retries (which may
// create a new profile). Then the caps: a merge past max_merges or
// max_identifiers does not happen (the event resolves to the profile of its
// highest-priority known identifier), and new identifiers past
// max_identifiers are not added. Every refusal is counted by reason and
// written to the merge log (once per batch for the same profiles and rule).
// The oldest (lowest id) profile survives a merge.
//
// A replayed event (its offset is below the input offset committed with
// the graph) is resolved read-only, to the profile now holding its first
// identifier in priority order, which is where resolving it the first time
// put it. Offsets committed by the Stage never move back.
//
// Un-merge: Split of a live profile returns every identifier to the
// profile it came from (its origin), restoring every absorbed profile;
// Split of a merged id takes it, and what was merged into it before, out of
// its survivor. Identifiers added after a merge stay with the profile that
// added them. The parts are marked apart. A restored profile's created time
// is the time of the split (the original is not kept).
//
// # Key layout (prefixes 0x10-0x1f are identity's; values start with a version byte, v = 1 unless shown)
//
//	0x10 0x01                 → v | uvarint next profile id | uvarint next log seq
//	0x10 0x02                 → hmac16 of the check string "...secret check v2" (as an
//	                              identifier of type ""): New refuses another secret
//	                              (ErrSecretMismatch) and the v1 derivation (ErrOldDerivation)
//	0x10 0x03                 free (erased keys to compact are engine compaction debt, 0x04)
//	0x10 0x04                 → v | uvarint next suppression group id (absent: 1)
//	0x11 | hmac16             → v | uvarint profile id | varint last seen (unix s)
//	0x12 | profile id (4 BE)  → 2 | 0 (live) | varint created (unix s)       (with a keyring)
//	                              | uvarint n, n × (uvarint merged id, uvarint parent)
//	                              | uvarint n, n × uvarint apart id
//	                              | uvarint n, n × (uvarint type id, uvarint origin,
//	                                  varint first seen, uvarint last-first, hmac16)
//	                              | uvarint c, c × (uvarint count, uvarint len, sealed values)
//	                          → 1 | 0 (live) | … as v2 up to the identifiers, then
//	                                n × (uvarint type id, uvarint origin, varint first seen,
//	                                uvarint last-first, uvarint len, value)   (no keyring)
//	                          → 1 | 1 (redirect) | uvarint survivor          (both)
//	0x13 | seq (8 BE)         → v | kind (| 0x80: tombstone) | varint time (unix µs) | uvarint survivor
//	                              | uvarint n, n × uvarint merged | uvarint len, message id
//	                              | uvarint len, rule
//	0x14 | profile id | seq   → empty: the merge-log entries naming a profile
//	0x15 | type name          → v | uvarint type id (dense from 1; ids in profile records)
//	0x18 | hmac16             → v | uvarint group: a suppressed identifier
//	0x19 | group (8 BE)       → v | uvarint n, n × hmac16 (sorted): a suppression group
//
// (0x16 and 0x17 are left free.)
//
// hmac16 is the first 16 bytes of HMAC-SHA256(secret, type name | 0x00 |
// SHA-256(normalised value)): no identifier is in a key in plain text.
// The value is hashed before the HMAC so that a caller holding only the
// SHA-256 of a value (an OpenDSR identity in format sha256) can find its
// key (LookupHash); it costs one SHA-256 per identifier of an event. This
// is the v2 derivation; v1 took the HMAC of the plain value, and New
// refuses a store written with it (ErrOldDerivation) rather than find
// nothing in it: such a store is rebuilt from the input topics. The
// normalised values are kept only in profile records, because lookups
// show them (masked) and access exports and deletion notices list them;
// with a keyring they are sealed there (see Encryption), and nothing of
// identity's holds them in plain at rest.
//
// # Encryption (WithKeyring)
//
// A v2 profile record keeps in plain what resolution needs (types, origins,
// times, and each identifier's hmac16, the same bytes as its 0x11 key) and
// seals the values with the profile's key (engine.Keyring, AES-256-GCM), in
// chunks: each holds the values of a run of consecutive identifiers
// (plaintext: uvarint len | value, each), sealed with aad
// "cdpstream identity values v1" | the hmac16 of those identifiers (the
// keyring adds the profile id), so a chunk opens only in its place, for its
// identifiers, in its profile's record. Consequences:
//
//   - Resolution never decrypts: the fast path reads 0x11 only; a touch
//     finds identifiers by hash and rewrites the record with its chunks
//     copied as they are; erasure deletes identifier keys from the stored
//     hashes. A link seals only the new values, as one more chunk (a
//     commit that would make a fifth chunk seals all values again as one,
//     so a record has at most four: about 30 bytes each).
//   - Values are opened only to show them (Lookup, Profile, hence the
//     exports, deletion notices and audience activation by identifier),
//     for Check, and where identifiers change profile: a merge opens the
//     merged profiles' chunks and seals their values again under the
//     survivor's key (with the survivor's new chunk at commit); a split
//     opens the survivor's and seals each part's under the part's key; a
//     removal of a sealed identifier opens the record's and seals the rest
//     again. Cached records hold no plain value.
//   - A profile's key is created with its first record, in the same
//     batch. A merged profile keeps its key, though nothing is sealed under
//     it any more: Split restores the profile under it, and Erase of the
//     survivor destroys it with the survivor's.
//   - Without a keyring records are written as v1 (plain, as before this
//     layout existed); a v1 record is read by either (its hashes computed
//     on load) and sealed when next written with a keyring
//     (TestPlainToEncrypted). A v2 record without a keyring is
//     ErrCorrupt.
//
// # Hashed identities
//
// A hashed identity is the SHA-256 of the value exactly as its type's
// normaliser leaves it; any other form finds nothing. Per normaliser:
// none: the value as sent; trim: surrounding white space (ASCII and
// Unicode) removed; lower: trimmed, then lower case (Unicode); email:
// trimmed and lower case (and it must hold an '@' with text on both
// sides); phone: only the digits, with a leading '+' kept ("+1 (555)
// 010-0000" is hashed as "+15550100000"). OpenDSR leaves the hashing rule
// to the parties; cdpstream asks controllers for the SHA-256 of the value
// trimmed, and lowercased for email (privacy's normalizedSHA256). With the
// default types that agrees for controller_customer_id (user_id, trim),
// email, and the device ids (device_id, trim), but not for advertising
// ids: advertising_id is lowercased, so its hash must be taken over the
// lowercase id (an IDFA is usually written in upper case; the test
// TestHashedIdentityNormalisation pins this). A type configured with
// another normaliser changes what its hash must cover.
//
// # Erasure
//
// Graph.Erase(ctx, pids) erases live profiles for a data subject request
// (the privacy processor's "identity" Eraser). It does not follow
// redirects: a merged id is erased only with its survivor (both in pids);
// alone it is ErrOpConflict and nothing is erased, since the person's
// identifiers now live in the survivor. Unknown and already erased ids are
// no-ops, so Erase is idempotent. For each profile, one OpErase (Profile,
// Time; no values) goes through txn.apply like every change, and all of a
// call's ops commit in one synced batch, reaching OnCommit hooks:
//
//   - 0x11: every identifier key of the profile is deleted (the record
//     lists them all, those of merged profiles included).
//   - 0x12: the profile record and the redirect records of every profile
//     merged into it are deleted; caches drop them (the identifier cache
//     keeps a negative entry: no value).
//   - With a keyring, the keys of the profile and of every profile merged
//     into it (engine's 0x03) are destroyed in the same batch
//     (crypto-shredding): every copy of their records that outlives the
//     deletion — an old SST not yet compacted, a backup, a recycled WAL, a
//     free disk block — is ciphertext that no keyring opens any more
//     (TestCryptoShred copies a record before and tries after).
//   - 0x13/0x14: every merge-log entry naming one of those ids is
//     rewritten as a tombstone (LogEntry.Erased): seq, kind and time stay;
//     message id and rule are emptied; erased ids leave Survivor (0) and
//     Merged. Their 0x14 keys are deleted; the keys of other profiles stay.
//     Tombstones rather than deletion because the log is read by seq
//     (Log(from, limit), the identity log) and the history of a profile
//     that was not erased may share an entry with the erased one (a refused
//     merge, a split): it keeps the entry without the other person's id,
//     and counts of merges and refusals over time stay true.
//   - Profile ids are not reused (the counter does not move back): an
//     event with an erased identifier later makes a new profile, new id.
//   - Not touched: apart lists of other profiles may still name an erased
//     id (a number no key or record resolves any more; it constrains
//     nothing), and Ops already published to an identity log keep the
//     values they carried (that log's retention is its issue's concern).
//     Suppression (0x18/0x19) is not touched either: it is meant to
//     outlive the erasure.
//   - Events resolved to an erased id before the erasure may still be on
//     their way to the sinks. The committed erasure adds the ids (the
//     survivor and what was merged into it) to an in-memory set that
//     ErasedFilter, the filter cmd/cdpstream puts on every sink, drops
//     them by (reason "erased"; Erased(pid) asks the set), with the
//     change records about them (engine.Record.Subject: consent grants,
//     audience entries) attached to those batches. It is not
//     persisted: after a restart the uncommitted batches are resolved
//     again, and no erased id comes back.
//
// The batch also stages the keys it erased (the profile keys' included)
// as engine compaction debt (engine.Compactor, 0x04). With WithCompactor
// (what cmd/cdpstream wires) Erase returns after the commit and the shared
// compactor pays the debt in the background with every other eraser's
// spans. Without it the Graph's own compactor pays it before Erase
// returns, without the Graph's lock: one flush (the memtable and the WAL
// files holding the old values become obsolete), then each key compacted
// through every level, so no SST keeps the old values. A call interrupted
// before that (crash, cancelled ctx) leaves the debt recorded, and the
// next Erase — the privacy step's retry, even when nothing is left to
// erase — or Apply of an OpErase pays it. Pebble deletes obsolete files in
// the background, moments after the compaction.
//
// WAL files: Pebble v1.1.5 does not delete an obsolete WAL by default. It
// keeps up to MemTableStopWritesThreshold+1 of them for recycling, and a
// recycled WAL is overwritten from its start, so its tail keeps older
// records: with default options erased values stay readable in *.log files
// (TestEraseRecycledWAL shows it). Pebble turns recycling off when
// Options.Cleaner implements its NeedsFileContents marker; a cleaner that
// embeds pebble.DeleteCleaner and, one level deeper, pebble.ArchiveCleaner
// (for the marker only) deletes obsolete WALs instead (eraseCleaner in
// erase_test.go; TestEraseOnDisk then finds no erased value in any file).
// The store must be opened with such a cleaner (engine.OpenStore) for
// erasure to reach the WAL; the cost is a new WAL file per memtable.
// Deleted files may still sit in free blocks of the file system; with a
// keyring they hold only ciphertext under destroyed keys (and the wrapped
// keys themselves are compacted out of the SSTs; a recycled WAL could
// keep one, which is why recycling stays off). TestEraseOnDisk runs both
// ways; encrypted, no identifier value is in any file even before the
// erasure, and after it neither are the wrapped keys.
//
// # Suppression
//
// Graph.Suppress(ctx, pids, refs...) keeps the hmac16 of every identifier
// the profiles hold (merged ones' included; a merged id stands for its
// survivor), and of the identifiers refs name (raw or SHA-256; no profile
// need hold them, so a person not seen yet can be suppressed), under
// 0x18, each naming a suppression group, and the group's member list
// under 0x19. One call makes one group; when some of the
// hashes are suppressed already, the call joins the lowest such group and
// merges the other groups it touches into it (OpUnsuppress of each, then
// their hashes suppressed again in the lowest, in the same batch: an
// identity log reader sees the lift and the re-suppression together), so
// a repeated call changes nothing and two people found to be one are one
// group.
// UnsuppressIdentities(ctx, refs) lifts every group holding one of the
// identifiers named (raw values normalised, or SHA-256 of the normalised
// value): all of that group's hashes go, so unsuppressing a person by one
// email also lets their device ids through again, even when the profiles
// were erased in between. Both are Ops (OpSuppress with the group id,
// allocated like profile ids; OpUnsuppress) in one synced batch, and
// idempotent (OpSuppress carries given identities as their hmac16 only).
// Only keyed hashes are kept: no value, no profile id.
//
// Every suppressed hash is also in memory (a map loaded by New, updated on
// commit). The Stage checks each row's identifiers against it right after
// hashing them, before anything is looked up: a row with a suppressed
// identifier creates no profile, links nothing and touches no last seen.
// Its row is removed from the batch's record (a new record of the kept
// rows, copied run by run with array.Concatenate into buffers recycled by
// the Stage's pool allocator; the old record is released), so no later
// stage and no sink sees it; Batch.Drops carries the count with reason
// "suppressed" (the runner adds it to cdp_engine_dropped_total for every
// sink), and the batch's offsets still cover it. With no suppressed hash
// the check is one length test per batch; with some, one map look-up per
// identifier (BenchmarkSuppressLookup: 48–80 ns per event of two
// identifiers at 1e5 hashes on a shared 2-core VM), and a batch that
// loses rows pays the rebuild (BenchmarkDropRows: 75–110 µs for a
// 4096-row batch with one run dropped, plus 10–15 µs per further run).
// Replayed rows are dropped too.
// An identifier replaced by ReplaceIdentifier passes its suppression to
// the new value. Erasure does not touch suppression.
//
// # Retention
//
// Inactive(before, fn) scans the profile records (without the Graph's
// lock, in chunks, no iterator open while fn runs so fn may Erase) and
// reports live profiles whose latest identifier last seen is before
// before. Last seen moves in steps of Config.SeenGranularity (default
// 24h), so it may lag the last event by up to that.
//
// # Invariants (checked by Graph.Check, after every step of the golden tests)
//
//   - Every identifier key points to a live profile, and that profile lists
//     the identifier; every listed identifier's key points back. An
//     identifier belongs to exactly one profile.
//   - A redirect is exactly one hop: it points to a live profile that lists
//     it in merged (a merge rewrites the redirects of the merged profile's
//     own merged ids).
//   - Every profile id is below the persisted counter; ids start at 1 and 0
//     means unresolved.
//   - Every suppressed hash names a group that lists it, every group
//     member is suppressed in that group, groups are non-empty and below
//     the group counter, and the in-memory set equals the 0x18 keys.
//   - All writes of one engine.Batch, and its input offsets, commit in one
//     synced Pebble batch; caches are updated only after the commit, so a
//     failed commit leaves memory and disk as they were.
//
// # Caches
//
// Two bounded two-generation caches (approximate LRU, O(1), no per-entry
// list) sit in front of Pebble: identifier hash → profile id (negative
// entries included) and decoded profile records, sharing Config.CacheBytes
// 3:1. Cache misses of a batch are looked up sorted and de-duplicated with
// one Pebble iterator.
//
// # Metrics
//
//	cdp_identity_events_total{result}            resolved, unresolved, replayed, suppressed
//	cdp_identity_suppressed_identifiers          suppressed hashes held (gauge)
//	cdp_identity_refused_total{reason,type}      limit, unique, apart, cap_merges, cap_identifiers
//	cdp_identity_values_dropped_total{reason,type} blocked, invalid, unknown_type
//	cdp_identity_merges_total
//	cdp_identity_profiles_created_total
//	cdp_identity_identifiers_added_total
//	cdp_identity_demotions_total
//	cdp_identity_erased_total                    live profiles erased (with what was merged into them)
//	cdp_identity_ops_total{kind}
//	cdp_identity_cache_hits_total{cache}, cdp_identity_cache_misses_total{cache}   identifier, profile
//	cdp_identity_cache_bytes{cache}
//
// The type label is a configured type name, or "other" for accepted
// unknown types. No metric carries a profile id or a value, and the
// package logs nothing.
package identity
