package main

import (
	"context"
	"errors"
	"sync"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/engine/sink"
	"github.com/cdpstream/cdpstream/identity"
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
