package bench

import (
	"context"
	"fmt"
	"os"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/identity"
)

// identityStage opens a Pebble store in dir with an identity graph over it
// and returns its resolution stage.
func identityStage(dir string) (engine.Stage, func(), error) {
	db, err := engine.OpenStore(dir, engine.StoreConfig{}, nil)
	if err != nil {
		return nil, nil, err
	}
	st, err := identityStageOn(db)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return st, func() { db.Close() }, nil
}

// identityStageOn builds the identity stage over an open store.
func identityStageOn(db *pebble.DB) (engine.Stage, error) {
	cfg := identity.Config{Secret: "bench"}
	cfg.Defaults()
	kr, err := engine.NewKeyring(engine.EncryptionConfig{MasterKey: identity.BenchMasterKey}, db)
	if err != nil {
		return nil, err
	}
	g, err := identity.New(cfg, db, nil, identity.WithKeyring(kr))
	if err != nil {
		return nil, err
	}
	return identity.NewStage(g)
}

// runIdentity loads opts.IdentityIDs identifiers into a fresh store and
// measures resolution with warm and cold caches (identity.RunBench).
func runIdentity(ctx context.Context, opts Options) ([]Result, error) {
	dir, err := os.MkdirTemp(opts.Dir, "identity-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bar := newBar(opts.Progress, "IdentityLoad", int64(opts.IdentityIDs))
	res, err := identity.RunBench(ctx, identity.BenchConfig{Dir: dir + "/db", Identifiers: opts.IdentityIDs,
		Progress: func(n int) { bar.set(int64(n)) }})
	bar.done()
	if err != nil {
		return nil, err
	}
	events := int64(1 << 20) // identity.BenchConfig's default
	mk := func(name string, perSec float64) Result {
		r := Result{Name: fmt.Sprintf("%s/ids=%d", name, opts.IdentityIDs), Events: events, EventsPerSec: perSec,
			Seconds: float64(events) / perSec, NsPerEvent: 1e9 / perSec, Reported: true,
			Extra: map[string]float64{"B/identifier": res.BytesPerIdentifier, "profiles": float64(res.Profiles)}}
		return r
	}
	load := mk("IdentityLoad", res.LoadPerSec)
	load.Events = int64(opts.IdentityIDs)
	load.Seconds = float64(opts.IdentityIDs) / res.LoadPerSec
	erase := Result{Name: fmt.Sprintf("IdentityErase/ids=%d", opts.IdentityIDs), Events: int64(res.EraseRuns), Reported: true,
		NsPerEvent: float64(res.EraseP50.Nanoseconds()),
		Extra:      map[string]float64{"p50-ms": float64(res.EraseP50.Microseconds()) / 1000, "p99-ms": float64(res.EraseP99.Microseconds()) / 1000}}
	if res.EraseP50 > 0 {
		erase.EventsPerSec = 1e9 / float64(res.EraseP50.Nanoseconds())
	}
	return []Result{mk("IdentityResolveWarm", res.WarmPerSec), mk("IdentityResolveCold", res.ColdPerSec), load, erase}, nil
}
