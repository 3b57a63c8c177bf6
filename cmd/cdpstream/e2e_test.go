package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/bench"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/engine/sink"
)

const (
	topicIn  = "in"
	topicOut = "out"
	topicDLQ = "dlq"
)

// startKafka starts an embedded broker on 127.0.0.1; clients reach it over
// real TCP with the real franz-go client.
func startKafka(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topicIn), kfake.SeedTopics(2, topicOut), kfake.SeedTopics(1, topicDLQ))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

type partOff struct {
	p   int32
	off int64
}

// produced is what a test wrote to the input topic: the message id of each
// valid event, and for each malformed record its position and the reason
// the pipeline must give.
type produced struct {
	someUserID string
	mu         sync.Mutex
	valid      map[string]bool
	bad        map[partOff]engine.Reason
	raw        map[partOff][]byte
}

func newProduced() *produced {
	return &produced{valid: map[string]bool{}, bad: map[partOff]engine.Reason{}, raw: map[partOff][]byte{}}
}

// produce writes n generated events (about 2% malformed) with a producer of
// its own and waits for every acknowledgement.
func (p *produced) produce(t *testing.T, brokers []string, seed uint64, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topicIn), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	g := bench.NewGenerator(bench.GenConfig{Seed: seed, People: 500, MalformedShare: 0.02})
	var wg sync.WaitGroup
	var perr error
	for i := 0; i < n; i++ {
		val, key, reason := g.Next(nil)
		var id string
		if reason == "" {
			var m struct {
				MessageID string `json:"messageId"`
			}
			if err := json.Unmarshal(val, &m); err != nil || m.MessageID == "" {
				t.Fatalf("generator produced a valid event without messageId: %s", val)
			}
			id = m.MessageID
			if p.someUserID == "" {
				var u struct {
					UserID string `json:"userId"`
				}
				_ = json.Unmarshal(val, &u)
				p.someUserID = u.UserID
			}
		}
		wg.Add(1)
		cl.Produce(context.Background(), &kgo.Record{Key: []byte(key), Value: val}, func(r *kgo.Record, err error) {
			defer wg.Done()
			p.mu.Lock()
			defer p.mu.Unlock()
			if err != nil {
				perr = err
				return
			}
			if reason == "" {
				p.valid[id] = true
			} else {
				p.bad[partOff{r.Partition, r.Offset}] = reason
				p.raw[partOff{r.Partition, r.Offset}] = val
			}
		})
	}
	wg.Wait()
	if perr != nil {
		t.Fatal(perr)
	}
}

// consumeAll reads every record of topic from the start.
func consumeAll(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	adm := newAdmin(t, brokers)
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for int64(len(out)) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(out), want, topic)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func newAdmin(t *testing.T, brokers []string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// committedAll reports whether the group committed the end offset of every
// input partition.
func committedAll(t *testing.T, brokers []string, group string) (committed, end int64) {
	t.Helper()
	adm := newAdmin(t, brokers)
	ctx := context.Background()
	ends, err := adm.ListEndOffsets(ctx, topicIn)
	if err != nil {
		t.Fatal(err)
	}
	offs, err := adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		err = nil // nothing committed yet
	}
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		end += o.Offset
		if c, ok := offs.Lookup(o.Topic, o.Partition); ok {
			committed += c.At
		}
	})
	return committed, end
}

