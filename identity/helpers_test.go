package identity

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// testEvent is one row of a test batch.
type testEvent struct {
	msg              string
	typ              engine.EventType
	ts               time.Time
	topic            string
	part             int32
	off              int64
	user, anon, prev string // "" means null
	ids              [][2]string
}

var testEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// parseEvent reads "msgid key=value ...". Keys: type, t (RFC 3339 or a
// duration after 2024-01-01), topic, part, off, user, anon, prev; any other
// key is an identifier type of the identifiers column.
func parseEvent(line string, off int64) (testEvent, error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return testEvent{}, fmt.Errorf("empty event")
	}
	e := testEvent{msg: f[0], typ: engine.TypeTrack, ts: testEpoch, topic: "events", off: off}
	for _, kv := range f[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return e, fmt.Errorf("bad field %q", kv)
		}
		v = strings.ReplaceAll(v, "␣", " ")
		switch k {
		case "type":
			e.typ = engine.ParseEventType([]byte(v))
		case "t":
			if d, err := time.ParseDuration(v); err == nil {
				e.ts = testEpoch.Add(d)
			} else if ts, err := time.Parse(time.RFC3339, v); err == nil {
				e.ts = ts
			} else {
				return e, fmt.Errorf("bad time %q", v)
			}
		case "topic":
			e.topic = v
		case "part":
			n, _ := strconv.Atoi(v)
			e.part = int32(n)
		case "off":
			n, _ := strconv.Atoi(v)
			e.off = int64(n)
		case "user":
			e.user = v
		case "anon":
			e.anon = v
		case "prev":
			e.prev = v
		default:
			e.ids = append(e.ids, [2]string{k, v})
		}
	}
	return e, nil
}

