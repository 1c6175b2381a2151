"""API keys on both storages, SQLite (the key file) and PostgreSQL (a real server, tests/_postgres.py): the same
creation, authentication, grants bound to collection generations and revocation; on PostgreSQL a key revoked
through one key store is refused by another (another server) at once, and the CLI uses FACELENS_DATABASE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from facelens.accountability.log import LogSigningKey, SearchLog, read_entries, verify_log
from facelens.cli import main
from facelens.errors import CollectionNotFoundError, InvalidArgumentError
from facelens.server.errors import ServiceError
from facelens.server.keys import KeyStore, Scope

pytest_plugins = ["tests._postgres"]  # the session's one PostgreSQL cluster (postgres_cluster, pg_url)

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg 3 (pip install 'facelens[scale]')")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str | None:
    """None: the home's key file; else the URL of a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def _collection(home: Path, name: str) -> None:
    result = CliRunner().invoke(main, ["collection", "create", name, "--home", str(home)])
    assert result.exit_code == 0, result.output


def test_pg_keys_create_authenticate_and_revoke_on_both_storages(tmp_path: Path, database: str | None) -> None:
    _collection(tmp_path, "x")
    one = KeyStore.open(tmp_path, database=database)
    two = KeyStore.open(tmp_path, database=database)  # another server of the same deployment
    try:
        admin = one.create(name="admin", admin=True)
        reader = one.create(name="reader", grants={"x": ["read", "search"]})
        assert two.active_count() == 2
        seen = two.authenticate(reader.token)
        assert seen is not None and seen.key_id == reader.key.key_id and seen.scopes("x") == {Scope.READ, Scope.SEARCH}
        assert seen.generations == reader.key.generations and seen.dead_grants() == []
        assert two.authenticate(reader.token[:-1] + ("A" if reader.token[-1] != "A" else "B")) is None
        assert two.authenticate("fl_nonsense") is None and two.get(admin.key.key_id) is not None
        assert sorted(k.name for k in two.list_keys()) == ["admin", "reader"]  # oldest first: same second here
        # revoked through one: refused by the other from its next call on
        one.revoke(reader.key.key_id)
        assert two.authenticate(reader.token) is None and two.get(reader.key.key_id) is None
        with pytest.raises(ServiceError, match="already revoked"):
            two.revoke(reader.key.key_id)
        with pytest.raises(ServiceError, match="no key with id"):
            two.revoke("000000000000")
        assert two.active_count() == 1
        # the revoked key's row (and its digest) stays: the log names its id
        assert sorted((k.name, k.revoked is not None) for k in two.list_keys()) == [("admin", False), ("reader", True)]
        with pytest.raises(CollectionNotFoundError):
            one.create(name="early", grants={"later": ["read"]})
        with pytest.raises(InvalidArgumentError):
            one.create(name="nothing")
    finally:
        one.close()
        two.close()
    assert (tmp_path / "service" / "keys.sqlite").exists() == (database is None)


def test_pg_keys_a_grant_dies_with_its_collection_on_both_storages(tmp_path: Path, database: str | None) -> None:
    _collection(tmp_path, "x")
    store = KeyStore.open(tmp_path, database=database)
    try:
        key = store.create(name="x-reader", grants={"x": ["read"]})
        assert CliRunner().invoke(main, ["collection", "delete", "x", "--home", str(tmp_path)]).exit_code == 0
        _collection(tmp_path, "x")  # the same name, another collection
        again = store.authenticate(key.token)
        assert again is not None and again.scopes("x") == frozenset() and again.dead_grants() == ["x"]
    finally:
        store.close()


