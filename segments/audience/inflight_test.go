package audience

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
)

// keysNaming returns the keys of this package's per-profile families
// (traits 0x29, counters 0x2a, membership rows 0x2b) and, with a keyring,
// the profile's key, that name pid.
func keysNaming(t testing.TB, db *pebble.DB, pid uint32) []string {
	t.Helper()
	be := binary.BigEndian.AppendUint32(nil, pid)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{0x28}, UpperBound: []byte{0x30}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		switch {
		case (k[0] == prefixTraits || k[0] == prefixCounter) && len(k) >= 5 && bytes.Equal(k[1:5], be),
			k[0] == prefixMember && bytes.HasSuffix(k, be):
			out = append(out, fmt.Sprintf("%x", k))
		}
	}
	if _, closer, err := db.Get(engine.KeyringKey(nil, pid)); err == nil {
		closer.Close()
		out = append(out, "keyring key")
	} else if !errors.Is(err, pebble.ErrNotFound) {
		t.Fatal(err)
	}
	return out
}

// TestEraseInFlight: batches resolved by identity before an erasure reach
// the store after Erase returned (a pipelined runner has several in
// flight). Their rows of the erased profile, and merges naming it, must
// not recreate anything: no trait, counter or membership key and no
// keyring key names it, it is neither known nor a member, and no record
// says it entered an audience. A profile merged into the erased one is
// erased with it (exits with cause erase, its values compacted out of the
// files); the erased profile merged into a live one leaves the survivor
// as it was.
func TestEraseInFlight(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testEraseInFlight(t, false) })
	t.Run("sealed", func(t *testing.T) { testEraseInFlight(t, true) })
}

