package audience

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
)

// TestSetTraits: merge-patch semantics (nil removes, objects merge
// recursively, other values replace), audiences re-evaluated with cause
// rectify, unknown profiles and oversized results refused without a
// change, the same with traits sealed; and a restart reads them back.
func TestSetTraits(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		name := "plain"
		if sealed {
			name = "sealed"
		}
		t.Run(name, func(t *testing.T) { testSetTraits(t, sealed) })
	}
}

func testSetTraits(t *testing.T, sealed bool) {
	const pid = uint32(7)
	db := openDB(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var got []Change
	open := func(seed byte) *Store {
		opts := []Option{WithClock(func() time.Time { return now }), WithOnChange(func(c []Change) { got = append(got, c...) })}
		if sealed {
			opts = append(opts, WithKeyring(newTestKeyring(t, db, seed)))
		}
		s, err := New(Config{MaxTraitBytes: 200}, db, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open(1)
	defer func() { s.Close() }()
	for _, d := range []Definition{
		{ID: "pro", Condition: Condition{Trait: &TraitCond{Path: "plan", Op: "eq", Value: json.RawMessage(`"pro"`)}}},
		{ID: "paris", Condition: Condition{Trait: &TraitCond{Path: "address.city", Op: "eq", Value: json.RawMessage(`"Paris"`)}}},
	} {
		if _, err := s.Create(d); err != nil {
			t.Fatal(err)
		}
	}
	s.Wait()
	b := makeBatch(1, []ev{identify(pid, `{"plan":"basic","name":"Jane Roe","address":{"city":"Lyon","zip":"69001"},"score":12345678901234567890}`)}, now)
	if err := s.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	got = nil

	err := s.SetTraits(pid, map[string]any{
		"plan":    "pro",
		"name":    nil,                                                   // removed
		"address": map[string]any{"city": "Paris", "zip": nil, "n": 1.5}, // merged
		"tags":    []any{"a", "<b>"},
		"absent":  nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"address":{"city":"Paris","n":1.5},"plan":"pro","score":12345678901234567890,"tags":["a","<b>"]}`
	if js, ok, err := s.Traits(pid); err != nil || !ok || string(js) != want {
		t.Fatalf("traits = %s %v %v, want %s", js, ok, err, want)
	}
	if f := fmtChanges(got); f != "enter paris v1 profile 7 (rectify)\nenter pro v1 profile 7 (rectify)\n" {
		t.Fatalf("records:\n%s", f)
	}
	raw, closer, err := db.Get(traitsKey(nil, pid))
	if err != nil {
		t.Fatal(err)
	}
	if sealed == bytes.Contains(raw, []byte("Paris")) {
		t.Fatalf("stored traits (sealed %v): %q", sealed, raw)
	}
	closer.Close()

	// A replacement of an object by a scalar, and of a scalar by an object.
	if err := s.SetTraits(pid, map[string]any{"address": "unknown", "plan": map[string]any{"tier": "gold", "x": nil}}); err != nil {
		t.Fatal(err)
	}
	if js, _, _ := s.Traits(pid); string(js) != `{"address":"unknown","plan":{"tier":"gold"},"score":12345678901234567890,"tags":["a","<b>"]}` {
		t.Fatalf("traits = %s", js)
	}
	if d := dumpMembers(s); d != "paris v1: []\npro v1: []\n" {
		t.Fatalf("members:\n%s", d)
	}

	// Refused: unknown profile, too large. Nothing changes.
	before, _, _ := s.Traits(pid)
	got = nil
	if err := s.SetTraits(99, map[string]any{"plan": "pro"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown profile: %v", err)
	}
	if err := s.SetTraits(pid, map[string]any{"blob": string(bytes.Repeat([]byte("x"), 300))}); !errors.Is(err, ErrTraitsTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if after, _, _ := s.Traits(pid); !bytes.Equal(after, before) || len(got) != 0 {
		t.Fatalf("a refused SetTraits changed %s to %s, records %v", before, after, got)
	}
	if _, _, err := s.Traits(99); err != nil {
		t.Fatal(err)
	}

	// Restart: the traits read back, and an identify merges into them.
	s.Close()
	s = open(2)
	b = makeBatch(2, []ev{identify(pid, `{"plan":"pro"}`)}, now)
	if err := s.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if js, _, _ := s.Traits(pid); string(js) != `{"address":"unknown","plan":"pro","score":12345678901234567890,"tags":["a","<b>"]}` {
		t.Fatalf("after restart and identify: %s", js)
	}
	if in, _ := s.Contains("pro", pid); !in {
		t.Fatal("not in pro after the identify")
	}
}

// TestMergeSealedTraits: a merge moves the merged profile's traits into
// the survivor's, sealed under the survivor's key (the survivor's values
// win), and the merged profile's traits are gone.
func TestMergeSealedTraits(t *testing.T) {
	db := openDB(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	kr := newTestKeyring(t, db, 1)
	s, err := New(Config{}, db, WithClock(func() time.Time { return now }), WithKeyring(kr))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := makeBatch(1, []ev{identify(1, `{"plan":"pro"}`), identify(2, `{"plan":"free","city":"Oslo"}`)}, now)
	if err := s.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	b = makeBatch(2, nil, now)
	b.Merges = []engine.Merge{{Survivor: 1, Merged: []uint32{2}, Time: now}}
	if err := s.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if js, _, err := s.Traits(1); err != nil || string(js) != `{"plan":"pro","city":"Oslo"}` {
		t.Fatalf("survivor's traits: %s %v", js, err)
	}
	if _, ok, _ := s.Traits(2); ok {
		t.Fatal("the merged profile still has traits")
	}
	v, closer, err := db.Get(traitsKey(nil, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	if v[0] != traitsSealed || bytes.Contains(v, []byte("Oslo")) {
		t.Fatalf("stored: %q", v)
	}
	if _, err := kr.Open(nil, 2, v[1:], []byte(traitsPurpose)); err == nil {
		t.Fatal("the survivor's traits open under the merged profile's key")
	}
	if _, err := kr.Open(nil, 1, v[1:], []byte(traitsPurpose)); err != nil {
		t.Fatal(err)
	}
}
