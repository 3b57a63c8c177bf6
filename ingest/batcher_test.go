package ingest

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/datadriven"
)

// testClock returns a clock that starts at testNow and advances by one
// millisecond per call.
func testClock() func() time.Time {
	t := testNow
	return func() time.Time {
		t = t.Add(time.Millisecond)
		return t
	}
}

func newTestBatcher(t testing.TB, dc DecodeConfig, bc BatchConfig, mem memory.Allocator) *Batcher {
	t.Helper()
	b, err := NewBatcher(dc, bc, mem)
	if err != nil {
		t.Fatal(err)
	}
	clock := testClock()
	b.now = clock
	b.dec.now = clock
	return b
}

// row is one row of a batch record, read back from the Arrow columns.
type row struct {
	messageID   string
	typ         engine.EventType
	event       *string
	ts          int64
	topic       string
	partition   int32
	offset      int64
	key         []byte // nil = null
	userID      *string
	anonymousID *string
	previousID  *string
	groupID     *string
	identifiers []string // type:value
	profileID   uint32
	consentMask uint64
	raw         []byte
}

func optString(a *array.String, i int) *string {
	if a.IsNull(i) {
		return nil
	}
	s := a.Value(i)
	return &s
}

// readRows reads every row of rec back, after validating the arrays.
func readRows(t testing.TB, rec arrow.RecordBatch) []row {
	t.Helper()
	if !rec.Schema().Equal(engine.Schema) {
		t.Fatalf("schema = %v, want engine.Schema", rec.Schema())
	}
	for i, c := range rec.Columns() {
		if c.Len() != int(rec.NumRows()) {
			t.Fatalf("column %d has %d rows, record %d", i, c.Len(), rec.NumRows())
		}
		if v, ok := c.(interface{ ValidateFull() error }); ok {
			if err := v.ValidateFull(); err != nil {
				t.Fatalf("column %s: %v", rec.ColumnName(i), err)
			}
		}
	}
	msgID := rec.Column(engine.ColMessageID).(*array.String)
	typ := rec.Column(engine.ColType).(*array.Uint8)
	event := rec.Column(engine.ColEvent).(*array.String)
	ts := rec.Column(engine.ColTimestamp).(*array.Timestamp)
	topic := rec.Column(engine.ColTopic).(*array.String)
	part := rec.Column(engine.ColPartition).(*array.Int32)
	off := rec.Column(engine.ColOffset).(*array.Int64)
	key := rec.Column(engine.ColKey).(*array.Binary)
	user := rec.Column(engine.ColUserID).(*array.String)
	anon := rec.Column(engine.ColAnonymousID).(*array.String)
	prev := rec.Column(engine.ColPreviousID).(*array.String)
	group := rec.Column(engine.ColGroupID).(*array.String)
	ids := rec.Column(engine.ColIdentifiers).(*array.List)
	idStruct := ids.ListValues().(*array.Struct)
	idType := idStruct.Field(0).(*array.String)
	idValue := idStruct.Field(1).(*array.String)
	profile := rec.Column(engine.ColProfileID).(*array.Uint32)
	consent := rec.Column(engine.ColConsentMask).(*array.Uint64)
	raw := rec.Column(engine.ColRaw).(*array.Binary)
	for _, c := range []arrow.Array{msgID, typ, ts, topic, part, off, ids, profile, consent, raw} {
		if c.NullN() != 0 {
			t.Fatalf("non-nullable column has %d nulls", c.NullN())
		}
	}

	rows := make([]row, rec.NumRows())
	for i := range rows {
		r := &rows[i]
		r.messageID = msgID.Value(i)
		r.typ = engine.EventType(typ.Value(i))
		r.event = optString(event, i)
		r.ts = int64(ts.Value(i))
		r.topic = topic.Value(i)
		r.partition = part.Value(i)
		r.offset = off.Value(i)
		if !key.IsNull(i) {
			r.key = append([]byte{}, key.Value(i)...)
		}
		r.userID = optString(user, i)
		r.anonymousID = optString(anon, i)
		r.previousID = optString(prev, i)
		r.groupID = optString(group, i)
		start, end := ids.ValueOffsets(i)
		for j := int(start); j < int(end); j++ {
			r.identifiers = append(r.identifiers, idType.Value(j)+":"+idValue.Value(j))
		}
		r.profileID = profile.Value(i)
		r.consentMask = consent.Value(i)
		r.raw = append([]byte{}, raw.Value(i)...)
	}
	return rows
}

