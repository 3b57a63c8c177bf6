package privacy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// openDB opens a test store like engine.OpenStore (WAL recycling off,
// so an obsolete WAL is deleted with its records), but without block
// compression: the tests' byte scans of the directory (seal_test.go) then
// see every value an SST holds, where Snappy may hide one behind a
// back-reference.
func openDB(t testing.TB, dir string) *pebble.DB {
	t.Helper()
	opts := &pebble.Options{MemTableSize: 4 << 20, Cleaner: noRecycle{}}
	opts.Levels = make([]pebble.LevelOptions, 7)
	for i := range opts.Levels {
		opts.Levels[i].Compression = pebble.NoCompression
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// noRecycle is engine.OpenStore's cleaner: DeleteCleaner, with
// ArchiveCleaner's marker (the cleaner needs the files' contents) so
// Pebble does not recycle WAL files.
type noRecycle struct {
	pebble.DeleteCleaner
	needsContents
}

type needsContents struct{ pebble.ArchiveCleaner }

func (noRecycle) String() string { return "delete-no-recycle" }

var testKey = []byte("0123456789abcdef-audit-key")

func filledTrail(t *testing.T, n int) *pebble.DB {
	t.Helper()
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	var mirrored []uint64
	a, err := NewAudit(db, testKey, WithMirror(func(e Entry) { mirrored = append(mirrored, e.Seq) }))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		if _, err := a.Append(Record{Time: t0.Add(time.Duration(i) * time.Second), Actor: "ops",
			Action: "request.completed", Target: fmt.Sprint("req-", i), Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if len(mirrored) != n || mirrored[n-1] != uint64(n) {
		t.Fatalf("mirror saw %v", mirrored)
	}
	if err := Verify(db); err != nil {
		t.Fatalf("intact chain: %v", err)
	}
	return db
}

func wantBroken(t *testing.T, db *pebble.DB, seq uint64) {
	t.Helper()
	err := Verify(db)
	var ve *VerifyError
	if !errors.Is(err, ErrAuditBroken) || !errors.As(err, &ve) {
		t.Fatalf("Verify = %v, want a broken chain", err)
	}
	if ve.Seq != seq {
		t.Fatalf("Verify reports seq %d (%v), want %d", ve.Seq, err, seq)
	}
}

func get(t *testing.T, db *pebble.DB, k []byte) []byte {
	t.Helper()
	v, c, err := db.Get(k)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return append([]byte(nil), v...)
}

func TestAuditVerifyFlippedByte(t *testing.T) {
	// Every byte of entry 3, one at a time: each change must be caught.
	db := filledTrail(t, 5)
	orig := get(t, db, auditKey(3))
	for i := range orig {
		v := append([]byte(nil), orig...)
		v[i] ^= 0x01
		if err := db.Set(auditKey(3), v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
		err := Verify(db)
		var ve *VerifyError
		if !errors.As(err, &ve) || (ve.Seq != 3 && ve.Seq != 4) {
			t.Fatalf("byte %d flipped: Verify = %v", i, err)
		}
	}
	if err := db.Set(auditKey(3), orig, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := Verify(db); err != nil {
		t.Fatalf("restored: %v", err)
	}
}

func TestAuditVerifyRemoved(t *testing.T) {
	db := filledTrail(t, 5)
	if err := db.Delete(auditKey(2), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	wantBroken(t, db, 2)

	db = filledTrail(t, 5) // the last one: caught by the head
	if err := db.Delete(auditKey(5), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	wantBroken(t, db, 5)

	db = filledTrail(t, 5) // the first one
	if err := db.Delete(auditKey(1), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	wantBroken(t, db, 1)
}

func TestAuditVerifySwapped(t *testing.T) {
	db := filledTrail(t, 5)
	v2, v4 := get(t, db, auditKey(2)), get(t, db, auditKey(4))
	b := db.NewBatch()
	_ = b.Set(auditKey(2), v4, nil)
	_ = b.Set(auditKey(4), v2, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	wantBroken(t, db, 2)
}

func TestAuditReopenContinuesChain(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	a, _ := NewAudit(db, testKey)
	for range 3 {
		if _, err := a.Append(Record{Action: "x", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	db = openDB(t, dir)
	defer db.Close()
	a, err := NewAudit(db, testKey)
	if err != nil {
		t.Fatal(err)
	}
	e, err := a.Append(Record{Action: "y", Target: "jane@example.com", Outcome: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 4 || e.Target == "jane@example.com" || e.Target != a.TargetHash("jane@example.com") {
		t.Fatalf("entry %+v", e)
	}
	if err := Verify(db); err != nil {
		t.Fatal(err)
	}
}

// TestAuditorFromMiddleware: the auth middleware writes API calls, refused
// ones included, into the trail.
func TestAuditorFromMiddleware(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	a, _ := NewAudit(db, testKey)
	auth, err := engine.NewAuth(engine.AuthConfig{Tokens: []engine.TokenConfig{
		{ID: "ops", Hash: engine.HashToken("secret"), Scopes: []string{engine.ScopePrivacyWrite}}}},
		engine.WithAuditor(a))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /p/{id}", auth.RequirePersonal(engine.ScopePrivacyWrite, http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			engine.SetAuditTarget(r.Context(), "profile:"+r.PathValue("id"))
			w.WriteHeader(204)
		})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, tok := range []string{"secret", "wrong"} {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", srv.URL+"/p/7", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	es, err := Entries(db, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Actor != "ops" || es[0].Outcome != "204" || es[0].Action != "GET /p/{id}" ||
		es[0].Target != a.TargetHash("profile:7") || es[1].Actor != "" || es[1].Outcome != "401" {
		t.Fatalf("entries %+v", es)
	}
	if err := Verify(db); err != nil {
		t.Fatal(err)
	}
}
