package audience

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/cdpstream/cdpstream/engine"
)

// Route is one HTTP endpoint with the scope a caller needs (empty: public)
// and whether it touches personal data (audited), mirroring
// identity.Route.
type Route = engine.Route

// Limits of the member endpoints.
const (
	defaultPage = 10_000
	maxPage     = 1_000_000
	chunk       = 4096
	maxBody     = 1 << 20 // when no Auth limits bodies
)

// Routes returns the audience endpoints:
//
//	GET    /v1/audiences                       list with sizes
//	POST   /v1/audiences                       create (201)
//	GET    /v1/audiences/{id}                  definition, size, last change, back-fill
//	PUT    /v1/audiences/{id}                  new version
//	DELETE /v1/audiences/{id}                  (204)
//	GET    /v1/audiences/{id}/members          NDJSON, ?cursor=&limit=
//	GET    /v1/audiences/{id}/contains         ?profile_id=N or ?type=&value=
//	POST   /v1/query                           {"expression", "members", "cursor", "limit"}
//	GET    /openapi.json                       this API (public)
//
// res resolves identifiers for contains?type=&value= (nil: only
// profile_id is accepted, the others answer 501).
func (s *Store) Routes(res Resolver) []Route {
	h := &handlers{s: s, res: res}
	return []Route{
		{Method: http.MethodGet, Path: "/v1/audiences", Scope: engine.ScopeAudiencesRead, Personal: false, Handler: http.HandlerFunc(h.list)},
		{Method: http.MethodPost, Path: "/v1/audiences", Scope: engine.ScopeAudiencesWrite, Personal: false, Handler: http.HandlerFunc(h.create)},
		{Method: http.MethodGet, Path: "/v1/audiences/{id}", Scope: engine.ScopeAudiencesRead, Personal: false, Handler: http.HandlerFunc(h.get)},
		{Method: http.MethodPut, Path: "/v1/audiences/{id}", Scope: engine.ScopeAudiencesWrite, Personal: false, Handler: http.HandlerFunc(h.update)},
		{Method: http.MethodDelete, Path: "/v1/audiences/{id}", Scope: engine.ScopeAudiencesWrite, Personal: false, Handler: http.HandlerFunc(h.remove)},
		{Method: http.MethodGet, Path: "/v1/audiences/{id}/members", Scope: engine.ScopeAudiencesRead, Personal: true, Handler: http.HandlerFunc(h.members)},
		{Method: http.MethodGet, Path: "/v1/audiences/{id}/contains", Scope: engine.ScopeAudiencesRead, Personal: true, Handler: http.HandlerFunc(h.contains)},
		{Method: http.MethodPost, Path: "/v1/query", Scope: engine.ScopeAudiencesRead, Personal: true, Handler: http.HandlerFunc(h.query)},
		{Method: http.MethodGet, Path: "/openapi.json", Scope: "", Personal: false, Handler: http.HandlerFunc(serveOpenAPI)},
	}
}

// Mounter is what Mount registers on: *http.ServeMux and *engine.Server.
type Mounter = engine.Mounter

// Mount registers routes on m, each behind auth with its scope
// (engine.Mount).
func Mount(m Mounter, routes []Route, auth *engine.Auth) { engine.Mount(m, routes, auth) }

type handlers struct {
	s   *Store
	res Resolver
}

type listResponse struct {
	Audiences []Info `json:"audiences"`
}

func (h *handlers) list(w http.ResponseWriter, _ *http.Request) {
	engine.WriteJSON(w, http.StatusOK, listResponse{Audiences: h.s.List()})
}

