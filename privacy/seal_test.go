package privacy

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/internal/disktest"
)

// findInDir returns the first file under dir that contains s, or "".
func findInDir(t *testing.T, dir string, s []byte) string {
	t.Helper()
	found, err := disktest.Find(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	if f := found[string(s)]; len(f) > 0 {
		return f[0]
	}
	return ""
}

func (e *env) raw(key []byte) []byte {
	e.t.Helper()
	v, closer, err := e.db.Get(key)
	if err != nil {
		e.t.Fatalf("get %x: %v", key, err)
	}
	defer closer.Close()
	return bytes.Clone(v)
}

// freshKeyring is a keyring on e's store that shares nothing in memory
// with the service's: what it opens, the store lets anyone with the
// master key open.
func (e *env) freshKeyring() *engine.Keyring {
	e.t.Helper()
	kr, err := engine.NewKeyring(engine.EncryptionConfig{MasterKey: testMasterKey}, e.db)
	if err != nil {
		e.t.Fatal(err)
	}
	return kr
}

// openCopy opens the sealed part of a raw request record with kr.
func openCopy(kr *engine.Keyring, raw []byte) (*record, error) {
	rec, err := decodeRecord(raw)
	if err != nil {
		return nil, err
	}
	return rec, (&Service{kr: kr}).openRecord(rec)
}

// openExportCopy opens the body of a raw export value (0x34) with kr.
func openExportCopy(kr *engine.Keyring, token string, raw []byte) ([]byte, error) {
	tok, _ := hex.DecodeString(token)
	if len(raw) <= exportHeadLen || raw[8]&formatSealed == 0 {
		return nil, fmt.Errorf("not a sealed export: %d bytes, format %x", len(raw), raw[8])
	}
	return kr.OpenID(nil, exportKeyID(tok), raw[exportHeadLen:], exportAAD(raw[:exportHeadLen]))
}

func (e *env) submitOK(body []byte) {
	e.t.Helper()
	if code, _, b := e.do("POST", "/opendsr/requests", body); code != http.StatusCreated {
		e.t.Fatalf("submit: %d %s", code, b)
	}
}

func (e *env) step() {
	e.t.Helper()
	if _, err := e.svc.Step(e.ctx); err != nil {
		e.t.Fatal(err)
	}
}

func requestBody(id, typ string, rectifyName string, ids ...Identity) []byte {
	m := map[string]any{"regulation": "gdpr", "subject_request_id": id, "subject_request_type": typ,
		"submitted_time": "2024-01-01T00:00:00Z", "subject_identities": ids}
	if rectifyName != "" {
		m["extensions"] = map[string]any{"cdpstream": map[string]any{"rectification": map[string]any{"traits": map[string]any{"name": rectifyName}}}}
	}
	b, _ := json.Marshal(m)
	return b
}

func raw(typ, v string) Identity { return Identity{Type: typ, Value: v, Format: FormatRaw} }

// TestSealedRequest: while a request is open its record holds its
// identities and rectification sealed under the request's key: the raw
// record and every file of the store (the WAL holds each batch as
// written) show none of them, and a copy of the record opens with the
// master key. Once the request finished (completed or cancelled) the key
// is destroyed: the copies no longer open, in any keyring, and after the
// compaction pass the wrapped key is in no file.
func TestSealedRequest(t *testing.T) {
	e := newEnv(t, Config{WaitingPeriod: time.Hour})
	e.w.persons[1] = &person{pid: 1, ids: []Identity{raw("email", "jane@example.com")}}
	e.w.persons[2] = &person{pid: 2, ids: []Identity{raw("email", "rosa@example.com")}}
	a, b, c := uuidOf("a"), uuidOf("b"), uuidOf("c")
	e.submitOK(requestBody(a, TypeErasure, "", raw("email", "jane@example.com"), raw("controller_customer_id", "cust-9f3e")))
	e.submitOK(requestBody(b, TypeRectification, "Rosa-7c1d", raw("email", "rosa@example.com")))
	e.submitOK(requestBody(c, TypeErasure, "", raw("email", "max@example.com")))
	values := []string{"jane@example.com", "cust-9f3e", "rosa@example.com", "Rosa-7c1d", "max@example.com"}

	// Control: the record's id is stored in plain, and the scan sees it.
	if findInDir(t, e.dir, []byte(a)) == "" {
		t.Fatal("control: request a's id is in no file: the scan cannot see plain bytes")
	}
	copies := map[string][]byte{}
	for _, id := range []string{a, b, c} {
		copies[id] = e.raw(requestKey(id))
		if copies[id][0] != recordSealed {
			t.Fatalf("request %s stored as version %d", id[:8], copies[id][0])
		}
	}
	for _, v := range values {
		for id, c := range copies {
			if bytes.Contains(c, []byte(v)) {
				t.Errorf("the record of %s holds %q in plain", id[:8], v)
			}
		}
		if f := findInDir(t, e.dir, []byte(v)); f != "" {
			t.Errorf("%q in plain in %s while the requests are open", v, f)
		}
	}
	fresh := e.freshKeyring()
	rec, err := openCopy(fresh, copies[a])
	if err != nil || len(rec.Req.Identities) != 2 || rec.Req.Identities[1].Value != "cust-9f3e" {
		t.Fatalf("copy of a while open: %+v, %v", rec, err)
	}
	rec, err = openCopy(fresh, copies[b])
	if err != nil || rec.Req.Rectification == nil || rec.Req.Rectification.Traits["name"] != "Rosa-7c1d" {
		t.Fatalf("copy of b while open: %+v, %v", rec, err)
	}
	wrapped := e.raw(engine.KeyringIDKey(nil, requestKeyID(a)))
	if findInDir(t, e.dir, wrapped) == "" {
		t.Fatal("control: request a's wrapped key is in no file")
	}

	// b runs now (no waiting period for rectification); c is cancelled;
	// a runs after the waiting period.
	e.step()
	if code, _, body := e.do("DELETE", "/opendsr/requests/"+c, nil); code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", code, body)
	}
	e.clock = e.clock.Add(time.Hour)
	e.step()
	if got := strings.Join(e.w.rectified, ";"); !strings.Contains(got, "Rosa-7c1d") {
		t.Fatalf("the rectification did not reach the Rectifier: %q", got)
	}
	if got := e.w.erased["identity"]; len(got) != 1 || got[0] != 1 {
		t.Fatalf("erasure a reached %v, want [1]", got)
	}
	for id, status := range map[string]string{a: StatusCompleted, b: StatusCompleted, c: StatusCancelled} {
		rec, err := decodeRecord(e.raw(requestKey(id)))
		if err != nil || rec.Status != status || rec.Sealed != nil || len(rec.Req.Identities) != 0 {
			t.Fatalf("record of %s after it finished: %+v, %v", id[:8], rec, err)
		}
		for name, kr := range map[string]*engine.Keyring{"service's keyring": e.kr, "fresh keyring": e.freshKeyring()} {
			if _, err := openCopy(kr, copies[id]); !errors.Is(err, engine.ErrKeyDestroyed) {
				t.Errorf("%s: the copy of %s taken while open, after it was %s: %v, want engine.ErrKeyDestroyed", name, id[:8], status, err)
			}
		}
	}
	// Step paid the compaction debt (the service's own compactor).
	e.db.TestOnlyWaitForCleaning()
	if f := findInDir(t, e.dir, wrapped); f != "" {
		t.Errorf("request a's destroyed wrapped key is still in %s", f)
	}
}

