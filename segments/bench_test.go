package segments

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

func benchBatch(b testing.TB, n int, withConsent bool) *engine.Batch {
	rows := make([]row, n)
	for i := range rows {
		raw := `{"type":"track","event":"Order Completed","userId":"u` + strconv.Itoa(i) + `","properties":{"revenue":12.5,"currency":"EUR","products":[{"id":"p1","price":12.5}]},"context":{"ip":"10.0.0.1","library":{"name":"analytics.js","version":"2.11.1"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64)"}}`
		if withConsent {
			raw = `{"type":"track","event":"Order Completed","userId":"u` + strconv.Itoa(i) + `","properties":{"revenue":12.5},"context":{"consent":{"categoryPreferences":{"Analytics":true,"Advertising":` + strconv.FormatBool(i%3 == 0) + `,"Functional":false},"tcString":"COvzTO5OvzTO5BRAAAENAPCoALIAADgAAAAAAewAwABAAlAB6ABBFADBQAQA9hAAAcAA"},"library":{"name":"analytics.js","version":"2.11.1"}}}`
		}
		rows[i] = row{pid: uint32(1 + i%1000), ts: time.Unix(int64(1000+i), 0), raw: raw}
	}
	return makeBatch(b, 1, rows)
}

// rudderBatch is n rows over 1000 profiles carrying RudderStack consent
// as the decoder's cut-out (as in the pipeline), one of three payloads
// per profile.
func rudderBatch(b testing.TB, n int) *engine.Batch {
	rows := make([]row, n)
	for i := range rows {
		pid := uint32(1 + i%1000)
		denied := [...]string{`[]`, `["C0002"]`, `["C0004"]`}[pid%3]
		cut := `{"context":{"consentManagement":{"provider":"oneTrust","resolutionStrategy":"and","allowedConsentIds":["C0001","C0003"],"deniedConsentIds":` + denied + `}}}`
		raw := `{"type":"track","event":"Order Completed","userId":"u` + strconv.Itoa(i) + `","properties":{"revenue":12.5},` + cut[1:]
		rows[i] = row{pid: pid, ts: time.Unix(int64(1000+i), 0), raw: raw, cut: &cut}
	}
	return makeBatch(b, 1, rows)
}

// BenchmarkSelect is the per-sink filter on a processed 4096-row batch
// (the bitmap / mask step); SetBytes counts 1 byte per event so MB/s
// reads as millions of events per second.
func BenchmarkSelect(b *testing.B) {
	for _, pc := range []PolicyConfig{
		{Name: "profile_default", Purposes: []string{"analytics"}, Require: "all", Unknown: "purpose_default", DecideBy: "profile"},
		{Name: "profile_deny", Purposes: []string{"analytics", "advertising"}, Require: "all", Unknown: "deny", DecideBy: "profile"},
		{Name: "stricter_any", Purposes: []string{"analytics", "advertising"}, Require: "any", Unknown: "allow", DecideBy: "stricter"},
		{Name: "rudderstack", RudderStack: &RudderStackConfig{Provider: "oneTrust", Consents: []string{"C0002"}}},
		{Name: "rudderstack_cut", RudderStack: &RudderStackConfig{Provider: "oneTrust", Consents: []string{"C0002"}}},
		{Name: "profile_default_erased_set", Purposes: []string{"analytics"}, Require: "all", Unknown: "purpose_default", DecideBy: "profile"},
	} {
		b.Run(pc.Name, func(b *testing.B) {
			db := openDB(b, "")
			defer db.Close()
			c, err := New(testConfig(), db, nil)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Suppress(7)
			if strings.HasSuffix(pc.Name, "_erased_set") {
				eraseOthers(b, c)
			}
			batch := benchBatch(b, 4096, true)
			if strings.HasSuffix(pc.Name, "_cut") {
				batch.Release()
				batch = rudderBatch(b, 4096)
			}
			defer batch.Release()
			if err := c.Process(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			p, err := NewPolicy(pc, c)
			if err != nil {
				b.Fatal(err)
			}
			sel := make([]int, 0, 4096)
			drop := func(int, engine.Reason) {}
			b.SetBytes(4096)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				sel = p.Select(batch, sel[:0], drop)
			}
			b.ReportMetric(float64(b.N)*4096/b.Elapsed().Seconds()/1e6, "Mevents/s")
		})
	}
}

