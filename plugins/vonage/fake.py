"""A fake Vonage Voice API, faithful to the API reference.

`GET /v1/calls/{uuid}` with `Authorization: Bearer <JWT>`, verified with the application's
public key (RS256, `application_id` claim, unexpired, with `iat` and `jti`); the call record's
fields (`_links`, `uuid`, `conversation_uuid`, `to`/`from` endpoints, `status`, `direction`,
`rate`, `price`, `duration`, `start_time`/`end_time` as `YYYY-MM-DD HH:MM:SS`, `network`);
RFC 7807 error bodies (401 unauthorized, 404 not-found, also past retention, 429 when more than
`rate_limit` requests arrive within a second — Vonage documents 15 GET/s; off unless given).
Event webhooks are built by `event_webhook` (the JSON body and, with a signature secret, the
signed `Authorization` header) for whoever posts them.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider

APPLICATION_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
#: event webhook `detail` of calls that did not connect
DETAILS = {State.FAILED: "invalid_number", State.NO_ANSWER: "ring_timeout"}


def new_private_key() -> str:
    """A fresh application key pair's private half, PEM (PKCS#8), as the dashboard hands it out."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@lru_cache(maxsize=16)
def _public_key(pem: str) -> Any:
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None).public_key()
    except (ValueError, TypeError):
        return None  # a test replaced the key by something else: every request is refused


def _time(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def problem(status: int, code: str, title: str, detail: str) -> web.Response:
    body = {
        "type": f"https://developer.nexmo.com/api-errors#{code}",
        "title": title,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json")


class VonageFake(FakeProvider):
    provider = "vonage"
    #: no queued state at Vonage: calls begin `started`
    raw_status = {
        State.QUEUED: "started",
        State.DIALING: "ringing",
        State.IN_PROGRESS: "answered",
        State.COMPLETED: "completed",
        State.BUSY: "busy",
        State.NO_ANSWER: "timeout",
        State.FAILED: "failed",
        State.CANCELLED: "cancelled",
    }

    def __init__(self, *, rate_limit: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate_limit = rate_limit
        self._recent: collections.deque[float] = collections.deque()

    def default_credentials(self) -> dict[str, str]:
        return {"application_id": APPLICATION_ID, "private_key": _demo_key()}

    def secret_setting(self, name: str, marker: str) -> str:
        """A recognisable value for secret setting `name` (test_secrets): a key must be a real one."""
        return new_private_key() if name == "private_key" else marker

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/calls/{uuid}", self._status)]

    async def _status(self, request: web.Request) -> web.StreamResponse:
        if self._over_limit():
            self.requests["rate_limited"] += 1
            return problem(429, "throttled", "Too Many Requests", "Rate limit of 15 GET requests per second hit")
        return await self.serve_status(request, request.match_info["uuid"], {})

    def _over_limit(self) -> bool:
        if self.rate_limit is None:
            return False
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit:
            return True
        self._recent.append(now)
        return False

    def authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        public = _public_key(self.credentials["private_key"])
        if not header.startswith("Bearer ") or public is None:
            return False
        try:
            claims = jwt.decode(
                header[7:], public, algorithms=["RS256"], options={"require": ["iat", "jti", "exp", "application_id"]}
            )
        except jwt.InvalidTokenError:
            return False
        return claims["application_id"] == self.credentials["application_id"]

    def unauthorized(self) -> web.Response:
        return problem(401, "unauthorized", "Unauthorized", "You did not provide correct credentials.")

    def not_found(self) -> web.Response:
        return problem(
            404, "not-found", "Not Found", "The requested resource does not exist, or you do not have access to it"
        )

    def terminal_fields(self, outcome: State) -> dict[str, Any]:
        return {"detail": DETAILS[outcome]} if outcome in DETAILS else {}

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        status = call.steps[index].status
        terminal = index == len(call.steps) - 1 and status not in ("started", "ringing", "answered")
        ended = call.ended_at(self.speed) if terminal else None
        answered = next(
            (call.created + s.after / self.speed for s in call.steps[: index + 1] if s.status == "answered"), None
        )
        talk = round(ended - answered) if status == "completed" and ended and answered else 0
        record = {
            "_links": {"self": {"href": f"/calls/{call.call_id}"}},
            "uuid": call.call_id,
            "conversation_uuid": f"CON-{uuid.uuid5(uuid.NAMESPACE_URL, call.call_id)}",
            "to": {"type": "phone", "number": "447700900000"},
            "from": {"type": "phone", "number": "442079460321"},
            "status": status,
            "direction": "outbound",
            "rate": "0.39",
            "price": f"{0.39 * talk / 60:.2f}" if terminal else None,
            "duration": str(talk) if terminal else None,
            "start_time": _time(call.created),
            "end_time": _time(ended),
            "network": "65512",
        }
        return record

    def event_webhook(
        self, call: FakeCall, now: float, signature_secret: str | None = None, api_key: str = "abcd1234"
    ) -> tuple[bytes, dict[str, str]]:
        """The event webhook Vonage POSTs for `call`'s current status: JSON body and headers,
        signed (HS256 JWT with `payload_hash`) when a signature secret is given."""
        index = call.step_index(now, self.speed)
        record = self.render(call, index, now)
        event = {
            k: record[k]
            for k in (
                "uuid",
                "conversation_uuid",
                "status",
                "direction",
                "start_time",
                "end_time",
                "duration",
                "rate",
                "price",
                "network",
            )
            if record[k] is not None
        }
        event.update(
            {
                "from": record["from"]["number"],
                "to": record["to"]["number"],
                "timestamp": datetime.fromtimestamp(
                    call.created + call.steps[index].after / self.speed, tz=timezone.utc
                )
                .isoformat()
                .replace("+00:00", "Z"),
            }
        )
        if index == len(call.steps) - 1 and "detail" in call.fields:
            event["detail"] = call.fields["detail"]
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if signature_secret is not None:
            claims = {
                "iat": int(time.time()),
                "jti": str(uuid.uuid4()),
                "iss": "Vonage",
                "api_key": api_key,
                "application_id": self.credentials["application_id"],
                "payload_hash": hashlib.sha256(body).hexdigest(),
            }
            headers["Authorization"] = f"Bearer {jwt.encode(claims, signature_secret, algorithm='HS256')}"
        return body, headers


@lru_cache(maxsize=1)
def _demo_key() -> str:
    """One key pair per process for fakes created without credentials (demo, tests)."""
    return new_private_key()
