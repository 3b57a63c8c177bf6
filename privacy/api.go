package privacy

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/cdpstream/cdpstream/engine"
)

// Route is one HTTP endpoint with the scope it needs (empty: public) and
// whether it touches personal data (audited by the auth middleware).
type Route = engine.Route

// Routes returns the OpenDSR endpoints:
//
//	POST   /opendsr/requests          submit (201; same request again: the same answer)
//	GET    /opendsr/requests          list, newest first (?status, ?type, ?limit, ?cursor; cdpstream's extension)
//	GET    /opendsr/requests/{id}     status
//	DELETE /opendsr/requests/{id}     cancel while pending (202; 409 after)
//	GET    /opendsr/discovery         identities, types, certificate url (public)
//	GET    /opendsr/certificate.pem   the signing certificate (public)
//	GET    /opendsr/results/{token}   an access or portability export (410 once expired)
//
// Answers to POST, GET and DELETE of requests carry X-OpenDSR-Processor-
// Domain and X-OpenDSR-Signature over the exact body bytes. Errors use the
// OpenDSR error body {"error": {"code", "message", "errors": [...]}}.
func (s *Service) Routes() []Route {
	return []Route{
		{Method: http.MethodPost, Path: "/opendsr/requests", Scope: engine.ScopePrivacyWrite, Personal: true, Handler: http.HandlerFunc(s.serveSubmit)},
		{Method: http.MethodGet, Path: "/opendsr/requests", Scope: engine.ScopePrivacyWrite, Personal: false, Handler: http.HandlerFunc(s.serveList)},
		{Method: http.MethodGet, Path: "/opendsr/requests/{id}", Scope: engine.ScopePrivacyWrite, Personal: false, Handler: http.HandlerFunc(s.serveStatus)},
		{Method: http.MethodDelete, Path: "/opendsr/requests/{id}", Scope: engine.ScopePrivacyWrite, Personal: false, Handler: http.HandlerFunc(s.serveCancel)},
		{Method: http.MethodGet, Path: "/opendsr/discovery", Scope: "", Personal: false, Handler: http.HandlerFunc(s.serveDiscovery)},
		{Method: http.MethodGet, Path: "/opendsr/certificate.pem", Scope: "", Personal: false, Handler: http.HandlerFunc(s.serveCert)},
		{Method: http.MethodGet, Path: "/opendsr/results/{token}", Scope: engine.ScopePrivacyWrite, Personal: true, Handler: http.HandlerFunc(s.serveResults)},
	}
}

// Mounter is what Mount registers on: *http.ServeMux and *engine.Server.
type Mounter = engine.Mounter

// Mount registers routes on m behind auth (nil: no auth); see engine.Mount.
func Mount(m Mounter, routes []Route, auth *engine.Auth) { engine.Mount(m, routes, auth) }

// Handler serves Routes without auth (tests, or behind a proxy that
// authenticates).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	Mount(mux, s.Routes(), nil)
	return mux
}

// ErrorBody is the OpenDSR error response (spec 7.5-7.7).
type ErrorBody struct {
	Error ErrorObject `json:"error"`
}

// ErrorObject is the error object of ErrorBody.
type ErrorObject struct {
	Code    int           `json:"code"`
	Message string        `json:"message,omitempty"`
	Errors  []ErrorDetail `json:"errors,omitempty"`
}

