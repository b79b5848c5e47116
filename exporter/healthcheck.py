"""`healthcheck`: does the service at the config's `listen_address` answer `/-/healthy`?

For container HEALTHCHECKs and probes. It reads the same config (and web config) as `run`, so
the address is written once: change `listen_address` and the check follows. Exit codes are
Docker's: 0 healthy, 1 not (never 2, which Docker reserves).

Over TLS the certificate is not verified: the check talks to its own process on loopback and
asks whether it answers, not who it is. When the web config requires client certificates the
server's own certificate and key are presented (this works when they are also valid for
`client_ca_file`). With basic auth on, a 401 from the service is an answer, so healthy: the
check knows only the password hashes.
"""

from __future__ import annotations

import ssl

import httpx

from .config import load_config, split_address
from .errors import ExporterError
from .webconfig import TLSServerConfig, WebConfig, load_web_config

_ANY_V4, _ANY_V6 = ("", "0.0.0.0", "*"), ("::", "[::]")


def url_for(listen: str, tls: TLSServerConfig | None) -> str:
    """The loopback URL of `/-/healthy` for a service listening on `listen`."""
    host, port = split_address(listen)
    host = "127.0.0.1" if host in _ANY_V4 else "::1" if host in _ANY_V6 else host.strip("[]")
    return f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}/-/healthy"


def _tls_context(tls: TLSServerConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our own process on loopback: is it answering?
    if tls.client_auth_type.startswith("Require"):
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def check(config_path: str | None, listen: str | None, web_config_path: str | None, timeout: float) -> tuple[bool, str]:
    """(healthy, what to print). Config errors are unhealthy too, with their message."""
    try:
        if config_path:
            listen = load_config(config_path).listen_address
        web = load_web_config(web_config_path) if web_config_path else WebConfig()
        assert listen is not None
        url = url_for(listen, web.tls_server_config)
    except (ExporterError, ValueError) as exc:
        return False, f"unhealthy: {exc}"
    tls = web.tls_server_config
    try:
        response = httpx.get(url, timeout=timeout, trust_env=False, verify=_tls_context(tls) if tls else True)
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        return False, f"unhealthy: {url}: {type(exc).__name__}: {exc}"
    if response.status_code == 200:
        return True, f"healthy: {url}"
    if response.status_code == 401 and web.basic_auth_users:
        return True, f"healthy: {url} answers (basic auth required)"
    return False, f"unhealthy: {url}: HTTP {response.status_code}"
