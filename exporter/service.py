"""The running service: accounts, store, pollers, scopes and metrics wired together.

The data path runs one way: a registration (API, CLI, file; a scope's listing) goes through
`Registrar.watch` into the store and the account's `AccountPoller`, which polls the plugin,
applies the answer with the state machine and records it in the store and the metrics. Scopes
see only the accounts' public side and a registration callable; the collector reads the
pollers' counts and the scopes' batch progress.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import TypeAdapter, ValidationError

from .cluster import LeasedShare, SingleProcess
from .config import Account, Config, format_validation_error, resolve_accounts
from .discovery import Scopes
from .errors import RequestError
from .metrics import Metrics
from .model import ListedCall
from .plugins import Registry
from .poller import AccountPoller
from .provider import CallParams
from .registration import Registrar
from .store import CallRecord, CallStore, StoreError, store_for
from .transport import AiohttpTransport, Transport

log = logging.getLogger(__name__)
#: a webhook handed to the partition's owner through the inbox: the parsed call, as JSON
_HANDED_OVER: TypeAdapter[ListedCall] = TypeAdapter(ListedCall)

TransportFactory = Callable[[Account, Config], Transport]

REGISTRATION_KEYS = frozenset({"account", "call_id", "params"})


def default_transport(account: Account, config: Config) -> Transport:
    return AiohttpTransport(
        account.config.max_concurrency,
        config.request_timeout_seconds,
        config.max_response_bytes,
        account.http_client,
        account.name,
    )


@dataclass
class Registration:
    poller: AccountPoller
    params: CallParams


class Service:
    def __init__(
        self,
        config: Config,
        registry: Registry,
        transport_factory: TransportFactory = default_transport,
        store: CallStore | None = None,
    ) -> None:
        self.config = config
        self.accounts = resolve_accounts(config, registry)
        self.pollers: dict[str, AccountPoller] = {}
        self.store: CallStore
        self.ownership: SingleProcess | LeasedShare
        shared = store is None and config.store_url is not None  # N replicas, partition leases
        self.store = store if store is not None else store_for(config.store_url, config.store_path)
        if shared:
            from .store.postgres import PostgresStore

            assert isinstance(self.store, PostgresStore)
            self.ownership = LeasedShare(self.store, self.pollers, self._adopt, self._push, self._reconcile_scopes)
        else:
            self.ownership = SingleProcess()
        self.registrar = Registrar(self.store, self.pollers, config.max_watched_calls, self.ownership.owns)
        self.scopes = Scopes(
            self.store, self.pollers, self.registrar.watch_listed, config.max_watched_batches, self.ownership.owns
        )
        self.metrics = Metrics(
            config.histogram_buckets_seconds,
            self.pollers.values,
            time.time,
            lambda: self.store.write_errors,
            self.scopes.batch_progress,
            self.ownership.partitions_owned,
        )
        self._transport_factory = transport_factory
        self._started = False

    @property
    def ready(self) -> bool:
        """Started, and (N replicas) holding its leases: not while the database is away."""
        return self._started and self.ownership.healthy

    @property
    def where(self) -> str:
        """The store, for log lines (never a database password)."""
        return getattr(self.store, "where", str(self.config.store_path))

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        for account in self.accounts:
            self.pollers[account.name] = AccountPoller(
                account,
                self.metrics.add_account(account.provider.name, account.name),
                self._transport_factory(account, self.config),
                self.store,
                self.config.max_watch_seconds,
            )
            self.pollers[account.name].fence = self.ownership.fence
        if isinstance(self.ownership, SingleProcess):
            resumed = await self.registrar.resume()
        else:
            await self.ownership.start()  # its first lease cycle loads the calls of its partitions
            resumed = sum(len(p.calls) for p in self.pollers.values())
        for poller in self.pollers.values():
            poller.start()
        await self.scopes.load((a.name, scope) for a in self.accounts for scope in a.config.watch)
        self._started = True
        log.info(
            "store %s loaded: resumed %d watched calls across %d accounts (%d of 256 partitions)",
            self.where,
            resumed,
            len(self.pollers),
            self.ownership.partitions_owned(),
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop polling (in-flight polls get `grace` seconds), then flush and close the store."""
        self._started = False
        await self.scopes.stop()
        for poller in self.pollers.values():
            await poller.stop(grace)
        try:  # write what the replicas taking the partitions over must read
            await self.store.flush()
        except StoreError as exc:  # or the store never opened: close() reports what it can
            log.debug("flush at stop: %s", exc)
        await self.ownership.stop()  # hands every lease back at once
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
                {**poller.account.defaults, **params, "call_id": item["call_id"]}
            )
        except ValidationError as exc:
            message = format_validation_error(exc)
            if not message.startswith("call_id"):
                message = "params." + message
            raise RequestError(f"{where}{message}") from None
        return Registration(poller, model)

    async def register(self, items: list[Any]) -> list[tuple[CallRecord, bool]]:
        """Validate all, store all in one transaction, start watching; `(record, created)` each."""
        prefix = len(items) > 1 or None
        regs = [self.validate(item, f"[{i}] " if prefix else "") for i, item in enumerate(items)]
        results = await self.registrar.watch([(r.poller, r.params) for r in regs], "api")
        records = await self.store.get_many([res.seq for res, _ in results])
        return [(rec, res.inserted) for rec, (res, _) in zip(records, results)]

    async def unwatch(self, account: str, call_id: str) -> CallRecord | None:
        """Stop watching; the record keeps its last state. None if the call is unknown."""
        poller = self.pollers.get(account)
        if poller is None:
            raise RequestError(f"account: unknown account {account[:64]!r}", 404)
        poller.remove(call_id)
        return await self.store.unwatch(account, call_id)

    # -- scale-out: what the partition leases ask of the service ------------------------------

    def _adopt(self, rows: Any) -> int:
        return self.registrar.adopt(rows)

    async def _reconcile_scopes(self) -> None:
        """After an ownership change (a task of its own): the database may be away just then,
        and the inbox loop reconciles again once it answers."""
        if self._started:
            try:
                await self.scopes.reconcile()
            except StoreError as exc:
                log.debug("scopes not reconciled: %s", exc)

    def _push(self, account: str, listed: dict[str, Any]) -> bool:
        """A webhook another replica received for a call polled here, as that replica parsed it."""
        poller = self.pollers.get(account)
        if poller is None:
            return False
        try:
            return poller.pushed(_HANDED_OVER.validate_python(listed))
        except ValidationError as exc:
            log.debug("account %s: a handed-over webhook no longer reads: %s", account, exc.error_count())
            return False

    async def webhook(self, poller: AccountPoller, listed: ListedCall) -> bool:
        """Apply a result webhook here, or hand it to the replica that polls the call: parsed and
        held to the privacy policy first, so the raw body (numbers, metadata) is never stored."""
        if poller.pushed(listed):
            return True
        call_id = listed.params.get("call_id", "")
        if isinstance(self.ownership, LeasedShare) and not self.ownership.owns(poller.name, call_id):
            from .store.postgres import PostgresStore

            assert isinstance(self.store, PostgresStore)
            kept = ListedCall(listed.params, poller.account.privacy.apply(poller.provider, listed.status))
            return await self.store.push(poller.name, call_id, _HANDED_OVER.dump_python(kept, mode="json"))
        return False
