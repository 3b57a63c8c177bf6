package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/cdpstream/cdpstream/bench"
	"github.com/cdpstream/cdpstream/engine/sink"
	"github.com/cdpstream/cdpstream/ingest"
	"github.com/cdpstream/cdpstream/privacy"
	"github.com/cdpstream/cdpstream/segments"
)

// privacyBenchConfig sizes the privacy request benchmark.
type privacyBenchConfig struct {
	Profiles int    // people loaded through the pipeline before measuring
	Requests int    // erasures (and as many access requests) measured
	Dir      string // where the store and input file go (removed after)
	Progress io.Writer
}

// runPrivacyBench measures data subject requests end to end on the real
// wiring of `cdpstream run` (build): Profiles people, each with a user id,
// an anonymous id, an email and a device id, traits, consent and audience
// memberships, are loaded through the pipeline (decode, identity, consent,
// audiences) from an NDJSON file; then, with the privacy processor
// running, erasure and access requests are submitted one at a time for
// random people, and the time from Submit to the moment the request reads
// completed is recorded. An erasure runs deletion notices to a sink, the
// identity, consent and audience erasers, each staging the ranges it
// deleted as compaction debt; an access request builds and stores the export. An
// erasure's compacted time is until the compactor has forced the erased
// ranges out of the store's files (the next erasure starts after it).
func runPrivacyBench(ctx context.Context, pc privacyBenchConfig) ([]bench.Result, error) {
	dir, err := os.MkdirTemp(pc.Dir, "cdpstream-privacy-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	input := filepath.Join(dir, "events.ndjson")
	if err := writePrivacyBenchInput(input, pc.Profiles); err != nil {
		return nil, err
	}
	cfg := &Config{DataDir: filepath.Join(dir, "data")}
	cfg.Source.File = &ingest.FileConfig{Path: input}
	cfg.Identity.Secret = "cdpstream-bench-secret"
	cfg.Encryption.MasterKey = demoMasterKey // public: the bench's data is synthetic
	cfg.Identity.CacheBytes = int64(pc.Profiles)*400 + 64<<20
	cfg.Consent = segments.Config{Purposes: []segments.Purpose{
		{Name: "analytics", Bit: 0, Default: "denied", Segment: []string{"analytics"}},
		{Name: "advertising", Bit: 1, Default: "denied", Segment: []string{"advertising"}},
	}}
	cfg.Sinks = []sinkConfig{
		{Config: sink.Config{Name: "out", Records: []string{sink.RecordDeletion}, File: &sink.FileConfig{Path: filepath.Join(dir, "out.ndjson")}},
			Consent: &segments.PolicyConfig{Purposes: []string{"analytics"}, Require: "all", Unknown: "deny", DecideBy: "profile"}},
	}
	cfg.DeadLetter.File = &sink.DeadLetterFileConfig{Path: filepath.Join(dir, "dead.ndjson")}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Privacy.PollInterval = 10 * time.Millisecond
	cfg.Audiences.Definitions = []map[string]any{
		{"id": "pro", "name": "Pro plan", "condition": map[string]any{"trait": map[string]any{"path": "plan", "op": "eq", "value": "pro"}}},
		{"id": "analytics-ok", "name": "Analytics granted", "condition": map[string]any{"consent": map[string]any{"purpose": "analytics", "state": "granted"}}},
	}
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a, err := build(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return nil, err
	}
	defer a.close()

	start := time.Now()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	loaded := make(chan error, 1)
	go func() { loaded <- a.runner.Run(runCtx) }()
	t := time.NewTicker(time.Second)
	for done := false; !done; {
		select {
		case err := <-loaded:
			if err != nil {
				t.Stop()
				return nil, fmt.Errorf("loading: %w", err)
			}
			done = true
		case <-t.C:
			if pc.Progress != nil {
				fmt.Fprintf(pc.Progress, "\rPrivacyRequests: loading %d/%d people", a.runner.Stats().Received, pc.Profiles)
			}
		}
	}
	t.Stop()
	loadSecs := time.Since(start).Seconds()
	if pc.Progress != nil {
		fmt.Fprintf(pc.Progress, "\rPrivacyRequests: loaded %d people in %.0fs\n", pc.Profiles, loadSecs)
	}
	if got := counterSum(a, "cdp_identity_profiles_created_total", nil); got != uint64(pc.Profiles) {
		return nil, fmt.Errorf("loading made %d profiles, want %d (dead letters in %s?)", got, pc.Profiles, cfg.DeadLetter.File.Path)
	}
	go func() { _ = a.dsr.Run(runCtx) }()
	go func() { _ = a.comp.Run(runCtx, 5*time.Second) }()

	r := rand.New(rand.NewPCG(7, 9))
	var compacted []time.Duration
	measure := func(typ string, n int) ([]time.Duration, error) {
		var lat []time.Duration
		for i := 0; i < n; i++ {
			p := r.IntN(pc.Profiles)
			id := newUUID()
			body := fmt.Sprintf(`{"subject_request_id":%q,"subject_request_type":%q,"regulation":"gdpr","submitted_time":%q,`+
				`"subject_identities":[{"identity_type":"email","identity_value":"p%d@example.com","identity_format":"raw"}],"api_version":"2.0"}`,
				id, typ, time.Now().UTC().Format(time.RFC3339), p)
			t0 := time.Now()
			if _, _, err := a.dsr.Submit([]byte(body), "bench", "http://bench"); err != nil {
				return nil, fmt.Errorf("%s request: %w", typ, err)
			}
			for {
				st, err := a.dsr.Get(id)
				if err != nil {
					return nil, err
				}
				if st.Status == privacy.StatusCompleted {
					break
				}
				if time.Since(t0) > 5*time.Minute {
					return nil, fmt.Errorf("%s request %s still %s after 5 minutes", typ, id, st.Status)
				}
				time.Sleep(200 * time.Microsecond)
			}
			lat = append(lat, time.Since(t0))
			if typ == privacy.TypeErasure {
				// The erased ranges leave the store's files when the
				// compactor has paid the debt (engine.Compactor).
				<-a.comp.Idle()
				compacted = append(compacted, time.Since(t0))
			}
			if pc.Progress != nil {
				fmt.Fprintf(pc.Progress, "\rPrivacyRequests: %s %d/%d", typ, i+1, n)
			}
		}
		if pc.Progress != nil {
			fmt.Fprintln(pc.Progress)
		}
		slices.Sort(lat)
		return lat, nil
	}
	result := func(name string, lat []time.Duration) bench.Result {
		var sum time.Duration
		for _, l := range lat {
			sum += l
		}
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		return bench.Result{Name: name, Events: int64(len(lat)), Seconds: sum.Seconds(), Reported: true,
			NsPerEvent:   float64(sum) / float64(len(lat)),
			EventsPerSec: float64(len(lat)) / sum.Seconds(),
			Extra: map[string]float64{"p50-ms": ms(lat[len(lat)/2]), "p99-ms": ms(lat[(len(lat)*99)/100]), "max-ms": ms(lat[len(lat)-1]),
				"profiles": float64(pc.Profiles), "load-s": loadSecs}}
	}
	access, err := measure(privacy.TypeAccess, pc.Requests)
	if err != nil {
		return nil, err
	}
	before := stepSeconds(a)
	erasure, err := measure(privacy.TypeErasure, pc.Requests)
	if err != nil {
		return nil, err
	}
	er := result("PrivacyErasure", erasure)
	slices.Sort(compacted)
	er.Extra["compacted-p50-ms"] = float64(compacted[len(compacted)/2]) / 1e6
	er.Extra["compacted-p99-ms"] = float64(compacted[(len(compacted)*99)/100]) / 1e6
	// Where an erasure's time goes: the mean of each step, from
	// cdp_privacy_step_seconds over the erasures only.
	for step, sec := range stepSeconds(a) {
		if d := sec - before[step]; d > 0 {
			er.Extra[step+"-ms"] = d * 1000 / float64(len(erasure))
		}
	}
	return []bench.Result{result("PrivacyAccess", access), er}, nil
}

// stepSeconds sums cdp_privacy_step_seconds by step.
func stepSeconds(a *app) map[string]float64 {
	out := map[string]float64{}
	mfs, err := a.reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "cdp_privacy_step_seconds" {
			continue
		}
		for _, m := range mf.Metric {
			out[m.Label[0].GetValue()] += m.GetHistogram().GetSampleSum()
		}
	}
	return out
}

// writePrivacyBenchInput writes one identify event per person: user id,
// anonymous id, email and device id, a plan trait, and Segment consent
// (analytics granted for two in three, advertising for one in two).
func writePrivacyBenchInput(path string, people int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	plans := []string{"free", "pro", "team"}
	for i := 0; i < people; i++ {
		p := strconv.Itoa(i)
		fmt.Fprintf(w, `{"type":"identify","messageId":"m%s","timestamp":%q,"userId":"u%s","anonymousId":"a%s",`+
			`"traits":{"email":"p%s@example.com","plan":%q,"name":"Person %s"},`+
			`"context":{"device":{"id":"d%s"},"consent":{"categoryPreferences":{"analytics":%t,"advertising":%t}}}}`+"\n",
			p, ts, p, p, p, plans[i%3], p, p, i%3 != 0, i%2 == 0)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
