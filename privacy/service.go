package privacy

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
)

// Key families of requests (see doc.go).
const (
	prefixRequest  byte = 0x31 // | uuid (16) → 2 | JSON record (1: plain, before sealing)
	prefixActive   byte = 0x33 // | identity hash (16) → uuid: identities of unfinished requests
	prefixExport   byte = 0x34 // | token (16) → expires (8 BE ns) | format | uuid (16) | body
	prefixQueue    byte = 0x36 // | due (8 BE ns) | uuid (16) → empty: pending and in_progress requests
	prefixExpiry   byte = 0x37 // | expires (8 BE ns) | token (16) → empty
	prefixCallback byte = 0x38 // | seq (8 BE) → JSON outbox entry
)

// Errors of the request API.
var (
	ErrNotFound  = errors.New("privacy: no such request")
	ErrConflict  = errors.New("privacy: a request for the same subject is not finished")
	ErrDuplicate = errors.New("privacy: subject_request_id already used by a different request")
	ErrNotCancel = errors.New("privacy: only a pending request can be cancelled")
)

// record is the stored state of one request. Identity values and the
// rectification are kept only until the request finishes, sealed under
// the request's key (Sealed; Req.Identities and Req.Rectification are
// never stored in plain); after that the record holds keyed hashes of the
// identities and the profile ids, and the key is destroyed.
type record struct {
	Req            Request   `json:"request"`
	Controller     string    `json:"controller"`
	Actor          string    `json:"actor"`
	Digest         string    `json:"digest"`
	Status         string    `json:"status"`
	Received       time.Time `json:"received"`
	NotBefore      time.Time `json:"not_before"`
	Expected       time.Time `json:"expected"`
	Due            time.Time `json:"due"`
	Finished       time.Time `json:"finished,omitzero"`
	IdentityHashes []string  `json:"identity_hashes"`
	// Origin is "" for requests submitted over the API and
	// OriginRetention for retention's own erasures.
	Origin   string   `json:"origin,omitempty"`
	Profiles []uint32 `json:"profiles,omitempty"`
	// Spared counts the profiles a retention request left alone: seen
	// again before it erased them (InactiveChecker).
	Spared         int       `json:"spared,omitempty"`
	Attempts       int       `json:"attempts,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	BaseURL        string    `json:"base_url"`
	ResultsToken   string    `json:"results_token,omitempty"`
	ResultsExpires time.Time `json:"results_expires,omitzero"`
	ResultsCount   int       `json:"results_count,omitempty"`
	// Sealed is Req.Identities and Req.Rectification (sealedPart), sealed
	// under the request's key; nil once finished.
	Sealed []byte `json:"sealed,omitempty"`

	// open: Req.Identities and Req.Rectification hold the request's
	// values (it was submitted, opened, or read from a plain record), so a
	// put seals them; otherwise a put keeps Sealed as it is.
	open bool
	// again: this run of the request is not its first (it was in
	// progress when picked up: resumed after a restart, or retried).
	again bool
}

func (r *record) finished() bool { return r.Status == StatusCompleted || r.Status == StatusCancelled }

func requestKey(id string) []byte { return append([]byte{prefixRequest}, uuidBytes(id)...) }

func queueKey(due time.Time, id string) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixQueue}, uint64(due.UnixNano()))
	return append(k, uuidBytes(id)...)
}

// Service runs privacy requests: it stores them, runs them through Work,
// keeps exports, sends signed callbacks, and audits every change.
type Service struct {
	cfg    Config
	db     *pebble.DB
	audit  *Audit
	work   Work
	sig    *signer
	now    func() time.Time
	client *http.Client
	log    *slog.Logger
	m      *metrics
	kr     *engine.Keyring
	// comp takes the spans of destroyed keys and expired exports: the
	// caller's (WithCompactor) or, ownComp, the Service's own, paid at the
	// end of each Step.
	comp    *engine.Compactor
	ownComp bool

	mu    sync.Mutex // serialises state changes of requests
	wake  chan struct{}
	cbMu  sync.Mutex // one callback deliverer at a time
	cbSeq uint64     // last outbox seq, under mu
	cbNew chan struct{}
}

// Option tunes New.
type Option func(*Service)

// WithClock sets the service's clock (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithHTTPClient sets the client of status callbacks (default: a client
// with Callbacks.Timeout).
func WithHTTPClient(c *http.Client) Option { return func(s *Service) { s.client = c } }

// WithLogger sets the logger (default: discard). Logs carry request ids
// and step names, never identities.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.log = l } }

// WithKeyring seals each request's identities and rectification, and
// each export's body, under data keys of their own in k's id space, and
// destroys them when the request finishes and when the export expires or
// its person is erased (crypto-shredding; see the package doc). Required:
// New refuses to store personal data in plain.
func WithKeyring(k *engine.Keyring) Option { return func(s *Service) { s.kr = k } }

// WithCompactor hands c the spans of the keys and exports the Service
// destroys, staged in the destroying batch; c compacts them in the
// background (engine.Compactor). Default: a compactor of the Service's
// own, paid at the end of each Step.
func WithCompactor(c *engine.Compactor) Option { return func(s *Service) { s.comp = c } }

// WithRegisterer registers the metrics on reg (default: none).
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(s *Service) { s.m.reg = reg }
}

// New opens the request processor over db (owned by the caller, closed
// after Run returned). audit receives every state change; work does the
// requests. cfg is completed with Defaults and validated (errors name the
// field under "privacy."). In-progress requests found in the store are
// made due at once: Run resumes them. WithKeyring is required. A store
// written before sealing existed is sealed in place at the first New
// (plain request records and export bodies; see the package doc).
func New(cfg Config, db *pebble.DB, audit *Audit, work Work, opts ...Option) (*Service, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("privacy.%w", err)
	}
	if audit == nil || work.Subjects == nil {
		return nil, errors.New("privacy: New needs an Audit and Work.Subjects")
	}
	if cfg.Retention.InactiveAfter > 0 && (work.Inactive == nil || len(work.Erasers) == 0) {
		return nil, errors.New("privacy.retention.inactive_after: retention needs a profile lister and erasers, which this build does not wire")
	}
	s := &Service{cfg: cfg, db: db, audit: audit, work: work, now: time.Now, log: slog.New(slog.DiscardHandler),
		m: newMetrics(), wake: make(chan struct{}, 1), cbNew: make(chan struct{}, 1)}
	for _, o := range opts {
		o(s)
	}
	if s.kr == nil {
		return nil, errors.New("privacy: New needs a keyring (WithKeyring): request identities and exports are stored sealed, never in plain")
	}
	if s.comp == nil {
		c, err := engine.NewCompactor(db, nil, nil)
		if err != nil {
			return nil, err
		}
		s.comp, s.ownComp = c, true
	}
	if err := s.m.register(); err != nil {
		return nil, err
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: cfg.Callbacks.Timeout}
	}
	sig, err := loadSigner(db, cfg, s.now())
	if err != nil {
		return nil, err
	}
	s.sig = sig
	if s.cbSeq, err = lastSeq(db, prefixCallback); err != nil {
		return nil, err
	}
	if err := s.upgrade(); err != nil {
		return nil, err
	}
	if err := s.resume(); err != nil {
		return nil, err
	}
	return s, nil
}

func lastSeq(db *pebble.DB, prefix byte) (uint64, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if it.Last() && len(it.Key()) == 9 {
		return binary.BigEndian.Uint64(it.Key()[1:]), nil
	}
	return 0, it.Error()
}

// resume re-queues every in_progress request at now: a crash interrupted
// it, and its steps are idempotent.
func (s *Service) resume() error {
	var ids []string
	err := s.scan([]byte{prefixQueue}, []byte{prefixQueue + 1}, func(k, _ []byte) error {
		ids = append(ids, uuidString(k[9:]))
		return nil
	})
	if err != nil {
		return err
	}
	now := s.now()
	for _, id := range ids {
		rec, err := s.load(id)
		if err != nil {
			return err
		}
		if rec.Status != StatusInProgress || !rec.Due.After(now) {
			continue
		}
		old := rec.Due
		rec.Due = now
		if err := s.put(nil, rec, old); err != nil {
			return err
		}
	}
	return nil
}

func uuidString(b []byte) string {
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (s *Service) scan(lo, hi []byte, fn func(k, v []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("cannot read the privacy store: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

func (s *Service) load(id string) (*record, error) {
	v, closer, err := s.db.Get(requestKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read request %s: %w", id, err)
	}
	defer closer.Close()
	return decodeRecord(v)
}

// decodeRecord reads a stored record without opening its sealed part
// (openRecord does). A plain record (version 1, written before sealing)
// comes back open.
func decodeRecord(v []byte) (*record, error) {
	if len(v) < 1 || (v[0] != recordPlain && v[0] != recordSealed) {
		return nil, errors.New("privacy: corrupt request record")
	}
	var r record
	if err := json.Unmarshal(v[1:], &r); err != nil {
		return nil, fmt.Errorf("privacy: corrupt request record: %w", err)
	}
	r.open = v[0] == recordPlain
	return &r, nil
}

// put writes rec and moves its queue entry from oldDue (zero: none) to
// rec.Due if it is unfinished, into b (nil: a synced batch of its own).
// A key it creates is staged into b: the owner of b reports b's fate to
// the keyring.
func (s *Service) put(b *pebble.Batch, rec *record, oldDue time.Time) error {
	own := b == nil
	if own {
		b = s.db.NewBatch()
		defer b.Close()
		defer s.kr.Abandon(b)
	}
	v, err := s.encodeRecord(b, rec)
	if err != nil {
		return err
	}
	if err := b.Set(requestKey(rec.Req.ID), v, nil); err != nil {
		return err
	}
	if !oldDue.IsZero() {
		if err := b.Delete(queueKey(oldDue, rec.Req.ID), nil); err != nil {
			return err
		}
	}
	if !rec.finished() {
		if err := b.Set(queueKey(rec.Due, rec.Req.ID), nil, nil); err != nil {
			return err
		}
	}
	if own {
		if err := b.Commit(pebble.Sync); err != nil {
			return err
		}
		s.kr.Committed(b)
	}
	return nil
}

// identityHash is the keyed hash of one identity, equal for the raw and
// the sha256 form of the same normalised value.
func (s *Service) identityHash(id Identity) []byte {
	m := hmac.New(sha256.New, s.audit.key)
	m.Write([]byte("identity\x00"))
	m.Write([]byte(id.Type))
	m.Write([]byte{0})
	m.Write([]byte(id.normalizedSHA256()))
	return m.Sum(nil)[:16]
}

// transition moves rec to status to (its queue entry, the active index,
// callbacks, one audit entry, the counter) in one synced batch; a
// finishing transition destroys the request's key in it. The caller
// holds s.mu. oldDue is where rec is queued now (zero: not queued).
func (s *Service) transition(rec *record, to, actor string, oldDue time.Time, also ...func(*pebble.Batch) error) error {
	rec.Status = to
	now := s.now()
	if rec.finished() {
		rec.Finished = now
		rec.Req.Identities = nil
		rec.Req.Rectification = nil
	}
	cbs := s.callbackBodies(rec)
	fill := func(b *pebble.Batch) error {
		for _, h := range rec.IdentityHashes {
			hb, _ := hex.DecodeString(h)
			k := append([]byte{prefixActive}, hb...)
			var err error
			if rec.finished() {
				err = b.Delete(k, nil)
			} else {
				err = b.Set(k, uuidBytes(rec.Req.ID), nil)
			}
			if err != nil {
				return err
			}
		}
		for _, cb := range cbs {
			s.cbSeq++
			if err := b.Set(binary.BigEndian.AppendUint64([]byte{prefixCallback}, s.cbSeq), cb, nil); err != nil {
				return err
			}
		}
		for _, fn := range also {
			if err := fn(b); err != nil {
				return err
			}
		}
		if rec.finished() {
			if err := s.destroyRequestKey(b, rec); err != nil {
				return err
			}
		}
		return s.put(b, rec, oldDue)
	}
	seq := s.cbSeq
	err := s.audit.commit(fill, s.kr, nil, Record{Time: now, Actor: actor, Action: "request." + to + " " + rec.Req.Type,
		Target: "request:" + rec.Req.ID, Outcome: "ok"})
	if err != nil {
		s.cbSeq = seq
		return fmt.Errorf("cannot store request %s: %w", rec.Req.ID, err)
	}
	if rec.finished() && (rec.Req.Type == TypeErasure || rec.Req.Type == TypeErasureSuppress) {
		// An erasure's spans (its own key, the exports it expired) are
		// paid at once; other requests' wait for the compactor's next
		// pass (an erasure's, or its interval): the person's data lives on
		// in the graph anyway, and a pass per access request would compete
		// with the requests for the disk.
		s.comp.Staged()
	}
	s.m.requests.WithLabelValues(rec.Req.Type, to).Inc()
	if to == StatusCompleted {
		s.m.duration.WithLabelValues(rec.Req.Type).Observe(now.Sub(rec.Received).Seconds())
	}
	if len(cbs) > 0 {
		select {
		case s.cbNew <- struct{}{}:
		default:
		}
	}
	return nil
}

// Created is the 201 answer to a submission (OpenDSR 7.3).
type Created struct {
	ControllerID   string `json:"controller_id"`
	ExpectedTime   string `json:"expected_completion_time"`
	ReceivedTime   string `json:"received_time"`
	EncodedRequest string `json:"encoded_request"`
	ID             string `json:"subject_request_id"`
}

// Submit validates body and stores the request as pending. It is
// idempotent on subject_request_id: the same request again (same content)
// returns the first answer; different content under a used id returns
// ErrDuplicate. A request naming an identity of an unfinished request
// returns ErrConflict. Validation failures are *FieldError. actor is the
// token id (controller_id; empty: Config.ControllerID); baseURL is the
// fallback base of results_url when Config.PublicURL is empty.
func (s *Service) Submit(body []byte, actor, baseURL string) (*Created, *record, error) {
	r, err := ParseRequest(body, s.cfg.IdentityTypes)
	if err != nil {
		return nil, nil, err
	}
	if !s.work.supports(r.Type) {
		return nil, nil, invalid("subject_request_type", "%s is not supported by this processor (see /opendsr/discovery)", r.Type)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	digest := s.digest(r.digest())
	if old, err := s.load(r.ID); err == nil {
		if old.Digest != digest {
			return nil, nil, ErrDuplicate
		}
		return s.created(old, body), old, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, nil, err
	}
	rec := &record{Req: *r, Controller: actor, Actor: actor, Digest: digest, Status: StatusPending, BaseURL: baseURL, open: true}
	if rec.Controller == "" {
		rec.Controller = s.cfg.ControllerID
	}
	if s.cfg.PublicURL != "" {
		rec.BaseURL = s.cfg.PublicURL
	}
	for _, id := range r.Identities {
		h := s.identityHash(id)
		if _, closer, err := s.db.Get(append([]byte{prefixActive}, h...)); err == nil {
			closer.Close()
			return nil, nil, ErrConflict
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return nil, nil, err
		}
		if hx := hex.EncodeToString(h); !slices.Contains(rec.IdentityHashes, hx) {
			rec.IdentityHashes = append(rec.IdentityHashes, hx)
		}
	}
	now := s.now().UTC()
	rec.Received, rec.NotBefore = now, now
	if r.Type == TypeErasure || r.Type == TypeErasureSuppress {
		rec.NotBefore = now.Add(s.cfg.WaitingPeriod)
	}
	rec.Due = rec.NotBefore
	rec.Expected = rec.NotBefore.Add(s.cfg.ExpectedDuration)
	if err := s.transition(rec, StatusPending, actor, time.Time{}); err != nil {
		return nil, nil, err
	}
	s.kick()
	return s.created(rec, body), rec, nil
}

func (s *Service) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Service) created(rec *record, body []byte) *Created {
	return &Created{ControllerID: rec.Controller, ExpectedTime: rfc3339(rec.Expected), ReceivedTime: rfc3339(rec.Received),
		EncodedRequest: b64(body), ID: rec.Req.ID}
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Status is the answer to GET /opendsr/requests/{id} (OpenDSR 8.3).
type Status struct {
	ControllerID string `json:"controller_id"`
	ExpectedTime string `json:"expected_completion_time"`
	ID           string `json:"subject_request_id"`
	Status       string `json:"request_status"`
	APIVersion   string `json:"api_version"`
	ResultsURL   string `json:"results_url,omitempty"`
	ResultsCount int    `json:"results_count,omitempty"`
}

// Get returns the status of request id, or ErrNotFound.
func (s *Service) Get(id string) (*Status, error) {
	if !validUUID(id) {
		return nil, ErrNotFound
	}
	rec, err := s.load(id)
	if err != nil {
		return nil, err
	}
	return s.status(rec), nil
}

func (s *Service) status(rec *record) *Status {
	st := &Status{ControllerID: rec.Controller, ExpectedTime: rfc3339(rec.Expected), ID: rec.Req.ID,
		Status: rec.Status, APIVersion: apiVersion, ResultsCount: rec.ResultsCount}
	if rec.ResultsToken != "" {
		st.ResultsURL = rec.BaseURL + "/opendsr/results/" + rec.ResultsToken
	}
	return st
}

const apiVersion = "2.0"

// Cancel cancels a pending request. Cancelling a cancelled request
// succeeds again; any other status returns ErrNotCancel.
func (s *Service) Cancel(id, actor string) (*record, error) {
	if !validUUID(id) {
		return nil, ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.load(id)
	if err != nil {
		return nil, err
	}
	switch rec.Status {
	case StatusCancelled:
		return rec, nil
	case StatusPending:
		return rec, s.transition(rec, StatusCancelled, actor, rec.Due)
	}
	return rec, ErrNotCancel
}

// Run processes due requests and delivers callbacks until ctx is done.
// A request interrupted by ctx stays in_progress and resumes at the next
// New + Run.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.deliverLoop(ctx)
	}()
	defer wg.Wait()
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	nextRetain := s.now()
	for {
		if s.cfg.Retention.InactiveAfter > 0 && !s.now().Before(nextRetain) {
			nextRetain = s.now().Add(s.cfg.Retention.Interval)
			if _, err := s.Retain(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("privacy retention sweep failed", "err", err)
			}
		}
		if _, err := s.Step(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error("privacy step failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-t.C:
		}
	}
}

// Step runs every request due now, one after another, and expires
// exports; it returns how many requests it ran. Without WithCompactor it
// then compacts the spans of the keys and exports it destroyed. Run calls
// it; tests call it directly with a fake clock.
func (s *Service) Step(ctx context.Context) (int, error) {
	n, err := s.step(ctx)
	if err == nil && s.ownComp {
		err = s.comp.CompactNow(ctx)
	}
	return n, err
}

func (s *Service) step(ctx context.Context) (int, error) {
	if err := s.sweepExports(); err != nil {
		return 0, err
	}
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		id, ok, err := s.nextDue()
		if err != nil || !ok {
			return n, err
		}
		if err := s.runOne(ctx, id); err != nil {
			return n, err
		}
		n++
	}
}

func (s *Service) nextDue() (string, bool, error) {
	hi := binary.BigEndian.AppendUint64([]byte{prefixQueue}, uint64(s.now().UnixNano())+1)
	var id string
	err := s.scan([]byte{prefixQueue}, hi, func(k, _ []byte) error {
		id = uuidString(k[9:])
		return errStop
	})
	if errors.Is(err, errStop) {
		return id, true, nil
	}
	return "", false, err
}

var errStop = errors.New("stop")

func (s *Service) runOne(ctx context.Context, id string) error {
	s.mu.Lock()
	rec, err := s.load(id)
	if err == nil && rec.Status == StatusInProgress {
		rec.again = true
	}
	if err == nil && rec.Status == StatusPending {
		err = s.transition(rec, StatusInProgress, "processor", rec.Due)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	step, err := s.execute(ctx, rec)
	if ctx.Err() != nil {
		return ctx.Err() // interrupted: stays in_progress and due, resumes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.m.stepErrors.WithLabelValues(step).Inc()
		s.log.Warn("privacy request step failed; will retry", "request", rec.Req.ID, "step", step, "err", err)
		old := rec.Due
		rec.Attempts++
		rec.LastError = step
		backoff := s.cfg.RetryBackoff << min(rec.Attempts-1, 16)
		rec.Due = s.now().Add(min(backoff, 10*time.Minute))
		return s.audit.commit(func(b *pebble.Batch) error { return s.put(b, rec, old) }, s.kr, nil,
			Record{Actor: "processor", Action: "request.retry " + rec.Req.Type, Target: "request:" + rec.Req.ID, Outcome: "failed:" + step})
	}
	rec.LastError = ""
	if err := s.transition(rec, StatusCompleted, "processor", rec.Due); err != nil {
		return err
	}
	if s.work.Holder != nil && (rec.Req.Type == TypeErasure || rec.Req.Type == TypeErasureSuppress) {
		s.work.Holder.Release(rec.Req.ID)
	}
	return nil
}

// execute runs the work of rec; on failure it returns the failing step.
func (s *Service) execute(ctx context.Context, rec *record) (string, error) {
	t0 := time.Now()
	step := func(name string) {
		now := time.Now()
		s.m.steps.WithLabelValues(name).Observe(now.Sub(t0).Seconds())
		t0 = now
	}
	if err := s.openRecord(rec); err != nil {
		return "open", err
	}
	if _, err := s.resolve(ctx, rec); err != nil {
		return "resolve", err
	}
	step("resolve")
	if rec.Origin == OriginRetention {
		if err := s.recheck(ctx, rec); err != nil {
			return "recheck", err
		}
		step("recheck")
	}
	if rec.Origin == OriginRetention && len(rec.Profiles) == 0 {
		return "", nil // every profile was seen again: nothing to erase or notify
	}
	subj := Subject{Identities: rec.Req.Identities, Profiles: slices.Clone(rec.Profiles)}
	switch rec.Req.Type {
	case TypeErasure, TypeErasureSuppress:
		if rec.Req.Type == TypeErasureSuppress {
			if err := s.work.Suppressor.Suppress(ctx, subj); err != nil {
				return "suppress", err
			}
			step("suppress")
		}
		if s.work.Holder != nil {
			s.work.Holder.Hold(rec.Req.ID, subj.Profiles)
		}
		for _, n := range s.work.Notifiers {
			if err := n.NotifyDeletion(ctx, rec.Req.ID, subj); err != nil {
				return "notify", err
			}
		}
		step("notify")
		for _, e := range s.work.Erasers {
			if err := e.Erase(ctx, subj); err != nil {
				return "erase:" + e.Name(), err
			}
			if _, err := s.audit.Append(Record{Actor: "processor", Action: "request.erased " + e.Name(),
				Target: "request:" + rec.Req.ID, Outcome: "ok"}); err != nil {
				return "audit", err
			}
			step("erase:" + e.Name()) // with its audit entry
		}
		if err := s.dropExportsOf(rec); err != nil {
			return "drop_exports", err
		}
		step("drop_exports")
		if s.work.Barrier != nil {
			if err := s.work.Barrier.WaitCommitted(ctx); err != nil {
				return "drain", err
			}
			if rec.again {
				// A run after a restart: the batches replayed since may
				// have resolved the person's earlier events into a new
				// profile before the drain let them commit. It joins the
				// request's profiles, erased on the next attempt.
				if grown, err := s.resolve(ctx, rec); err != nil || grown {
					return "drain", cmp.Or(err, errors.New("a profile resolved to the request's identities after the drain (events replayed after a restart): erasing it on the next attempt"))
				}
			}
			step("drain")
		}
	case TypeSuppress:
		if err := s.work.Suppressor.Suppress(ctx, subj); err != nil {
			return "suppress", err
		}
		step("suppress")
	case TypeUnsuppress:
		if err := s.work.Suppressor.Unsuppress(ctx, subj); err != nil {
			return "unsuppress", err
		}
		step("unsuppress")
	case TypeRectification:
		if err := s.work.Rectifier.Rectify(ctx, subj, *rec.Req.Rectification); err != nil {
			return "rectify", err
		}
		step("rectify")
	case TypeAccess, TypePortability:
		if err := s.export(ctx, rec, subj); err != nil {
			return "export", err
		}
		step("export")
	}
	return "", nil
}

// resolve adds the profiles the request's identities resolve to (none for
// a retention request) to rec.Profiles and persists them if any was new,
// before any step destroys what resolves them: a run resumed after a
// crash between two Erasers resolves nothing any more, and must still
// reach the same profiles.
func (s *Service) resolve(ctx context.Context, rec *record) (grown bool, err error) {
	pids, err := s.work.Subjects.Resolve(ctx, rec.Req.Identities)
	if err != nil {
		return false, err
	}
	for _, p := range pids {
		if !slices.Contains(rec.Profiles, p) {
			rec.Profiles = append(rec.Profiles, p)
			grown = true
		}
	}
	if !grown {
		return false, nil
	}
	slices.Sort(rec.Profiles)
	s.mu.Lock()
	defer s.mu.Unlock()
	return true, s.put(nil, rec, rec.Due)
}

// recheck narrows a retention request's profiles to those to erase now
// (InactiveChecker), at every attempt, before any step acts on them: a
// step that failed may be retried minutes later, or after a restart, and
// a listed profile may have been seen, or merged into another, meanwhile
// (erasing a merged id alone is refused by the graph; Keep replaces it by
// its survivor or spares it). Profiles already erased stay listed, so the
// remaining erasers still get them. A change is persisted with an audit
// entry; rec changes only once it is.
func (s *Service) recheck(ctx context.Context, rec *record) error {
	c, ok := s.work.Inactive.(InactiveChecker)
	if !ok {
		return nil
	}
	keep, spared, err := c.Keep(ctx, s.now().Add(-s.cfg.Retention.InactiveAfter), rec.Profiles)
	if err != nil {
		return err
	}
	if spared == 0 && slices.Equal(keep, rec.Profiles) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := *rec
	next.Profiles, next.Spared = keep, rec.Spared+spared
	if err := s.audit.commit(func(b *pebble.Batch) error { return s.put(b, &next, rec.Due) }, s.kr, nil,
		Record{Actor: "processor", Action: "request.rechecked " + rec.Req.Type, Target: "request:" + rec.Req.ID,
			Outcome: fmt.Sprintf("ok:%d_spared", spared)}); err != nil {
		return err
	}
	*rec = next
	s.m.spared.Add(float64(spared))
	return nil
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
