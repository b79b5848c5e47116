"""Serving a fake provider on 127.0.0.1: in the caller's event loop (`demo`) or in a
background thread (tests driving a separate service), and going down and up again."""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from typing import Any, ClassVar, Coroutine, Iterator, Self

from aiohttp import web


class FakeServer:
    """A real aiohttp server for `routes()`, plus the background work of `background()`."""

    provider: ClassVar[str]

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: list[asyncio.Task[None]] = []
        self.url = ""
        self.port = 0

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Coroutines that run while the server is up (e.g. sending webhooks)."""
        return []

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(self.routes())
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{self.port}"
        self._background = [asyncio.create_task(c, name=f"fake-{self.provider}") for c in self.background()]
        return self.url

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _shutdown(self) -> None:
        """Stop serving and cancel handlers still running (e.g. an injected hang)."""
        await self.stop()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    @contextmanager
    def running(self, port: int = 0) -> Iterator[Self]:
        """Serve on 127.0.0.1 from a background thread (for tests driving a separate service).

        `port` 0 picks a free one; give a fixed port to have the service configured (and
        refused) before the fake first comes up, see `up`.
        """
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(port=port))
            except BaseException as exc:  # surfaced below
                failed.append(exc)
            started.set()
            if not failed:
                loop.run_forever()

        thread = threading.Thread(target=serve, name=f"fake-{self.provider}", daemon=True)
        thread.start()
        if not started.wait(10) or failed:
            raise RuntimeError(f"fake provider did not start: {failed[:1]}")
        self._loop = loop
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
            self._loop = None

    def down(self) -> None:
        """Go away completely (from `running`): stop listening and drop every open connection,
        so clients get connection refused until `up`."""
        self._in_loop(self.stop())

    def up(self) -> None:
        """Listen again on the same port after `down`."""
        if self._runner is None:
            self._in_loop(self.start(port=self.port))

    def _in_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("down()/up() need the fake to be `running()`")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)
