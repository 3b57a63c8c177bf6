package engine

import (
	"reflect"
	"testing"

	"github.com/cockroachdb/pebble"
)

func TestOffsetsPerOwner(t *testing.T) {
	db, err := pebble.Open(t.TempDir(), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	put := func(owner string, offs ...Offset) {
		w := db.NewBatch()
		if err := PutOffsets(w, owner, offs); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	put("identity", Offset{Topic: "events", Partition: 2, Next: 100, Epoch: 3}, Offset{Topic: "events", Partition: 0, Next: 7, Epoch: -1})
	put("consent", Offset{Topic: "events", Partition: 2, Next: 50, Epoch: 3})
	put("identity", Offset{Topic: "events", Partition: 2, Next: 120, Epoch: 4})
	got, err := LoadOffsets(db, "identity")
	if err != nil {
		t.Fatal(err)
	}
	want := []Offset{{Topic: "events", Partition: 0, Next: 7, Epoch: -1}, {Topic: "events", Partition: 2, Next: 120, Epoch: 4}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("identity offsets = %+v, want %+v", got, want)
	}
	if got, _ := LoadOffsets(db, "consent"); len(got) != 1 || got[0].Next != 50 {
		t.Fatalf("consent offsets = %+v: owners must not see each other's positions", got)
	}
	if got, _ := LoadOffsets(db, "ident"); len(got) != 0 {
		t.Fatalf("a prefix of an owner's name sees %+v", got)
	}
}
