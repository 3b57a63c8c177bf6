// Package privacy owns data subject requests and the audit trail (issue
// 6): the OpenDSR 2.0 request API with cdpstream's extensions, the request
// processor, signed status callbacks, access and portability exports, and
// the hash-chained audit log. It imports engine only; the work itself
// goes through small interfaces (work.go) that cmd/ adapts to identity,
// segments and the sinks.
//
// # Pieces
//
//   - Audit (NewAudit): append-only, hash-chained entries in Pebble.
//     Append; Verify(db) walks the chain; Entries reads it; Audit is an
//     engine.Auditor (pass it to engine.WithAuditor) so every call to a
//     personal route lands in the trail; WithMirror hands each committed
//     entry to a hook (cmd/cdpstream's audit.kafka produces it as JSON,
//     Entry.MarshalJSON); CheckChain verifies such a copy outside the
//     store.
//   - Service (New): Submit, Get, Cancel, List, Retain, Step, Run; Routes/Mount/Handler
//     serve the API. Config (YAML block "privacy") has defaults and
//     Validate. WithKeyring (required) seals personal data (see
//     Encryption); WithCompactor takes the spans of destroyed keys.
//   - Work: Subjects (required), Erasers, Suppressor, Exporters,
//     DeletionNotifiers, Rectifier, Inactive (retention). A type whose components are missing is
//     refused at submission and not listed by discovery.
//
// # Lifecycle
//
//	POST → pending ──(due: now, or after Config.WaitingPeriod for erasure
//	       │          and erasure_suppress)──► in_progress ──► completed
//	       └─ DELETE while pending ─► cancelled
//
// Submission validates (400 with the OpenDSR error body, naming the
// field), then under one lock: an id already stored with the same content
// (canonical JSON digest) answers the first answer again; with other
// content 400 DuplicateRequestId; an identity held by an unfinished
// request (any type; the raw and sha256 forms of one value are the same
// identity) 409. A step runs: resolve → for erasure_suppress, suppress →
// deletion notices → each Eraser in order (each audited) → expire the
// person's earlier exports; suppress/unsuppress; rectify; or build the
// export. Profiles resolved are persisted before anything is destroyed,
// and the union over attempts is what later attempts use: an erasure
// interrupted between two Erasers resolves nothing the second time, yet
// reaches the same profiles. A failing step keeps the request in_progress,
// audited as request.retry, due again after RetryBackoff doubling to 10
// minutes, without limit (an erasure must not be given up silently).
// A step interrupted by shutdown leaves it in_progress; New makes such
// requests due at once. Every component call must therefore be
// idempotent, and a deletion notice may be sent twice.
//
// When a request finishes, its record keeps keyed hashes of the
// identities, the profile ids and the times; the identity values and the
// rectification are dropped, and the key they were sealed under is
// destroyed (see Encryption).
//
// Listing (GET /opendsr/requests, cdpstream's extension): newest received
// first, filtered by status and type, pages of limit (default 100, at most
// 1000) with an opaque next_cursor; entries carry id, type, regulation,
// status, controller, times and origin, never identities. It reads every
// request record.
//
// # Retention
//
// With Retention.InactiveAfter set, Run calls Retain every
// Retention.Interval: it asks Work.Inactive for live profiles last seen
// before now - InactiveAfter and stores one erasure request for up to
// Retention.Batch of them (origin "retention", actor "retention",
// regulation "retention", no identities: the profiles are preset, id a
// SHA-256-derived UUID of time and profiles). The request then runs like
// any erasure: deletion notices, every Eraser, each step audited, listed
// by GET /opendsr/requests. The next sweep waits until it finished (0x39
// 0x01 names it), so a backlog drains a batch per interval. At every
// attempt, before its first step, the request checks its profiles again
// (when Work.Inactive implements InactiveChecker, as cmd/cdpstream's
// does): a profile seen since the cutoff of that attempt is spared, one
// merged meanwhile is replaced by its survivor if that is inactive too
// (spared otherwise), one already erased stays (the remaining erasers
// still get it). A change is persisted with an audit entry
// (request.rechecked, outcome "ok:N_spared"), listed as spared_profiles
// and counted in cdp_privacy_retention_spared_total. A profile seen in the
// milliseconds between the check and the erasure (the deletion notices go
// out in between) is still erased; one spared at a retry after a failed
// step may have had its deletion notice already.
//
// # Callbacks, signatures, exports
//
// Each status change writes one callback per status_callback_url into an
// outbox in the same Pebble batch as the change; one deliverer sends them
// in order, signed (X-OpenDSR-Signature: base64 ECDSA P-256 ASN.1, or RSA
// PKCS#1 v1.5, over SHA-256 of the exact body; X-OpenDSR-Processor-Domain:
// Config.Domain), retried Callbacks.Attempts times with doubling backoff,
// then given up (counted, audited). Answers to POST/GET/DELETE of requests
// are signed the same way. The certificate is Config.CertFile, else a
// self-signed one generated at first start and kept in the store; it is
// served at /opendsr/certificate.pem, the url discovery names.
//
// Access exports are JSON (ExportDoc), portability NDJSON; both hold each
// Exporter's section, the profile ids, and the person's privacy requests
// (sharing an identity hash or a profile). They are served at
// results_url = base/opendsr/results/{random 128-bit token} until
// ResultsTTL (default 7 days), then 410; an erasure of the same person
// expires them at once. Expiry replaces the body by a tombstone and
// destroys the export's key in one synced batch.
//
// # Encryption (WithKeyring)
//
// Personal data privacy stores is sealed (AES-256-GCM) under data keys of
// the engine.Keyring's id space (engine.KeyID, 0x03 0x02 | id), each
// random and wrapped by the master key, like the per-profile keys:
//
//   - A request's identity values and rectification body, while it is
//     open, as the record's "sealed" field, under a key of the request's
//     own: KeyID = SHA-256("cdpstream privacy request key v1" 0x00 |
//     uuid)[:16], aad "cdpstream privacy request v1" (the keyring adds
//     the KeyID). The key is created in the synced batch that stores the
//     request (pending) and destroyed in the one that finishes it
//     (completed or cancelled). Every copy of the record made while it
//     was open — older versions in SSTs and the WAL, backups — is then
//     ciphertext under a destroyed key.
//   - An export's body, under a key of the export's own: KeyID =
//     SHA-256("cdpstream privacy export key v1" 0x00 | token)[:16], aad
//     "cdpstream privacy export v1" | the value's 25-byte header, created
//     with the export and destroyed when it expires or its person is
//     erased.
//
// The two labels keep request and export keys apart whatever id a
// controller picks. A destroying batch also stages the wrapped key's span
// (and an expired export's) as engine.Compactor debt, so the wrapped key
// leaves the files at the next compaction pass: with the caller's
// compactor (WithCompactor) in the background, else with the Service's
// own at the end of each Step. A finished erasure wakes the compactor
// (its spans, and those of the exports it expired, go at once, with the
// erasers'); other requests and TTL expiry do not, and wait for its next
// pass (an erasure's, or its interval: 5 s in cdpstream run): the
// person's data lives on in the graph anyway, and a pass per access
// request made access p99 2.5 times worse in the privacy bench. Until
// that pass an old SST still holds the wrapped key, readable only with
// the master key.
//
// Opening costs a Pebble read and an unwrap (id keys are not cached): once
// per run of a request (its step "open") and per download of an export.
// Reads that need no identity (Get, List, the exports' request lists,
// erasure's search for earlier exports) never open anything.
//
// What stays in plain, and why: the keyed identity hashes (0x33 and
// identity_hashes: HMACs, needed for the 409 check and to find a person's
// requests), the content digest (HMAC under the audit key of the SHA-256
// of the request's canonical JSON, for the idempotency check; keyed so it
// confirms no guess), ids, types, times, profile ids, callback urls.
//
// New refuses to run without a keyring: the application always has one,
// and storing requests in plain because an option was forgotten is the
// failure this prevents.
//
// A store written before sealing (request records version 1, holding the
// values in plain while open, with unkeyed digests; export bodies in
// plain) is sealed by New in one synced batch: every version-1 record is
// rewritten as version 2 (sealed, digest keyed), every plain export body
// sealed under a new key, and the request and export families staged as
// compaction debt so the plain versions leave the files at the next pass
// (TestPlainStoreUpgrade). Backups taken before the upgrade keep them.
//
// # Key layout (0x30-0x3f are privacy's)
//
//	0x30 | seq (8 BE)             → audit entry: 1 | seq | prev hash (32) | time ns (8 BE)
//	                                 | actor, action, target, outcome (uvarint len | bytes)
//	                                 | SHA-256 of everything before it (32)
//	0x31 | request uuid (16)      → 2 | JSON record, identities and rectification
//	                                 in "sealed" (1: in plain, before sealing)
//	0x32                          → audit head: last seq (8 BE) | its hash
//	0x33 | identity hash (16)     → request uuid: identities of unfinished requests
//	0x34 | token (16)             → expires ns (8 BE) | format | uuid (16) | sealed body
//	                                 (format 1 JSON, 2 NDJSON, | 0x80: sealed; no body
//	                                 once expired: a tombstone, 410)
//	0x35                          → signing key (PKCS#8) and certificate
//	0x36 | due ns (8 BE) | uuid   → empty: the work queue (pending, in_progress)
//	0x37 | expires ns | token     → empty: export expiry queue
//	0x38 | seq (8 BE)             → callback outbox entry (JSON)
//	0x39 0x01                     → uuid of the last retention request
//
// Identity hashes and audit targets are HMAC-SHA256 under the key given
// to NewAudit (domain-separated), truncated to 16 bytes.
//
// # Invariants
//
//   - The audit chain: entry n holds the hash of entry n-1; the head names
//     the last entry. Verify fails on any changed byte, removed entry
//     (first, middle or last) or swapped pair, naming the seq.
//   - A state change, its queue move, its index change, its callbacks and
//     its audit entry commit in one synced Pebble batch.
//   - A request is queued (0x36) iff it is pending or in_progress; its
//     identities are in 0x33 iff it is unfinished.
//   - No identity value reaches the audit trail or the logs: targets are
//     keyed hashes, logs carry request ids and step names.
//   - No identity value, rectification or export body is written in
//     plain: a request holds a live key iff it is unfinished and had
//     something to seal; an export holds one iff it has a body. A
//     finishing transition and an export's tombstone destroy the key in
//     their own batch.
//
// # Metrics
//
//	cdp_privacy_requests_total{type,status}   status changes
//	cdp_privacy_request_seconds{type}         submission to completed
//	cdp_privacy_step_errors_total{step}       failed steps (retried)
//	cdp_privacy_step_seconds{step}            duration of each successful step
//	cdp_privacy_callbacks_total{result}       delivered, retried, failed
//	cdp_privacy_retention_profiles_total      profiles handed to retention erasures
//	cdp_privacy_retention_spared_total        listed profiles seen again before the erasure ran, left alone
//	cdp_privacy_audit_entries_total, cdp_privacy_audit_errors_total
//
// # Not yet
//
// The OpenGDPR v1 route aliases (spec 10.1), and a request index by
// identity hash for exports and listing (both scan all requests).
package privacy
