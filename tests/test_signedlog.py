"""The signed search log as an auditor meets it: Ed25519 signatures an attacker without the key cannot
redo, read-only verification, checkpoints kept elsewhere, and the honest statuses (empty, missing,
truncated, unsigned) instead of "intact"."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from facelens.accountability.log import (
    Checkpoint,
    LogPublicKey,
    LogSigningKey,
    SearchLog,
    canonical_json,
    make_checkpoint,
    verify_log,
)
from facelens.cli import main
from facelens.server import ServerSettings
from facelens.server.errors import SearchLogError

from ._service import LiveService, make_key

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "examples" / "portraits" / "C001079_a.jpg"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FACELENS_LOG_SIGNING_KEY"}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(autouse=True)
def _no_key_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACELENS_LOG_SIGNING_KEY", raising=False)


def _log(home: Path, n: int = 6) -> tuple[Path, LogPublicKey]:
    log = SearchLog.open(home)
    try:
        for i in range(n):
            log.append({"action": "search_faces", "key_id": "k1", "purpose": f"case {i}", "collection": "c",
                        "results": [{"candidates": [{"face_id": f"f{i}", "score": 0.5}]}]})
        return log.path, log.signing_key.public_key
    finally:
        log.close()


def _pub(home: Path) -> LogPublicKey:
    return LogPublicKey.load(home / "service" / "log-signing.pub")


def _rewrite(path: Path, from_seq: int, edit: dict[str, Any], *, sigs: str = "keep") -> None:
    """What an attacker with write access but without the signing key can do: edit entry ``from_seq``
    and re-hash it and every entry after it consistently (sha256 of the canonical JSON), head included.
    ``sigs``: keep the old signatures, ``strip`` them (and the signer) from the rewritten entries."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS entries_append_only_update")
    conn.execute("DROP TRIGGER IF EXISTS entries_append_only_delete")
    rows = conn.execute("SELECT seq, body, hash, sig FROM entries ORDER BY seq").fetchall()
    prev = None
    for seq, text, digest, sig in rows:
        if seq < from_seq:
            prev = digest
            continue
        body = json.loads(text)
        if seq == from_seq:
            body.update(edit)
        if prev is not None:
            body["prev_hash"] = prev
        if sigs == "strip":
            body.pop("signer", None)
            sig = None
        new_text = canonical_json(body)
        prev = hashlib.sha256(new_text.encode()).hexdigest()
        conn.execute("UPDATE entries SET body = ?, hash = ?, sig = ? WHERE seq = ?", (new_text, prev, sig, seq))
    conn.execute("UPDATE head SET hash = ?", (prev,))
    conn.execute("CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries "
                 "BEGIN SELECT RAISE(ABORT, 'the search log is append-only'); END")
    conn.execute("CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries "
                 "BEGIN SELECT RAISE(ABORT, 'the search log is append-only'); END")
    conn.close()


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_signedlog_entries_are_signed_with_a_key_file_outside_the_log(tmp_path: Path) -> None:
    path, public = _log(tmp_path)
    key_file = tmp_path / "service" / "log-signing.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "service" / "log-signing.pub").stat().st_mode & 0o777 == 0o644
    assert b"PRIVATE KEY" not in path.read_bytes() and b"PRIVATE KEY" in key_file.read_bytes()
    report = verify_log(path, public_keys=[_pub(tmp_path)])
    assert report.ok and report.status == "intact" and report.signed == 6 and report.unsigned == 0
    assert report.public_keys == (public.fingerprint,)
    # the same key is used when the log is opened again
    again = SearchLog.open(tmp_path)
    again.close()
    assert again.signing_key.public_key == public
    code, out = _cli("log", "verify", "--home", str(tmp_path))
    assert code == 0 and "ok: entries 1..6" in out and public.fingerprint in out
    # the public key for auditors, and its fingerprint
    result = CliRunner().invoke(main, ["log", "public-key", "--home", str(tmp_path)])
    assert result.exit_code == 0 and LogPublicKey.from_pem(result.stdout.encode()) == public
    assert public.fingerprint in result.stderr


def test_signedlog_signing_key_can_live_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "secrets" / "facelens.key"
    monkeypatch.setenv("FACELENS_LOG_SIGNING_KEY", str(elsewhere))
    home = tmp_path / "home"
    _log(home, 2)
    assert elsewhere.is_file() and not (home / "service" / "log-signing.key").exists()
    monkeypatch.delenv("FACELENS_LOG_SIGNING_KEY")
    assert _cli("log", "verify", "--home", str(home))[0] == 1  # no key found at the default place
    code, out = _cli("log", "verify", "--home", str(home), "--signing-key", str(elsewhere))
    assert code == 0, out
    code, out = _cli("log", "verify", "--home", str(home), "--public-key", str(elsewhere.with_suffix(".pub")))
    assert code == 0, out


