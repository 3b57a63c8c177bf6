package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/bench"
	"github.com/cdpstream/cdpstream/engine/sink"
	"github.com/cdpstream/cdpstream/ingest"
	"github.com/cdpstream/cdpstream/segments"
)

// demoMasterKey is the demo's encryption master key ("cdpstream demo
// master key public" in hex). Never use it for real data.
const demoMasterKey = "63647073747265616d2064656d6f206d6173746572206b6579207075626c6963"

const (
	demoInput  = "events"
	demoOutput = "events.processed"
	demoGroup  = "cdpstream-demo"
)

type demoFlags struct {
	events     int
	duration   time.Duration
	rate       int
	dataDir    string
	httpAddr   string
	partitions int
	people     int
	malformed  float64
	logLevel   string
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f demoFlags
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&f.events, "events", 0, "stop after producing this many events (0: use -duration)")
	fs.DurationVar(&f.duration, "duration", 20*time.Second, "how long to produce events when -events is 0")
	fs.IntVar(&f.rate, "rate", 20000, "events per second to produce (0: as fast as possible)")
	fs.StringVar(&f.dataDir, "data", "cdpstream-demo", "directory for the output files and state")
	fs.StringVar(&f.httpAddr, "http", "127.0.0.1:8080", "HTTP listen address of the API, /metrics, /healthz and /readyz (port 0: any free port)")
	fs.IntVar(&f.partitions, "partitions", 3, "partitions of the input topic")
	fs.IntVar(&f.people, "people", 20000, "distinct people in the generated traffic")
	fs.Float64Var(&f.malformed, "malformed", 0.01, "share of deliberately malformed records")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case f.events < 0:
		return usageError{errors.New("-events: must be >= 0")}
	case f.events == 0 && f.duration <= 0:
		return usageError{errors.New("-duration: must be > 0 when -events is 0")}
	case f.rate < 0:
		return usageError{errors.New("-rate: must be >= 0")}
	case f.partitions < 1:
		return usageError{errors.New("-partitions: must be >= 1")}
	case f.people < 1:
		return usageError{errors.New("-people: must be >= 1")}
	case f.malformed < 0 || f.malformed > 1:
		return usageError{errors.New("-malformed: must be between 0 and 1")}
	}
	return runDemo(ctx, f, stdout, stderr)
}

