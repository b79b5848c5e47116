"""`X-Twilio-Signature`: HMAC-SHA1 over the URL Twilio called and the sorted POST parameters.

Twilio's algorithm (webhook security docs): take the full URL of the request, query string
included; for a form-encoded POST append every parameter name immediately followed by its
value, sorted by name; HMAC-SHA1 that with the account's auth token; base64. For a JSON body
Twilio adds a `bodySHA256` query parameter (hex SHA-256 of the body) to the signed URL instead.

Behind an ingress the URL Twilio called is not the one the exporter sees (scheme, host, path
prefix): the account's `webhook_url` setting then replaces scheme, host and path. Like
Twilio's own validators, the URL is tried with and without the scheme's default port.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl

import httpx
from pydantic import SecretStr

from outbound_call_exporter import WebhookSignatureError

HEADER = "X-Twilio-Signature"
DEFAULT_PORTS = {"https": 443, "http": 80}


def signature(auth_token: str, url: str, params: dict[str, str] | list[tuple[str, str]]) -> str:
    """The signature Twilio sends for a request to `url` with form `params`."""
    items = sorted(params.items() if isinstance(params, dict) else params)
    data = url + "".join(k + v for k, v in items)
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def verify_signature(request: httpx.Request, auth_token: SecretStr | None, webhook_url: str | None) -> None:
    """Raise `WebhookSignatureError` unless `request` carries Twilio's signature for it."""
    if auth_token is None:
        raise WebhookSignatureError(
            "cannot verify X-Twilio-Signature: the account has no auth_token "
            "(Twilio signs callbacks with it, never with an API key)"
        )
    given = request.headers.get(HEADER)
    if not given:
        raise WebhookSignatureError(f"{HEADER} header is missing")
    url = request.url if webhook_url is None else httpx.URL(webhook_url).copy_with(query=request.url.query or None)
    params: list[tuple[str, str]] = []
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded":
        try:
            params = parse_qsl(request.content.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            raise WebhookSignatureError("form body is not UTF-8") from None
    elif "bodySHA256" in url.params:
        if not hmac.compare_digest(url.params["bodySHA256"], hashlib.sha256(request.content).hexdigest()):
            raise WebhookSignatureError("body does not match its bodySHA256")
    token = auth_token.get_secret_value()
    for candidate in _port_variants(url):
        if hmac.compare_digest(signature(token, candidate, params).encode(), given.encode()):
            return
    raise WebhookSignatureError(
        f"{HEADER} does not match (check the account's webhook_url when the exporter "
        "is reached through a proxy or ingress)"
    )


def _port_variants(url: httpx.URL) -> list[str]:
    """The URL as given, and with the scheme's default port written out (httpx drops it)."""
    text, default = str(url), DEFAULT_PORTS.get(url.scheme)
    if url.port is not None or default is None:
        return [text]
    host = f"://{url.raw_host.decode()}"
    return [text, text.replace(host, f"{host}:{default}", 1)]
