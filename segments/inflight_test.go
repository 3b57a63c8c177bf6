package segments

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// keysNaming returns the keys of this package's families (0x20-0x27)
// that name pid.
func keysNaming(t testing.TB, db *pebble.DB, pid uint32) []string {
	t.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{0x20}, UpperBound: []byte{0x28}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	want := profileKey(nil, 0, pid)[1:]
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) >= 5 && bytes.Equal(k[1:5], want) {
			out = append(out, fmt.Sprintf("%x", k))
		}
	}
	return out
}

// holds lists where the stage's memory still names pid: its decisions,
// the bitmaps, pending expiries and change records.
func holds(c *Consent, pid uint32) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []string
	if c.profiles.get(pid) != nil {
		out = append(out, "decisions")
	}
	for _, pu := range c.cat.purposes {
		if c.granted[pu.Bit].Contains(pid) || c.denied[pu.Bit].Contains(pid) {
			out = append(out, pu.Name+" bitmap")
		}
	}
	for _, e := range c.exp {
		if e.pid == pid {
			out = append(out, "expiry")
		}
	}
	for _, r := range c.changes {
		if string(r.Key) == fmt.Sprint(pid) {
			out = append(out, "change record")
		}
	}
	return out
}

// selected runs every policy on b and returns, per policy, the rows kept
// and the rows dropped with their reasons.
func selected(b *engine.Batch, ps ...*Policy) string {
	var sb strings.Builder
	for _, p := range ps {
		var dropped []string
		kept := p.Select(b, nil, func(row int, r engine.Reason) { dropped = append(dropped, fmt.Sprintf("%d:%s", row, r)) })
		fmt.Fprintf(&sb, "%s kept %v dropped %v\n", p.cfg.Name, kept, dropped)
	}
	return sb.String()
}

