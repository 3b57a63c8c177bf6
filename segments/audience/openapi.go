package audience

import "net/http"

// OpenAPI returns the OpenAPI 3.1 document of Routes, served at
// /openapi.json. The caller may merge other packages' paths into it.
func OpenAPI() []byte { return []byte(openAPIDoc) }

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(openAPIDoc))
}

const openAPIDoc = `{
  "openapi": "3.1.0",
  "info": {
    "title": "cdpstream audiences",
    "version": "1",
    "description": "Audience definitions, real-time memberships as roaring bitmaps, and set expressions over audiences and consent purposes. Every endpoint but this document needs a bearer token with the scope named in x-scope; endpoints marked x-personal are audited. Errors are {\"error\": \"...\"}; validation errors add \"path\", the JSON path of the bad node."
  },
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "responses": {
      "Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Unauthorized": {"description": "missing or unknown token (WWW-Authenticate: Bearer)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Forbidden": {"description": "the token lacks the scope", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "TooMany": {"description": "rate limit exceeded; see Retry-After", "headers": {"Retry-After": {"schema": {"type": "integer"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    },
    "parameters": {
      "id": {"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,63}$"}}
    },
    "schemas": {
      "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "path": {"type": "string", "description": "JSON path of the invalid node, e.g. condition.and[2].event.count.min"}}},
      "TraitCond": {"type": "object", "required": ["path", "op"], "properties": {
        "path": {"type": "string", "description": "dot-separated path into the traits (or, in event where, into the event)"},
        "op": {"enum": ["eq", "neq", "in", "exists", "gt", "gte", "lt", "lte", "before", "after", "within", "contains"]},
        "value": {"description": "scalar for eq/neq/contains, array for in, number for gt..lte, RFC 3339 time for before/after, duration (\"7d\") for within; absent for exists"}}},
      "EventCond": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"},
        "where": {"type": "array", "items": {"$ref": "#/components/schemas/TraitCond"}},
        "count": {"type": "object", "properties": {"min": {"type": "integer", "minimum": 0, "default": 1}, "max": {"type": "integer", "minimum": 0}}},
        "within": {"type": "string", "description": "whole days, e.g. \"30d\"; absent: ever"}}},
      "ConsentCond": {"type": "object", "required": ["purpose", "state"], "properties": {"purpose": {"type": "string"}, "state": {"enum": ["granted", "denied", "unknown"]}}},
      "Condition": {"type": "object", "description": "exactly one property", "minProperties": 1, "maxProperties": 1, "properties": {
        "and": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Condition"}},
        "or": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Condition"}},
        "not": {"$ref": "#/components/schemas/Condition"},
        "trait": {"$ref": "#/components/schemas/TraitCond"},
        "event": {"$ref": "#/components/schemas/EventCond"},
        "consent": {"$ref": "#/components/schemas/ConsentCond"},
        "audience": {"type": "string", "description": "membership of another audience"}}},
      "Definition": {"type": "object", "required": ["id", "condition"], "properties": {
        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,63}$"},
        "name": {"type": "string"},
        "activation_purpose": {"type": "string", "description": "reads intersect members with the profiles that granted this purpose"},
        "condition": {"$ref": "#/components/schemas/Condition"},
        "version": {"type": "integer", "readOnly": true},
        "created": {"type": "string", "format": "date-time", "readOnly": true},
        "updated": {"type": "string", "format": "date-time", "readOnly": true}}},
      "Audience": {"allOf": [{"$ref": "#/components/schemas/Definition"}, {"type": "object", "properties": {
        "size": {"type": "integer"},
        "changed": {"type": "string", "format": "date-time"},
        "backfill": {"type": "object", "properties": {"running": {"type": "boolean"}, "done": {"type": "integer"}, "total": {"type": "integer"}}}}}]}
    }
  },
  "security": [{"bearer": []}],
  "paths": {
    "/v1/audiences": {
      "get": {"summary": "List audiences with sizes", "x-scope": "audiences:read",
        "responses": {"200": {"description": "audiences", "content": {"application/json": {"schema": {"type": "object", "properties": {"audiences": {"type": "array", "items": {"$ref": "#/components/schemas/Audience"}}}}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "429": {"$ref": "#/components/responses/TooMany"}}},
      "post": {"summary": "Create an audience; back-fill starts over known profiles", "x-scope": "audiences:write",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Definition"}}}},
        "responses": {"201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Audience"}}}},
          "400": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"}, "413": {"$ref": "#/components/responses/Error"},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "429": {"$ref": "#/components/responses/TooMany"}}}
    },
    "/v1/audiences/{id}": {
      "parameters": [{"$ref": "#/components/parameters/id"}],
      "get": {"summary": "Definition, size, last change, back-fill progress", "x-scope": "audiences:read",
        "responses": {"200": {"description": "audience", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Audience"}}}}, "404": {"$ref": "#/components/responses/Error"}}},
      "put": {"summary": "Store a new version; membership is recomputed", "x-scope": "audiences:write",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Definition"}}}},
        "responses": {"200": {"description": "updated", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Audience"}}}}, "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}},
      "delete": {"summary": "Delete an audience (409 while another references it)", "x-scope": "audiences:write",
        "responses": {"204": {"description": "deleted"}, "404": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/audiences/{id}/members": {
      "parameters": [{"$ref": "#/components/parameters/id"}],
      "get": {"summary": "Members as NDJSON, ascending profile ids", "x-scope": "audiences:read", "x-personal": true,
        "description": "One {\"profile_id\":N} line per member above cursor, at most limit, then {\"cursor\":\"N\",\"more\":bool}. Pass cursor back for the next page: ids only grow, so a member present throughout paging is returned exactly once. With as=TYPE each line also carries the member's values of that identifier type: {\"profile_id\":N,\"email\":[\"...\"]}.",
        "parameters": [{"name": "cursor", "in": "query", "schema": {"type": "string"}}, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 10000}}, {"name": "as", "in": "query", "schema": {"type": "string"}, "description": "an identifier type (email, user_id, device_id, ...)"}],
        "responses": {"200": {"description": "members", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}, "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/audiences/{id}/contains": {
      "parameters": [{"$ref": "#/components/parameters/id"}],
      "get": {"summary": "Is a profile a member", "x-scope": "audiences:read", "x-personal": true,
        "parameters": [{"name": "profile_id", "in": "query", "schema": {"type": "integer"}}, {"name": "type", "in": "query", "schema": {"type": "string"}}, {"name": "value", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "answer", "content": {"application/json": {"schema": {"type": "object", "properties": {"audience": {"type": "string"}, "profile_id": {"type": "integer"}, "member": {"type": "boolean"}}}}}},
          "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}, "501": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/query": {
      "post": {"summary": "Evaluate a set expression: vip AND consent:advertising AND NOT churned", "x-scope": "audiences:read", "x-personal": true,
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["expression"], "properties": {
          "expression": {"type": "string", "description": "audience ids and consent:PURPOSE with AND, OR, NOT and parentheses; NOT is relative to every known profile"},
          "members": {"type": "boolean", "default": false}, "cursor": {"type": "string"}, "limit": {"type": "integer", "default": 10000}}}}}},
        "responses": {"200": {"description": "result", "content": {"application/json": {"schema": {"type": "object", "properties": {
          "expression": {"type": "string"}, "count": {"type": "integer"}, "members": {"type": "array", "items": {"type": "integer"}}, "cursor": {"type": "string", "description": "set when more members may follow"}}}}}},
          "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}}
  }
}
`
