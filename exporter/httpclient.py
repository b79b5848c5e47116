"""`http_client`: how provider requests reach the providers (docs/design.md, "Provider HTTP client").

The keys and their meanings are those of Prometheus' HTTP client config (prometheus/common
`HTTPClientConfig`), so an operator who configured json_exporter or blackbox_exporter behind
the same proxy can copy the block. A top-level `http_client` gives defaults; an account's
`http_client` overrides them key by key (inside `tls_config` too; `null` unsets a key).

`resolve_http_clients` turns the merged config of each account into an `HTTPClient`: the
`ssl.SSLContext` (built once per distinct TLS setup: loading the system store costs
milliseconds) and the proxy decision per provider host. Everything that can be wrong with it
(a missing CA file, a key without its certificate, an unusable proxy URL in the environment)
is a `ConfigError` naming the field, so `check-config` finds it.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from yarl import URL

from ._version import __version__
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

USER_AGENT = f"outbound-call-exporter/{__version__}"
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
#: names that are never sent to a proxy taken from the environment (as Go's ProxyFromEnvironment)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class TLSConfig(BaseModel):
    """Prometheus' `tls_config`; `ca_file` replaces the default (system) trust."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = Field(None, min_length=1, max_length=253)
    insecure_skip_verify: bool = False
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value}: no such file")
        return value


class HTTPClientConfig(BaseModel):
    """Prometheus' HTTP client config, the keys that concern reaching a provider."""

    model_config = ConfigDict(extra="forbid")

    #: user:password@ allowed, hence a secret; http:// or https:// (aiohttp speaks no SOCKS)
    proxy_url: SecretStr | None = None
    no_proxy: str | None = None
    proxy_from_environment: bool = True
    #: sent with CONNECT (https through a proxy) only, as Prometheus does; values are secrets
    proxy_connect_header: dict[str, list[SecretStr]] = Field(default_factory=dict)
    follow_redirects: bool = False
    tls_config: TLSConfig = Field(default_factory=TLSConfig)

    @field_validator("proxy_url")
    @classmethod
    def _proxy_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = _proxy_problem(value.get_secret_value())
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("proxy_connect_header", mode="before")
    @classmethod
    def _header_lists(cls, value: Any) -> Any:
        """A single string is taken as a one-item list (Prometheus wants a list)."""
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, (str, SecretStr)) else v for k, v in value.items()}
        return value


def merge(default: HTTPClientConfig, override: HTTPClientConfig | None) -> HTTPClientConfig:
    """`default` with every key the account set (explicitly, `null` included) replaced."""
    if override is None:
        return default
    keys = override.model_fields_set - {"tls_config"}
    merged = default.model_copy(update={k: getattr(override, k) for k in keys})
    if "tls_config" in override.model_fields_set:
        tls = override.tls_config
        merged.tls_config = default.tls_config.model_copy(update={k: getattr(tls, k) for k in tls.model_fields_set})
    return merged


# -- the resolved client ------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """A proxy for one provider origin: `url` may hold credentials, `host` never does."""

    url: URL
    host: str
    connect_headers: Mapping[str, str] | None = None


@dataclass
class HTTPClient:
    """What the transport needs: TLS context, SNI override, redirects and proxy choice."""

    ssl_context: ssl.SSLContext | None = None  # None: the system store (built on first use)
    server_name: str | None = None
    follow_redirects: bool = False
    insecure: bool = False
    proxies: Mapping[str, Proxy] = field(default_factory=dict)  # by URL scheme
    no_proxy: tuple[str, ...] = ()
    bypass_loopback: bool = True
    #: plain values to scrub wherever text leaves the process (proxy password, CONNECT headers)
    secrets: tuple[str, ...] = ()
    _chosen: dict[tuple[str, str, int | None], Proxy | None] = field(default_factory=dict, repr=False)

    def proxy_for(self, scheme: str, host: str, port: int | None) -> Proxy | None:
        """The proxy for this origin, or None to connect directly (cached per origin)."""
        key = (scheme, host, port)
        try:
            return self._chosen[key]
        except KeyError:
            pass
        proxy = self.proxies.get(scheme)
        if proxy is not None and _bypassed(
            host, port or (443 if scheme == "https" else 80), self.no_proxy, self.bypass_loopback
        ):
            proxy = None
        if len(self._chosen) < 1024:
            self._chosen[key] = proxy
        return proxy

    def context(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            self.ssl_context = build_ssl_context(TLSConfig(), "http_client.tls_config")
        return self.ssl_context


def resolve_http_clients(config: "Config", labels: list[str]) -> list[HTTPClient]:
    """One `HTTPClient` per account (labels name them in errors); also checks the top level."""
    contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}
    resolve(config.http_client, "http_client", contexts)
    return [
        resolve(merge(config.http_client, acc.http_client), f"{label}.http_client", contexts)
        for acc, label in zip(config.accounts, labels)
    ]


