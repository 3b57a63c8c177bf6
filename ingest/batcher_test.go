package ingest

import (
	"bytes"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
)

func BenchmarkBatcherAdd(b *testing.B) {
	b.Run("alloc=pool", func(b *testing.B) { benchBatcherAdd(b, nil) })
	b.Run("alloc=go", func(b *testing.B) { benchBatcherAdd(b, memory.DefaultAllocator) })
}

func benchBatcherAdd(b *testing.B, mem memory.Allocator) {
	evs := benchEvents(1024)
	bt, err := NewBatcher(DecodeConfig{}, BatchConfig{}, mem)
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