func fmtPtr(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

// String renders r like eventString renders an Event, plus the columns
// only the batch has.
func (r row) String() string {
	key := "-"
	if r.key != nil {
		key = strconv.Quote(string(r.key))
	}
	return fmt.Sprintf("%s/%d@%d %s msg=%s event=%s ts=%s user=%s anon=%s prev=%s group=%s ids=[%s] key=%s profile=%d consent=%d",
		r.topic, r.partition, r.offset, r.typ, r.messageID, fmtPtr(r.event), fmtMicros(r.ts),
		fmtPtr(r.userID), fmtPtr(r.anonymousID), fmtPtr(r.previousID), fmtPtr(r.groupID),
		strings.Join(r.identifiers, " "), key, r.profileID, r.consentMask)
}

// eventFields renders the fields of ev the way row.String renders the
// same fields, for comparing a row with a fresh decode of its raw column.
func eventFields(ev *Event) string {
	return eventString(ev)
}

func (r row) eventFields() string {
	var ids []string
	ids = append(ids, r.identifiers...)
	return fmt.Sprintf("%s msg=%s event=%s ts=%s user=%s anon=%s prev=%s group=%s ids=[%s]",
		r.typ, r.messageID, fmtPtr(r.event), fmtMicros(r.ts),
		fmtPtr(r.userID), fmtPtr(r.anonymousID), fmtPtr(r.previousID), fmtPtr(r.groupID), strings.Join(ids, " "))
}

// TestBatcherGolden runs testdata/decode. Commands:
//
//	new-batcher [max-event-bytes=N] [max-identifiers=N] [strict] [max-rows=N] [max-bytes=N]
//	add [topic=T] [partition=P] [offset=O] [epoch=E] [rectime=RFC3339]
//	    one record per input line, offsets counting up from O (default 1);
//	    a line "key=K <record>" gives the record a Kafka key, and a line
//	    starting with q: is a Go-quoted string (for bytes that are not UTF-8).
//	flush
//	    prints every row, dead letter and offset of the batch.
func TestBatcherGolden(t *testing.T) {
	datadriven.RunTest(t, "testdata/decode", func(t *testing.T, d *datadriven.TestData) string {
		return runGolden(t, d)
	})
}

var goldenBatcher *Batcher

func runGolden(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "new-batcher":
		var dc DecodeConfig
		var bc BatchConfig
		for _, a := range d.CmdArgs {
			switch a.Key {
			case "max-event-bytes":
				d.ScanArgs(t, a.Key, &dc.MaxEventBytes)
			case "max-identifiers":
				d.ScanArgs(t, a.Key, &dc.MaxIdentifiers)
			case "strict":
				dc.StrictJSON = true
			case "max-rows":
				d.ScanArgs(t, a.Key, &bc.MaxRows)
			case "max-bytes":
				d.ScanArgs(t, a.Key, &bc.MaxBytes)
			default:
				d.Fatalf(t, "unknown argument %s", a.Key)
			}
		}
		if goldenBatcher != nil {
			goldenBatcher.Release()
		}
		goldenBatcher = newTestBatcher(t, dc, bc, nil)
		return ""

	case "add":
		pos := engine.Position{Topic: "events", Offset: 1}
		epoch := int32(-1)
		var recTime time.Time
		for _, a := range d.CmdArgs {
			switch a.Key {
			case "topic":
				d.ScanArgs(t, a.Key, &pos.Topic)
			case "partition":
				var p int
				d.ScanArgs(t, a.Key, &p)
				pos.Partition = int32(p)
			case "offset":
				d.ScanArgs(t, a.Key, &pos.Offset)
			case "epoch":
				var e int
				d.ScanArgs(t, a.Key, &e)
				epoch = int32(e)
			case "rectime":
				var s string
				d.ScanArgs(t, a.Key, &s)
				var err error
				if recTime, err = time.Parse(time.RFC3339Nano, s); err != nil {
					d.Fatalf(t, "rectime: %v", err)
				}
			default:
				d.Fatalf(t, "unknown argument %s", a.Key)
			}
		}
		var out strings.Builder
		for _, line := range strings.Split(d.Input, "\n") {
			raw, key := parseGoldenLine(t, d, line)
			if goldenBatcher.Add(raw, key, pos, epoch, recTime) {
				fmt.Fprintf(&out, "full after %s\n", pos)
			}
			pos.Offset++
		}
		fmt.Fprintf(&out, "len=%d", goldenBatcher.Len())
		return out.String()

	case "flush":
		batch := goldenBatcher.Flush()
		if batch == nil {
			return "nil"
		}
		defer batch.Release()
		return printBatch(t, batch)
	}
	d.Fatalf(t, "unknown command %s", d.Cmd)
	return ""
}

