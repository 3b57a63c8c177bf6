// Package bench holds cdpstream's workloads and benchmark harness: a
// deterministic generator of realistic Segment traffic (Generator), the
// end-to-end runs behind `cdpstream bench`, and `go test -bench`
// benchmarks of the whole pipeline next to a naive encoding/json baseline.
//
// Results are printed as benchstat-compatible lines ("BenchmarkX N v unit
// ...") so `benchstat` can compare runs, plus a JSON summary for CI.
package bench
