package privacy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/cockroachdb/pebble"
)

// Callback is the body POSTed to each status_callback_url on every status
// change (OpenDSR 8.6).
type Callback struct {
	ControllerID string `json:"controller_id"`
	ExpectedTime string `json:"expected_completion_time"`
	CallbackURL  string `json:"status_callback_url"`
	ID           string `json:"subject_request_id"`
	Status       string `json:"request_status"`
	ResultsURL   string `json:"results_url,omitempty"`
	ResultsCount int    `json:"results_count,omitempty"`
}

// outboxEntry is one callback waiting for delivery (0x38 | seq).
type outboxEntry struct {
	URL  string `json:"url"`
	Body []byte `json:"body"`
}

func (s *Service) callbackBodies(rec *record) [][]byte {
	var out [][]byte
	st := s.status(rec)
	for _, u := range rec.Req.CallbackURLs {
		body, _ := json.Marshal(Callback{ControllerID: st.ControllerID, ExpectedTime: st.ExpectedTime, CallbackURL: u,
			ID: st.ID, Status: st.Status, ResultsURL: st.ResultsURL, ResultsCount: st.ResultsCount})
		e, _ := json.Marshal(outboxEntry{URL: u, Body: body})
		out = append(out, e)
	}
	return out
}

func (s *Service) deliverLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		s.deliverPending(ctx)
		select {
		case <-ctx.Done():
			return
		case <-s.cbNew:
		case <-t.C:
		}
	}
}

// deliverPending sends every callback of the outbox, oldest first, each
// retried with backoff up to Callbacks.Attempts; delivered or given up,
// it leaves the outbox. The outbox is written in the batch of the status
// change, so a crash loses no callback (it may send one twice).
func (s *Service) deliverPending(ctx context.Context) {
	s.cbMu.Lock()
	defer s.cbMu.Unlock()
	for ctx.Err() == nil {
		var key []byte
		var e outboxEntry
		err := s.scan([]byte{prefixCallback}, []byte{prefixCallback + 1}, func(k, v []byte) error {
			key = append([]byte(nil), k...)
			if err := json.Unmarshal(v, &e); err != nil {
				e = outboxEntry{}
			}
			return errStop
		})
		if key == nil || (err != nil && err != errStop) {
			return
		}
		result := "failed"
		if e.URL != "" {
			result = s.deliver(ctx, e)
		}
		if ctx.Err() != nil {
			return // not given up: sent again after restart
		}
		s.m.callbacks.WithLabelValues(result).Inc()
		if result == "failed" {
			s.log.Warn("privacy callback given up", "seq", binary.BigEndian.Uint64(key[1:]))
			_, _ = s.audit.Append(Record{Actor: "processor", Action: "callback.failed", Target: e.URL, Outcome: "failed"})
		}
		if err := s.db.Delete(key, pebble.Sync); err != nil {
			s.log.Error("cannot remove a delivered callback", "err", err)
			return
		}
	}
}

func (s *Service) deliver(ctx context.Context, e outboxEntry) string {
	backoff := s.cfg.Callbacks.Backoff
	for attempt := 1; ; attempt++ {
		err := s.post(ctx, e)
		if err == nil {
			return "delivered"
		}
		if attempt >= s.cfg.Callbacks.Attempts || ctx.Err() != nil {
			return "failed"
		}
		s.m.callbacks.WithLabelValues("retried").Inc()
		select {
		case <-ctx.Done():
			return "failed"
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.Callbacks.MaxBackoff)
	}
}

func (s *Service) post(ctx context.Context, e outboxEntry) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(e.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-OpenDSR-Processor-Domain", s.cfg.Domain)
	req.Header.Set("X-OpenDSR-Signature", s.sig.sign(e.Body))
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