// TestEraseInFlight: batches resolved by identity before an erasure reach
// the stage after Erase returned (a pipelined runner has several in
// flight). Their rows of the erased profile, and merges naming it, must
// not recreate anything: no Pebble key of 0x20-0x27 names it, memory
// holds nothing of it, and every policy drops the rows with reason
// "erased", also for a batch processed before the erasure and selected
// after it.
func TestEraseInFlight(t *testing.T) {
	const (
		victim = uint32(5)
		other  = uint32(6)  // unrelated, must be untouched
		late   = uint32(7)  // merged into the victim by a batch in flight
		live   = uint32(8)  // survivor of a merge naming the victim as merged
		chainA = uint32(9)  // merged into chainB, which is merged into the victim
		chainB = uint32(10) //
	)
	dir := t.TempDir()
	db := openPlainDB(t, dir, false)
	defer func() { _ = db.Close() }()
	clock := time.Unix(1_235_000, 0)
	c, err := New(testConfig(), db, nil, WithClock(func() time.Time { return clock }), WithChangeRecords())
	if err != nil {
		t.Fatal(err)
	}
	var pols []*Policy
	for _, pc := range []PolicyConfig{
		{Name: "ads", Purposes: []string{"advertising"}, Require: "all", Unknown: "deny", DecideBy: "profile"},
		{Name: "event", Purposes: []string{"analytics"}, Require: "any", Unknown: "allow", DecideBy: "event"},
		{Name: "none"}, // no purpose: still drops suppressed and erased profiles
	} {
		p, err := NewPolicy(pc, c)
		if err != nil {
			t.Fatal(err)
		}
		pols = append(pols, p)
	}
	// Functional grants expire (personalization, grant_ttl 1h): the
	// victim's rows would schedule an expiry.
	grant := `{"context":{"consent":{"categoryPreferences":{"Analytics":true,"Advertising":true,"Functional":true},"usPrivacy":"1YNN"}}}`
	deny := `{"context":{"consent":{"categoryPreferences":{"Analytics":false,"Advertising":false,"Functional":false}}}}`
	at := func(s int64) time.Time { return time.Unix(1_234_000+s, 0) }
	process := func(b *engine.Batch) {
		t.Helper()
		if err := c.Process(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	b1 := makeBatch(t, 1, []row{
		{pid: victim, ts: at(1), raw: grant}, {pid: other, ts: at(1), raw: grant}, {pid: late, ts: at(17), raw: grant}, // a record no other profile has
		{pid: live, ts: at(1), raw: deny}, {pid: chainA, ts: at(1), raw: grant}, {pid: chainB, ts: at(1), raw: deny},
	})
	process(b1)
	b1.Release()
	// Processed before the erasure, selected after it.
	b2 := makeBatch(t, 2, []row{{pid: victim, ts: at(2), raw: deny, msg: "before"}, {pid: other, ts: at(2), raw: `{}`}})
	process(b2)
	defer b2.Release()
	// A PUT whose change record has not left with a batch yet.
	w := httptest.NewRecorder()
	c.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodPut, fmt.Sprintf("/v1/profiles/%d/consent", victim),
		strings.NewReader(`{"analytics":{"status":"granted","timestamp":"2009-02-14T00:00:00Z"}}`)))
	if w.Code != http.StatusOK {
		t.Fatalf("PUT: %d %s", w.Code, w.Body)
	}
	otherView, liveView := c.View(other), c.View(live)
	c.mu.RLock()
	lateRecord := appendProfile(nil, c.profiles.get(late))
	c.mu.RUnlock()
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if f := filesHolding(t, dir, lateRecord); !containsSuffix(f, ".sst") {
		t.Fatalf("control: the merged profile's record is in no SST (files %v)", f)
	}

	if err := c.Erase(victim); err != nil {
		t.Fatal(err)
	}
	gone := func(when string, pids ...uint32) {
		t.Helper()
		for _, pid := range pids {
			if k := keysNaming(t, db, pid); len(k) > 0 {
				t.Errorf("%s: keys of erased profile %d: %v", when, pid, k)
			}
			if h := holds(c, pid); len(h) > 0 {
				t.Errorf("%s: memory holds erased profile %d: %v", when, pid, h)
			}
			if !c.erased.Contains(pid) {
				t.Errorf("%s: %d not in the erased set", when, pid)
			}
		}
	}
	gone("after erase", victim)
	if got, want := selected(b2, pols...), "ads kept [1] dropped [0:erased]\nevent kept [1] dropped [0:erased]\nnone kept [1] dropped [0:erased]\n"; got != want {
		t.Errorf("batch processed before the erasure:\n%swant\n%s", got, want)
	}

	// In flight: resolved to the victim before the erasure.
	b3 := makeBatch(t, 3, []row{
		{pid: victim, ts: at(3), raw: grant, msg: "in-flight"}, {pid: other, ts: at(3), raw: deny},
		{pid: victim, ts: at(4), raw: deny}, {pid: 0, ts: at(3), raw: grant},
	})
	process(b3)
	defer b3.Release()
	gone("after an in-flight batch", victim)
	for _, r := range b3.Records {
		if string(r.Key) == fmt.Sprint(victim) {
			t.Errorf("change record of the erased profile left with a batch: %s", r.Value)
		}
	}
	if len(b3.Records) == 0 {
		t.Errorf("control: no change record for the other profile")
	}
	if m := masks(b3); m[0] != 0 || m[2] != 0 || m[1] == 0 {
		t.Errorf("masks %x: the erased rows' must be 0", m)
	}
	c.ann.mu.RLock()
	if a := c.ann.find(b3); a == nil || a.pk[0]|a.ek[0]|a.eg[0]|a.pk[2]|a.ek[2]|a.eg[2] != 0 {
		t.Errorf("annotation of the erased rows: %+v", a)
	}
	c.ann.mu.RUnlock()
	if got, want := selected(b3, pols...), "ads kept [3] dropped [0:erased 1:consent_denied 2:erased]\nevent kept [3] dropped [0:erased 1:consent_denied 2:erased]\nnone kept [1 3] dropped [0:erased 2:erased]\n"; got != want {
		t.Errorf("in-flight batch:\n%swant\n%s", got, want)
	}
	for _, p := range pols {
		p.mu.Lock()
		for _, e := range p.drops.e {
			if e.reason == ReasonErased && e.pid != 0 {
				t.Errorf("%s: explain ring names the erased profile: %+v", p.cfg.Name, e)
			}
		}
		p.mu.Unlock()
	}
	explain := func(q string) Explanation {
		t.Helper()
		w := httptest.NewRecorder()
		c.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/consent/explain?sink=ads&"+q, nil))
		var ex Explanation
		if err := json.Unmarshal(w.Body.Bytes(), &ex); err != nil || w.Code != http.StatusOK {
			t.Fatalf("explain %s: %d %s", q, w.Code, w.Body)
		}
		return ex
	}
	if ex := explain("message_id=in-flight"); ex.Decision != "dropped" || ex.Reason != "erased" || ex.ProfileID != 0 || ex.Detail == "" {
		t.Errorf("explain message: %+v", ex)
	}
	if ex := explain(fmt.Sprintf("profile_id=%d", victim)); ex.Decision != "dropped" || ex.Reason != "erased" {
		t.Errorf("explain profile: %+v", ex)
	}
	w = httptest.NewRecorder()
	c.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodPut, fmt.Sprintf("/v1/profiles/%d/consent", victim),
		strings.NewReader(`{"analytics":{"status":"granted"}}`)))
	if w.Code != http.StatusGone {
		t.Errorf("PUT of the erased profile: %d %s", w.Code, w.Body)
	}
	gone("after a PUT", victim)

	// Merged into the erased survivor (identity merged it before erasing
	// the victim): the merged profile's consent is the erased person's.
	b4 := makeBatch(t, 4, []row{{pid: late, ts: at(5), raw: deny}, {pid: victim, ts: at(5), raw: grant}, {pid: other, ts: at(5), raw: `{}`}})
	b4.Merges = []engine.Merge{{Survivor: victim, Merged: []uint32{late}}}
	process(b4)
	defer b4.Release()
	gone("after a merge into the erased profile", victim, late)
	if got, want := selected(b4, pols[0]), "ads kept [] dropped [0:erased 1:erased 2:consent_denied]\n"; got != want {
		t.Errorf("merge into the erased profile:\n%swant\n%s", got, want)
	}
	checkDisk(t, dir, lateRecord, false)

	// The erased profile merged into a live one: nothing moves.
	b5 := makeBatch(t, 5, []row{{pid: victim, ts: at(6), raw: grant}, {pid: live, ts: at(6), raw: `{}`}})
	b5.Merges = []engine.Merge{{Survivor: live, Merged: []uint32{victim}}}
	process(b5)
	defer b5.Release()
	gone("after a merge of the erased profile", victim)
	if got := c.View(live); !reflect.DeepEqual(got, liveView) {
		t.Errorf("the survivor changed:\n%+v\nwant\n%+v", got, liveView)
	}
	if got, want := selected(b5, pols[2]), "none kept [1] dropped [0:erased]\n"; got != want {
		t.Errorf("merge of the erased profile:\n%swant\n%s", got, want)
	}

	// A chain in one batch: chainA into chainB, chainB into the victim.
	b6 := makeBatch(t, 6, []row{{pid: chainA, ts: at(7), raw: grant}, {pid: chainB, ts: at(7), raw: grant}})
	b6.Merges = []engine.Merge{{Survivor: chainB, Merged: []uint32{chainA}}, {Survivor: victim, Merged: []uint32{chainB}}}
	process(b6)
	defer b6.Release()
	gone("after a chain into the erased profile", victim, late, chainA, chainB)
	if got, want := selected(b6, pols[2]), "none kept [] dropped [0:erased 1:erased]\n"; got != want {
		t.Errorf("chain:\n%swant\n%s", got, want)
	}
	if got := c.View(other); got.Purposes["advertising"].Status != "denied" || reflect.DeepEqual(got, otherView) {
		t.Errorf("the other profile's rows were not applied: %+v", got)
	}

	// After a restart the erased set is empty (identity resolves nothing
	// to an erased id any more) and the store holds nothing of them.
	c, err = New(testConfig(), db, nil, WithClock(func() time.Time { return clock }))
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range []uint32{victim, late, chainA, chainB} {
		if k := keysNaming(t, db, pid); len(k) > 0 {
			t.Errorf("after restart: keys of erased profile %d: %v", pid, k)
		}
		if h := holds(c, pid); len(h) > 0 {
			t.Errorf("after restart: memory holds erased profile %d: %v", pid, h)
		}
	}
}

