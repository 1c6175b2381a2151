"""`facelens serve --processes 2`: a real command in its own process, two worker processes on one port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from facelens.accountability.log import SearchLog

from ._service import make_key
from .conftest import PEOPLE, portrait


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_serve_with_two_processes_shares_one_log_and_stops_cleanly(tmp_path: Path) -> None:
    token = make_key(tmp_path, name="admin", admin=True)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "facelens", "serve", "--home", str(tmp_path), "--port", str(port),
                             "--processes", "2", "--no-access-log", "--rate-limit", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=60)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        assert client.post("/v1/collections", json={"name": "p2"}).status_code == 201
        for person in PEOPLE[:4]:
            r = client.post("/v1/collections/p2/faces", files={"image": portrait(person).read_bytes()},
                            data={"person_id": person})
            assert r.status_code == 200 and len(r.json()["indexed"]) == 1, r.text

        def search(i: int) -> tuple[int, str | None]:
            person = PEOPLE[i % 4]
            with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=60) as c:
                r = c.post("/v1/collections/p2/search/image", files={"image": portrait(person, "b").read_bytes()},
                           data={"purpose": f"case {i}"})
            return r.status_code, (r.json()["results"][0]["matches"][0]["person_id"] if r.status_code == 200 else None)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(search, range(24)))
        # every search answered right, whichever of the two processes took it
        assert answers == [(200, PEOPLE[i % 4]) for i in range(24)]
        workers = [c for c in _children(proc.pid) if "facelens" in Path(f"/proc/{c}/cmdline").read_text()
                   or "multiprocessing" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(workers) >= 2, workers
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read().decode() if proc.stderr else ""
    # one hash chain, written by two processes: one entry per search, none lost, none forked
    log = SearchLog.open(tmp_path)
    try:
        report = log.verify()
        assert report.ok, report
        entries = [e for e in log.iter_entries() if e.body["action"] == "search_faces_by_image"]  # (and the indexing)
        assert sorted(e.body["purpose"] for e in entries) == sorted(f"case {i}" for i in range(24))
    finally:
        log.close()