func testEraseInFlight(t *testing.T, sealed bool) {
	const (
		victim = uint32(41)
		other  = uint32(42) // unrelated, must be untouched
		late   = uint32(43) // merged into the victim by a batch in flight
		live   = uint32(44) // survivor of a merge naming the victim as merged
		secret = "late-trait-secret-789"
	)
	dir := t.TempDir()
	db := openPlainDB(t, dir, false)
	defer func() { _ = db.Close() }()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var got []Change
	open := func() *Store {
		var opts []Option
		if sealed {
			opts = append(opts, WithKeyring(newTestKeyring(t, db, 1)))
		}
		s, err := New(Config{}, db, append(opts, WithClock(func() time.Time { return now }),
			WithOnChange(func(c []Change) { got = append(got, c...) }))...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	defer func() { _ = s.Close() }()
	for _, d := range []Definition{
		{ID: "pro", Condition: Condition{Trait: &TraitCond{Path: "plan", Op: "eq", Value: json.RawMessage(`"pro"`)}}},
		{ID: "buyers", Condition: Condition{Event: &EventCond{Name: "order", Count: minCount(1), Within: "30d"}}},
		// true for a profile without counts: re-evaluating a profile erased
		// in the batch would make it a member again
		{ID: "few-orders", Condition: Condition{Not: &Condition{Event: &EventCond{Name: "order", Count: minCount(5)}}}},
	} {
		if _, err := s.Create(d); err != nil {
			t.Fatal(err)
		}
	}
	s.Wait()
	process := func(seq uint64, merges []engine.Merge, evs ...ev) {
		t.Helper()
		b := makeBatch(seq, evs, now)
		b.Merges = merges
		if err := s.Process(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		b.Release()
	}
	process(1, nil,
		identify(victim, `{"plan":"pro"}`), track(victim, "order", now, ""),
		identify(other, `{"plan":"pro"}`),
		identify(late, `{"plan":"pro","note":"`+secret+`"}`), track(late, "order", now, ""),
		identify(live, `{"plan":"basic"}`))
	if d := dumpMembers(s); d != "buyers v1: [41 43]\nfew-orders v1: [41 43]\npro v1: [41 42 43]\n" {
		t.Fatalf("setup:\n%s", d)
	}
	liveTraits, _, err := s.Traits(live)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if !sealed {
		if f := filesHolding(t, dir, []byte(secret)); !hasSST(f) {
			t.Fatalf("control: %q in no SST (files %v)", secret, f)
		}
	}

	got = nil
	if err := s.Erase(victim); err != nil {
		t.Fatal(err)
	}
	gone := func(when string, pids ...uint32) {
		t.Helper()
		for _, pid := range pids {
			if k := keysNaming(t, db, pid); len(k) > 0 {
				t.Errorf("%s: keys of erased profile %d: %v", when, pid, k)
			}
			if s.Universe().Contains(pid) {
				t.Errorf("%s: erased profile %d is known", when, pid)
			}
			for _, a := range s.List() {
				if in, _ := s.Contains(a.ID, pid); in {
					t.Errorf("%s: erased profile %d is in %s", when, pid, a.ID)
				}
			}
			if _, ok, err := s.Traits(pid); ok || err != nil {
				t.Errorf("%s: traits of erased profile %d: %v %v", when, pid, ok, err)
			}
			for _, c := range got {
				if c.ProfileID == pid && c.Entered {
					t.Errorf("%s: erased profile %d entered %s", when, pid, c.Audience)
				}
			}
		}
	}
	gone("after erase", victim)

	// In flight: resolved to the victim before the erasure.
	got = nil
	process(2, nil,
		identify(victim, `{"plan":"pro"}`), track(victim, "order", now, ""),
		identify(other, `{"plan":"basic"}`))
	gone("after an in-flight batch", victim)
	if f := fmtChanges(got); f != "exit  pro v1 profile 42 (event)\n" {
		t.Errorf("records of the in-flight batch:\n%s", f)
	}

	// Merged into the erased survivor (identity merged it before erasing
	// the victim): the merged profile's state is the erased person's. Its
	// row in the batch is applied before the merges, and goes with it.
	got = nil
	process(3, []engine.Merge{{Survivor: victim, Merged: []uint32{late}}},
		track(late, "order", now, ""), identify(victim, `{"plan":"pro"}`))
	gone("after a merge into the erased profile", victim, late)
	if f := fmtChanges(got); f != "exit  buyers v1 profile 43 (erase)\nexit  few-orders v1 profile 43 (erase)\nexit  pro v1 profile 43 (erase)\n" {
		t.Errorf("records of the merge into the erased profile:\n%s", f)
	}
	if !sealed {
		checkDisk(t, dir, []byte(secret), false)
	}

	// The erased profile merged into a live one: nothing moves.
	got = nil
	process(4, []engine.Merge{{Survivor: live, Merged: []uint32{victim}}}, identify(victim, `{"plan":"pro","extra":1}`))
	gone("after a merge of the erased profile", victim, late)
	if tr, ok, err := s.Traits(live); err != nil || !ok || string(tr) != string(liveTraits) {
		t.Errorf("the survivor's traits: %s %v %v, want %s", tr, ok, err, liveTraits)
	}
	for _, c := range got {
		if c.ProfileID == victim {
			t.Errorf("record of the erased profile: %+v", c)
		}
	}

	// A restart starts with an empty erased set (identity resolves nothing
	// to an erased id any more); nothing of them was written back.
	_ = s.Close()
	s = open()
	gone("after restart", victim, late)
	if in, _ := s.Contains("pro", other); in || !s.Universe().Contains(other) {
		t.Errorf("the other profile after restart: in pro %v, known %v", in, s.Universe().Contains(other))
	}
}

// TestErasedFeed: with WithErasedFeed, an id the identity graph erased
// gets nothing more from the store at the next batch, before the store's
// own Erase: no trait, counter or membership key, no record of entering.
func TestErasedFeed(t *testing.T) {
	const victim, other = uint32(51), uint32(52)
	db := openPlainDB(t, t.TempDir(), false)
	defer func() { _ = db.Close() }()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var log []uint32
	var got []Change
	s, err := New(Config{}, db, WithClock(func() time.Time { return now }),
		WithOnChange(func(c []Change) { got = append(got, c...) }),
		WithErasedFeed(func(from int) ([]uint32, int) { return log[from:], len(log) }))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if _, err := s.Create(Definition{ID: "pro", Condition: Condition{Trait: &TraitCond{Path: "plan", Op: "eq", Value: json.RawMessage(`"pro"`)}}}); err != nil {
		t.Fatal(err)
	}
	s.Wait()
	log = append(log, victim) // identity erased the victim before it was ever seen here
	b := makeBatch(1, []ev{identify(victim, `{"plan":"pro"}`), track(victim, "order", now, ""), identify(other, `{"plan":"pro"}`)}, now)
	if err := s.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if k := keysNaming(t, db, victim); len(k) != 0 {
		t.Fatalf("keys name the erased profile: %v", k)
	}
	for _, c := range got {
		if c.ProfileID == victim {
			t.Fatalf("a change record names the erased profile: %+v", c)
		}
	}
	if ok, err := s.Contains("pro", other); err != nil || !ok {
		t.Fatalf("the other profile is not a member: %v %v", ok, err)
	}
}

// tornView answers Granted and Denied as two reads around a change that
// moved every profile from denied to granted: separately they say
// neither; Sets reads both at one instant (after the change).
type tornView struct{ after *roaring.Bitmap }

func (tornView) Granted(string) *roaring.Bitmap  { return roaring.New() } // read before the change
func (v tornView) Denied(string) *roaring.Bitmap { return roaring.New() } // read after it
func (v tornView) Sets(string) (granted, denied *roaring.Bitmap) {
	return v.after, roaring.New()
}

// TestConsentPairRead: a consent condition reads both sets of a purpose at
// one instant when the view offers it (audience.ConsentPair), so a profile
// whose consent moved between two reads is not taken for unknown.
func TestConsentPairRead(t *testing.T) {
	db := openPlainDB(t, t.TempDir(), false)
	defer func() { _ = db.Close() }()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, err := New(Config{}, db, WithClock(func() time.Time { return now }), WithConsent(tornView{after: roaring.BitmapOf(61)}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	// The trait makes the identify row evaluate the audience.
	if _, err := s.Create(Definition{ID: "unknown-ads", Condition: Condition{And: []Condition{
		{Trait: &TraitCond{Path: "plan", Op: "eq", Value: json.RawMessage(`"pro"`)}},
		{Consent: &ConsentCond{Purpose: "advertising", State: StateUnknown}},
	}}}); err != nil {
		t.Fatal(err)
	}
	s.Wait()
	b := makeBatch(1, []ev{identify(61, `{"plan":"pro"}`)}, now)
	if err := s.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if ok, err := s.Contains("unknown-ads", 61); err != nil || ok {
		t.Fatalf("a granted profile is a member of unknown-ads (torn read): %v %v", ok, err)
	}
	// The control: a profile in neither set is a member.
	b = makeBatch(2, []ev{identify(62, `{"plan":"pro"}`)}, now)
	if err := s.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if ok, err := s.Contains("unknown-ads", 62); err != nil || !ok {
		t.Fatalf("a profile with unknown consent is not a member: %v %v", ok, err)
	}
}
