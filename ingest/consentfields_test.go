package ingest

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
)

var consentPaths = []string{"context.consent.tcString", "context.consent.categoryPreferences", "context.consentManagement", "context.gpc", "consent_state"}

// TestConsentFields: the decoder cuts out exactly the configured consent
// fields, keeping the event's nesting, and the cut-out decodes to the same
// values as the event.
func TestConsentFields(t *testing.T) {
	d, err := NewDecoder(DecodeConfig{ConsentPaths: consentPaths})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"none", `{"type":"track","event":"E","userId":"u"}`, `{}`},
		{"segment and gpc", `{"type":"track","event":"E","userId":"u","context":{"ip":"1.2.3.4","gpc":true,"consent":{"categoryPreferences":{"Ads":false,"Analytics":true},"other":1}}}`,
			`{"context":{"consent":{"categoryPreferences":{"Ads":false,"Analytics":true}},"gpc":true}}`},
		{"tc string and mparticle", `{"type":"page","anonymousId":"a","consent_state":{"gdpr":{"x":{"consented":true}}},"context":{"consent":{"tcString":"CO1"}}}`,
			`{"context":{"consent":{"tcString":"CO1"}},"consent_state":{"gdpr":{"x":{"consented":true}}}}`},
		{"context not an object", `{"type":"track","event":"E","userId":"u","context":null}`, `{}`},
		{"rudderstack", `{"type":"track","event":"E","userId":"u","context":{"consentManagement":{"provider":"ketch","deniedConsentIds":["a"]}}}`,
			`{"context":{"consentManagement":{"provider":"ketch","deniedConsentIds":["a"]}}}`},
	} {
		ev, reason, detail := d.Decode([]byte(tc.in), time.Time{})
		if reason != "" {
			t.Fatalf("%s: rejected: %s %s", tc.name, reason, detail)
		}
		var got, want any
		if err := json.Unmarshal(ev.ConsentFields, &got); err != nil {
			t.Fatalf("%s: cut-out %q is not JSON: %v", tc.name, ev.ConsentFields, err)
		}
		_ = json.Unmarshal([]byte(tc.want), &want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: consent fields %s, want %s", tc.name, ev.ConsentFields, tc.want)
		}
	}
	// Without paths the field stays nil, and the column null.
	d2, _ := NewDecoder(DecodeConfig{})
	if ev, _, _ := d2.Decode([]byte(`{"type":"track","event":"E","userId":"u","context":{"gpc":true}}`), time.Time{}); ev.ConsentFields != nil {
		t.Fatalf("consent fields %q without configured paths", ev.ConsentFields)
	}
}

func TestConsentFieldsColumnAndAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under the race detector")
	}
	b, err := NewBatcher(DecodeConfig{ConsentPaths: consentPaths}, BatchConfig{MaxRows: 4096}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	ev := []byte(`{"type":"track","event":"E","userId":"u","context":{"gpc":false,"consent":{"categoryPreferences":{"Analytics":true}}}}`)
	pos := engine.Position{Topic: "t"}
	for i := 0; i < 100; i++ {
		pos.Offset++
		b.Add(ev, nil, pos, -1, time.Time{})
	}
	b.Flush().Release()
	// The next batch reserves what the first needed: no allocation per event.
	n := testing.AllocsPerRun(1000, func() {
		pos.Offset++
		b.Add(ev, nil, pos, -1, time.Time{})
	})
	if n != 0 {
		t.Fatalf("%v allocations per event with consent paths", n)
	}
	batch := b.Flush()
	defer batch.Release()
	col := batch.Rec.Column(engine.ColConsentFields)
	if col.NullN() != 0 || col.Len() != batch.Rows() {
		t.Fatalf("consent_fields column: %d rows, %d null", col.Len(), col.NullN())
	}
}

// TestConsentRecordType: "consent" is a type only when the caller turned
// consent records on (a consent catalogue is configured).
func TestConsentRecordType(t *testing.T) {
	rec := []byte(`{"type":"consent","userId":"u","context":{"gpc":true}}`)
	off, _ := NewDecoder(DecodeConfig{})
	if _, reason, _ := off.Decode(rec, time.Time{}); reason != ReasonUnknownType {
		t.Fatalf("consent record without ConsentRecords: reason %q, want unknown_type", reason)
	}
	on, _ := NewDecoder(DecodeConfig{ConsentRecords: true, ConsentPaths: consentPaths})
	ev, reason, _ := on.Decode(rec, time.Time{})
	if reason != "" || ev.Type != engine.TypeConsent || string(ev.ConsentFields) != `{"context":{"gpc":true}}` {
		t.Fatalf("consent record: reason %q, event %+v", reason, ev)
	}
	if _, reason, _ := on.Decode([]byte(`{"type":"consent","context":{"gpc":true}}`), time.Time{}); reason != ReasonMissingIdentity {
		t.Fatalf("consent record without a person: reason %q", reason)
	}
}