def test_signedlog_service_signs_with_the_key_its_settings_name(tmp_path: Path) -> None:
    elsewhere = tmp_path / "secrets" / "service.key"
    home = tmp_path / "home"
    token = make_key(home, name="admin", admin=True)
    assert ServerSettings.from_json(ServerSettings(home=home, signing_key=elsewhere).to_json()).signing_key == elsewhere
    live = LiveService(ServerSettings(home=home, rate_limit=0, signing_key=elsewhere))
    try:
        client = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        files = {"image_a": PORTRAIT.read_bytes(), "image_b": PORTRAIT.read_bytes()}
        assert client.post("/v1/compare", files=files, data={"purpose": "test"}).status_code == 200
    finally:
        live.stop()
    assert elsewhere.is_file() and not (home / "service" / "log-signing.key").exists()
    code, out = _cli("log", "verify", "--home", str(home), "--public-key", str(elsewhere.with_suffix(".pub")))
    assert code == 0, out


def test_signedlog_processes_creating_the_key_at_once_share_one(tmp_path: Path) -> None:
    key = tmp_path / "k" / "log.key"
    code = ("import sys; from facelens.accountability.log import LogSigningKey; "
            "print(LogSigningKey.load_or_create(__import__('pathlib').Path(sys.argv[1])).public_key.fingerprint)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(key)], stdout=subprocess.PIPE, env=_env(), text=True)
             for _ in range(4)]
    prints = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(prints) == 1 and LogSigningKey.load(key).public_key.fingerprint in prints
    assert [p.name for p in key.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_signedlog_an_attacker_without_the_key_cannot_rewrite_the_chain(tmp_path: Path) -> None:
    path, public = _log(tmp_path)
    pristine = shutil.copy(path, tmp_path / "pristine.sqlite")
    # rewrite entry 3 and re-hash 3..6 and the head: the sha256 chain is consistent again ...
    _rewrite(path, 3, {"purpose": "innocent"})
    unsigned_check = verify_log(path)  # (without a key, the chain alone cannot tell)
    assert unsigned_check.status == "unproven" and "no public key" in (unsigned_check.problem or "")
    # ... but entry 3's signature no longer verifies
    report = verify_log(path, public_keys=[public])
    assert not report.ok and report.first_bad_seq == 3 and "signature does not verify" in (report.problem or "")
    code, out = _cli("log", "verify", "--home", str(tmp_path))
    assert code == 1 and "BROKEN at entry 3" in out
    # stripping the signatures from the rewritten entries does not help
    shutil.copy(pristine, path)
    _rewrite(path, 3, {"purpose": "innocent"}, sigs="strip")
    report = verify_log(path, public_keys=[public])
    assert report.first_bad_seq == 3 and "stripped" in (report.problem or "")
    # rewriting the whole log as unsigned: nothing vouches for it, so it is not reported intact
    shutil.copy(pristine, path)
    _rewrite(path, 1, {"purpose": "innocent"}, sigs="strip")
    report = verify_log(path, public_keys=[public])
    assert not report.ok and report.status == "unproven" and report.unsigned == 6
    code, out = _cli("log", "verify", "--home", str(tmp_path))
    assert code == 1 and out.startswith("UNPROVEN: entries 1..6 are unsigned")


def test_signedlog_the_wrong_public_key_fails(tmp_path: Path) -> None:
    path, _ = _log(tmp_path)
    other = LogSigningKey.load_or_create(tmp_path / "other.key")
    report = verify_log(path, public_keys=[other.public_key])
    assert not report.ok and report.first_bad_seq == 1 and "not by the given public key" in (report.problem or "")
    code, out = _cli("log", "verify", "--home", str(tmp_path), "--public-key", str(tmp_path / "other.pub"))
    assert code == 1 and "BROKEN at entry 1" in out and other.public_key.fingerprint in out


def test_signedlog_verify_is_read_only(tmp_path: Path) -> None:
    path, public = _log(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER entries_append_only_delete")
    conn.close()
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    report = verify_log(path, public_keys=[public])
    assert not report.ok and report.status == "broken" and "entries_append_only_delete" in (report.problem or "")
    assert "check out" in (report.problem or "")
    code, out = _cli("log", "verify", "--home", str(tmp_path), "--json")
    assert code == 1 and json.loads(out)["status"] == "broken"
    assert _cli("log", "export", "--home", str(tmp_path))[0] == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    conn.close()
    assert triggers == {"entries_append_only_update"}  # not silently re-created
    # the service, opening it to write, restores them and says so in the log itself
    log = SearchLog.open(tmp_path)
    log.close()
    report = verify_log(path, public_keys=[public])
    assert report.ok and report.entries == 7 and any("triggers dropped" in n for n in report.notes)


def test_signedlog_empty_missing_and_zero_byte_logs_are_not_intact(tmp_path: Path) -> None:
    home = tmp_path / "h"
    code, out = _cli("log", "verify", "--home", str(home))
    assert code == 1 and out.startswith("MISSING: no search log at")
    SearchLog.open(home).close()
    path = home / "service" / "search-log.sqlite"
    code, out = _cli("log", "verify", "--home", str(home))
    assert code == 1 and out.startswith("EMPTY: the log has no entries") and "intact" not in out
    path.write_bytes(b"")
    code, out = _cli("log", "verify", "--home", str(home))
    assert code == 1 and "0 bytes" in out
    with pytest.raises(SearchLogError, match="0 bytes"):  # nor does the service start a new log over it
        SearchLog.open(home)
    assert path.stat().st_size == 0


def test_signedlog_checkpoints_catch_truncation_and_replacement(tmp_path: Path) -> None:
    path, public = _log(tmp_path)
    out_file = tmp_path / "elsewhere" / "cp.json"
    out_file.parent.mkdir()
    code, _ = _cli("log", "checkpoint", "--home", str(tmp_path), "--out", str(out_file))
    assert code == 0
    cp = Checkpoint.load(out_file)
    assert cp.seq == 6 and cp.public_key == public.fingerprint
    assert _cli("log", "verify", "--home", str(tmp_path), "--checkpoint", str(out_file))[0] == 0
    _log(tmp_path, 2)  # the log goes on: the checkpoint still holds
    assert _cli("log", "verify", "--home", str(tmp_path), "--checkpoint", str(out_file))[0] == 0
    pristine = shutil.copy(path, tmp_path / "pristine.sqlite")
    # cut the last 4 entries and reset the head consistently: without the checkpoint it looks fine ...
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER entries_append_only_delete")
    conn.execute("DELETE FROM entries WHERE seq > 4")
    conn.execute("UPDATE head SET seq = 4, hash = (SELECT hash FROM entries WHERE seq = 4)")
    conn.execute("CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries "
                 "BEGIN SELECT RAISE(ABORT, 'the search log is append-only'); END")
    conn.close()
    assert verify_log(path, public_keys=[public]).ok
    # ... and the checkpoint kept elsewhere says it is truncated
    code, out = _cli("log", "verify", "--home", str(tmp_path), "--checkpoint", str(out_file))
    assert code == 1 and out.startswith("TRUNCATED:") and "names entry 6" in out
    # the whole log deleted and started anew (same key): the checkpoint's entry is not the one there now
    for side in ("", "-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    _log(tmp_path, 8)
    code, out = _cli("log", "verify", "--home", str(tmp_path), "--checkpoint", str(out_file))
    assert code == 1 and "BROKEN at entry 6" in out and "rewritten since" in out
    # a checkpoint edited (or forged without the key) is refused
    shutil.copy(pristine, path)
    forged = {**cp.to_dict(), "seq": 7}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, out = _cli("log", "verify", "--home", str(tmp_path), "--checkpoint", str(tmp_path / "forged.json"))
    assert code == 1 and "not signed by the given public key" in out
    # and no checkpoint is made of a broken log
    _rewrite(path, 2, {"purpose": "x"})
    with pytest.raises(SearchLogError, match="no checkpoint made"):
        make_checkpoint(path, LogSigningKey.load(tmp_path / "service" / "log-signing.key"))
    assert _cli("log", "checkpoint", "--home", str(tmp_path))[0] == 1


def test_signedlog_anchor_fewer_entries_than_it_says_is_truncated(tmp_path: Path) -> None:
    path, public = _log(tmp_path, 3)
    report = verify_log(path, public_keys=[public], anchor=(5, "a" * 64))
    assert report.status == "truncated" and "names entry 5" in (report.problem or "")


def _old_log(path: Path, n: int) -> None:
    """A log as facelens wrote it before signing (format 1: no sig column, no signer)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("""
        CREATE TABLE entries (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, hash TEXT NOT NULL, body TEXT NOT NULL);
        CREATE INDEX entries_time ON entries (time);
        CREATE TABLE head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
        CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries
            BEGIN SELECT RAISE(ABORT, 'the search log is append-only'); END;
        CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries
            BEGIN SELECT RAISE(ABORT, 'the search log is append-only'); END;
    """)
    prev = "0" * 64
    for seq in range(1, n + 1):
        body = {"action": "search_faces", "v": 1, "seq": seq, "time": f"2026-01-0{seq}T00:00:00.000000+00:00",
                "prev_hash": prev, "purpose": f"old {seq}"}
        text = canonical_json(body)
        prev = hashlib.sha256(text.encode()).hexdigest()
        conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?)", (seq, body["time"], prev, text))
    conn.execute("INSERT INTO head VALUES (1, ?, ?)", (n, prev))
    conn.close()


def test_signedlog_old_unsigned_logs_stay_readable(tmp_path: Path) -> None:
    (tmp_path / "service").mkdir()
    path = tmp_path / "service" / "search-log.sqlite"
    _old_log(path, 3)
    code, out = _cli("log", "export", "--home", str(tmp_path))
    assert code == 0 and [json.loads(line)["purpose"] for line in out.splitlines()] == ["old 1", "old 2", "old 3"]
    key = LogSigningKey.load_or_create(tmp_path / "service" / "log-signing.key")
    report = verify_log(path, public_keys=[key.public_key])
    assert report.status == "unproven" and report.unsigned == 3 and "unsigned" in (report.problem or "")
    # the service opens it, and its first signed entry covers the unsigned ones through the chain
    _log(tmp_path, 1)
    report = verify_log(path, public_keys=[key.public_key])
    assert report.ok and report.signed == 1 and report.unsigned == 3
    assert any("entries 1..3 are unsigned" in n and "entry 4 covers them" in n for n in report.notes)


def test_signedlog_export_that_starts_later_says_so(tmp_path: Path) -> None:
    _log(tmp_path, 5)
    export = tmp_path / "tail.jsonl"
    assert _cli("log", "export", "--home", str(tmp_path), "--after", "2", "-o", str(export))[0] == 0
    code, out = _cli("log", "verify", "--file", str(export), "--home", str(tmp_path))
    assert code == 0 and "entries 3..5" in out and "does not start at entry 1" in out
    lines = export.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["sig"] = json.loads(lines[0])["sig"]  # another entry's signature
    export.write_text("\n".join([lines[0], json.dumps(entry), lines[2]]) + "\n")
    code, out = _cli("log", "verify", "--file", str(export), "--home", str(tmp_path))
    assert code == 1 and "BROKEN at entry 4" in out


def test_signedlog_huge_after_is_a_clean_error(tmp_path: Path) -> None:
    _log(tmp_path, 2)
    code, out = _cli("log", "export", "--home", str(tmp_path), "--after", str(10**30))
    assert code == 2 and "Traceback" not in out and "--after" in out
    token = make_key(tmp_path, name="admin", admin=True)
    live = LiveService(ServerSettings(home=tmp_path, rate_limit=0))
    try:
        client = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        r = client.get("/v1/log", params={"after": str(10**30)})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        page = client.get("/v1/log", params={"after": str(2**63 - 1)}).json()
        assert page["entries"] == [] and page["head"]["seq"] == 2
        entries = client.get("/v1/log").json()["entries"]
        assert len(entries) == 2 and all(e["sig"] and e["signer"] == _pub(tmp_path).fingerprint for e in entries)
    finally:
        live.stop()


_APPENDER = """
import sys
from pathlib import Path
from facelens.accountability.log import SearchLog
log = SearchLog.open(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    entry = log.append({"action": "search_faces", "purpose": f"{sys.argv[3]} {i}"})
    print(entry.seq, flush=True)
"""


def test_signedlog_processes_append_to_one_signed_chain(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(tmp_path), "25", f"p{n}"], env=_env(),
                              stdout=subprocess.PIPE, text=True) for n in range(3)]
    seqs = [int(s) for p in procs for s in p.communicate(timeout=120)[0].split()]
    assert sorted(seqs) == list(range(1, 76))
    report = verify_log(tmp_path / "service" / "search-log.sqlite", public_keys=[_pub(tmp_path)])
    assert report.ok and report.signed == 75


def test_signedlog_kill_while_appending_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _APPENDER, str(tmp_path), "100000", "k"], env=_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged = 0
    deadline = time.monotonic() + 60
    while acknowledged < 50 and time.monotonic() < deadline:
        acknowledged = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    report = verify_log(tmp_path / "service" / "search-log.sqlite", public_keys=[_pub(tmp_path)])
    assert report.ok and report.entries >= acknowledged >= 50, report


@pytest.mark.parametrize("command", ["log checkpoint", "log public-key", "log verify"])
def test_signedlog_commands_are_documented(command: str) -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    section = doc.split(f"## facelens {command}\n", 1)[1].split("\n## ", 1)[0]
    assert f"facelens {command}" in section and "--signing-key" in section
    result = CliRunner().invoke(main, [*command.split(), "--help"])
    assert result.exit_code == 0 and "--signing-key" in result.output