func runDemo(ctx context.Context, f demoFlags, stdout, stderr io.Writer) error {
	if err := os.MkdirAll(f.dataDir, 0o750); err != nil {
		return fmt.Errorf("cannot create -data %s: %w", f.dataDir, err)
	}
	outFile := filepath.Join(f.dataDir, "processed.ndjson")
	deadFile := filepath.Join(f.dataDir, "dead-letter.ndjson")
	mergeFile := filepath.Join(f.dataDir, "merges.ndjson")
	adsFile := filepath.Join(f.dataDir, "advertising.ndjson")
	// Every demo starts from scratch: a new broker, so no old state either
	// (its stored input offsets would mark the new events as replays).
	for _, p := range []string{outFile, deadFile, mergeFile, adsFile, stateDir(f.dataDir)} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.SeedTopics(int32(f.partitions), demoInput), kfake.SeedTopics(3, demoOutput))
	if err != nil {
		return fmt.Errorf("cannot start the embedded Kafka broker: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	no := false
	cfg := &Config{DataDir: f.dataDir}
	cfg.Log.Level = f.logLevel
	cfg.Source.Kafka = &ingest.KafkaConfig{Client: sink.KafkaClientConfig{Brokers: brokers}, Group: demoGroup, Topics: []string{demoInput}}
	// Two purposes, learnt from the generator's Segment consent
	// preferences; each sink states what it needs.
	cfg.Consent = segments.Config{Purposes: []segments.Purpose{
		{Name: "analytics", Bit: 0, Default: "denied", Segment: []string{"analytics"}},
		{Name: "advertising", Bit: 1, Default: "denied", Segment: []string{"advertising"}},
	}}
	needs := func(purposes ...string) *segments.PolicyConfig {
		if len(purposes) == 0 {
			return &segments.PolicyConfig{}
		}
		return &segments.PolicyConfig{Purposes: purposes, Require: "all", Unknown: "deny", DecideBy: "profile"}
	}
	cfg.Sinks = []sinkConfig{
		{Config: sink.Config{Name: "kafka-out", Kafka: &sink.KafkaConfig{Topic: demoOutput, Compression: "zstd", Key: sink.KeyProfileID}}, Consent: needs("analytics")},
		{Config: sink.Config{Name: "ads-file", File: &sink.FileConfig{Path: adsFile, Format: sink.FormatNDJSON}}, Consent: needs("advertising")},
		{Config: sink.Config{Name: "all-file", File: &sink.FileConfig{Path: outFile, Format: sink.FormatNDJSON}}, Consent: needs()},
		{Config: sink.Config{Name: "merges", Events: &no, Records: []string{sink.RecordMerge}, File: &sink.FileConfig{Path: mergeFile}}},
	}
	// The demo's identifier hashes need a secret like any deployment; this
	// one is public, so the demo's state must never hold real data.
	cfg.Identity.Secret = "cdpstream-demo-secret-not-for-real-data"
	// Likewise the master key of the per-profile encryption keys: fixed and
	// public, so the demo needs no setup (and protects nothing).
	cfg.Encryption.MasterKey = demoMasterKey
	cfg.DeadLetter.File = &sink.DeadLetterFileConfig{Path: deadFile}
	cfg.HTTP.Addr = f.httpAddr
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return usageError{err}
	}
	log := newLogger(cfg, stderr)
	a, err := build(cfg, log, nil)
	if err != nil {
		return err
	}
	defer a.close()

	fmt.Fprintf(stdout, "cdpstream demo: embedded Kafka broker at %s, topics %q (%d partitions) -> %q\n", strings.Join(brokers, ","), demoInput, f.partitions, demoOutput)
	if err := a.srv.Listen(); err != nil {
		return usageError{fmt.Errorf("%w (pick another with -http 127.0.0.1:0)", err)}
	}
	fmt.Fprintf(stdout, "HTTP on http://%s  (try /metrics, /healthz, /readyz)\n", a.srv.Addr())
	fmt.Fprintf(stdout, "sinks: Kafka topic %q (needs analytics consent), %s (needs advertising), %s (every event)\n", demoOutput, adsFile, outFile)
	fmt.Fprintf(stdout, "dead letters: %s; profile merges: %s\n", deadFile, mergeFile)
	fmt.Fprintf(stdout, "look up a person: curl 'http://%s/v1/profiles/lookup?type=user_id&value=user-100000'\n\n", a.srv.Addr())

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runErr := make(chan error, 1)
	start := time.Now()
	go func() { runErr <- a.run(runCtx) }()

	// Produce on its own client, as an application would.
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(demoInput),
		kgo.ProducerLinger(5*time.Millisecond), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		return err
	}
	defer prod.Close()
	var produced, produceErrs atomic.Int64
	genDone := make(chan struct{})
	go func() {
		defer close(genDone)
		produce(ctx, prod, f, &produced, &produceErrs)
	}()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastIn uint64
	lastT := start
	genFinished := false
	var err2 error
loop:
	for {
		select {
		case <-genDone:
			genDone = nil
			genFinished = true
			if err := prod.Flush(ctx); err != nil && ctx.Err() == nil {
				log.Warn("producer flush", "err", err)
			}
		case <-tick.C:
			st := a.runner.Stats()
			now := time.Now()
			rate := float64(st.Received-lastIn) / now.Sub(lastT).Seconds()
			lastIn, lastT = st.Received, now
			fmt.Fprintf(stdout, "[%4.0fs] produced %s  in %s  out %s  dead %s  profiles %s  merges %s  | %s ev/s  lag %s\n",
				now.Sub(start).Seconds(), human(uint64(produced.Load())), human(st.Received), human(st.Sent[0]), human(st.Dead),
				human(counterSum(a, "cdp_identity_profiles_created_total", nil)), human(counterSum(a, "cdp_identity_merges_total", nil)),
				human(uint64(rate)), human(uint64(a.kafka.Lag())))
			if genFinished && st.Received >= uint64(produced.Load()) && st.Committed == st.Batches {
				break loop
			}
		case err2 = <-runErr:
			runErr = nil
			break loop
		case <-ctx.Done():
			fmt.Fprintln(stdout, "interrupted: draining the batches in flight...")
			break loop
		}
	}
	stopRun()
	if runErr != nil {
		err2 = <-runErr
	}
	elapsed := time.Since(start)
	<-genDoneOr(genDone)
	printSummary(stdout, a, brokers, elapsed, produced.Load(), produceErrs.Load(), outFile, deadFile)
	return err2
}

func genDoneOr(c chan struct{}) <-chan struct{} {
	if c == nil {
		d := make(chan struct{})
		close(d)
		return d
	}
	return c
}

