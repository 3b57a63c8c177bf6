package identity

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cdpstream/cdpstream/engine"
)

// Scopes the profile routes require (the same strings as engine's).
const (
	ScopeProfilesRead  = engine.ScopeProfilesRead
	ScopeProfilesWrite = engine.ScopeProfilesWrite
)

// Route is one HTTP endpoint of the graph, with the scope a caller needs.
// The server that mounts the routes wraps each Handler with its auth
// middleware; Handler (the method) mounts them without auth.
type Route = engine.Route

// Routes returns the profile endpoints:
//
//	GET  /v1/profiles/lookup?type=email&value=...   (or ?profile_id=N)
//	POST /v1/profiles/remove-identifier  {"type": "...", "value": "..."}
//	POST /v1/profiles/split              {"profile_id": N}
//
// Lookups mask identifier values. Errors are JSON {"error": "..."} with a
// 4xx status for bad requests and 404 for unknown identifiers or profiles.
func (g *Graph) Routes() []Route {
	return []Route{
		{Method: http.MethodGet, Path: "/v1/profiles/lookup", Scope: ScopeProfilesRead, Personal: true, Handler: http.HandlerFunc(g.serveLookup)},
		{Method: http.MethodPost, Path: "/v1/profiles/remove-identifier", Scope: ScopeProfilesWrite, Personal: true, Handler: http.HandlerFunc(g.serveRemove)},
		{Method: http.MethodPost, Path: "/v1/profiles/split", Scope: ScopeProfilesWrite, Personal: true, Handler: http.HandlerFunc(g.serveSplit)},
	}
}

// Handler serves Routes without auth; unknown paths get a JSON 404 and
// wrong methods a JSON 405.
func (g *Graph) Handler() http.Handler {
	routes := g.Routes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, rt := range routes {
			if rt.Path != r.URL.Path {
				continue
			}
			if rt.Method == r.Method {
				rt.Handler.ServeHTTP(w, r)
				return
			}
			allow = append(allow, rt.Method)
		}
		if allow == nil {
			writeError(w, http.StatusNotFound, "no such endpoint")
			return
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
}

type lookupResponse struct {
	ProfileID   uint32           `json:"profile_id"`
	RequestedID uint32           `json:"requested_profile_id,omitempty"`
	Created     time.Time        `json:"created"`
	Identifiers []IdentifierView `json:"identifiers"`
	Merged      []uint32         `json:"merged"`
	History     []LogEntry       `json:"history"`
}

// historyEntry is a LogEntry as JSON (LogEntry.MarshalJSON).
type historyEntry struct {
	Seq       uint64    `json:"seq"`
	Kind      string    `json:"kind"`
	Time      time.Time `json:"time"`
	Survivor  uint32    `json:"survivor"`
	Merged    []uint32  `json:"merged,omitempty"`
	MessageID string    `json:"message_id,omitempty"`
	Rule      string    `json:"rule"`
	Erased    bool      `json:"erased,omitempty"`
}

func (g *Graph) serveLookup(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var v ProfileView
	var err error
	switch {
	case q.Has("profile_id"):
		id, perr := strconv.ParseUint(q.Get("profile_id"), 10, 32)
		if perr != nil || id == 0 {
			writeError(w, http.StatusBadRequest, "profile_id: must be a positive 32-bit integer")
			return
		}
		v, err = g.Profile(uint32(id))
	case q.Has("type") && q.Has("value"):
		if _, ok := g.configuredType(q.Get("type")); !ok {
			writeError(w, http.StatusBadRequest, "type: unknown identifier type")
			return
		}
		v, err = g.Lookup(q.Get("type"), q.Get("value"))
	default:
		writeError(w, http.StatusBadRequest, "give type and value, or profile_id")
		return
	}
	if err != nil {
		writeGraphError(w, err)
		return
	}
	resp := lookupResponse{ProfileID: v.ProfileID, RequestedID: v.RequestedID, Created: v.Created,
		Identifiers: v.Identifiers, Merged: v.Merged, History: v.History}
	if resp.Merged == nil {
		resp.Merged = []uint32{}
	}
	for i := range resp.Identifiers {
		resp.Identifiers[i].Value = Mask(resp.Identifiers[i].Type, resp.Identifiers[i].Value)
	}
	if resp.History == nil {
		resp.History = []LogEntry{}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (g *Graph) serveRemove(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Type      string `json:"type"`
		Value     string `json:"value"`
		RequestID string `json:"request_id"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if _, ok := g.configuredType(req.Type); !ok {
		writeError(w, http.StatusBadRequest, "type: unknown identifier type")
		return
	}
	if req.Value == "" {
		writeError(w, http.StatusBadRequest, "value: must be set")
		return
	}
	if err := g.RemoveIdentifier(req.Type, req.Value, req.RequestID); err != nil {
		writeGraphError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "removed"})
}

func (g *Graph) serveSplit(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ProfileID uint32 `json:"profile_id"`
		RequestID string `json:"request_id"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if req.ProfileID == 0 {
		writeError(w, http.StatusBadRequest, "profile_id: must be a positive 32-bit integer")
		return
	}
	if err := g.Split(req.ProfileID, req.RequestID); err != nil {
		writeGraphError(w, err)
		return
	}
	v, err := g.Profile(req.ProfileID)
	if err != nil {
		writeGraphError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "split", "profile_id": v.ProfileID, "apart": v.Apart})
}

func (g *Graph) configuredType(name string) (*typeInfo, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.types[name]
	return t, t != nil
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "body must be application/json")
		return false
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

func writeGraphError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "not found")
	case errors.Is(err, ErrOpConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Mask hides most of an identifier value for display: an email keeps the
// first letter of its local part and domain and the top-level domain
// ("j***@e***.com"); other values keep at most their first two and last
// two characters, and short values are fully masked.
func Mask(typ, value string) string {
	if typ == TypeEmail {
		if at := strings.LastIndexByte(value, '@'); at > 0 {
			local, domain := value[:at], value[at+1:]
			tld := ""
			if dot := strings.LastIndexByte(domain, '.'); dot > 0 {
				tld = domain[dot:]
			}
			return firstRune(local) + "***@" + firstRune(domain) + "***" + tld
		}
	}
	n := utf8.RuneCountInString(value)
	if n < 8 {
		return "***"
	}
	r := []rune(value)
	return string(r[:2]) + "***" + string(r[n-2:])
}

func firstRune(s string) string {
	_, n := utf8.DecodeRuneInString(s)
	return s[:n]
}

// MarshalJSON writes e as the API and exports show it: kind by name, time
// in RFC 3339, snake_case keys.
func (e LogEntry) MarshalJSON() ([]byte, error) {
	return json.Marshal(historyEntry{Seq: e.Seq, Kind: e.Kind.String(), Time: timeOf(e.Time),
		Survivor: e.Survivor, Merged: e.Merged, MessageID: e.MessageID, Rule: e.Rule, Erased: e.Erased})
}
