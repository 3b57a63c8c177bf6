package sink

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// newCluster starts a one-broker kfake cluster on 127.0.0.1 with topics
// of 3 partitions.
func newCluster(tb testing.TB, topics []string, opts ...kfake.Opt) *kfake.Cluster {
	tb.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, topics...)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// consume reads topic from the start over TCP until want records arrived,
// then checks that the topic holds exactly want records (its end offsets),
// so that a duplicate or an extra record fails the test.
func consume(t *testing.T, c KafkaClientConfig, topic string, want int) []*kgo.Record {
	t.Helper()
	opts, err := c.Opts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records from %s: %v", len(recs), want, topic, ctx.Err())
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch %s: %v", topic, err) })
		recs = append(recs, fs.Records()...)
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		total += o.Offset
	})
	if total != int64(want) || len(recs) != want {
		t.Fatalf("topic %s holds %d records (consumed %d), want %d", topic, total, len(recs), want)
	}
	return recs
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// wantKey is the record key a row gets in mode (nil: no key).
func wantKey(r row, mode KeyMode) []byte {
	switch mode {
	case KeyProfileID:
		if r.pid != 0 {
			return []byte(strconv.FormatUint(uint64(r.pid), 10))
		}
		return r.key
	case KeyOriginal:
		return r.key
	case KeyMessageID:
		return []byte(r.msgID)
	}
	return nil
}

// checkRecords checks that recs are exactly want (by message id), each
// with the right value, key and headers, and in row order per partition.
func checkRecords(t *testing.T, recs []*kgo.Record, want []row, mode KeyMode) {
	t.Helper()
	checkRecordsN(t, recs, want, mode, 1)
}

// checkRecordsN is checkRecords for rows written by that many concurrent
// Writes: row i was written by writer i%writers, and only each writer's
// rows are ordered.
func checkRecordsN(t *testing.T, recs []*kgo.Record, want []row, mode KeyMode, writers int) {
	t.Helper()
	pos := make(map[string]int, len(want))
	for i, r := range want {
		pos[r.msgID] = i
	}
	seen := make(map[string]bool, len(want))
	type pw struct{ p, w int32 }
	lastPos := map[pw]int{}
	for _, rec := range recs {
		id, ok := header(rec, HeaderMessageID)
		if !ok {
			t.Fatalf("record at %d/%d has no %s header", rec.Partition, rec.Offset, HeaderMessageID)
		}
		i, ok := pos[id]
		if !ok {
			t.Fatalf("unexpected record %q", id)
		}
		if seen[id] {
			t.Fatalf("record %q twice", id)
		}
		seen[id] = true
		w := want[i]
		if string(rec.Value) != w.raw {
			t.Errorf("%s: value %q, want %q", id, rec.Value, w.raw)
		}
		wk := wantKey(w, mode)
		if string(rec.Key) != string(wk) || (rec.Key == nil) != (wk == nil) {
			t.Errorf("%s (mode %s): key %q (nil %v), want %q (nil %v)", id, mode, rec.Key, rec.Key == nil, wk, wk == nil)
		}
		if p, _ := header(rec, HeaderProfileID); p != strconv.FormatUint(uint64(w.pid), 10) {
			t.Errorf("%s: %s header %q, want %d", id, HeaderProfileID, p, w.pid)
		}
		if len(rec.Headers) != 2 {
			t.Errorf("%s: %d headers, want 2", id, len(rec.Headers))
		}
		k := pw{rec.Partition, int32(i % writers)}
		if last, ok := lastPos[k]; ok && i < last {
			t.Errorf("partition %d: row %d after row %d", rec.Partition, i, last)
		}
		lastPos[k] = i
	}
	if len(seen) != len(want) {
		t.Fatalf("got %d distinct records, want %d", len(seen), len(want))
	}
}

