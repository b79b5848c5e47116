"""`watch`: register calls with a running service through its REST API, one or from a file.

The service does the validation (the API is the one registration path); this side only reads
CSV or JSON Lines, sends batches and sums up what was accepted and refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx

from .errors import ConfigError


def cmd_watch(args: argparse.Namespace) -> int:
    client = _api_client(args)
    if args.file:
        if args.account or args.call_id or args.param:
            raise ConfigError("--file cannot be combined with --account/--call-id/--param")
        return _watch_file(client, Path(args.file), args.batch_size)
    if not (args.account and args.call_id):
        raise ConfigError("give --account and --call-id (or --file)")
    body = {"account": args.account, "call_id": args.call_id, "params": _params(args.param)}
    with client:
        response = _post(client, body)
    if response.status_code in (200, 201):
        rec = response.json()
        verb = "now watching" if response.status_code == 201 else "already known"
        print(f"{verb}: {rec['account']}/{rec['call_id']} state={rec['state']}")
        return 0
    print(f"refused ({response.status_code}): {_error_text(response)}", file=sys.stderr)
    return 1


def _api_client(args: argparse.Namespace) -> httpx.Client:
    """A client with the API token (Bearer, or X-API-Token beside basic auth) and TLS trust."""
    token = args.token or os.environ.get("OCE_API_TOKEN")
    basic = args.basic_auth or os.environ.get("OCE_BASIC_AUTH")
    headers, auth = {}, None
    if basic:
        user, sep, password = basic.partition(":")
        if not sep:
            raise ConfigError("--basic-auth: expected USER:PASSWORD")
        auth = httpx.BasicAuth(user, password)
        if token:
            headers["X-API-Token"] = token
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(
        base_url=args.url, headers=headers, auth=auth, timeout=60, trust_env=False, verify=args.ca_file or True
    )


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _post(client: httpx.Client, body: Any) -> httpx.Response:
    try:
        return client.post("/api/v1/calls", json=body)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach the service at {client.base_url}: {type(exc).__name__}") from None


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error"))
    except (ValueError, AttributeError):
        return response.text[:200]


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, POST body or an error string) for each row of a CSV or JSON Lines file."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        first = handle.readline()
        handle.seek(0)
        if first.lstrip().startswith("{"):
            for n, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except ValueError as exc:
                        yield n, f"not valid JSON: {exc}"
            return
        reader = csv.DictReader(handle)
        if not reader.fieldnames or reader.fieldnames[:2] != ["account", "call_id"]:
            raise ConfigError(f"{path}: CSV header must start with account,call_id")
        for row in reader:
            params = {k: v for k, v in row.items() if k not in ("account", "call_id") and k and v not in ("", None)}
            yield reader.line_num, {"account": row["account"], "call_id": row["call_id"], "params": params}


def _watch_file(client: httpx.Client, path: Path, batch_size: int) -> int:
    """Send rows in batches; a refused batch is retried row by row to name the bad rows."""
    accepted = existing = 0
    refused: list[tuple[int, str]] = []
    with client:
        batch: list[tuple[int, Any]] = []

        def send(rows: list[tuple[int, Any]]) -> None:
            nonlocal accepted, existing
            response = _post(client, [body for _, body in rows])
            if response.status_code in (200, 201):
                summary = response.json()
                accepted += summary["created"]
                existing += summary["existing"]
                return
            if response.status_code in (401, 503) or len(rows) == 1:
                if response.status_code in (401, 503):
                    raise ConfigError(f"service refused the batch ({response.status_code}): {_error_text(response)}")
                refused.append((rows[0][0], _error_text(response)))
                return
            for row in rows:
                send([row])

        for line, body in read_rows(path):
            if isinstance(body, str):
                refused.append((line, body))
                continue
            batch.append((line, body))
            if len(batch) >= batch_size:
                send(batch)
                batch = []
        if batch:
            send(batch)
    for line, why in refused:
        print(f"{path}:{line}: refused: {why}", file=sys.stderr)
    print(f"{path}: {accepted} accepted, {existing} already known, {len(refused)} refused")
    return 1 if refused else 0
