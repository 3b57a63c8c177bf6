package sink

import (
	"context"
	"os"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestNDJSONWriteNoAllocs: a steady-state Write allocates nothing.
func TestNDJSONWriteNoAllocs(t *testing.T) {
	b := makeBatch(t, memory.NewGoAllocator(), testRows(500)...)
	defer b.Release()
	noSync := false
	s, err := NewNDJSON("n", FileConfig{Path: os.DevNull, Sync: &noSync})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sel := []int{1, 2, 3, 10, 400}
	ctx := context.Background()
	if n := testing.AllocsPerRun(20, func() {
		if err := s.Write(ctx, b, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, b, sel); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per Write pair, want 0", n)
	}
}

// TestKafkaWriteAllocsPerRow: the Kafka sink's allocations do not grow
// with the rows of a Write (records, headers and key text are pooled);
// what remains is franz-go's per-request cost.
func TestKafkaWriteAllocsPerRow(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation profile over TCP")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "a"), kfake.BlackholeProduce())
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	s, err := NewKafka("k", KafkaConfig{Topic: "a", Compression: CompressionNone, Client: KafkaClientConfig{Brokers: cluster.ListenAddrs()}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	allocs := func(rows int) float64 {
		b := makeBatch(t, memory.NewGoAllocator(), testRows(rows)...)
		defer b.Release()
		if err := s.Write(ctx, b, nil); err != nil { // warm the pool and connection
			t.Fatal(err)
		}
		return testing.AllocsPerRun(10, func() {
			if err := s.Write(ctx, b, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
	small, large := allocs(200), allocs(2000)
	t.Logf("allocations per Write: %v for 200 rows, %v for 2000 rows", small, large)
	if perRow := (large - small) / 1800; perRow > 0.05 {
		t.Errorf("%.3f allocations per row, want none (200 rows: %v, 2000 rows: %v)", perRow, small, large)
	}
}