func TestKafkaKeyModesAndCodecs(t *testing.T) {
	modes := []KeyMode{KeyProfileID, KeyOriginal, KeyMessageID, KeyNone}
	codecs := []string{CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd}
	var topics []string
	for _, m := range modes {
		for _, c := range codecs {
			topics = append(topics, "out-"+string(m)+"-"+c)
		}
	}
	cluster := newCluster(t, topics)
	client := KafkaClientConfig{Brokers: cluster.ListenAddrs()}
	rows := testRows(40)
	// rows 0..3 and every third after 10: runs and gaps, including
	// unresolved rows (pid 0) and rows without a key.
	var sel []int
	for i := range rows {
		if i < 4 || (i > 10 && i%3 == 0) {
			sel = append(sel, i)
		}
	}
	for _, m := range modes {
		for _, codec := range codecs {
			topic := "out-" + string(m) + "-" + codec
			t.Run(string(m)+"/"+codec, func(t *testing.T) {
				t.Parallel()
				mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
				b := makeBatch(t, mem, rows...)
				// Linger so that the rows form multi-record batches, which
				// compress (see below).
				s, err := NewKafka("k", KafkaConfig{Topic: topic, Key: m, Compression: codec, Linger: 20 * time.Millisecond, Client: client})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				// Two Writes reuse one pooled state: the second must not
				// disturb the first's records.
				if err := s.Write(ctx, b, sel); err != nil {
					t.Fatal(err)
				}
				if err := s.Write(ctx, b, []int{5, 6}); err != nil {
					t.Fatal(err)
				}
				b.Release()
				mem.AssertSize(t, 0)
				want := selected(rows, append(slices.Clone(sel), 5, 6))
				recs := consume(t, client, topic, len(want))
				checkRecords(t, recs, want, m)
				wantCodec := map[string]uint8{CompressionNone: 0, CompressionGzip: 1, CompressionSnappy: 2, CompressionLZ4: 3, CompressionZstd: 4}[codec]
				// franz-go sends a batch uncompressed when compression
				// does not make it smaller (small batches of one record),
				// so: no other codec, and the codec at least once.
				compressed := 0
				for _, r := range recs {
					switch r.Attrs.CompressionType() {
					case wantCodec:
						compressed++
					case 0:
					default:
						t.Fatalf("record batch compression %d, want %d (%s)", r.Attrs.CompressionType(), wantCodec, codec)
					}
				}
				if compressed == 0 {
					t.Fatalf("no record batch compressed with %s", codec)
				}
			})
		}
	}
}

func TestKafkaSelections(t *testing.T) {
	rows := testRows(30)
	sels := selections(len(rows))
	var topics []string
	for name := range sels {
		topics = append(topics, "sel-"+name)
	}
	cluster := newCluster(t, topics)
	client := KafkaClientConfig{Brokers: cluster.ListenAddrs()}
	for _, name := range sortedKeys(sels) {
		sel := sels[name]
		t.Run(name, func(t *testing.T) {
			b := makeBatch(t, memory.NewGoAllocator(), rows...)
			defer b.Release()
			s, err := NewKafka("k", KafkaConfig{Topic: "sel-" + name, Client: client})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := s.Write(ctx, b, sel); err != nil {
				t.Fatal(err)
			}
			want := selected(rows, sel)
			checkRecords(t, consume(t, client, "sel-"+name, len(want)), want, KeyProfileID)
		})
	}
}

