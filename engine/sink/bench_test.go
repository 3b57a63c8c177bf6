package sink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdpstream/cdpstream/engine"
)

const benchRows = 4096

// benchBatch returns a batch of n events of about 600 bytes of raw JSON
// each, and the selection of every row but each fourth (three long runs
// per four rows: a consent filter dropping a quarter of the events).
func benchBatch(b *testing.B, n int) (*engine.Batch, []int, map[string]int64) {
	rows := testRows(n)
	pad := strings.Repeat("x", 420)
	for i := range rows {
		rows[i].raw = fmt.Sprintf(`{"type":"track","messageId":%q,"userId":"user-%d","event":"Product Viewed","timestamp":"2026-01-02T03:04:05.678Z","context":{"ip":"203.0.113.7","consent":{"categoryPreferences":{"analytics":true,"ads":false}}},"properties":{"sku":"sku-%d","pad":%q}}`,
			rows[i].msgID, i, i%977, pad)
	}
	var sel []int
	bytesAll, bytesSel := int64(0), int64(0)
	for i, r := range rows {
		bytesAll += int64(len(r.raw))
		if i%4 != 3 {
			sel = append(sel, i)
			bytesSel += int64(len(r.raw))
		}
	}
	return makeBatch(b, memory.NewGoAllocator(), rows...), sel, map[string]int64{"all": bytesAll, "sel": bytesSel}
}

// BenchmarkNDJSONWrite measures one Write of a 4096-event batch to a file,
// with and without fsync. The file is truncated every 64 Writes (outside
// the timer) to bound disk use.
func BenchmarkNDJSONWrite(b *testing.B) {
	batch, sel, size := benchBatch(b, benchRows)
	defer batch.Release()
	for _, sync := range []bool{false, true} {
		for _, which := range []string{"all", "sel"} {
			b.Run(fmt.Sprintf("sync=%v/rows=%s", sync, which), func(b *testing.B) {
				path := filepath.Join(b.TempDir(), "bench.ndjson")
				s, err := NewNDJSON("bench", FileConfig{Path: path, Sync: &sync})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				var rows []int
				if which == "sel" {
					rows = sel
				}
				ctx := context.Background()
				b.SetBytes(size[which])
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := s.Write(ctx, batch, rows); err != nil {
						b.Fatal(err)
					}
					if i%64 == 63 {
						b.StopTimer()
						if err := os.Truncate(path, 0); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
				}
			})
		}
	}
}

// BenchmarkArrowIPCWrite measures one Write of a 4096-event batch as an
// Arrow IPC stream (no fsync), whole and with a 3-in-4 selection (sliced
// runs are fragmented, so the rows are gathered first).
func BenchmarkArrowIPCWrite(b *testing.B) {
	batch, sel, size := benchBatch(b, benchRows)
	defer batch.Release()
	noSync := false
	for _, codec := range []string{CompressionNone, CompressionLZ4, CompressionZstd} {
		for _, which := range []string{"all", "sel"} {
			b.Run(fmt.Sprintf("codec=%s/rows=%s", codec, which), func(b *testing.B) {
				path := filepath.Join(b.TempDir(), "bench.arrows")
				s, err := NewArrowIPC("bench", FileConfig{Path: path, Format: FormatArrow, Compression: codec, Sync: &noSync})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				var rows []int
				if which == "sel" {
					rows = sel
				}
				ctx := context.Background()
				b.SetBytes(size[which])
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := s.Write(ctx, batch, rows); err != nil {
						b.Fatal(err)
					}
					if i%64 == 63 {
						b.StopTimer()
						if _, err := s.f.Seek(0, 0); err != nil {
							b.Fatal(err)
						}
						if err := s.f.Truncate(0); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
				}
			})
		}
	}
}

// BenchmarkKafkaWrite measures one Write of a 4096-event batch through the
// idempotent producer to a kfake broker over TCP, acknowledged. The broker
// discards the bytes (kfake.BlackholeProduce) so that memory stays flat;
// the client still compresses, sends and waits for every ack.
func BenchmarkKafkaWrite(b *testing.B) {
	batch, sel, size := benchBatch(b, benchRows)
	defer batch.Release()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "bench"), kfake.BlackholeProduce())
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Close()
	for _, codec := range []string{CompressionNone, CompressionSnappy, CompressionLZ4, CompressionZstd} {
		for _, which := range []string{"all", "sel"} {
			b.Run(fmt.Sprintf("codec=%s/rows=%s", codec, which), func(b *testing.B) {
				s, err := NewKafka("bench", KafkaConfig{Topic: "bench", Compression: codec, Client: KafkaClientConfig{Brokers: cluster.ListenAddrs()}})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				var rows []int
				if which == "sel" {
					rows = sel
				}
				ctx := context.Background()
				if err := s.Write(ctx, batch, rows); err != nil { // connect, load metadata
					b.Fatal(err)
				}
				b.SetBytes(size[which])
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := s.Write(ctx, batch, rows); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