func parseGoldenLine(t *testing.T, d *datadriven.TestData, line string) (raw, key []byte) {
	if strings.HasPrefix(line, "key=") {
		k, rest, _ := strings.Cut(line[len("key="):], " ")
		key, line = []byte(k), rest
	}
	if strings.HasPrefix(line, "q:") {
		s, err := strconv.Unquote(line[2:])
		if err != nil {
			d.Fatalf(t, "%s: %v", line, err)
		}
		line = s
	}
	return []byte(line), key
}

func printBatch(t testing.TB, b *engine.Batch) string {
	var out strings.Builder
	fmt.Fprintf(&out, "batch: %d rows, %d dead, %d bytes, waited %v\n",
		b.Rows(), len(b.Dead), b.Bytes, b.Flushed.Sub(b.Created))
	for i, r := range readRows(t, b.Rec) {
		fmt.Fprintf(&out, "row %d: %s\n", i, r)
		fmt.Fprintf(&out, "  raw: %s\n", r.raw)
	}
	for i, dl := range b.Dead {
		key := "-"
		if dl.Key != nil {
			key = strconv.Quote(string(dl.Key))
		}
		fmt.Fprintf(&out, "dead %d: %s %s (%s) key=%s\n", i, dl.Pos, dl.Reason, dl.Detail, key)
		fmt.Fprintf(&out, "  raw: %q\n", dl.Raw)
	}
	for _, o := range b.Offsets {
		fmt.Fprintf(&out, "offset: %s/%d next=%d epoch=%d\n", o.Topic, o.Partition, o.Next, o.Epoch)
	}
	return out.String()
}

func TestBatcherEmpty(t *testing.T) {
	b := newTestBatcher(t, DecodeConfig{}, BatchConfig{}, nil)
	defer b.Release()
	if b.Len() != 0 || !b.Created().IsZero() || b.Flush() != nil {
		t.Fatalf("empty batcher: Len %d, Created %v", b.Len(), b.Created())
	}
	if b.MaxAge() != 250*time.Millisecond {
		t.Fatalf("MaxAge = %v, want the default 250ms", b.MaxAge())
	}
	// A batch of dead letters only has a record with zero rows.
	b.Add([]byte("x"), nil, engine.Position{Topic: "t"}, -1, time.Time{})
	created := b.Created()
	if b.Len() != 1 || created.IsZero() {
		t.Fatalf("after one Add: Len %d, Created %v", b.Len(), created)
	}
	b.Add([]byte("y"), nil, engine.Position{Topic: "t", Offset: 1}, -1, time.Time{})
	if b.Created() != created {
		t.Fatalf("Created moved from %v to %v", created, b.Created())
	}
	batch := b.Flush()
	defer batch.Release()
	if batch.Rec == nil || batch.Rows() != 0 || len(batch.Dead) != 2 || batch.Seq != 0 {
		t.Fatalf("batch: rec %v rows %d dead %d seq %d", batch.Rec, batch.Rows(), len(batch.Dead), batch.Seq)
	}
	if !batch.Created.Equal(created) || !batch.Flushed.After(created) || batch.Bytes != 2 {
		t.Fatalf("batch: created %v flushed %v bytes %d", batch.Created, batch.Flushed, batch.Bytes)
	}
	readRows(t, batch.Rec)
	if b.Len() != 0 || !b.Created().IsZero() {
		t.Fatalf("after Flush: Len %d, Created %v", b.Len(), b.Created())
	}
}

