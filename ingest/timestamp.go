package ingest

import (
	"time"
	"unsafe"
)

// parseTimestamp parses an RFC 3339 timestamp and returns it as microseconds
// since the Unix epoch (UTC), truncating sub-microsecond digits the way
// time.Time.UnixMicro does. It accepts exactly what
// time.Parse(time.RFC3339, s) accepts: the common form
// (2006-01-02T15:04:05[.fraction](Z|±hh:mm)) is parsed here without
// allocating; anything else falls back to time.Parse.
func parseTimestamp(b []byte) (micros int64, ok bool) {
	if m, ok := parseRFC3339Fast(b); ok {
		return m, true
	}
	return parseTimestampSlow(b)
}

// parseTimestampSlow is the fallback for forms the fast path does not handle
// (comma as fraction separator, one-digit hours, ...). The string does not
// escape: time.Parse keeps it only in its error, which is dropped here.
func parseTimestampSlow(b []byte) (int64, bool) {
	t, err := time.Parse(time.RFC3339, unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil {
		return 0, false
	}
	return t.UnixMicro(), true
}

// parseRFC3339Fast mirrors the fast path of the time package
// (parseRFC3339 in time/format_rfc3339.go) but computes the Unix time
// directly instead of going through time.Date and time zones. It returns
// ok=false for anything it does not recognise; the caller then asks
// time.Parse, so a false here is never a final verdict.
func parseRFC3339Fast(s []byte) (int64, bool) {
	if len(s) < len("2006-01-02T15:04:05Z") {
		return 0, false
	}
	if s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return 0, false
	}
	year, ok1 := digits4(s[0:4])
	month, ok2 := digits2(s[5:7])
	day, ok3 := digits2(s[8:10])
	hour, ok4 := digits2(s[11:13])
	minute, ok5 := digits2(s[14:16])
	sec, ok6 := digits2(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return 0, false
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return 0, false
	}
	s = s[19:]

	// Fraction: any number of digits, only the first nine count (as in the
	// time package); here only the first six matter for microseconds.
	var usec int64
	if len(s) >= 2 && s[0] == '.' && isDigit(s[1]) {
		n := 1
		for ; n < len(s) && isDigit(s[n]); n++ {
			if n <= 6 {
				usec = usec*10 + int64(s[n]-'0')
			}
		}
		for i := n; i <= 6; i++ {
			usec *= 10
		}
		s = s[n:]
	}

	var offset int64
	switch {
	case len(s) == 1 && s[0] == 'Z':
	case len(s) == 6 && (s[0] == '+' || s[0] == '-') && s[3] == ':':
		oh, ok1 := digits2(s[1:3])
		om, ok2 := digits2(s[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, false
		}
		offset = int64(oh*60+om) * 60
		if s[0] == '-' {
			offset = -offset
		}
	default:
		return 0, false
	}

	days := daysFromCivil(year, month, day)
	unix := days*86400 + int64(hour*3600+minute*60+sec) - offset
	return unix*1e6 + usec, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func digits2(b []byte) (int, bool) {
	d0, d1 := b[0]-'0', b[1]-'0'
	if d0 > 9 || d1 > 9 {
		return 0, false
	}
	return int(d0)*10 + int(d1), true
}

func digits4(b []byte) (int, bool) {
	hi, ok1 := digits2(b[0:2])
	lo, ok2 := digits2(b[2:4])
	return hi*100 + lo, ok1 && ok2
}

func isLeap(year int) bool {
	return year%4 == 0 && (year%100 != 0 || year%400 == 0)
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if isLeap(year) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the number of days from 1970-01-01 to the given
// proleptic Gregorian date (Howard Hinnant's days_from_civil). year >= 0.
func daysFromCivil(year, month, day int) int64 {
	y := int64(year)
	if month <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400 // [0, 399]
	m := int64(month)
	if m > 2 {
		m -= 3
	} else {
		m += 9
	}
	doy := (153*m+2)/5 + int64(day) - 1    // [0, 365]
	doe := yoe*365 + yoe/4 - yoe/100 + doy // [0, 146096]
	return era*146097 + doe - 719468
}
