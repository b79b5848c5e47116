"""The OpenAPI 3.0 document of the REST API, served at /api/v1/openapi.json.

Written by hand from design.md's contract; the test suite fuzzes the running API against it
(schemathesis), so a drift between this document and the handlers fails CI.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .model import State
from .provider import PATH_SEGMENT_PATTERN

_TS = {"type": "string", "format": "date-time", "nullable": True}
_ID = {"type": "string", "pattern": PATH_SEGMENT_PATTERN, "minLength": 1, "maxLength": 128}
_STATES = [s.value for s in State]


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _record(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Call"}}}}


_ACCOUNT_PARAM = {"name": "account", "in": "path", "required": True, "schema": {"type": "string"}}
_CALL_PARAM = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}
_WRITE_ERRORS = {"401": _error("missing or wrong bearer token"), "415": _error("not JSON"),
                 "503": _error("max_watched_calls reached, the store cannot be written, or starting")}

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "outbound-call-exporter", "version": __version__,
             "description": "Register outbound calls to watch and read their records."},
    "paths": {
        "/api/v1/calls": {
            "post": {
                "summary": "Register one call, or a batch (all-or-nothing)",
                "security": [{"bearer": []}, {}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Registration"},
                    {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Registration"}},
                ]}}}},
                "responses": {
                    "201": {"description": "registered (a batch: at least one new)", "content": {"application/json": {
                        "schema": {"oneOf": [{"$ref": "#/components/schemas/Call"},
                                             {"$ref": "#/components/schemas/BatchResult"}]}}}},
                    "200": {"description": "already known (idempotent)", "content": {"application/json": {
                        "schema": {"oneOf": [{"$ref": "#/components/schemas/Call"},
                                             {"$ref": "#/components/schemas/BatchResult"}]}}}},
                    "400": _error("malformed JSON or body"), "404": _error("unknown account"),
                    "413": _error("body over max_request_bytes or batch over max_batch"),
                    "422": _error("a field does not validate"), **_WRITE_ERRORS,
                },
            },
            "get": {
                "summary": "List calls, newest first",
                "parameters": [
                    {"name": "account", "in": "query", "schema": {"type": "string"}},
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": _STATES + [""]}},
                    {"name": "since", "in": "query", "allowEmptyValue": True,
                     "schema": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "maxLength": 0}]}},
                    {"name": "limit", "in": "query", "allowEmptyValue": True,
                     "schema": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1000},
                                          {"type": "string", "maxLength": 0}]}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "a page of calls", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["calls", "next"], "additionalProperties": False,
                        "properties": {"calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
                                       "next": {"type": "string", "nullable": True}}}}}},
                    "400": _error("bad query parameter"), "404": _error("unknown account"),
                    "503": _error("starting"),
                },
            },
        },
        "/api/v1/calls/{account}/{call_id}": {
            "parameters": [_ACCOUNT_PARAM, _CALL_PARAM],
            "get": {"summary": "One call's record",
                    "responses": {"200": _record("the call record"), "404": _error("unknown account or call"),
                                  "503": _error("starting")}},
            "delete": {"summary": "Stop watching (the record keeps its last state)",
                       "security": [{"bearer": []}, {}],
                       "responses": {"200": _record("the call record, watching false"),
                                     "404": _error("unknown account or call"), **_WRITE_ERRORS}},
        },
        "/api/v1/openapi.json": {"get": {"summary": "This document",
                                         "responses": {"200": {"description": "OpenAPI 3.0 document"}}}},
        "/-/healthy": {"get": {"summary": "Liveness", "responses": {"200": {"description": "healthy"}}}},
        "/-/ready": {"get": {"summary": "Readiness (store loaded, polling)",
                             "responses": {"200": {"description": "ready"}, "503": {"description": "loading"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition or OpenMetrics"}}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "api_token; required on writes when configured"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
                      "properties": {"error": {"type": "string"}}},
            "Registration": {
                "type": "object", "required": ["account", "call_id"], "additionalProperties": False,
                "properties": {"account": {"type": "string"}, "call_id": _ID,
                               "params": {"type": "object", "additionalProperties": _ID}}},
            "BatchResult": {
                "type": "object", "required": ["calls", "created", "existing"], "additionalProperties": False,
                "properties": {"calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
                               "created": {"type": "integer", "minimum": 0},
                               "existing": {"type": "integer", "minimum": 0}}},
            "Transition": {
                "type": "object", "required": ["state", "provider_status", "at"], "additionalProperties": False,
                "properties": {"state": {"type": "string", "enum": _STATES},
                               "provider_status": {"type": "string", "nullable": True},
                               "at": {"type": "string", "format": "date-time"}}},
            "Call": {
                "type": "object", "additionalProperties": False,
                "required": ["account", "provider", "call_id", "params", "state", "provider_status", "reason",
                             "watching", "created_at", "answered_at", "ended_at", "duration_seconds",
                             "first_seen_at", "last_polled_at", "polls", "poll_errors", "extras", "history"],
                "properties": {
                    "account": {"type": "string"}, "provider": {"type": "string"}, "call_id": {"type": "string"},
                    "params": {"type": "object"}, "state": {"type": "string", "enum": _STATES},
                    "provider_status": {"type": "string", "nullable": True},
                    "reason": {"type": "string", "nullable": True}, "watching": {"type": "boolean"},
                    "created_at": _TS, "answered_at": _TS, "ended_at": _TS,
                    "duration_seconds": {"type": "number", "nullable": True},
                    "first_seen_at": {"type": "string", "format": "date-time"}, "last_polled_at": _TS,
                    "polls": {"type": "integer", "minimum": 0}, "poll_errors": {"type": "integer", "minimum": 0},
                    "extras": {"type": "object"},
                    "history": {"type": "array", "items": {"$ref": "#/components/schemas/Transition"}},
                }},
        },
    },
}