// TestBatcherCopiesInput checks that nothing the caller passes to Add is
// retained: the sources reuse their buffers.
func TestBatcherCopiesInput(t *testing.T) {
	b := newTestBatcher(t, DecodeConfig{}, BatchConfig{}, nil)
	defer b.Release()
	good := `{"type":"track","event":"E","userId":"u1","timestamp":"2024-05-01T00:00:00Z"}`
	bad := `{"type":"track","userId":"u1"}`
	buf, key := []byte(good), []byte("key-1")
	b.Add(buf, key, engine.Position{Topic: "t", Offset: 1}, -1, time.Time{})
	for i := range buf {
		buf[i] = 'X'
	}
	copy(key, "XXXXX")
	buf, key = []byte(bad), []byte("key-2")
	b.Add(buf, key, engine.Position{Topic: "t", Offset: 2}, -1, time.Time{})
	for i := range buf {
		buf[i] = 'X'
	}
	copy(key, "XXXXX")

	batch := b.Flush()
	defer batch.Release()
	rows := readRows(t, batch.Rec)
	if len(rows) != 1 || string(rows[0].raw) != good || string(rows[0].key) != "key-1" || *rows[0].userID != "u1" {
		t.Fatalf("row = %v raw %q", rows, rows[0].raw)
	}
	if len(batch.Dead) != 1 || string(batch.Dead[0].Raw) != bad || string(batch.Dead[0].Key) != "key-2" {
		t.Fatalf("dead = %+v", batch.Dead)
	}
}

// TestBatcherBatchesAreIndependent builds several batches of different
// sizes (the builders grow, and are reserved from the previous batch's
// size) and checks each one after all of them were built.
func TestBatcherBatchesAreIndependent(t *testing.T) {
	b := newTestBatcher(t, DecodeConfig{}, BatchConfig{}, nil)
	defer b.Release()
	evs := benchEvents(700)
	var batches []*engine.Batch
	n := 0
	for _, size := range []int{3, 500, 1, 700, 0, 40} {
		for i := 0; i < size; i++ {
			b.Add(evs[n%len(evs)], nil, engine.Position{Topic: "t", Offset: int64(n)}, -1, time.Time{})
			n++
		}
		if size == 0 {
			if b.Flush() != nil {
				t.Fatal("Flush of an empty batch returned a batch")
			}
			continue
		}
		batches = append(batches, b.Flush())
	}
	n = 0
	for _, batch := range batches {
		for _, r := range readRows(t, batch.Rec) {
			if r.offset != int64(n) || !bytes.Equal(r.raw, evs[n%len(evs)]) {
				t.Fatalf("row for offset %d: offset %d raw %q", n, r.offset, r.raw)
			}
			n++
		}
		batch.Release()
	}
}

// TestBatcherReleasesEverything checks with a checked allocator that every
// buffer comes back once the batches and the Batcher are released, through
// the recycling allocator and directly.
func TestBatcherReleasesEverything(t *testing.T) {
	for _, name := range []string{"go", "pool"} {
		t.Run(name, func(t *testing.T) {
			var inner memory.Allocator = memory.NewGoAllocator()
			if name == "pool" {
				inner = engine.NewPoolAllocator()
			}
			mem := memory.NewCheckedAllocator(inner)
			b := newTestBatcher(t, DecodeConfig{}, BatchConfig{MaxRows: 100}, mem)
			evs := benchEvents(10)
			for i := 0; i < 1000; i++ {
				if b.Add(evs[i%10], []byte("k"), engine.Position{Topic: "t", Offset: int64(i)}, -1, time.Time{}) {
					b.Flush().Release()
				}
				if i%7 == 0 {
					b.Add([]byte("{"), nil, engine.Position{Topic: "t", Offset: int64(i)}, -1, time.Time{})
				}
			}
			b.Flush().Release()
			b.Release()
			mem.AssertSize(t, 0)
		})
	}
}

// TestBatcherAddZeroAllocs asserts that decoding and appending an event
// allocates nothing once a batch is open and the builders have the size
// of the previous batch.
func TestBatcherAddZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under the race detector; this test runs in the plain go test")
	}
	for _, name := range []string{"pool", "go"} {
		t.Run(name, func(t *testing.T) {
			var mem memory.Allocator
			if name == "go" {
				mem = memory.NewGoAllocator()
			}
			const rows = 4096
			b := newTestBatcher(t, DecodeConfig{}, BatchConfig{MaxRows: rows}, mem)
			defer b.Release()
			evs := benchEvents(1024)
			pos := engine.Position{Topic: "events", Partition: 1}
			add := func() bool {
				full := b.Add(evs[pos.Offset%1024], []byte("key"), pos, 3, time.Time{})
				pos.Offset++
				return full
			}
			// Warm up: one full batch sizes the next one.
			for !add() {
			}
			b.Flush().Release()
			add() // opens the batch: reserves and allocates Offsets
			if n := testing.AllocsPerRun(rows/2, func() { add() }); n != 0 {
				t.Fatalf("Add allocates %v times per event, want 0", n)
			}
			// AllocsPerRun rounds the average down, which would hide a
			// builder that grows now and then: count every allocation
			// of the rest of the batch too.
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range rows/2 - 100 {
				add()
			}
			runtime.ReadMemStats(&after)
			if n := after.Mallocs - before.Mallocs; n != 0 {
				t.Fatalf("%d Adds allocated %d times, want 0", rows/2-100, n)
			}
			b.Flush().Release()
		})
	}
}

