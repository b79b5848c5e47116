"""Command line: run, demo, watch, plugins, check-config, healthcheck, prune (docs/design.md, "CLI")."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ._version import __version__
from .cli_watch import cmd_watch
from .config import load_config, resolve_accounts, split_address
from .errors import ConfigError, ExporterError
from .logs import FORMATS, LEVELS
from .logs import setup as setup_log_handler
from .plugins import Registry, describe_model, load_registry
from .privacy import access_warning

DEFAULT_API_URL = "http://127.0.0.1:9877"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ExporterError as exc:
        for line in str(exc).splitlines():  # a config error has one line per problem
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outbound-call-exporter",
        description="Prometheus exporter for outbound voice-AI calls (PolyAI, Telzino, Trillet, ...).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the service")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth for every endpoint (Prometheus exporter-toolkit format)",
    )
    _log_flags(p, None)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run against built-in fake providers with synthetic traffic")
    p.add_argument("--listen", default="127.0.0.1:9877", help="HOST:PORT to serve on (default %(default)s)")
    p.add_argument(
        "--store", default=None, help="SQLite store path, kept across runs (default: a fresh temporary store per run)"
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--calls-per-second", type=float, default=2.0, help="new calls per second (default %(default)s)")
    p.add_argument("--max-calls", type=int, metavar="N", help="stop creating calls after N (default: no limit)")
    p.add_argument(
        "--failure-spike-at",
        type=float,
        metavar="SECONDS",
        help="from this many seconds after start, ~35%% of calls fail (to see alerts fire)",
    )
    p.add_argument(
        "--answer-drop-at",
        type=float,
        metavar="SECONDS",
        help="from this many seconds after start, almost no call is answered",
    )
    _log_flags(p, "info")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("watch", help="register calls with a running service")
    p.add_argument("--url", default=DEFAULT_API_URL, help="service URL (default %(default)s)")
    p.add_argument("--token", default=None, help="API bearer token (default: $OCE_API_TOKEN)")
    p.add_argument(
        "--basic-auth",
        default=None,
        metavar="USER:PASSWORD",
        help="when the service uses basic auth (default: $OCE_BASIC_AUTH)",
    )
    p.add_argument("--ca-file", default=None, help="CA bundle to verify an https --url (e.g. self-signed)")
    p.add_argument("--account", help="account name (single call)")
    p.add_argument("--call-id", help="provider call id (single call)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="per-call param (repeatable)")
    p.add_argument("--file", help="CSV (header: account,call_id,<params>...) or JSON Lines of POST bodies")
    p.add_argument("--batch-size", type=int, default=500, help="rows per request with --file (default %(default)s)")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("plugins", help="list provider plugins, their settings and per-call params")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("prune", help="delete call records not watched and older than N days from the store")
    p.add_argument("--config", required=True, help="YAML config file (its store_url, else store_path, is pruned)")
    p.add_argument(
        "--older-than-days",
        required=True,
        type=float,
        metavar="DAYS",
        help="delete records whose call ended (or was last polled) more than DAYS ago",
    )
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("check-config", help="validate a config file; exit 0 or print the error")
    p.add_argument("--config", required=True, help="YAML config file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("healthcheck", help="exit 0 if the service at the config's listen_address is healthy, else 1")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="YAML config file of the service (its listen_address)")
    where.add_argument(
        "--listen", metavar="HOST:PORT", help="the address the service listens on (e.g. a demo's --listen)"
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="the service's web config (https, client certificate, basic auth)",
    )
    p.add_argument("--timeout", type=float, default=4.0, help="seconds (default %(default)s)")
    p.set_defaults(func=cmd_healthcheck)
    return parser


def _log_flags(p: argparse.ArgumentParser, level: str | None) -> None:
    """`--log.level` and `--log.format`, named as in Prometheus' own tools."""
    p.add_argument(
        "--log.level",
        "--log-level",
        dest="log_level",
        default=level,
        choices=LEVELS,
        help="lowest level logged (default: " + (level or "the config's log_level, info") + ")",
    )
    p.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=FORMATS,
        help="logfmt (default) or json lines, for log pipelines",
    )


def setup_logging(level: str, fmt: str = "logfmt") -> None:
    setup_log_handler(level, fmt)


