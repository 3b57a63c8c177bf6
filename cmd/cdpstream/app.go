package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/engine/sink"
	"github.com/cdpstream/cdpstream/identity"
	"github.com/cdpstream/cdpstream/ingest"
	"github.com/cdpstream/cdpstream/privacy"
	"github.com/cdpstream/cdpstream/segments"
	"github.com/cdpstream/cdpstream/segments/audience"
)

// app is one wired instance: source, stages, sinks, runner and HTTP
// server, built from a Config. `run` and `demo` share it, so the demo runs
// exactly what production runs.
type app struct {
	cfg     *Config
	log     *slog.Logger
	reg     *prometheus.Registry
	src     engine.Source
	kafka   *ingest.KafkaSource // nil for a file source
	file    *ingest.FileSource  // nil for a Kafka source
	sinks   []engine.Sink
	dead    engine.DeadLetterSink
	runner  *engine.Runner
	srv     *engine.Server
	db      *pebble.DB
	keys    *engine.Keyring
	comp    *engine.Compactor
	graph   *identity.Graph
	consent *segments.Consent // nil when no purpose catalogue is configured
	aud     *audienceRecords
	auth    *engine.Auth
	audit   *privacy.Audit
	mirror  *sink.KafkaMirror // the audit trail's copy on Kafka; nil without audit.kafka
	dsr     *privacy.Service
}

// auditKey derives the key of the audit trail's target hashes from the
// identity secret, so no second secret needs managing and the key never
// sits in the store.
func auditKey(cfg *Config) []byte {
	secret := cfg.Identity.Secret
	if secret == "" {
		secret = os.Getenv(cfg.Identity.SecretEnv)
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("cdpstream audit target key v1"))
	return m.Sum(nil)
}

