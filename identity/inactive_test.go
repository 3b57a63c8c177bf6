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

// TestLastSeen: a live profile reports itself and the last seen Inactive
// reports; a merged id stands for its survivor (with the survivor's time,
// which the merging event moved); an erased or unknown id is 0.
func TestLastSeen(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	ev := func(msg string, at time.Duration, user, anon string) testEvent {
		tg.off++
		return testEvent{msg: msg, ts: testEpoch.Add(at), topic: "events", off: tg.off, user: user, anon: anon}
	}
	_, pids := tg.process([]testEvent{ev("1", time.Hour, "", "anon-a"), ev("2", 2*time.Hour, "u1", "anon-b"), ev("3", 3*time.Hour, "", "anon-c")})
	a, b, c := pids[0], pids[1], pids[2]
	check := func(pid, wantLive uint32, wantLast time.Time) {
		t.Helper()
		live, last, err := tg.g.LastSeen(pid)
		if err != nil || live != wantLive || !last.Equal(wantLast) {
			t.Fatalf("LastSeen(%d) = %d, %s, %v; want %d, %s", pid, live, last, err, wantLive, wantLast)
		}
	}
	check(a, a, testEpoch.Add(time.Hour))
	var fromScan time.Time
	if err := tg.g.Inactive(testEpoch.Add(10*time.Hour), func(pid uint32, last time.Time) error {
		if pid == b {
			fromScan = last
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check(b, b, fromScan)
	// Three days later u1 shows up on anon-a: a and b merge.
	tg.process([]testEvent{ev("4", 72*time.Hour, "u1", "anon-a")})
	v, err := tg.g.Lookup(TypeUserID, "u1")
	if err != nil {
		t.Fatal(err)
	}
	merged := a
	if v.ProfileID == a {
		merged = b
	}
	check(merged, v.ProfileID, testEpoch.Add(72*time.Hour))
	check(v.ProfileID, v.ProfileID, testEpoch.Add(72*time.Hour))
	if err := tg.g.Erase(t.Context(), []uint32{c}); err != nil {
		t.Fatal(err)
	}
	check(c, 0, time.Time{})
	check(999_999, 0, time.Time{})
}