// ErrorDetail is one entry of ErrorObject.Errors.
type ErrorDetail struct {
	Domain  string `json:"domain"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func writeOpenDSRError(w http.ResponseWriter, code int, reason, msg string) {
	engine.WriteJSON(w, code, ErrorBody{Error: ErrorObject{Code: code, Message: msg,
		Errors: []ErrorDetail{{Domain: "Validation", Reason: reason, Message: msg + "."}}}})
}

// writeSigned writes v with the processor domain and a signature over the
// exact bytes sent.
func (s *Service) writeSigned(w http.ResponseWriter, code int, v any) {
	body, _ := json.MarshalIndent(v, "", "  ")
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-OpenDSR-Processor-Domain", s.cfg.Domain)
	w.Header().Set("X-OpenDSR-Signature", s.sig.sign(body))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Service) serveSubmit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err != nil {
		if engine.IsBodyTooLarge(err) {
			writeOpenDSRError(w, http.StatusRequestEntityTooLarge, "RequestTooLarge", "body is too large")
			return
		}
		writeOpenDSRError(w, http.StatusBadRequest, "IllegalArgumentException", "cannot read the body")
		return
	}
	c, rec, err := s.Submit(body, engine.TokenID(r.Context()), baseURL(r))
	if rec != nil {
		engine.SetAuditTarget(r.Context(), "request:"+rec.Req.ID)
	}
	var fe *FieldError
	switch {
	case err == nil:
		s.writeSigned(w, http.StatusCreated, c)
	case errors.As(err, &fe):
		writeOpenDSRError(w, http.StatusBadRequest, "IllegalArgumentException", fe.Message)
	case errors.Is(err, ErrDuplicate):
		writeOpenDSRError(w, http.StatusBadRequest, "DuplicateRequestId", "subject_request_id is already used by a different request")
	case errors.Is(err, ErrConflict):
		writeOpenDSRError(w, http.StatusConflict, "RequestInProgress", "a request for the same subject is not finished yet")
	default:
		writeOpenDSRError(w, http.StatusInternalServerError, "InternalError", "cannot store the request")
	}
}

func (s *Service) serveStatus(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, err := s.Get(id)
	switch {
	case err == nil:
		engine.SetAuditTarget(r.Context(), "request:"+id)
		s.writeSigned(w, http.StatusOK, st)
	case errors.Is(err, ErrNotFound):
		writeOpenDSRError(w, http.StatusNotFound, "NotFound", "no request with this subject_request_id")
	default:
		writeOpenDSRError(w, http.StatusInternalServerError, "InternalError", "cannot read the request")
	}
}

// CancelResponse is the 202 answer to DELETE (OpenDSR 9.2).
type CancelResponse struct {
	ControllerID string `json:"controller_id"`
	ID           string `json:"subject_request_id"`
	ReceivedTime string `json:"received_time"`
	APIVersion   string `json:"api_version"`
}

func (s *Service) serveCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	received := s.now()
	rec, err := s.Cancel(id, engine.TokenID(r.Context()))
	switch {
	case err == nil:
		s.writeSigned(w, http.StatusAccepted, CancelResponse{ControllerID: rec.Controller, ID: id,
			ReceivedTime: rfc3339(received), APIVersion: apiVersion})
	case errors.Is(err, ErrNotFound):
		writeOpenDSRError(w, http.StatusNotFound, "NotFound", "no request with this subject_request_id")
	case errors.Is(err, ErrNotCancel):
		writeOpenDSRError(w, http.StatusConflict, "NotCancellable", "request is "+rec.Status+"; only a pending request can be cancelled")
	default:
		writeOpenDSRError(w, http.StatusInternalServerError, "InternalError", "cannot cancel the request")
	}
}

// Discovery is the answer to GET /opendsr/discovery (OpenDSR 6.3).
type Discovery struct {
	APIVersion  string              `json:"api_version"`
	Identities  []DiscoveryIdentity `json:"supported_identities"`
	Types       []string            `json:"supported_subject_request_types"`
	Certificate string              `json:"processor_certificate"`
}

// DiscoveryIdentity is one supported type and format pair.
type DiscoveryIdentity struct {
	Type   string `json:"identity_type"`
	Format string `json:"identity_format"`
}

func (s *Service) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	base := s.cfg.PublicURL
	if base == "" {
		base = baseURL(r)
	}
	d := Discovery{APIVersion: apiVersion, Certificate: base + "/opendsr/certificate.pem", Types: []string{}}
	for _, t := range s.cfg.IdentityTypes {
		d.Identities = append(d.Identities, DiscoveryIdentity{t, FormatRaw}, DiscoveryIdentity{t, FormatSHA256})
	}
	for _, t := range allTypes {
		if s.work.supports(t) {
			d.Types = append(d.Types, t)
		}
	}
	engine.WriteJSON(w, http.StatusOK, d)
}

func (s *Service) serveCert(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(s.sig.certPEM)
}

func (s *Service) serveResults(w http.ResponseWriter, r *http.Request) {
	body, ctype, id, gone, err := s.result(r.PathValue("token"))
	if id != "" {
		engine.SetAuditTarget(r.Context(), "request:"+id)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		engine.WriteError(w, http.StatusNotFound, "no such results")
	case err != nil:
		engine.WriteError(w, http.StatusInternalServerError, "cannot read the results")
	case gone:
		engine.WriteError(w, http.StatusGone, "results expired")
	default:
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-OpenDSR-Signature", s.sig.sign(body))
		_, _ = w.Write(body)
	}
}
