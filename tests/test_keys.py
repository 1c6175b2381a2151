"""Key grants bound to a collection's identity (its generation), over real HTTP and the CLI: a grant
ends with its collection, a new collection of the same name is invisible to it, and no grant can be
made in advance for a name that does not exist."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from facelens.cli import main
from facelens.errors import CollectionNotFoundError
from facelens.server import ServerSettings
from facelens.server.keys import GenerationCache, KeyStore
from facelens.store import collection_generation

from ._service import LiveService, make_key


def _client(live: LiveService, token: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
    return str(r.json()["error"]["message"])


def test_keys_a_grant_ends_with_its_collection_over_http(tmp_path: Path) -> None:
    admin_token = make_key(tmp_path, name="admin", admin=True)
    live = LiveService(ServerSettings(home=tmp_path, rate_limit=0))
    try:
        admin = _client(live, admin_token)
        assert admin.post("/v1/collections", json={"name": "x"}).status_code == 201
        old = _client(live, make_key(tmp_path, name="old", grants={"x": ["read", "search"]}))
        assert old.get("/v1/collections/x").status_code == 200
        assert old.get("/v1/collections").json() == {"collections": ["x"]}
        assert admin.delete("/v1/collections/x").status_code == 200
        assert admin.post("/v1/collections", json={"name": "x"}).status_code == 201  # same name, new collection
        missing = _error(admin.get("/v1/collections/nothing-here"), 404, "collection_not_found")
        for r in (old.get("/v1/collections/x"), old.get("/v1/collections/x/faces"),
                  old.post("/v1/collections/x/search/face", json={"face_id": "f", "purpose": "p"})):
            assert _error(r, 404, "collection_not_found") == missing.replace("nothing-here", "x")
        assert old.get("/v1/collections").json() == {"collections": []}
        # a key made for the new collection works, and the old one stays dead
        new = _client(live, make_key(tmp_path, name="new", grants={"x": ["read"]}))
        assert new.get("/v1/collections/x").status_code == 200
        _error(old.get("/v1/collections/x"), 404, "collection_not_found")
    finally:
        live.stop()


def test_keys_cannot_be_made_for_a_missing_collection(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path)
    try:
        with pytest.raises(CollectionNotFoundError, match="no collection named 'later'.*create it first"):
            store.create(name="early", grants={"later": ["read"]})
        assert store.list_keys() == []
    finally:
        store.close()
    result = CliRunner().invoke(main, ["keys", "create", "--collection", "later", "--scope", "read",
                                       "--home", str(tmp_path)])
    assert result.exit_code == 3 and "no collection named 'later'" in result.output and "Traceback" not in result.output
    assert CliRunner().invoke(main, ["collection", "create", "later", "--home", str(tmp_path)]).exit_code == 0
    made = CliRunner().invoke(main, ["keys", "create", "--collection", "later", "--scope", "read",
                                     "--home", str(tmp_path), "--json"])
    assert made.exit_code == 0
    key = json.loads(made.output)
    assert key["generations"] == {"later": collection_generation(tmp_path, "later")} and key["dead_grants"] == []


def test_keys_list_shows_dead_grants(tmp_path: Path) -> None:
    run = CliRunner()
    for name in ("a", "b"):
        assert run.invoke(main, ["collection", "create", name, "--home", str(tmp_path)]).exit_code == 0
    assert run.invoke(main, ["keys", "create", "--collection", "a", "--collection", "b", "--scope", "read",
                             "--name", "two", "--home", str(tmp_path)]).exit_code == 0
    assert run.invoke(main, ["collection", "delete", "b", "--home", str(tmp_path)]).exit_code == 0
    listed = json.loads(run.invoke(main, ["keys", "list", "--home", str(tmp_path), "--json"]).output)["keys"]
    assert listed[0]["grants"] == {"a": ["read"], "b": ["read"]} and listed[0]["dead_grants"] == ["b"]
    text = run.invoke(main, ["keys", "list", "--home", str(tmp_path)]).output
    assert "a: read; b: read (dead: the collection was deleted)" in text
    assert run.invoke(main, ["collection", "create", "b", "--home", str(tmp_path)]).exit_code == 0
    listed = json.loads(run.invoke(main, ["keys", "list", "--home", str(tmp_path), "--json"]).output)["keys"]
    assert listed[0]["dead_grants"] == ["b"]  # a new "b" is not the one granted


def test_keys_old_key_files_are_migrated(tmp_path: Path) -> None:
    """A key file from before generations: grants on collections that exist get their generation now;
    grants on names with no collection are dead, even once such a collection is made."""
    assert CliRunner().invoke(main, ["collection", "create", "here", "--home", str(tmp_path)]).exit_code == 0
    (tmp_path / "service").mkdir(exist_ok=True)  # (the signed log is there: the CLI recorded the creation)
    conn = sqlite3.connect(tmp_path / "service" / "keys.sqlite", isolation_level=None)
    conn.executescript("""
        CREATE TABLE keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL, token_sha256 TEXT NOT NULL,
                           admin INTEGER NOT NULL, created TEXT NOT NULL, revoked TEXT);
        CREATE TABLE grants (key_id TEXT NOT NULL REFERENCES keys (key_id), collection TEXT NOT NULL,
                             scope TEXT NOT NULL, PRIMARY KEY (key_id, collection, scope));
        INSERT INTO keys VALUES ('0123456789ab', 'old', 'x', 0, '2026-01-01T00:00:00+00:00', NULL);
        INSERT INTO grants VALUES ('0123456789ab', 'here', 'read'), ('0123456789ab', 'gone', 'search');
    """)
    conn.close()
    store = KeyStore.open(tmp_path)
    try:
        (key,) = store.list_keys()
        assert key.generations == {"here": collection_generation(tmp_path, "here"), "gone": ""}
        assert key.scopes("here") == {"read"} and key.scopes("gone") == frozenset() and key.dead_grants() == ["gone"]
        assert CliRunner().invoke(main, ["collection", "create", "gone", "--home", str(tmp_path)]).exit_code == 0
        (key,) = store.list_keys()
        assert key.scopes("gone") == frozenset()
    finally:
        store.close()
    again = KeyStore.open(tmp_path)  # migrating once is enough: a second open changes nothing
    try:
        assert again.list_keys()[0].generations["here"] == collection_generation(tmp_path, "here")
    finally:
        again.close()


def test_keys_generation_cache_sees_a_collection_recreated_at_once(tmp_path: Path) -> None:
    run = CliRunner()
    cache = GenerationCache(tmp_path)
    assert cache("c") is None
    generations = []
    for _ in range(3):  # created and deleted within the same second: never served from a stale cache
        assert run.invoke(main, ["collection", "create", "c", "--home", str(tmp_path)]).exit_code == 0
        generations.append(cache("c"))
        assert generations[-1] == collection_generation(tmp_path, "c") and cache("c") == generations[-1]
        assert run.invoke(main, ["collection", "delete", "c", "--home", str(tmp_path)]).exit_code == 0
        assert cache("c") is None
    assert len(set(generations)) == 3
    assert cache("../escape") is None


def test_keys_generation_cache_reads_once_until_the_file_changes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import facelens.server.keys as keys_module

    run = CliRunner()
    assert run.invoke(main, ["collection", "create", "c", "--home", str(tmp_path)]).exit_code == 0
    time.sleep(1.1)  # older than the settling time: cacheable
    reads: list[str] = []

    def counted(home: Path, name: str) -> str:
        reads.append(name)
        return collection_generation(home, name)

    monkeypatch.setattr(keys_module, "collection_generation", counted)
    cache = GenerationCache(tmp_path)
    first = cache("c")
    assert [cache("c") for _ in range(5)] == [first] * 5 and reads == ["c"]
    assert run.invoke(main, ["collection", "delete", "c", "--home", str(tmp_path)]).exit_code == 0
    assert run.invoke(main, ["collection", "create", "c", "--home", str(tmp_path)]).exit_code == 0
    second = cache("c")
    assert second is not None and second != first and reads == ["c", "c"]


def test_keys_created_and_revoked_are_recorded_in_the_signed_log(tmp_path: Path) -> None:
    from facelens.accountability.log import LogPublicKey, read_entries, verify_log

    run = CliRunner()
    assert run.invoke(main, ["collection", "create", "c", "--home", str(tmp_path)]).exit_code == 0
    made = run.invoke(main, ["keys", "create", "--collection", "c", "--scope", "search", "--name", "door",
                             "--home", str(tmp_path), "--json"])
    assert made.exit_code == 0, made.output
    key = json.loads(made.output)
    assert run.invoke(main, ["keys", "revoke", key["key_id"], "--home", str(tmp_path)]).exit_code == 0
    log_path = tmp_path / "service" / "search-log.sqlite"
    created, revoked = (e.body for e in read_entries(log_path) if e.body["action"].startswith("key_"))
    assert created["action"] == "key_created" and created["key_id"] is None and created["actor"]["kind"] == "cli"
    assert created["subject"] == {"key_id": key["key_id"], "name": "door", "admin": False,
                                  "grants": {"c": {"scopes": ["search"], "generation": key["generations"]["c"]}}}
    assert key["token"] not in log_path.read_bytes().decode("latin-1")
    assert revoked["action"] == "key_revoked" and revoked["subject"] == {"key_id": key["key_id"], "name": "door"}
    assert verify_log(log_path, public_keys=[LogPublicKey.load(tmp_path / "service" / "log-signing.pub")]).ok
    # a key whose creation cannot be recorded is not created
    log_path.unlink()
    log_path.write_bytes(b"")
    failed = run.invoke(main, ["keys", "create", "--admin", "--home", str(tmp_path)])
    assert failed.exit_code == 2 and "0 bytes" in failed.output and "fl_" not in failed.output
    assert len(json.loads(run.invoke(main, ["keys", "list", "--home", str(tmp_path), "--json"]).output)["keys"]) == 1


def test_keys_made_from_the_cli_are_listed_by_the_log_endpoint(tmp_path: Path) -> None:
    """The admin log endpoint answers entries the command line wrote (no requesting key: key_id null);
    the API fuzzer found GET /v1/log answering 500 on them."""
    made = CliRunner().invoke(main, ["keys", "create", "--admin", "--name", "ops", "--home", str(tmp_path)])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    live = LiveService(ServerSettings(home=tmp_path, rate_limit=0))
    try:
        r = httpx.get(f"{live.url}/v1/log", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    finally:
        live.stop()
    assert r.status_code == 200, r.text
    [entry] = r.json()["entries"]
    assert entry["action"] == "key_created" and entry["key_id"] is None and entry["subject"]["name"] == "ops"
