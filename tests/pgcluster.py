"""A throwaway PostgreSQL cluster in a temporary directory, for tests and the benchmark.

`initdb` + `pg_ctl` from Debian's `postgresql` package (found on PATH or under
/usr/lib/postgresql/*/bin). The server listens on 127.0.0.1 only, on a free port, with a
Unix socket in the cluster directory; `stop()` keeps the data, `destroy()` removes the directory.
PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user and
its programs run through `runuser`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

TOOLS = ("initdb", "pg_ctl")


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, newest version first; None if absent."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    for directory in candidates:
        if all(os.access(os.path.join(directory, t), os.X_OK) for t in TOOLS):
            return Path(directory)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One PostgreSQL server: `start()`, `stop()`, `restart()`, `url`, `destroy()`."""

    def __init__(self, bindir: Path, user: str = "oce", database: str = "oce") -> None:
        # its own directory under /tmp, not pytest's: those are mode 700, closed to `postgres`
        self.root = Path(tempfile.mkdtemp(prefix="oce-pg-"))
        self.bindir, self.user, self.database = bindir, user, database
        self.data = self.root / "data"
        self.port = free_port()
        self._runas = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._runas:
            cmd = ["runuser", "-u", self._runas, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")

    def init(self) -> "Cluster":
        if self._runas:
            entry = pwd.getpwnam(self._runas)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\nsynchronous_commit = off\n"
                       "full_page_writes = off\nmax_connections = 200\nshared_buffers = 128MB\n")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database on this server (empty, or a copy of `template`); its URL."""
        copy = ("-T", template) if template else ()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, *copy, name)
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def drop_database(self, name: str) -> None:
        """Drop `name`, ending any connection still open to it."""
        self._run("dropdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "--force", name)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
