"""Retell's webhook signature: `x-retell-signature: v=<epoch ms>,d=<hex HMAC-SHA256>`.

As Retell's SDKs compute it (retell-sdk `lib/webhook_auth.py`, copied to
docs/providers/reference/retell.md): the digest is HMAC-SHA256 keyed with the account's API
key over the raw request body followed by the timestamp's decimal digits, and a signature
more than five minutes from now is refused (replay protection).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from outbound_call_exporter import WebhookSignatureError

SIGNATURE = re.compile(r"v=(\d+),d=([0-9a-f]{64})")
#: Retell's SDKs refuse signatures older (or newer) than this
MAX_SKEW_MS = 5 * 60 * 1000


def sign(body: bytes, key: str, timestamp_ms: int) -> str:
    """The header value Retell sends for `body` at `timestamp_ms` (used by the fake)."""
    digest = hmac.new(key.encode(), body + str(timestamp_ms).encode(), hashlib.sha256).hexdigest()
    return f"v={timestamp_ms},d={digest}"


def verify_signature(body: bytes, key: str, header: str | None, now_ms: int | None = None) -> None:
    """Raise `WebhookSignatureError` unless `header` signs `body` with `key`, within five minutes."""
    if not header:
        raise WebhookSignatureError("x-retell-signature header is missing")
    match = SIGNATURE.fullmatch(header.strip())
    if match is None:
        raise WebhookSignatureError("x-retell-signature is not of the form v=<timestamp>,d=<hex digest>")
    stamp = int(match.group(1))
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now_ms - stamp) > MAX_SKEW_MS:
        raise WebhookSignatureError("x-retell-signature timestamp is more than five minutes off")
    if not hmac.compare_digest(sign(body, key, stamp), f"v={stamp},d={match.group(2)}"):
        raise WebhookSignatureError("x-retell-signature does not match the body (signed with another key?)")