def resolve(
    cfg: HTTPClientConfig, where: str, contexts: dict[tuple[Any, ...], ssl.SSLContext] | None = None
) -> HTTPClient:
    """The client for one (merged) config; the environment's proxies are read now."""
    tls = cfg.tls_config
    if tls.key_file is not None and tls.cert_file is None:
        raise ConfigError(f"{where}.tls_config.key_file: given without cert_file (the client certificate)")
    if tls.cert_file is not None and tls.key_file is None:
        raise ConfigError(f"{where}.tls_config.cert_file: given without key_file (the certificate's key)")
    key = (tls.ca_file, tls.cert_file, tls.key_file, tls.insecure_skip_verify, tls.min_version)
    contexts = {} if contexts is None else contexts
    if key not in contexts:
        contexts[key] = build_ssl_context(tls, f"{where}.tls_config")
    headers = {
        name: ", ".join(v.get_secret_value() for v in values) for name, values in cfg.proxy_connect_header.items()
    }
    secrets = [v for v in headers.values() if v]
    proxies: dict[str, Proxy] = {}
    no_proxy = _split(cfg.no_proxy)
    if cfg.proxy_url is not None:
        proxy = _proxy(cfg.proxy_url.get_secret_value(), headers)
        proxies = {"http": proxy, "https": proxy}
    elif cfg.proxy_from_environment:
        proxies, env_no_proxy = _environment_proxies(headers)
        no_proxy += env_no_proxy
    for proxy in proxies.values():
        secrets += [s for s in (proxy.url.password, proxy.url.raw_password) if s]
    return HTTPClient(
        ssl_context=contexts[key],
        server_name=tls.server_name,
        follow_redirects=cfg.follow_redirects,
        insecure=tls.insecure_skip_verify,
        proxies=proxies,
        no_proxy=no_proxy,
        bypass_loopback=cfg.proxy_url is None,
        secrets=tuple(dict.fromkeys(secrets)),
    )


def build_ssl_context(tls: TLSConfig, where: str) -> ssl.SSLContext:
    """The default context verifies against the system store, which OpenSSL locates through
    `SSL_CERT_FILE` / `SSL_CERT_DIR` when set; `ca_file` replaces it. Never certifi's bundle:
    a TLS-inspecting gateway's CA is installed in the system store, not in certifi."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{where}.ca_file: cannot load {tls.ca_file}: {_ssl_reason(exc)}") from None
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (ssl.SSLError, OSError) as exc:  # never the key's content, only OpenSSL's reason
            raise ConfigError(
                f"{where}.cert_file: cannot load {tls.cert_file} with key_file {tls.key_file}: {_ssl_reason(exc)}"
            ) from None
    if tls.min_version is not None:
        context.minimum_version = TLS_VERSIONS[tls.min_version]
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def _ssl_reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__


# -- proxies ------------------------------------------------------------------------------------


def _proxy_problem(raw: str) -> str | None:
    """What is wrong with a proxy URL, in words that never repeat the URL (it may hold a password)."""
    try:
        url = URL(raw if "://" in raw else f"http://{raw}")
    except (ValueError, TypeError):
        return "not a URL"
    if url.scheme not in ("http", "https"):
        return f"scheme {url.scheme[:16]!r} is not supported (http:// or https://)"
    if not url.host:
        return "has no host"
    return None


def _proxy(raw: str, connect_headers: Mapping[str, str]) -> Proxy:
    url = URL(raw if "://" in raw else f"http://{raw}")  # a bare host:port means http, as curl and Go
    return Proxy(url, f"{url.host}:{url.port}", dict(connect_headers) or None)


def _environment_proxies(headers: Mapping[str, str]) -> tuple[dict[str, Proxy], tuple[str, ...]]:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY, either case (urllib's reading: lower case wins)."""
    found = urllib.request.getproxies_environment()
    proxies = {}
    for scheme in ("http", "https"):
        raw = found.get(scheme)
        if raw:
            problem = _proxy_problem(raw)
            if problem:
                raise ConfigError(f"environment variable {scheme.upper()}_PROXY: {problem}")
            proxies[scheme] = _proxy(raw, headers)
    return proxies, _split(found.get("no"))


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip().lower() for p in (value or "").split(",") if p.strip())


def _bypassed(host: str, port: int | None, patterns: tuple[str, ...], loopback: bool) -> bool:
    """Go's NO_PROXY rules: `*`; an IP or CIDR; `example.com` (itself and subdomains),
    `.example.com` / `*.example.com` (subdomains); any of them with `:port`."""
    host = host.lower().strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if loopback and (host in _LOOPBACK_NAMES or (ip is not None and ip.is_loopback)):
        return True
    for pattern in patterns:
        if pattern == "*":
            return True
        name, want_port = pattern, None
        if not pattern.startswith("[") and pattern.count(":") == 1 or pattern.startswith("[") and "]:" in pattern:
            name, _, tail = pattern.rpartition(":")
            want_port = int(tail) if tail.isdigit() else -1
        if want_port is not None and want_port != port:
            continue
        name = name.strip("[]")
        if ip is not None and "/" in name:
            try:
                if ip in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if name.startswith("*."):
            name = name[1:]
        if host == name or (name.startswith(".") and host.endswith(name)) or host.endswith("." + name):
            return True
    return False