func TestBatchConfig(t *testing.T) {
	var c BatchConfig
	c.Defaults()
	if c.MaxRows != 4096 || c.MaxBytes != 4<<20 || c.MaxAge != 250*time.Millisecond {
		t.Fatalf("defaults = %+v", c)
	}
	for _, tc := range []struct {
		c    BatchConfig
		want string
	}{
		{BatchConfig{MaxRows: -1, MaxBytes: 1, MaxAge: 1}, "batch.max_rows: must be > 0"},
		{BatchConfig{MaxRows: 1, MaxBytes: -1, MaxAge: 1}, "batch.max_bytes: must be > 0"},
		{BatchConfig{MaxRows: 1, MaxBytes: 1, MaxAge: -1}, "batch.max_age: must be > 0"},
	} {
		if err := tc.c.Validate(); err == nil || err.Error() != tc.want {
			t.Errorf("Validate(%+v) = %v, want %s", tc.c, err, tc.want)
		}
		if _, err := NewBatcher(DecodeConfig{}, tc.c, nil); err == nil || err.Error() != tc.want {
			t.Errorf("NewBatcher(%+v) = %v, want %s", tc.c, err, tc.want)
		}
	}
	if _, err := NewBatcher(DecodeConfig{MaxEventBytes: -5}, BatchConfig{}, nil); err == nil ||
		err.Error() != "decode.max_event_bytes: must be > 0" {
		t.Errorf("NewBatcher with a bad DecodeConfig: %v", err)
	}
}

func BenchmarkBatcherAdd(b *testing.B) {
	b.Run("alloc=pool", func(b *testing.B) { benchBatcherAdd(b, nil, DecodeConfig{}) })
	b.Run("alloc=go", func(b *testing.B) { benchBatcherAdd(b, memory.DefaultAllocator, DecodeConfig{}) })
	// With the consent catalogue's default paths: the consent_fields
	// cut-out and column a configured consent stage adds.
	b.Run("alloc=pool/consent_paths", func(b *testing.B) {
		benchBatcherAdd(b, nil, DecodeConfig{ConsentPaths: []string{"context.consent.tcString", "context.consent.gppString",
			"context.consent.usPrivacy", "context.gpc", "context.consent.categoryPreferences", "context.consentManagement", "consent_state"}})
	})
}

func benchBatcherAdd(b *testing.B, mem memory.Allocator, dc DecodeConfig) {
	evs := benchEvents(1024)
	bt, err := NewBatcher(dc, BatchConfig{}, mem)
	if err != nil {
		b.Fatal(err)
	}
	defer bt.Release()
	pos := engine.Position{Topic: "events", Partition: 3}
	b.ReportAllocs()
	b.SetBytes(int64(len(evs[0])))
	cpu0, ok0 := cpuSeconds()
	i := 0
	for b.Loop() {
		pos.Offset = int64(i)
		if bt.Add(evs[i&1023], nil, pos, 1, time.Time{}) {
			bt.Flush().Release()
		}
		i++
	}
	if batch := bt.Flush(); batch != nil {
		batch.Release()
	}
	reportRate(b, cpu0, ok0)
}

// cpuSeconds returns the CPU time (user+system, all threads) this process
// has used, from /proc/self/stat; ok is false where that file does not
// exist. The resolution is a clock tick (10ms), fine for 2s benchmarks.
// The machine this runs on is shared, so wall-clock ns/op swings with the
// neighbours' load while CPU time does much less.
func cpuSeconds() (float64, bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return float64(ut+st) / 100, true
}

// reportRate reports events per wall second and, where measurable, per
// CPU second of the whole process (the benchmark goroutine plus GC).
func reportRate(b *testing.B, cpu0 float64, ok0 bool) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if cpu1, ok := cpuSeconds(); ok && ok0 && cpu1 > cpu0 {
		b.ReportMetric(float64(b.N)/(cpu1-cpu0), "events/cpu-s")
	}
}
