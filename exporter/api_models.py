"""The REST API's request and response bodies as pydantic models: one source of truth.

Request bodies are validated through these models (`parse_body`), and the OpenAPI document
(`openapi.py`) is generated from them, so the call record's shape lives here only; the test
suite checks what the store answers against `CallRecord`. Request models check the shape
only: values (call ids, params, scopes) are the plugin's to validate, because only the plugin
knows its id formats.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RequestError
from .model import State

M = TypeVar("M", bound=BaseModel)

#: the list cursor: the sequence number of the last record of the previous page
CURSOR_PATTERN = r"^[0-9]{1,18}$"


class Body(BaseModel):
    """Base of every body: unknown fields are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class Registration(Body):
    """`POST /api/v1/calls`: one call to watch (or an array of these: a batch)."""

    account: str = Field(description="a configured account's name")
    call_id: str = Field(description="the provider's call id, in the plugin's format")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="per-call params; merged over the account's settings defaults and validated by the plugin",
    )


class Transition(Body):
    """One change of state, oldest first; `at` on the provider's clock when it gives one."""

    state: State
    provider_status: str | None
    at: datetime


class CallRecord(Body):
    """A watched call and its outcome (docs/design.md's record: every field always present)."""

    account: str
    provider: str
    call_id: str
    params: dict[str, Any]
    state: State
    provider_status: str | None = Field(description="the raw status, as the provider spells it")
    reason: str | None
    watching: bool
    created_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    first_seen_at: datetime = Field(description="when the exporter registered the call")
    last_polled_at: datetime | None
    polls: int = Field(ge=0)
    poll_errors: int = Field(ge=0)
    extras: dict[str, Any] = Field(description="provider fields worth keeping, secrets removed")
    history: list[Transition]


class BatchResult(Body):
    """The answer to a batch registration."""

    calls: list[CallRecord]
    created: int = Field(ge=0)
    existing: int = Field(ge=0)


class CallList(Body):
    """`GET /api/v1/calls`: a page of records, newest first."""

    calls: list[CallRecord]
    next: str | None = Field(pattern=CURSOR_PATTERN, description="the cursor of the next page, or null")


class ScopeBody(Body):
    """`POST /api/v1/scopes`: watch an agent's or a batch's calls."""

    account: str
    scope: dict[str, Any] = Field(description='exactly one key the plugin supports, e.g. {"agent_id": "..."}')


class ScopeRecord(Body):
    """A watch scope."""

    id: str
    account: str
    scope: dict[str, str]
    created_at: datetime
    discovered: int = Field(ge=0)
    complete: bool


class ScopeList(Body):
    """`GET /api/v1/scopes`."""

    scopes: list[ScopeRecord]


class WebhookResult(Body):
    """The answer to a provider's result webhook."""

    result: str = Field(pattern="^(accepted|unknown_call)$")


class ErrorBody(Body):
    """Every 4xx/5xx answer: what is wrong, naming the field or value."""

    error: str


# -- validating request bodies ----------------------------------------------------------------

_PLAIN = {
    "missing": "required field is missing",
    "string_type": "must be a string",
    "dict_type": "must be a JSON object",
}


def parse_body(model: type[M], data: Any, where: str = "") -> M:
    """`data` as `model`, or a `RequestError` naming the field (`where` prefixes batch items)."""
    if not isinstance(data, dict):
        raise RequestError(f"{where}body must be a JSON object", 400)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        field = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            raise RequestError(f"{where}{field[:64]}: unknown field (allowed: {allowed})") from None
        raise RequestError(f"{where}{field}: {_PLAIN.get(err['type'], err['msg'])}") from None


def encode_cursor(seq: int | None) -> str | None:
    return None if seq is None else str(seq)


def decode_cursor(cursor: str) -> int:
    """Raises ValueError for anything that is not one of our cursors."""
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise ValueError("not a cursor")
    return int(cursor)
