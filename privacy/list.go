package privacy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cdpstream/cdpstream/engine"
)

// Summary is one request in a listing (GET /opendsr/requests). It carries
// no identity: requests are found by id, type, status and time.
type Summary struct {
	ID           string `json:"subject_request_id"`
	Type         string `json:"subject_request_type"`
	Regulation   string `json:"regulation"`
	Status       string `json:"request_status"`
	ControllerID string `json:"controller_id"`
	ReceivedTime string `json:"received_time"`
	ExpectedTime string `json:"expected_completion_time"`
	FinishedTime string `json:"finished_time,omitempty"`
	// Origin is "retention" for automatic erasures of inactive profiles,
	// absent for requests submitted over the API.
	Origin string `json:"origin,omitempty"`
	// Attempts counts failed runs of a request still in progress (it is
	// retried with backoff; the log names the failing step).
	Attempts int `json:"attempts,omitempty"`
	// SparedProfiles counts, for a retention request, the listed
	// profiles seen again before it ran, which it left alone.
	SparedProfiles int `json:"spared_profiles,omitempty"`
}

// ListOptions filter and page a listing.
type ListOptions struct {
	Status string // one of the statuses, or "" for all
	Type   string // one of the request types, or "" for all
	Limit  int    // 1..MaxListLimit; 0 means DefaultListLimit
	Cursor string // Listing.Next of the previous page; "" for the first
}

// Listing limits.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// Listing is one page of requests, newest received first; Next is the
// cursor of the following page, empty on the last one.
type Listing struct {
	Requests []Summary `json:"requests"`
	Next     string    `json:"next_cursor,omitempty"`
}

var statuses = []string{StatusPending, StatusInProgress, StatusCompleted, StatusCancelled}

// queryError is an invalid listing parameter; its text names it.
type queryError string

func (e queryError) Error() string { return string(e) }

// cursor orders requests: received time descending, then id ascending.
type cursor struct {
	received int64
	id       string
}

func (c cursor) String() string { return strconv.FormatInt(c.received, 10) + "_" + c.id }

// after reports whether (received, id) comes after c in listing order.
func (c cursor) after(received int64, id string) bool {
	return received < c.received || (received == c.received && id > c.id)
}

func parseCursor(s string) (cursor, error) {
	ns, id, ok := strings.Cut(s, "_")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || !validUUID(id) {
		return cursor{}, queryError("cursor: not a cursor from next_cursor")
	}
	return cursor{n, id}, nil
}

// List returns requests matching o, newest first. It reads every request
// record (requests are few: thousands, not millions), so its cost grows
// with the number kept.
func (s *Service) List(o ListOptions) (*Listing, error) {
	if o.Status != "" && !slices.Contains(statuses, o.Status) {
		return nil, queryError(fmt.Sprintf("status: %q is not one of %s", o.Status, strings.Join(statuses, ", ")))
	}
	if o.Type != "" && !slices.Contains(allTypes, o.Type) {
		return nil, queryError(fmt.Sprintf("type: %q is not one of %s", o.Type, strings.Join(allTypes, ", ")))
	}
	switch {
	case o.Limit == 0:
		o.Limit = DefaultListLimit
	case o.Limit < 0 || o.Limit > MaxListLimit:
		return nil, queryError(fmt.Sprintf("limit: must be between 1 and %d", MaxListLimit))
	}
	var from *cursor
	if o.Cursor != "" {
		c, err := parseCursor(o.Cursor)
		if err != nil {
			return nil, err
		}
		from = &c
	}
	type item struct {
		c cursor
		r *record
	}
	var items []item
	err := s.scan([]byte{prefixRequest}, []byte{prefixRequest + 1}, func(_, v []byte) error {
		rec, err := decodeRecord(v)
		if err != nil {
			return err
		}
		if (o.Status != "" && rec.Status != o.Status) || (o.Type != "" && rec.Req.Type != o.Type) {
			return nil
		}
		c := cursor{rec.Received.UnixNano(), rec.Req.ID}
		if from != nil && !from.after(c.received, c.id) {
			return nil
		}
		items = append(items, item{c, rec})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(items, func(a, b item) int {
		if a.c.received != b.c.received {
			if a.c.received > b.c.received {
				return -1
			}
			return 1
		}
		return strings.Compare(a.c.id, b.c.id)
	})
	out := &Listing{Requests: []Summary{}}
	for i, it := range items {
		if i == o.Limit {
			out.Next = items[i-1].c.String()
			break
		}
		out.Requests = append(out.Requests, summarize(it.r))
	}
	return out, nil
}

func summarize(r *record) Summary {
	s := Summary{ID: r.Req.ID, Type: r.Req.Type, Regulation: r.Req.Regulation, Status: r.Status, ControllerID: r.Controller,
		ReceivedTime: rfc3339(r.Received), ExpectedTime: rfc3339(r.Expected), Origin: r.Origin, Attempts: r.Attempts, SparedProfiles: r.Spared}
	if !r.Finished.IsZero() {
		s.FinishedTime = rfc3339(r.Finished)
	}
	return s
}

func (s *Service) serveList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := ListOptions{Status: q.Get("status"), Type: q.Get("type"), Cursor: q.Get("cursor")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			writeOpenDSRError(w, http.StatusBadRequest, "InvalidQuery", "limit: not a number")
			return
		}
		if n == 0 {
			n = -1 // explicit 0 is out of range, not "default"
		}
		o.Limit = n
	}
	l, err := s.List(o)
	if err != nil {
		var qe queryError
		if errors.As(err, &qe) {
			writeOpenDSRError(w, http.StatusBadRequest, "InvalidQuery", qe.Error())
			return
		}
		writeOpenDSRError(w, http.StatusInternalServerError, "InternalError", "cannot list requests")
		return
	}
	engine.SetAuditTarget(r.Context(), "requests")
	s.writeSigned(w, http.StatusOK, l)
}
