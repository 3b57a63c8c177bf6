package ingest

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/engine/sink"
)

func srcBatcher(t *testing.T, bc BatchConfig) *Batcher {
	t.Helper()
	b, err := NewBatcher(DecodeConfig{}, bc, memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func event(i int) string {
	return `{"type":"track","event":"E","userId":"u` + strconv.Itoa(i) + `","messageId":"m` + strconv.Itoa(i) + `"}`
}

func messageIDs(b *engine.Batch) []string {
	var out []string
	if b == nil || b.Rec == nil {
		return nil
	}
	col := b.Rec.Column(engine.ColMessageID).(*array.String)
	for i := 0; i < col.Len(); i++ {
		out = append(out, col.Value(i))
	}
	return out
}

func TestFileSourceLinesAndPositions(t *testing.T) {
	long := `{"type":"track","event":"E","userId":"u","properties":{"x":"` + strings.Repeat("y", 600<<10) + `"}}`
	in := event(1) + "\r\n\n" + long + "\n" + event(3) + "\n   \n" + event(5) // no final newline
	s, err := NewFileSource(FileConfig{Path: "test.ndjson"}, srcBatcher(t, BatchConfig{MaxRows: 2}), strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []string
	var dead []engine.DeadLetter
	var offs []engine.Offset
	for {
		b, err := s.Next(context.Background())
		if b != nil {
			ids = append(ids, messageIDs(b)...)
			dead = append(dead, b.Dead...)
			offs = append(offs, b.Offsets...)
			b.Release()
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if strings.Join(ids, ",") != "m1,m3,m5" {
		t.Fatalf("ids = %v", ids)
	}
	// The 600 KiB line is never cut: it is dead-lettered whole, at its line.
	if len(dead) != 1 || dead[0].Reason != ReasonTooLarge || len(dead[0].Raw) != len(long) || dead[0].Pos.Offset != 3 || dead[0].Pos.Topic != "file:test.ndjson" {
		for _, d := range dead {
			t.Logf("dead letter: %s at %s, %d bytes (line was %d)", d.Reason, d.Pos, len(d.Raw), len(long))
		}
		t.Fatalf("want exactly the long line dead-lettered whole")
	}
	if last := offs[len(offs)-1]; last.Next != 7 {
		t.Fatalf("last offset %+v, want next line 7", last)
	}
}

// TestFileSourceFlushesOnAge: a pipe that goes quiet still delivers what it
// sent, after max_age, without waiting for EOF.
func TestFileSourceFlushesOnAge(t *testing.T) {
	pr, pw := io.Pipe()
	s, err := NewFileSource(FileConfig{Path: "-"}, srcBatcher(t, BatchConfig{MaxAge: 30 * time.Millisecond}), pr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	go func() { _, _ = io.WriteString(pw, event(1)+"\n"+event(2)+"\n") }()
	b, err := s.Next(context.Background())
	if err != nil || strings.Join(messageIDs(b), ",") != "m1,m2" {
		t.Fatalf("Next = %v, %v", messageIDs(b), err)
	}
	b.Release()
	// Cancelling returns the partial batch and the context's error.
	go func() { _, _ = io.WriteString(pw, event(3)+"\n") }()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	for {
		b, err = s.Next(ctx)
		if b != nil {
			if strings.Join(messageIDs(b), ",") != "m3" {
				t.Fatalf("got %v", messageIDs(b))
			}
			b.Release()
		}
		if err != nil {
			break
		}
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	pw.Close()
}

func TestKafkaSourceConsumesCommitsAndReportsLag(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("in"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const n = 1000
	for i := 0; i < n; i++ {
		rec := event(i)
		if i%10 == 0 {
			rec = `{"type":"nope"}`
		}
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte(rec)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	s, err := NewKafkaSource(KafkaConfig{Client: sink.KafkaClientConfig{Brokers: brokers}, Topics: []string{"in"}, Group: "g"},
		srcBatcher(t, BatchConfig{MaxRows: 128, MaxAge: 20 * time.Millisecond}), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	valid, dead := 0, 0
	for valid+dead < n {
		b, err := s.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			continue
		}
		valid += b.Rows()
		dead += len(b.Dead)
		for _, d := range b.Dead {
			if d.Reason != ReasonUnknownType || d.Pos.Topic != "in" {
				t.Fatalf("dead letter %+v", d)
			}
		}
		if err := s.Commit(ctx, b.Offsets); err != nil {
			t.Fatal(err)
		}
		b.Release()
	}
	if valid != 900 || dead != 100 {
		t.Fatalf("valid %d dead %d", valid, dead)
	}
	if s.Lag() != 0 {
		t.Fatalf("lag %d after consuming everything", s.Lag())
	}
	adm := kadm.NewClient(prod)
	offs, err := adm.FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
	if sum != n {
		t.Fatalf("committed %d, want %d", sum, n)
	}
}

func TestKafkaConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  KafkaConfig
		want string
	}{
		{KafkaConfig{Topics: []string{"t"}}, "brokers"},
		{KafkaConfig{Client: sink.KafkaClientConfig{Brokers: []string{"b"}}}, "topics"},
		{KafkaConfig{Client: sink.KafkaClientConfig{Brokers: []string{"b"}}, Topics: []string{""}}, "topics[0]"},
		{KafkaConfig{Client: sink.KafkaClientConfig{Brokers: []string{"b"}}, Topics: []string{"t"}, Start: "now"}, "start"},
		{KafkaConfig{Client: sink.KafkaClientConfig{Brokers: []string{"b"}}, Topics: []string{"t"}, SessionTimeout: -1}, "session_timeout"},
	} {
		tc.cfg.Defaults()
		if tc.want == "start" {
			tc.cfg.Start = "now"
		}
		if err := tc.cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}
