"""The signed log on both storages, SQLite (the file) and PostgreSQL (a real server, tests/_postgres.py): the
same appends, verification, tamper detection and checkpoints; on PostgreSQL also the triggers that refuse
UPDATE/DELETE/TRUNCATE, the chain shared by several processes, the schema version and durability settings."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from facelens.accountability.log import (
    _TRIGGER_SQL,
    LOG_NAME,
    Checkpoint,
    LogSigningKey,
    SearchLog,
    log_location,
    make_checkpoint,
    read_entries,
    verify_log,
)
from facelens.accountability.log_pg import PG_TRIGGERS
from facelens.cli import main
from facelens.errors import SearchLogError

if TYPE_CHECKING:
    from ._postgres import PostgresCluster

pytest_plugins = ["tests._postgres"]  # the session's one PostgreSQL cluster (postgres_cluster, pg_url)

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg 3 (pip install 'facelens[scale]')")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a log is: a SQLite file in the test's folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "service" / LOG_NAME
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def key(tmp_path: Path) -> LogSigningKey:
    return LogSigningKey.load_or_create(tmp_path / "keys" / "log-signing.key")


def _superuser(location: Path | str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """What someone with full rights on the storage does behind facelens's back: on PostgreSQL a superuser
    disables the append-only triggers around the statement; on SQLite the file's owner drops them."""
    if isinstance(location, str):
        with psycopg.connect(location, autocommit=True) as conn, conn.transaction():
            conn.execute("ALTER TABLE log_entries DISABLE TRIGGER USER")
            conn.execute(sql.replace("entries", "log_entries").replace("head", "log_head"), params)
            for name in PG_TRIGGERS:  # and back as they were, so that only the entries tell
                conn.execute(f"ALTER TABLE log_entries ENABLE ALWAYS TRIGGER {name}")
    else:
        conn = sqlite3.connect(location, isolation_level=None)
        try:
            for name in _TRIGGER_SQL:
                conn.execute(f"DROP TRIGGER {name}")
            conn.execute(sql.replace("%s", "?"), params)
            for statement in _TRIGGER_SQL.values():
                conn.execute(statement)
        finally:
            conn.close()


def test_pg_log_appends_verifies_and_reads_back_on_both_storages(location: Path | str, key: LogSigningKey) -> None:
    log = SearchLog(location, signing_key=key)
    try:
        assert log.head() is None and verify_log(location, public_keys=[key.public_key]).status == "empty"
        made = [log.append({"action": "search", "collection": "c", "n": i, "who": "Zoë"}) for i in range(30)]
        assert [e.seq for e in made] == list(range(1, 31))
        assert log.head() == (30, made[-1].hash)
        assert [e.hash for e in log.entries(after_seq=10, limit=5)] == [e.hash for e in made[10:15]]
        assert [e.to_dict() for e in log.iter_entries()] == [e.to_dict() for e in made]
        assert [e.seq for e in read_entries(location, after_seq=25)] == [26, 27, 28, 29, 30]
        assert list(read_entries(location, since="2999-01-01")) == []
        report = log.verify()
        assert report.ok and report.status == "intact" and report.entries == 30 and report.signed == 30
        assert report.head_seq == 30 and report.head_hash == made[-1].hash
        # a checkpoint of the head verifies; a checkpoint made by another key does not
        checkpoint = make_checkpoint(location, key)
        assert (checkpoint.seq, checkpoint.hash) == (30, made[-1].hash)
        assert verify_log(location, public_keys=[key.public_key], checkpoint=checkpoint).ok
        with pytest.raises(SearchLogError, match="may not set seq"):
            log.append({"action": "x", "seq": 3})
    finally:
        log.close()


def test_pg_log_an_edited_entry_is_detected_on_both_storages(location: Path | str, key: LogSigningKey) -> None:
    log = SearchLog(location, signing_key=key)
    try:
        for i in range(6):
            log.append({"action": "search", "purpose": f"case {i}"})
    finally:
        log.close()
    _superuser(location, "UPDATE entries SET body = replace(body, 'case 3', 'case 9') WHERE seq = %s", (4,))
    report = verify_log(location, public_keys=[key.public_key])
    assert not report.ok and report.status == "broken" and report.first_bad_seq == 4
    assert "entry 4 was edited" in str(report.problem)