def test_pg_keys_creation_and_revocation_are_recorded_in_the_log(tmp_path: Path, pg_url: str) -> None:
    _collection(tmp_path, "x")
    signing = LogSigningKey.load_or_create(tmp_path / "k" / "log.key")
    log = SearchLog(pg_url, signing_key=signing)
    store = KeyStore.open(tmp_path, database=pg_url, action_log=log)
    try:
        made = store.create(name="r", grants={"x": ["read"]})
        store.revoke(made.key.key_id)
    finally:
        store.close()
        log.close()
    report = verify_log(pg_url, public_keys=[signing.public_key])
    assert report.ok and report.entries == 2
    with psycopg.connect(pg_url) as conn:
        actions = [r[0] for r in conn.execute("SELECT (body::jsonb) ->> 'action' FROM log_entries ORDER BY seq")]
        assert actions == ["key_created", "key_revoked"]
        assert conn.execute("SELECT version FROM facelens_schema WHERE component = 'keys'").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM api_keys WHERE token_sha256 = %s", (made.token,)).fetchone()[0] == 0


def test_pg_keys_a_key_whose_record_fails_is_not_created(tmp_path: Path, pg_url: str) -> None:
    class Broken:
        def append(self, record: object) -> None:
            raise ServiceError("the log is down")

    store = KeyStore.open(tmp_path, database=pg_url, action_log=Broken())
    try:
        with pytest.raises(ServiceError, match="the log is down"):
            store.create(name="a", admin=True)
        assert store.list_keys() == []
    finally:
        store.close()


def test_pg_keys_cli_uses_facelens_database(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACELENS_DATABASE", pg_url)
    run = CliRunner()
    made = run.invoke(main, ["keys", "create", "--admin", "--name", "ops", "--json", "--home", str(tmp_path)])
    assert made.exit_code == 0, made.output
    key_id = json.loads(made.output)["key_id"]
    listed = json.loads(run.invoke(main, ["keys", "list", "--json", "--home", str(tmp_path)]).output)
    assert [k["key_id"] for k in listed["keys"]] == [key_id]
    assert run.invoke(main, ["keys", "revoke", key_id, "--home", str(tmp_path)]).exit_code == 0
    service = tmp_path / "service"
    assert not (service / "keys.sqlite").exists() and not (service / "search-log.sqlite").exists()
    verified = json.loads(run.invoke(main, ["log", "verify", "--json", "--home", str(tmp_path)]).output)
    assert verified["ok"] and verified["entries"] == 2  # key_created, key_revoked: in the database's log


def _drop_connections(url: str) -> int:
    """What a database restart does to every server's connections: ends them (the servers' sessions)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()").fetchall()
    return len(rows)


def test_pg_keys_and_log_survive_lost_connections_over_http(tmp_path: Path, pg_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections ended under a running service (a database restart): key checks and appends find their
    connection dead and try once more on a new one (nothing of the first try was committed), so no request
    fails and every search is logged; the chain stays whole."""
    import httpx

    from facelens.server import ServerSettings

    from ._service import LiveService

    monkeypatch.setenv("FACELENS_DATABASE", pg_url)
    monkeypatch.delenv("FACELENS_LOG_SIGNING_KEY", raising=False)
    token = KeyStore.open(tmp_path).create(name="ops", admin=True).token
    live = LiveService(ServerSettings(home=tmp_path, rate_limit=0))
    try:
        c = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert c.post("/v1/collections", json={"name": "x"}).status_code == 201
        assert _drop_connections(pg_url) >= 2  # the key store's and the log's
        assert c.get("/v1/collections/x").status_code == 200  # the key check reconnected
        statuses = []
        for i in range(3):
            r = c.post("/v1/collections/x/search/face", json={"face_id": "f" * 32, "purpose": f"case {i}"})
            statuses.append((r.status_code, r.json()["error"]["code"]))
        # a search for a face that is not there is answered 404 and logged as a failed search: the first one's
        # append met the dead connection and was made again on a new one
        assert statuses == [(404, "face_not_found")] * 3
        assert _drop_connections(pg_url) >= 2
        assert c.get("/v1/log", params={"limit": 1}).status_code == 200  # a read of the log reconnects too
        c.close()
    finally:
        live.stop()
    signing = LogSigningKey.load(tmp_path / "service" / "log-signing.key")
    report = verify_log(pg_url, public_keys=[signing.public_key])
    assert report.ok, report
    purposes = [e.body.get("purpose") for e in read_entries(pg_url) if e.body["action"] == "search_faces"]
    assert purposes == ["case 0", "case 1", "case 2"]
