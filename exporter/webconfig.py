"""`--web.config.file`: TLS and basic auth for every endpoint, in the shape Prometheus exporters use.

Same file format as the Prometheus exporter-toolkit, so operators reuse what they have:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: ca.crt
      min_version: TLS12
    basic_auth_users:
      alice: $2y$10$...                              # bcrypt hashes (htpasswd -nBC 10 alice)

Relative paths are relative to the web config file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
from pathlib import Path
from typing import Awaitable, Callable, Literal

import yaml
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator

from .config import format_validation_error
from .errors import ConfigError

WEBHOOK_PREFIX = "/api/v1/webhooks/"

ClientAuth = Literal[
    "NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
]
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


class TLSServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cert_file: Path
    key_file: Path
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, SecretStr] = {}

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for user, hashed in users.items():
            if not hashed.get_secret_value().startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"{user}: not a bcrypt hash (create one with `htpasswd -nBC 10 {user}`)")
        return users


def load_web_config(path: str | Path) -> WebConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from None
    tls = config.tls_server_config
    if tls is not None:
        base = path.parent
        tls.cert_file, tls.key_file = base / tls.cert_file, base / tls.key_file
        if tls.client_ca_file is not None:
            tls.client_ca_file = base / tls.client_ca_file
        ssl_context(tls, str(path))  # fail at start-up, not at the first connection
    return config


def ssl_context(tls: TLSServerConfig, where: str = "web config") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_auth_type != "NoClientCert":
            if tls.client_ca_file is None and "Verify" in tls.client_auth_type:
                raise ConfigError(f"{where}: client_auth_type {tls.client_auth_type} needs client_ca_file")
            if tls.client_ca_file is not None:
                context.load_verify_locations(tls.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED if tls.client_auth_type.startswith("Require") else ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: tls_server_config: cannot load certificates: {exc}") from None
    return context


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes; successful checks are cached
    (bcrypt is deliberately slow) under a keyed digest, never the password itself."""

    def __init__(self, users: dict[str, SecretStr]) -> None:
        import bcrypt

        self._users = {u: h.get_secret_value().encode() for u, h in users.items()}
        # checked for unknown users, so response time does not reveal which users exist
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(10))
        self._key = hashlib.sha256(b"".join(self._users.values())).digest()
        self._ok: set[bytes] = set()

    def check(self, header: str) -> bool:
        import bcrypt

        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep:
            return False
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if digest in self._ok:
            return True
        hashed = self._users.get(user)
        try:
            valid = bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None
        except ValueError:  # a malformed hash in the file: refuse, never crash
            valid = False
        if valid and len(self._ok) < 1024:
            self._ok.add(digest)
        return valid

    def middleware(self) -> Middleware:
        @web.middleware
        async def basic_auth(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            # webhooks come from providers, which authenticate with the account's webhook_token
            if not request.path.startswith(WEBHOOK_PREFIX) and not self.check(request.headers.get("Authorization", "")):
                return web.json_response(
                    {"error": "authentication required (basic auth)"},
                    status=401,
                    headers={"WWW-Authenticate": 'Basic realm="outbound-call-exporter"'},
                )
            return await handler(request)

        return basic_auth
