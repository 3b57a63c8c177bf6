package segments

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// testConfig persists every repeated decision (StampGranularity 1ns), so
// restarts keep exactly the state in memory; TestStampGranularity covers
// the default.
func testConfig() Config {
	return Config{StampGranularity: time.Nanosecond, Purposes: []Purpose{
		{Name: "analytics", Bit: 0, Default: "denied", Segment: []string{"Analytics"}, OneTrust: []string{"C0002"},
			Ketch: []string{"analytics"}, MParticle: []string{"analytics"}, TCF: []int{1, 8}},
		{Name: "advertising", Bit: 1, Default: "denied", Segment: []string{"Advertising"}, OneTrust: []string{"C0004"},
			Ketch: []string{"targeted_advertising"}, TCF: []int{1, 3, 4}, USOptOut: []string{"targeted_advertising"}},
		{Name: "sale_of_data", Bit: 2, Default: "granted", USOptOut: []string{"sale", "sharing"}},
		{Name: "personalization", Bit: 3, Default: "denied", Segment: []string{"Functional"}, GrantTTL: time.Hour},
	}}
}

func openDB(t testing.TB, dir string) *pebble.DB {
	t.Helper()
	opts := &pebble.Options{}
	if dir == "" {
		opts.FS = vfs.NewMem()
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

type row struct {
	pid uint32
	ts  time.Time
	msg string
	raw string
	// cut, when set, is the row's consent_fields (the decoder's cut-out of
	// raw); nil leaves the column null, as without configured paths.
	cut *string
}

// makeBatch builds a batch in engine.Schema with the profile ids set, as
// the identity stage would leave it.
func makeBatch(t testing.TB, seq uint64, rows []row) *engine.Batch {
	t.Helper()
	bld := array.NewRecordBuilder(memory.NewGoAllocator(), engine.Schema)
	defer bld.Release()
	for i, r := range rows {
		msg := r.msg
		if msg == "" {
			msg = fmt.Sprintf("m%d-%d", seq, i)
		}
		bld.Field(engine.ColMessageID).(*array.StringBuilder).Append(msg)
		bld.Field(engine.ColType).(*array.Uint8Builder).Append(uint8(engine.TypeTrack))
		bld.Field(engine.ColEvent).(*array.StringBuilder).Append("e")
		bld.Field(engine.ColTimestamp).(*array.TimestampBuilder).Append(arrow.Timestamp(r.ts.UnixMicro()))
		bld.Field(engine.ColTopic).(*array.StringBuilder).Append("t")
		bld.Field(engine.ColPartition).(*array.Int32Builder).Append(0)
		bld.Field(engine.ColOffset).(*array.Int64Builder).Append(int64(i))
		bld.Field(engine.ColKey).(*array.BinaryBuilder).AppendNull()
		for _, c := range []int{engine.ColUserID, engine.ColAnonymousID, engine.ColPreviousID, engine.ColGroupID} {
			bld.Field(c).(*array.StringBuilder).AppendNull()
		}
		bld.Field(engine.ColIdentifiers).(*array.ListBuilder).Append(true)
		bld.Field(engine.ColProfileID).(*array.Uint32Builder).Append(r.pid)
		bld.Field(engine.ColConsentMask).(*array.Uint64Builder).Append(0)
		bld.Field(engine.ColRaw).(*array.BinaryBuilder).Append([]byte(r.raw))
		if r.cut != nil {
			bld.Field(engine.ColConsentFields).(*array.BinaryBuilder).Append([]byte(*r.cut))
		} else {
			bld.Field(engine.ColConsentFields).(*array.BinaryBuilder).AppendNull()
		}
	}
	return &engine.Batch{Seq: seq, Rec: bld.NewRecordBatch()}
}

func masks(b *engine.Batch) []uint64 {
	return b.Rec.Column(engine.ColConsentMask).(*array.Uint64).Uint64Values()
}

// dump prints every profile's decisions and every purpose's bitmaps.
func dump(c *Consent) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var sb strings.Builder
	var pids []uint32
	c.profiles.each(func(pid uint32, _ *profile) { pids = append(pids, pid) })
	sort.Slice(pids, func(i, j int) bool { return pids[i] < pids[j] })
	now := c.now().UnixMicro()
	for _, pid := range pids {
		p := c.profiles.get(pid)
		fmt.Fprintf(&sb, "profile %d:", pid)
		for _, pu := range c.cat.purposes {
			d, ok := p.get(pu.Bit)
			if !ok {
				continue
			}
			fmt.Fprintf(&sb, " %s=%s@%d/%s", pu.Name, d.Status, d.Time/1e6, d.Source)
			if d.Expires != 0 {
				fmt.Fprintf(&sb, "(expires %d", d.Expires/1e6)
				if d.effective(now) != d.Status {
					sb.WriteString(", lapsed")
				}
				sb.WriteString(")")
			}
		}
		sb.WriteString("\n")
	}
	for _, pu := range c.cat.purposes {
		fmt.Fprintf(&sb, "%s: granted=%v denied=%v\n", pu.Name, c.granted[pu.Bit].ToArray(), c.denied[pu.Bit].ToArray())
	}
	if !c.suppressed.IsEmpty() {
		fmt.Fprintf(&sb, "suppressed=%v\n", c.suppressed.ToArray())
	}
	return sb.String()
}
