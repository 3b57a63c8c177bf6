package privacy

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// fakes of the Work interfaces: a tiny in-memory "graph" of persons.

type person struct {
	pid  uint32
	ids  []Identity // raw
	seen time.Time  // last seen; zero: the test's start
}

type world struct {
	mu         sync.Mutex
	persons    map[uint32]*person
	suppressed map[uint32]bool
	erased     map[string][]uint32 // eraser name → pids erased
	notified   []string
	rectified  []string
	merged     map[uint32]uint32 // merged pid → survivor
	fail       map[string]int    // step → remaining failures
	crash      map[string]func()
	hooks      map[string]func() // step → runs once as the step starts (under mu)
}

func newWorld() *world {
	return &world{persons: map[uint32]*person{}, suppressed: map[uint32]bool{}, erased: map[string][]uint32{},
		merged: map[uint32]uint32{}, fail: map[string]int{}, crash: map[string]func(){}, hooks: map[string]func(){}}
}

func (w *world) check(ctx context.Context, step string) error {
	if fn := w.hooks[step]; fn != nil {
		delete(w.hooks, step)
		fn()
	}
	if fn := w.crash[step]; fn != nil {
		delete(w.crash, step)
		fn()
		return ctx.Err()
	}
	if w.fail[step] > 0 {
		w.fail[step]--
		return fmt.Errorf("%s: injected failure", step)
	}
	return nil
}

func (w *world) Resolve(ctx context.Context, ids []Identity) ([]uint32, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.check(ctx, "resolve"); err != nil {
		return nil, err
	}
	var out []uint32
	for _, p := range w.persons {
		for _, have := range p.ids {
			for _, q := range ids {
				if have.Type == q.Type && have.normalizedSHA256() == q.normalizedSHA256() && !slices.Contains(out, p.pid) {
					out = append(out, p.pid)
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

type fakeEraser struct {
	w    *world
	name string
}

func (e fakeEraser) Name() string { return e.name }
func (e fakeEraser) Erase(ctx context.Context, s Subject) error {
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	if err := e.w.check(ctx, "erase:"+e.name); err != nil {
		return err
	}
	e.w.erased[e.name] = append(e.w.erased[e.name], s.Profiles...)
	if e.name == "identity" {
		for _, p := range s.Profiles {
			delete(e.w.persons, p)
		}
	}
	return nil
}

func (w *world) Suppress(ctx context.Context, s Subject) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range s.Profiles {
		w.suppressed[p] = true
	}
	return nil
}

func (w *world) Unsuppress(ctx context.Context, s Subject) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range s.Profiles {
		delete(w.suppressed, p)
	}
	return nil
}

func (w *world) Inactive(ctx context.Context, before time.Time, fn func(uint32) error) error {
	w.mu.Lock()
	var pids []uint32
	for _, p := range w.persons {
		if p.lastSeen().Before(before) && w.merged[p.pid] == 0 {
			pids = append(pids, p.pid)
		}
	}
	w.mu.Unlock()
	slices.Sort(pids)
	for _, p := range pids {
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}

// lastSeen is p's last seen time (the test's start when unset).
func (p *person) lastSeen() time.Time {
	if p.seen.IsZero() {
		return time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return p.seen
}

// Keep implements InactiveChecker.
func (w *world) Keep(ctx context.Context, before time.Time, pids []uint32) ([]uint32, int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.check(ctx, "recheck"); err != nil {
		return nil, 0, err
	}
	var keep []uint32
	spared := 0
	for _, pid := range pids {
		canon := pid
		for w.merged[canon] != 0 {
			canon = w.merged[canon]
		}
		switch p := w.persons[canon]; {
		case p == nil:
			keep = append(keep, pid) // gone: erasing again is a no-op
		case !p.lastSeen().Before(before):
			spared++
		default:
			keep = append(keep, canon)
		}
	}
	slices.Sort(keep)
	return slices.Compact(keep), spared, nil
}

// Hold and Release implement Holder; they land in the notices' log, so
// the goldens show their order around the notices.
func (w *world) Hold(id string, pids []uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.notified = append(w.notified, fmt.Sprintf("hold %s profiles %v", id[:8], pids))
}

// WaitCommitted implements Barrier: the pipeline has nothing in flight.
func (w *world) WaitCommitted(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.check(ctx, "drain"); err != nil {
		return err
	}
	w.notified = append(w.notified, "drained")
	return nil
}

func (w *world) Release(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.notified = append(w.notified, "release "+id[:8])
}

func (w *world) NotifyDeletion(ctx context.Context, id string, s Subject) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.check(ctx, "notify"); err != nil {
		return err
	}
	w.notified = append(w.notified, fmt.Sprintf("deletion notice %s profiles %v", id[:8], s.Profiles))
	return nil
}

func (w *world) Rectify(ctx context.Context, s Subject, fix Rectification) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	b, _ := json.Marshal(fix)
	w.rectified = append(w.rectified, fmt.Sprintf("profiles %v %s", s.Profiles, b))
	return nil
}

type traitsExporter struct{ w *world }

func (traitsExporter) Name() string { return "identifiers" }
func (e traitsExporter) Export(ctx context.Context, s Subject) (any, error) {
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	// crash["export"] runs once and the export goes on: the step's context
	// is cancelled after its work is done, as by a shutdown right then.
	if fn := e.w.crash["export"]; fn != nil {
		delete(e.w.crash, "export")
		fn()
	}
	type row struct {
		Profile uint32 `json:"profile_id"`
		Type    string `json:"type"`
		Value   string `json:"value"`
	}
	out := []row{}
	for _, p := range s.Profiles {
		if per := e.w.persons[p]; per != nil {
			for _, id := range per.ids {
				out = append(out, row{p, id.Type, id.Value})
			}
		}
	}
	return out, nil
}

type consentExporter struct{}

func (consentExporter) Name() string { return "consent" }
func (consentExporter) Export(ctx context.Context, s Subject) (any, error) {
	return map[string]any{"analytics": map[string]any{"status": "granted", "time": "2023-12-01T00:00:00Z", "source": "segment"}}, nil
}

func (w *world) work() Work {
	return Work{Subjects: w, Erasers: []Eraser{fakeEraser{w, "identity"}, fakeEraser{w, "consent"}, fakeEraser{w, "audiences"}},
		Suppressor: w, Exporters: []Exporter{traitsExporter{w}, consentExporter{}}, Notifiers: []DeletionNotifier{w}, Holder: w, Barrier: w, Rectifier: w, Inactive: w}
}

// recorder is a controller's callback endpoint over loopback.
type recorder struct {
	mu  sync.Mutex
	got []recorded
	srv *httptest.Server
}

type recorded struct {
	body []byte
	sig  string
	dom  string
}

func newRecorder(t testing.TB) *recorder {
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, recorded{b, req.Header.Get("X-OpenDSR-Signature"), req.Header.Get("X-OpenDSR-Processor-Domain")})
		r.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) take() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

// env is one processor over a real store and real HTTP.
type env struct {
	t     testing.TB
	dir   string
	cfg   Config
	clock time.Time
	db    *pebble.DB
	kr    *engine.Keyring
	audit *Audit
	svc   *Service
	w     *world
	srv   *httptest.Server
	cb    *recorder
	ctx   context.Context
	stop  context.CancelFunc
}

func newEnv(t testing.TB, cfg Config) *env {
	e := &env{t: t, dir: t.TempDir(), cfg: cfg, clock: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), w: newWorld()}
	e.cb = newRecorder(t)
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { e.svc.Handler().ServeHTTP(w, r) }))
	t.Cleanup(e.srv.Close)
	e.open()
	t.Cleanup(func() { e.db.Close() })
	return e
}