# -- run / demo / check-config ------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from .server import serve
    from .service import Service
    from .transport import run_event_loop
    from .webconfig import load_web_config

    config = load_config(args.config)
    web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    setup_logging(args.log_level or config.log_level, args.log_format)
    service = Service(config, _registry())
    run_event_loop(serve(service, web_config=web_config))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    setup_logging(args.log_level, args.log_format)
    try:
        split_address(args.listen)
    except ValueError as exc:
        raise ConfigError(f"--listen: {exc}") from None
    asyncio.run(
        run_demo(
            _registry(),
            args.listen,
            Path(args.store) if args.store else None,
            args.duration,
            args.calls_per_second,
            args.failure_spike_at,
            args.max_calls,
            answer_drop_at=args.answer_drop_at,
        )
    )
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    from .healthcheck import check

    ok, message = check(args.config, args.listen, args.web_config_file, args.timeout)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    accounts = resolve_accounts(config, _registry())
    names = ", ".join(f"{a.name} ({a.provider.name})" for a in accounts) or "none"
    if notice := access_warning(config):  # a warning, not an error: a read-only exporter is valid
        print(f"warning: {notice}", file=sys.stderr)
    print(
        f"{args.config}: OK — {len(accounts)} account(s): {names}; privacy: destination "
        f"{config.privacy.destination}, provider_metadata {str(config.privacy.provider_metadata).lower()}"
    )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Retention: the operator decides how long records are kept (see README, "Privacy and access")."""
    from .store import store_for

    config = load_config(args.config)
    if not args.older_than_days > 0:
        raise ConfigError("--older-than-days: must be a positive number of days")
    if config.store_url is None and not config.store_path.exists():
        raise ConfigError(f"store_path: no store at {config.store_path}")
    before = time.time() - args.older_than_days * 86400
    store = store_for(config.store_url, config.store_path)

    async def prune() -> tuple[int, bool]:
        await store.open()
        try:
            return await store.prune(before)
        finally:
            await store.close()

    deleted, cleared = asyncio.run(prune())
    cutoff = datetime.fromtimestamp(before, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = getattr(store, "where", config.store_path)  # a PostgreSQL store's, without its password
    print(f"{where}: deleted {deleted} call record(s) not watched and last active before {cutoff}")
    if not cleared:
        print(f"warning: {_NOT_CLEARED['postgresql' if config.store_url else 'sqlite']}", file=sys.stderr)
    return 0


_NOT_CLEARED = {
    "sqlite": "the running service was writing, so the WAL could not be emptied: copies of deleted records "
    "may linger in the -wal file until SQLite reuses it; run prune again a little later",
    "postgresql": "another VACUUM held the tables, so the deleted rows were not vacuumed now: they stay in "
    "the tables' pages until autovacuum reaches them; run prune again a little later",
}


def _registry() -> Registry:
    registry = load_registry()
    for failure in registry.failures:
        print(f"warning: plugin {failure.source} disabled: {failure.error}", file=sys.stderr)
    return registry


# -- plugins ------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = load_registry()
    rows: list[dict[str, Any]] = [
        {
            "name": cls.name,
            "description": cls.description,
            "default_base_url": cls.default_base_url,
            "call_id": cls.Params.model_fields["call_id"].description or "",
            "settings": describe_model(cls.Settings),
            "params": [f for f in describe_model(cls.Params) if f["name"] != "call_id"],
            "statuses": {raw: state.value for raw, state in cls.status_map.items()},
            "fake": name in registry.fakes,
        }
        for name, cls in sorted(registry.providers.items())
    ]
    failures = [{"plugin": f.source, "error": f.error} for f in registry.failures]
    if args.json:
        print(json.dumps({"plugins": rows, "failures": failures}, indent=2, default=str))
        return 1 if failures else 0
    for row in rows:
        print(f"{row['name']}  —  {row['description']}")
        print(f"  default base URL: {row['default_base_url']}")
        print(f"  call id: {row['call_id'] or '—'}")
        print("  settings:" + _fields(row["settings"]))
        print("  per-call params:" + (_fields(row["params"]) or " —"))
        print("  statuses: " + ", ".join(f"{k}→{v}" for k, v in row["statuses"].items()))
    for f in failures:
        print(f"FAILED  {f['plugin']}: {f['error']}")
    if rows:
        print("(† secret; * required)")
    return 1 if failures else 0


def _fields(fields: list[dict[str, Any]]) -> str:
    """One line per field: name, † secret, * required, its description and default."""
    lines = []
    for f in fields:
        name = f"{f['name']}{'†' if f['secret'] else ''}{'*' if f['required'] else ''}"
        default = f" (default {f['default']})" if f["default"] is not None else ""
        lines.append(f"\n    {name:<16} {f['description'] or '(no description)'}{default}")
    return "".join(lines)


# -- watch --------------------------------------------------------------------------------------


if __name__ == "__main__":
    raise SystemExit(main())