// TestEraseConcurrent: Erase runs while batches (rows and merges over the
// same few ids) go through Process and a policy's Select in other
// goroutines, as with a pipelined runner. Whatever the interleaving,
// every erased id ends with no key, no state and no kept row after its
// erasure; -race checks the locking.
func TestEraseConcurrent(t *testing.T) {
	db := openDB(t, "")
	defer db.Close()
	c, err := New(testConfig(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := NewPolicy(PolicyConfig{Name: "all"}, c)
	if err != nil {
		t.Fatal(err)
	}
	grant := `{"context":{"consent":{"categoryPreferences":{"Analytics":true,"Advertising":true,"Functional":true}}}}`
	batches := make(chan *engine.Batch, 4)
	errs := make(chan error, 3)
	// closed once batches are in flight
	started := make(chan struct{})
	// the consent stage
	go func() {
		defer close(batches)
		for seq := uint64(1); seq <= 200; seq++ {
			var rows []row
			for i := range 20 {
				rows = append(rows, row{pid: uint32(1 + (int(seq)*7+i)%12), ts: time.Unix(int64(1000+seq), 0), raw: grant})
			}
			b := makeBatch(t, seq, rows)
			if seq%5 == 0 {
				b.Merges = []engine.Merge{{Survivor: uint32(1 + seq%12), Merged: []uint32{uint32(1 + (seq+5)%12)}}}
			}
			if err := c.Process(context.Background(), b); err != nil {
				errs <- err
				return
			}
			batches <- b
			if seq == 10 {
				close(started)
			}
		}
		errs <- nil
	}()
	// the privacy processor
	go func() {
		<-started
		for _, pid := range []uint32{3, 8, 11} {
			runtime.Gosched()
			if err := c.Erase(pid); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	// a sink: once Erase returned, no row of the id is kept
	go func() {
		for b := range batches {
			c.mu.RLock()
			gone := c.erased.Clone()
			c.mu.RUnlock()
			pids := b.Rec.Column(engine.ColProfileID).(*array.Uint32).Uint32Values()
			for _, i := range pol.Select(b, nil, nil) {
				if gone.Contains(pids[i]) {
					errs <- fmt.Errorf("batch %d: row %d of erased profile %d kept", b.Seq, i, pids[i])
					b.Release()
					for b := range batches {
						b.Release()
					}
					return
				}
			}
			b.Release()
		}
		errs <- nil
	}()
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// the ids erased, and those merged into them meanwhile
	c.mu.RLock()
	all := c.erased.ToArray()
	c.mu.RUnlock()
	if len(all) < 3 {
		t.Fatalf("erased set %v", all)
	}
	for _, pid := range all {
		if k := keysNaming(t, db, pid); len(k) > 0 {
			t.Errorf("keys of erased profile %d: %v", pid, k)
		}
		if h := holds(c, pid); len(h) > 0 {
			t.Errorf("memory holds erased profile %d: %v", pid, h)
		}
	}
}

// TestErasedFeed: with WithErasedFeed, ids the identity graph erased stop
// being recorded at the next batch, before the stage's own Erase runs;
// policies drop their rows with reason erased and forget them in their
// explain rings; the state already held stays until Erase removes it.
func TestErasedFeed(t *testing.T) {
	const victim, other = uint32(5), uint32(6)
	db := openPlainDB(t, t.TempDir(), false)
	defer func() { _ = db.Close() }()
	var log []uint32
	feed := func(from int) ([]uint32, int) { return log[from:], len(log) }
	c, err := New(testConfig(), db, nil, WithErasedFeed(feed), WithChangeRecords())
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPolicy(PolicyConfig{Name: "ads", Purposes: []string{"advertising"}, Require: "all", Unknown: "deny", DecideBy: "profile"}, c)
	if err != nil {
		t.Fatal(err)
	}
	grant := `{"context":{"consent":{"categoryPreferences":{"Analytics":true,"Advertising":true,"Functional":true}}}}`
	deny := `{"context":{"consent":{"categoryPreferences":{"Analytics":false,"Advertising":false,"Functional":false}}}}`
	at := func(s int64) time.Time { return time.Unix(1_234_000+s, 0) }
	b1 := makeBatch(t, 1, []row{{pid: victim, ts: at(1), msg: "v1", raw: deny}, {pid: other, ts: at(1), msg: "o1", raw: grant}})
	defer b1.Release()
	if err := c.Process(context.Background(), b1); err != nil {
		t.Fatal(err)
	}
	if got := selected(b1, p); got != "ads kept [1] dropped [0:consent_denied]\n" {
		t.Fatalf("before: %s", got)
	}
	explain := func(msg string) (dropEntry, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.drops.find(msg)
	}
	if e, ok := explain("v1"); !ok || e.pid != victim {
		t.Fatalf("the victim's drop is not in the explain ring: %+v", e)
	}
	// Identity erases the victim; the next batch (in flight since before)
	// grants for it.
	log = append(log, victim)
	b2 := makeBatch(t, 2, []row{{pid: victim, ts: at(2), msg: "v2", raw: grant}, {pid: other, ts: at(2), msg: "o2", raw: grant}})
	defer b2.Release()
	if err := c.Process(context.Background(), b2); err != nil {
		t.Fatal(err)
	}
	if got := selected(b2, p); got != "ads kept [1] dropped [0:erased]\n" {
		t.Fatalf("after the feed: %s", got)
	}
	if d := c.View(victim).Purposes["advertising"]; d.Status != "denied" {
		t.Fatalf("the grant of an in-flight row was recorded: %+v", c.View(victim))
	}
	if e, ok := explain("v1"); ok {
		t.Fatalf("the explain ring still names the erased profile: %+v", e)
	}
	if err := c.Erase(victim); err != nil {
		t.Fatal(err)
	}
	if h := holds(c, victim); len(h) != 0 {
		t.Fatalf("after Erase memory still holds %v", h)
	}
	if k := keysNaming(t, db, victim); len(k) != 0 {
		t.Fatalf("after Erase keys name the victim: %v", k)
	}
}