def test_pg_log_a_rewrite_with_the_chain_rehashed_fails_its_signatures(location: Path | str,
                                                                         key: LogSigningKey) -> None:
    """Whoever rewrites an entry and re-hashes the chain after it, without the signing key, is caught."""
    from facelens.accountability.log import GENESIS, canonical_json

    log = SearchLog(location, signing_key=key)
    try:
        entries = [log.append({"action": "search", "purpose": f"case {i}"}) for i in range(4)]
    finally:
        log.close()
    prev = GENESIS
    for e in entries:
        body = {**e.body, "prev_hash": prev}
        if e.seq == 2:
            body["purpose"] = "nothing to see"
        text = canonical_json(body)
        import hashlib

        digest = hashlib.sha256(text.encode()).hexdigest()
        _superuser(location, "UPDATE entries SET body = %s, hash = %s WHERE seq = %s", (text, digest, e.seq))
        prev = digest
    _superuser(location, "UPDATE head SET hash = %s WHERE id = 1", (prev,))
    report = verify_log(location, public_keys=[key.public_key])
    assert report.status == "broken" and report.first_bad_seq == 2
    assert "signature does not verify" in str(report.problem)


def test_pg_log_entries_cut_from_the_end_are_caught_by_a_checkpoint(location: Path | str, key: LogSigningKey,
                                                                      tmp_path: Path) -> None:
    log = SearchLog(location, signing_key=key)
    try:
        kept = [log.append({"action": "search", "n": i}) for i in range(5)]
        checkpoint = make_checkpoint(location, key)
    finally:
        log.close()
    (tmp_path / "cp.json").write_text(json.dumps(checkpoint.to_dict()))
    _superuser(location, "DELETE FROM entries WHERE seq > %s", (3,))
    _superuser(location, "UPDATE head SET seq = %s, hash = %s WHERE id = 1", (3, kept[2].hash))
    assert verify_log(location, public_keys=[key.public_key]).ok  # cut with its head: looks like a shorter log
    report = verify_log(location, public_keys=[key.public_key], checkpoint=Checkpoint.load(tmp_path / "cp.json"))
    assert report.status == "truncated" and report.first_bad_seq == 4


def test_pg_log_triggers_refuse_update_delete_and_truncate(pg_url: str, key: LogSigningKey) -> None:
    log = SearchLog(pg_url, signing_key=key)
    try:
        log.append({"action": "search"})
    finally:
        log.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for sql in ("UPDATE log_entries SET body = '{}'", "DELETE FROM log_entries", "TRUNCATE log_entries"):
            with pytest.raises(psycopg.errors.RaiseException, match="the search log is append-only"):
                conn.execute(sql)
        # the triggers fire in replica mode too (ENABLE ALWAYS), the usual way to bypass triggers
        conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM log_entries")
        assert conn.execute("SELECT count(*) FROM log_entries").fetchone()[0] == 1


def test_pg_log_disabled_or_dropped_triggers_are_reported_then_restored_and_recorded(pg_url: str,
                                                                                      key: LogSigningKey) -> None:
    log = SearchLog(pg_url, signing_key=key)
    try:
        log.append({"action": "search"})
    finally:
        log.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE log_entries DISABLE TRIGGER log_entries_append_only_delete")
        conn.execute("DROP TRIGGER log_entries_append_only_truncate ON log_entries")
    report = verify_log(pg_url, public_keys=[key.public_key])
    assert report.status == "broken" and "log_entries_append_only_delete" in str(report.problem)
    assert "log_entries_append_only_truncate" in str(report.problem) and "the entries themselves check out" in str(
        report.problem)
    log = SearchLog(pg_url, signing_key=key)  # opening restores them, and says so in the log
    try:
        assert sorted(log.storage.restored) == ["log_entries_append_only_delete", "log_entries_append_only_truncate"]
        report = log.verify()
        assert report.ok and any("restored them" in n for n in report.notes), report
        assert log.entries(after_seq=1, limit=1)[0].body["action"] == "log_triggers_restored"
    finally:
        log.close()
    with psycopg.connect(pg_url, autocommit=True) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("TRUNCATE log_entries")


_APPENDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from facelens.accountability.log import LogSigningKey, SearchLog
    log = SearchLog(sys.argv[1], signing_key=LogSigningKey.load(Path(sys.argv[2])))
    for i in range(int(sys.argv[3])):
        log.append({"action": "search", "process": sys.argv[4], "n": i})
    log.close()
""")


def test_pg_log_several_processes_append_to_one_chain(pg_url: str, key: LogSigningKey) -> None:
    """Four processes (as four servers on four hosts would) append at once: one chain, no fork, none lost."""
    assert key.path is not None
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, pg_url, str(key.path), "40", f"p{n}"],
                              cwd=ROOT, stderr=subprocess.PIPE) for n in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    report = verify_log(pg_url, public_keys=[key.public_key])
    assert report.ok and report.entries == 160 and report.head_seq == 160, report
    seen = [(e.body["process"], e.body["n"]) for e in read_entries(pg_url)]
    assert sorted(seen) == sorted((f"p{n}", i) for n in range(4) for i in range(40))
    for n in range(4):  # each process's own entries are in its order
        assert [i for p, i in seen if p == f"p{n}"] == list(range(40))


def test_pg_log_schema_version_durability_and_errors(pg_url: str, postgres_cluster: PostgresCluster,
                                                     key: LogSigningKey) -> None:
    log = SearchLog(pg_url, signing_key=key)
    try:
        conn = log.storage._conn  # type: ignore[attr-defined]
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    finally:
        log.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM facelens_schema WHERE component = 'log'").fetchone()[0] == 2
        conn.execute("UPDATE facelens_schema SET version = 3 WHERE component = 'log'")
    with pytest.raises(SearchLogError, match="schema is version 3, newer than this facelens knows.*upgrade"):
        SearchLog(pg_url, signing_key=key)
    # a server that is not there: an error naming it, without the password
    nowhere = f"postgresql://facelens:s3cret@127.0.0.1:{postgres_cluster.port + 1}/x"
    with pytest.raises(SearchLogError, match="cannot connect to postgresql://facelens:\\*\\*\\*@127.0.0.1") as info:
        SearchLog(nowhere, signing_key=key)
    assert "s3cret" not in str(info.value)
    assert verify_log(nowhere).status == "missing"
    # a database with no log in it
    assert verify_log(postgres_cluster.create_database()).status == "missing"
    with pytest.raises(SearchLogError, match="no search log in"):
        list(read_entries(postgres_cluster.create_database()))
    with pytest.raises(SearchLogError, match="needs its signing key file"):
        SearchLog(pg_url)


def test_pg_log_cli_uses_the_database_of_facelens_database(pg_url: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`facelens log verify|checkpoint|export` and `SearchLog.open` read FACELENS_DATABASE (or the home's
    facelens.toml); the home then has no log file."""
    home = tmp_path / "home"
    monkeypatch.setenv("FACELENS_DATABASE", pg_url)
    assert log_location(home) == pg_url
    log = SearchLog.open(home)
    try:
        for i in range(3):
            log.append({"action": "search", "n": i})
    finally:
        log.close()
    assert not (home / "service" / LOG_NAME).exists()
    run = CliRunner()
    verified = run.invoke(main, ["log", "verify", "--home", str(home), "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["entries"] == 3
    exported = run.invoke(main, ["log", "export", "--home", str(home)])
    assert exported.exit_code == 0 and [json.loads(line)["n"] for line in exported.output.splitlines()] == [0, 1, 2]
    assert run.invoke(main, ["log", "checkpoint", "--home", str(home)]).exit_code == 0
    assert Checkpoint.load(home / "service" / "checkpoints" / "checkpoint-3.json").seq == 3
    # the same through the home's settings file, with the environment unset
    monkeypatch.delenv("FACELENS_DATABASE")
    assert log_location(home) == home / "service" / LOG_NAME
    (home / "facelens.toml").write_text(f'database = "{pg_url}"\n')
    assert log_location(home) == pg_url
    assert json.loads(run.invoke(main, ["log", "verify", "--home", str(home), "--json"]).output)["entries"] == 3
    (home / "facelens.toml").write_text('database = "mysql://x"\n')
    bad = run.invoke(main, ["log", "verify", "--home", str(home)])
    assert bad.exit_code != 0 and "must be a postgresql://" in bad.output and "Traceback" not in bad.output


def test_pg_log_checkpoint_by_default_goes_where_the_transparency_report_looks(location: Path | str, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`facelens log checkpoint` without --out writes <home>/service/checkpoints/checkpoint-SEQ.json, the folder
    the transparency report searches (issue 15); --out - prints it; on both storages."""
    from facelens.accountability.transparency import build_transparency

    monkeypatch.delenv("FACELENS_LOG_SIGNING_KEY", raising=False)
    if isinstance(location, str):
        monkeypatch.setenv("FACELENS_DATABASE", location)
    else:
        monkeypatch.delenv("FACELENS_DATABASE", raising=False)
    assert log_location(tmp_path) == location
    log = SearchLog.open(tmp_path)
    try:
        for i in range(4):
            log.append({"action": "search_faces", "collection": "c", "purpose": f"case {i}", "results": []})
    finally:
        log.close()
    assert build_transparency(tmp_path, with_rates=False)["log"]["checkpoint"] is None
    made = CliRunner().invoke(main, ["log", "checkpoint", "--home", str(tmp_path)])
    assert made.exit_code == 0, made.output
    written = tmp_path / "service" / "checkpoints" / "checkpoint-4.json"
    assert f"written to {written}" in made.output and Checkpoint.load(written).seq == 4
    found = build_transparency(tmp_path, with_rates=False)["log"]
    assert found["checkpoint"]["source"] == "found" and found["checkpoint"]["seq"] == 4
    assert found["checkpoint"]["signature_valid"] and found["checkpoint"]["log_matches"]
    assert found["verification"]["ok"] and found["verification"]["entries"] == 4
    printed = CliRunner().invoke(main, ["log", "checkpoint", "--home", str(tmp_path), "--out", "-"])
    assert printed.exit_code == 0 and json.loads(printed.stdout)["seq"] == 4
    assert sorted(p.name for p in written.parent.iterdir()) == ["checkpoint-4.json"]  # nothing else left there


def test_pg_log_servers_can_run_as_a_role_that_cannot_rewrite_the_log(pg_url: str, key: LogSigningKey) -> None:
    """The tables made once by their owner, the servers may connect as a role granted only what appending and
    checking keys need (docs/scale-out.md): it appends and verifies, and cannot edit, delete or unprotect."""
    SearchLog(pg_url, signing_key=key).close()  # made by the owner
    from facelens.server.keys import KeyStore

    KeyStore(pg_url, home=Path("/nonexistent")).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE facelens_app LOGIN")
        conn.execute("GRANT SELECT, INSERT ON log_entries, api_key_grants TO facelens_app")
        conn.execute("GRANT SELECT, INSERT, UPDATE ON log_head, api_keys TO facelens_app")
        conn.execute("GRANT SELECT ON facelens_schema TO facelens_app")
    app_url = pg_url.replace("postgresql://facelens@", "postgresql://facelens_app@")
    log = SearchLog(app_url, signing_key=key)
    try:
        for i in range(3):
            log.append({"action": "search", "n": i})
        assert log.verify().ok
    finally:
        log.close()
    with psycopg.connect(app_url, autocommit=True) as conn:
        for sql in ("UPDATE log_entries SET body = '{}'", "DELETE FROM log_entries", "TRUNCATE log_entries",
                    "ALTER TABLE log_entries DISABLE TRIGGER USER",
                    "DROP TRIGGER log_entries_append_only_update ON log_entries"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
    keys = KeyStore(app_url, home=Path("/nonexistent"))  # and the key store, as the same role
    try:
        made = keys.create(name="ops", admin=True)
        assert keys.authenticate(made.token) is not None
        keys.revoke(made.key.key_id)
        assert keys.authenticate(made.token) is None
    finally:
        keys.close()
    assert verify_log(pg_url, public_keys=[key.public_key]).entries == 3


def test_pg_log_the_engine_records_in_the_database_of_its_home(pg_url: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python API (Engine, with an actor) records in FACELENS_DATABASE's log, not in a file of the home."""
    import facelens

    monkeypatch.setenv("FACELENS_DATABASE", pg_url)
    monkeypatch.delenv("FACELENS_LOG_SIGNING_KEY", raising=False)
    engine = facelens.Engine(home=str(tmp_path), threads=1)
    try:
        engine.create_collection("x", actor=facelens.Actor.cli())
        engine.delete_collection("x", actor=facelens.Actor.cli())
    finally:
        engine.close()
    assert [e.body["action"] for e in read_entries(pg_url)] == ["collection_created", "collection_deleted"]
    assert not (tmp_path / "service" / LOG_NAME).exists()
    key = LogSigningKey.load(tmp_path / "service" / "log-signing.key")
    assert verify_log(pg_url, public_keys=[key.public_key]).ok


def test_pg_log_schema_versions_are_numbered_alike_on_both_storages(tmp_path: Path, pg_url: str,
                                                                    key: LogSigningKey) -> None:
    """The SQLite files record their schema version (``PRAGMA user_version``) with the numbers PostgreSQL's
    ``facelens_schema`` uses; a file from a newer facelens is refused, as a newer database is."""
    from facelens.accountability.log import LOG_SCHEMA_VERSION
    from facelens.server.errors import ServiceError
    from facelens.server.keys import KEYS_SCHEMA_VERSION, KeyStore

    SearchLog(pg_url, signing_key=key).close()
    KeyStore(pg_url, home=tmp_path).close()
    with psycopg.connect(pg_url) as conn:
        assert dict(conn.execute("SELECT component, version FROM facelens_schema").fetchall()) == {
            "log": LOG_SCHEMA_VERSION, "keys": KEYS_SCHEMA_VERSION}
    log_file, key_file = tmp_path / "service" / LOG_NAME, tmp_path / "service" / "keys.sqlite"
    SearchLog(log_file, signing_key=key).close()
    KeyStore.open(tmp_path).close()
    for path, version in ((log_file, LOG_SCHEMA_VERSION), (key_file, KEYS_SCHEMA_VERSION)):
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == version == 2
            conn.execute("PRAGMA user_version = 3")
        finally:
            conn.close()
    with pytest.raises(SearchLogError, match="schema is version 3, newer than this facelens knows"):
        SearchLog(log_file, signing_key=key)
    with pytest.raises(ServiceError, match="schema is version 3, newer than this facelens knows"):
        KeyStore.open(tmp_path)


def test_pg_log_the_database_is_chosen_by_flag_then_environment_then_home_file(tmp_path: Path) -> None:
    from facelens.config import database_url
    from facelens.errors import InvalidArgumentError

    (tmp_path / "facelens.toml").write_text('database = "postgresql://file@h/db"\n')
    env = {"FACELENS_DATABASE": "postgresql://env@h/db"}
    assert database_url(tmp_path, "postgresql://flag@h/db", env) == "postgresql://flag@h/db"
    assert database_url(tmp_path, None, env) == "postgresql://env@h/db"
    assert database_url(tmp_path, None, {}) == "postgresql://file@h/db"
    assert database_url(tmp_path, "sqlite", env) is None
    assert database_url(tmp_path, None, {"FACELENS_DATABASE": ""}) is None  # set but empty: the files
    assert database_url(tmp_path / "elsewhere", None, {}) is None
    (tmp_path / "facelens.toml").write_text("database = [1]\n")
    with pytest.raises(InvalidArgumentError, match="database must be a string"):
        database_url(tmp_path, None, {})
    (tmp_path / "facelens.toml").write_text("database = \n")
    with pytest.raises(InvalidArgumentError, match="is not valid TOML"):
        database_url(tmp_path, None, {})
