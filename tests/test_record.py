"""The complete record (issue 15, items 4 and 7): every state-changing action, and every search and compare,
from the Python API (given an actor), the HTTP service and the CLI, appears in the signed log with the right
actor and fields and no biometric data; erasures return receipts that the log vouches for; a change whose
record cannot be written is not made; a timed-out search is never recorded as shown, and a search recorded
as shown is answered."""

from __future__ import annotations

import inspect
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import facelens
from facelens import Actor
from facelens.accountability.log import LogPublicKey, read_entries, verify_log
from facelens.engine import READ_ONLY_METHODS, RECORDED_METHODS
from facelens.errors import FaceNotFoundError, NoFaceError, SearchLogError
from facelens.pipeline import CancelledError, CancelToken, cancellable
from facelens.server import ServerSettings

from ._service import LiveService, make_key
from .conftest import portrait
from .test_signedlog import _rewrite

ROOT = Path(__file__).resolve().parents[1]
A, B, C = "C001079", "D000601", "B000444"  # bundled portraits (two photos each: _a, _b)
EXTERNAL_ID = "secret-file-name-0173.jpg"  # an external image id: never in the log

# every key an entry may hold that would carry biometric data or a file name
_FORBIDDEN_KEYS = {"embedding", "embeddings", "bbox", "box", "landmarks", "external_image_id", "crop", "jpeg",
                   "image", "quality", "pose"}


def _entries(home: Path) -> list[dict[str, Any]]:
    return [dict(e.body) for e in read_entries(home / "service" / "search-log.sqlite")]


