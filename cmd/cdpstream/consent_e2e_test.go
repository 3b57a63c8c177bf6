package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestConsentEndToEnd streams people who grant, withdraw and re-grant
// analytics and advertising consent through kfake (in their events and in
// consent records of cdpstream's own type), and checks that each sink
// receives exactly the events its policy allows, in order, and no consent
// record. The oracle
// is the policy evaluated per event in the test: a person's consent is the
// latest decision seen so far; a sink keeps an event when, after it, the
// person holds every purpose the sink needs.
func TestConsentEndToEnd(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"), kfake.SeedTopics(1, "analytics"), kfake.SeedTopics(1, "dlq"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()

	// One partition: the pipeline sees events in production order.
	type decision struct{ analytics, ads *bool }
	rng := rand.New(rand.NewPCG(4, 2))
	const people, n = 12, 3000
	state := make([]decision, people)
	var wantAnalytics, wantAds, wantAll []string
	var events [][]byte
	ts := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	b := func(v bool) *bool { return &v }
	records, changes := 0, 0
	decide := func(p int, an, ad bool) {
		old := state[p]
		if old.analytics == nil || *old.analytics != an {
			changes++
		}
		if old.ads == nil || *old.ads != ad {
			changes++
		}
		state[p] = decision{b(an), b(ad)}
	}
	for i := 0; i < n; i++ {
		p := rng.IntN(people)
		ts = ts.Add(time.Second)
		id := fmt.Sprintf("m%05d", i)
		if rng.IntN(20) == 0 {
			// A consent record on the input topic: it changes the
			// person's consent and reaches no sink.
			an, ad := rng.IntN(2) == 0, rng.IntN(3) == 0
			decide(p, an, ad)
			records++
			events = append(events, fmt.Appendf(nil, `{"type":"consent","userId":"person-%d","messageId":%q,"timestamp":%q,"context":{"consent":{"categoryPreferences":{"Analytics":%t,"Advertising":%t}}}}`,
				p, id, ts.Format(time.RFC3339), an, ad))
			continue
		}
		consent := ""
		if rng.IntN(4) == 0 { // a new decision: grant, withdraw or re-grant
			an, ad := rng.IntN(2) == 0, rng.IntN(3) == 0
			decide(p, an, ad)
			consent = fmt.Sprintf(`,"context":{"consent":{"categoryPreferences":{"Analytics":%t,"Advertising":%t}}}`, an, ad)
		}
		events = append(events, fmt.Appendf(nil, `{"type":"track","event":"Viewed","userId":"person-%d","messageId":%q,"timestamp":%q%s}`,
			p, id, ts.Format(time.RFC3339), consent))
		wantAll = append(wantAll, id)
		if d := state[p]; d.analytics != nil && *d.analytics {
			wantAnalytics = append(wantAnalytics, id)
		}
		if d := state[p]; d.ads != nil && *d.ads {
			wantAds = append(wantAds, id)
		}
	}
	if records == 0 {
		t.Fatal("no consent records in the stream")
	}
	if len(wantAnalytics) == 0 || len(wantAnalytics) == n || len(wantAds) == 0 {
		t.Fatalf("stream does not exercise the policies: %d analytics, %d ads of %d", len(wantAnalytics), len(wantAds), n)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("in"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for _, e := range events {
		prod.Produce(context.Background(), &kgo.Record{Value: e}, nil)
	}
	if err := prod.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	adsFile, allFile, changesFile := filepath.Join(dir, "ads.ndjson"), filepath.Join(dir, "all.ndjson"), filepath.Join(dir, "changes.ndjson")
	cfg, err := parseConfig(fmt.Appendf(nil, `
data_dir: %s
log: {level: warn}
source: {kafka: {brokers: [%s], group: consent, topics: [in]}}
batch: {max_rows: 256, max_age: 20ms}
identity: {secret: test-secret}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
consent:
  purposes:
    - {name: analytics, bit: 0, default: denied, segment: [Analytics]}
    - {name: advertising, bit: 1, default: denied, segment: [Advertising]}
sinks:
  - {name: analytics, kafka: {topic: analytics, key: message_id},
     consent: {purposes: [analytics], require: all, unknown: deny, decide_by: profile}}
  - {name: ads, file: {path: %s},
     consent: {purposes: [advertising], require: all, unknown: deny, decide_by: profile}}
  - {name: all, file: {path: %s}, consent: {}}
  - {name: changes, events: false, records: [consent], file: {path: %s}}
dead_letter: {kafka: {topic: dlq}}
http: {addr: "127.0.0.1:0"}
`, dir, brokers[0], adsFile, allFile, changesFile))
	if err != nil {
		t.Fatal(err)
	}
	a, done, stop := startApp(t, cfg)
	waitConsumed(t, a, done, n)
	stop()

	var got []string
	for _, r := range consumeAll(t, brokers, "analytics") {
		got = append(got, messageID(t, r.Value))
	}
	checkSame(t, "analytics sink", wantAnalytics, got)
	for _, f := range []struct {
		name, path string
		want       []string
	}{{"ads sink", adsFile, wantAds}, {"all sink", allFile, wantAll}} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, line := range splitLines(data) {
			got = append(got, messageID(t, line))
		}
		checkSame(t, f.name, f.want, got)
	}
	// One consent-change record per person and purpose whose status
	// changed (the first decision included).
	data, err := os.ReadFile(changesFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(splitLines(data)); got != changes {
		t.Errorf("%d consent-change records, want %d", got, changes)
	}
	st := a.runner.Stats()
	if st.Dropped[0] != uint64(n-len(wantAnalytics)) || st.Dropped[1] != uint64(n-len(wantAds)) || st.Dropped[2] != uint64(records) {
		t.Errorf("dropped counts %v, want [%d %d %d]", st.Dropped, n-len(wantAnalytics), n-len(wantAds), records)
	}
}

// checkSame fails unless got equals want, element by element.
func checkSame(t *testing.T, name string, want, got []string) {
	t.Helper()
	if slices.Equal(want, got) {
		return
	}
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	t.Errorf("%s: got %d events, want %d; first difference at %d (got %v, want %v)", name, len(got), len(want), i,
		got[i:min(i+3, len(got))], want[i:min(i+3, len(want))])
}
