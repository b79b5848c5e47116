"""Logs an operator can act on: logfmt or JSON lines, and per-account summaries of trouble.

`setup()` installs one handler in the shape Prometheus' own tools print (`--log.format=logfmt`,
the default, or `json`; `--log.level`). Structured fields go in `extra={"fields": {...}}`.

`AccountLog` keeps a dead provider from flooding the log while making sure its cause shows
within seconds: the first failure of an episode is logged at once, then at most one summary
per window (`telzino-main: 37 of 40 status requests failed in the last 60 s:
connection_error (api.telzino.com: cannot connect: Connection refused)`); expiries the same
way; the account going down and coming back once each. Details name the host, never a
credential or a call's path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections import Counter
from typing import Any, Callable

import httpx

from .model import ErrorReason

FORMATS = ("logfmt", "json")
LEVELS = ("debug", "info", "warn", "warning", "error")
WINDOW_SECONDS = 60.0
TICK_SECONDS = 5.0
#: failures that say something about one call, not about the account (logged in summaries only)
CALL_LEVEL = frozenset({ErrorReason.NOT_FOUND, ErrorReason.CLIENT_ERROR, ErrorReason.RATE_LIMITED})

_LEVEL_NAMES = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "error"}
_PACKAGE = "outbound_call_exporter."
#: "<path>: " or "HTTP 503 from <path>: " in front of a PollError message (ids hold no spaces)
_PATH_PREFIX = re.compile(r"^(?:(HTTP \d{3}) from )?/\S*: ")
_BARE = re.compile(r"^[^\s=\"\\]+$")

log = logging.getLogger(__name__)


def setup(level: str = "info", fmt: str = "logfmt", stream: Any = None) -> None:
    """Replace the root logger's handlers with one writing `fmt` lines to stderr."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel("WARNING" if level in ("warn", "warning") else level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request URL at INFO


def _pairs(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
    name = record.name[len(_PACKAGE) :] if record.name.startswith(_PACKAGE) else record.name
    pairs: dict[str, Any] = {
        "ts": ts,
        "level": _LEVEL_NAMES.get(record.levelname, record.levelname.lower()),
        "logger": name,
        "msg": record.getMessage(),
    }
    for key, value in (getattr(record, "fields", None) or {}).items():
        pairs.setdefault(key, value)
    if record.exc_info:
        pairs["exc"] = formatter.formatException(record.exc_info)
    return pairs


class LogfmtFormatter(logging.Formatter):
    """`ts=… level=info logger=scheduler msg="…" key=value`, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _pairs(record, self).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, the same keys as logfmt."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_pairs(record, self), default=str, ensure_ascii=False)


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if _BARE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def host_of(base_url: str) -> str:
    """`host[:port]` of a base URL: never its userinfo, path or query."""
    url = httpx.URL(base_url)
    return f"{url.host}:{url.port}" if url.port else url.host


def cause(message: str) -> str:
    """A PollError's message without the request path (which names a call, not the problem)."""
    match = _PATH_PREFIX.match(message)
    if not match:
        return message
    return f"{match[1]}: {message[match.end() :]}" if match[1] else message[match.end() :]


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class AccountLog:
    """Rate-limited log lines about one account's requests, expiries and health."""

    def __init__(
        self,
        account: str,
        provider: str,
        base_url: str,
        up: Callable[[float], bool],
        clock: Callable[[], float] = time.time,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self.account, self.host, self.up_now, self.clock, self.window = account, host_of(base_url), up, clock, window
        self.fields = {"account": account, "provider": provider, "host": self.host}
        self._task: asyncio.Task[None] | None = None
        self._was_up = True
        self._down_since = 0.0
        self._last = "no detail"  # the latest account-level failure, for the account-down line
        self._reset(clock())
        self._failing = self._expiring = False  # an episode is on: its first line was written

    def _reset(self, now: float) -> None:
        self._window_start = now
        self.requests = 0
        self.failures: Counter[ErrorReason] = Counter()
        self.details: dict[ErrorReason, str] = {}
        self.expiries: Counter[str] = Counter()

    # -- events (called by the account's poller) ---------------------------------------------

    def success(self) -> None:
        self.requests += 1

    def failure(self, reason: ErrorReason, message: str) -> None:
        self.requests += 1
        self.failures[reason] += 1
        why = cause(message)  # a connection error names its host (and proxy) itself
        detail = self.details[reason] = why if why.startswith(self.host) else f"{self.host}: {why}"
        if reason in CALL_LEVEL:
            return
        self._last = f"{reason.value} ({detail})"
        if not self._failing:
            self._failing = True
            self._emit(
                logging.WARNING,
                f"{self.account}: status request failed: {reason.value} ({detail}); "
                f"further failures are summarised every {self.window:g} s",
                event="request_failed",
                reason=reason.value,
                detail=detail,
            )

    def expired(self, why: str) -> None:
        self.expiries[why] += 1
        if not self._expiring:
            self._expiring = True
            self._emit(
                logging.WARNING,
                f"{self.account}: a call expired: {why}; further expiries are summarised every {self.window:g} s",
                event="call_expired",
                why=why,
            )

    # -- the clock: summaries and up/down transitions ----------------------------------------

    def tick(self) -> None:
        now = self.clock()
        self._health(now)
        if now - self._window_start < self.window:
            return
        span = f"in the last {now - self._window_start:.0f} s"
        if self.failures:
            failed = sum(self.failures.values())
            level = logging.INFO if set(self.failures) <= CALL_LEVEL else logging.WARNING
            self._emit(
                level,
                f"{self.account}: {failed} of {self.requests} status requests failed {span}: {self._reasons()}",
                event="request_failures",
                failed=failed,
                requests=self.requests,
                reasons=",".join(r.value for r in self.failures),
            )
        if self.expiries:
            expired = sum(self.expiries.values())
            whys = "; ".join(f"{n} {why}" if len(self.expiries) > 1 else why for why, n in self.expiries.most_common())
            self._emit(
                logging.WARNING,
                f"{self.account}: {expired} call(s) expired {span}: {whys}",
                event="calls_expired",
                expired=expired,
            )
        self._failing = self._failing and bool(self.failures)
        self._expiring = self._expiring and bool(self.expiries)
        self._reset(now)

    def _reasons(self) -> str:
        many = len(self.failures) > 1
        return ", ".join(
            f"{f'{n} ' if many else ''}{r.value} ({self.details[r]})" for r, n in self.failures.most_common()
        )

    def _health(self, now: float) -> None:
        up = self.up_now(now)
        if up == self._was_up:
            return
        self._was_up = up
        if not up:
            self._down_since = now
            self._emit(
                logging.WARNING,
                f"{self.account}: account down (outbound_call_account_up 0): status "
                f"requests keep failing: {self._last}",
                event="account_down",
            )
        else:
            self._emit(
                logging.INFO,
                f"{self.account}: account up again after {_ago(now - self._down_since)}: status requests succeed",
                event="account_up",
            )

    def _emit(self, level: int, msg: str, **fields: Any) -> None:
        log.log(level, msg, extra={"fields": {**fields, **self.fields}})

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, interval: float = TICK_SECONDS) -> None:
        async def run() -> None:
            while True:
                await asyncio.sleep(interval)
                self.tick()

        self._task = asyncio.create_task(run(), name=f"account-log-{self.account}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
