"""The running service: accounts, store, pollers and metrics wired together.

Registration validates everything before touching the store (a batch is all-or-nothing), writes
it durably, then hands the calls to their account's poller.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import ValidationError

from .config import Account, Config, format_validation_error, resolve_accounts
from .errors import RequestError
from .lifecycle import WatchedCall
from .metrics import Metrics
from .discovery import Scopes
from .model import ListedCall, State
from .plugins import Registry
from .provider import CallParams
from .scheduler import AccountPoller
from .store import NewCall, Store
from .transport import AiohttpTransport, Transport

log = logging.getLogger(__name__)

TransportFactory = Callable[[Account, Config], Transport]

REGISTRATION_KEYS = frozenset({"account", "call_id", "params"})


def default_transport(account: Account, config: Config) -> Transport:
    return AiohttpTransport(account.config.max_concurrency, config.request_timeout_seconds,
                            config.max_response_bytes, account.http_client, account.name)


@dataclass
class Registration:
    poller: AccountPoller
    params: CallParams


class Service:
    def __init__(self, config: Config, registry: Registry,
                 transport_factory: TransportFactory = default_transport) -> None:
        self.config = config
        self.accounts = resolve_accounts(config, registry)
        self.store = Store(config.store_path)
        self.metrics = Metrics(config.histogram_buckets_seconds, lambda: self.pollers.values(), time.time,
                               lambda: self.store.write_errors)
        self.pollers: dict[str, AccountPoller] = {}
        self._transport_factory = transport_factory
        self.scopes = Scopes(self)
        self.ready = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        for account in self.accounts:
            self.pollers[account.name] = AccountPoller(
                account, self.metrics.add_account(account.provider.name, account.name),
                self._transport_factory(account, self.config), self.store, self.config.max_watch_seconds)
        resumed = await self._resume()
        for poller in self.pollers.values():
            poller.start()
        await self.scopes.load()
        self.ready = True
        log.info("store %s loaded: resumed %d watched calls across %d accounts",
                 self.config.store_path, resumed, len(self.pollers))

    async def _resume(self) -> int:
        """Reload every watched, non-terminal call; registrations are not counted again."""
        count, orphans = 0, 0
        async for chunk in self.store.iter_active():  # chunks: the rows never all sit in memory
            for row in chunk:
                poller = self.pollers.get(row.account)
                if poller is None:
                    orphans += 1
                    continue
                try:
                    params = poller.account.provider.Params.model_validate({**row.params, "call_id": row.call_id})
                except ValidationError:
                    log.warning("account %s: stored call %s no longer validates; not resumed", row.account, row.seq)
                    continue
                poller.add(WatchedCall(row.seq, params, row.first_seen_at, State(row.state), row.provider_status,
                                       row.seen, row.created_at, row.answered_at, row.events_seen))
                count += 1
        if orphans:
            log.warning("%d watched calls belong to accounts not in the config; they resume when the "
                        "account is configured again", orphans)
        return count

    async def stop(self, grace: float = 5.0) -> None:
        """Stop polling (in-flight polls get `grace` seconds), then flush and close the store."""
        self.ready = False
        await self.scopes.stop()
        for poller in self.pollers.values():
            await poller.stop(grace)
        await self.store.close()

    # -- registration ---------------------------------------------------------------------------

    def validate(self, item: Any, where: str = "") -> Registration:
        """Check one registration body; raises `RequestError` naming the field."""
        if not isinstance(item, dict):
            raise RequestError(f"{where}body must be a JSON object", 400)
        unknown = sorted(set(item) - REGISTRATION_KEYS)
        if unknown:
            raise RequestError(f"{where}{unknown[0]}: unknown field (allowed: account, call_id, params)")
        for key in ("account", "call_id"):
            if key not in item:
                raise RequestError(f"{where}{key}: required field is missing")
            if not isinstance(item[key], str):
                raise RequestError(f"{where}{key}: must be a string")
        poller = self.pollers.get(item["account"])
        if poller is None:
            raise RequestError(f"{where}account: unknown account {item['account'][:64]!r}", 404)
        params = item.get("params", {})
        if not isinstance(params, dict):
            raise RequestError(f"{where}params: must be a JSON object")
        if "call_id" in params:
            raise RequestError(f"{where}params.call_id: give call_id at the top level")
        try:
            model = poller.account.provider.Params.model_validate(
                {**poller.account.defaults, **params, "call_id": item["call_id"]})
        except ValidationError as exc:
            message = format_validation_error(exc)
            if not message.startswith("call_id"):
                message = "params." + message
            raise RequestError(f"{where}{message}") from None
        return Registration(poller, model)

    async def register(self, items: list[Any]) -> list[tuple[dict[str, Any], bool]]:
        """Validate all, store all in one transaction, start watching; `(record, created)` each."""
        prefix = len(items) > 1 or None
        regs = [self.validate(item, f"[{i}] " if prefix else "") for i, item in enumerate(items)]
        watched = sum(len(p.calls) for p in self.pollers.values())
        if watched + len(regs) > self.config.max_watched_calls:
            raise RequestError(
                f"max_watched_calls ({self.config.max_watched_calls}) reached: {watched} calls are watched;"
                " retry when some finish or raise the limit", 503)
        now = time.time()
        results = await self.store.register(
            [NewCall(r.poller.name, r.params.call_id, r.poller.provider_name,
                     r.params.model_dump(exclude={"call_id"}), now) for r in regs],
            State.QUEUED.value)
        for reg, res in zip(regs, results):
            if res.started and reg.params.call_id not in reg.poller.calls:
                reg.poller.add(WatchedCall(res.seq, reg.params, now, State(res.state)))
                reg.poller.metrics.registered.inc()
                reg.poller.metrics.discovered["api"].inc()
        records = await self.store.get_many([res.seq for res in results])
        return [(rec, res.inserted) for rec, res in zip(records, results)]

    async def watch_discovered(self, poller: AccountPoller, listed: ListedCall) -> bool:
        """Store and watch a call a scope listing revealed, then apply what the listing said."""
        try:
            params = poller.account.provider.Params.model_validate({**poller.account.defaults, **listed.params})
        except ValidationError:
            log.debug("account %s: a listed call does not validate; skipped", poller.name)
            return False
        if sum(len(p.calls) for p in self.pollers.values()) >= self.config.max_watched_calls:
            log.warning("max_watched_calls reached: a discovered call of account %s is not watched", poller.name)
            return False
        now = time.time()
        [res] = await self.store.register([NewCall(poller.name, params.call_id, poller.provider_name,
                                                   params.model_dump(exclude={"call_id"}), now)], State.QUEUED.value)
        if not res.started or params.call_id in poller.calls:
            return False
        poller.add(WatchedCall(res.seq, params, now, State(res.state)))
        poller.metrics.registered.inc()
        poller.metrics.discovered["scope"].inc()
        poller.refreshed(listed, hold=poller.account.cadence[State.QUEUED])
        return True

    async def unwatch(self, account: str, call_id: str) -> dict[str, Any] | None:
        """Stop watching; the record keeps its last state. None if the call is unknown."""
        poller = self.pollers.get(account)
        if poller is None:
            raise RequestError(f"account: unknown account {account[:64]!r}", 404)
        poller.remove(call_id)
        return await self.store.unwatch(account, call_id)
