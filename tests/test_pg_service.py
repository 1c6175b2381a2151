"""Two `facelens serve` processes on two ports sharing one PostgreSQL database (tests/_postgres.py) for their API
keys and their signed log, as two hosts of one deployment would: a key made while both run works on both, a
revocation is refused by both at once, and both servers' searches land in one chain, unforked, under
concurrent clients. (Keys are made and revoked with `facelens keys`, the only way there is: the service has
no HTTP route for them.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from facelens.accountability.log import LogSigningKey, read_entries, verify_log

from .conftest import PEOPLE, portrait

pytest_plugins = ["tests._postgres"]  # the session's one PostgreSQL cluster (postgres_cluster, pg_url)

pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg 3 (pip install 'facelens[scale]')")

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "facelens", *args], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _wait(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.2)


def test_pg_two_servers_share_keys_and_one_signed_log(tmp_path: Path, pg_url: str) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACELENS_HOME": str(home)}
    env.pop("FACELENS_LOG_SIGNING_KEY", None)
    env.pop("FACELENS_DATABASE", None)
    with_db = {**env, "FACELENS_DATABASE": pg_url}
    admin = _cli(with_db, "keys", "create", "--admin", "--name", "ops").strip()
    ports = [_free_port(), _free_port()]
    common = ["serve", "--no-access-log", "--rate-limit", "0", "--workers", "2"]
    procs = [  # one finds the database in its environment, the other is told with --database
        subprocess.Popen([sys.executable, "-m", "facelens", *common, "--port", str(ports[0])], env=with_db, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
        subprocess.Popen([sys.executable, "-m", "facelens", *common, "--port", str(ports[1]), "--database", pg_url],
                         env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for proc, url in zip(procs, urls, strict=True):
            _wait(proc, url)
        a = httpx.Client(base_url=urls[0], headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        assert a.post("/v1/collections", json={"name": "x"}).status_code == 201
        ids = []
        for which in ("a", "b"):  # two photos of one person: a search by one face finds the other
            r = a.post("/v1/collections/x/faces", files={"image": portrait(PEOPLE[0], which).read_bytes()},
                       data={"person_id": PEOPLE[0]})
            assert r.status_code == 200, r.text
            ids.append(r.json()["indexed"][0]["face_id"])
        face_id = ids[0]
        # a key made while both servers run works on both
        searcher = _cli(with_db, "keys", "create", "--collection", "x", "--scope", "search", "--scope", "read",
                        "--name", "desk").strip()
        for url in urls:
            assert httpx.get(f"{url}/v1/collections/x", headers={"Authorization": f"Bearer {searcher}"},
                             timeout=30).status_code == 200

        def search(i: int) -> tuple[int, str | None]:
            url = urls[i % 2]
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {searcher}"}, timeout=60) as c:
                answers = []
                for j in range(3):
                    r = c.post("/v1/collections/x/search/face", json={"face_id": face_id, "purpose": f"case {i}.{j}"})
                    answers.append((r.status_code, r.json()["matches"][0]["person_id"]
                                    if r.status_code == 200 else r.text))
                return answers[0] if len(set(answers)) == 1 else (0, repr(answers))

        with ThreadPoolExecutor(16) as pool:  # 8 clients on each server at once
            answers = list(pool.map(search, range(16)))
        assert answers == [(200, PEOPLE[0])] * 16
        # revoked with the CLI: both servers refuse it from their next request on
        key_id = searcher.split("_")[1]
        _cli(with_db, "keys", "revoke", key_id)
        for url in urls:
            r = httpx.get(f"{url}/v1/collections/x", headers={"Authorization": f"Bearer {searcher}"}, timeout=30)
            assert r.status_code == 401, r.text
        a.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in procs]
    errs = [p.stderr.read().decode() if p.stderr else "" for p in procs]
    # uvicorn ends a single process by re-raising SIGTERM once it has shut down cleanly
    assert all(code in (0, -signal.SIGTERM) and "Application shutdown complete" in err
               for code, err in zip(codes, errs, strict=True)), errs
    # one chain, both servers' searches in it, none lost, no fork; and nothing of it in the home's files
    key = LogSigningKey.load(home / "service" / "log-signing.key")
    report = verify_log(pg_url, public_keys=[key.public_key])
    assert report.ok and report.status == "intact", report
    entries = list(read_entries(pg_url))
    searches = [e.body for e in entries if e.body["action"] == "search_faces"]
    assert sorted(s["purpose"] for s in searches) == sorted(f"case {i}.{j}" for i in range(16) for j in range(3))
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    actions = [e.body["action"] for e in entries]
    assert actions.count("key_created") == 2 and actions.count("key_revoked") == 1
    service = home / "service"
    assert not (service / "keys.sqlite").exists() and not (service / "search-log.sqlite").exists()
    assert json.loads(_cli(with_db, "log", "verify", "--json"))["entries"] == len(entries)
