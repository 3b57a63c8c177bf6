package privacy

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestMirroredChain: entries as the mirror publishes them (JSON) decode
// to the same entries, and CheckChain accepts the run, a run starting
// mid-trail, and fails on one changed byte, a removed entry and two
// swapped ones, as Verify does on the store.
func TestMirroredChain(t *testing.T) {
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	var got []Entry
	a, err := NewAudit(db, testKey, WithMirror(func(e Entry) {
		b, err := json.Marshal(e)
		if err != nil {
			t.Error(err)
			return
		}
		var back Entry
		if err := json.Unmarshal(b, &back); err != nil {
			t.Errorf("%s: %v", b, err)
		}
		got = append(got, back)
	}))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 123456789, time.UTC)
	for i := range 6 {
		if _, err := a.Append(Record{Time: t0.Add(time.Duration(i) * time.Second), Actor: "ops",
			Action: "request.completed", Target: fmt.Sprint("req-", i), Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := Entries(db, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, stored) {
		t.Fatalf("mirrored %+v\nstored   %+v", got, stored)
	}
	if err := CheckChain(got); err != nil {
		t.Fatalf("intact run: %v", err)
	}
	if err := CheckChain(got[2:]); err != nil {
		t.Fatalf("a run from entry 3: %v", err)
	}
	broken := func(name string, es []Entry, seq uint64) {
		t.Helper()
		err := CheckChain(es)
		var ve *VerifyError
		if !errors.Is(err, ErrAuditBroken) || !errors.As(err, &ve) || ve.Seq != seq {
			t.Errorf("%s: %v, want a broken chain at %d", name, err, seq)
		}
	}
	changed := slices.Clone(got)
	changed[3].Outcome = "ol"
	broken("one changed byte", changed, 4)
	broken("a removed entry", slices.Delete(slices.Clone(got), 2, 3), 3)
	swapped := slices.Clone(got)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	broken("two swapped", swapped, 2)
}
