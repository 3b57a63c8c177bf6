//go:build race

package ingest

// raceEnabled: the race detector allocates on its own, so exact
// allocation counts are only asserted without it.
const raceEnabled = true
