package identity

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble"
)

// TestRestart closes and reopens the store: the graph and the profile
// counter are identical, and replaying batches that were committed (the
// crash between the Pebble commit and the Kafka commit) applies nothing
// twice while still filling the profile ids.
func TestRestart(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	tg := newTestGraph(t, testConfig())
	evs, _ := randomEvents(r, 400, 80)
	var first []uint32
	for i := 0; i < 300; i += 50 {
		_, ids := tg.process(evs[i : i+50])
		first = append(first, ids...)
	}
	before, next := tg.dump(), tg.g.NextProfileID()

	tg.restart()
	if got := tg.dump(); got != before {
		t.Fatalf("graph changed across restart:\n%s\nwant:\n%s", got, before)
	}
	if got := tg.g.NextProfileID(); got != next {
		t.Fatalf("next profile id %d after restart, want %d", got, next)
	}

	// Replay the last two batches: read-only, same graph, and each event
	// resolves to the current profile of what it resolved to before.
	var replayed []uint32
	for i := 200; i < 300; i += 50 {
		_, ids := tg.process(evs[i : i+50])
		replayed = append(replayed, ids...)
	}
	if got := tg.dump(); got != before {
		t.Fatalf("replay changed the graph:\n%s\nwant:\n%s", got, before)
	}
	for i, id := range replayed {
		if want := tg.follow(first[200+i]); id != want {
			t.Fatalf("replayed event %d resolved to %d, want %d", 200+i, id, want)
		}
	}
	if m := tg.metricsText(); !strings.Contains(m, `cdp_identity_events_total{result="replayed"} 100`) {
		t.Fatalf("replayed rows not counted:\n%s", m)
	}

	// A batch straddling the committed offset applies only its new rows.
	_, ids := tg.process(evs[280:350])
	if slices.Contains(ids, 0) {
		t.Fatalf("unresolved rows in %v", ids)
	}
	after := tg.dump()
	if after == before {
		t.Fatal("new rows of a straddling batch were not applied")
	}
	ref := newTestGraph(t, testConfig())
	for i := 0; i < 350; i += 50 {
		ref.process(evs[i : i+50])
	}
	if got := ref.dump(); got != after {
		t.Fatalf("graph after restart and replay differs from an uninterrupted run:\n%s\nwant:\n%s", after, got)
	}
}

func TestSecretMismatch(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	tg.cfg.Secret = "another"
	tg.close()
	defer func() {
		if r := recover(); r != nil {
			t.Fatal(r)
		}
	}()
	db := tg.reopenDB()
	defer db.Close()
	if _, err := New(tg.cfg, db, nil); !errors.Is(err, ErrSecretMismatch) {
		t.Fatalf("got %v, want ErrSecretMismatch", err)
	}
}

// TestPlainToEncrypted opens a store written without a keyring (v1
// records, plain values) with one: the graph reads the same, records are
// sealed as they are written again, and once one is sealed the store
// cannot be opened without the keyring.
func TestPlainToEncrypted(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 12))
	tg := newTestGraph(t, testConfig())
	tg.plain = true
	tg.restart()
	evs, _ := randomEvents(r, 300, 60)
	for i := 0; i < 200; i += 50 {
		tg.process(evs[i : i+50])
	}
	before := tg.dump()
	tg.plain = false
	tg.restart()
	if got := tg.dump(); got != before {
		t.Fatalf("graph read differently with a keyring:\n%s\nwant:\n%s", got, before)
	}
	for i := 200; i < 300; i += 50 {
		tg.process(evs[i : i+50])
	}
	if d := tg.dump(); strings.Contains(d, "CHECK FAILED") {
		t.Fatal(d)
	}
	sealed := 0
	it, err := tg.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixProfile}, UpperBound: []byte{prefixProfile + 1}})
	if err != nil {
		t.Fatal(err)
	}
	for it.First(); it.Valid(); it.Next() {
		if it.Value()[0] == profileV2 {
			sealed++
		}
	}
	it.Close()
	if sealed == 0 {
		t.Fatal("no record was sealed when written again")
	}
	tg.close()
	tg.plain = true
	db := tg.reopenDB()
	defer db.Close()
	g, err := New(tg.cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "no keyring") {
		t.Fatalf("sealed records read without a keyring: %v", err)
	}
}
