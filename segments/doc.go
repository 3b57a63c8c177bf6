// Package segments owns consent: the purpose catalogue, each profile's
// consent per purpose (status, time, source, optional expiry) in Pebble,
// per-purpose roaring bitmaps of profiles granted and denied, the
// suppression set, erasure, the consent stage that fills the consent_mask column,
// the per-sink consent filter, and the consent HTTP API (issue 4).
// Audiences (issue 5) will live here too. Sub-package iab decodes TCF v2.2,
// GPP and US Privacy strings (written here: the module proxy refuses the
// libraries; see its doc).
//
// # Pieces
//
//   - Config (YAML block "consent"): purposes (≤ 64: name, bit, default,
//     grant_ttl, mappings segment / onetrust / ketch / custom / mparticle /
//     tcf (1-11) / tcf_legitimate_interest / us_opt_out), fields (paths of
//     each format), merge (latest | most_restrictive), cache_entries.
//   - New → *Consent, the engine.Stage "consent". Process reads
//     profile_id (0 = unresolved), timestamp and raw, applies b.Merges then
//     each row's consent, persists, and replaces consent_mask.
//   - PolicyConfig and NewPolicy → *Policy, the engine.Filter of one sink.
//   - Suppress / Unsuppress / Suppressed: the suppression set, persisted.
//   - Erase(pids...): a privacy erasure of the profiles' consent state
//     (see Erasure).
//   - Handler: PUT/GET /v1/profiles/{id}/consent, GET /v1/consent/explain.
//   - BitmapMemory(n): the bitmap memory workload for the bench harness.
//
// # Semantics
//
//   - Per event, every configured format is read (a cheap byte prefilter
//     skips events without any); within one event a denial from one format
//     beats a grant from another. Segment categoryPreferences, when
//     present, decides every purpose with segment keys (a missing key is a
//     denial). RudderStack consentManagement: a denied id denies, all of a
//     purpose's ids allowed grants. mParticle gdpr purposes use their own
//     timestamp_unixtime_ms; ccpa data_sale_opt_out consented=true is an
//     opt-out. TCF: a purpose is granted iff all its TCF purposes have
//     consent; a string invalid under TCF v2.2 carries nothing (counted in
//     cdp_segments_decode_errors_total). US signals (USP, GPP US sections,
//     GPC) deny on opt-out and grant on "did not opt out"; GPC false says
//     nothing. TCF/GPP strings are decoded once and cached (two-generation,
//     cache_entries).
//   - Per profile and purpose the latest timestamp wins; an older decision
//     arriving late is ignored (cdp_segments_stale_total); on a tie a
//     denial wins, which makes replaying a batch idempotent. A grant with
//     an expiry (grant_ttl, or expires_at through the API) lapses to
//     unknown at that time (checked at every batch and API call).
//   - Merges (b.Merges, applied before the rows): per purpose the later
//     decision (merge: latest) or a denial over a grant (most_restrictive);
//     the merged profile's state is deleted; rows of the batch still
//     carrying a merged id apply to the survivor. A merge naming an erased
//     profile (see Erasure) moves nothing into or out of it.
//   - consent_mask of a row: the profile's effective consent after that
//     row (unresolved rows: the event's own), with unknown purposes at
//     their catalogue default.
//   - A Policy keeps a row iff the profile is neither erased (since the
//     process started) nor suppressed and the required purposes pass
//     (all/any) in the view decide_by names (profile, event, or both for
//     stricter), where unknown purposes count as allow, deny, or
//     purpose_default; and the RudderStack block, if any, keeps it. Drop
//     reasons: erased, suppressed, consent_denied (a required purpose
//     explicitly denied), consent_unknown, consent_denied_rudderstack,
//     consent_record (a consent record of the input topic, not an event).
//     A policy with no purpose and no RudderStack block still drops erased
//     and suppressed profiles.
//
// # Invariants
//
//   - The bitmaps equal the profiles' effective state: a profile is in
//     granted[p] iff its decision for p is an unexpired grant, in denied[p]
//     iff it is a denial; unknown is in neither (checked by the golden test
//     after every step, and after restart, where they are rebuilt from
//     Pebble).
//   - Select never reads another batch's annotations: Process records,
//     per batch (keyed by Seq and the record it produced), each row's event
//     consent and which purposes the profile had decided, in a ring of the
//     last 64 batches; for older batches Select falls back to the bitmaps
//     (profile) and to parsing raw (event); TestPolicyMatchesNaive checks
//     both against a naive per-event evaluation.
//   - Locking: Process and the API's PUT hold the write lock; Select and
//     GET hold the read lock.
//   - Nothing is recorded for a profile id in the erased set: no decision,
//     bitmap bit, Pebble key, expiry or change record (TestEraseInFlight;
//     TestProcessMatchesModel and TestPolicyMatchesNaive erase between
//     batches, and between a batch's Process and Select). The set is
//     filled by Erase and, with WithErasedFeed (identity's ErasedSince,
//     polled before each batch), as soon as the identity graph's erasure
//     commits (TestErasedFeed).
//   - A profile's minT is the oldest Time among its decisions. Process
//     rejects a row whose decisions (all at the event's time, no own
//     mParticle times) are for purposes the profile has decided and older
//     than minT as stale, counting each, without reading the decisions:
//     per purpose that is what the latest-wins rule decides.
//     TestProcessMatchesModel checks decisions, bitmaps and masks against
//     a naive model over random streams (stale, tied and newer rows,
//     merges, PUTs, expiry, erasure, restarts).
//
// # Erasure
//
// Erase(pids...) (issue 6, called by the privacy processor through its
// Eraser) deletes the profiles' keys of every per-profile family (today
// 0x20; erasedPrefixes lists them) in one synced Pebble batch, removes
// them from memory and from every granted and denied bitmap, drops their
// pending expiries and the change records the API made for them that no
// batch took yet, zeroes what the kept batch annotations of their rows
// say about the profile, removes them from every policy's explain ring,
// and empties the decoded
// string caches. Then it flushes the memtable and compacts each erased key
// range (db.Flush, db.Compact), so the records leave the SSTs. The
// suppression set is not touched: erase-and-suppress suppresses first,
// and the suppression must outlive the erasure. Erase is idempotent (a
// repeat deletes nothing, compacts again).
//
// Erase also adds the ids to the erased set, held in memory (a roaring
// bitmap: a few bytes per id) for the life of the process. Identity,
// erased first, resolves nothing to them any more, and ids are never
// reused; what still carries them is a batch identity resolved before the
// erasure, in flight towards this stage or the sinks (with a pipelined
// runner, several). For those:
//
//   - Process reads and records nothing of their rows: no decision, no
//     profile, no write, no change record, no expiry; their consent_mask
//     is 0 (nothing granted).
//   - Every Policy drops their rows with reason erased, also in batches
//     Process handled before the erasure. The explain ring keeps the
//     message id and the reason, not the erased id; explain by profile_id
//     answers erased.
//   - Merges (b.Merges of a batch resolved before the erasure): an erased
//     merged profile has nothing to move and its rows are not redirected
//     (they are dropped); the profiles merged into an erased survivor are
//     the erased person's (identity merged them first and erased their
//     redirects with the survivor), so their consent is erased as Erase
//     would (memory, bitmaps, Pebble, compaction debt, explain rings) and
//     they join the erased set, with any profile the same batch merged
//     into one of them.
//   - PUT /v1/profiles/{id}/consent answers 410 Gone.
//
// The set is not persisted: after a restart the batches not committed are
// resolved again by identity, which resolves nothing to an erased id. A
// grant's consent-change record that Process attached to a batch before
// the erasure names the profile as its subject (engine.Record.Subject),
// so the graph's erased-profile filter withholds it from a sink that
// filters the batch after the erasure committed; a denial has no subject
// and always goes (it only restricts). Those the API made and no batch
// took yet are dropped by Erase.
//
// Not reached by Erase: Pebble recycles obsolete WAL files, and a
// recycled log is overwritten from its start, so its tail can keep
// records written before the erasure until enough is written over it
// (audience's TestErase/pebble-default finds a trait value in such a log;
// TestEraseConsent/pebble-default reports any it finds). The state store
// must be opened with WAL recycling off for erasure to reach every file:
// a Cleaner carrying Pebble's NeedsFileContents marker, as
// noRecycleCleaner in erase_test.go does (engine.OpenStore does not yet);
// TestEraseConsent/wal-recycling-off checks every file of the directory.
// Freed filesystem blocks are not overwritten either.
//
// # Pebble (prefixes 0x20-0x27; 0x28-0x2f are package audience's)
//
//	0x20 | profile id (4 BE) → 1 | uvarint set | per bit: status | source | varint time µs | varint expires µs
//	0x21 | profile id (4 BE) → empty: suppressed
//
// A new family keyed by profile id must join erasedPrefixes (erase.go)
// unless, like 0x21, it has to outlive an erasure.
//
// Writes go in one synced Pebble batch per engine.Batch (the profiles
// changed by the batch, in key order, which the memtable inserts faster),
// separate from identity's batch, which commits identity and the input
// offsets atomically. Consent application is idempotent, so a replay after a
// crash converges; putting both in one Pebble batch is the next step.
// A repeat (same status, later time: a person's preferences sent with
// every event) moves the held time in memory and marks the profile dirty
// only if it was last written Config.StampGranularity ago (default 1m, by
// the stage's clock; profile.saved): after a crash a held time can be up
// to that much processing behind, so a late decision older than a lost
// repeat could win. Status changes, new purposes and expiring grants are
// always written.
// Not yet: bitmap snapshots stored with the offsets (the bitmaps are
// rebuilt by scanning 0x20 at start).
//
// # Memory
//
// Consent state is held in memory in a paged array indexed by profile id
// (profile ids are dense from 1): 64 bytes per profile id in every page
// of 1024 ids holding a profile with a decision, plus 24 bytes per
// decision; a profile's masks, set and minT share one cache line, so a
// stale or repeated row costs one memory access. The page directory costs
// 8 bytes per 1024 ids up to the largest id with a decision: at most 32
// MiB, should a PUT name profile 4294967295. The bitmaps cost about 1
// byte per profile for 4 purposes at 10M profiles (BitmapMemory). The
// erased set costs about 2 bytes per id erased since start (dense runs
// far less); while it is empty Process and Select check it once per
// batch, after that once per row (BenchmarkProcess and BenchmarkSelect,
// *_erased_set).
//
// # Metrics
//
//	cdp_segments_decisions_total{purpose,source,status}
//	cdp_segments_stale_total{source}
//	cdp_segments_expired_total{purpose}
//	cdp_segments_decode_errors_total{format}       tcf, gpp, usp, json
//	cdp_segments_string_cache_{hits,misses}_total
//	cdp_segments_merges_total
//	cdp_segments_erased_total                      profiles whose consent state Erase (or a merge into an erased profile) removed
//	cdp_segments_profiles{purpose,status}          bitmap cardinalities
//
// Drops are counted by the runner as cdp_engine_dropped_total{sink,reason}
// from what a Policy reports. No metric carries a profile id.
package segments
