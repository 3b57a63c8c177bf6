package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/internal/promtest"
)

// sliceSource hands out pre-built batches, then io.EOF, or blocks until ctx
// is cancelled when block is set.
type sliceSource struct {
	mu        sync.Mutex
	batches   []*engine.Batch
	block     bool
	committed []engine.Offset
	commitErr error
}

func (s *sliceSource) Next(ctx context.Context) (*engine.Batch, error) {
	s.mu.Lock()
	if len(s.batches) > 0 {
		b := s.batches[0]
		s.batches = s.batches[1:]
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	if s.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, io.EOF
}

func (s *sliceSource) Commit(_ context.Context, offs []engine.Offset) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.commitErr != nil {
		return s.commitErr
	}
	s.committed = append(s.committed, offs...)
	return nil
}

func (s *sliceSource) Close() error { return nil }

// makeBatch builds a batch of rows with message ids prefix-0..n-1 at
// offsets first..first+n-1 of topic t/0, plus dead letters.
func makeBatch(t testing.TB, alloc memory.Allocator, prefix string, first int64, n int, dead ...engine.Reason) *engine.Batch {
	t.Helper()
	rb := array.NewRecordBuilder(alloc, engine.Schema)
	defer rb.Release()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		rb.Field(engine.ColMessageID).(*array.StringBuilder).Append(id)
		rb.Field(engine.ColType).(*array.Uint8Builder).Append(uint8(engine.TypeTrack))
		rb.Field(engine.ColEvent).(*array.StringBuilder).Append("Viewed")
		rb.Field(engine.ColTimestamp).(*array.TimestampBuilder).Append(0)
		rb.Field(engine.ColTopic).(*array.StringBuilder).Append("t")
		rb.Field(engine.ColPartition).(*array.Int32Builder).Append(0)
		rb.Field(engine.ColOffset).(*array.Int64Builder).Append(first + int64(i))
		rb.Field(engine.ColKey).(*array.BinaryBuilder).AppendNull()
		for _, c := range []int{engine.ColUserID, engine.ColAnonymousID, engine.ColPreviousID, engine.ColGroupID} {
			rb.Field(c).(*array.StringBuilder).AppendNull()
		}
		rb.Field(engine.ColIdentifiers).(*array.ListBuilder).Append(true)
		rb.Field(engine.ColProfileID).(*array.Uint32Builder).Append(uint32(i))
		rb.Field(engine.ColConsentMask).(*array.Uint64Builder).Append(0)
		rb.Field(engine.ColRaw).(*array.BinaryBuilder).Append([]byte(`{"messageId":"` + id + `"}`))
		rb.Field(engine.ColConsentFields).(*array.BinaryBuilder).AppendNull()
	}
	b := &engine.Batch{Rec: rb.NewRecordBatch(), Created: time.Now()}
	for i, r := range dead {
		b.Dead = append(b.Dead, engine.DeadLetter{Pos: engine.Position{Topic: "t", Offset: first + int64(n+i)}, Raw: []byte("x"), Reason: r})
	}
	b.Offsets = []engine.Offset{{Topic: "t", Next: first + int64(n+len(dead)), Epoch: -1}}
	return b
}

// memSink records the message ids it was given, in order.
type memSink struct {
	name string
	mu   sync.Mutex
	ids  []string
	fail error
}

func (s *memSink) Name() string { return s.name }
func (s *memSink) Close() error { return nil }
func (s *memSink) Write(_ context.Context, b *engine.Batch, sel []int) error {
	if s.fail != nil {
		return s.fail
	}
	col := b.Rec.Column(engine.ColMessageID).(*array.String)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sel == nil {
		for i := 0; i < col.Len(); i++ {
			s.ids = append(s.ids, col.Value(i))
		}
		return nil
	}
	for _, i := range sel {
		s.ids = append(s.ids, col.Value(i))
	}
	return nil
}

type memDead struct {
	mu      sync.Mutex
	reasons []engine.Reason
}

