package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		t.Fatalf("%s does not end in a newline: %q", path, data[max(0, len(data)-20):])
	}
	return strings.Split(string(data[:len(data)-1]), "\n")
}

func wantLines(rows []row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.raw
	}
	return out
}

func TestNDJSONSelections(t *testing.T) {
	rows := testRows(25)
	for _, name := range sortedKeys(selections(len(rows))) {
		sel := selections(len(rows))[name]
		t.Run(name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			b := makeBatch(t, mem, rows...)
			path := filepath.Join(t.TempDir(), "out.ndjson")
			s, err := NewNDJSON("file", FileConfig{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Write(context.Background(), b, sel); err != nil {
				t.Fatal(err)
			}
			// Durable at Write return: read before Close.
			got := readLines(t, path)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			want := wantLines(selected(rows, sel))
			if len(want) == 0 {
				want = nil
			}
			if !equalStrings(got, want) {
				t.Fatalf("lines:\n%q\nwant:\n%q", got, want)
			}
			b.Release()
			mem.AssertSize(t, 0)
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNDJSONAppendAndTornLine(t *testing.T) {
	rows := testRows(6)
	b := makeBatch(t, memory.NewGoAllocator(), rows...)
	defer b.Release()
	path := filepath.Join(t.TempDir(), "out.ndjson")
	sync := false
	s, err := NewNDJSON("file", FileConfig{Path: path, Sync: &sync})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), b, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), b, nil); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&^0o640 != 0 {
		t.Errorf("file mode %v, want at most 0640", perm)
	}
	// A crash in the middle of a line.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"type":"tr`)
	f.Close()

	s, err = NewNDJSON("file", FileConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), b, []int{4, 5}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	got := readLines(t, path)
	want := []string{rows[0].raw, rows[1].raw, `{"type":"tr`, rows[4].raw, rows[5].raw}
	if !equalStrings(got, want) {
		t.Fatalf("lines:\n%q\nwant:\n%q", got, want)
	}
}

// TestNDJSONMultilineRaw: a pretty-printed event stays one line and means
// the same JSON.
func TestNDJSONMultilineRaw(t *testing.T) {
	raw := "{\r\n  \"type\": \"track\",\n  \"messageId\": \"m1\",\n  \"properties\": {\"s\": \"a\\nb\"}\n}"
	b := makeBatch(t, memory.NewGoAllocator(), row{msgID: "m1", raw: raw}, row{msgID: "m2", raw: `{"type":"page"}`})
	defer b.Release()
	var out bytes.Buffer
	s := NewStdout("stdout", &out)
	if err := s.Write(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines: %q", len(lines), out.String())
	}
	var got, want any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(raw), &want); err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(got, want) {
		t.Errorf("line 0 = %v, want %v", got, want)
	}
	if lines[1] != `{"type":"page"}` {
		t.Errorf("line 1 = %q", lines[1])
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestStdoutSelections(t *testing.T) {
	rows := testRows(12)
	b := makeBatch(t, memory.NewGoAllocator(), rows...)
	defer b.Release()
	for _, name := range sortedKeys(selections(len(rows))) {
		sel := selections(len(rows))[name]
		var out bytes.Buffer
		s := NewStdout("stdout", &out)
		if err := s.Write(context.Background(), b, sel); err != nil {
			t.Fatal(err)
		}
		want := strings.Join(wantLines(selected(rows, sel)), "\n")
		if want != "" {
			want += "\n"
		}
		if out.String() != want {
			t.Errorf("%s: got\n%s\nwant\n%s", name, out.String(), want)
		}
	}
}

func TestNDJSONDevNull(t *testing.T) {
	// Not a regular file: no fsync (it would fail), no torn-line check.
	s, err := NewNDJSON("null", FileConfig{Path: os.DevNull})
	if err != nil {
		t.Fatal(err)
	}
	b := makeBatch(t, memory.NewGoAllocator(), testRows(3)...)
	defer b.Release()
	if err := s.Write(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFileDeadLetter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.ndjson")
	s, err := NewFileDeadLetter(DeadLetterFileConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	dead := testDeadLetters()
	if err := s.WriteDead(context.Background(), dead[:2]); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteDead(context.Background(), dead[2:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != len(dead) {
		t.Fatalf("got %d lines, want %d", len(lines), len(dead))
	}
	for i, l := range lines {
		var got DeadLetterLine
		var generic map[string]any
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if err := json.Unmarshal([]byte(l), &generic); err != nil {
			t.Fatal(err)
		}
		d := dead[i]
		if got.Reason != string(d.Reason) || got.Detail != d.Detail || got.Source != (DeadLetterSource{d.Pos.Topic, d.Pos.Partition, d.Pos.Offset}) {
			t.Errorf("line %d: %+v, want %+v", i, got, d)
		}
		if !bytes.Equal(got.RawB64, d.Raw) {
			t.Errorf("line %d: raw_b64 = %q, want %q", i, got.RawB64, d.Raw)
		}
		if _, ok := generic["raw_b64"]; !ok {
			t.Errorf("line %d: no raw_b64: %s", i, l)
		}
		if !bytes.Equal(got.KeyB64, d.Key) {
			t.Errorf("line %d: key_b64 = %q, want %q", i, got.KeyB64, d.Key)
		}
		if _, ok := generic["key_b64"]; ok != (d.Key != nil) {
			t.Errorf("line %d: key_b64 present = %v for key %q", i, ok, d.Key)
		}
		wantTime := d.Time.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")
		if d.Time.IsZero() {
			if got.Time == "" {
				t.Errorf("line %d: zero time not stamped", i)
			}
		} else if got.Time != wantTime {
			t.Errorf("line %d: time %q, want %q", i, got.Time, wantTime)
		}
		validUTF8 := i != 1
		if validUTF8 {
			if got.Raw == nil || *got.Raw != string(d.Raw) {
				t.Errorf("line %d: raw = %v, want %q", i, got.Raw, d.Raw)
			}
		} else if got.Raw != nil {
			t.Errorf("line %d: raw present for invalid UTF-8: %q", i, *got.Raw)
		}
	}
}
