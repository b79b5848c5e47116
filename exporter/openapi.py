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
                 "403": _error("no api_token is set and the listener is not loopback: set api_token"),
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
        "/api/v1/scopes": {
            "post": {
                "summary": "Watch every call of an agent (from now on) or every job of a batch",
                "security": [{"bearer": []}, {}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["account", "scope"], "additionalProperties": False,
                    "properties": {"account": {"type": "string"},
                                   "scope": {"type": "object", "minProperties": 1, "maxProperties": 1,
                                             "additionalProperties": _ID}}}}}},
                "responses": {"201": {"description": "watched", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Scope"}}}},
                    "400": _error("malformed body"), "404": _error("unknown account"),
                    "422": _error("a scope the provider does not support, or an invalid id"),
                    "413": _error("body over max_request_bytes"), **_WRITE_ERRORS},
            },
            "get": {"summary": "Watch scopes", "responses": {
                "200": {"description": "every scope", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["scopes"], "additionalProperties": False,
                    "properties": {"scopes": {"type": "array", "items": {"$ref": "#/components/schemas/Scope"}}}}}}},
                "401": _error("missing or wrong token (api_token_for_reads)"), "503": _error("starting")}},
        },
        "/api/v1/scopes/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": {"summary": "Stop watching a scope", "security": [{"bearer": []}, {}],
                       "responses": {"204": {"description": "deleted"}, "404": _error("unknown scope"),
                                     **_WRITE_ERRORS}},
        },
        "/api/v1/webhooks/{account}": {
            "parameters": [_ACCOUNT_PARAM,
                           {"name": "token", "in": "query", "schema": {"type": "string"}},
                           {"name": "X-Webhook-Token", "in": "header", "schema": {"type": "string"}}],
            "post": {"summary": "A provider's result webhook (authenticated by the account's webhook_token)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                     "responses": {"202": {"description": "accepted, or about a call not watched", "content": {
                         "application/json": {"schema": {"type": "object", "required": ["result"], "properties": {
                             "result": {"type": "string", "enum": ["accepted", "unknown_call"]}}}}}},
                         "400": _error("not JSON, or no call id and status"), "401": _error("wrong webhook token"),
                         "404": _error("unknown account, or a provider without webhooks"),
                         "413": _error("body over max_request_bytes"), "415": _error("not JSON"),
                         "503": _error("starting")}},
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
            "Scope": {
                "type": "object", "additionalProperties": False,
                "required": ["id", "account", "scope", "created_at", "discovered", "complete"],
                "properties": {"id": {"type": "string"}, "account": {"type": "string"},
                               "scope": {"type": "object"}, "created_at": {"type": "string", "format": "date-time"},
                               "discovered": {"type": "integer", "minimum": 0}, "complete": {"type": "boolean"}}},
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