func messageID(t *testing.T, raw []byte) string {
	t.Helper()
	var m struct {
		MessageID string `json:"messageId"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("sink holds invalid JSON %q: %v", raw, err)
	}
	return m.MessageID
}

// checkExactlyOnce fails unless got holds every id of want exactly once
// and nothing else.
func checkExactlyOnce(t *testing.T, sinkName string, want map[string]bool, got []string) {
	t.Helper()
	seen := make(map[string]int, len(got))
	for _, id := range got {
		seen[id]++
		if !want[id] {
			t.Errorf("%s: unexpected message %q", sinkName, id)
		}
		if seen[id] == 2 {
			t.Errorf("%s: message %q delivered twice", sinkName, id)
		}
	}
	for id := range want {
		if seen[id] == 0 {
			t.Errorf("%s: message %q never arrived", sinkName, id)
		}
	}
}

func TestEndToEndKafka(t *testing.T) {
	brokers := startKafka(t)
	p := newProduced()
	p.produce(t, brokers, 7, 20000)
	if len(p.bad) < 100 || len(p.valid) < 19000 {
		t.Fatalf("corpus too skewed: %d valid, %d malformed", len(p.valid), len(p.bad))
	}

	dir := t.TempDir()
	ndjson, arrowFile, mergeFile := filepath.Join(dir, "out.ndjson"), filepath.Join(dir, "out.arrows"), filepath.Join(dir, "merges.ndjson")
	cfg, err := parseConfig([]byte(fmt.Sprintf(`
data_dir: %s
log: {level: warn}
source:
  kafka: {brokers: [%s], group: e2e, topics: [%s]}
batch: {max_rows: 700, max_age: 50ms}
sinks:
  - {name: kafka, consent: {}, kafka: {topic: %s, compression: zstd, key: message_id}}
  - {name: ndjson, consent: {}, file: {path: %s}}
  - {name: arrow, consent: {}, file: {path: %s, format: arrow, compression: lz4}}
  - {name: merges, events: false, records: [merge], file: {path: %s}}
dead_letter:
  kafka: {topic: %s}
http: {addr: "127.0.0.1:0"}
identity: {secret: test-secret}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
`, dir, brokers[0], topicIn, topicOut, ndjson, arrowFile, mergeFile, topicDLQ)))
	if err != nil {
		t.Fatal(err)
	}
	a, done, stop := startApp(t, cfg)
	waitConsumed(t, a, done, uint64(len(p.valid)+len(p.bad)))
	// The identity graph answers over HTTP while the pipeline runs.
	checkLookup(t, a.srv.Addr(), p.someUserID)
	stop()

	// Kafka sink: every valid event once, key = message id, value untouched.
	var ids []string
	for _, r := range consumeAll(t, brokers, topicOut) {
		id := messageID(t, r.Value)
		if string(r.Key) != id {
			t.Errorf("kafka sink: key %q for message %q", r.Key, id)
		}
		ids = append(ids, id)
	}
	checkExactlyOnce(t, "kafka sink", p.valid, ids)

	// NDJSON file sink.
	data, err := os.ReadFile(ndjson)
	if err != nil {
		t.Fatal(err)
	}
	ids = ids[:0]
	for _, line := range splitLines(data) {
		ids = append(ids, messageID(t, line))
	}
	checkExactlyOnce(t, "ndjson sink", p.valid, ids)

	// Arrow IPC sink: the message_id column.
	f, err := os.Open(arrowFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := ipc.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	ids = ids[:0]
	for rd.Next() {
		col := rd.RecordBatch().Column(engine.ColMessageID).(*array.String)
		pids := rd.RecordBatch().Column(engine.ColProfileID).(*array.Uint32)
		for i := 0; i < col.Len(); i++ {
			ids = append(ids, col.Value(i))
			if pids.Value(i) == 0 {
				t.Errorf("arrow sink: message %s has no profile id", col.Value(i))
			}
		}
	}
	if rd.Err() != nil {
		t.Fatal(rd.Err())
	}
	rd.Release()
	checkExactlyOnce(t, "arrow sink", p.valid, ids)

	// Dead letters: every malformed record once, with its reason, its
	// original bytes and its source position.
	dead := map[partOff]bool{}
	for _, r := range consumeAll(t, brokers, topicDLQ) {
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		part, _ := strconv.Atoi(h[sink.HeaderDLQSourcePartition])
		off, _ := strconv.ParseInt(h[sink.HeaderDLQSourceOffset], 10, 64)
		po := partOff{int32(part), off}
		want, ok := p.bad[po]
		switch {
		case h[sink.HeaderDLQSourceTopic] != topicIn || !ok:
			t.Errorf("dead letter from %s %v was not a malformed record", h[sink.HeaderDLQSourceTopic], po)
		case engine.Reason(h[sink.HeaderDLQReason]) != want:
			t.Errorf("dead letter %v: reason %q, want %q", po, h[sink.HeaderDLQReason], want)
		case string(r.Value) != string(p.raw[po]):
			t.Errorf("dead letter %v: bytes changed", po)
		case dead[po]:
			t.Errorf("dead letter %v delivered twice", po)
		}
		dead[po] = true
	}
	if len(dead) != len(p.bad) {
		t.Errorf("dead letters: %d, want %d", len(dead), len(p.bad))
	}

	// Merge records: the people of the corpus log in on several devices,
	// so their anonymous profiles merge into older ones.
	data, err = os.ReadFile(mergeFile)
	if err != nil {
		t.Fatal(err)
	}
	merges := splitLines(data)
	if len(merges) == 0 {
		t.Error("no merge records although people logged in on several devices")
	}
	for _, line := range merges {
		var m struct {
			Type     string   `json:"type"`
			Survivor uint32   `json:"survivor"`
			Merged   []uint32 `json:"merged"`
		}
		if err := json.Unmarshal(line, &m); err != nil || m.Type != "merge" || len(m.Merged) == 0 {
			t.Fatalf("merge record %s: %v", line, err)
		}
		for _, id := range m.Merged {
			if id <= m.Survivor {
				t.Errorf("merge record %s: the oldest profile must survive", line)
			}
		}
	}

	if c, e := committedAll(t, brokers, "e2e"); c != e {
		t.Errorf("committed offsets sum to %d, end offsets to %d", c, e)
	}
	st := a.runner.Stats()
	if st.Valid != uint64(len(p.valid)) || st.Dead != uint64(len(p.bad)) {
		t.Errorf("runner counted %d valid and %d dead, want %d and %d", st.Valid, st.Dead, len(p.valid), len(p.bad))
	}
}

func splitLines(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		i := 0
		for i < len(data) && data[i] != '\n' {
			i++
		}
		if i > 0 {
			out = append(out, data[:i])
		}
		if i == len(data) {
			break
		}
		data = data[i+1:]
	}
	return out
}

// checkLookup asks the running instance for the profile of a user id.
func checkLookup(t *testing.T, addr, userID string) {
	t.Helper()
	if userID == "" {
		t.Fatal("the corpus has no user id")
	}
	resp, err := http.Get("http://" + addr + "/v1/profiles/lookup?type=user_id&value=" + url.QueryEscape(userID))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		ProfileID   uint32 `json:"profile_id"`
		Identifiers []struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"identifiers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("lookup of a known user id: status %d, %v", resp.StatusCode, err)
	}
	if v.ProfileID == 0 || len(v.Identifiers) < 2 {
		t.Fatalf("lookup = %+v, want a profile with the user id and its devices", v)
	}
	for _, id := range v.Identifiers {
		if id.Value == userID {
			t.Errorf("lookup shows %s unmasked", id.Type)
		}
	}
}

// startApp builds an instance from cfg and runs it; stop drains it (as a
// SIGTERM would), closes every component and fails the test on any error.
func startApp(t *testing.T, cfg *Config) (a *app, done <-chan error, stop func()) {
	t.Helper()
	a, err := build(cfg, newLogger(cfg, os.Stderr), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- a.run(ctx) }()
	return a, errc, func() {
		t.Helper()
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("graceful stop returned %v", err)
		}
		if err := a.close(); err != nil {
			t.Fatal(err)
		}
	}
}

// waitConsumed waits until the runner has read n records and committed
// every batch it read; it fails if the pipeline stops first.
func waitConsumed(t *testing.T, a *app, done <-chan error, n uint64) {
	t.Helper()
	for st := a.runner.Stats(); st.Received < n || st.Committed != st.Batches; st = a.runner.Stats() {
		select {
		case err := <-done:
			t.Fatalf("pipeline stopped early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
