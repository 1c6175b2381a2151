"""A throwaway PostgreSQL server for the tests: Debian's binaries (``initdb``, ``pg_ctl``), a cluster in a
temporary folder on a free port of 127.0.0.1, started once per test session and stopped at its end.

``pg_url`` gives each test a database of its own in that cluster (``postgresql://facelens@127.0.0.1:PORT/t_N``).
Without the binaries (PATH, or Debian's /usr/lib/postgresql/*/bin) or psycopg, the tests that use it are
skipped, saying which is missing (``.ci/run`` installs Debian's ``postgresql`` package when it can).

initdb refuses to run as root, and CI runs as root: the cluster then belongs to ``nobody``, started with
``runuser`` (util-linux, on every Debian), in a folder made for it. Authentication is ``trust`` for
connections from 127.0.0.1 only: the server listens on no other address, and its socket folder is its own.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_USER = "facelens"  # the cluster's superuser
_counter = itertools.count(1)


def pg_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else the newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """A cluster in ``folder`` listening on 127.0.0.1:``port``; :meth:`stop` ends it and removes the folder."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="facelens-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                shutil.rmtree(self.folder, ignore_errors=True)
                pytest.skip("PostgreSQL tests: running as root and no runuser to start the cluster as nobody")
            os.chown(self.folder, 65534, 65534)  # nobody:nogroup
            self._as = ["runuser", "-u", "nobody", "--"]
        started = time.monotonic()
        self._run("initdb", "-D", str(self.data), "-U", _USER, "--auth=trust", "-E", "UTF8", "--no-instructions")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "120",
                  "-o", f"-p {self.port} -h 127.0.0.1 -k {self.folder} -c max_connections=200", "start")
        self.start_seconds = time.monotonic() - started

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self._as, str(self.bin_dir / tool), *args], capture_output=True, text=True,
                                timeout=180, cwd=self.folder)
        if result.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"t_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg 3 (pip install 'facelens[scale]')")
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL tests: no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin "
                    "(Debian: apt-get install postgresql; .ci/run does it)")
    cluster = PostgresCluster(bin_dir)
    print(f"\nPostgreSQL test cluster: {bin_dir}, port {cluster.port}, started in {cluster.start_seconds:.2f} s")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a fresh database, for one test."""
    return postgres_cluster.create_database()