func (h *handlers) get(w http.ResponseWriter, r *http.Request) {
	in, err := h.s.Get(r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	engine.WriteJSON(w, http.StatusOK, in)
}

func (h *handlers) create(w http.ResponseWriter, r *http.Request) {
	d, ok := readDef(w, r)
	if !ok {
		return
	}
	in, err := h.s.Create(d)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Location", "/v1/audiences/"+in.ID)
	engine.WriteJSON(w, http.StatusCreated, in)
}

func (h *handlers) update(w http.ResponseWriter, r *http.Request) {
	d, ok := readDef(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if d.ID == "" {
		d.ID = id
	}
	if d.ID != id {
		writeErr(w, verr("id", "%q does not match the path's %q", d.ID, id))
		return
	}
	in, err := h.s.Update(d)
	if err != nil {
		writeErr(w, err)
		return
	}
	engine.WriteJSON(w, http.StatusOK, in)
}

func (h *handlers) remove(w http.ResponseWriter, r *http.Request) {
	if err := h.s.Delete(r.PathValue("id")); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// members streams NDJSON: one {"profile_id":N} line per member above
// ?cursor (default 0), at most ?limit (default 10000), then a last line
// {"cursor":"N","more":bool}; pass cursor back for the next page. Each
// chunk of 4096 ids is read under the store's read lock on its own, so a
// long export never holds up the pipeline; since ids only grow, members
// present throughout are neither skipped nor repeated.
func (h *handlers) members(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	after, limit, ok := pageArgs(w, r.URL.Query().Get("cursor"), r.URL.Query().Get("limit"))
	if !ok {
		return
	}
	// ?as=TYPE: each member with its values of that identifier type.
	as := r.URL.Query().Get("as")
	var lister IdentifierLister
	var asKey []byte
	if as != "" {
		var ok bool
		if lister, ok = h.res.(IdentifierLister); !ok {
			engine.WriteError(w, http.StatusNotImplemented, "as: members as identifiers need the identity graph, which this server was not given")
			return
		}
		asKey, _ = json.Marshal(as)
	}
	buf, err := h.s.Members(id, after, min(limit, chunk), make([]uint32, 0, chunk))
	if err != nil {
		writeErr(w, err)
		return
	}
	engine.SetAuditTarget(r.Context(), "audience:"+id)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	line := make([]byte, 0, 32*chunk)
	asked, sent, more := min(limit, chunk), 0, false
	for {
		line = line[:0]
		for _, v := range buf {
			line = append(line, `{"profile_id":`...)
			line = strconv.AppendUint(line, uint64(v), 10)
			if lister != nil {
				vals, err := lister.Identifiers(v, as)
				if err != nil {
					return // the stream ends without its cursor line: the client retries
				}
				if vals == nil {
					vals = []string{}
				}
				vb, _ := json.Marshal(vals)
				line = append(append(append(append(line, ','), asKey...), ':'), vb...)
			}
			line = append(line, "}\n"...)
		}
		if _, err := w.Write(line); err != nil {
			return
		}
		sent += len(buf)
		if len(buf) > 0 {
			after = buf[len(buf)-1]
		}
		if len(buf) < asked {
			break // nothing above after
		}
		if sent >= limit {
			peek, err := h.s.Members(id, after, 1, buf[:0])
			more = err == nil && len(peek) > 0
			break
		}
		if fl != nil {
			fl.Flush()
		}
		asked = min(limit-sent, chunk)
		if buf, err = h.s.Members(id, after, asked, buf[:0]); err != nil {
			break // deleted meanwhile: end the page
		}
	}
	line = append(line[:0], `{"cursor":"`...)
	line = strconv.AppendUint(line, uint64(after), 10)
	line = append(line, `","more":`...)
	line = strconv.AppendBool(line, more)
	line = append(line, "}\n"...)
	_, _ = w.Write(line)
}

func pageArgs(w http.ResponseWriter, cursor, limit string) (uint32, int, bool) {
	var after uint32
	if cursor != "" {
		v, err := strconv.ParseUint(cursor, 10, 32)
		if err != nil {
			engine.WriteError(w, http.StatusBadRequest, "cursor: must be a profile id from a previous page")
			return 0, 0, false
		}
		after = uint32(v)
	}
	n := defaultPage
	if limit != "" {
		v, err := strconv.Atoi(limit)
		if err != nil || v < 1 || v > maxPage {
			engine.WriteError(w, http.StatusBadRequest, "limit: must be 1-"+strconv.Itoa(maxPage))
			return 0, 0, false
		}
		n = v
	}
	return after, n, true
}

type containsResponse struct {
	Audience  string `json:"audience"`
	ProfileID uint32 `json:"profile_id"`
	Member    bool   `json:"member"`
}

func (h *handlers) contains(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id := r.PathValue("id")
	var pid uint32
	switch {
	case q.Has("profile_id"):
		v, err := strconv.ParseUint(q.Get("profile_id"), 10, 32)
		if err != nil || v == 0 {
			engine.WriteError(w, http.StatusBadRequest, "profile_id: must be a positive 32-bit integer")
			return
		}
		pid = uint32(v)
	case q.Has("type") && q.Has("value"):
		if h.res == nil {
			engine.WriteError(w, http.StatusNotImplemented, "lookup by identifier is not configured; use profile_id")
			return
		}
		v, ok, err := h.res.Lookup(q.Get("type"), q.Get("value"))
		if err != nil {
			engine.WriteError(w, http.StatusBadRequest, "type: "+err.Error())
			return
		}
		if !ok {
			engine.SetAuditTarget(r.Context(), "audience:"+id+" profile:none")
			engine.WriteError(w, http.StatusNotFound, "no profile has that identifier")
			return
		}
		pid = v
	default:
		engine.WriteError(w, http.StatusBadRequest, "give profile_id, or type and value")
		return
	}
	engine.SetAuditTarget(r.Context(), "audience:"+id+" profile:"+strconv.FormatUint(uint64(pid), 10))
	in, err := h.s.Contains(id, pid)
	if err != nil {
		writeErr(w, err)
		return
	}
	engine.WriteJSON(w, http.StatusOK, containsResponse{Audience: id, ProfileID: pid, Member: in})
}

type queryRequest struct {
	Expression string `json:"expression"`
	Members    bool   `json:"members"`
	Cursor     string `json:"cursor"`
	Limit      int    `json:"limit"`
}

type queryResponse struct {
	Expression string   `json:"expression"`
	Count      uint64   `json:"count"`
	Members    []uint32 `json:"members,omitempty"`
	Cursor     string   `json:"cursor,omitempty"`
}

func (h *handlers) query(w http.ResponseWriter, r *http.Request) {
	var req queryRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Limit == 0 {
		req.Limit = defaultPage
	}
	if req.Limit < 0 || req.Limit > maxPage {
		engine.WriteError(w, http.StatusBadRequest, "limit: must be 1-"+strconv.Itoa(maxPage))
		return
	}
	after, _, ok := pageArgs(w, req.Cursor, "")
	if !ok {
		return
	}
	e, err := ParseExpr(req.Expression)
	if err != nil {
		engine.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error(), "path": "expression"})
		return
	}
	engine.SetAuditTarget(r.Context(), "query:"+e.String())
	res, err := h.s.Query(e, req.Members, after, req.Limit)
	if err != nil {
		writeErr(w, err)
		return
	}
	out := queryResponse{Expression: e.String(), Count: res.Count, Members: res.Members}
	if req.Members {
		if out.Members == nil {
			out.Members = []uint32{}
		}
		if len(res.Members) == req.Limit {
			out.Cursor = strconv.FormatUint(uint64(res.Members[len(res.Members)-1]), 10)
		}
	}
	engine.WriteJSON(w, http.StatusOK, out)
}

func readDef(w http.ResponseWriter, r *http.Request) (Definition, bool) {
	var d Definition
	ok := readJSON(w, r, &d)
	return d, ok
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		engine.WriteError(w, http.StatusUnsupportedMediaType, "body must be application/json")
		return false
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if engine.IsBodyTooLarge(err) {
			engine.WriteError(w, http.StatusRequestEntityTooLarge, "body: too large")
			return false
		}
		engine.WriteError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

func writeErr(w http.ResponseWriter, err error) {
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		engine.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": ve.Error(), "path": ve.Path})
	case errors.Is(err, ErrNotFound):
		engine.WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrExists), errors.Is(err, ErrInUse):
		engine.WriteError(w, http.StatusConflict, err.Error())
	default:
		engine.WriteError(w, http.StatusInternalServerError, "internal error")
	}
}
