"""Vonage JWTs: RS256 request tokens from an application's private key, and the HS256 tokens
that sign Vonage's webhooks.

Request tokens carry `application_id`, `iat`, `jti` and `exp` (Vonage's JWT reference). Loading
the PEM takes tens of milliseconds and signing about half a millisecond, against well under that
for the rest of a poll, so the key is loaded once and a token is reused for `REUSE_SECONDS`
(it stays valid for `TTL_SECONDS`, leaving room for clock skew).

Nothing here puts a key, a token or a signature secret into an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
import warnings
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.warnings import InsecureKeyLengthWarning
from pydantic import SecretStr

from outbound_call_exporter import WebhookSignatureError

TTL_SECONDS = 300
REUSE_SECONDS = 30


def load_private_key(pem: SecretStr) -> RSAPrivateKey:
    """The application's RSA private key; ValueError (naming no part of it) otherwise."""
    try:
        key = load_pem_private_key(pem.get_secret_value().strip().encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("must be the application's private key in PEM format, unencrypted") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("must be an RSA private key (Vonage signs application tokens with RS256)")
    return key


class RequestTokens:
    """One application's request tokens, each reused for a short while."""

    def __init__(self, application_id: str, private_key: SecretStr, clock: Any = time.time) -> None:
        self._application_id = application_id
        self._key = load_private_key(private_key)
        self._clock = clock
        self._lock = threading.Lock()
        self._token, self._issued = "", float("-inf")

    def token(self) -> str:
        now = self._clock()
        with self._lock:
            if now - self._issued >= REUSE_SECONDS or now < self._issued:
                iat = int(now)
                claims = {
                    "application_id": self._application_id,
                    "iat": iat,
                    "jti": str(uuid.uuid4()),
                    "exp": iat + TTL_SECONDS,
                }
                self._token, self._issued = jwt.encode(claims, self._key, algorithm="RS256"), now
            return self._token


def verify_signed_webhook(authorization: str | None, body: bytes, secret: SecretStr, application_id: str) -> None:
    """Vonage's signed webhook: `Authorization: Bearer <JWT>`, HS256 with the account's
    signature secret, its `payload_hash` the hex SHA-256 of the body."""
    if not authorization or not authorization.startswith("Bearer "):
        raise WebhookSignatureError("Authorization: Bearer <signed JWT> is missing")
    try:
        with warnings.catch_warnings():  # the secret's length is Vonage's choice (their minimum: 32 bits)
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            claims = jwt.decode(
                authorization[7:].strip(), secret.get_secret_value(), algorithms=["HS256"], options={"require": ["iat"]}
            )
    except jwt.InvalidTokenError as exc:
        raise WebhookSignatureError(
            f"the JWT does not verify with the signature secret ({type(exc).__name__})"
        ) from None
    if claims.get("application_id") not in (None, application_id):
        raise WebhookSignatureError("the JWT is for another application")
    expected = hashlib.sha256(body).hexdigest()
    given = claims.get("payload_hash")
    if not isinstance(given, str) or not hmac.compare_digest(given.lower(), expected):
        raise WebhookSignatureError("payload_hash does not match the body")
