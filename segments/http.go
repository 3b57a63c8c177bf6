package segments

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/cdpstream/cdpstream/engine"
)

// Handler serves the consent API:
//
//	PUT /v1/profiles/{id}/consent   body {purpose: {status, timestamp, expires_at, source}}; 410 for a profile erased since start
//	GET /v1/profiles/{id}/consent
//	GET /v1/consent/explain?sink=NAME&message_id=ID    (from the sink's last 4096 drops)
//	GET /v1/consent/explain?sink=NAME&profile_id=N     (the policy against the profile now)
//
// Errors are 4xx/5xx JSON {"error": ...} (engine.WriteError). Profile ids
// are canonical ids: the API does not follow identity redirects.
func (c *Consent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/profiles/{id}/consent", c.putConsent)
	mux.HandleFunc("GET /v1/profiles/{id}/consent", c.getConsent)
	mux.HandleFunc("GET /v1/consent/explain", c.explain)
	return mux
}

// PurposeView is one purpose of a profile in API responses.
type PurposeView struct {
	Status    string     `json:"status"`    // the stored decision: granted, denied, unknown
	Effective string     `json:"effective"` // at the time of the response (expiry applied)
	Timestamp *time.Time `json:"timestamp,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Source    string     `json:"source,omitempty"`
	Default   string     `json:"default"`
}

// ProfileView is a profile's consent in API responses.
type ProfileView struct {
	ProfileID  uint32                 `json:"profile_id"`
	Suppressed bool                   `json:"suppressed"`
	Mask       string                 `json:"consent_mask"` // hex, as the consent_mask column would hold
	Purposes   map[string]PurposeView `json:"purposes"`
}

func pathID(r *http.Request) (uint32, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 32)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("profile id %q is not a profile id (1..4294967295)", r.PathValue("id"))
	}
	return uint32(id), nil
}

// View returns profile pid's consent; the caller must not hold c.mu.
func (c *Consent) View(pid uint32) ProfileView {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.view(pid, c.now().UnixMicro())
}

func (c *Consent) view(pid uint32, now int64) ProfileView {
	p := c.profiles.get(pid)
	v := ProfileView{ProfileID: pid, Suppressed: c.suppressed.Contains(pid), Purposes: map[string]PurposeView{}}
	var known, granted uint64
	for _, pu := range c.cat.purposes {
		pv := PurposeView{Status: "unknown", Effective: "unknown", Default: pu.Default}
		if d, ok := p.get(pu.Bit); ok {
			ts := time.UnixMicro(d.Time).UTC()
			pv.Status, pv.Effective, pv.Timestamp, pv.Source = d.Status.String(), d.effective(now).String(), &ts, d.Source.String()
			if d.Expires != 0 {
				ex := time.UnixMicro(d.Expires).UTC()
				pv.ExpiresAt = &ex
			}
			switch d.effective(now) {
			case Granted:
				known |= 1 << pu.Bit
				granted |= 1 << pu.Bit
			case Denied:
				known |= 1 << pu.Bit
			}
		}
		v.Purposes[pu.Name] = pv
	}
	v.Mask = fmt.Sprintf("%016x", granted|c.cat.defGranted&^known)
	return v
}

func (c *Consent) getConsent(w http.ResponseWriter, r *http.Request) {
	pid, err := pathID(r)
	if err != nil {
		engine.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	engine.WriteJSON(w, http.StatusOK, c.View(pid))
}

// ConsentUpdate is one purpose of a PUT body.
type ConsentUpdate struct {
	Status    string     `json:"status"`
	Timestamp *time.Time `json:"timestamp"`
	ExpiresAt *time.Time `json:"expires_at"`
	Source    string     `json:"source"`
}

func (c *Consent) putConsent(w http.ResponseWriter, r *http.Request) {
	pid, err := pathID(r)
	if err != nil {
		engine.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	var body map[string]ConsentUpdate
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		engine.WriteError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	if len(body) == 0 {
		engine.WriteError(w, http.StatusBadRequest, "body: no purposes")
		return
	}
	now := c.now()
	type upd struct {
		bit int
		d   Decision
	}
	var ups []upd
	names := make([]string, 0, len(body))
	for name := range body {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		u := body[name]
		bit, ok := c.cat.bitOf(name)
		if !ok {
			engine.WriteError(w, http.StatusBadRequest, fmt.Sprintf("%s: not a purpose of the catalogue", name))
			return
		}
		d := Decision{Time: now.UnixMicro(), Source: SourceAPI}
		switch u.Status {
		case "granted":
			d.Status = Granted
		case "denied":
			d.Status = Denied
		default:
			engine.WriteError(w, http.StatusBadRequest, fmt.Sprintf("%s.status: %q (want granted or denied)", name, u.Status))
			return
		}
		if u.Timestamp != nil {
			d.Time = u.Timestamp.UnixMicro()
		}
		if u.ExpiresAt != nil {
			if d.Status != Granted {
				engine.WriteError(w, http.StatusBadRequest, name+".expires_at: only a grant expires")
				return
			}
			if !u.ExpiresAt.After(time.UnixMicro(d.Time)) {
				engine.WriteError(w, http.StatusBadRequest, name+".expires_at: must be after the timestamp")
				return
			}
			d.Expires = u.ExpiresAt.UnixMicro()
		}
		if u.Source != "" {
			if d.Source = ParseSource(u.Source); d.Source == SourceNone || d.Source == SourceMerge {
				engine.WriteError(w, http.StatusBadRequest, fmt.Sprintf("%s.source: %q is not a consent source", name, u.Source))
				return
			}
		}
		ups = append(ups, upd{bit, d})
	}
	applied := map[string]bool{}
	c.mu.Lock()
	if c.erased.Contains(pid) {
		// Ids are never reused: a decision would be orphaned state.
		c.mu.Unlock()
		engine.WriteError(w, http.StatusGone, fmt.Sprintf("profile %d was erased", pid))
		return
	}
	nowUs := now.UnixMicro()
	c.expire(nowUs)
	c.newEpoch()
	for _, u := range ups {
		applied[c.cat.purposeName(u.bit)] = c.apply(pid, u.bit, u.d, nowUs)
	}
	c.m.flushCounts()
	err = c.persist()
	v := c.view(pid, nowUs)
	c.mu.Unlock()
	if err != nil {
		engine.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	engine.WriteJSON(w, http.StatusOK, struct {
		ProfileView
		Applied map[string]bool `json:"applied"` // false: the profile holds a later decision
	}{v, applied})
}

// Explanation answers the explain endpoint.
type Explanation struct {
	Sink      string `json:"sink"`
	MessageID string `json:"message_id,omitempty"`
	ProfileID uint32 `json:"profile_id,omitempty"`
	Decision  string `json:"decision"` // kept, dropped, not_found
	Reason    string `json:"reason,omitempty"`
	At        string `json:"at,omitempty"`
	Detail    string `json:"detail"`
}

func (c *Consent) explain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sink := q.Get("sink")
	c.pmu.Lock()
	p := c.policies[sink]
	c.pmu.Unlock()
	if p == nil {
		engine.WriteError(w, http.StatusNotFound, fmt.Sprintf("sink %q has no consent policy", sink))
		return
	}
	ex := Explanation{Sink: sink}
	switch {
	case q.Get("message_id") != "":
		ex.MessageID = q.Get("message_id")
		p.mu.Lock()
		e, ok := p.drops.find(ex.MessageID)
		p.mu.Unlock()
		if !ok {
			ex.Decision = "not_found"
			ex.Detail = "not among the sink's last 4096 drops: kept, or dropped earlier"
		} else {
			ex.Decision, ex.Reason, ex.ProfileID = "dropped", string(e.reason), e.pid
			ex.At = e.at.UTC().Format(time.RFC3339Nano)
			ex.Detail = reasonDetail(e.reason)
		}
	case q.Get("profile_id") != "":
		id, err := strconv.ParseUint(q.Get("profile_id"), 10, 32)
		if err != nil || id == 0 {
			engine.WriteError(w, http.StatusBadRequest, "profile_id: not a profile id")
			return
		}
		ex.ProfileID = uint32(id)
		reason := p.ExplainProfile(uint32(id))
		ex.Decision, ex.Reason = "kept", string(reason)
		if reason != "" {
			ex.Decision = "dropped"
		}
		ex.Detail = "the sink's policy against the profile's consent now (decide_by profile; event consent and the rudderstack block need an event)"
		if reason != "" {
			ex.Detail = reasonDetail(reason) + "; " + ex.Detail
		}
	default:
		engine.WriteError(w, http.StatusBadRequest, "message_id or profile_id is required")
		return
	}
	engine.WriteJSON(w, http.StatusOK, ex)
}

// ExplainProfile evaluates p's purposes against profile pid's consent now
// ("" = kept).
func (p *Policy) ExplainProfile(pid uint32) engine.Reason {
	c := p.c
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.erased.Contains(pid) {
		return ReasonErased
	}
	if c.suppressed.Contains(pid) {
		return ReasonSuppressed
	}
	if p.req == 0 {
		return ""
	}
	var k, g uint64
	if pr := c.profiles.get(pid); pr != nil {
		k, g = pr.granted|pr.denied, pr.granted
	}
	return p.decide(g, k)
}

func reasonDetail(r engine.Reason) string {
	switch r {
	case ReasonDenied:
		return "a required purpose was denied"
	case ReasonUnknown:
		return "a required purpose had no decision and the policy does not allow unknown"
	case ReasonSuppressed:
		return "the profile is suppressed"
	case ReasonErased:
		return "the profile was erased after the event was resolved to it; its events still in flight are dropped"
	case ReasonRudderStack:
		return "the event's consentManagement denied the sink's RudderStack consents"
	}
	return ""
}
