"""Replica processes of `outbound-call-exporter run` sharing one PostgreSQL store (scale-out tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    """One `run` process: its own port and log, the shared config otherwise."""

    def __init__(self, directory: Path, name: str, config: dict[str, Any]) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / f"{name}.yml"
        self.config.write_text(yaml.safe_dump({**config, "listen_address": f"127.0.0.1:{self.port}"}))
        self.log = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Replica":
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCE_")}
        self.proc = subprocess.Popen([sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config",
                                      str(self.config)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env=env)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a graceful stop: its leases are handed back at once), then wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = httpx.get(f"{self.url}/metrics", timeout=5, trust_env=False).text
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        return self.samples().get((name, frozenset(labels.items())), 0.0)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def wait_for(predicate: Any, timeout: float, message: str, replicas: list[Replica] = ()) -> float:
    """Seconds until `predicate()` is truthy; fails with the replicas' log tails after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            logs = "\n".join(f"--- {r.name}\n{r.tail()}" for r in replicas)
            raise AssertionError(f"timed out after {timeout}s waiting for {message}\n{logs}")
        time.sleep(0.2)
    return time.monotonic() - started
