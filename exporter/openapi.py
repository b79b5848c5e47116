"""The OpenAPI 3.1 document of the REST API, served at /api/v1/openapi.json.

Generated, not written: the bodies' schemas come from `api_models` (`model_json_schema`), and
the registration and scope bodies are narrowed per configured account from its plugin's params
model, so the document says exactly what this deployment accepts. Only the paths (routes,
parameters, status codes) are declared here. The test suite fuzzes the running API against
the served document (schemathesis, positive and negative data).
"""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import api_models as m
from ._version import __version__
from .config import Account
from .model import State

REF = "#/components/schemas/{model}"
_BODIES: tuple[type[BaseModel], ...] = (
    m.Registration,
    m.BatchResult,
    m.CallRecord,
    m.CallList,
    m.ScopeBody,
    m.ScopeRecord,
    m.ScopeList,
    m.WebhookResult,
    m.ErrorBody,
)


def document(accounts: Iterable[Account], max_batch: int) -> dict[str, Any]:
    """The whole document for these accounts."""
    accounts = list(accounts)
    params = {type(a.provider).Params for a in accounts}
    refs, defs = models_json_schema([(cls, "validation") for cls in (*_BODIES, *params)], ref_template=REF)
    schemas: dict[str, Any] = defs["$defs"]
    name = {cls: refs[(cls, "validation")]["$ref"].rsplit("/", 1)[1] for cls in (*_BODIES, *params)}
    schemas["AccountRegistration"] = _one_of(
        [_registration(a, schemas[name[type(a.provider).Params]]) for a in accounts], schemas[name[m.Registration]]
    )
    schemas["AccountScope"] = _one_of(
        [_scope(a, schemas[name[type(a.provider).Params]]) for a in accounts if a.provider.scope_keys],
        schemas[name[m.ScopeBody]],
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "outbound-call-exporter",
            "version": __version__,
            "description": "Register outbound calls to watch and read their records.",
        },
        "paths": _paths(max_batch),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "api_token; required on writes when configured",
                }
            },
        },
    }


def _one_of(variants: list[dict[str, Any]], generic: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": variants} if variants else generic


def _registration(account: Account, params: dict[str, Any]) -> dict[str, Any]:
    """The registration body for one account: its call id format and its params."""
    fields = {k: v for k, v in params["properties"].items() if k != "call_id"}
    required = [k for k in params.get("required", []) if k in fields and k not in account.defaults]
    body = {"type": "object", "additionalProperties": False, "properties": fields}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["account", "call_id", *(["params"] if required else [])],
        "properties": {
            "account": {"const": account.name},
            "call_id": params["properties"]["call_id"],
            "params": {**body, "required": required} if required else body,
        },
    }


def _scope(account: Account, params: dict[str, Any]) -> dict[str, Any]:
    """The scope body for one account: exactly one of the keys its plugin lists by."""
    keys = sorted(account.provider.scope_keys)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["account", "scope"],
        "properties": {
            "account": {"const": account.name},
            "scope": {
                "oneOf": [
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": [k],
                        "properties": {k: params["properties"][k]},
                    }
                    for k in keys
                ]
            },
        },
    }


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=model)}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, _ref("ErrorBody"))