// eraseOthers erases 10,000 profiles none of the bench batches names, so
// that every row pays the erased-set lookup (*_erased_set benchmarks).
func eraseOthers(b *testing.B, c *Consent) {
	ids := make([]uint32, 10_000)
	for i := range ids {
		ids[i] = uint32(100_000 + 7*i)
	}
	if err := c.Erase(ids...); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkProcess is the consent stage per event (SetBytes = raw bytes):
// events with consent fields (parse, decode cache hit, state update) and
// without (prefilter only); newer_decisions moves every row's timestamp
// forward each time, so each row re-stamps its profile's decisions and
// every batch writes its 1000 profiles to Pebble (a live stream's case;
// the others replay the same batch, whose rows are then ties).
// consent_fields=true,erased_set is the first with 10,000 other profiles
// erased since start: the erased-set lookup per row.
func BenchmarkProcess(b *testing.B) {
	for _, name := range []string{"consent_fields=true", "consent_fields=false", "newer_decisions", "consent_fields=true,erased_set"} {
		with, newer := name != "consent_fields=false", name == "newer_decisions"
		b.Run(name, func(b *testing.B) {
			db := openDB(b, "")
			defer db.Close()
			c, err := New(testConfig(), db, nil)
			if err != nil {
				b.Fatal(err)
			}
			if strings.HasSuffix(name, "erased_set") {
				eraseOthers(b, c)
			}
			proto := benchBatch(b, 4096, with)
			defer proto.Release()
			tsv := proto.Rec.Column(engine.ColTimestamp).(*array.Timestamp).TimestampValues()
			raw := 0
			for i := 0; i < 4096; i++ {
				raw += proto.Rec.Column(engine.ColRaw).(*array.Binary).ValueLen(i)
			}
			b.SetBytes(int64(raw))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if newer {
					for i := range tsv {
						tsv[i] += 1e6
					}
				}
				proto.Rec.Retain()
				batch := &engine.Batch{Seq: 1, Rec: proto.Rec}
				if err := c.Process(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				batch.Release()
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(b.N)/4096, "ns/event")
		})
	}
}

// BenchmarkBitmapMemory reports the bitmap memory of 10M profiles (100M
// with -bitmap100m via the harness; too slow for go test by default).
func BenchmarkBitmapMemory(b *testing.B) {
	for _, n := range []int{10_000_000} {
		b.Run(fmt.Sprintf("profiles_%d", n), func(b *testing.B) {
			var ser, heap uint64
			for b.Loop() {
				ser, heap = BitmapMemory(n)
			}
			b.ReportMetric(float64(ser), "serialized-bytes")
			b.ReportMetric(float64(heap), "heap-bytes")
			b.ReportMetric(float64(ser)/float64(n), "bytes/profile")
		})
	}
}

// TestProcessAllocsPerBatch: Process allocates per batch (the new mask
// column and record, metrics, Pebble's write batch), never per row: a
// 4096-row batch costs about as many allocations as a 1024-row one over the same
// 1000 profiles, whether its rows are ties or newer decisions that move
// the profiles' timestamps (persisted).
func TestProcessAllocsPerBatch(t *testing.T) {
	allocs := func(rows int, newer bool) float64 {
		db := openDB(t, "")
		defer db.Close()
		c, err := New(testConfig(), db, nil)
		if err != nil {
			t.Fatal(err)
		}
		proto := benchBatch(t, rows, true) // profiles 1..1000
		defer proto.Release()
		tsv := proto.Rec.Column(engine.ColTimestamp).(*array.Timestamp).TimestampValues()
		run := func() {
			if newer {
				for i := range tsv {
					tsv[i] += 1e6 // every row a second later than last time
				}
			}
			proto.Rec.Retain()
			batch := &engine.Batch{Seq: 1, Rec: proto.Rec}
			if err := c.Process(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			batch.Release()
		}
		for range 3 {
			run() // warm: profiles, buffers, memo
		}
		return testing.AllocsPerRun(20, run)
	}
	for _, newer := range []bool{false, true} {
		small, large := allocs(1024, newer), allocs(4096, newer)
		t.Logf("newer=%v: %v allocations per 1024-row batch, %v per 4096-row batch", newer, small, large)
		// Per-row allocation would add thousands for the 3072 extra rows;
		// the slack of 1% of them absorbs sync.Pool, which drops pooled
		// objects at random under the race detector (Pebble's batches).
		if large > small+float64(4096-1024)/100 {
			t.Errorf("newer=%v: %v allocations per 4096-row batch, %v per 1024-row batch: something allocates per row", newer, large, small)
		}
	}
}

// BenchmarkProcessStale is the consent stage on rows older than what their
// profiles hold (a replay, late events) over n profiles with decisions, at
// random: the cost of reaching each row's profile state in a table too big
// for the cache. Rows carry the decoder's cut-out, as in the pipeline.
// ns/event is per row.
func BenchmarkProcessStale(b *testing.B) {
	payload := `{"context":{"consent":{"categoryPreferences":{"Analytics":true,"Advertising":false,"Functional":false}}}}`
	raw := `{"type":"track","event":"Order Completed","userId":"u1","properties":{"revenue":12.5},"context":{"ip":"10.0.0.1","consent":{"categoryPreferences":{"Analytics":true,"Advertising":false,"Functional":false}},"library":{"name":"analytics.js","version":"2.11.1"}}}`
	for _, n := range []int{25_000, 1_000_000} {
		b.Run(fmt.Sprintf("profiles=%d", n), func(b *testing.B) {
			db := openDB(b, "")
			defer db.Close()
			c, err := New(testConfig(), db, nil)
			if err != nil {
				b.Fatal(err)
			}
			rows := make([]row, 4096)
			for start := 1; start <= n; start += len(rows) {
				for i := range rows {
					rows[i] = row{pid: uint32(min(start+i, n)), ts: time.Unix(2_000_000, 0), raw: raw, cut: &payload}
				}
				batch := makeBatch(b, 1, rows)
				if err := c.Process(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				batch.Release()
			}
			rng := rand.New(rand.NewPCG(1, 1))
			for i := range rows {
				rows[i] = row{pid: uint32(1 + rng.IntN(n)), ts: time.Unix(1_000_000, 0), raw: raw, cut: &payload}
			}
			proto := makeBatch(b, 1, rows)
			defer proto.Release()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				proto.Rec.Retain()
				batch := &engine.Batch{Seq: 1, Rec: proto.Rec}
				if err := c.Process(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				batch.Release()
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(b.N)/float64(len(rows)), "ns/event")
		})
	}
}

// BenchmarkLoad is the consent stage's start: New reads every profile's
// decisions from Pebble (on disk, compacted, as after a restart) and
// rebuilds the per-purpose bitmaps. Each profile holds four decisions
// (two granted, one of them expiring, one denied, one granted or denied);
// CONSENT_LOAD_PROFILES sets the count (default 1,000,000).
func BenchmarkLoad(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("CONSENT_LOAD_PROFILES")); err == nil && v > 0 {
		n = v
	}
	dir := b.TempDir()
	db := openDB(b, dir)
	t0 := time.Now().Add(-time.Hour).UnixMicro()
	far := time.Now().Add(24 * time.Hour).UnixMicro()
	var key, val []byte
	wb := db.NewBatch()
	for pid := uint32(1); pid <= uint32(n); pid++ {
		var p profile
		p.put(0, Decision{Status: Granted, Source: 1, Time: t0 + int64(pid)})
		p.put(1, Decision{Status: Granted, Source: 1, Time: t0 + int64(pid), Expires: far})
		p.put(2, Decision{Status: Denied, Source: 2, Time: t0 + int64(pid)})
		st := Granted
		if pid%3 == 0 {
			st = Denied
		}
		p.put(3, Decision{Status: st, Source: 3, Time: t0 + int64(pid)})
		key = profileKey(key[:0], prefixProfile, pid)
		val = appendProfile(val[:0], &p)
		if err := wb.Set(key, val, nil); err != nil {
			b.Fatal(err)
		}
		if wb.Len() > 4<<20 {
			if err := wb.Commit(pebble.NoSync); err != nil {
				b.Fatal(err)
			}
			wb = db.NewBatch()
		}
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		b.Fatal(err)
	}
	if err := db.Compact([]byte{prefixProfile}, []byte{prefixProfile + 1}, true); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	cfg := testConfig()
	var c *Consent
	for b.Loop() {
		db := openDB(b, dir)
		var err error
		if c, err = New(cfg, db, nil); err != nil {
			b.Fatal(err)
		}
		if got := c.granted[0].GetCardinality(); got != uint64(n) {
			b.Fatalf("granted[0] holds %d profiles, want %d", got, n)
		}
		b.StopTimer()
		_ = db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/profile")
	b.ReportMetric(float64(n), "profiles")
}