// buildBatch builds an engine.Batch in engine.Schema from evs; Offsets hold
// the next offset per topic-partition.
func buildBatch(t testing.TB, evs []testEvent) *engine.Batch {
	t.Helper()
	b := array.NewRecordBuilder(memory.NewGoAllocator(), engine.Schema)
	defer b.Release()
	str := func(i int, v string, valid bool) {
		sb := b.Field(i).(*array.StringBuilder)
		if valid {
			sb.Append(v)
		} else {
			sb.AppendNull()
		}
	}
	next := map[topicPart]int64{}
	for _, e := range evs {
		str(engine.ColMessageID, e.msg, true)
		b.Field(engine.ColType).(*array.Uint8Builder).Append(uint8(e.typ))
		str(engine.ColEvent, "", false)
		b.Field(engine.ColTimestamp).(*array.TimestampBuilder).Append(arrow.Timestamp(e.ts.UnixMicro()))
		str(engine.ColTopic, e.topic, true)
		b.Field(engine.ColPartition).(*array.Int32Builder).Append(e.part)
		b.Field(engine.ColOffset).(*array.Int64Builder).Append(e.off)
		b.Field(engine.ColKey).(*array.BinaryBuilder).AppendNull()
		str(engine.ColUserID, e.user, e.user != "")
		str(engine.ColAnonymousID, e.anon, e.anon != "")
		str(engine.ColPreviousID, e.prev, e.prev != "")
		str(engine.ColGroupID, "", false)
		lb := b.Field(engine.ColIdentifiers).(*array.ListBuilder)
		sb := lb.ValueBuilder().(*array.StructBuilder)
		lb.Append(true)
		for _, id := range e.ids {
			sb.Append(true)
			sb.FieldBuilder(0).(*array.StringBuilder).Append(id[0])
			sb.FieldBuilder(1).(*array.StringBuilder).Append(id[1])
		}
		b.Field(engine.ColProfileID).(*array.Uint32Builder).Append(0)
		b.Field(engine.ColConsentMask).(*array.Uint64Builder).Append(0)
		b.Field(engine.ColRaw).(*array.BinaryBuilder).Append([]byte("{}"))
		b.Field(engine.ColConsentFields).(*array.BinaryBuilder).AppendNull()
		k := topicPart{e.topic, e.part}
		next[k] = max(next[k], e.off+1)
	}
	batch := &engine.Batch{Rec: b.NewRecordBatch()}
	for k, n := range next {
		batch.Offsets = append(batch.Offsets, engine.Offset{Topic: k.topic, Partition: k.part, Next: n, Epoch: -1})
	}
	slices.SortFunc(batch.Offsets, func(a, b engine.Offset) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return batch
}

func profileIDs(b *engine.Batch) []uint32 {
	col := b.Rec.Column(engine.ColProfileID).(*array.Uint32)
	return slices.Clone(col.Uint32Values())
}

// testGraph is a Graph on a Pebble store in a temporary directory.
type testGraph struct {
	t     testing.TB
	dir   string
	cfg   Config
	db    *pebble.DB
	g     *Graph
	st    *Stage
	reg   *prometheus.Registry
	off   int64
	clock time.Time
	opts  func(testing.TB) *pebble.Options // nil: pebbleOptions
	// plain opens the graph without a keyring (v1 records, values in
	// plain); by default values are sealed under a keyring whose random
	// source is seeded by the number of opens, so runs are reproducible
	// and a reopened store never repeats a nonce.
	plain bool
	kr    *engine.Keyring
	opens int
}

// testMasterKey is the tests' keyring master key (64 hex digits).
const testMasterKey = "5e1f0c3a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d0f"

// newTestKeyring opens a keyring on db with a random source seeded by seed.
func newTestKeyring(t testing.TB, db *pebble.DB, seed byte) *engine.Keyring {
	t.Helper()
	kr, err := engine.NewKeyring(engine.EncryptionConfig{MasterKey: testMasterKey}, db,
		engine.WithRandom(rand.NewChaCha8([32]byte{seed})))
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func testConfig() Config {
	return Config{Secret: "test-secret"}
}

func newTestGraph(t testing.TB, cfg Config) *testGraph {
	t.Helper()
	tg := &testGraph{t: t, dir: t.TempDir(), cfg: cfg, clock: testEpoch.Add(365 * 24 * time.Hour)}
	tg.open()
	t.Cleanup(tg.close)
	return tg
}

func (tg *testGraph) open() {
	tg.t.Helper()
	opts := pebbleOptions
	if tg.opts != nil {
		opts = tg.opts
	}
	db, err := pebble.Open(tg.dir, opts(tg.t))
	if err != nil {
		tg.t.Fatal(err)
	}
	tg.db = db
	tg.reg = prometheus.NewRegistry()
	tg.opens++
	var gopts []Option
	tg.kr = nil
	if !tg.plain {
		tg.kr = newTestKeyring(tg.t, db, byte(tg.opens))
		gopts = append(gopts, WithKeyring(tg.kr))
	}
	tg.g, err = New(tg.cfg, db, tg.reg, gopts...)
	if err != nil {
		tg.t.Fatal(err)
	}
	tg.g.now = func() time.Time { return tg.clock }
	tg.st, err = NewStage(tg.g)
	if err != nil {
		tg.t.Fatal(err)
	}
}

func (tg *testGraph) close() {
	if tg.db != nil {
		if err := tg.db.Close(); err != nil {
			tg.t.Error(err)
		}
		tg.db = nil
	}
}

func (tg *testGraph) restart() {
	tg.close()
	tg.open()
}

// process resolves evs as one batch and returns the batch (released at
// test end) and its profile ids.
func (tg *testGraph) process(evs []testEvent) (*engine.Batch, []uint32) {
	tg.t.Helper()
	b := buildBatch(tg.t, evs)
	tg.t.Cleanup(b.Release)
	if err := tg.st.Process(tg.t.Context(), b); err != nil {
		tg.t.Fatal(err)
	}
	return b, profileIDs(b)
}

// dump prints the whole graph: counters, profiles with their identifiers,
// and the merge log, then the result of Check.
func (tg *testGraph) dump() string {
	g := tg.g
	var sb strings.Builder
	fmt.Fprintf(&sb, "next profile %d, next log seq %d\n", g.next, g.seq)
	it, err := g.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixProfile}, UpperBound: []byte{prefixProfile + 1}})
	if err != nil {
		tg.t.Fatal(err)
	}
	for it.First(); it.Valid(); it.Next() {
		p, err := g.decodeProfile(be32(it.Key()[1:]), it.Value())
		if err != nil {
			tg.t.Fatal(err)
		}
		if p.redirect != 0 {
			fmt.Fprintf(&sb, "profile %d → %d\n", p.id, p.redirect)
			continue
		}
		fmt.Fprintf(&sb, "profile %d created %s\n", p.id, ymd(p.created))
		vals, err := g.values(p)
		if err != nil {
			tg.t.Fatal(err)
		}
		ids := slices.Clone(p.idents)
		for i := range ids {
			ids[i].value = vals[i]
		}
		sort.SliceStable(ids, func(i, j int) bool {
			a, b := g.byID[ids[i].typ].name, g.byID[ids[j].typ].name
			return a < b || a == b && ids[i].value < ids[j].value
		})
		for _, x := range ids {
			fmt.Fprintf(&sb, "  %s %s first %s last %s", g.byID[x.typ].name, x.value, ymd(x.first), ymd(x.last))
			if x.origin != p.id {
				fmt.Fprintf(&sb, " from %d", x.origin)
			}
			var h hash
			g.hashInto(&h, g.byID[x.typ].name, []byte(x.value))
			if gr := g.supp[h]; gr != 0 {
				fmt.Fprintf(&sb, " suppressed in %d", gr)
			}
			sb.WriteByte('\n')
		}
		if len(p.merged) > 0 {
			sb.WriteString("  merged")
			for _, m := range p.merged {
				fmt.Fprintf(&sb, " %d(into %d)", m.id, m.parent)
			}
			sb.WriteByte('\n')
		}
		if len(p.apart) > 0 {
			fmt.Fprintf(&sb, "  apart %v\n", p.apart)
		}
	}
	it.Close()
	log, err := g.Log(0, 0)
	if err != nil {
		tg.t.Fatal(err)
	}
	for _, e := range log {
		sb.WriteString(formatLog(e))
		sb.WriteByte('\n')
	}
	// Suppression groups, by id, with their size (members are opaque
	// hashes; the identifiers above say which group holds them).
	it, err = g.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixGroup}, UpperBound: []byte{prefixGroup + 1}})
	if err != nil {
		tg.t.Fatal(err)
	}
	for it.First(); it.Valid(); it.Next() {
		m, err := decodeGroup(it.Value())
		if err != nil {
			tg.t.Fatal(err)
		}
		fmt.Fprintf(&sb, "suppression group %d: %d hashes\n", be64(it.Key()[1:]), len(m))
	}
	it.Close()
	if err := g.Check(); err != nil {
		fmt.Fprintf(&sb, "CHECK FAILED: %v\n", err)
	}
	return sb.String()
}

