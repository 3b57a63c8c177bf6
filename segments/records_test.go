package segments

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestConsentChangeRecords: a batch carries one consent record per
// purpose whose status changed (not for a repeated decision), and
// decisions made through the API travel with the next batch.
func TestConsentChangeRecords(t *testing.T) {
	db := openDB(t, "")
	c, err := New(testConfig(), db, nil, WithChangeRecords())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	grant := `{"context":{"consent":{"categoryPreferences":{"Analytics":true}}}}`
	deny := `{"context":{"consent":{"categoryPreferences":{"Analytics":false}}}}`
	run := func(seq uint64, rows ...row) []string {
		b := makeBatch(t, seq, rows)
		defer b.Release()
		if err := c.Process(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range b.Records {
			var v struct {
				Type, Purpose, Status string
				ProfileID             uint32 `json:"profile_id"`
			}
			if err := json.Unmarshal(r.Value, &v); err != nil || v.Type != "consent" || r.Type != "consent" {
				t.Fatalf("record %s: %v", r.Value, err)
			}
			// A grant's subject is the profile (withheld once it is
			// erased); a denial has none (it always goes).
			if want := map[bool]uint32{true: v.ProfileID}[v.Status == "granted"]; r.Subject != want || string(r.Key) != fmt.Sprint(v.ProfileID) {
				t.Fatalf("record %s: key %q, subject %d; want key %d, subject %d", r.Value, r.Key, r.Subject, v.ProfileID, want)
			}
			out = append(out, fmt.Sprintf("%d:%s:%s", v.ProfileID, v.Purpose, v.Status))
		}
		return out
	}
	if got := run(1, row{pid: 5, ts: at, raw: grant}, row{pid: 5, ts: at.Add(time.Second), raw: grant}); !slices.Contains(got, "5:analytics:granted") || len(got) != 1+countOthers(got) {
		t.Fatalf("first grant: %v", got)
	}
	if got := run(2, row{pid: 5, ts: at.Add(2 * time.Second), raw: grant}); slices.Contains(got, "5:analytics:granted") {
		t.Fatalf("a repeated grant emitted %v", got)
	}
	if got := run(3, row{pid: 5, ts: at.Add(3 * time.Second), raw: deny}); !slices.Contains(got, "5:analytics:denied") {
		t.Fatalf("withdrawal: %v", got)
	}
}

// countOthers counts records for purposes other than analytics (the test
// catalogue may map one Segment category to several purposes).
func countOthers(recs []string) int {
	n := 0
	for _, r := range recs {
		if !strings.Contains(r, ":analytics:") {
			n++
		}
	}
	return n
}

// TestDecisionMetrics: the decision and stale counters, which Process
// counts per batch and adds at its end, say what the batch did.
func TestDecisionMetrics(t *testing.T) {
	db := openDB(t, "")
	defer db.Close()
	reg := prometheus.NewRegistry()
	c, err := New(testConfig(), db, reg)
	if err != nil {
		t.Fatal(err)
	}
	seg := `{"context":{"consent":{"categoryPreferences":{"Analytics":true,"Advertising":false,"Functional":true}}}}`
	b := makeBatch(t, 1, []row{
		{pid: 1, ts: time.Unix(2000, 0), raw: seg},                        // 3 decisions
		{pid: 1, ts: time.Unix(1000, 0), raw: seg},                        // 3 stale
		{pid: 2, ts: time.Unix(1000, 0), raw: `{"context":{"gpc":true}}`}, // 1 decision
	})
	defer b.Release()
	if err := c.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetCounter() == nil {
				continue
			}
			k := mf.GetName()
			for _, l := range m.GetLabel() {
				k += "," + l.GetName() + "=" + l.GetValue()
			}
			got[k] = m.GetCounter().GetValue()
		}
	}
	for k, want := range map[string]float64{
		"cdp_segments_decisions_total,purpose=analytics,source=segment,status=granted":       1,
		"cdp_segments_decisions_total,purpose=advertising,source=segment,status=denied":      1,
		"cdp_segments_decisions_total,purpose=personalization,source=segment,status=granted": 1,
		"cdp_segments_decisions_total,purpose=sale_of_data,source=gpc,status=denied":         1,
		"cdp_segments_stale_total,source=segment":                                            3,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}
