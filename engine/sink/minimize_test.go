package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/cdpstream/cdpstream/engine"
)

func TestMinimizer(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	raw := `{"type":"identify","messageId":"m1","userId":"u1","traits":{"email":"  Jane@Example.COM ","phone":"+1555","plan":"pro"},"context":{"ip":"203.0.113.9","device":{"id":"d1"}}}`
	for _, tc := range []struct {
		name string
		cfg  MinimizeConfig
		want string
	}{
		{"deny", MinimizeConfig{Deny: []string{"context.ip", "traits.phone"}},
			`{"type":"identify","messageId":"m1","userId":"u1","traits":{"email":"  Jane@Example.COM ","plan":"pro"},"context":{"device":{"id":"d1"}}}`},
		{"allow", MinimizeConfig{Allow: []string{"type", "messageId", "traits.plan", "context.device.id"}},
			`{"type":"identify","messageId":"m1","traits":{"plan":"pro"},"context":{"device":{"id":"d1"}}}`},
		{"hash email normalised", MinimizeConfig{Allow: []string{"type", "messageId", "traits.email"}, Hash: []string{"traits.email", "traits.missing"}},
			`{"type":"identify","messageId":"m1","traits":{"email":"` + sum("jane@example.com") + `"}}`},
	} {
		m, err := NewMinimizer(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Apply(nil, []byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: output %s is not JSON", tc.name, got)
		}
		_ = json.Unmarshal([]byte(tc.want), &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
	if _, err := NewMinimizer(MinimizeConfig{Deny: []string{"a..b"}}); err == nil || !strings.HasPrefix(err.Error(), "deny[0]") {
		t.Fatalf("bad path: %v", err)
	}
}

// TestMinimizedSink: an NDJSON sink with a minimize block writes the
// minimised events of the selected rows only, and the batch it was given
// is left as it was.
func TestMinimizedSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "min.ndjson")
	s, err := New(Config{Name: "min", File: &FileConfig{Path: path}, Minimize: &MinimizeConfig{Allow: []string{"type", "messageId"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows := testRows(4)
	b := makeBatch(t, memory.NewGoAllocator(), rows...)
	defer b.Release()
	if err := s.Write(context.Background(), b, []int{1, 3}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"track","messageId":"msg-0001"}` + "\n" + `{"type":"track","messageId":"msg-0003"}` + "\n"
	if string(data) != want {
		t.Fatalf("minimised sink wrote:\n%s\nwant:\n%s", data, want)
	}
	if got := string(b.Rec.Column(engine.ColRaw).(*array.Binary).Value(1)); got != rows[1].raw {
		t.Fatalf("the caller's batch was changed: %s", got)
	}
	if cfg := (Config{Name: "a", File: &FileConfig{Path: "/tmp/x", Format: FormatArrow}, Minimize: &MinimizeConfig{Deny: []string{"x"}}}); cfg.Validate() == nil {
		t.Fatal("minimize on an arrow file was accepted")
	}
}