func formatLog(e LogEntry) string {
	s := fmt.Sprintf("log %d %s %s survivor %d", e.Seq, e.Kind, time.UnixMicro(e.Time).UTC().Format("2006-01-02"), e.Survivor)
	if len(e.Merged) > 0 {
		s += fmt.Sprintf(" merged %v", e.Merged)
	}
	if e.MessageID != "" {
		s += " msg " + e.MessageID
	}
	if e.Erased {
		return s + " erased"
	}
	return s + " rule " + e.Rule
}

func ymd(sec int64) string { return time.Unix(sec, 0).UTC().Format("2006-01-02T15:04") }

// metricsText prints the non-zero refusal and drop counters.
func (tg *testGraph) metricsText() string {
	mfs, err := tg.reg.Gather()
	if err != nil {
		tg.t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		switch mf.GetName() {
		case "cdp_identity_refused_total", "cdp_identity_values_dropped_total", "cdp_identity_merges_total",
			"cdp_identity_profiles_created_total", "cdp_identity_demotions_total", "cdp_identity_events_total",
			"cdp_identity_erased_total", "cdp_identity_suppressed_identifiers":
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue() + m.GetGauge().GetValue(); v != 0 {
				lines = append(lines, fmt.Sprintf("%s%s %v", mf.GetName(), labels(m.GetLabel()), v))
			}
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func labels(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	var parts []string
	for _, l := range ls {
		parts = append(parts, l.GetName()+"="+strconv.Quote(l.GetValue()))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func (tg *testGraph) reopenDB() *pebble.DB {
	tg.t.Helper()
	db, err := pebble.Open(tg.dir, pebbleOptions(tg.t))
	if err != nil {
		tg.t.Fatal(err)
	}
	return db
}

// quietLogger drops Pebble's informational logs; fatal ones still fail.
type quietLogger struct{ t testing.TB }

func (quietLogger) Infof(string, ...any)                {}
func (l quietLogger) Fatalf(format string, args ...any) { l.t.Fatalf(format, args...) }

func pebbleOptions(t testing.TB) *pebble.Options { return &pebble.Options{Logger: quietLogger{t}} }
