"""HTTP side: /metrics, the REST API and health endpoints (an aiohttp app factory).

Every error is `{"error": "..."}` with a 4xx status naming the field or value; nothing a client
sends can produce a 500 (unexpected failures are logged and answered with a generic 500).
Access logs carry the path only, never the query string (webhook tokens may travel there).
"""

from __future__ import annotations

import hmac
import logging
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from prometheus_client.exposition import choose_encoder

from . import landing, openapi
from .api_models import ErrorBody, Registration, ScopeBody, decode_cursor, encode_cursor, parse_body
from .errors import PollError, RequestError, WebhookSignatureError
from .model import State
from .privacy import writes_refused, writes_refused_message
from .records import call_record, scope_record
from .service import Service
from .store import CallQuery, StoreError
from .web_bodies import as_httpx, parse_since, read_json, webhook_body
from .webconfig import BasicAuth, WebConfig

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 1000
SERVICE_KEY = web.AppKey("service", Service)
OPENAPI_KEY = web.AppKey("openapi", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    return web.json_response(ErrorBody(error=message).model_dump(), status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return error(exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            message = {413: "request body is larger than max_request_bytes"}.get(exc.status, exc.reason)
            response = error(exc.status, message)
            if "Allow" in exc.headers:  # 405 must say what is allowed (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        raise
    except StoreError as exc:
        log.error("%s", exc)
        return error(503, "the call store is unavailable; see the exporter's log")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal error; see the exporter's log")


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Method, path (no query string), status and time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug('%s "%s %s" %s %.3fs', request.remote, request.method, request.path, response.status, time)


def create_app(service: Service, web_config: WebConfig | None = None) -> web.Application:
    middlewares: list[Middleware] = [errors_as_json]
    if web_config is not None and web_config.basic_auth_users:
        middlewares.insert(0, BasicAuth(web_config.basic_auth_users).middleware())
    app = web.Application(client_max_size=service.config.max_request_bytes, middlewares=middlewares)
    app[SERVICE_KEY] = service
    app[OPENAPI_KEY] = openapi.document(service.accounts, service.config.max_batch)
    app.add_routes(
        [
            web.get("/", index),
            web.get("/metrics", metrics),
            web.get("/-/healthy", healthy),
            web.get("/-/ready", ready),
            web.get("/api/v1/openapi.json", openapi_document),
            web.post("/api/v1/calls", register_calls),
            web.get("/api/v1/calls", list_calls),
            web.get("/api/v1/calls/{account}/{call_id}", get_call),
            web.delete("/api/v1/calls/{account}/{call_id}", delete_call),
            web.post("/api/v1/scopes", add_scope),
            web.get("/api/v1/scopes", list_scopes),
            web.delete("/api/v1/scopes/{id}", delete_scope),
            web.post("/api/v1/webhooks/{account}", webhook),
        ]
    )
    return app


# -- health and metrics ---------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    return web.Response(content_type="text/html", text=await landing.render(_require_ready(request)))


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[SERVICE_KEY].ready:
        return web.Response(text="Ready\n")
    return web.Response(status=503, text="Not ready: loading the store\n")


async def metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[SERVICE_KEY].metrics.registry)
    response = web.Response(body=body, headers={"Content-Type": content_type})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    return response


# -- REST API ---------------------------------------------------------------------------------------


def _check_token(request: web.Request) -> None:
    """The api_token, as `Authorization: Bearer <token>` or — when basic auth already uses the
    Authorization header — as `X-API-Token: <token>`. Constant-time comparison."""
    token = request.app[SERVICE_KEY].config.api_token
    if token is None:
        return
    expected = token.get_secret_value().encode()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = request.headers.get("X-API-Token", "")
    if not hmac.compare_digest(given.encode(), expected):
        raise RequestError("missing or wrong API token (Authorization: Bearer <api_token>)", 401)


def _check_write_token(request: web.Request) -> None:
    """Writes (POST/DELETE): the api_token when set; without one, 403 on a non-loopback listener
    unless allow_unauthenticated_writes (docs/design.md, "Privacy and access by default")."""
    config = request.app[SERVICE_KEY].config
    if writes_refused(config):
        raise RequestError(writes_refused_message(config), 403)
    _check_token(request)


def _check_read_token(request: web.Request) -> None:
    if request.app[SERVICE_KEY].config.api_token_for_reads:
        _check_token(request)


def _require_ready(request: web.Request) -> Service:
    service = request.app[SERVICE_KEY]
    if not service.ready:
        raise RequestError("the service is starting (loading the store); retry shortly", 503)
    return service


async def register_calls(request: web.Request) -> web.Response:
    _check_write_token(request)
    service = _require_ready(request)
    body = await read_json(request)
    if isinstance(body, list):
        if not body:
            raise RequestError("body: an empty batch registers nothing", 400)
        if len(body) > service.config.max_batch:
            raise RequestError(f"batch of {len(body)} is over max_batch ({service.config.max_batch})", 413)
        items = [parse_body(Registration, item, f"[{i}] " if len(body) > 1 else "") for i, item in enumerate(body)]
        results = await service.register([item.model_dump() for item in items])
        created = sum(1 for _, new in results if new)
        return web.json_response(
            {
                "calls": [call_record(record) for record, _ in results],
                "created": created,
                "existing": len(results) - created,
            },
            status=201 if created else 200,
        )
    if not isinstance(body, dict):
        raise RequestError("body must be a JSON object (or an array of objects for a batch)", 400)
    [(record, created)] = await service.register([parse_body(Registration, body).model_dump()])
    return web.json_response(call_record(record), status=201 if created else 200)


async def get_call(request: web.Request) -> web.Response:
    _check_read_token(request)
    service = _require_ready(request)
    account, call_id = request.match_info["account"], request.match_info["call_id"]
    if account not in service.pollers:
        raise RequestError(f"account: unknown account {account[:64]!r}", 404)
    record = await service.store.get(account, call_id)
    if record is None:
        raise RequestError(f"call_id: no call {call_id[:128]!r} in account {account!r}", 404)
    return web.json_response(call_record(record))


async def delete_call(request: web.Request) -> web.Response:
    _check_write_token(request)
    service = _require_ready(request)
    account, call_id = request.match_info["account"], request.match_info["call_id"]
    record = await service.unwatch(account, call_id)
    if record is None:
        raise RequestError(f"call_id: no call {call_id[:128]!r} in account {account!r}", 404)
    return web.json_response(call_record(record))


async def list_calls(request: web.Request) -> web.Response:
    """Empty query values mean "not given", as in the contract's `?account=&state=...` template."""
    _check_read_token(request)
    service = _require_ready(request)
    q = request.query
    account = q.get("account") or None
    if account is not None and account not in service.pollers:
        raise RequestError(f"account: unknown account {account[:64]!r}", 404)
    state = q.get("state") or None
    if state is not None and state not in State._value2member_map_:
        raise RequestError(f"state: {state[:32]!r} is not one of {', '.join(s.value for s in State)}", 400)
    since = parse_since(q.get("since"))
    try:
        limit = int(q.get("limit") or "100")
    except ValueError:
        raise RequestError("limit: must be an integer", 400) from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise RequestError(f"limit: must be between 1 and {MAX_LIST_LIMIT}", 400)
    cursor = None
    if q.get("cursor"):
        try:
            cursor = decode_cursor(q["cursor"])
        except ValueError:
            raise RequestError("cursor: not a cursor returned by this API", 400) from None
    records, last = await service.store.list_calls(CallQuery(account, state, since, limit, cursor))
    return web.json_response({"calls": [call_record(r) for r in records], "next": encode_cursor(last)})


# -- scopes and webhooks ------------------------------------------------------------------------------


async def add_scope(request: web.Request) -> web.Response:
    _check_write_token(request)
    service = _require_ready(request)
    body = parse_body(ScopeBody, await read_json(request))
    scope = await service.scopes.add(body.account, body.scope)
    return web.json_response(scope_record(scope), status=201)


async def list_scopes(request: web.Request) -> web.Response:
    _check_read_token(request)
    return web.json_response({"scopes": await _require_ready(request).scopes.records()})


async def delete_scope(request: web.Request) -> web.Response:
    _check_write_token(request)
    if not await _require_ready(request).scopes.delete(request.match_info["id"]):
        raise RequestError(f"id: no scope {request.match_info['id'][:64]!r}", 404)
    return web.Response(status=204)


async def webhook(request: web.Request) -> web.Response:
    """A provider's result webhook: the account's webhook_token, then the body, then the call."""
    service = _require_ready(request)
    name = request.match_info["account"]
    poller = service.pollers.get(name)
    if poller is None:
        raise RequestError(f"account: unknown account {name[:64]!r}", 404)
    provider, counted = poller.account.provider, poller.metrics.webhooks
    expected = poller.account.config.webhook_token
    given = request.headers.get("X-Webhook-Token") or request.query.get("token") or ""
    if expected is None or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        counted["rejected"].inc()
        raise RequestError(
            "missing or wrong webhook token (X-Webhook-Token header or ?token=; the account's webhook_token)", 401
        )
    if not provider.supports("webhook"):
        counted["rejected"].inc()
        raise RequestError(f"provider {provider.name} sends no result webhooks", 404)
    try:
        provider.verify_webhook(await as_httpx(request))
    except WebhookSignatureError as exc:
        counted["invalid_signature"].inc()
        raise RequestError(f"webhook signature: {exc}", 401) from None
    try:
        body = await webhook_body(request)
        listed = provider.parse_webhook(body)
    except (RequestError, PollError, ValueError, TypeError, KeyError) as exc:
        counted["rejected"].inc()
        message = str(exc) if isinstance(exc, RequestError) else f"not a {provider.name} result webhook: {exc}"
        raise RequestError(message, 400) from None
    accepted = await service.webhook(poller, listed)
    counted["accepted" if accepted else "unknown_call"].inc()
    return web.json_response({"result": "accepted" if accepted else "unknown_call"}, status=202)
