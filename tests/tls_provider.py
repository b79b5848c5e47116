"""TLS on loopback for the http_client tests: a CA made in the test (`trustme`), servers whose
certificates it signs, and Telzino's fake served over TLS.

Nothing here is trusted by the system store: a client reaches these servers only when the
test makes it trust the CA (tls_config.ca_file, SSL_CERT_FILE, SSL_CERT_DIR).
"""

from __future__ import annotations

import json
import ssl
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import trustme
from aiohttp import web

from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

#: a provider host name no resolver knows (RFC 6761 `.invalid`): only the test proxy maps it
PROVIDER_NAME = "api.telzino.invalid"


class Certs:
    """A CA, a server certificate for loopback and PROVIDER_NAME, and a client certificate,
    written as PEM files under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA(organization_name="oce test CA")
        self.dir = directory
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server = self.ca.issue_cert("127.0.0.1", "localhost", PROVIDER_NAME)
        self.name_only = self.ca.issue_cert(PROVIDER_NAME)  # not valid for 127.0.0.1
        client = self.ca.issue_cert("oce-client@example.invalid")
        self.client_cert, self.client_key = directory / "client.crt", directory / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))

    def server_context(self, *, name_only: bool = False, client_cert: bool = False,
                       max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (self.name_only if name_only else self.server).configure_cert(context)
        if client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        if max_version is not None:
            context.maximum_version = max_version
        return context


async def _json(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps({"path": request.path, "tls": request.secure}),
                        content_type="application/json")


@asynccontextmanager
async def tls_server(context: ssl.SSLContext | None) -> AsyncIterator[int]:
    """A tiny JSON server on 127.0.0.1 (TLS when given a context), in the caller's loop; its port."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", _json)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


class TLSTelzinoFake(TelzinoFake):
    """Telzino's fake, served over TLS with `ssl_context` (set before `running()`)."""

    ssl_context: ssl.SSLContext | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"https://{host}:{self.port}"
        return self.url
