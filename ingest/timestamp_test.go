package ingest

import (
	"testing"
	"time"
)

func TestParseTimestamp(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // RFC 3339 in UTC with microseconds; "" = rejected
		fast bool   // handled without time.Parse
	}{
		{"2024-05-01T12:34:56Z", "2024-05-01T12:34:56.000000Z", true},
		{"2024-05-01T12:34:56.789Z", "2024-05-01T12:34:56.789000Z", true},
		{"2024-05-01T12:34:56.123456Z", "2024-05-01T12:34:56.123456Z", true},
		{"2024-05-01T12:34:56.1234569Z", "2024-05-01T12:34:56.123456Z", true}, // truncated, not rounded
		{"2024-05-01T12:34:56.123456789123Z", "2024-05-01T12:34:56.123456Z", true},
		{"2024-05-01T12:34:56+02:00", "2024-05-01T10:34:56.000000Z", true},
		{"2024-05-01T00:30:00-05:30", "2024-05-01T06:00:00.000000Z", true},
		{"2024-05-01T00:30:00+23:59", "2024-04-30T00:31:00.000000Z", true},
		{"2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000000Z", true},
		{"2000-02-29T00:00:00Z", "2000-02-29T00:00:00.000000Z", true},
		{"1969-12-31T23:59:59.5Z", "1969-12-31T23:59:59.500000Z", true},
		{"0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000000Z", true},
		{"9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z", true},
		// Forms only time.Parse accepts (its general path is laxer than
		// RFC 3339; parseTimestamp takes what time.Parse takes).
		{"2024-05-01T12:34:56,5Z", "2024-05-01T12:34:56.500000Z", false},
		{"2024-05-01T12:34:56+24:00", "2024-04-30T12:34:56.000000Z", false},
		{"2024-05-01T12:34:56+02:60", "2024-05-01T09:34:56.000000Z", false},
		// Rejected by both.
		{"", "", false},
		{"2024-05-01", "", false},
		{"2024-05-01 12:34:56Z", "", false},
		{"2024-05-01t12:34:56Z", "", false},
		{"2024-05-01T12:34:56", "", false},
		{"2024-05-01T12:34:56z", "", false},
		{"2024-05-01T12:34:56+0200", "", false},
		{"2023-02-29T00:00:00Z", "", false},
		{"1900-02-29T00:00:00Z", "", false},
		{"2024-04-31T00:00:00Z", "", false},
		{"2024-13-01T00:00:00Z", "", false},
		{"2024-00-01T00:00:00Z", "", false},
		{"2024-05-00T00:00:00Z", "", false},
		{"2024-05-01T24:00:00Z", "", false},
		{"2024-05-01T23:60:00Z", "", false},
		{"2024-05-01T23:59:60Z", "", false}, // Go has no leap seconds
		{"2024-05-01T12:34:56.Z", "", false},
		{"+2024-05-01T12:34:56Z", "", false},
		{"1714566896", "", false},
	} {
		m, ok := parseTimestamp([]byte(tc.in))
		got := ""
		if ok {
			got = time.UnixMicro(m).UTC().Format("2006-01-02T15:04:05.000000Z07:00")
		}
		if got != tc.want {
			t.Errorf("parseTimestamp(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if _, fast := parseRFC3339Fast([]byte(tc.in)); fast != tc.fast {
			t.Errorf("parseRFC3339Fast(%q) ok = %v, want %v", tc.in, fast, tc.fast)
		}
		// The reference: time.Parse must agree on every case.
		ref, err := time.Parse(time.RFC3339, tc.in)
		if (err == nil) != ok || ok && ref.UnixMicro() != m {
			t.Errorf("parseTimestamp(%q) = %d, %v; time.Parse = %v, %v", tc.in, m, ok, ref, err)
		}
	}
}

func TestParseTimestampZeroAllocs(t *testing.T) {
	b := []byte("2024-05-01T12:34:56.789+02:00")
	if n := testing.AllocsPerRun(100, func() { parseTimestamp(b) }); n != 0 {
		t.Fatalf("parseTimestamp allocates %v times, want 0", n)
	}
}

// FuzzParseTimestamp checks parseTimestamp against time.Parse: both accept
// the same strings and agree on the instant, and whatever the fast path
// accepts time.Parse accepts too.
func FuzzParseTimestamp(f *testing.F) {
	for _, s := range []string{
		"2024-05-01T12:34:56Z", "2024-05-01T12:34:56.789Z", "2024-05-01T12:34:56.123456789+02:00",
		"2024-02-29T23:59:59-23:59", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
		"2024-05-01T12:34:56,5Z", "2024-05-01T1:34:56Z", "2023-02-29T00:00:00Z", "2024-05-01T12:34:56.Z",
		"", "x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := parseTimestamp([]byte(s))
		ref, err := time.Parse(time.RFC3339, s)
		if (err == nil) != ok {
			t.Fatalf("parseTimestamp(%q) ok=%v, time.Parse err=%v", s, ok, err)
		}
		if ok && ref.UnixMicro() != m {
			t.Fatalf("parseTimestamp(%q) = %d, time.Parse = %d", s, m, ref.UnixMicro())
		}
		if fm, fok := parseRFC3339Fast([]byte(s)); fok && (err != nil || fm != ref.UnixMicro()) {
			t.Fatalf("fast path took %q as %d, time.Parse = %v, %v", s, fm, ref, err)
		}
	})
}

func BenchmarkParseTimestamp(b *testing.B) {
	for _, s := range []string{"2024-05-01T12:34:56.789Z", "2024-05-01T12:34:56.789123+02:00"} {
		in := []byte(s)
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, ok := parseTimestamp(in); !ok {
					b.Fatal("rejected")
				}
			}
		})
		b.Run(s+"/time.Parse", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, err := time.Parse(time.RFC3339, string(in)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
