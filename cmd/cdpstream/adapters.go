package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/engine/sink"
	"github.com/cdpstream/cdpstream/identity"
	"github.com/cdpstream/cdpstream/ingest"
	"github.com/cdpstream/cdpstream/privacy"
	"github.com/cdpstream/cdpstream/segments"
	"github.com/cdpstream/cdpstream/segments/audience"
)

// The packages do not import each other; these adapters, the only glue
// between them, live here.

// consentView shows the consent stage's bitmaps to audiences.
type consentView struct {
	c     *segments.Consent
	names []string
}

func (v consentView) Granted(p string) *roaring.Bitmap {
	g, _, ok := v.c.PurposeSets(p)
	if !ok {
		return nil
	}
	return g
}

func (v consentView) Denied(p string) *roaring.Bitmap {
	_, d, ok := v.c.PurposeSets(p)
	if !ok {
		return nil
	}
	return d
}

// Sets implements audience.ConsentPair: both sets from one read.
func (v consentView) Sets(p string) (granted, denied *roaring.Bitmap) {
	g, d, _ := v.c.PurposeSets(p)
	return g, d
}

func (v consentView) Purposes() []string { return v.names }

// resolver looks identifiers up in the identity graph for audiences.
type resolver struct{ g *identity.Graph }

func (r resolver) Lookup(typ, value string) (uint32, bool, error) {
	v, err := r.g.Lookup(typ, value)
	switch {
	case errors.Is(err, identity.ErrNotFound):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	return v.ProfileID, true, nil
}

// Identifiers implements audience.IdentifierLister: members?as=TYPE.
func (r resolver) Identifiers(pid uint32, typ string) ([]string, error) {
	v, err := r.g.Profile(pid)
	switch {
	case errors.Is(err, identity.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	var out []string
	for _, id := range v.Identifiers {
		if id.Type == typ {
			out = append(out, id.Value)
		}
	}
	return out, nil
}

// audienceRecords carries audience entries and exits to the sinks that ask
// for them (records: [audience]). Changes of a batch arrive while the store
// processes it; changes from the background (window sweeps, back-fills)
// wait for the next batch. Either way they reach the sinks before that
// batch's offsets commit.
type audienceRecords struct {
	*audience.Store
	mu      sync.Mutex
	pending []engine.Record
}

func (a *audienceRecords) onChange(changes []audience.Change) {
	recs := make([]engine.Record, 0, len(changes))
	for _, c := range changes {
		recs = append(recs, sink.AudienceRecord(c.Audience, c.Version, c.ProfileID, c.Entered, c.Time, c.Cause))
	}
	a.mu.Lock()
	a.pending = append(a.pending, recs...)
	a.mu.Unlock()
}

// Process implements engine.Stage.
func (a *audienceRecords) Process(ctx context.Context, b *engine.Batch) error {
	if err := a.Store.Process(ctx, b); err != nil {
		return err
	}
	a.mu.Lock()
	b.Records = append(b.Records, a.pending...)
	a.pending = nil
	a.mu.Unlock()
	return nil
}

// opendsrTypes maps OpenDSR identity types to identity graph types.
var opendsrTypes = map[string]string{
	"controller_customer_id":   identity.TypeUserID,
	"email":                    identity.TypeEmail,
	"android_advertising_id":   identity.TypeAdvertisingID,
	"ios_advertising_id":       identity.TypeAdvertisingID,
	"fire_advertising_id":      identity.TypeAdvertisingID,
	"roku_advertising_id":      identity.TypeAdvertisingID,
	"microsoft_advertising_id": identity.TypeAdvertisingID,
	"android_id":               identity.TypeDeviceID,
	"ios_vendor_id":            identity.TypeDeviceID,
	"roku_publisher_id":        identity.TypeDeviceID,
	"microsoft_publisher_id":   identity.TypeDeviceID,
}

// opendsrIdentityTypes lists the OpenDSR identity types cdpstream can
// resolve (privacy.Config.IdentityTypes).
func opendsrIdentityTypes() []string {
	out := make([]string, 0, len(opendsrTypes))
	for t := range opendsrTypes {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// subjects resolves privacy-request identities through the identity graph.
type subjects struct{ g *identity.Graph }

func (s subjects) Resolve(_ context.Context, ids []privacy.Identity) ([]uint32, error) {
	var out []uint32
	for _, id := range ids {
		ref, err := identityRef(id)
		if err != nil {
			return nil, err
		}
		v, err := s.g.LookupRef(ref)
		switch {
		case errors.Is(err, identity.ErrNotFound):
			continue
		case err != nil:
			return nil, err
		}
		out = append(out, v.ProfileID)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// identityRef names a privacy-request identity in the graph. A sha256
// identity is the SHA-256 of the value as the graph normalises it: for the
// default types that is what OpenDSR controllers hash (trimmed, email
// lowercased), except advertising ids, which the graph lowercases: their
// hash must be taken over the lowercase id (see identity/doc.go).
func identityRef(id privacy.Identity) (identity.Ref, error) {
	typ, ok := opendsrTypes[id.Type]
	if !ok {
		return identity.Ref{}, fmt.Errorf("identity_type %q has no identifier type", id.Type)
	}
	switch id.Format {
	case privacy.FormatRaw:
		return identity.Ref{Type: typ, Value: id.Value}, nil
	case privacy.FormatSHA256:
		r := identity.Ref{Type: typ, Hashed: true}
		if len(id.Value) != hex.EncodedLen(len(r.SHA256)) {
			return identity.Ref{}, fmt.Errorf("identity_value of %s: not 64 hex digits", id.Type)
		}
		if _, err := hex.Decode(r.SHA256[:], []byte(id.Value)); err != nil {
			return identity.Ref{}, fmt.Errorf("identity_value of %s: not 64 hex digits", id.Type)
		}
		return r, nil
	}
	return identity.Ref{}, fmt.Errorf("identity_format %q is not supported", id.Format)
}

func identityRefs(ids []privacy.Identity) ([]identity.Ref, error) {
	refs := make([]identity.Ref, 0, len(ids))
	for _, id := range ids {
		r, err := identityRef(id)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
	}
	return refs, nil
}

// identityExporter exports every identifier and the merge history.
type identityExporter struct{ g *identity.Graph }

func (identityExporter) Name() string { return "identity" }
func (e identityExporter) Export(_ context.Context, s privacy.Subject) (any, error) {
	var out []identity.ProfileView
	for _, pid := range s.Profiles {
		v, err := e.g.Profile(pid)
		if err != nil {
			if errors.Is(err, identity.ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// consentExporter exports the consent state per purpose.
type consentExporter struct{ c *segments.Consent }

func (consentExporter) Name() string { return "consent" }
func (e consentExporter) Export(_ context.Context, s privacy.Subject) (any, error) {
	out := make([]segments.ProfileView, 0, len(s.Profiles))
	for _, pid := range s.Profiles {
		out = append(out, e.c.View(pid))
	}
	return out, nil
}

// audienceExporter exports audience memberships.
type audienceExporter struct{ s *audience.Store }

func (audienceExporter) Name() string { return "audiences" }
func (e audienceExporter) Export(_ context.Context, s privacy.Subject) (any, error) {
	type membership struct {
		ProfileID uint32   `json:"profile_id"`
		Audiences []string `json:"audiences"`
	}
	infos := e.s.List()
	out := make([]membership, 0, len(s.Profiles))
	for _, pid := range s.Profiles {
		m := membership{ProfileID: pid, Audiences: []string{}}
		for _, in := range infos {
			ok, err := e.s.Contains(in.ID, pid)
			if err != nil {
				return nil, err
			}
			if ok {
				m.Audiences = append(m.Audiences, in.ID)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// suppressor suppresses a person by the keyed hashes of every identifier
// their profiles hold and of the request's identities, which need not be
// known yet (identity.Graph.Suppress): the identity stage drops
// every later event carrying any of them before resolution (reason
// "suppressed"), for every sink, and the hashes outlive an erasure, so
// erase-and-suppress works. Unsuppress lifts the suppression groups the
// request's identities (raw or sha256) belong to, which also works after
// the profiles were erased.
//
// With a purpose catalogue, the consent stage's suppression of the
// profile ids is kept as well: events resolved before the request ran and
// still in flight to the sinks are dropped by the sink policies (sinks
// with a consent block, reason "suppressed"). consentEraser lifts it when
// the profile is erased, once Consent.Erase has put the id in the consent
// stage's erased set: from then on the same policies drop those events
// with reason "erased", so at no moment does one reach a sink with a
// consent block.
type suppressor struct {
	g *identity.Graph
	c *segments.Consent // nil without a purpose catalogue
}

func (p suppressor) Suppress(ctx context.Context, s privacy.Subject) error {
	refs, err := identityRefs(s.Identities)
	if err != nil {
		return err
	}
	if _, err := p.g.Suppress(ctx, s.Profiles, refs...); err != nil {
		return err
	}
	if p.c == nil {
		return nil
	}
	return p.c.Suppress(s.Profiles...)
}

func (p suppressor) Unsuppress(ctx context.Context, s privacy.Subject) error {
	refs, err := identityRefs(s.Identities)
	if err != nil {
		return err
	}
	if err := p.g.UnsuppressIdentities(ctx, refs); err != nil {
		return err
	}
	if p.c == nil {
		return nil
	}
	return p.c.Unsuppress(s.Profiles...)
}

// deletionNotifier sends a deletion notice to every sink that lists
// records: [deletion], with the identifiers of the erased profiles that
// sink may see: all of them, or, for a sink with field minimisation, those
// its events carry, in plain or hashed as they carry them
// (sink.DeletionIdentifiers over paths). It runs before the erasers,
// while the identifiers can still be read, and writes to the sinks
// directly: a notice is not part of any input batch.
type deletionNotifier struct {
	g     *identity.Graph
	sinks []engine.Sink
	now   func() time.Time
	paths sink.IdentifierPaths
}

// identifierPaths is where events carry each identifier type: the
// decoder's identifier sources, and userId, anonymousId and previousId
// (a user id, or an anonymous id when no profile holds it as a user id).
func identifierPaths(dc ingest.DecodeConfig) sink.IdentifierPaths {
	dc.Defaults()
	p := sink.IdentifierPaths{identity.TypeUserID: {"userId", "previousId"}, identity.TypeAnonymousID: {"anonymousId", "previousId"}}
	for _, s := range dc.Identifiers {
		p[s.Type] = append(p[s.Type], s.Paths...)
	}
	return p
}

func (n deletionNotifier) NotifyDeletion(ctx context.Context, requestID string, s privacy.Subject) error {
	var ids []sink.Identifier
	for _, pid := range s.Profiles {
		v, err := n.g.Profile(pid)
		if errors.Is(err, identity.ErrNotFound) {
			continue // erased by an earlier attempt: the notice went out then
		}
		if err != nil {
			return err
		}
		for _, id := range v.Identifiers {
			ids = append(ids, sink.Identifier{Type: id.Type, Value: id.Value})
		}
	}
	now := n.now()
	for _, sk := range n.sinks {
		rs, ok := sk.(engine.RecordSink)
		if !ok || !rs.WantsRecord(sink.RecordDeletion) {
			continue
		}
		rec := sink.DeletionRecord(requestID, s.Profiles, sink.DeletionIdentifiers(sk, ids, n.paths), now)
		if err := rs.WriteRecords(ctx, []engine.Record{rec}); err != nil {
			return fmt.Errorf("deletion notice to sink %s: %w", sk.Name(), err)
		}
	}
	return nil
}

// The erasers of an erasure request, run in this order: identity first
// (identifier keys, profile records, merge-log tombstones), then consent
// and audiences (state, counters, traits, memberships, bitmaps). Each is
// idempotent and compacts the key ranges it cleared.
//
// Identity goes first so that nothing resolves to the erased ids any
// more. Batches it resolved before may still be in flight (several, with a
// pipelined runner): the consent stage and the audience store keep the ids
// they erased in an erased set (memory; ids are never reused) and record
// nothing for those rows, nor for merges naming them (profiles merged into
// an erased one are erased with it). Both also poll the graph's erased
// ids before each batch (WithErasedFeed), so they stop recording them as
// soon as identity's erasure commits, before their own Erase. Every
// sink's filter is the graph's ErasedFilter (around its consent policy, if
// any): a batch a sink filters after identity's Erase returned carries
// none of those rows (reason "erased"), with or without a consent block or
// a purpose catalogue, nor its change records that add data about them
// (grants, audience entries; engine.Record.Subject). Left: a batch a sink
// had already filtered, and replays after a crash (see
// identity.Graph.ErasedFilter).
type identityEraser struct{ g *identity.Graph }

func (identityEraser) Name() string { return "identity" }
func (e identityEraser) Erase(ctx context.Context, s privacy.Subject) error {
	return e.g.Erase(ctx, s.Profiles)
}

type consentEraser struct{ c *segments.Consent }

func (consentEraser) Name() string { return "consent" }

// Erase erases the consent state and lifts the profile-id suppression:
// an erased id is never reused, and a person's suppression lives on as
// identifier hashes in the identity graph (suppressor). In this order:
// Erase puts the ids in the consent stage's erased set first, so the sink
// policies drop their rows still in flight (reason "erased") before and
// after the suppression is lifted.
func (e consentEraser) Erase(_ context.Context, s privacy.Subject) error {
	if err := e.c.Erase(s.Profiles...); err != nil {
		return err
	}
	return e.c.Unsuppress(s.Profiles...)
}

type audienceEraser struct{ s *audience.Store }

func (audienceEraser) Name() string { return "audiences" }
func (e audienceEraser) Erase(_ context.Context, s privacy.Subject) error {
	return e.s.Erase(s.Profiles...)
}

// traitsExporter exports the traits identify events set, per profile.
type traitsExporter struct{ s *audience.Store }

func (traitsExporter) Name() string { return "traits" }
func (e traitsExporter) Export(_ context.Context, s privacy.Subject) (any, error) {
	type traits struct {
		ProfileID uint32          `json:"profile_id"`
		Traits    json.RawMessage `json:"traits"`
	}
	out := make([]traits, 0, len(s.Profiles))
	for _, pid := range s.Profiles {
		t, ok, err := e.s.Traits(pid)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, traits{pid, t})
		}
	}
	return out, nil
}

// rectifier corrects a person's identifiers in the identity graph and
// traits in the audience store (which re-evaluates the audiences that
// read them). An identifier fix names a graph type (email, user_id, ...)
// or an OpenDSR identity type; it applies to the subject's profile that
// holds the old value. Retried requests find the new value in place and
// skip it.
type rectifier struct {
	g   *identity.Graph
	aud *audience.Store
}

func (r rectifier) Rectify(ctx context.Context, s privacy.Subject, fix privacy.Rectification) error {
	if len(s.Profiles) == 0 {
		return errors.New("the identities reach no profile")
	}
	for i, f := range fix.Identifiers {
		typ := f.Type
		if t, ok := opendsrTypes[typ]; ok {
			typ = t
		}
		done := false
		for _, pid := range s.Profiles {
			err := r.g.ReplaceIdentifier(ctx, pid, typ, f.Old, f.New)
			if err == nil {
				done = true
				break
			}
			if !errors.Is(err, identity.ErrNotFound) {
				return fmt.Errorf("identifiers[%d]: %w", i, err)
			}
		}
		if !done {
			return fmt.Errorf("identifiers[%d]: no profile of the subject holds the %s to correct", i, typ)
		}
	}
	for _, pid := range s.Profiles {
		patch, err := r.traitPatch(pid, fix)
		if err != nil {
			return err
		}
		if len(patch) == 0 {
			continue
		}
		if err := r.aud.SetTraits(pid, patch); err != nil && !errors.Is(err, audience.ErrNotFound) {
			return fmt.Errorf("traits: %w", err)
		}
	}
	return nil
}

// traitPatch is fix.Traits plus, for each corrected identifier, every
// top-level string trait of pid holding the old value (an identify call's
// traits.email carries the email identifier too): it gets the new value,
// unless fix.Traits sets that trait itself.
func (r rectifier) traitPatch(pid uint32, fix privacy.Rectification) (map[string]any, error) {
	patch := maps.Clone(fix.Traits)
	if len(fix.Identifiers) == 0 {
		return patch, nil
	}
	raw, ok, err := r.aud.Traits(pid)
	if err != nil || !ok {
		return patch, err
	}
	var cur map[string]any
	if err := json.Unmarshal(raw, &cur); err != nil {
		return nil, fmt.Errorf("traits of profile %d: %w", pid, err)
	}
	for k, v := range cur {
		sv, isStr := v.(string)
		if _, set := fix.Traits[k]; set || !isStr {
			continue
		}
		for _, f := range fix.Identifiers {
			if strings.EqualFold(strings.TrimSpace(sv), strings.TrimSpace(f.Old)) {
				if patch == nil {
					patch = map[string]any{}
				}
				patch[k] = f.New
			}
		}
	}
	return patch, nil
}

// inactive lists profiles for retention from the identity graph's
// last-seen times.
type inactive struct{ g *identity.Graph }

func (i inactive) Inactive(ctx context.Context, before time.Time, fn func(uint32) error) error {
	return i.g.Inactive(before, func(pid uint32, _ time.Time) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(pid)
	})
}

// Keep implements privacy.InactiveChecker: each listed profile is looked
// up again just before its retention erasure runs.
func (i inactive) Keep(ctx context.Context, before time.Time, pids []uint32) ([]uint32, int, error) {
	keep := make([]uint32, 0, len(pids))
	spared := 0
	for _, pid := range pids {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		live, last, err := i.g.LastSeen(pid)
		switch {
		case err != nil:
			return nil, 0, err
		case live == 0:
			keep = append(keep, pid) // gone: erasing it again is a no-op
		case !last.Before(before):
			spared++ // seen again (itself or the profile it merged into)
		default:
			keep = append(keep, live)
		}
	}
	slices.Sort(keep)
	return slices.Compact(keep), spared, nil
}