// stateDir is where the instance's Pebble store lives inside data_dir.
func stateDir(dataDir string) string { return filepath.Join(dataDir, "state") }

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// build wires an instance. stdin is used by a file source with path "-".
// On error everything built so far is closed.
func build(cfg *Config, log *slog.Logger, stdin io.Reader) (a *app, err error) {
	a = &app{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			a.close()
			a = nil
		}
	}()
	m := engine.NewMetrics(a.reg)
	m.PreregisterReasons(ingest.Reasons)

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return a, fmt.Errorf("data_dir: %w", err)
	}
	if a.db, err = engine.OpenStore(stateDir(cfg.DataDir), cfg.State, log); err != nil {
		return a, fmt.Errorf("data_dir: %w", err)
	}
	// Identifier values and traits are sealed under per-profile keys
	// wrapped by the master key; erasure destroys a profile's key.
	if a.keys, err = engine.NewKeyring(cfg.Encryption, a.db, engine.WithKeyringRegisterer(a.reg)); err != nil {
		return a, err
	}
	// Erasers hand the ranges they deleted to one compactor, which forces
	// them out of the store's files in the background (engine.Compactor).
	if a.comp, err = engine.NewCompactor(a.db, a.reg, log); err != nil {
		return a, err
	}
	if a.graph, err = identity.New(cfg.Identity, a.db, a.reg, identity.WithKeyring(a.keys), identity.WithCompactor(a.comp)); err != nil {
		return a, err
	}
	resolve, err := identity.NewStage(a.graph)
	if err != nil {
		return a, err
	}
	stages := []engine.Stage{resolve}
	// One buffer pool for the batches' columns, those the batcher builds
	// and the consent_mask column the consent stage replaces.
	pool := engine.NewPoolAllocator()
	if cfg.consentOn() {
		opts := []segments.Option{segments.WithAllocator(pool)}
		for _, sc := range cfg.Sinks {
			if slices.Contains(sc.Records, sink.RecordConsent) {
				opts = append(opts, segments.WithChangeRecords())
				break
			}
		}
		opts = append(opts, segments.WithCompactor(a.comp), segments.WithErasedFeed(a.graph.ErasedSince))
		if a.consent, err = segments.New(cfg.Consent, a.db, a.reg, opts...); err != nil {
			return a, err
		}
		stages = append(stages, a.consent)
	}
	a.aud = &audienceRecords{}
	audOpts := []audience.Option{audience.WithOnChange(a.aud.onChange), audience.WithRegisterer(a.reg), audience.WithKeyring(a.keys), audience.WithCompactor(a.comp), audience.WithErasedFeed(a.graph.ErasedSince)}
	if a.consent != nil {
		names := make([]string, 0, len(cfg.Consent.Purposes))
		for _, p := range cfg.Consent.Purposes {
			names = append(names, p.Name)
		}
		audOpts = append(audOpts, audience.WithConsent(consentView{c: a.consent, names: names}))
	}
	if a.aud.Store, err = audience.New(cfg.Audiences.Config, a.db, audOpts...); err != nil {
		return a, err
	}
	for i, d := range cfg.Audiences.parsed {
		if err := defineAudience(a.aud.Store, d); err != nil {
			return a, fmt.Errorf("audiences.definitions[%d]: %w", i, err)
		}
	}
	stages = append(stages, a.aud)

	b, err := ingest.NewBatcher(cfg.Decode, cfg.Batch, pool)
	if err != nil {
		return a, err
	}
	switch {
	case cfg.Source.Kafka != nil:
		a.kafka, err = ingest.NewKafkaSource(*cfg.Source.Kafka, b, a.reg, log)
		a.src = a.kafka
	default:
		var r io.Reader
		if cfg.Source.File.Path == "-" {
			r = stdin
		}
		a.file, err = ingest.NewFileSource(*cfg.Source.File, b, r)
		a.src = a.file
	}
	if err != nil {
		b.Release()
		a.src = nil
		return a, err
	}

	specs := make([]engine.SinkSpec, 0, len(cfg.Sinks))
	for i, sc := range cfg.Sinks {
		s, err := sink.New(sc.Config)
		if err != nil {
			return a, fmt.Errorf("sinks[%d].%w", i, err)
		}
		a.sinks = append(a.sinks, s)
		var policy engine.Filter
		if sc.Consent != nil && a.consent != nil {
			pc := *sc.Consent
			pc.Name = sc.Name
			if policy, err = segments.NewPolicy(pc, a.consent); err != nil {
				return a, fmt.Errorf("sinks[%d].consent.%w", i, err)
			}
		}
		// Every sink: events of a person erased while they were in flight
		// are dropped (reason erased), with or without a consent policy.
		specs = append(specs, engine.SinkSpec{Sink: s, Filter: a.graph.ErasedFilter(policy)})
	}
	if a.dead, err = sink.NewDeadLetter(cfg.DeadLetter); err != nil {
		return a, fmt.Errorf("dead_letter.%w", err)
	}
	a.runner, err = engine.NewRunner(cfg.Runner, a.src, stages, specs, a.dead, m, log)
	if err != nil {
		return a, err
	}
	a.srv, err = engine.NewServer(cfg.HTTP, a.reg, log)
	if err != nil {
		return a, err
	}
	a.srv.AddReadyCheck("pipeline", func(context.Context) error {
		if !a.runner.Running() {
			return errors.New("pipeline is not running")
		}
		return nil
	})
	if a.kafka != nil {
		a.srv.AddReadyCheck("kafka", func(ctx context.Context) error { return a.kafka.Ping(ctx) })
	}
	for _, s := range a.sinks {
		if p, ok := s.(interface{ Ping(context.Context) error }); ok {
			a.srv.AddReadyCheck("sink:"+s.Name(), p.Ping)
		}
	}
	// Every API call that reads or changes personal data goes into the
	// hash-chained audit trail (cdpstream audit verify walks it).
	auditOpts := []privacy.AuditOption{privacy.WithAuditRegisterer(a.reg)}
	if k := cfg.Audit.Kafka; k != nil {
		a.mirror, err = sink.NewKafkaMirror(*k, "audit", func(err error) {
			log.Warn("audit mirror: an entry did not reach kafka (the trail in the store has it)", "err", err)
		})
		if err != nil {
			return a, fmt.Errorf("audit.kafka: %w", err)
		}
		m := a.mirror
		if err := a.reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cdp_privacy_audit_mirror_failed_total",
			Help: "Audit entries the audit.kafka brokers did not acknowledge (the trail in the store has them)."},
			func() float64 { return float64(m.Failed()) })); err != nil {
			return a, err
		}
		auditOpts = append(auditOpts, privacy.WithMirror(func(e privacy.Entry) {
			if b, err := json.Marshal(e); err == nil {
				a.mirror.Produce(b)
			}
		}))
	}
	a.audit, err = privacy.NewAudit(a.db, auditKey(cfg), auditOpts...)
	if err != nil {
		return a, err
	}
	a.auth, err = engine.NewAuth(cfg.HTTP.Auth, engine.WithAuditor(a.audit))
	if err != nil {
		return a, err
	}
	if !a.auth.Enabled() {
		log.Warn("http.auth has no tokens: the API is open to anyone who can reach " + cfg.HTTP.Addr)
	}
	// Every route that reads or changes personal data is audited.
	engine.Mount(a.srv, a.graph.Routes(), a.auth)
	if a.consent != nil {
		h := a.consent.Handler()
		a.srv.Handle("GET /v1/profiles/{id}/consent", a.auth.RequirePersonal(engine.ScopeProfilesRead, h))
		a.srv.Handle("PUT /v1/profiles/{id}/consent", a.auth.RequirePersonal(engine.ScopeProfilesWrite, h))
		a.srv.Handle("GET /v1/consent/explain", a.auth.RequirePersonal(engine.ScopeProfilesRead, h))
	}
	audience.Mount(a.srv, a.aud.Routes(resolver{a.graph}), a.auth)
	view := profileView{g: a.graph, aud: a.aud.Store, consent: a.consent, maskTraits: cfg.HTTP.MaskTraits}
	engine.Mount(a.srv, []engine.Route{view.route()}, a.auth)

	// Privacy requests. Access and portability export what identity,
	// consent and audiences hold. Erasure runs the identity, consent and
	// audience erasers, after a deletion notice to the sinks that ask.
	// Suppression keeps keyed hashes of the person's identifiers in the
	// identity graph, which drops their later events at ingest; the hashes
	// outlive an erasure, so erase-and-suppress is supported.
	// Rectification replaces identifiers in the graph and sets traits in
	// the audience store; retention lists inactive profiles from the
	// graph's last-seen times.
	work := privacy.Work{Subjects: subjects{a.graph},
		Exporters: []privacy.Exporter{identityExporter{a.graph}, traitsExporter{a.aud.Store}, audienceExporter{a.aud.Store}},
		Rectifier: rectifier{g: a.graph, aud: a.aud.Store},
		Inactive:  inactive{a.graph},
		Erasers:   []privacy.Eraser{identityEraser{a.graph}, audienceEraser{a.aud.Store}},
		Notifiers: []privacy.DeletionNotifier{deletionNotifier{g: a.graph, sinks: a.sinks, now: time.Now, paths: identifierPaths(cfg.Decode)}},
		// From the notices to the end of the erasure no sink gets the
		// person's events (ErasedFilter drops held profiles).
		Holder: a.graph,
		// An erasure completes once the batches read before it committed:
		// no crash can then replay the person's events, resolved before
		// the erasure, into a new profile.
		Barrier:    a.runner,
		Suppressor: suppressor{g: a.graph}}
	if a.consent != nil {
		work.Exporters = append(work.Exporters, consentExporter{a.consent})
		work.Erasers = []privacy.Eraser{identityEraser{a.graph}, consentEraser{a.consent}, audienceEraser{a.aud.Store}}
		work.Suppressor = suppressor{g: a.graph, c: a.consent}
	}
	// Request identities, rectifications and exports are sealed under keys
	// of their own in the same keyring, destroyed when the request
	// finishes and when the export expires; the wrapped keys' spans go to
	// the shared compactor.
	if a.dsr, err = privacy.New(cfg.Privacy, a.db, a.audit, work, privacy.WithLogger(log), privacy.WithRegisterer(a.reg),
		privacy.WithKeyring(a.keys), privacy.WithCompactor(a.comp)); err != nil {
		return a, err
	}
	privacy.Mount(a.srv, a.dsr.Routes(), a.auth)
	return a, nil
}