func (d *memDead) WriteDead(_ context.Context, dl []engine.DeadLetter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, x := range dl {
		d.reasons = append(d.reasons, x.Reason)
	}
	return nil
}
func (d *memDead) Close() error { return nil }

// evenFilter keeps rows whose profile id is even.
type evenFilter struct{}

func (evenFilter) Select(b *engine.Batch, dst []int, drop func(int, engine.Reason)) []int {
	pids := b.Rec.Column(engine.ColProfileID).(*array.Uint32)
	for i := 0; i < pids.Len(); i++ {
		if pids.Value(i)%2 == 0 {
			dst = append(dst, i)
		} else {
			drop(i, "odd")
		}
	}
	return dst
}

func TestRunnerDeliversFiltersAndCommitsInOrder(t *testing.T) {
	alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer alloc.AssertSize(t, 0) // every record released exactly once
	src := &sliceSource{}
	for i := 0; i < 20; i++ {
		src.batches = append(src.batches, makeBatch(t, alloc, fmt.Sprintf("b%d", i), int64(i*10), 9, "malformed_json"))
	}
	all, even := &memSink{name: "all"}, &memSink{name: "even"}
	dead := &memDead{}
	reg := prometheus.NewRegistry()
	m := engine.NewMetrics(reg)
	r, err := engine.NewRunner(engine.RunnerConfig{QueueDepth: 2}, src, nil,
		[]engine.SinkSpec{{Sink: all}, {Sink: even, Filter: evenFilter{}}}, dead, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(all.ids) != 180 {
		t.Fatalf("sink all got %d rows, want 180", len(all.ids))
	}
	for i := 0; i < 20; i++ {
		for j := 0; j < 9; j++ {
			if want := fmt.Sprintf("b%d-%d", i, j); all.ids[i*9+j] != want {
				t.Fatalf("row %d = %s, want %s (order lost)", i*9+j, all.ids[i*9+j], want)
			}
		}
	}
	if len(even.ids) != 100 { // profile ids 0..8: 0,2,4,6,8 kept
		t.Fatalf("sink even got %d rows, want 100", len(even.ids))
	}
	if len(dead.reasons) != 20 {
		t.Fatalf("dead letters = %d, want 20", len(dead.reasons))
	}
	if got := (mustCounter(t, reg, "cdp_engine_dropped_total", "odd")); got != 80 {
		t.Fatalf("dropped{reason=odd} = %v, want 80", got)
	}
	if got := (mustCounter(t, reg, "cdp_engine_dead_letter_total", "malformed_json")); got != 20 {
		t.Fatalf("dead_letter{malformed_json} = %v, want 20", got)
	}
	if len(src.committed) != 20 {
		t.Fatalf("committed %d batches, want 20", len(src.committed))
	}
	for i, o := range src.committed {
		if o.Next != int64(i*10+10) {
			t.Fatalf("commit %d next=%d, want %d (commits out of order)", i, o.Next, i*10+10)
		}
	}
	st := r.Stats()
	if st.Received != 200 || st.Valid != 180 || st.Dead != 20 || st.Sent[0] != 180 || st.Sent[1] != 100 || st.Dropped[1] != 80 || st.Committed != 20 {
		t.Fatalf("stats = %+v", st)
	}
}

// mustCounter finds the counter of family name whose label values include v.
func mustCounter(t *testing.T, reg *prometheus.Registry, name, v string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetValue() == v {
					return m.Counter.GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{...=%q}", name, v)
	return 0
}

func TestRunnerSinkFailureCommitsNothingAfter(t *testing.T) {
	src := &sliceSource{}
	alloc := memory.NewGoAllocator()
	for i := 0; i < 5; i++ {
		src.batches = append(src.batches, makeBatch(t, alloc, "b", int64(i*3), 3))
	}
	bad := &memSink{name: "bad", fail: errors.New("disk full")}
	r, err := engine.NewRunner(engine.RunnerConfig{}, src, nil, []engine.SinkSpec{{Sink: &memSink{name: "ok"}}, {Sink: bad}}, &memDead{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "sink bad: disk full") {
		t.Fatalf("Run error = %v, want the sink's error", err)
	}
	if len(src.committed) != 0 {
		t.Fatalf("committed %v after a failed write", src.committed)
	}
}

func TestRunnerDeadLettersWithoutSinkFail(t *testing.T) {
	src := &sliceSource{batches: []*engine.Batch{makeBatch(t, memory.NewGoAllocator(), "b", 0, 1, "too_large")}}
	r, err := engine.NewRunner(engine.RunnerConfig{}, src, nil, []engine.SinkSpec{{Sink: &memSink{name: "ok"}}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "no dead-letter sink") {
		t.Fatalf("Run error = %v, want a refusal to drop dead letters", err)
	}
	if len(src.committed) != 0 {
		t.Fatal("a batch whose dead letters had nowhere to go was committed")
	}
}

func TestRunnerCancelDrainsInFlight(t *testing.T) {
	alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer alloc.AssertSize(t, 0)
	src := &sliceSource{block: true}
	for i := 0; i < 8; i++ {
		src.batches = append(src.batches, makeBatch(t, alloc, fmt.Sprint(i), int64(i*2), 2))
	}
	s := &memSink{name: "s"}
	r, err := engine.NewRunner(engine.RunnerConfig{QueueDepth: 1}, src, nil, []engine.SinkSpec{{Sink: s}}, &memDead{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	for r.Stats().Batches < 8 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("drain returned %v", err)
	}
	if len(s.ids) != 16 || len(src.committed) != 8 {
		t.Fatalf("after drain: %d rows written, %d commits; want 16 and 8", len(s.ids), len(src.committed))
	}
	if !slices.IsSortedFunc(src.committed, func(a, b engine.Offset) int { return int(a.Next - b.Next) }) {
		t.Fatal("commits out of order")
	}
}

func TestRunnerConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  engine.RunnerConfig
		want string
	}{
		{engine.RunnerConfig{QueueDepth: -1}, "queue_depth"},
		{engine.RunnerConfig{QueueDepth: engine.MaxQueueDepth + 1}, "queue_depth: must be 1..16"},
		{engine.RunnerConfig{QueueDepth: 1, DrainTimeout: -time.Second}, "drain_timeout"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

// mergeOnly takes merge records but no events.
type mergeOnly struct {
	memSink
	merges int
}

func (m *mergeOnly) TakesEvents() bool { return false }
func (m *mergeOnly) WriteMerges(_ context.Context, ms []engine.Merge) error {
	m.merges += len(ms)
	return nil
}

func TestRunnerRecordsOnlySink(t *testing.T) {
	alloc := memory.NewGoAllocator()
	b := makeBatch(t, alloc, "b", 0, 5)
	b.Merges = []engine.Merge{{Survivor: 1, Merged: []uint32{2}}}
	src := &sliceSource{batches: []*engine.Batch{b}}
	m := &mergeOnly{memSink: memSink{name: "merges"}}
	r, err := engine.NewRunner(engine.RunnerConfig{}, src, nil, []engine.SinkSpec{{Sink: m}}, &memDead{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(m.ids) != 0 || m.merges != 1 || r.Stats().Sent[0] != 0 {
		t.Fatalf("records-only sink: %d events written, %d merges, stats %d", len(m.ids), m.merges, r.Stats().Sent[0])
	}
}

// dropStage removes every row of a batch and records why, as the identity
// stage does for suppressed people.
type dropStage struct{}

func (dropStage) Name() string { return "drop" }
func (dropStage) Process(_ context.Context, b *engine.Batch) error {
	n := b.Rows()
	rec := b.Rec.NewSlice(0, 0)
	b.Rec.Release()
	b.Rec = rec
	b.Drops = append(b.Drops, engine.Drop{Reason: "suppressed", Rows: n})
	return nil
}

// TestRunnerCountsStageDrops: rows a stage removed count as dropped for
// every sink that takes events, and the batch's offsets still commit.
func TestRunnerCountsStageDrops(t *testing.T) {
	alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer alloc.AssertSize(t, 0)
	src := &sliceSource{batches: []*engine.Batch{makeBatch(t, alloc, "b", 0, 5), makeBatch(t, alloc, "c", 5, 3)}}
	all, recs := &memSink{name: "all"}, &mergeOnly{memSink: memSink{name: "records"}}
	reg := prometheus.NewRegistry()
	r, err := engine.NewRunner(engine.RunnerConfig{}, src, []engine.Stage{dropStage{}},
		[]engine.SinkSpec{{Sink: all}, {Sink: recs}}, &memDead{}, engine.NewMetrics(reg), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	if len(all.ids) != 0 || st.Dropped[0] != 8 || st.Dropped[1] != 0 || st.Committed != 2 {
		t.Fatalf("stats %+v, %d rows written", st, len(all.ids))
	}
	if got := mustCounter(t, reg, "cdp_engine_dropped_total", "suppressed"); got != 8 {
		t.Fatalf("dropped{reason=suppressed} = %v, want 8", got)
	}
	if len(src.committed) != 2 || src.committed[1].Next != 8 {
		t.Fatalf("committed %+v", src.committed)
	}
}

// logStage appends "name seq" to a shared log when it starts a batch; wait,
// if set, is called first (under no lock).
type logStage struct {
	name string
	mu   *sync.Mutex
	log  *[]string
	wait func(seq uint64)
}

func (s logStage) Name() string { return s.name }
func (s logStage) Process(_ context.Context, b *engine.Batch) error {
	s.mu.Lock()
	*s.log = append(*s.log, fmt.Sprintf("%s%d", s.name, b.Seq))
	s.mu.Unlock()
	if s.wait != nil {
		s.wait(b.Seq)
	}
	return nil
}

// TestRunnerStagesOverlap: by default each stage runs on a goroutine of its
// own, so stage b works on batch 1 while stage a starts batch 2 (b waits
// for that: without the overlap this test never ends); each stage still
// sees the batches in order, and sinks and commits follow batch order.
// With SerialStages every stage finishes a batch before the next starts.
func TestRunnerStagesOverlap(t *testing.T) {
	for _, serial := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer alloc.AssertSize(t, 0)
			src := &sliceSource{}
			for i := range 4 {
				src.batches = append(src.batches, makeBatch(t, alloc, fmt.Sprint(i), int64(i*2), 2))
			}
			var mu sync.Mutex
			var log []string
			a2 := make(chan struct{})
			a := logStage{name: "a", mu: &mu, log: &log, wait: func(seq uint64) {
				if seq == 2 {
					close(a2)
				}
			}}
			b := logStage{name: "b", mu: &mu, log: &log}
			if !serial {
				b.wait = func(seq uint64) {
					if seq == 1 {
						<-a2
						mu.Lock()
						log = append(log, "b1 released")
						mu.Unlock()
					}
				}
			}
			s := &memSink{name: "s"}
			r, err := engine.NewRunner(engine.RunnerConfig{SerialStages: serial}, src, []engine.Stage{a, b}, []engine.SinkSpec{{Sink: s}}, &memDead{}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			var as, bs []string
			for _, e := range log {
				if len(e) != 2 {
					continue // "b1 released"
				}
				if e[0] == 'a' {
					as = append(as, e)
				} else {
					bs = append(bs, e)
				}
			}
			if !slices.Equal(as, []string{"a1", "a2", "a3", "a4"}) || !slices.Equal(bs, []string{"b1", "b2", "b3", "b4"}) {
				t.Fatalf("stage order %v", log)
			}
			if serial && !slices.Equal(log, []string{"a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"}) {
				t.Fatalf("serial stages interleaved: %v", log)
			}
			if !serial && slices.Index(log, "a2") > slices.Index(log, "b1 released") {
				t.Fatalf("stage a did not start batch 2 before stage b finished batch 1: %v", log)
			}
			want := []string{"0-0", "0-1", "1-0", "1-1", "2-0", "2-1", "3-0", "3-1"}
			if !slices.Equal(s.ids, want) || len(src.committed) != 4 || !slices.IsSortedFunc(src.committed, func(a, b engine.Offset) int { return int(a.Next - b.Next) }) {
				t.Fatalf("sink got %v, commits %+v", s.ids, src.committed)
			}
		})
	}
}

// failStage fails on batch 2.
type failStage struct{}

func (failStage) Name() string { return "fail" }
func (failStage) Process(_ context.Context, b *engine.Batch) error {
	if b.Seq == 2 {
		return errors.New("boom")
	}
	return nil
}

// TestRunnerLaterStageFailure: a failing second stage stops the run with
// its error, and nothing from the failed batch on is committed.
func TestRunnerLaterStageFailure(t *testing.T) {
	src := &sliceSource{}
	alloc := memory.NewGoAllocator()
	for i := range 6 {
		src.batches = append(src.batches, makeBatch(t, alloc, fmt.Sprint(i), int64(i*2), 2))
	}
	var mu sync.Mutex
	var log []string
	r, err := engine.NewRunner(engine.RunnerConfig{}, src, []engine.Stage{logStage{name: "a", mu: &mu, log: &log}, failStage{}}, []engine.SinkSpec{{Sink: &memSink{name: "s"}}}, &memDead{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "stage fail: boom") {
		t.Fatalf("Run error = %v, want the stage's", err)
	}
	for _, o := range src.committed {
		if o.Next > 2 {
			t.Fatalf("committed %+v: past the failed batch", src.committed)
		}
	}
}

// passFilter keeps everything and says so unless pass is false; Select
// counts its calls.
type passFilter struct {
	pass    bool
	selects int
}

func (f *passFilter) PassesAll(*engine.Batch) bool { return f.pass }
func (f *passFilter) Select(b *engine.Batch, dst []int, _ func(int, engine.Reason)) []int {
	f.selects++
	for i := range b.Rows() {
		dst = append(dst, i)
	}
	return dst
}

// selSink records whether each Write got a selection.
type selSink struct {
	memSink
	nilSel []bool
}

func (s *selSink) Write(ctx context.Context, b *engine.Batch, sel []int) error {
	s.nilSel = append(s.nilSel, sel == nil)
	return s.memSink.Write(ctx, b, sel)
}

// TestRunnerAllPasser: a filter that passes every row of a batch is not
// asked to Select, and the sink gets the batch unselected.
func TestRunnerAllPasser(t *testing.T) {
	for _, pass := range []bool{true, false} {
		src := &sliceSource{batches: []*engine.Batch{makeBatch(t, memory.NewGoAllocator(), "b", 0, 3)}}
		f, s := &passFilter{pass: pass}, &selSink{memSink: memSink{name: "s"}}
		r, err := engine.NewRunner(engine.RunnerConfig{}, src, nil, []engine.SinkSpec{{Sink: s, Filter: f}}, &memDead{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if wantSelects := map[bool]int{true: 0, false: 1}[pass]; f.selects != wantSelects || !slices.Equal(s.nilSel, []bool{pass}) || len(s.ids) != 3 {
			t.Fatalf("PassesAll %v: %d Select calls, nil selection %v, %d rows", pass, f.selects, s.nilSel, len(s.ids))
		}
	}
}

// recordSink takes the records of the types it lists, and events.
type recordSink struct {
	memSink
	types []string
	got   []engine.Record
}

func (s *recordSink) WantsRecord(typ string) bool { return slices.Contains(s.types, typ) }
func (s *recordSink) WriteRecords(_ context.Context, recs []engine.Record) error {
	s.got = append(s.got, recs...)
	return nil
}

// subjectFilter keeps every row and withholds the records about one
// profile, reason "gone".
type subjectFilter struct{ gone uint32 }

func (subjectFilter) Select(b *engine.Batch, dst []int, _ func(int, engine.Reason)) []int {
	for i := range b.Rows() {
		dst = append(dst, i)
	}
	return dst
}

func (f subjectFilter) DropRecord(r *engine.Record) engine.Reason {
	if r.Subject == f.gone {
		return "gone"
	}
	return ""
}

// TestRunnerRecordFilter: a sink's filter that implements RecordFilter
// withholds records from its sink only, counted by sink, type and reason;
// a sink without one gets every record of the types it wants.
func TestRunnerRecordFilter(t *testing.T) {
	b := makeBatch(t, memory.NewGoAllocator(), "b", 0, 3)
	b.Records = []engine.Record{
		{Type: "audience", Key: []byte("7"), Subject: 7},
		{Type: "audience", Key: []byte("8"), Subject: 8},
		{Type: "consent", Key: []byte("7"), Subject: 7},
		{Type: "audience", Key: []byte("7")}, // an exit: no subject
	}
	src := &sliceSource{batches: []*engine.Batch{b}}
	filtered := &recordSink{memSink: memSink{name: "filtered"}, types: []string{"audience", "consent"}}
	plain := &recordSink{memSink: memSink{name: "plain"}, types: []string{"audience"}}
	reg := prometheus.NewRegistry()
	r, err := engine.NewRunner(engine.RunnerConfig{}, src, nil,
		[]engine.SinkSpec{{Sink: filtered, Filter: subjectFilter{gone: 7}}, {Sink: plain}}, &memDead{}, engine.NewMetrics(reg), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	keys := func(rs []engine.Record) (out []string) {
		for _, r := range rs {
			out = append(out, r.Type+":"+string(r.Key))
		}
		return out
	}
	if got, want := keys(filtered.got), []string{"audience:8", "audience:7"}; !slices.Equal(got, want) {
		t.Errorf("filtered sink got %v, want %v", got, want)
	}
	if got, want := keys(plain.got), []string{"audience:7", "audience:8", "audience:7"}; !slices.Equal(got, want) {
		t.Errorf("plain sink got %v, want %v", got, want)
	}
	if len(filtered.ids) != 3 || len(plain.ids) != 3 {
		t.Errorf("events written %d and %d, want 3 each", len(filtered.ids), len(plain.ids))
	}
	for _, typ := range []string{"audience", "consent"} {
		if got := promtest.Counter(t, reg, "cdp_engine_records_dropped_total", map[string]string{"sink": "filtered", "type": typ, "reason": "gone"}); got != 1 {
			t.Errorf("records_dropped{sink=filtered,type=%s,reason=gone} = %v, want 1", typ, got)
		}
	}
}

// gateSink holds every Write until gate is closed.
type gateSink struct {
	memSink
	gate chan struct{}
}

func (s *gateSink) Write(ctx context.Context, b *engine.Batch, sel []int) error {
	<-s.gate
	return s.memSink.Write(ctx, b, sel)
}

// TestRunnerWaitCommitted: WaitCommitted returns once every batch read
// before the call is committed (here: once a held sink lets them
// through), and at once when nothing is in flight, also after Run ended.
func TestRunnerWaitCommitted(t *testing.T) {
	alloc := memory.NewGoAllocator()
	src := &sliceSource{block: true, batches: []*engine.Batch{makeBatch(t, alloc, "a", 0, 3), makeBatch(t, alloc, "b", 3, 3)}}
	s := &gateSink{memSink: memSink{name: "gate"}, gate: make(chan struct{})}
	r, err := engine.NewRunner(engine.RunnerConfig{}, src, nil, []engine.SinkSpec{{Sink: s}}, &memDead{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	for r.Stats().Batches < 2 {
		time.Sleep(time.Millisecond)
	}
	waited := make(chan error, 1)
	go func() { waited <- r.WaitCommitted(context.Background()) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitCommitted returned (%v) while the sink held both batches", err)
	case <-time.After(20 * time.Millisecond): // not a limit: a chance to catch an early return
	}
	close(s.gate)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Committed < 2 {
		t.Fatalf("WaitCommitted returned with %d of 2 batches committed", st.Committed)
	}
	if err := r.WaitCommitted(context.Background()); err != nil {
		t.Fatalf("nothing in flight: %v", err)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if err := r.WaitCommitted(context.Background()); err != nil {
		t.Fatalf("after Run ended with everything committed: %v", err)
	}
}
