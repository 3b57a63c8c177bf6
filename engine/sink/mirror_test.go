package sink

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// TestKafkaMirror: records produced by the mirror reach the topic over
// TCP in order, on one partition, with the mirror's key.
func TestKafkaMirror(t *testing.T) {
	c := newCluster(t, []string{"audit"})
	client := KafkaClientConfig{Brokers: c.ListenAddrs()}
	m, err := NewKafkaMirror(DeadLetterKafkaConfig{Topic: "audit", Client: client}, "audit", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		m.Produce(fmt.Appendf(nil, `{"seq":%d}`, i+1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil || m.Failed() != 0 {
		t.Fatalf("close: %v, %d failed", err, m.Failed())
	}
	var got []string
	parts := map[int32]bool{}
	for _, r := range consume(t, client, "audit", 50) {
		if string(r.Key) != "audit" {
			t.Fatalf("key %q", r.Key)
		}
		parts[r.Partition] = true
		got = append(got, string(r.Value))
	}
	want := make([]string, 50)
	for i := range want {
		want[i] = fmt.Sprintf(`{"seq":%d}`, i+1)
	}
	if !slices.Equal(got, want) || len(parts) != 1 {
		t.Fatalf("records %v on partitions %v; want seq 1..50 in order on one partition", got, parts)
	}
}

// TestKafkaMirrorNeverBlocks: with no broker reachable, Produce still
// returns at once: past MirrorBuffered unacknowledged records each one
// fails (counted, reported) instead of waiting, so the audit trail it
// copies is never held up.
func TestKafkaMirrorNeverBlocks(t *testing.T) {
	var reported atomic.Int64
	m, err := NewKafkaMirror(DeadLetterKafkaConfig{Topic: "audit", Client: KafkaClientConfig{Brokers: []string{"127.0.0.1:1"}}},
		"audit", func(error) { reported.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	const extra = 25
	for i := range MirrorBuffered + extra {
		m.Produce(fmt.Appendf(nil, `{"seq":%d}`, i+1))
	}
	// The failures are reported from franz-go's goroutines.
	for m.Failed() < extra {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_ = m.Close(ctx) // nothing will be acknowledged: the rest fail on close
	for m.Failed() < MirrorBuffered+extra || reported.Load() < int64(m.Failed()) {
		time.Sleep(time.Millisecond) // promises of the closed client, still being called
	}
	if m.Failed() != MirrorBuffered+extra || reported.Load() != int64(m.Failed()) {
		t.Fatalf("after close: %d failed, %d reported; want all %d", m.Failed(), reported.Load(), MirrorBuffered+extra)
	}
}