// TestKafkaLargeBatch writes more rows than fit in one produce batch and
// several Writes concurrently.
func TestKafkaLargeBatch(t *testing.T) {
	cluster := newCluster(t, []string{"big"})
	client := KafkaClientConfig{Brokers: cluster.ListenAddrs()}
	s, err := NewKafka("k", KafkaConfig{Topic: "big", Compression: CompressionLZ4, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows := testRows(3000)
	b := makeBatch(t, memory.NewGoAllocator(), rows...)
	defer b.Release()
	halves := [][]int{make([]int, 0, 1500), make([]int, 0, 1500)}
	for i := range rows {
		halves[i%2] = append(halves[i%2], i)
	}
	errc := make(chan error, 2)
	for _, h := range halves {
		go func() { errc <- s.Write(context.Background(), b, h) }()
	}
	for range halves {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	checkRecordsN(t, consume(t, client, "big", len(rows)), rows, KeyProfileID, 2)
}

// TestKafkaAbandonedWrite: when ctx ends before the brokers answer, Write
// returns at once, and the record is released once franz-go gives up the
// records.
func TestKafkaAbandonedWrite(t *testing.T) {
	cluster := newCluster(t, []string{"exists"})
	s, err := NewKafka("k", KafkaConfig{Topic: "missing", Client: KafkaClientConfig{Brokers: cluster.ListenAddrs()}},
		kgo.UnknownTopicRetries(2), kgo.RetryBackoffFn(func(int) time.Duration { return 100 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	b := makeBatch(t, mem, testRows(10)...)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.Write(ctx, b, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Write = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("abandoned Write took %v", d)
	}
	b.Release() // the runner's release; the sink still holds its own
	deadline := time.Now().Add(10 * time.Second)
	for mem.CurrentAlloc() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("record not released after abandoned Write: %d bytes", mem.CurrentAlloc())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The sink still works for a topic that exists.
	s2, err := NewKafka("k", KafkaConfig{Topic: "exists", Client: KafkaClientConfig{Brokers: cluster.ListenAddrs()}})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	b2 := makeBatch(t, memory.NewGoAllocator(), testRows(3)...)
	defer b2.Release()
	if err := s2.Write(context.Background(), b2, nil); err != nil {
		t.Fatal(err)
	}
}

// TestKafkaMissingTopic: a topic that does not exist fails the Write
// (the producer does not create topics).
func TestKafkaMissingTopic(t *testing.T) {
	cluster := newCluster(t, nil)
	s, err := NewKafka("k", KafkaConfig{Topic: "missing", Client: KafkaClientConfig{Brokers: cluster.ListenAddrs()}},
		kgo.UnknownTopicRetries(1), kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := makeBatch(t, memory.NewGoAllocator(), testRows(3)...)
	defer b.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Write(ctx, b, nil); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Write to a missing topic = %v, want a produce error", err)
	}
}

func TestKafkaDeadLetter(t *testing.T) {
	cluster := newCluster(t, []string{"dlq"})
	client := KafkaClientConfig{Brokers: cluster.ListenAddrs()}
	s, err := NewKafkaDeadLetter(DeadLetterKafkaConfig{Topic: "dlq", Compression: CompressionZstd, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dead := testDeadLetters()
	before := time.Now()
	if err := s.WriteDead(context.Background(), dead); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteDead(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	recs := consume(t, client, "dlq", len(dead))
	// Records without a key land on any partition: match by offset header.
	byOffset := map[string]*kgo.Record{}
	for _, r := range recs {
		o, _ := header(r, HeaderDLQSourceOffset)
		byOffset[o] = r
	}
	for _, d := range dead {
		r := byOffset[strconv.FormatInt(d.Pos.Offset, 10)]
		if r == nil {
			t.Fatalf("no record for %s", d.Pos)
		}
		if string(r.Value) != string(d.Raw) || string(r.Key) != string(d.Key) || (r.Key == nil) != (d.Key == nil) {
			t.Errorf("%s: key %q value %q, want %q %q", d.Pos, r.Key, r.Value, d.Key, d.Raw)
		}
		want := map[string]string{
			HeaderDLQReason:          string(d.Reason),
			HeaderDLQDetail:          d.Detail,
			HeaderDLQSourceTopic:     d.Pos.Topic,
			HeaderDLQSourcePartition: strconv.Itoa(int(d.Pos.Partition)),
			HeaderDLQSourceOffset:    strconv.FormatInt(d.Pos.Offset, 10),
		}
		for k, v := range want {
			if got, _ := header(r, k); got != v {
				t.Errorf("%s: header %s = %q, want %q", d.Pos, k, got, v)
			}
		}
		ts, _ := header(r, HeaderDLQTime)
		tm, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t.Fatalf("%s: %s: %v", d.Pos, HeaderDLQTime, err)
		}
		if d.Time.IsZero() {
			if tm.Before(before.Truncate(time.Second)) {
				t.Errorf("%s: stamped time %v before the write", d.Pos, tm)
			}
		} else if !tm.Equal(d.Time) {
			t.Errorf("%s: time %v, want %v", d.Pos, tm, d.Time)
		}
	}
}

// TestNewFromConfig builds every kind of sink through New and NewDeadLetter.
func TestNewFromConfig(t *testing.T) {
	cluster := newCluster(t, []string{"events", "dlq"})
	dir := t.TempDir()
	src := KafkaClientConfig{Brokers: cluster.ListenAddrs()}
	kc := KafkaConfig{Topic: "events", Key: KeyMessageID}
	kc.Client.Inherit(src)
	cfgs := []Config{
		{Name: "kafka", Kafka: &kc},
		{Name: "ndjson", File: &FileConfig{Path: dir + "/e.ndjson"}},
		{Name: "arrow", File: &FileConfig{Path: dir + "/e.arrows", Format: FormatArrow, Compression: CompressionLZ4}},
		{Name: "stdout", Stdout: &StdoutConfig{}},
	}
	rows := testRows(5)
	b := makeBatch(t, memory.NewGoAllocator(), rows...)
	defer b.Release()
	for _, cfg := range cfgs {
		s, err := New(cfg)
		if err != nil {
			t.Fatalf("%s: %v", cfg.Name, err)
		}
		if s.Name() != cfg.Name {
			t.Errorf("Name() = %q, want %q", s.Name(), cfg.Name)
		}
		if cfg.Stdout != nil {
			s.Close()
			continue // would print into the test output
		}
		if err := s.Write(context.Background(), b, []int{1, 3}); err != nil {
			t.Fatalf("%s: %v", cfg.Name, err)
		}
		for range 2 { // Close is idempotent
			if err := s.Close(); err != nil {
				t.Fatalf("%s: %v", cfg.Name, err)
			}
		}
	}
	checkRecords(t, consume(t, src, "events", 2), selected(rows, []int{1, 3}), KeyMessageID)
	if got := readLines(t, dir+"/e.ndjson"); !equalStrings(got, []string{rows[1].raw, rows[3].raw}) {
		t.Errorf("ndjson: %q", got)
	}
	got, _ := readArrow(t, dir+"/e.arrows")
	checkRows(t, got, selected(rows, []int{1, 3}))

	dk := DeadLetterKafkaConfig{Topic: "dlq"}
	dk.Client.Inherit(src)
	for _, cfg := range []DeadLetterConfig{{Kafka: &dk}, {File: &DeadLetterFileConfig{Path: dir + "/dlq"}}} {
		s, err := NewDeadLetter(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WriteDead(context.Background(), testDeadLetters()); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	consume(t, src, "dlq", len(testDeadLetters()))
	if n := len(readLines(t, dir+"/dlq")); n != len(testDeadLetters()) {
		t.Errorf("dead-letter file: %d lines", n)
	}

	// No brokers and nothing inherited: the error names the field.
	if _, err := New(Config{Name: "x", Kafka: &KafkaConfig{Topic: "t"}}); err == nil || !startsWith(err.Error(), "kafka.client.brokers:") {
		t.Errorf("New without brokers = %v", err)
	}
	// A typed nil must not hide in the interface.
	if s, err := New(Config{Name: "x", File: &FileConfig{Path: dir + "/no/such/dir/f"}}); err == nil || s != nil {
		t.Errorf("New with a bad path = %v, %v", s, err)
	}
}

func startsWith(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }
