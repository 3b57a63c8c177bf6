package segments

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdpstream/cdpstream/internal/disktest"
)

// openPlainDB opens Pebble on disk without block compression, so that a
// byte scan of the directory sees every value stored in an SST; with
// recycle false, obsolete WAL files are deleted instead of recycled.
func openPlainDB(t testing.TB, dir string, recycle bool) *pebble.DB {
	t.Helper()
	opts := &pebble.Options{Levels: make([]pebble.LevelOptions, 7)}
	for i := range opts.Levels {
		opts.Levels[i].Compression = pebble.NoCompression
	}
	if !recycle {
		opts.Cleaner = noRecycleCleaner{}
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// noRecycleCleaner deletes obsolete files like pebble.DeleteCleaner, and
// makes Pebble delete obsolete WAL files instead of keeping them for reuse:
// Pebble recycles logs unless its Cleaner has the (unexported)
// NeedsFileContents marker, which ArchiveCleaner carries; embedded one
// level deeper than DeleteCleaner it lends the marker while
// DeleteCleaner's Clean and String win. A recycled WAL is overwritten from
// its start by the next log, so its tail keeps the records of the log it
// was, erased ones included. The state store (engine.OpenStore) needs
// this for erasure to reach the WAL.
type noRecycleCleaner struct {
	pebble.DeleteCleaner
	needsContents
}

type needsContents struct{ pebble.ArchiveCleaner }

// filesHolding returns the files under dir whose bytes contain needle.
func filesHolding(t testing.TB, dir string, needle []byte) []string {
	t.Helper()
	found, err := disktest.Find(dir, needle)
	if err != nil {
		t.Fatal(err)
	}
	return found[string(needle)]
}

// TestEraseConsent: a profile with decisions in several purposes (and
// suppressed), seen by a policy, is erased: nothing known, in no bitmap,
// nothing in Pebble but the suppression, nothing in the annotations or
// the explain ring; others unchanged; a second Erase changes nothing;
// the state after reopening is the same; no file of the data directory
// holds the erased record's bytes when WAL recycling is off. With Pebble's
// default (recycling, as engine.OpenStore opens it today) no SST holds
// them, but a recycled WAL does: the subtest lists it.
func TestEraseConsent(t *testing.T) {
	t.Run("wal-recycling-off", func(t *testing.T) { testEraseConsent(t, false) })
	t.Run("pebble-default", func(t *testing.T) { testEraseConsent(t, true) })
}

func testEraseConsent(t *testing.T, recycle bool) {
	dir := t.TempDir()
	db := openPlainDB(t, dir, recycle)
	defer func() { _ = db.Close() }()
	warmWAL(t, db)
	clock := time.Unix(1_235_000, 0)
	newConsent := func(reg prometheus.Registerer) *Consent {
		c, err := New(testConfig(), db, reg, WithClock(func() time.Time { return clock }))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	reg := prometheus.NewRegistry()
	c := newConsent(reg)
	erasedTotal := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "cdp_segments_erased_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return -1
	}
	pol, err := NewPolicy(PolicyConfig{Name: "ads", Purposes: []string{"advertising"}, Require: "all", Unknown: "deny", DecideBy: "profile"}, c)
	if err != nil {
		t.Fatal(err)
	}
	const (
		victim = uint32(0x00c0ffee)
		other  = uint32(0x00c0ffef) // adjacent: compaction runs must not touch it
	)
	seg := `{"context":{"consent":{"categoryPreferences":{"Analytics":%t,"Advertising":%t,"Functional":true}}}}`
	usp := `{"context":{"consent":{"usPrivacy":"1YYN"}}}`
	b := makeBatch(t, 1, []row{
		{pid: victim, ts: time.Unix(1_234_567, 0), raw: fmt.Sprintf(seg, true, false)},
		{pid: victim, ts: time.Unix(1_234_601, 0), raw: usp},
		{pid: other, ts: time.Unix(1_234_599, 0), raw: fmt.Sprintf(seg, false, true)},
		{pid: victim, ts: time.Unix(1_234_602, 0), raw: `{"type":"track"}`},
	})
	if err := c.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	defer b.Rec.Release()
	if kept := pol.Select(b, nil, nil); !reflect.DeepEqual(kept, []int{2}) {
		t.Fatalf("policy kept %v, want [2]", kept)
	}
	if err := c.Suppress(victim); err != nil {
		t.Fatal(err)
	}
	c.mu.RLock()
	record := appendProfile(nil, c.profiles.get(victim))
	otherRecord := appendProfile(nil, c.profiles.get(other))
	c.mu.RUnlock()
	if known := c.View(victim); known.Purposes["analytics"].Status != "granted" || known.Purposes["sale_of_data"].Status != "denied" {
		t.Fatalf("setup: %+v", known)
	}
	otherView := c.View(other)
	// Control: the record's bytes are found in an SST once flushed, so the
	// scan below would see them if they stayed.
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := filesHolding(t, dir, record); !containsSuffix(got, ".sst") {
		t.Fatalf("control: record bytes not found in an SST before erasure (files %v)", got)
	}

	if err := c.Erase(victim); err != nil {
		t.Fatal(err)
	}
	check := func(c *Consent, when string) {
		t.Helper()
		v := c.View(victim)
		for name, pv := range v.Purposes {
			if pv.Status != "unknown" || pv.Timestamp != nil || pv.Source != "" {
				t.Errorf("%s: purpose %s of the erased profile: %+v", when, name, pv)
			}
		}
		if !v.Suppressed {
			t.Errorf("%s: the suppression must outlive the erasure", when)
		}
		for _, pu := range c.cat.purposes {
			g, d, _ := c.PurposeSets(pu.Name)
			if g.Contains(victim) || d.Contains(victim) {
				t.Errorf("%s: %s bitmaps hold the erased profile", when, pu.Name)
			}
		}
		if got := c.View(other); !reflect.DeepEqual(got, otherView) {
			t.Errorf("%s: other profile changed:\n%+v\nwant\n%+v", when, got, otherView)
		}
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{0x20}, UpperBound: []byte{0x28}})
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			if len(k) >= 5 && bytes.Equal(k[1:5], profileKey(nil, 0, victim)[1:]) && k[0] != prefixSuppressed {
				t.Errorf("%s: key %x of the erased profile left", when, k)
			}
		}
	}
	check(c, "after erase")
	c.ann.mu.RLock()
	if a := c.ann.find(b); a == nil || a.pk[0] != 0 || a.pk[1] != 0 || a.pk[3] != 0 || a.pk[2] == 0 {
		t.Errorf("annotation after erase: %+v", a)
	}
	c.ann.mu.RUnlock()
	pol.mu.Lock()
	for _, e := range pol.drops.e {
		if e.pid == victim {
			t.Errorf("explain ring still names the erased profile: %+v", e)
		}
	}
	pol.mu.Unlock()
	if n := erasedTotal(); n != 1 {
		t.Errorf("cdp_segments_erased_total = %v, want 1", n)
	}
	after := dump(c)

	// Idempotent.
	if err := c.Erase(victim); err != nil {
		t.Fatal(err)
	}
	if got := dump(c); got != after {
		t.Errorf("second erase changed the state:\n%s\nwant\n%s", got, after)
	}
	if n := erasedTotal(); n != 1 {
		t.Errorf("cdp_segments_erased_total after a second erase = %v, want 1", n)
	}
	check(c, "after second erase")

	// On disk: the erased record is in no file; the other one still is.
	checkDisk(t, dir, record, recycle)
	if got := filesHolding(t, dir, otherRecord); !containsSuffix(got, ".sst") {
		t.Errorf("the other profile's record is in no SST (files %v)", got)
	}

	// Reopen: erased stays erased.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openPlainDB(t, dir, recycle)
	c = newConsent(nil)
	if got := dump(c); got != after {
		t.Errorf("after reopening:\n%s\nwant\n%s", got, after)
	}
	check(c, "after reopening")
	checkDisk(t, dir, record, recycle)
}

// checkDisk fails if a file under dir holds needle; with recycle (Pebble's
// default) a recycled WAL may, and is only reported.
func checkDisk(t testing.TB, dir string, needle []byte, recycle bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	got := filesHolding(t, dir, needle)
	for !onlyRecycledWAL(got, recycle) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		got = filesHolding(t, dir, needle)
	}
	for _, f := range got {
		if recycle && filepath.Ext(f) == ".log" {
			t.Logf("known limitation: with WAL recycling the erased bytes remain in the recycled WAL %s", f)
			continue
		}
		t.Errorf("erased bytes still in %s", f)
	}
}

// warmWAL rotates the WAL a few times, as a long-running store has, so
// that obsolete WAL files are recycled rather than deleted (Pebble deletes
// only the logs numbered before the ones it found at open).
func warmWAL(t testing.TB, db *pebble.DB) {
	t.Helper()
	for i := range 4 {
		if err := db.Set([]byte{0x7f, byte(i)}, []byte("warm"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

// onlyRecycledWAL reports whether files is empty, or with recycle holds
// only WAL files (obsolete SSTs are deleted in the background: wait for
// them).
func onlyRecycledWAL(files []string, recycle bool) bool {
	for _, f := range files {
		if !recycle || filepath.Ext(f) != ".log" {
			return false
		}
	}
	return true
}

func containsSuffix(files []string, suffix string) bool {
	for _, f := range files {
		if filepath.Ext(f) == suffix {
			return true
		}
	}
	return false
}

func TestRuns(t *testing.T) {
	got := runs([]uint32{9, 3, 4, 5, 5, 1, ^uint32(0), ^uint32(0) - 1, 0})
	want := [][2]uint32{{0, 1}, {3, 5}, {9, 9}, {^uint32(0) - 1, ^uint32(0)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("runs = %v, want %v", got, want)
	}
}

// TestEraseAfterBatchReleased: the runner releases a batch once its sinks
// acked it; the consent stage's per-batch annotations must not read the
// released record when a later Erase runs (it used to, and panicked).
func TestEraseAfterBatchReleased(t *testing.T) {
	db := openDB(t, "")
	c, err := New(testConfig(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := makeBatch(t, 1, []row{{pid: 3, ts: at, raw: `{"context":{"consent":{"categoryPreferences":{"Analytics":true}}}}`}, {pid: 4, ts: at, raw: `{}`}})
	if err := c.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Rec.Release()
	b.Rec = nil
	if err := c.Erase(3); err != nil {
		t.Fatal(err)
	}
	if v := c.View(3); len(v.Purposes) != 0 && v.Purposes["analytics"].Status == "granted" {
		t.Fatalf("erased profile still has consent: %+v", v)
	}
}