_WRITE_ERRORS = {
    "401": _error("missing or wrong bearer token"),
    "415": _error("not JSON"),
    "403": _error("no api_token is set and the listener is not loopback: set api_token"),
    "503": _error("max_watched_calls reached, the store cannot be written, or starting"),
}
_STATES = [s.value for s in State]
_ACCOUNT = {"name": "account", "in": "path", "required": True, "schema": {"type": "string"}}
_CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _paths(max_batch: int) -> dict[str, Any]:
    return {
        "/api/v1/calls": {"post": _register(max_batch), "get": _list()},
        "/api/v1/calls/{account}/{call_id}": {
            "parameters": [_ACCOUNT, _CALL_ID],
            "get": {
                "summary": "One call's record",
                "responses": {
                    "200": _json("the call record", _ref("CallRecord")),
                    "404": _error("unknown account or call"),
                    "401": _error("missing or wrong token (api_token_for_reads)"),
                    "503": _error("starting"),
                },
            },
            "delete": {
                "summary": "Stop watching (the record keeps its last state)",
                "security": [{"bearer": []}, {}],
                "responses": {
                    "200": _json("the call record, watching false", _ref("CallRecord")),
                    "404": _error("unknown account or call"),
                    **_WRITE_ERRORS,
                },
            },
        },
        "/api/v1/scopes": {
            "post": _add_scope(),
            "get": {
                "summary": "Watch scopes",
                "responses": {
                    "200": _json("every scope", _ref("ScopeList")),
                    "401": _error("missing or wrong token (api_token_for_reads)"),
                    "503": _error("starting"),
                },
            },
        },
        "/api/v1/scopes/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": {
                "summary": "Stop watching a scope",
                "security": [{"bearer": []}, {}],
                "responses": {"204": {"description": "deleted"}, "404": _error("unknown scope"), **_WRITE_ERRORS},
            },
        },
        "/api/v1/webhooks/{account}": _webhook(),
        "/api/v1/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1 document"}}}
        },
        "/-/healthy": {"get": {"summary": "Liveness", "responses": {"200": {"description": "healthy"}}}},
        "/-/ready": {
            "get": {
                "summary": "Readiness (store loaded, polling)",
                "responses": {"200": {"description": "ready"}, "503": {"description": "loading"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition or OpenMetrics"}},
            }
        },
    }


def _register(max_batch: int) -> dict[str, Any]:
    one, batch = (
        _ref("AccountRegistration"),
        {"type": "array", "minItems": 1, "maxItems": max_batch, "items": _ref("AccountRegistration")},
    )
    answer = {"oneOf": [_ref("CallRecord"), _ref("BatchResult")]}
    return {
        "summary": "Register one call, or a batch (all-or-nothing)",
        "security": [{"bearer": []}, {}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [one, batch]}}}},
        "responses": {
            "201": _json("registered (a batch: at least one new)", answer),
            "200": _json("already known (idempotent)", answer),
            "400": _error("malformed JSON or body"),
            "404": _error("unknown account"),
            "413": _error("body over max_request_bytes or batch over max_batch"),
            "422": _error("a field does not validate"),
            **_WRITE_ERRORS,
        },
    }


def _list() -> dict[str, Any]:
    empty = {"type": "string", "maxLength": 0}  # the contract's `?account=&state=` template: empty = not given
    return {
        "summary": "List calls, newest first",
        "parameters": [
            {"name": "account", "in": "query", "schema": {"type": "string"}},
            {"name": "state", "in": "query", "schema": {"type": "string", "enum": [*_STATES, ""]}},
            {
                "name": "since",
                "in": "query",
                "allowEmptyValue": True,
                "schema": {"anyOf": [{"type": "string", "format": "date-time"}, empty]},
            },
            {
                "name": "limit",
                "in": "query",
                "allowEmptyValue": True,
                "schema": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1000}, empty]},
            },
            {
                "name": "cursor",
                "in": "query",
                "allowEmptyValue": True,
                "schema": {"anyOf": [{"type": "string", "pattern": m.CURSOR_PATTERN}, empty]},
            },
        ],
        "responses": {
            "200": _json("a page of calls", _ref("CallList")),
            "400": _error("bad query parameter"),
            "401": _error("missing or wrong token (api_token_for_reads)"),
            "404": _error("unknown account"),
            "503": _error("starting"),
        },
    }


def _add_scope() -> dict[str, Any]:
    return {
        "summary": "Watch every call of an agent (from now on) or every job of a batch",
        "security": [{"bearer": []}, {}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("AccountScope")}}},
        "responses": {
            "201": _json("watched", _ref("ScopeRecord")),
            "400": _error("malformed body"),
            "404": _error("unknown account"),
            "413": _error("body over max_request_bytes"),
            "422": _error("a scope the provider does not support, or an invalid id"),
            **_WRITE_ERRORS,
        },
    }


def _webhook() -> dict[str, Any]:
    return {
        "parameters": [
            _ACCOUNT,
            {"name": "token", "in": "query", "schema": {"type": "string"}},
            {"name": "X-Webhook-Token", "in": "header", "schema": {"type": "string"}},
        ],
        "post": {
            "summary": "A provider's result webhook (authenticated by the account's webhook_token)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "202": _json("accepted, or about a call not watched", _ref("WebhookResult")),
                "400": _error("not JSON, or no call id and status"),
                "401": _error("wrong webhook token"),
                "404": _error("unknown account, or a provider without webhooks"),
                "413": _error("body over max_request_bytes"),
                "415": _error("not JSON"),
                "503": _error("starting"),
            },
        },
    }
