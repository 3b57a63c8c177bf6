package audience

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/prometheus/client_golang/prometheus"
)

func minCount(n int64) *CountRange { return &CountRange{Min: &n} }

// TestReplay: rows below the offset the store committed are not counted
// again, also after a restart.
func TestReplay(t *testing.T) {
	db := openDB(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, err := New(Config{}, db, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []Definition{
		{ID: "three", Condition: Condition{Event: &EventCond{Name: "order", Count: minCount(3)}}},
		{ID: "four", Condition: Condition{Event: &EventCond{Name: "order", Count: minCount(4)}}},
	} {
		if _, err := s.Create(d); err != nil {
			t.Fatal(err)
		}
	}
	batch := func(seq uint64) *engine.Batch {
		var evs []ev
		for i := 0; i < 3; i++ {
			e := track(7, "order", now, "")
			e.off = int64(i)
			evs = append(evs, e)
		}
		b := makeBatch(seq, evs, now)
		b.Offsets = []engine.Offset{{Topic: "events", Partition: 0, Next: 3}}
		return b
	}
	for i, reopen := range []bool{false, false, true} {
		if reopen {
			s.Close()
			if s, err = New(Config{}, db, WithClock(func() time.Time { return now })); err != nil {
				t.Fatal(err)
			}
		}
		b := batch(uint64(i + 1))
		if err := s.Process(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		b.Release()
		s.Wait()
		if got := dumpMembers(s); got != "four v1: []\nthree v1: [7]\n" {
			t.Fatalf("after batch %d (reopen %v):\n%s", i, reopen, got)
		}
	}
	s.Close()
}

func TestMetricsAndOnChange(t *testing.T) {
	reg := prometheus.NewRegistry()
	var got []Change
	s, err := New(Config{}, openDB(t), WithRegisterer(reg), WithOnChange(func(c []Change) { got = append(got, c...) }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Create(Definition{ID: "pro", Condition: Condition{Trait: &TraitCond{Path: "plan", Op: "eq", Value: json.RawMessage(`"pro"`)}}}); err != nil {
		t.Fatal(err)
	}
	s.Wait()
	b := makeBatch(1, []ev{identify(1, `{"plan":"pro"}`), identify(2, `{"plan":"pro"}`)}, time.Now())
	defer b.Release()
	if err := s.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		switch mf.GetName() {
		case "cdp_segments_audience_changes_total", "cdp_segments_audience_profiles", "cdp_segments_audience_count":
			for _, m := range mf.GetMetric() {
				v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				lines = append(lines, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), v))
			}
		}
	}
	want := "cdp_segments_audience_changes_total{cause=event,kind=enter} 2\ncdp_segments_audience_count{} 1\ncdp_segments_audience_profiles{} 2"
	if got := strings.Join(lines, "\n"); got != want {
		t.Fatalf("metrics:\n%s\nwant:\n%s", got, want)
	}
	if len(got) != 2 || !got[0].Entered || got[0].ProfileID != 1 || got[1].ProfileID != 2 || got[0].Audience != "pro" || got[0].Version != 1 {
		t.Fatalf("records %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{BackfillChunk: -1}, "audiences.backfill_chunk: must be >= 1"},
		{Config{MaxTraitBytes: 1}, "audiences.max_trait_bytes: must be >= 2"},
		{Config{MaxAudiences: -3}, "audiences.max_audiences: must be >= 1"},
	} {
		_, err := New(tc.cfg, openDB(t))
		if err == nil || err.Error() != tc.want {
			t.Errorf("got %v, want %s", err, tc.want)
		}
	}
}
