package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/cdpstream/cdpstream/bench"
)

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.Options
	fs.IntVar(&o.Events, "events", 1_000_000, "events per in-memory workload")
	fs.IntVar(&o.KafkaEvents, "kafka-events", 200_000, "events through the embedded Kafka broker (0: skip)")
	fs.IntVar(&o.Corpus, "corpus", 100_000, "distinct generated records, cycled")
	fs.IntVar(&o.IdentityIDs, "identity-ids", 1_000_000, "identifiers loaded for the identity resolution run (0: skip; the issue's target is measured at 10000000)")
	fs.IntVar(&o.BitmapProfiles, "bitmap-profiles", 10_000_000, "profiles for the consent bitmap memory figure (0: skip)")
	fs.IntVar(&o.ContainsProfiles, "contains-profiles", 10_000_000, "profiles behind the HTTP contains load runs (2 and 16 loopback clients, 100k requests each; 0: skip)")
	fs.IntVar(&o.SetExprUniverse, "setexpr-universe", 10_000_000, "profile ids under the audience set-expression count (0: skip; the issue's target is at 100000000)")
	fs.StringVar(&o.Dir, "dir", "", "directory for the benchmark's Pebble stores (default: a temporary directory)")
	fs.StringVar(&o.Only, "run", "", "only workloads whose name contains this")
	fs.BoolVar(&o.SerialStages, "serial-stages", false, "run the pipelines' stages on one goroutine (runner.serial_stages), as before per-stage goroutines")
	fs.IntVar(&o.Count, "count", 1, "run the stream workloads this many times, interleaved; ratios are between medians")
	privacyProfiles := fs.Int("privacy-profiles", 1_000_000, "people loaded through the pipeline before measuring privacy requests (0: skip; the issue's erasure target is at 10000000)")
	privacyRequests := fs.Int("privacy-requests", 20, "erasure and access requests measured, each")
	jsonPath := fs.String("json", "", "also write a JSON summary to this file")
	quiet := fs.Bool("q", false, "no progress bar")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Events < 1 || o.KafkaEvents < 0 || o.Corpus < 1 || o.IdentityIDs < 0 || o.BitmapProfiles < 0 || o.SetExprUniverse < 0 || o.ContainsProfiles < 0 {
		return usageError{fmt.Errorf("-events and -corpus must be >= 1, -kafka-events and -identity-ids >= 0")}
	}
	if !*quiet {
		o.Progress = stderr
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if *privacyProfiles > 0 && *privacyRequests > 0 && (o.Only == "" || strings.Contains("PrivacyAccess PrivacyErasure", o.Only)) {
		res, err := runPrivacyBench(ctx, privacyBenchConfig{Profiles: *privacyProfiles, Requests: *privacyRequests, Dir: o.Dir, Progress: o.Progress})
		if err != nil {
			return fmt.Errorf("privacy requests: %w", err)
		}
		rep.Results = append(rep.Results, res...)
	}
	rep.WriteBenchstat(stdout)
	if *jsonPath != "" {
		f, err := os.Create(*jsonPath)
		if err != nil {
			return fmt.Errorf("-json: %w", err)
		}
		if err := rep.WriteJSON(f); err != nil {
			f.Close()
			return fmt.Errorf("-json: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("-json: %w", err)
		}
	}
	return nil
}
