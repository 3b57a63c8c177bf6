package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/identity"
	"github.com/cdpstream/cdpstream/segments"
	"github.com/cdpstream/cdpstream/segments/audience"
)

// profileView serves GET /v1/profiles/{id}: one person as the segment
// builders' API shows them, put together from the packages that each hold
// a part (identity, audiences' traits and memberships, consent). It lives
// here because those packages do not import each other.
type profileView struct {
	g          *identity.Graph
	aud        *audience.Store
	consent    *segments.Consent // nil: consent is off
	maskTraits []string          // trait keys whose string values are masked
}

type profileResponse struct {
	ProfileID   uint32                `json:"profile_id"`
	Created     time.Time             `json:"created"`
	Identifiers []maskedIdentifier    `json:"identifiers"`
	Traits      map[string]any        `json:"traits"`
	Consent     *segments.ProfileView `json:"consent,omitempty"`
	Audiences   []string              `json:"audiences"`
	Merged      []uint32              `json:"merged,omitempty"`
}

type maskedIdentifier struct {
	Type     string    `json:"type"`
	Value    string    `json:"value"` // masked
	LastSeen time.Time `json:"last_seen"`
}

func (p profileView) route() engine.Route {
	return engine.Route{Method: http.MethodGet, Path: "/v1/profiles/{id}", Scope: engine.ScopeProfilesRead, Personal: true, Handler: p}
}

func (p profileView) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 32)
	if err != nil || id == 0 {
		engine.WriteError(w, http.StatusBadRequest, "id: want a profile id (a positive integer)")
		return
	}
	engine.SetAuditTarget(r.Context(), "profile:"+r.PathValue("id"))
	v, err := p.g.Profile(uint32(id))
	if errors.Is(err, identity.ErrNotFound) {
		engine.WriteError(w, http.StatusNotFound, "no profile "+r.PathValue("id"))
		return
	}
	if err != nil {
		engine.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := profileResponse{ProfileID: v.ProfileID, Created: v.Created, Merged: v.Merged, Traits: map[string]any{}, Audiences: []string{}}
	for _, id := range v.Identifiers {
		out.Identifiers = append(out.Identifiers, maskedIdentifier{Type: id.Type, Value: identity.Mask(id.Type, id.Value), LastSeen: id.LastSeen})
	}
	raw, _, err := p.aud.Traits(v.ProfileID)
	if err != nil {
		engine.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.Traits); err != nil {
			engine.WriteError(w, http.StatusInternalServerError, "stored traits are not JSON")
			return
		}
	}
	for k, val := range out.Traits {
		if s, ok := val.(string); ok && slices.Contains(p.maskTraits, k) {
			out.Traits[k] = identity.Mask(k, s)
		}
	}
	if p.consent != nil {
		c := p.consent.View(v.ProfileID)
		out.Consent = &c
	}
	for _, info := range p.aud.List() {
		if in, err := p.aud.Contains(info.ID, v.ProfileID); err == nil && in {
			out.Audiences = append(out.Audiences, info.ID)
		}
	}
	engine.WriteJSON(w, http.StatusOK, out)
}
