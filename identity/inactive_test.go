package identity

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestInactiveChunks: more profiles than one chunk, half of them old,
// all reported; fn may erase what it is given (no iterator is open
// meanwhile); an error from fn stops the scan.
func TestInactiveChunks(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	const n = 2*inactiveChunk + 300
	var evs []testEvent
	for i := 0; i < n; i++ {
		ts := testEpoch.Add(time.Hour)
		if i%2 == 1 {
			ts = testEpoch.Add(100 * time.Hour)
		}
		evs = append(evs, testEvent{msg: fmt.Sprint(i), ts: ts, topic: "events", off: int64(i + 1), anon: fmt.Sprint("a-", i)})
	}
	for i := 0; i < n; i += 500 {
		tg.process(evs[i:min(i+500, n)])
	}
	stop := errors.New("stop")
	calls := 0
	err := tg.g.Inactive(testEpoch.Add(50*time.Hour), func(uint32, time.Time) error {
		calls++
		if calls == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 10 {
		t.Fatalf("scan went on after fn failed: %v, %d calls", err, calls)
	}
	seen, erased := 0, 0
	err = tg.g.Inactive(testEpoch.Add(50*time.Hour), func(pid uint32, last time.Time) error {
		if !last.Equal(testEpoch.Add(time.Hour)) || pid%2 != 1 {
			return fmt.Errorf("profile %d last seen %s", pid, last)
		}
		seen++
		if pid%200 != 1 { // erasing every one costs a compaction each
			return nil
		}
		erased++
		return tg.g.Erase(t.Context(), []uint32{pid})
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != (n+1)/2 {
		t.Fatalf("%d profiles reported, want %d", seen, (n+1)/2)
	}
	left := 0
	if err := tg.g.Inactive(testEpoch.Add(1000*time.Hour), func(uint32, time.Time) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != n-erased || erased < 10 {
		t.Fatalf("%d profiles left after erasing %d of %d", left, erased, n)
	}
	if err := tg.g.Check(); err != nil {
		t.Fatal(err)
	}
}
