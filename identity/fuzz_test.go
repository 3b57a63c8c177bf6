package identity

import (
	"bytes"
	"reflect"
	"testing"
	"unicode/utf8"
)

// FuzzNormalize checks every normaliser: no panic, the output is
// idempotent (normalising a normalised value changes nothing), bounded, and
// valid UTF-8 for valid input; email output holds an '@'; phone output is
// digits with an optional leading '+'.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"", " Jane.Doe@Example.COM ", "+44 (20) 7946-0958", "ÄÖÜ@ÉXAMPLE.de", "İstanbul",
		"\u00a0x\u00a0", "a@", "@b", "00000000-0000", "\xff\xfe", "ǅ", "\u2028x\u2029", "ꞵ@Ω.com", "+", "++1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for name, norm := range normalisers {
			out, ok := norm([]byte("prefix"), in)
			if string(out[:6]) != "prefix" {
				t.Fatalf("%s: clobbered dst", name)
			}
			if !ok {
				if len(out) != 6 {
					t.Fatalf("%s: failed but appended", name)
				}
				continue
			}
			v := out[6:]
			if len(v) > maxValueLen {
				t.Fatalf("%s: %d bytes", name, len(v))
			}
			if utf8.ValidString(in) && !utf8.Valid(v) && name != NormNone && name != NormTrim {
				t.Fatalf("%s(%q) = %q: invalid UTF-8", name, in, v)
			}
			again, ok := norm(nil, string(v))
			if !ok || !bytes.Equal(again, v) {
				t.Fatalf("%s not idempotent: %q → %q → %q (%v)", name, in, v, again, ok)
			}
			switch name {
			case NormEmail:
				if at := bytes.LastIndexByte(v, '@'); at <= 0 || at == len(v)-1 {
					t.Fatalf("email %q", v)
				}
			case NormPhone:
				for i, c := range v {
					if !(c >= '0' && c <= '9' || c == '+' && i == 0) {
						t.Fatalf("phone %q", v)
					}
				}
			}
		}
	})
}

// FuzzDecode feeds arbitrary bytes to every Pebble value decoder: no panic,
// and whatever decodes re-encodes to a value that decodes to the same thing.
func FuzzDecode(f *testing.F) {
	p := &profile{id: 7, created: 1700000000, merged: []mergedRef{{9, 7}, {12, 9}}, apart: []uint32{3},
		idents: []pident{{typ: 1, origin: 7, first: 1700000000, last: 1700003600, value: "u1"},
			{typ: 2, origin: 9, first: -5, last: 10, value: "jane@example.com"}}}
	f.Add(appendProfileV1(nil, p))
	sealed := p.clone()
	for i := range sealed.idents {
		sealed.idents[i].value, sealed.idents[i].h = "", hash{byte(i + 1), 0xaa}
	}
	sealed.sealed = []chunk{{n: 1, b: bytes.Repeat([]byte{1}, 40)}, {n: 1, b: bytes.Repeat([]byte{2}, 28)}}
	sealed.nsealed = 2
	f.Add(appendProfileV2(nil, sealed))
	f.Add(appendProfileV1(nil, &profile{id: 3, redirect: 1}))
	f.Add(appendLogEntry(nil, &LogEntry{Kind: LogMerge, Time: 1, Survivor: 1, Merged: []uint32{2, 3}, MessageID: "m", Rule: "event:email"}))
	f.Add(appendLogEntry(nil, &LogEntry{Kind: LogRefused, Time: 1, Merged: []uint32{3}, Erased: true}))
	f.Add(appendIdentValue(nil, identEntry{42, 1700000000}))
	f.Add(appendCounters(nil, 5, 9))
	f.Add([]byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{1, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10})
	f.Add([]byte{2, 0, 0, 0, 0, 1, 1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		if p, err := decodeProfile(7, v); err == nil {
			enc := appendProfileV1
			if v[0] == profileV2 && p.redirect == 0 {
				enc = appendProfileV2
			}
			q, err := decodeProfile(7, enc(nil, p))
			if err != nil || !reflect.DeepEqual(p, q) {
				t.Fatalf("profile round trip: %+v → %+v (%v)", p, q, err)
			}
		}
		if e, err := decodeLogEntry(3, v); err == nil {
			e2, err := decodeLogEntry(3, appendLogEntry(nil, &e))
			if err != nil || !reflect.DeepEqual(e, e2) {
				t.Fatalf("log round trip: %+v → %+v (%v)", e, e2, err)
			}
		}
		if id, err := decodeIdentValue(v); err == nil {
			if id2, err := decodeIdentValue(appendIdentValue(nil, id)); err != nil || id2 != id {
				t.Fatalf("identifier value round trip: %d → %d (%v)", id, id2, err)
			}
		}
		if n, s, err := decodeCounters(v); err == nil {
			if n2, s2, err := decodeCounters(appendCounters(nil, n, s)); err != nil || n2 != n || s2 != s {
				t.Fatalf("counters round trip")
			}
		}
	})
}

func TestMask(t *testing.T) {
	for _, c := range []struct{ typ, in, want string }{
		{TypeEmail, "jane.doe@example.com", "j***@e***.com"},
		{TypeEmail, "ä@b", "ä***@b***"},
		{TypePhone, "+442079460958", "+4***58"},
		{TypeUserID, "u1", "***"},
		{TypeDeviceID, "ééééééééé", "éé***éé"},
	} {
		if got := Mask(c.typ, c.in); got != c.want {
			t.Errorf("Mask(%s, %q) = %q, want %q", c.typ, c.in, got, c.want)
		}
	}
}