def _walk_keys(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_keys(v)


def _assert_no_biometrics(entries: list[dict[str, Any]]) -> None:
    """No embedding, box, landmark, crop or external image id in any entry (keys and values)."""
    for e in entries:
        bad = _FORBIDDEN_KEYS & set(_walk_keys(e))
        assert not bad, (bad, e)
        text = json.dumps(e)
        assert EXTERNAL_ID not in text, e
        # an embedding would be hundreds of numbers; the longest list of numbers an entry may hold is short
        floats = [v for v in _walk_values(e) if isinstance(v, float)]
        assert len(floats) < 200, e


def _walk_values(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk_values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_values(v)
    else:
        yield obj


def _blank_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (90, 90, 90)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def eng(tmp_path: Path) -> Iterator[facelens.Engine]:
    e = facelens.Engine(home=str(tmp_path / "home"), threads=1)
    yield e
    e.close()


# -- the guard: no public method of the engine is neither recorded nor read-only ----------------------

def test_record_every_public_engine_method_is_classified_recorded_or_read_only() -> None:
    public = {name for name, member in inspect.getmembers(facelens.Engine) if not name.startswith("_")
              and (inspect.isfunction(member) or inspect.ismethod(member))}
    assert RECORDED_METHODS.isdisjoint(READ_ONLY_METHODS)
    unclassified = public - RECORDED_METHODS - READ_ONLY_METHODS
    assert not unclassified, (f"public Engine methods {sorted(unclassified)} are neither in RECORDED_METHODS nor "
                              f"READ_ONLY_METHODS (facelens/engine.py): a method that changes state must record it")
    for name in sorted(public & RECORDED_METHODS):
        assert "actor" in inspect.signature(getattr(facelens.Engine, name)).parameters, name


# -- the Python API ----------------------------------------------------------------------------------

def test_record_python_api_records_every_action_with_its_actor_and_no_biometrics(eng: facelens.Engine) -> None:
    me = Actor.python("records-test", "pytest")
    eng.create_collection("c", lead_floor_fmr=1e-3, actor=me)
    assert eng.set_lead_floor("c", 2e-3, actor=me) == 2e-3
    first = eng.index_faces("c", portrait(A), person_id="alice", external_image_id=EXTERNAL_ID, actor=me)
    again = eng.index_faces("c", portrait(A), person_id="alice", external_image_id=EXTERNAL_ID, actor=me)
    assert again.already_indexed
    other = eng.index_faces("c", portrait(B), actor=me)
    third = eng.index_faces("c", portrait(C), actor=me)
    fid_a, fid_b, fid_c = (r.indexed[0]["face_id"] for r in (first, other, third))
    eng.create_person("c", "bob", actor=me)
    assert eng.associate_faces("c", "bob", [fid_b, "nope"], actor=me) == [fid_b]
    assert eng.disassociate_faces("c", "bob", [fid_b], actor=me) == [fid_b]
    found = eng.search_faces_by_image("c", portrait(A, "b"), actor=me, purpose="  case 1 ")
    assert found[0].matches and found[0].matches[0].face_id == fid_a
    assert found.search_id and found[0].search_id == found.search_id and found.log_entry is not None
    leads = eng.search_faces("c", fid_a, mode="investigate", actor=me, purpose="case 2")
    persons = eng.search_persons_by_image("c", portrait(A, "b"), actor=me, purpose="case 3")
    cmp = eng.compare(portrait(A), portrait(A, "b"), actor=me, purpose="case 4")
    assert cmp.match and cmp.log_entry is not None and cmp.to_dict()["log_entry"] == cmp.log_entry
    faces_receipt = eng.erase_faces("c", [fid_c, "unknown-id"], actor=me)
    person_receipt = eng.erase_person("c", "alice", actor=me)
    eng.delete_collection("c", actor=me)

    entries = _entries(eng.home)
    assert [e["action"] for e in entries] == [
        "collection_created", "lead_floor_changed", "faces_indexed", "faces_indexed", "faces_indexed",
        "faces_indexed", "person_created", "faces_associated", "faces_disassociated", "search_faces_by_image",
        "search_faces", "search_persons_by_image", "compare", "faces_deleted", "person_erased", "collection_deleted"]
    for e in entries:
        assert e["actor"] == {"kind": "python", "id": "records-test", "name": "pytest"} and e["key_id"] is None
        assert "purpose" in e and "collection" in e
    by = {e["action"]: e for e in entries}
    assert by["collection_created"]["lead_floor_fmr"] == 1e-3 and by["collection_created"]["policy"]["review_required"]
    assert by["lead_floor_changed"]["before"] == 1e-3 and by["lead_floor_changed"]["after"] == 2e-3
    indexed = [e for e in entries if e["action"] == "faces_indexed"]
    assert indexed[0]["face_ids"] == [fid_a] and indexed[0]["person_id"] == "alice"
    assert not indexed[0]["already_indexed"] and indexed[1]["already_indexed"] and indexed[1]["face_ids"] == [fid_a]
    assert len(indexed[0]["image_sha256"]) == 64 and indexed[0]["refused"] == []
    assert by["faces_associated"] == {**by["faces_associated"], "person_id": "bob", "face_ids": [fid_b]}
    s = by["search_faces_by_image"]
    assert s["purpose"] == "case 1" and s["search_id"] == found.search_id and s["mode"] == "identify"
    assert s["results"][0]["candidates"][0]["face_id"] == fid_a and len(s["probe"]["image_sha256"]) == 64
    assert found.log_entry == {"seq": entries.index(s) + 1, "hash": found.log_entry["hash"]}
    assert by["search_faces"]["mode"] == "investigate" and by["search_faces"]["probe"] == {"face_id": fid_a}
    assert by["search_faces"]["search_id"] == leads.search_id
    assert by["search_persons_by_image"]["results"][0]["candidates"][0]["person_id"] == "alice"
    assert persons.to_dict()["search_id"] == persons.search_id
    assert by["compare"]["results"][0]["match"] is True and by["compare"]["purpose"] == "case 4"
    # the receipts: what was erased, by whom, and the entry that records it
    assert faces_receipt.face_ids == (fid_c,) and faces_receipt.person_id is None and faces_receipt.actor == me
    assert by["faces_deleted"]["face_ids"] == [fid_c]
    assert by["faces_deleted"]["receipt_id"] == faces_receipt.receipt_id
    assert person_receipt.face_ids == (fid_a,) and person_receipt.counts["faces"] == 1
    pe = by["person_erased"]
    assert pe["receipt_id"] == person_receipt.receipt_id and pe["face_ids"] == [fid_a] and pe["person_id"] == "alice"
    seq = entries.index(pe) + 1
    assert person_receipt.log_entry is not None and person_receipt.log_entry["seq"] == seq
    assert person_receipt.erased_at == pe["time"]
    assert person_receipt.to_dict()["log_entry"] == person_receipt.log_entry and "alice" in person_receipt.describe()
    assert by["collection_deleted"]["face_count"] == 1 and by["collection_deleted"]["person_count"] == 1
    _assert_no_biometrics(entries)
    assert eng.log.verify().ok


def test_record_bare_python_api_records_nothing(eng: facelens.Engine) -> None:
    eng.create_collection("c")
    r = eng.index_faces("c", portrait(A), person_id="p")
    found = eng.search_faces_by_image("c", portrait(A, "b"))
    assert found.search_id and found.log_entry is None and "log_entry" not in found[0].to_dict()
    receipt = eng.erase_person("c", "p")
    assert receipt.face_ids == (r.indexed[0]["face_id"],) and receipt.log_entry is None and receipt.actor is None
    eng.delete_collection("c")
    assert not (eng.home / "service" / "search-log.sqlite").exists()


def test_record_failed_searches_and_compares_are_recorded_with_their_code(eng: facelens.Engine) -> None:
    me = Actor.python("t")
    eng.create_collection("c")
    with pytest.raises(NoFaceError):
        eng.search_faces_by_image("c", _blank_png(), actor=me, purpose="p")
    with pytest.raises(FaceNotFoundError):
        eng.search_faces("c", "no-such-face", actor=me)
    with pytest.raises(facelens.errors.InvalidArgumentError):
        eng.search_faces_by_image("c", portrait(A), mode="investigate", max_fmr=1e-3, actor=me)
    with pytest.raises(facelens.errors.ImageDecodeError):
        eng.compare(b"not an image", portrait(A), actor=me)
    codes = [(e["action"], e["error"]["code"]) for e in _entries(eng.home)]
    assert codes == [("search_faces_by_image", "no_face"), ("search_faces", "face_not_found"),
                     ("search_faces_by_image", "invalid_argument"), ("compare", "invalid_image")]
    assert all(e["results"] == [] and e["operating_point"] is None for e in _entries(eng.home))


def _broken_log(eng: facelens.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log refuses every write from now on, as a full disk would."""
    def refuse(record: Any) -> Any:
        raise SearchLogError("the search log could not be written: disk full")

    monkeypatch.setattr(eng.log, "append", refuse)


def test_record_a_change_whose_record_cannot_be_written_is_not_made(eng: facelens.Engine,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    me = Actor.cli()
    eng.create_collection("c", actor=me)
    kept = eng.index_faces("c", portrait(A), person_id="alice", actor=me).indexed[0]["face_id"]
    seq = eng.log.head()
    _broken_log(eng, monkeypatch)
    with pytest.raises(SearchLogError, match="disk full"):
        eng.index_faces("c", portrait(B), actor=me)
    with pytest.raises(SearchLogError):
        eng.erase_person("c", "alice", actor=me)
    with pytest.raises(SearchLogError):
        eng.erase_faces("c", [kept], actor=me)
    with pytest.raises(SearchLogError):
        eng.search_faces_by_image("c", portrait(A, "b"), actor=me)  # no results without their record
    with pytest.raises(SearchLogError):
        eng.create_collection("d", actor=me)
    with pytest.raises(SearchLogError):
        eng.delete_collection("c", actor=me)
    monkeypatch.undo()
    # nothing of it was done: the face is not stored, the person and face not erased, no collection made
    assert eng.describe_collection("c").face_count == 1 and eng.list_persons("c") == [("alice", 1)]
    assert eng.list_collections() == ["c"] and eng.log.head() == seq
    assert eng.search_faces_by_image("c", portrait(A, "b"))[0].matches[0].face_id == kept


def test_record_a_change_that_fails_after_its_record_is_marked_failed(eng: facelens.Engine,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A record is written before the change commits; when the change then fails, ``action_failed`` follows."""
    from facelens.store import FaceStore

    me = Actor.python("t")
    eng.create_collection("c", actor=me)

    def gone(*args: Any, **kwargs: Any) -> None:
        raise OSError("the disk went away")

    monkeypatch.setattr(FaceStore, "delete", gone)
    with pytest.raises(OSError):
        eng.delete_collection("c", actor=me)
    deleted, failed = _entries(eng.home)[-2:]
    assert deleted["action"] == "collection_deleted" and failed["action"] == "action_failed"
    assert failed["failed_entry"] == {"seq": deleted["seq"], "hash": failed["failed_entry"]["hash"],
                                      "action": "collection_deleted"}
    assert failed["error"]["code"] == "internal_error" and "disk went away" in failed["error"]["message"]
    assert eng.log.verify().ok


def test_record_a_log_rewritten_without_the_key_fails_verification(eng: facelens.Engine) -> None:
    """The signed log's own test (test_signedlog: an attacker without the key cannot rewrite the chain), on
    the entries the engine writes: rewriting an erasure's record and re-hashing the chain is caught."""
    me = Actor.python("t")
    eng.create_collection("c", actor=me)
    eng.index_faces("c", portrait(A), person_id="alice", actor=me)
    eng.erase_person("c", "alice", actor=me)
    path = eng.home / "service" / "search-log.sqlite"
    public = LogPublicKey.load(eng.home / "service" / "log-signing.pub")
    eng.close()
    assert verify_log(path, public_keys=[public]).ok
    _rewrite(path, 3, {"face_ids": []})
    report = verify_log(path, public_keys=[public])
    assert not report.ok and report.first_bad_seq == 3


# -- cancellation: a search is recorded as the timeout it was, or as shown and then returned ---------

def test_record_cancel_token_commits_once() -> None:
    t = CancelToken()
    assert t.commit() and t.committed and not t.cancel() and not t.cancelled
    u = CancelToken(reason="late")
    assert u.cancel() and not u.commit() and u.cancelled


def test_record_a_cancelled_search_is_recorded_as_a_timeout_and_shows_nothing(eng: facelens.Engine) -> None:
    me = Actor.python("t")
    eng.create_collection("c")
    eng.index_faces("c", portrait(A))
    token = CancelToken(reason="the request took longer than 1 s and was abandoned")
    token.cancel()
    with cancellable(token), pytest.raises(CancelledError):
        eng.search_faces_by_image("c", portrait(A, "b"), actor=me)
    (entry,) = _entries(eng.home)
    assert entry["error"] == {"code": "timeout", "message": "the request took longer than 1 s and was abandoned"}
    assert entry["results"] == []
    committed = CancelToken()
    with cancellable(committed):
        found = eng.search_faces_by_image("c", portrait(A, "b"), actor=me)
    assert committed.committed and not committed.cancel() and found[0].matches  # past its commit, it is shown
    assert "error" not in _entries(eng.home)[-1]


# -- the HTTP service -------------------------------------------------------------------------------

def test_record_http_actions_are_recorded_with_the_key_as_actor(tmp_path: Path) -> None:
    admin_token = make_key(tmp_path, name="admin desk", admin=True)
    live = LiveService(ServerSettings(home=tmp_path, workers=2, engine_threads=1, rate_limit=0))
    try:
        admin = httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {admin_token}"})
        assert admin.post("/v1/collections", json={"name": "h"}).status_code == 201
        r = admin.post("/v1/collections/h/faces", files={"image": portrait(A).read_bytes()},
                       data={"person_id": "alice", "external_image_id": EXTERNAL_ID})
        fid_a = r.json()["indexed"][0]["face_id"]
        fid_b = admin.post("/v1/collections/h/faces", files={"image": portrait(B).read_bytes()}).json()[
            "indexed"][0]["face_id"]
        assert admin.post("/v1/collections/h/persons", json={"person_id": "bob"}).status_code == 201
        assert admin.post("/v1/collections/h/persons/bob/associate", json={"face_ids": [fid_b]}).status_code == 200
        assert admin.post("/v1/collections/h/persons/bob/disassociate", json={"face_ids": [fid_b]}).status_code == 200
        s = admin.post("/v1/collections/h/search/image", files={"image": portrait(A, "b").read_bytes()},
                       data={"purpose": "case 9"}).json()
        assert s["results"][0]["matches"][0]["face_id"] == fid_a and s["search_id"] == s["results"][0]["search_id"]
        f = admin.post("/v1/collections/h/search/face", json={"face_id": fid_a, "purpose": "case 9",
                                                              "mode": "investigate"}).json()
        p = admin.post("/v1/collections/h/search/persons", files={"image": portrait(A, "b").read_bytes()},
                       data={"purpose": "case 9"}).json()
        c = admin.post("/v1/compare", files={"image_a": portrait(A).read_bytes(),
                                             "image_b": portrait(A, "b").read_bytes()}, data={"purpose": "case 9"})
        assert c.status_code == 200 and c.json()["log_entry"]["seq"] > 0
        one = admin.delete(f"/v1/collections/h/faces/{fid_b}").json()
        erased = admin.delete("/v1/collections/h/persons/alice").json()
        assert admin.delete("/v1/collections/h").status_code == 200
        page = admin.get("/v1/log", params={"limit": 1000})
        assert page.status_code == 200, page.text  # the answer's schema holds for every new entry
        entries = page.json()["entries"]
    finally:
        live.stop()
    key_id = admin_token[3:15]
    actions = [e["action"] for e in entries]
    assert actions == ["collection_created", "faces_indexed", "faces_indexed", "person_created", "faces_associated",
                       "faces_disassociated", "search_faces_by_image", "search_faces", "search_persons_by_image",
                       "compare", "faces_deleted", "person_erased", "collection_deleted"]
    for e in entries:
        assert e["actor"] == {"kind": "key", "id": key_id, "name": "admin desk"} and e["key_id"] == key_id
    by = {e["action"]: e for e in entries}
    assert by["search_faces_by_image"]["search_id"] == s["search_id"] and s["log_entry"]["seq"] == 7
    assert by["search_faces"]["search_id"] == f["search_id"] and by["search_faces"]["mode"] == "investigate"
    assert by["search_persons_by_image"]["search_id"] == p["search_id"]
    assert all(by[a]["purpose"] == "case 9" for a in ("search_faces_by_image", "search_faces", "compare"))
    assert one["receipt"]["face_ids"] == [fid_b] and one["receipt"]["receipt_id"] == by["faces_deleted"]["receipt_id"]
    receipt = erased["receipt"]
    assert receipt["person_id"] == "alice" and receipt["face_ids"] == [fid_a] == erased["deleted_faces"]
    assert receipt["actor"]["id"] == key_id and receipt["log_entry"]["seq"] == by["person_erased"]["seq"]
    assert receipt["receipt_id"] == by["person_erased"]["receipt_id"]
    _assert_no_biometrics(entries)
    assert verify_log(tmp_path / "service" / "search-log.sqlite",
                      public_keys=[LogPublicKey.load(tmp_path / "service" / "log-signing.pub")]).ok


def _mosaic(side: int = 24, tile: int = 24) -> bytes:
    """A JPEG of side x side copies of a portrait's face: hundreds of faces, seconds of work to search."""
    im = Image.open(portrait(A)).convert("RGB")
    w, h = im.size
    s = min(w, h)
    face = im.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((tile, tile))
    canvas = Image.new("RGB", (side * tile, side * tile))
    for i in range(side):
        for j in range(side):
            canvas.paste(face, (i * tile, j * tile))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def test_record_real_service_timeouts_are_recorded_as_answered(tmp_path: Path) -> None:
    """A real ``facelens serve`` process with a short request timeout: an all-faces search of a mosaic of
    hundreds of faces times out; the log records that search as the timeout it answered, and nothing of it
    later (its results were never shown). A quick search in the same service is answered and recorded
    with its results."""
    token = make_key(tmp_path, name="admin", admin=True)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "facelens", "serve", "--home", str(tmp_path), "--port", str(port), "--workers", "1",
         "--threads", "1", "--rate-limit", "0", "--purpose-default", "optional", "--no-access-log",
         "--request-timeout", "1.5", "--max-faces-per-image", "10000"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "facelens serve did not start"
            time.sleep(0.2)
        c = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"})
        assert c.post("/v1/collections", json={"name": "m"}).status_code == 201
        assert c.post("/v1/collections/m/faces", files={"image": portrait(A).read_bytes()}).status_code == 200
        slow = c.post("/v1/collections/m/search/image", files={"image": _mosaic()}, data={"all_faces": "true"})
        assert slow.status_code == 503 and slow.json()["error"]["code"] == "timeout", slow.text
        entries = c.get("/v1/log", params={"limit": 1000}).json()["entries"]
        last = entries[-1]
        assert last["action"] == "search_faces_by_image" and last["error"]["code"] == "timeout"
        assert last["results"] == []
        quick = c.post("/v1/collections/m/search/image", files={"image": portrait(A, "b").read_bytes()})
        assert quick.status_code == 200 and quick.json()["results"][0]["matches"]
        time.sleep(1.0)
        after = c.get("/v1/log", params={"after": last["seq"], "limit": 1000}).json()["entries"]
        # only the quick search came after: the timed-out one never logged results
        assert [e["search_id"] for e in after] == [quick.json()["search_id"]] and "error" not in after[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_record_a_search_recorded_as_shown_is_answered_even_past_the_timeout(tmp_path: Path) -> None:
    """The other half of the promise: once a search has committed (its results are being recorded), the
    service waits for it and answers its results instead of a 503 (here: the log is slow to write)."""
    token = make_key(tmp_path, name="admin", admin=True)
    live = LiveService(ServerSettings(home=tmp_path, workers=1, engine_threads=1, rate_limit=0,
                                      request_timeout_s=1.0, purpose_default="optional"))
    try:
        c = httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {token}"})
        assert c.post("/v1/collections", json={"name": "m"}).status_code == 201
        assert c.post("/v1/collections/m/faces", files={"image": portrait(A).read_bytes()}).status_code == 200
        log = live.app.state.services.log
        real_append = log.append
        slowed = threading.Event()

        def slow_append(record: Any) -> Any:
            if record.get("action") == "search_faces_by_image":
                slowed.set()
                time.sleep(2.0)  # the search committed; the timeout passes while its record is written
            return real_append(record)

        log.append = slow_append
        r = c.post("/v1/collections/m/search/image", files={"image": portrait(A, "b").read_bytes()})
        assert slowed.is_set()
        assert r.status_code == 200 and r.json()["results"][0]["matches"], r.text
        log.append = real_append
        last = c.get("/v1/log", params={"limit": 1000}).json()["entries"][-1]
        assert last["search_id"] == r.json()["search_id"] and last["results"][0]["candidates"]
    finally:
        live.stop()


# -- the CLI ------------------------------------------------------------------------------------------

def _facelens(home: Path, *args: str, code: int = 0) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACELENS_ACTOR": "officer-12", "FACELENS_THREADS": "1"}
    env.pop("FACELENS_LOG_SIGNING_KEY", None)
    p = subprocess.run([sys.executable, "-m", "facelens", *args], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    return p.stdout


def test_record_cli_actions_are_recorded_with_the_local_user_and_verify(tmp_path: Path) -> None:
    """Real ``facelens`` processes: keys, collections, enrolment, persons, searches with ``--purpose``,
    compare, erasures with their printed receipts; ``log export`` shows them all, ``log verify`` passes."""
    h = str(tmp_path)
    key = json.loads(_facelens(tmp_path, "keys", "create", "--admin", "--name", "desk", "--json", "--home", h))
    _facelens(tmp_path, "collection", "create", "c", "--home", h)
    doc = json.loads(_facelens(tmp_path, "index", "c", str(portrait(A)), "--person", "alice", "--external-id",
                               EXTERNAL_ID, "--json", "--home", h))
    fid_a = doc["images"][0]["indexed"][0]["face_id"]
    fid_b = json.loads(_facelens(tmp_path, "index", "c", str(portrait(B)), "--json", "--home", h))[
        "images"][0]["indexed"][0]["face_id"]
    _facelens(tmp_path, "person", "create", "c", "bob", "--home", h)
    _facelens(tmp_path, "person", "associate", "c", "bob", fid_b, "--home", h)
    _facelens(tmp_path, "person", "disassociate", "c", "bob", fid_b, "--home", h)
    found = json.loads(_facelens(tmp_path, "search", "c", str(portrait(A, "b")), "--purpose", "case 5", "--json",
                                 "--home", h))
    assert found["matches"][0]["face_id"] == fid_a and found["log_entry"]["seq"] > 0
    leads = json.loads(_facelens(tmp_path, "search", "c", "--face-id", fid_a, "--mode", "investigate", "--purpose",
                                 "case 5", "--json", "--home", h))
    persons = json.loads(_facelens(tmp_path, "person", "search", "c", str(portrait(A, "b")), "--purpose", "case 5",
                                   "--json", "--home", h))
    _facelens(tmp_path, "compare", str(portrait(A)), str(portrait(A, "b")), "--purpose", "case 5", "--home", h)
    deleted = json.loads(_facelens(tmp_path, "faces", "delete", "c", fid_b, "--json", "--home", h))
    text = _facelens(tmp_path, "person", "delete", "c", "alice", "--home", h)
    assert "erasure receipt" in text and "cli:officer-12" in text
    _facelens(tmp_path, "collection", "delete", "c", "--home", h)
    _facelens(tmp_path, "keys", "revoke", key["key_id"], "--home", h)

    entries = [json.loads(line) for line in _facelens(tmp_path, "log", "export", "--home", h).splitlines()]
    assert [e["action"] for e in entries] == [
        "key_created", "collection_created", "faces_indexed", "faces_indexed", "person_created", "faces_associated",
        "faces_disassociated", "search_faces_by_image", "search_faces", "search_persons_by_image", "compare",
        "faces_deleted", "person_erased", "collection_deleted", "key_revoked"]
    for e in entries:
        assert e["actor"] == {"kind": "cli", "id": "officer-12", "name": None} and e["key_id"] is None, e
    by = {e["action"]: e for e in entries}
    assert by["key_created"]["subject"]["key_id"] == key["key_id"]
    assert by["faces_indexed"]["face_ids"] in ([fid_a], [fid_b]) and entries[2]["person_id"] == "alice"
    assert by["search_faces_by_image"]["search_id"] == found["search_id"]
    assert by["search_faces"]["search_id"] == leads["search_id"] and by["search_faces"]["mode"] == "investigate"
    assert by["search_persons_by_image"]["search_id"] == persons["search_id"]
    assert all(by[a]["purpose"] == "case 5" for a in ("search_faces_by_image", "search_faces",
                                                        "search_persons_by_image", "compare"))
    assert deleted["receipt"]["receipt_id"] == by["faces_deleted"]["receipt_id"]
    assert deleted["receipt"]["log_entry"]["seq"] == by["faces_deleted"]["seq"]
    assert by["person_erased"]["face_ids"] == [fid_a] and by["person_erased"]["receipt_id"] in text
    _assert_no_biometrics(entries)
    assert _facelens(tmp_path, "log", "verify", "--home", h).startswith("ok: entries 1..15 (15), chain intact")
