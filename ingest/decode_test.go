package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
)

var (
	testNow     = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	testRecTime = time.Date(2029, 6, 7, 8, 9, 10, 0, time.UTC)
)

func newTestDecoder(t testing.TB, cfg DecodeConfig) *Decoder {
	t.Helper()
	d, err := NewDecoder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.now = func() time.Time { return testNow }
	return d
}

func fmtMicros(us int64) string {
	return time.UnixMicro(us).UTC().Format(time.RFC3339Nano)
}

func fmtOpt(b []byte) string {
	if b == nil {
		return "-"
	}
	return string(b)
}

// eventString renders every field of ev on one line.
func eventString(ev *Event) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s msg=%s event=%s ts=%s user=%s anon=%s prev=%s group=%s ids=[",
		ev.Type, ev.MessageID, fmtOpt(ev.Event), fmtMicros(ev.Timestamp),
		fmtOpt(ev.UserID), fmtOpt(ev.AnonymousID), fmtOpt(ev.PreviousID), fmtOpt(ev.GroupID))
	for i, id := range ev.Identifiers {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%s:%s", id.Type, id.Value)
	}
	sb.WriteByte(']')
	return sb.String()
}

func TestDecodeAccepted(t *testing.T) {
	const ts = `"timestamp":"2024-05-01T12:00:00Z"`
	for _, tc := range []struct {
		name, in, want string
	}{
		{"identify", `{"type":"identify","messageId":"m1","userId":"u1",` + ts + `,"traits":{"email":"a@x.io","name":"A"}}`,
			"identify msg=m1 event=- ts=2024-05-01T12:00:00Z user=u1 anon=- prev=- group=- ids=[email:a@x.io]"},
		{"track", `{"type":"track","messageId":"m2","event":"Signed Up","anonymousId":"an1",` + ts + `,"properties":{"plan":"pro"}}`,
			"track msg=m2 event=Signed Up ts=2024-05-01T12:00:00Z user=- anon=an1 prev=- group=- ids=[]"},
		{"page", `{"type":"page","messageId":"m3","name":"Home","userId":"u1","anonymousId":"an1",` + ts + `}`,
			"page msg=m3 event=- ts=2024-05-01T12:00:00Z user=u1 anon=an1 prev=- group=- ids=[]"},
		{"screen", `{"type":"screen","messageId":"m4","anonymousId":"an1",` + ts + `}`,
			"screen msg=m4 event=- ts=2024-05-01T12:00:00Z user=- anon=an1 prev=- group=- ids=[]"},
		{"group", `{"type":"group","messageId":"m5","userId":"u1","groupId":"g1",` + ts + `,"traits":{"name":"ACME"}}`,
			"group msg=m5 event=- ts=2024-05-01T12:00:00Z user=u1 anon=- prev=- group=g1 ids=[]"},
		{"alias", `{"type":"alias","messageId":"m6","userId":"u2","previousId":"an1",` + ts + `}`,
			"alias msg=m6 event=- ts=2024-05-01T12:00:00Z user=u2 anon=- prev=an1 group=- ids=[]"},
		{"numeric ids", `{"type":"group","messageId":7,"userId":42,"groupId":-1.5e3,` + ts + `}`,
			"group msg=7 event=- ts=2024-05-01T12:00:00Z user=42 anon=- prev=- group=-1.5e3 ids=[]"},
		{"null and empty are absent", `{"type":"track","messageId":"m7","event":"E","userId":null,"anonymousId":"an1","previousId":"","groupId":null,"traits":null,"context":null,"properties":null,` + ts + `}`,
			"track msg=m7 event=E ts=2024-05-01T12:00:00Z user=- anon=an1 prev=- group=- ids=[]"},
		{"escapes in values and keys", `{"type":"track","messageId":"m\u0038","event":"a\"b","user\u0049d":"\u00e9l\u00e8ve",` + ts + `}`,
			`track msg=m8 event=a"b ts=2024-05-01T12:00:00Z user=élève anon=- prev=- group=- ids=[]`},
		{"event on a page is kept", `{"type":"page","messageId":"m9","event":"odd","userId":"u",` + ts + `}`,
			"page msg=m9 event=odd ts=2024-05-01T12:00:00Z user=u anon=- prev=- group=- ids=[]"},
		{"whitespace around", " \t{\"type\":\"screen\",\"messageId\":\"m10\",\"userId\":\"u\"," + ts + "}\r\n",
			"screen msg=m10 event=- ts=2024-05-01T12:00:00Z user=u anon=- prev=- group=- ids=[]"},
		{"unknown fields ignored", `{"type":"identify","messageId":"m11","userId":"u","integrations":{"All":false},"version":2,"sentAt":"garbage",` + ts + `}`,
			"identify msg=m11 event=- ts=2024-05-01T12:00:00Z user=u anon=- prev=- group=- ids=[]"},

		// Identifiers.
		{"default paths in config order, repeats dropped", `{"type":"identify","messageId":"i1","userId":"u",` + ts + `,
			"traits":{"phone":"+1555","email":"a@x.io"},
			"context":{"traits":{"email":"a@x.io","phone":"+1666"},"device":{"advertisingId":"ad-1","id":"dev-1"}}}`,
			"identify msg=i1 event=- ts=2024-05-01T12:00:00Z user=u anon=- prev=- group=- ids=[email:a@x.io phone:+1555 phone:+1666 device_id:dev-1 advertising_id:ad-1]"},
		{"externalIds", `{"type":"track","messageId":"i2","event":"E","userId":"u",` + ts + `,
			"context":{"externalIds":[{"id":"123","type":"crm_id","collection":"users","encoding":"none"},
				{"id":42,"type":"ga_client_id"},{"id":"x"},{"type":"t"},{"id":{},"type":"t"},"junk",{"id":"","type":"t"},{"id":"123","type":"crm_id"}]}}`,
			"track msg=i2 event=E ts=2024-05-01T12:00:00Z user=u anon=- prev=- group=- ids=[crm_id:123 ga_client_id:42]"},
		{"externalIds after paths, same value other type kept", `{"type":"identify","messageId":"i3","userId":"u",` + ts + `,
			"traits":{"email":"a@x.io"},"context":{"externalIds":[{"id":"a@x.io","type":"email"},{"id":"a@x.io","type":"email_alt"}]}}`,
			"identify msg=i3 event=- ts=2024-05-01T12:00:00Z user=u anon=- prev=- group=- ids=[email:a@x.io email_alt:a@x.io]"},
		{"odd identifier shapes skipped", `{"type":"identify","messageId":"i4","userId":"u",` + ts + `,
			"traits":{"email":["a@x.io"],"phone":15551234},"context":{"traits":"no","device":{"id":true},"externalIds":{"id":"x","type":"y"}}}`,
			"identify msg=i4 event=- ts=2024-05-01T12:00:00Z user=u anon=- prev=- group=- ids=[phone:15551234]"},

		// Timestamp precedence.
		{"timestamp wins", `{"type":"track","messageId":"t1","event":"E","userId":"u","receivedAt":"2024-05-03T00:00:00Z","originalTimestamp":"2024-05-02T00:00:00Z","timestamp":"2024-05-01T00:00:00.123456Z"}`,
			"track msg=t1 event=E ts=2024-05-01T00:00:00.123456Z user=u anon=- prev=- group=- ids=[]"},
		{"then originalTimestamp", `{"type":"track","messageId":"t2","event":"E","userId":"u","receivedAt":"2024-05-03T00:00:00Z","originalTimestamp":"2024-05-02T00:00:00+02:00"}`,
			"track msg=t2 event=E ts=2024-05-01T22:00:00Z user=u anon=- prev=- group=- ids=[]"},
		{"then receivedAt", `{"type":"track","messageId":"t3","event":"E","userId":"u","timestamp":null,"receivedAt":"2024-05-03T00:00:00Z"}`,
			"track msg=t3 event=E ts=2024-05-03T00:00:00Z user=u anon=- prev=- group=- ids=[]"},
		{"then the record time", `{"type":"track","messageId":"t4","event":"E","userId":"u"}`,
			"track msg=t4 event=E ts=2029-06-07T08:09:10Z user=u anon=- prev=- group=- ids=[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDecoder(t, DecodeConfig{})
			ev, reason, detail := d.Decode([]byte(tc.in), testRecTime)
			if reason != "" {
				t.Fatalf("rejected: %s (%s)", reason, detail)
			}
			if got := eventString(ev); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestDecodeClockFallback(t *testing.T) {
	d := newTestDecoder(t, DecodeConfig{})
	ev, reason, _ := d.Decode([]byte(`{"type":"track","event":"E","userId":"u"}`), time.Time{})
	if reason != "" {
		t.Fatal(reason)
	}
	if got := time.UnixMicro(ev.Timestamp); !got.Equal(testNow) {
		t.Fatalf("timestamp = %v, want the clock's %v", got, testNow)
	}
}

func TestDecodeGeneratedMessageID(t *testing.T) {
	d := newTestDecoder(t, DecodeConfig{})
	in := []byte(`{"type":"track","event":"E","userId":"u","timestamp":"2024-05-01T00:00:00Z"}`)
	decodeID := func(raw []byte) string {
		t.Helper()
		ev, reason, detail := d.Decode(raw, time.Time{})
		if reason != "" {
			t.Fatalf("rejected: %s (%s)", reason, detail)
		}
		return string(ev.MessageID)
	}
	id1 := decodeID(in)
	other := decodeID([]byte(`{"type":"track","event":"F","userId":"u","timestamp":"2024-05-01T00:00:00Z"}`))
	id2 := decodeID(in)
	d2 := newTestDecoder(t, DecodeConfig{})
	ev, _, _ := d2.Decode(in, time.Time{})
	id3 := string(ev.MessageID)

	if id1 != id2 || id1 != id3 {
		t.Fatalf("same record, different ids: %s %s %s", id1, id2, id3)
	}
	if id1 == other {
		t.Fatalf("different records, same id %s", id1)
	}
	if !strings.HasPrefix(id1, GeneratedIDPrefix) || len(id1) != len(GeneratedIDPrefix)+32 {
		t.Fatalf("id %q: want %q and 32 hex digits", id1, GeneratedIDPrefix)
	}
	// The value is part of the contract (downstream de-duplication across
	// versions): sha256 of the record, first 16 bytes in hex.
	if want := "cdp-69555ab27fbca3b4a6f5a492ec8bbb3c"; id1 != want {
		t.Fatalf("id = %s, want %s", id1, want)
	}
	for _, empty := range []string{`""`, `null`} {
		ev, reason, _ := d.Decode([]byte(`{"type":"track","event":"E","userId":"u","messageId":`+empty+`}`), testRecTime)
		if reason != "" || !strings.HasPrefix(string(ev.MessageID), GeneratedIDPrefix) {
			t.Errorf("messageId %s: reason %q, id %q; want a generated id", empty, reason, ev.MessageID)
		}
	}
}

func TestDecodeRejected(t *testing.T) {
	const ok = `"messageId":"m","timestamp":"2024-05-01T00:00:00Z"`
	for _, tc := range []struct {
		name, in string
		cfg      DecodeConfig
		reason   engine.Reason
		detail   string
	}{
		{"too large", `{"type":"track","event":"E","userId":"u"}`, DecodeConfig{MaxEventBytes: 20}, ReasonTooLarge,
			"record of 41 bytes exceeds decode.max_event_bytes (20)"},
		{"too large before utf8", "\xff\xff\xff", DecodeConfig{MaxEventBytes: 2}, ReasonTooLarge, ""},
		{"invalid utf8", "{\"type\":\"track\",\"event\":\"\xc3\x28\",\"userId\":\"u\"}", DecodeConfig{}, ReasonInvalidUTF8,
			"invalid UTF-8 at byte 25"},
		{"empty", ``, DecodeConfig{}, ReasonMalformedJSON, "not a valid JSON value"},
		{"truncated", `{"type":"track","event":"E"`, DecodeConfig{}, ReasonMalformedJSON, ""},
		{"trailing data", `{"type":"track"} {}`, DecodeConfig{}, ReasonMalformedJSON, ""},
		{"unquoted key", `{type:"track"}`, DecodeConfig{}, ReasonMalformedJSON, ""},
		{"array", `[{"type":"track"}]`, DecodeConfig{}, ReasonNotObject, "top-level value is array, want object"},
		{"string", `"track"`, DecodeConfig{}, ReasonNotObject, "top-level value is string, want object"},
		{"null", `null`, DecodeConfig{}, ReasonNotObject, "top-level value is null, want object"},
		{"number", `12`, DecodeConfig{}, ReasonNotObject, ""},
		{"duplicate key", `{"type":"track","event":"E","userId":"u","userId":"v",` + ok + `}`, DecodeConfig{}, ReasonBadField,
			"userId: duplicate key"},
		{"duplicate key via escape", `{"type":"track","event":"E","userId":"u","user\u0049d":"v",` + ok + `}`, DecodeConfig{}, ReasonBadField,
			"userId: duplicate key"},
		{"duplicate before type check", `{"event":"E","event":"F"}`, DecodeConfig{}, ReasonBadField, "event: duplicate key"},
		{"no type", `{"event":"E","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonMissingType, "type: missing"},
		{"null type", `{"type":null,"event":"E","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonMissingType, ""},
		{"empty type", `{"type":"","event":"E","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonMissingType, "type: empty"},
		{"unknown type", `{"type":"purchase","event":"E","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonUnknownType,
			"type: not one of identify, track, page, screen, group, alias"},
		{"type is case-sensitive", `{"type":"Track","event":"E","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonUnknownType, ""},
		{"type not a string", `{"type":1,"event":"E","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonBadField, "type: number, want string"},
		{"userId object", `{"type":"track","event":"E","userId":{"id":1},` + ok + `}`, DecodeConfig{}, ReasonBadField,
			"userId: object, want string or number"},
		{"anonymousId bool", `{"type":"track","event":"E","anonymousId":true,` + ok + `}`, DecodeConfig{}, ReasonBadField,
			"anonymousId: boolean, want string or number"},
		{"previousId array", `{"type":"alias","userId":"u","previousId":["a"],` + ok + `}`, DecodeConfig{}, ReasonBadField, ""},
		{"groupId NaN", `{"type":"group","userId":"u","groupId":NaN,` + ok + `}`, DecodeConfig{}, ReasonBadField,
			"groupId: not a valid JSON number"},
		{"userId 1.2.3", `{"type":"track","event":"E","userId":1.2.3,` + ok + `}`, DecodeConfig{}, ReasonBadField, ""},
		{"messageId object", `{"type":"track","event":"E","userId":"u","messageId":{}}`, DecodeConfig{}, ReasonBadField, ""},
		{"event number", `{"type":"track","event":5,"userId":"u",` + ok + `}`, DecodeConfig{}, ReasonBadField, "event: number, want string"},
		{"traits string", `{"type":"identify","userId":"u","traits":"x",` + ok + `}`, DecodeConfig{}, ReasonBadField,
			"traits: string, want object"},
		{"properties array", `{"type":"track","event":"E","userId":"u","properties":[],` + ok + `}`, DecodeConfig{}, ReasonBadField, ""},
		{"context number", `{"type":"track","event":"E","userId":"u","context":1,` + ok + `}`, DecodeConfig{}, ReasonBadField, ""},
		{"bad timestamp", `{"type":"track","event":"E","userId":"u","timestamp":"yesterday"}`, DecodeConfig{}, ReasonBadTimestamp,
			"timestamp: not an RFC 3339 timestamp"},
		{"bad losing timestamp", `{"type":"track","event":"E","userId":"u","timestamp":"2024-05-01T00:00:00Z","receivedAt":"2024-05-01"}`,
			DecodeConfig{}, ReasonBadTimestamp, "receivedAt: not an RFC 3339 timestamp"},
		{"epoch number timestamp", `{"type":"track","event":"E","userId":"u","originalTimestamp":1714521600000}`, DecodeConfig{}, ReasonBadTimestamp,
			"originalTimestamp: number, want an RFC 3339 string"},
		{"empty timestamp", `{"type":"track","event":"E","userId":"u","timestamp":""}`, DecodeConfig{}, ReasonBadTimestamp, ""},
		{"bad timestamp before identity", `{"type":"track","timestamp":"x"}`, DecodeConfig{}, ReasonBadTimestamp, ""},
		{"no identity", `{"type":"track","event":"E",` + ok + `}`, DecodeConfig{}, ReasonMissingIdentity, "needs userId or anonymousId"},
		{"empty identity", `{"type":"identify","userId":"","anonymousId":null,` + ok + `}`, DecodeConfig{}, ReasonMissingIdentity, ""},
		{"alias without previousId", `{"type":"alias","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonMissingIdentity,
			"alias: needs userId and previousId"},
		{"alias with anonymousId only", `{"type":"alias","anonymousId":"a","previousId":"p",` + ok + `}`, DecodeConfig{}, ReasonMissingIdentity, ""},
		{"track without event", `{"type":"track","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonMissingEvent, "track: needs event"},
		{"track with empty event", `{"type":"track","event":"","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonMissingEvent, ""},
		{"group without groupId", `{"type":"group","userId":"u",` + ok + `}`, DecodeConfig{}, ReasonMissingGroupID, "group: needs groupId"},
		{"identity before group id", `{"type":"group",` + ok + `}`, DecodeConfig{}, ReasonMissingIdentity, ""},
		{"too many identifiers", `{"type":"identify","userId":"u",` + ok + `,"context":{"externalIds":[{"id":"1","type":"a"},{"id":"2","type":"a"},{"id":"3","type":"a"}]}}`,
			DecodeConfig{MaxIdentifiers: 2}, ReasonBadField, "identifiers: more than decode.max_identifiers (2)"},
		{"strict: NaN in properties", `{"type":"track","event":"E","userId":"u","properties":{"n":NaN},` + ok + `}`,
			DecodeConfig{StrictJSON: true}, ReasonMalformedJSON, "not valid JSON (strict)"},
		{"strict: control character", "{\"type\":\"track\",\"event\":\"E\x01\",\"userId\":\"u\"," + ok + "}",
			DecodeConfig{StrictJSON: true}, ReasonMalformedJSON, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDecoder(t, tc.cfg)
			ev, reason, detail := d.Decode([]byte(tc.in), testRecTime)
			if reason != tc.reason {
				t.Fatalf("reason = %q (%s), want %q", reason, detail, tc.reason)
			}
			if ev != nil {
				t.Errorf("rejected record returned an event")
			}
			if tc.detail != "" && detail != tc.detail {
				t.Errorf("detail = %q, want %q", detail, tc.detail)
			}
			if !slices.Contains(Reasons, reason) {
				t.Errorf("reason %q is not in Reasons", reason)
			}
		})
	}
}

// TestDecodeLenientByDefault pins what the default (non-strict) decoder
// lets through, as documented in doc.go.
func TestDecodeLenientByDefault(t *testing.T) {
	d := newTestDecoder(t, DecodeConfig{})
	for _, in := range []string{
		`{"type":"track","event":"E","userId":"u","properties":{"n":NaN,"m":1.2.3}}`,
		"{\"type\":\"track\",\"event\":\"E\",\"userId\":\"u\",\"properties\":{\"s\":\"a\x01\\qb\"}}",
	} {
		if _, reason, detail := d.Decode([]byte(in), testRecTime); reason != "" {
			t.Errorf("%q rejected: %s (%s)", in, reason, detail)
		}
		if json.Valid([]byte(in)) {
			t.Errorf("%q: test case is valid JSON, pick one that is not", in)
		}
	}
}

func TestDecodeDetailHasNoContent(t *testing.T) {
	// A detail may be logged: it must never quote the record.
	const secret = "jane.doe@example.com"
	d := newTestDecoder(t, DecodeConfig{MaxIdentifiers: 1})
	for _, in := range []string{
		`{"type":"track","event":"E","userId":"` + secret + `"`,
		`{"type":"` + secret + `","userId":"u"}`,
		`{"type":"track","event":"E","userId":"u","timestamp":"` + secret + `"}`,
		`{"type":"track","userId":"` + secret + `"}`,
		`["` + secret + `"]`,
		`{"type":"track","event":"E","userId":"u","x":"` + secret + `"} trailing`,
		`{"type":"identify","userId":"u","traits":{"email":"` + secret + `"},"context":{"traits":{"email":"b"}}}`,
	} {
		_, reason, detail := d.Decode([]byte(in), testRecTime)
		if reason == "" {
			t.Fatalf("%s: accepted", in)
		}
		if strings.Contains(detail, "jane") {
			t.Errorf("%s: detail %q quotes the record", reason, detail)
		}
	}
}

func TestDecodeCustomIdentifiers(t *testing.T) {
	cfg := DecodeConfig{Identifiers: []IdentifierSource{
		{Type: "email", Paths: []string{"context.traits.email", "properties.email"}},
		{Type: "customer", Paths: []string{"properties.customer.id", "traits.email"}},
	}}
	d := newTestDecoder(t, cfg)
	ev, reason, detail := d.Decode([]byte(`{"type":"track","event":"E","userId":"u",
		"traits":{"email":"t@x.io"},"properties":{"email":"p@x.io","customer":{"id":9}},
		"context":{"traits":{"email":"c@x.io"},"device":{"id":"not configured"}}}`), testRecTime)
	if reason != "" {
		t.Fatalf("rejected: %s (%s)", reason, detail)
	}
	want := "email:c@x.io email:p@x.io customer:9 customer:t@x.io"
	var got []string
	for _, id := range ev.Identifiers {
		got = append(got, string(id.Type)+":"+string(id.Value))
	}
	if g := strings.Join(got, " "); g != want {
		t.Fatalf("identifiers = %s, want %s", g, want)
	}

	// An empty list turns the paths off; externalIds still count.
	d = newTestDecoder(t, DecodeConfig{Identifiers: []IdentifierSource{}})
	ev, _, _ = d.Decode([]byte(`{"type":"identify","userId":"u","traits":{"email":"t@x.io"},
		"context":{"externalIds":[{"type":"crm","id":"7"}]}}`), testRecTime)
	if len(ev.Identifiers) != 1 || string(ev.Identifiers[0].Type) != "crm" {
		t.Fatalf("identifiers = %s, want only crm:7", eventString(ev))
	}
}

func TestDecodeConfig(t *testing.T) {
	var c DecodeConfig
	c.Defaults()
	if c.MaxEventBytes != 32<<10 || c.MaxIdentifiers != 32 || len(c.Identifiers) != 4 || c.StrictJSON {
		t.Fatalf("defaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c2 := DecodeConfig{MaxEventBytes: 100, Identifiers: []IdentifierSource{}}
	c2.Defaults()
	if c2.MaxEventBytes != 100 || len(c2.Identifiers) != 0 {
		t.Fatalf("Defaults overwrote set fields: %+v", c2)
	}
	for _, tc := range []struct {
		c    DecodeConfig
		want string
	}{
		{DecodeConfig{MaxEventBytes: -1, MaxIdentifiers: 1}, "decode.max_event_bytes: must be > 0"},
		{DecodeConfig{MaxEventBytes: 1, MaxIdentifiers: -1}, "decode.max_identifiers: must be > 0"},
		{DecodeConfig{MaxEventBytes: 1, MaxIdentifiers: 1, Identifiers: []IdentifierSource{{Type: "a", Paths: []string{"x"}}, {Paths: []string{"x"}}}},
			"decode.identifiers[1].type: must not be empty"},
		{DecodeConfig{MaxEventBytes: 1, MaxIdentifiers: 1, Identifiers: []IdentifierSource{{Type: "a"}}},
			"decode.identifiers[0].paths: must list at least one path"},
		{DecodeConfig{MaxEventBytes: 1, MaxIdentifiers: 1, Identifiers: []IdentifierSource{{Type: "a", Paths: []string{"a.b", "a..b"}}}},
			`decode.identifiers[0].paths[1]: "a..b" has an empty segment`},
	} {
		err := tc.c.Validate()
		if err == nil || err.Error() != tc.want {
			t.Errorf("Validate(%+v) = %v, want %s", tc.c, err, tc.want)
		}
		if _, err := NewDecoder(tc.c); err == nil {
			t.Errorf("NewDecoder(%+v) accepted an invalid config", tc.c)
		}
	}
}

func TestValidNumber(t *testing.T) {
	for _, s := range []string{"0", "-0", "1", "42", "-1.5", "1e5", "1E+5", "1.25e-3", "123456789012345678901234567890"} {
		if !validNumber([]byte(s)) {
			t.Errorf("validNumber(%q) = false", s)
		}
	}
	for _, s := range []string{"", "-", "+1", "01", "1.", ".5", "1e", "1e+", "1.2.3", "NaN", "Inf", "-inf", "1-2", "0x1"} {
		if validNumber([]byte(s)) {
			t.Errorf("validNumber(%q) = true", s)
		}
	}
}

func TestDecodeZeroAllocs(t *testing.T) {
	d := newTestDecoder(t, DecodeConfig{})
	evs := benchEvents(16)
	i := 0
	n := testing.AllocsPerRun(1000, func() {
		if _, reason, _ := d.Decode(evs[i%len(evs)], time.Time{}); reason != "" {
			t.Fatal(reason)
		}
		i++
	})
	if n != 0 {
		t.Fatalf("Decode allocates %v times per event, want 0", n)
	}
}

// trackTemplate is a realistic Segment track event of about 600 bytes:
// ids, three timestamps, properties, and a context with library, device,
// traits and consent. $ID varies per event.
const trackTemplate = `{"type":"track","event":"Order Completed","messageId":"8f14e45f-ceea-467f-a0e6-5b9b3b4e$ID","userId":"u_$ID","anonymousId":"507f191e810c19729de8$ID","timestamp":"2024-05-01T12:34:56.789Z","sentAt":"2024-05-01T12:34:56.900Z","receivedAt":"2024-05-01T12:34:57.001Z","properties":{"orderId":"50314b8e9bcf","total":27.5,"currency":"USD"},"context":{"ip":"203.0.113.7","library":{"name":"analytics.js","version":"2.11.1"},"device":{"id":"B5372DB0-C21E-11E4-8DFC-AA07A5B0$ID"},"traits":{"email":"user$ID@example.com","phone":"+1415555$ID"},"consent":{"categoryPreferences":{"Advertising":true,"Analytics":true}}}}`

// benchEvents returns n distinct track events of the same size.
func benchEvents(n int) [][]byte {
	evs := make([][]byte, n)
	for i := range evs {
		id := strconv.Itoa(1000 + i%9000)
		evs[i] = []byte(strings.ReplaceAll(trackTemplate, "$ID", id))
	}
	return evs
}

func BenchmarkDecode(b *testing.B) {
	evs := benchEvents(1024)
	d, err := NewDecoder(DecodeConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(evs[0])))
	cpu0, ok0 := cpuSeconds()
	i := 0
	for b.Loop() {
		if _, r, _ := d.Decode(evs[i&1023], time.Time{}); r != "" {
			b.Fatal(r)
		}
		i++
	}
	reportRate(b, cpu0, ok0)
}

// BenchmarkDecodeConsentFields is BenchmarkDecode with the consent
// catalogue's default paths configured, to price the consent_fields
// cut-out that a configured consent stage makes every event pay.
func BenchmarkDecodeConsentFields(b *testing.B) {
	evs := benchEvents(1024)
	d, err := NewDecoder(DecodeConfig{ConsentPaths: []string{"context.consent.tcString", "context.consent.gppString",
		"context.consent.usPrivacy", "context.gpc", "context.consent.categoryPreferences", "context.consentManagement", "consent_state"}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(evs[0])))
	cpu0, ok0 := cpuSeconds()
	i := 0
	for b.Loop() {
		ev, r, _ := d.Decode(evs[i&1023], time.Time{})
		if r != "" || len(ev.ConsentFields) < 20 {
			b.Fatal(r, string(ev.ConsentFields))
		}
		i++
	}
	reportRate(b, cpu0, ok0)
}

// BenchmarkDecodeStrict is BenchmarkDecode with DecodeConfig.StrictJSON,
// to price the option.
func BenchmarkDecodeStrict(b *testing.B) {
	evs := benchEvents(1024)
	d, err := NewDecoder(DecodeConfig{StrictJSON: true})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(evs[0])))
	i := 0
	for b.Loop() {
		if _, r, _ := d.Decode(evs[i&1023], time.Time{}); r != "" {
			b.Fatal(r)
		}
		i++
	}
}

// FuzzDecode feeds one record at a time through a Batcher and checks:
// Add never panics nor touches its input; the record lands in exactly one
// place (a row or a dead letter); a dead letter has a reason from Reasons
// and the original bytes; a row's raw column is the input, and decoding
// that raw column again gives the same fields as the row's columns. For
// input that is valid JSON it also checks the decoder against
// encoding/json: it must not call it malformed, and the fields it reads
// must be the ones encoding/json reads. The strict decoder must accept
// exactly the valid JSON the lenient one accepts.
//
// The seed corpus is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(trackTemplate))
	cfg := DecodeConfig{MaxEventBytes: 4096, MaxIdentifiers: 8}
	b := newTestBatcher(f, cfg, BatchConfig{}, memory.NewGoAllocator())
	again := newTestDecoder(f, cfg)
	scfg := cfg
	scfg.StrictJSON = true
	strict := newTestDecoder(f, scfg)
	pos := engine.Position{Topic: "fuzz", Partition: 2, Offset: 9}

	f.Fuzz(func(t *testing.T, raw []byte) {
		in := bytes.Clone(raw)
		b.Add(raw, []byte("k"), pos, 4, testRecTime)
		batch := b.Flush()
		defer batch.Release()
		if !bytes.Equal(raw, in) {
			t.Fatalf("Add modified its input")
		}
		if len(batch.Offsets) != 1 || batch.Offsets[0].Next != pos.Offset+1 || batch.Bytes != len(in) {
			t.Fatalf("offsets %+v bytes %d", batch.Offsets, batch.Bytes)
		}
		rows := readRows(t, batch.Rec)
		validJSON := json.Valid(in)
		_, sreason, _ := strict.Decode(in, testRecTime)

		switch {
		case len(rows) == 1 && len(batch.Dead) == 0:
			r := rows[0]
			if !bytes.Equal(r.raw, in) || string(r.key) != "k" || r.topic != pos.Topic || r.partition != pos.Partition || r.offset != pos.Offset {
				t.Fatalf("row %v, raw %q", r, r.raw)
			}
			ev, reason, detail := again.Decode(r.raw, testRecTime)
			if reason != "" {
				t.Fatalf("raw column rejected on re-decode: %s (%s)", reason, detail)
			}
			if got, want := eventString(ev), r.eventFields(); got != want {
				t.Fatalf("re-decoded raw column differs:\n got %s\nrow %s", got, want)
			}
			if validJSON {
				if sreason != "" {
					t.Fatalf("strict decoder rejected valid JSON the lenient one took: %s", sreason)
				}
				compareWithEncodingJSON(t, in, r)
			} else if sreason == "" {
				t.Fatalf("strict decoder accepted invalid JSON")
			}

		case len(rows) == 0 && len(batch.Dead) == 1:
			dl := batch.Dead[0]
			if !slices.Contains(Reasons, dl.Reason) || dl.Detail == "" {
				t.Fatalf("dead letter reason %q detail %q", dl.Reason, dl.Detail)
			}
			if !bytes.Equal(dl.Raw, in) || string(dl.Key) != "k" || dl.Pos != pos {
				t.Fatalf("dead letter %+v", dl)
			}
			if dl.Reason == ReasonMalformedJSON && validJSON && jsonDepth(in) < 290 {
				t.Fatalf("valid JSON rejected as malformed")
			}
			if sreason == "" {
				t.Fatalf("strict decoder accepted what the lenient one rejected as %s", dl.Reason)
			}

		default:
			t.Fatalf("one record became %d rows and %d dead letters", len(rows), len(batch.Dead))
		}
	})
}

// compareWithEncodingJSON checks the fields of row r against what
// encoding/json reads from the same (valid) JSON.
func compareWithEncodingJSON(t *testing.T, in []byte, r row) {
	t.Helper()
	if bytes.Contains(bytes.ToLower(in), []byte(`\ud`)) {
		// Surrogate escapes: fastjson keeps a lone surrogate as the text
		// \udXXX, encoding/json makes it U+FFFD. Documented, not checked.
		return
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(in, &m); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	field := func(name string) *string {
		v, ok := m[name]
		if !ok || string(v) == "null" {
			return nil
		}
		var s string
		if v[0] == '"' {
			if err := json.Unmarshal(v, &s); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		} else {
			s = string(v)
		}
		if s == "" {
			return nil
		}
		return &s
	}
	for _, c := range []struct {
		name string
		got  *string
	}{
		{"type", ptr(r.typ.String())},
		{"event", r.event},
		{"userId", r.userID},
		{"anonymousId", r.anonymousID},
		{"previousId", r.previousID},
		{"groupId", r.groupID},
	} {
		if want := field(c.name); fmtPtr(want) != fmtPtr(c.got) {
			t.Fatalf("%s: row has %s, encoding/json reads %s", c.name, fmtPtr(c.got), fmtPtr(want))
		}
	}
	if want := field("messageId"); want != nil && *want != r.messageID || want == nil && !strings.HasPrefix(r.messageID, GeneratedIDPrefix) {
		t.Fatalf("messageId: row has %s, encoding/json reads %s", r.messageID, fmtPtr(want))
	}
	want := testRecTime.UnixMicro()
	for _, name := range []string{"receivedAt", "originalTimestamp", "timestamp"} {
		if s := field(name); s != nil {
			ts, err := time.Parse(time.RFC3339, *s)
			if err != nil {
				t.Fatalf("%s %q accepted, time.Parse: %v", name, *s, err)
			}
			want = ts.UnixMicro()
		}
	}
	if r.ts != want {
		t.Fatalf("timestamp %s, want %s", fmtMicros(r.ts), fmtMicros(want))
	}
}

func ptr[T any](v T) *T { return &v }

// jsonDepth returns the deepest nesting of arrays and objects in b.
func jsonDepth(b []byte) int {
	depth, maxDepth, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			maxDepth = max(maxDepth, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return maxDepth
}