// run serves HTTP and runs the pipeline until the source ends, ctx is
// cancelled (graceful drain) or a component fails.
func (a *app) run(ctx context.Context) error {
	if err := a.srv.Listen(); err != nil {
		return err
	}
	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	srvErr := make(chan error, 1)
	go func() { srvErr <- a.srv.Serve(srvCtx) }()
	a.log.Info("pipeline starting", "http", a.srv.Addr(), "sinks", len(a.sinks))
	go a.sweep(srvCtx)
	compDone := make(chan struct{})
	go func() {
		defer close(compDone)
		_ = a.comp.Run(srvCtx, 5*time.Second)
	}()
	defer func() { <-compDone }()
	dsrDone := make(chan struct{})
	go func() {
		defer close(dsrDone)
		if err := a.dsr.Run(srvCtx); err != nil && srvCtx.Err() == nil {
			a.log.Error("privacy request processor stopped", "err", err)
		}
	}()
	defer func() { <-dsrDone }()
	err := a.runner.Run(ctx)
	stopSrv()
	if serr := <-srvErr; serr != nil && err == nil {
		err = fmt.Errorf("http server: %w", serr)
	}
	return err
}

// defineAudience creates d, or stores it as a new version when the stored
// one differs (in its condition, name or activation purpose).
func defineAudience(s *audience.Store, d audience.Definition) error {
	cur, err := s.Get(d.ID)
	switch {
	case errors.Is(err, audience.ErrNotFound):
		_, err = s.Create(d)
		return err
	case err != nil:
		return err
	}
	a, _ := json.Marshal(struct {
		N, P string
		C    audience.Condition
	}{cur.Name, cur.ActivationPurpose, cur.Condition})
	b, _ := json.Marshal(struct {
		N, P string
		C    audience.Condition
	}{d.Name, d.ActivationPurpose, d.Condition})
	if string(a) == string(b) {
		return nil
	}
	_, err = s.Update(d)
	return err
}

// sweep re-evaluates, once a minute, the audiences whose membership
// changes without events (windows sliding out, consent lapsing).
func (a *app) sweep(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := a.aud.Sweep(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("audience sweep", "err", err)
			}
		}
	}
}

// close closes every component that was built, source first (so no more
// records arrive), then the sinks.
func (a *app) close() error {
	var errs []error
	if a.src != nil {
		errs = append(errs, a.src.Close())
	}
	for _, s := range a.sinks {
		errs = append(errs, s.Close())
	}
	if a.dead != nil {
		errs = append(errs, a.dead.Close())
	}
	if a.aud != nil && a.aud.Store != nil {
		errs = append(errs, a.aud.Close())
	}
	if a.mirror != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, a.mirror.Close(ctx))
		cancel()
	}
	if a.db != nil {
		errs = append(errs, a.db.Close())
	}
	return errors.Join(errs...)
}
