"""How the REST API reads what clients send: JSON with limits, webhooks as received, times.

Nothing a client sends gets past here as a 500: JSON with duplicate keys, NaN or absurd nesting,
a wrong Content-Type, a form body that does not parse, a malformed `since` — each is a
`RequestError` naming the problem.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import httpx
from aiohttp import web

from .errors import RequestError

MAX_JSON_DEPTH = 32
MAX_FORM_FIELDS = 200


async def read_json(request: web.Request) -> Any:
    """The body as JSON: no duplicate keys, no NaN, bounded depth; 400/415 otherwise."""
    ctype = request.content_type
    if request.headers.get("Content-Type") and ctype not in ("application/json", "application/x-ndjson"):
        raise RequestError(f"Content-Type {ctype!r} is not supported; send application/json", 415)
    raw = await request.read()
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise RequestError("body is not valid UTF-8", 400) from None
    except RecursionError:
        raise RequestError(f"body is nested deeper than {MAX_JSON_DEPTH} levels", 400) from None
    except ValueError as exc:
        raise RequestError(f"body is not valid JSON: {exc}", 400) from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise RequestError(f"body is nested deeper than {MAX_JSON_DEPTH} levels", 400)
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return depth
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        level = nxt
    return depth - 1


def parse_since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise RequestError("since: must be an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z", 400) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


async def as_httpx(request: web.Request) -> httpx.Request:
    """The webhook as received, in the plugins' request type, for signature checks."""
    return httpx.Request(
        request.method, str(request.url), headers=list(request.headers.items()), content=await request.read()
    )


async def webhook_body(request: web.Request) -> dict[str, Any]:
    """A JSON object, or a form-encoded body's fields (Twilio's status callbacks) as strings."""
    if request.content_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qsl(
                (await request.read()).decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=True,
                max_num_fields=MAX_FORM_FIELDS,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestError(f"form body is not valid: {exc}", 400) from None
        return _no_duplicates(fields)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RequestError("body must be a JSON object", 400)
    return body