// produce writes generated events at f.rate per second (or as fast as the
// broker takes them) until f.events or f.duration is reached.
func produce(ctx context.Context, cl *kgo.Client, f demoFlags, produced, errs *atomic.Int64) {
	g := bench.NewGenerator(bench.GenConfig{Seed: uint64(time.Now().UnixNano()), People: f.people, MalformedShare: f.malformed})
	deadline := time.Now().Add(f.duration)
	const slice = 10 * time.Millisecond
	perSlice := f.rate / int(time.Second/slice)
	next := time.Now()
	for ctx.Err() == nil {
		if f.events > 0 && produced.Load() >= int64(f.events) {
			return
		}
		if f.events == 0 && time.Now().After(deadline) {
			return
		}
		n := 256
		if f.rate > 0 {
			n = max(perSlice, 1)
			next = next.Add(slice)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		}
		if f.events > 0 {
			n = min(n, f.events-int(produced.Load()))
		}
		for i := 0; i < n; i++ {
			val, key, _ := g.Next(nil)
			produced.Add(1)
			cl.Produce(ctx, &kgo.Record{Key: []byte(key), Value: val}, func(_ *kgo.Record, err error) {
				if err != nil {
					errs.Add(1)
				}
			})
		}
	}
}

func printSummary(w io.Writer, a *app, brokers []string, elapsed time.Duration, produced, produceErrs int64, outFile, deadFile string) {
	st := a.runner.Stats()
	fmt.Fprintf(w, "\nsummary after %s\n", elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "  produced          %s events (%d produce errors)\n", human(uint64(produced)), produceErrs)
	fmt.Fprintf(w, "  consumed          %s records in %s batches (%s ev/s)\n", human(st.Received), human(st.Batches), human(uint64(float64(st.Received)/elapsed.Seconds())))
	fmt.Fprintf(w, "  valid             %s\n", human(st.Valid))
	fmt.Fprintf(w, "  dead-lettered     %s  -> %s\n", human(st.Dead), deadFile)
	byReason := map[string]uint64{}
	counterSum(a, "cdp_engine_dead_letter_total", byReason)
	for _, r := range sortedKeys(byReason) {
		fmt.Fprintf(w, "      %-18s %s\n", r, human(byReason[r]))
	}
	fmt.Fprintf(w, "  profiles          %s created, %s merges\n", human(counterSum(a, "cdp_identity_profiles_created_total", nil)), human(counterSum(a, "cdp_identity_merges_total", nil)))
	refused := map[string]uint64{}
	counterSum(a, "cdp_identity_refused_total", refused)
	for _, r := range sortedKeys(refused) {
		fmt.Fprintf(w, "      refused %-10s %s\n", r, human(refused[r]))
	}
	drops := droppedBySink(a)
	for i, s := range a.sinks {
		if st.Sent[i] == 0 && st.Dropped[i] == 0 {
			continue // records only
		}
		fmt.Fprintf(w, "  sink %-12s %s events sent, %s dropped\n", s.Name(), human(st.Sent[i]), human(st.Dropped[i]))
		for _, r := range sortedKeys(drops[s.Name()]) {
			fmt.Fprintf(w, "      %-18s %s\n", r, human(drops[s.Name()][r]))
		}
	}
	adm := kadm.NewClient(mustClient(brokers))
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if ends, err := adm.ListEndOffsets(ctx, demoOutput); err == nil {
		var total int64
		ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
		fmt.Fprintf(w, "  topic %-11s %s records (read back from the broker)\n", demoOutput, human(uint64(total)))
	}
	if offs, err := adm.FetchOffsets(ctx, demoGroup); err == nil {
		var total int64
		offs.Each(func(o kadm.OffsetResponse) { total += o.At })
		fmt.Fprintf(w, "  committed offset  %s of group %q\n", human(uint64(total)), demoGroup)
	}
	fmt.Fprintf(w, "  output file       %s\n", outFile)
}

func mustClient(brokers []string) *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		panic(err) // only fails on invalid options, which these are not
	}
	return cl
}

// counterSum reads a counter family from the registry, so the demo shows
// exactly what /metrics shows. It returns the total and, when by is not
// nil, adds the value per first label to it.
func counterSum(a *app, name string, by map[string]uint64) uint64 {
	mfs, err := a.reg.Gather()
	if err != nil {
		return 0
	}
	var total uint64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			v := uint64(m.GetCounter().GetValue())
			total += v
			if by != nil && v > 0 && len(m.Label) > 0 {
				by[m.Label[0].GetValue()] += v
			}
		}
	}
	return total
}

// droppedBySink reads cdp_engine_dropped_total{sink,reason}.
func droppedBySink(a *app) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	mfs, err := a.reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "cdp_engine_dropped_total" {
			continue
		}
		for _, m := range mf.Metric {
			var sinkName, reason string
			for _, l := range m.Label {
				switch l.GetName() {
				case "sink":
					sinkName = l.GetValue()
				case "reason":
					reason = l.GetValue()
				}
			}
			if out[sinkName] == nil {
				out[sinkName] = map[string]uint64{}
			}
			out[sinkName][reason] += uint64(m.GetCounter().GetValue())
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// human formats n with thousands separators.
func human(n uint64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
