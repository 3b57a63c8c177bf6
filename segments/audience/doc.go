// Package audience owns audience definitions, their real-time membership
// as roaring bitmaps of profile ids, the set-expression engine over
// audiences and consent purposes, and the audience HTTP endpoints
// (issue 5).
//
// # Pieces
//
//   - Definition / Condition: an audience is a JSON condition tree of
//     trait, event, consent and audience-membership conditions under
//     and/or/not. ParseDefinition decodes strictly; Store.Create and
//     Update validate and return a *ValidationError whose Path points at
//     the bad node ("condition.and[2].event.count.min: must be >= 0").
//   - Store (New): definitions (versioned), memberships and the per-profile
//     state audiences read, over a *pebble.DB the caller owns. It is the
//     engine.Stage "audiences", run after identity and consent. Reads:
//     List, Get, Versions, Contains, Members, Query. Writes: Create,
//     Update, Delete, Sweep, Refresh, Erase (privacy erasure, below).
//   - Expr (ParseExpr): `vip AND consent:advertising AND NOT churned`,
//     evaluated with FastAnd/FastOr/AndNot, or only counted
//     (AndCardinality, OrCardinality) when members are not asked for.
//   - Routes / Mount / OpenAPI: the HTTP API, each route with the scope it
//     needs and whether it touches personal data (audited through
//     engine.Auth.RequirePersonal).
//   - BenchSetExpr: the 100M-universe set-expression workload for the
//     bench harness.
//
// This package imports engine only. Consent state comes through
// ConsentView (Granted/Denied bitmaps per purpose; optional PurposeLister
// to validate purpose names), identifiers through Resolver: the caller
// adapts the consent stage and the identity graph to them.
//
// # What each batch does
//
// Process reads the profile_id, type, event, timestamp and raw columns.
// Identify events set the top-level keys of `traits` on the profile's
// stored traits (Segment semantics: later values overwrite). Track events
// add one to day buckets (UTC day of the event's timestamp) of every
// counter their name feeds: the name alone (always, so an audience defined
// later over a name back-fills from history) and each distinct
// name + property-conditions pair an audience uses (these count from the
// moment the audience is defined: raw events are not kept). b.Merges then
// move the merged profiles' traits (the survivor's values win) and
// counters (summed) to the survivor; the merged ids leave every audience
// (records with cause "merge") and the survivor is re-evaluated for all.
// Rows of a profile erased since start, and merges naming one, are the
// exception (see Erasure).
// Only the audiences a profile's rows could affect are evaluated: trait
// audiences for identify rows, event audiences for the names seen, consent
// audiences for events carrying consent fields, and, in dependency order,
// the audiences referencing one whose membership changed. State,
// memberships and the batch's input offsets commit in one synced Pebble
// batch; rows below the offset already committed for their partition (a
// replay after a crash) are skipped, so counts apply exactly once.
//
// # Time, consent, back-fill
//
// Windows are whole days and slide at UTC midnight; Sweep re-evaluates
// windowed audiences over every known profile once the day changed, and
// consent and trait-"within" audiences at every call (consent changed by
// the API or by expiry reaches audiences there, or at once through
// Refresh). The clock is injectable (WithClock). Creating or updating an
// audience back-fills it over every known profile in the background, in
// chunks of Config.BackfillChunk under the write lock, with Info.Backfill
// as the progress figure; an interrupted back-fill resumes at New.
// An audience with activation_purpose is intersected with that purpose's
// granted bitmap on every read (size, contains, members, queries); its
// stored membership is unfiltered, so consent changes need no rewrite.
// NOT in expressions is relative to every profile the store has seen.
//
// # Invariants
//
//   - Bitmaps change only under the write lock; reads hold the read lock
//     for one call. The member stream takes it per chunk of 4096 ids, and
//     its cursor is the last id sent: ids only grow, so a profile that is
//     a member throughout a paged export is returned exactly once.
//   - Entered/exited records reach WithOnChange after their commit, in
//     commit order.
//   - A definition never references a missing audience or forms a cycle;
//     an audience another references cannot be deleted.
//   - Evaluation is bounded: at most 256 nodes and depth 16 per tree,
//     windows at most 3660 days, at most Config.MaxAudiences audiences.
//
// # Erasure
//
// Erase(pids...) (issue 6, called by the privacy processor through its
// Eraser) deletes in one synced Pebble batch each profile's traits (0x29),
// its day counters (0x2a, a range deletion), its membership row in every
// audience (0x2b) and, with a keyring, its key (engine's 0x03: every older
// copy of its sealed traits becomes unreadable); removes it from every membership bitmap (nested
// audiences included) and from the known universe (so NOT, Sweep and
// back-fill no longer range over it); emits, after the commit, an exit
// record with cause "erase" per audience it was a member of, through
// WithOnChange, so activation tools drop it; and resets the scratch
// parsers and buffers that may hold its traits. Then it flushes the
// memtable and compacts the erased ranges (per run of consecutive ids;
// memberships per audience; the keys' range), so the values and the
// wrapped key leave the SSTs. Idempotent: a
// repeat emits nothing and compacts again. Definitions (0x28), offsets
// (0x2c) and back-fill marks (0x2d) hold nothing per profile.
//
// Erase also adds the ids to the erased set, held in memory (a roaring
// bitmap) for the life of the process; with WithErasedFeed, Process adds
// the ids the identity graph erased before each batch, before Erase runs
// here (TestErasedFeed). Identity, erased first, resolves
// nothing to them any more and ids are never reused, but batches it
// resolved before the erasure may still be on their way here (with a
// pipelined runner, several). For those:
//
//   - Process applies nothing of their rows: no traits (so no key is
//     created for them either), no counters, no known mark, no
//     evaluation, no membership, no record.
//   - Merges: an erased merged profile has nothing left to move, and the
//     survivor is left as it is; the profiles merged into an erased
//     survivor are the erased person's (identity merged them first and
//     erased their redirects with the survivor), so the batch erases them
//     as Erase would (traits, counters, key, membership rows with exit
//     records of cause "erase", compaction debt) and they join the erased
//     set.
//
// TestEraseInFlight checks that no 0x29-0x2b key nor keyring key names
// them afterwards. The set is not persisted: after a restart the batches
// not committed are resolved again by identity, which resolves nothing to
// an erased id (should a store be fed the id anyway, it starts from empty
// traits and zero counts).
//
// Not reached without a keyring: Pebble recycles obsolete WAL files and
// overwrites a recycled one from its start, so its tail can keep traits
// written before the erasure; TestErase/pebble-default reports
// "trait-secret-value-123" in such a log. Opening the store with WAL
// recycling off (a Cleaner carrying Pebble's NeedsFileContents marker:
// noRecycleCleaner in erase_test.go; engine.OpenStore does so) makes the
// erased values leave every file of the directory, which
// TestErase/wal-recycling-off checks. With a keyring traits are never in
// plain at rest (TestErase/sealed finds neither profile's values in any
// file before the erasure, and the wrapped key in none after it); with
// recycling on, a recycled WAL may keep the wrapped key
// (TestErase/sealed-pebble-default reports it), which the master key
// would unwrap: keep recycling off.
//
// # Encryption (WithKeyring)
//
// With an engine.Keyring (cmd/cdpstream always passes one) a profile's
// traits are stored as version 2: nonce | AES-256-GCM ciphertext | tag
// under the profile's key, with aad "cdpstream audience traits v1" (the
// keyring adds the profile id): they open only as that profile's traits.
// "{}", written for a profile with no traits to make it known, stays
// version 1 (it says nothing about the person). Every read opens them
// (Process's trait updates, evaluation of trait conditions once per
// profile and run, merges, Traits, SetTraits) and every write seals them
// again with a fresh nonce; the key is created with the first sealed
// traits if the profile has none yet (identity creates it with the
// profile). A merge opens the merged profile's traits under its key and
// seals the result under the survivor's. Traits sealed under a key that
// is destroyed (the profile was erased elsewhere first) read as "{}".
// Plain (version 1) traits written without a keyring are read by both
// and sealed when next written. Cost: an Open and a Seal per identify,
// and an Open per evaluated profile with a trait condition; 0.25-0.5 µs
// each when the key is cached, 3-6 µs when not (engine.BenchmarkKeyring;
// BenchmarkStage measures the stage with sealed traits).
//
// # Rectification
//
// SetTraits(pid, patch) applies a JSON merge patch (RFC 7396: nil removes
// a key, objects merge recursively, anything else replaces) to a known
// profile's traits, re-evaluates its trait audiences (records with cause
// "rectify") and commits both in one synced batch; the result must fit
// max_trait_bytes (ErrTraitsTooLarge, nothing changes).
//
// # Pebble layout (prefixes 0x28-0x2f; 0x20-0x27 are package segments')
//
// See keys.go: definitions by id and version, traits by profile, day
// counters by profile/counter/day, membership rows, applied input
// offsets, completed back-fills. Memberships are rebuilt into bitmaps at
// New from the membership rows.
//
// # Metrics (WithRegisterer)
//
// cdp_segments_audience_changes_total{cause,kind} (causes erase and rectify included),
// cdp_segments_audience_erased_total (profiles the store knew that Erase, or
// a merge into an erased profile, erased),
// cdp_segments_audience_evaluations_total,
// cdp_segments_audience_traits_dropped_total,
// cdp_segments_audience_profiles, cdp_segments_audience_count.
package audience