func (e *env) now() time.Time { return e.clock }

func (e *env) open() {
	e.db = openDB(e.t, e.dir)
	a, err := NewAudit(e.db, testKey, WithAuditClock(e.now))
	if err != nil {
		e.t.Fatal(err)
	}
	e.audit = a
	if e.kr, err = engine.NewKeyring(engine.EncryptionConfig{MasterKey: testMasterKey}, e.db); err != nil {
		e.t.Fatal(err)
	}
	svc, err := New(e.cfg, e.db, a, e.w.work(), WithClock(e.now), WithKeyring(e.kr))
	if err != nil {
		e.t.Fatal(err)
	}
	e.svc = svc
	e.ctx, e.stop = context.WithCancel(context.Background())
}

func (e *env) restart() {
	e.stop()
	if err := e.db.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) do(method, path string, body []byte) (int, http.Header, []byte) {
	req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// certificate fetches the signing certificate the way a controller does:
// discovery, then its processor_certificate url.
func (e *env) certificate() *x509.Certificate {
	_, _, b := e.do("GET", "/opendsr/discovery", nil)
	var d Discovery
	if err := json.Unmarshal(b, &d); err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.Get(d.Certificate)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	pemBytes, _ := io.ReadAll(resp.Body)
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		e.t.Fatalf("no PEM at %s", d.Certificate)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// testMasterKey is the tests' keyring master key (64 hex digits).
const testMasterKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func uuidOf(alias string) string {
	r := strings.Repeat(alias, 32)[:32]
	return r[:8] + "-" + r[8:12] + "-4" + r[13:16] + "-8" + r[17:20] + "-" + r[20:]
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
