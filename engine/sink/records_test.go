package sink

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/cdpstream/cdpstream/engine"
)

func TestMergeRecordsOnlySink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "merges.ndjson")
	f := false
	s, err := New(Config{Name: "merges", Events: &f, Records: []string{RecordMerge}, File: &FileConfig{Path: path}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms, ok := s.(engine.MergeSink)
	if !ok {
		t.Fatal("a sink configured with records: [merge] is not an engine.MergeSink")
	}
	ctx := context.Background()
	// Events are not written to a records-only sink.
	b := makeBatch(t, memory.NewGoAllocator(), testRows(3)...)
	defer b.Release()
	if err := s.Write(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	if err := ms.WriteMerges(ctx, []engine.Merge{{Survivor: 3, Merged: []uint32{8, 11}, Time: at, MessageID: "m-1", Rule: "link"}}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 1 {
		t.Fatalf("file holds %d lines, want the merge record only:\n%s", len(lines), data)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["type"] != "merge" || m["survivor"] != 3.0 || len(m["merged"].([]any)) != 2 || m["message_id"] != "m-1" || m["time"] != "2026-05-01T12:00:00Z" {
		t.Fatalf("merge record = %s", lines[0])
	}
}

func TestRecordsConfigErrors(t *testing.T) {
	f := false
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Name: "a", Records: []string{"merges"}, Stdout: &StdoutConfig{}}, "records[0]: unknown record type"},
		{Config{Name: "a", Events: &f, Stdout: &StdoutConfig{}}, "events: false"},
		{Config{Name: "a", Records: []string{"merge"}, File: &FileConfig{Path: "/tmp/x", Format: FormatArrow}}, "records[0]: an arrow file"},
	} {
		tc.cfg.Defaults()
		if err := tc.cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestAudienceRecordSubject: an entry names its profile as the subject
// (withheld from sinks once the profile is erased); an exit names none,
// so it is always delivered.
func TestAudienceRecordSubject(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := AudienceRecord("vip", 1, 7, true, at, "event")
	out := AudienceRecord("vip", 1, 7, false, at, "erase")
	if in.Subject != 7 || out.Subject != 0 || string(in.Key) != "7" || string(out.Key) != "7" {
		t.Fatalf("entry subject %d key %q, exit subject %d key %q; want 7 \"7\", 0 \"7\"", in.Subject, in.Key, out.Subject, out.Key)
	}
	if d := DeletionRecord("r", []uint32{7}, nil, at); d.Subject != 0 {
		t.Fatalf("deletion notice subject %d, want 0", d.Subject)
	}
}
