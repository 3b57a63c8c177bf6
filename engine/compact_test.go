package engine

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/internal/disktest"
)

// TestCompactorPaysDebt: values deleted with their spans staged as debt
// are still in the store's files until the compactor runs, and gone from
// every file after it; the debt survives a restart in between.
func TestCompactorPaysDebt(t *testing.T) {
	dir := t.TempDir()
	open := func() *pebble.DB {
		opts := &pebble.Options{Cleaner: noRecycleCleaner{}}
		opts.Levels = []pebble.LevelOptions{{Compression: pebble.NoCompression}}
		opts.EnsureDefaults()
		db, err := pebble.Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	secret := func(i int) []byte { return fmt.Appendf(nil, "secret-value-%04d-of-a-person", i) }
	w := db.NewBatch()
	for i := range 500 {
		_ = w.Set(fmt.Appendf(nil, "k%04d", i), secret(i), nil)
	}
	if err := w.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact([]byte("k"), []byte("l"), false); err != nil { // into the bottom level
		t.Fatal(err)
	}
	c, err := NewCompactor(db, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w = db.NewBatch()
	for _, i := range []int{7, 8, 300} {
		k := fmt.Appendf(nil, "k%04d", i)
		_ = w.Delete(k, nil)
		if err := c.Stage(w, k, append(k, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	c.Staged()
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if !inFiles(t, dir, secret(300)) {
		t.Fatal("the deleted value is not in any file before compaction: the test proves nothing")
	}
	// Restart with the debt unpaid.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open()
	defer db.Close()
	if c, err = NewCompactor(db, nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Idle():
		t.Fatal("debt left before the restart is not pending after it")
	default:
	}
	if err := c.CompactNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-c.Idle()
	// Pebble deletes obsolete files in the background, moments after the
	// compaction that made them obsolete.
	db.TestOnlyWaitForCleaning()
	for _, i := range []int{7, 8, 300} {
		if inFiles(t, dir, secret(i)) {
			t.Errorf("deleted value %d still in the store's files after compaction", i)
		}
	}
	if !inFiles(t, dir, secret(9)) {
		t.Error("a value that was not deleted is gone")
	}
	if spans, err := c.debt(); err != nil || len(spans) != 0 {
		t.Fatalf("debt after a pass: %v %v", spans, err)
	}
}

func inFiles(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	found, err := disktest.Find(dir, b)
	if err != nil {
		t.Fatal(err)
	}
	return len(found) > 0
}
