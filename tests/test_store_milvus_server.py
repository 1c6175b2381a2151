"""A real Milvus server: create, index, search (from two processes) and erase through milvus://127.0.0.1:PORT.

The server is the PyPI wheel ``milvus`` 2.3.5 (a standalone Milvus with embedded etcd; deprecated, but a
real server: production runs a current Milvus, docs/scale-out.md). Its dependencies clash with ours, so it
lives in its own virtual environment: ``FACELENS_MILVUS_SERVER`` names its ``milvus-server`` program
(default .venv-milvus/bin/milvus-server, made by `make milvus-server`, or ``milvus-server`` on PATH);
or ``FACELENS_TEST_MILVUS`` names a running server (``milvus://HOST:PORT``). Skipped, saying why, when neither is there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import facelens

from .conftest import PEOPLE, portrait

ROOT = Path(__file__).resolve().parents[1]
_START_S = 180.0  # the standalone server takes ~60 s to listen on an idle machine


def _server_program() -> str | None:
    named = os.environ.get("FACELENS_MILVUS_SERVER")
    made = str(ROOT / ".venv-milvus" / "bin" / "milvus-server")  # by `make milvus-server`
    for candidate in ([named] if named else []) + [made, "milvus-server"]:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("pymilvus", reason="needs pymilvus (pip install 'facelens[scale]')")
    running = os.environ.get("FACELENS_TEST_MILVUS")
    if running:
        yield running
        return
    program = _server_program()
    if program is None:
        pytest.skip("no Milvus server: install the 'milvus' 2.3.5 wheel in its own venv and set "
                    "FACELENS_MILVUS_SERVER to its milvus-server, or FACELENS_TEST_MILVUS=milvus://HOST:PORT")
    data = tmp_path_factory.mktemp("milvus")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (data / "server.log").open("wb")
    # (milvus-server --help: the proxy's port is the one clients use; its embedded etcd and local
    # storage live under --data; its other ports are its defaults, so one such server runs at a time)
    proc = subprocess.Popen([program, "--data", str(data / "db"), "--proxy-port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + _START_S
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"the Milvus server did not start within {_START_S:.0f} s (see {data / 'server.log'})")
            time.sleep(1.0)
        time.sleep(3.0)  # (it accepts connections a moment before it serves)
        yield f"milvus://127.0.0.1:{port}"
    finally:
        # milvus-server runs the server as a child (`milvus run standalone`): stop the whole session, or
        # that child outlives the tests and holds the ports the next server needs (seen after a CI run)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()
        log.close()


_OTHER = textwrap.dedent("""
    import sys, facelens
    eng = facelens.Engine(home=sys.argv[1])
    [r] = eng.search_faces_by_image("srv", sys.argv[2])
    print(r.matches[0].person_id if r.matches else "-")
""")


def test_a_milvus_server_collection_indexes_searches_and_erases(tmp_path: Path, milvus_uri: str) -> None:
    home = tmp_path / "home"
    eng = facelens.Engine(home=str(home))
    info = eng.create_collection("srv", store=milvus_uri + "?index=HNSW&M=16&efConstruction=200")
    assert (info.vector_store, info.index_factory) == (milvus_uri, "milvus:HNSW,M=16,efConstruction=200")
    for p in PEOPLE:
        eng.index_faces("srv", portrait(p), person_id=p)
    for p in PEOPLE[:3]:
        [r] = eng.search_faces_by_image("srv", portrait(p, "b"))
        assert [m.person_id for m in r.matches] == [p]
    # another process sees the same vectors (Milvus is shared: no replay needed there)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    other = subprocess.run([sys.executable, "-c", _OTHER, str(home), str(portrait(PEOPLE[1], "b"))],
                           capture_output=True, text=True, timeout=300, env=env)
    assert other.returncode == 0 and other.stdout.strip() == PEOPLE[1], other.stderr[-2000:]
    receipt = eng.erase_person("srv", PEOPLE[0]).to_dict()
    assert receipt["vectors"]["store"] == milvus_uri and "compaction" in receipt["vectors"]["how"]
    [r] = eng.search_faces_by_image("srv", portrait(PEOPLE[0], "b"))
    assert all(m.person_id != PEOPLE[0] for m in r.matches)
    assert eng.check_collection("srv").consistent
    eng.delete_collection("srv")
    from pymilvus import MilvusClient

    client = MilvusClient(uri="http://" + milvus_uri.removeprefix("milvus://"))
    try:
        assert f"facelens_{info.generation}" not in client.list_collections()
    finally:
        client.close()
