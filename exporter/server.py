"""Run the service and its HTTP endpoints until told to stop (SIGTERM/SIGINT or an event)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Awaitable, Callable

from aiohttp import web

from .config import split_address
from .privacy import access_warning
from .service import Service
from .web import PathOnlyAccessLogger, create_app
from .webconfig import WebConfig, ssl_context

log = logging.getLogger(__name__)


async def serve(
    service: Service,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], Awaitable[None] | None] | None = None,
    web_config: WebConfig | None = None,
) -> None:
    """Listen first (so /-/healthy answers while the store loads), then start polling.

    Returns after `stop` is set or SIGTERM/SIGINT arrives: stops accepting requests, lets
    in-flight polls finish briefly, flushes and closes the store.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    host, port = split_address(service.config.listen_address)
    runner = web.AppRunner(
        create_app(service, web_config),
        access_log_class=PathOnlyAccessLogger,
        handle_signals=False,
        shutdown_timeout=2.0,
    )
    await runner.setup()
    tls = web_config.tls_server_config if web_config else None
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context(tls) if tls else None)
    try:
        await site.start()
        bound = runner.addresses[0]
        url = f"{'https' if tls else 'http'}://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound[1]}"
        log.info("listening on %s:%d", host, bound[1])
        if notice := access_warning(service.config):
            log.warning("%s", notice)
        await service.start()
        log.info("ready: metrics at %s/metrics", url)
        if on_ready is not None:
            result = on_ready(url)
            if result is not None:
                await result
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        await service.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
