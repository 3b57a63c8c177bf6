package privacy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

const opendsrDir = "../../shared/testdata/opendsr"

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(opendsrDir, path))
	if err != nil {
		t.Skipf("OpenDSR reference pack not available: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// requireFields checks that body has every field the schema requires.
func requireFields(t *testing.T, schema string, body []byte) {
	t.Helper()
	s := readJSON(t, "schemas/"+schema)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: body is not JSON: %s", schema, body)
	}
	for _, f := range s["required"].([]any) {
		if _, ok := m[f.(string)]; !ok {
			t.Errorf("%s: answer lacks required %q: %s", schema, f, body)
		}
	}
}

// TestOpenDSRExamples runs the spec's examples through the API over
// loopback: valid requests accepted, each required field's omission
// refused with the spec's error body, answers carrying what the derived
// schemas require.
func TestOpenDSRExamples(t *testing.T) {
	e := newEnv(t, Config{})
	submit := func(f string, want int) {
		b, _ := os.ReadFile(filepath.Join(opendsrDir, "examples", f))
		code, _, body := e.do("POST", "/opendsr/requests", b)
		if code != want {
			t.Fatalf("%s: %d %s", f, code, body)
		}
		if code == 201 {
			requireFields(t, "request_created_response.schema.json", body)
		}
	}
	// The three examples name the same person: one at a time.
	submit("request_erasure.v2.json", 201)
	submit("request_access.v2.illustrative.json", 409)
	code, _, body := e.do("GET", "/opendsr/requests/a7551968-d5d6-44b2-9831-815ac9017798", nil)
	if code != 200 {
		t.Fatalf("status: %d %s", code, body)
	}
	requireFields(t, "status_response.schema.json", body)
	code, _, body = e.do("DELETE", "/opendsr/requests/a7551968-d5d6-44b2-9831-815ac9017798", nil)
	if code != 202 {
		t.Fatalf("cancel: %d %s", code, body)
	}
	requireFields(t, "cancellation_response.schema.json", body)
	_, _, body = e.do("GET", "/opendsr/discovery", nil)
	requireFields(t, "discovery_response.schema.json", body)

	submit("request_access.v2.illustrative.json", 201)
	if _, err := e.svc.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	submit("request_portability.v2.illustrative.json", 201)
	_, _, body = e.do("GET", "/opendsr/requests/0f8fad5b-d9cb-469f-a165-70867728950e", nil)
	var st Status
	_ = json.Unmarshal(body, &st)
	if st.Status != StatusCompleted || st.ResultsURL == "" {
		t.Fatalf("access status %s", body)
	}

	want := readJSON(t, "examples/error_response.v2.json")
	valid := readJSON(t, "examples/request_erasure.v2.json")
	for _, field := range []string{"regulation", "subject_request_id", "subject_request_type", "submitted_time", "subject_identities"} {
		m := map[string]any{}
		for k, v := range valid {
			if k != field {
				m[k] = v
			}
		}
		m["subject_request_id"] = "11111111-1111-4111-8111-111111111111"
		if field == "subject_request_id" {
			delete(m, field)
		}
		b, _ := json.Marshal(m)
		code, _, body := e.do("POST", "/opendsr/requests", b)
		if code != 400 {
			t.Fatalf("without %s: %d %s", field, code, body)
		}
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		msg := field + " field is required"
		exp := map[string]any{"error": map[string]any{"code": 400.0, "message": msg, "errors": []any{
			map[string]any{"domain": "Validation", "reason": "IllegalArgumentException", "message": msg + "."}}}}
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("without %s:\n got %s", field, body)
		}
		if field == "subject_request_id" && !reflect.DeepEqual(got, want) {
			t.Errorf("without subject_request_id: %s, want the spec's example %v", body, want)
		}
	}
}

// TestRunResumesAfterRestart uses the real Run loop: the process stops
// while an Eraser runs; a new Service over the reopened store completes
// the request.
func TestRunResumesAfterRestart(t *testing.T) {
	e := newEnv(t, Config{PollInterval: 10 * time.Millisecond})
	e.clock = time.Now()
	e.w.persons[9] = &person{pid: 9, ids: []Identity{{Type: "email", Value: "a@b.c", Format: FormatRaw}}}
	ctx, cancel := context.WithCancel(context.Background())
	e.w.crash["erase:consent"] = cancel
	done := make(chan error)
	go func() { done <- e.svc.Run(ctx) }()
	body := []byte(`{"regulation":"gdpr","subject_request_id":"99999999-9999-4999-8999-999999999999","subject_request_type":"erasure","submitted_time":"2024-01-01T00:00:00Z","subject_identities":[{"identity_type":"email","identity_value":"a@b.c","identity_format":"raw"}]}`)
	if code, _, b := e.do("POST", "/opendsr/requests", body); code != 201 {
		t.Fatalf("%d %s", code, b)
	}
	<-done
	if st, _ := e.svc.Get("99999999-9999-4999-8999-999999999999"); st.Status != StatusInProgress {
		t.Fatalf("after the crash: %s", st.Status)
	}
	e.restart()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- e.svc.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := e.svc.Get("99999999-9999-4999-8999-999999999999")
		if st.Status == StatusCompleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not completed after restart: %s", st.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got := e.w.erased["consent"]; len(got) != 1 || got[0] != 9 {
		t.Fatalf("consent erased %v", got)
	}
	if err := Verify(e.db); err != nil {
		t.Fatal(err)
	}
}