// TestSealedExport: an export body is sealed under the export's key (the
// raw value and the store's files hold none of the person's values; the
// results url serves it opened); expiry, and the erasure of its person,
// destroy the key: a copy of the body taken before no longer opens, and
// after the compaction pass its wrapped key is in no file.
func TestSealedExport(t *testing.T) {
	e := newEnv(t, Config{})
	e.w.persons[4] = &person{pid: 4, ids: []Identity{raw("email", "jane@example.com"), raw("anonymous_id", "anon-7f2c")}}
	jane := raw("email", "jane@example.com")
	exportOf := func(id string) (token string, v []byte) {
		t.Helper()
		rec, err := decodeRecord(e.raw(requestKey(id)))
		if err != nil || rec.ResultsToken == "" {
			t.Fatalf("request %s: %+v, %v", id[:8], rec, err)
		}
		tok, _ := hex.DecodeString(rec.ResultsToken)
		return rec.ResultsToken, e.raw(append([]byte{prefixExport}, tok...))
	}
	results := func(id string) (int, []byte) {
		t.Helper()
		st, err := e.svc.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(st.ResultsURL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.Bytes()
	}
	type export struct {
		id, token string
		copy      []byte
		wrapped   []byte
	}
	run := func(id, typ string) export {
		t.Helper()
		e.submitOK(requestBody(id, typ, "", jane))
		e.step()
		tok, v := exportOf(id)
		for _, s := range []string{"anon-7f2c", "jane@example.com"} {
			if bytes.Contains(v, []byte(s)) {
				t.Fatalf("export %s holds %q in plain", id[:8], s)
			}
			if f := findInDir(t, e.dir, []byte(s)); f != "" {
				t.Fatalf("%q in plain in %s after export %s", s, f, id[:8])
			}
		}
		body, err := openExportCopy(e.freshKeyring(), tok, v)
		if err != nil || !bytes.Contains(body, []byte("anon-7f2c")) {
			t.Fatalf("copy of export %s: %s, %v", id[:8], body, err)
		}
		if code, got := results(id); code != http.StatusOK || !bytes.Equal(got, body) {
			t.Fatalf("results of %s: %d %s", id[:8], code, got)
		}
		tb, _ := hex.DecodeString(tok)
		return export{id, tok, v, e.raw(engine.KeyringIDKey(nil, exportKeyID(tb)))}
	}
	gone := func(x export, after string) {
		t.Helper()
		if code, _ := results(x.id); code != http.StatusGone {
			t.Errorf("results of %s after %s: %d, want 410", x.id[:8], after, code)
		}
		if v := e.raw(append([]byte{prefixExport}, mustHex(x.token)...)); len(v) != exportHeadLen {
			t.Errorf("export %s after %s: %d bytes, want the %d-byte tombstone", x.id[:8], after, len(v), exportHeadLen)
		}
		for name, kr := range map[string]*engine.Keyring{"service's keyring": e.kr, "fresh keyring": e.freshKeyring()} {
			if _, err := openExportCopy(kr, x.token, x.copy); !errors.Is(err, engine.ErrKeyDestroyed) {
				t.Errorf("%s: the copy of export %s after %s: %v, want engine.ErrKeyDestroyed", name, x.id[:8], after, err)
			}
		}
		e.db.TestOnlyWaitForCleaning()
		if f := findInDir(t, e.dir, x.wrapped); f != "" {
			t.Errorf("export %s's destroyed wrapped key is still in %s after %s", x.id[:8], f, after)
		}
	}

	acc := run(uuidOf("a"), TypeAccess)
	port := run(uuidOf("b"), TypePortability)
	// Expiry: both, a second after ResultsTTL.
	e.clock = e.clock.Add(7*24*time.Hour + time.Second)
	e.step()
	gone(acc, "expiry")
	gone(port, "expiry")

	// Erasure of the person: her earlier export goes at once.
	later := run(uuidOf("c"), TypeAccess)
	e.submitOK(requestBody(uuidOf("d"), TypeErasure, "", jane))
	e.step()
	gone(later, "erasure")
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestPlainStoreUpgrade: a store written before sealing (request records
// version 1 with identities and the rectification in plain, unkeyed
// digests, plain export bodies) is sealed in place by New: records become
// version 2, the open request still runs to completion for its person,
// the same request sent again still gets the first answer, the old export
// is served unchanged until it expires, and after the compaction pass no
// file holds the plain values.
func TestPlainStoreUpgrade(t *testing.T) {
	e := newEnv(t, Config{})
	e.w.persons[3] = &person{pid: 3, ids: []Identity{raw("email", "old@example.com"), raw("controller_customer_id", "cust-old-55")}}
	t0 := e.clock
	// What the previous version wrote: a finished access request with its
	// export, and an open rectification, for the same person.
	legacy := func(rec *record) {
		t.Helper()
		v, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		w := e.db.NewBatch()
		defer w.Close()
		_ = w.Set(requestKey(rec.Req.ID), append([]byte{recordPlain}, v...), nil)
		if !rec.finished() {
			_ = w.Set(queueKey(rec.Due, rec.Req.ID), nil, nil)
			for _, h := range rec.IdentityHashes {
				_ = w.Set(append([]byte{prefixActive}, mustHex(h)...), uuidBytes(rec.Req.ID), nil)
			}
		}
		if err := w.Commit(pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	bodyA := requestBody(uuidOf("a"), TypeAccess, "", raw("email", "old@example.com"))
	reqA, err := ParseRequest(bodyA, DefaultIdentityTypes)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.Repeat("5a", 16)
	expires := t0.Add(24 * time.Hour)
	finished := &record{Req: Request{ID: reqA.ID, Type: reqA.Type, Regulation: reqA.Regulation, Submitted: reqA.Submitted},
		Controller: "default", Digest: reqA.digest(), Status: StatusCompleted, Received: t0, NotBefore: t0, Expected: t0,
		Due: t0, Finished: t0, IdentityHashes: []string{hex.EncodeToString(e.svc.identityHash(reqA.Identities[0]))},
		Profiles: []uint32{3}, BaseURL: e.srv.URL, ResultsToken: token, ResultsExpires: expires, ResultsCount: 1}
	legacy(finished)
	oldBody := []byte(`{"data":{"identifiers":[{"value":"old@example.com"},{"value":"cust-old-55"}]}}` + "\n")
	v := binary.BigEndian.AppendUint64(nil, uint64(expires.UnixNano()))
	v = append(append(append(v, formatJSON), uuidBytes(reqA.ID)...), oldBody...)
	if err := e.db.Set(append([]byte{prefixExport}, mustHex(token)...), v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	ek := binary.BigEndian.AppendUint64([]byte{prefixExpiry}, uint64(expires.UnixNano()))
	if err := e.db.Set(append(ek, mustHex(token)...), nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	reqB, err := ParseRequest(requestBody(uuidOf("b"), TypeRectification, "Oldname-31b", raw("controller_customer_id", "cust-old-55")), DefaultIdentityTypes)
	if err != nil {
		t.Fatal(err)
	}
	open := &record{Req: *reqB, Controller: "default", Digest: reqB.digest(), Status: StatusPending, Received: t0,
		NotBefore: t0.Add(time.Hour), Expected: t0.Add(2 * time.Hour), Due: t0.Add(time.Hour), IdentityHashes: []string{hex.EncodeToString(e.svc.identityHash(reqB.Identities[0]))},
		BaseURL: e.srv.URL}
	legacy(open)
	if err := e.db.Flush(); err != nil { // the plain versions in an SST, as a long-running store has them
		t.Fatal(err)
	}
	values := []string{"old@example.com", "cust-old-55", "Oldname-31b"}
	for _, s := range values {
		if findInDir(t, e.dir, []byte(s)) == "" {
			t.Fatalf("control: %q, written in plain, is in no file", s)
		}
	}

	e.restart() // New seals the store
	for _, id := range []string{reqA.ID, reqB.ID} {
		v := e.raw(requestKey(id))
		if v[0] != recordSealed {
			t.Fatalf("request %s still version %d after New", id[:8], v[0])
		}
		for _, s := range values {
			if bytes.Contains(v, []byte(s)) {
				t.Fatalf("request %s still holds %q in plain after New", id[:8], s)
			}
		}
	}
	ev := e.raw(append([]byte{prefixExport}, mustHex(token)...))
	if ev[8] != formatJSON|formatSealed || bytes.Contains(ev, []byte("cust-old-55")) {
		t.Fatalf("the old export after New: format %x, %q", ev[8], ev)
	}
	// The old request sent again: the first answer (its digest was keyed
	// in place), not DuplicateRequestId.
	if code, _, b := e.do("POST", "/opendsr/requests", bodyA); code != http.StatusCreated {
		t.Fatalf("the finished request sent again: %d %s", code, b)
	}
	st, err := e.svc.Get(reqA.ID)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(st.ResultsURL)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	_, _ = got.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got.Bytes(), oldBody) {
		t.Fatalf("the old export: %d %q", resp.StatusCode, got.Bytes())
	}
	// The first Step runs nothing (the rectification is due in an hour)
	// but pays the debt New staged: the plain versions leave the files.
	e.step()
	e.db.TestOnlyWaitForCleaning()
	for _, s := range values {
		if f := findInDir(t, e.dir, []byte(s)); f != "" {
			t.Errorf("%q, written in plain by the previous version, still in %s", s, f)
		}
	}
	e.clock = e.clock.Add(time.Hour)
	e.step()
	if w := strings.Join(e.w.rectified, ";"); w != `profiles [3] {"traits":{"name":"Oldname-31b"}}` {
		t.Fatalf("the upgraded rectification: %q", w)
	}
	e.clock = expires
	e.step()
	if code, _, _ := e.do("GET", "/opendsr/results/"+token, nil); code != http.StatusGone {
		t.Fatalf("the old export after its expiry: %d, want 410", code)
	}
}

// TestNewNeedsKeyring: without a keyring New refuses, rather than store
// identities and exports in plain.
func TestNewNeedsKeyring(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	a, err := NewAudit(db, testKey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{}, db, a, newWorld().work())
	if err == nil || !strings.Contains(err.Error(), "WithKeyring") {
		t.Fatalf("New without a keyring: %v, want a refusal naming WithKeyring", err)
	}
}

// TestDestroyedKeysAreDebt: the batch that destroys a key stages its span
// (and an expired export's) as compaction debt, so the wrapped key leaves
// the files at the next pass (the tests above see the pass's result, but
// in a store this small any pass compacts everything).
func TestDestroyedKeysAreDebt(t *testing.T) {
	e := newEnv(t, Config{WaitingPeriod: time.Hour})
	e.w.persons[4] = &person{pid: 4, ids: []Identity{raw("email", "jane@example.com")}}
	debt := func() map[string]bool {
		t.Helper()
		out := map[string]bool{}
		err := e.svc.scan([]byte{engine.PrefixCompact}, []byte{engine.PrefixCompact + 1}, func(_, v []byte) error {
			n, w := binary.Uvarint(v)
			lo, hi := v[w:w+int(n)], v[w+int(n):]
			if !bytes.Equal(hi, append(bytes.Clone(lo), 0)) {
				return fmt.Errorf("span %x..%x is not one key", lo, hi)
			}
			out[string(lo)] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	e.submitOK(requestBody(uuidOf("a"), TypeAccess, "", raw("email", "jane@example.com")))
	e.step()
	rec, err := decodeRecord(e.raw(requestKey(uuidOf("a"))))
	if err != nil {
		t.Fatal(err)
	}
	tok := mustHex(rec.ResultsToken)
	if err := e.svc.expireExport(rec.ResultsToken); err != nil {
		t.Fatal(err)
	}
	e.submitOK(requestBody(uuidOf("b"), TypeErasure, "", raw("email", "jane@example.com")))
	if code, _, body := e.do("DELETE", "/opendsr/requests/"+uuidOf("b"), nil); code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", code, body)
	}
	got := debt()
	for name, k := range map[string][]byte{
		"the export's wrapped key":        engine.KeyringIDKey(nil, exportKeyID(tok)),
		"the export":                      append([]byte{prefixExport}, tok...),
		"cancelled request's wrapped key": engine.KeyringIDKey(nil, requestKeyID(uuidOf("b"))),
	} {
		if !got[string(k)] {
			t.Errorf("%s (%x) is not compaction debt (%d spans)", name, k, len(got))
		}
	}
	e.step()
	if n := len(debt()); n != 0 {
		t.Fatalf("%d spans of debt left after Step", n)
	}
}

// TestExportRetryReusesToken: an access step interrupted after its export
// committed but before the request completed is retried; the retry must
// overwrite that export (same token, one export in the store), not leave
// it behind under a live key where the person's erasure cannot find it.
func TestExportRetryReusesToken(t *testing.T) {
	e := newEnv(t, Config{})
	e.w.persons[4] = &person{pid: 4, ids: []Identity{raw("email", "jane@example.com")}}
	id := uuidOf("e")
	e.submitOK(requestBody(id, TypeAccess, "", raw("email", "jane@example.com")))
	e.w.crash["export"] = e.stop
	if _, err := e.svc.Step(e.ctx); err == nil {
		t.Fatal("the interrupted step reported no error")
	}
	if st, err := e.svc.Get(id); err != nil || st.Status != StatusInProgress {
		t.Fatalf("after the interruption: %+v, %v; want in_progress", st, err)
	}
	e.restart()
	e.step()
	if st, err := e.svc.Get(id); err != nil || st.Status != StatusCompleted {
		t.Fatalf("after the retry: %+v, %v; want completed", st, err)
	}
	n := 0
	if err := e.svc.scan([]byte{prefixExport}, []byte{prefixExport + 1}, func(_, _ []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d exports in the store after one retried access request, want 1", n)
	}
}
