"""Erasure leaves nothing on disk: once delete_person / delete_faces returns, no file under the home
folder holds an erased face's embedding (float32 as stored, float16 as in the re-rank file, or a
16-byte piece of either), its image's external id, or the erased person's id; also after SIGKILL."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import facelens

from .conftest import PEOPLE, portrait

ERASED_PERSON, PARTLY = PEOPLE[0], PEOPLE[1]  # all of the first person's faces; one face of the second


def secrets_of(embeddings: list[npt.NDArray[np.float32]], ids: list[str]) -> dict[str, bytes]:
    """The byte strings no file may hold after the erasure, by description."""
    out = {}
    for n, e in enumerate(embeddings):
        f32, f16 = np.asarray(e, "<f4").tobytes(), np.asarray(e, "<f2").tobytes()
        out[f"embedding {n} float32"] = f32
        out[f"embedding {n} float16"] = f16
        out[f"embedding {n} float32 slice"] = f32[1000:1016]
        out[f"embedding {n} float16 slice"] = f16[500:516]
    for i in ids:
        out[f"id {i!r}"] = i.encode()
    return out


def found_in(home: Path, secrets: dict[str, bytes]) -> list[str]:
    """'what in which file' for every secret some file under ``home`` holds."""
    hits = []
    for path in sorted(home.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{what} in {path.relative_to(home)}" for what, secret in secrets.items() if secret in data]
    return hits


def fill(eng: facelens.Engine) -> tuple[str, list[npt.NDArray[np.float32]], list[str]]:
    """Index every 'a' portrait (and the erased person's 'b' too) with person and external ids; return
    (the face id of PARTLY's to erase, the embeddings to erase, the ids that must go with them)."""
    eng.create_collection("erase")
    for p in PEOPLE:
        eng.index_faces("erase", portrait(p), external_image_id=f"ext-{p}-a", person_id=f"person-{p}")
    eng.index_faces("erase", portrait(ERASED_PERSON, "b"), external_image_id=f"ext-{ERASED_PERSON}-b",
                    person_id=f"person-{ERASED_PERSON}")
    store = eng._store("erase")
    faces = [f for f in eng.list_faces("erase", limit=1000)[0]
             if f.person_id == f"person-{ERASED_PERSON}" or f.external_image_id == f"ext-{PARTLY}-a"]
    assert len(faces) == 3
    embeddings = [store.get_face(f.face_id)[1] for f in faces]
    ids = [f"person-{ERASED_PERSON}", f"ext-{ERASED_PERSON}-a", f"ext-{ERASED_PERSON}-b", f"ext-{PARTLY}-a"]
    [partly] = [f.face_id for f in faces if f.external_image_id == f"ext-{PARTLY}-a"]
    return partly, embeddings, ids


def erase(eng: facelens.Engine, partly: str) -> None:
    assert len(eng.delete_person("erase", f"person-{ERASED_PERSON}")) == 2
    assert eng.delete_faces("erase", [partly]) == [partly]


def test_erased_faces_leave_no_bytes_on_disk_while_the_engine_is_open(tmp_path: Path, store_uri: str) -> None:
    """On both stores: with milvus-lite, its database folder (parquet and index files) is searched too."""
    home = tmp_path / "home"
    eng = facelens.Engine(home=str(home), threads=2)
    partly, embeddings, ids = fill(eng)
    secrets = secrets_of(embeddings, ids)
    before = found_in(home, secrets)
    assert any("float32 in collections/erase/faces.sqlite" in h for h in before), before  # the test can fail
    assert any(f"'person-{ERASED_PERSON}' in" in h for h in before), before
    erase(eng, partly)
    assert found_in(home, secrets) == []
    # the rest of the collection is intact
    assert eng.describe_collection("erase").face_count == len(PEOPLE) - 2
    assert eng.check_collection("erase").consistent
    [r] = eng.search_faces_by_image("erase", portrait(PEOPLE[2], "b"))
    assert r.matches[0].person_id == f"person-{PEOPLE[2]}"
    eng.close()
    assert found_in(home, secrets) == []


_ERASER = textwrap.dedent("""
    import base64, json, sys, time
    sys.path.insert(0, sys.argv[2])
    import facelens
    from tests.test_erasure import erase, fill
    eng = facelens.Engine(home=sys.argv[1], threads=1)
    partly, embeddings, ids = fill(eng)
    print(json.dumps({"embeddings": [base64.b64encode(e.tobytes()).decode() for e in embeddings], "ids": ids}))
    erase(eng, partly)
    print("done", flush=True)
    time.sleep(600)
""")


def test_erased_faces_leave_no_bytes_on_disk_after_sigkill(tmp_path: Path, store_uri: str) -> None:
    home = tmp_path / "home"  # (the eraser inherits FACELENS_VECTOR_STORE: both stores)
    root = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "eraser.py"
    script.write_text(_ERASER)
    proc = subprocess.Popen([sys.executable, str(script), str(home), root], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": root})
    try:
        assert proc.stdout is not None
        told = json.loads(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "done"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    embeddings = [np.frombuffer(base64.b64decode(e), dtype=np.float32) for e in told["embeddings"]]
    assert found_in(home, secrets_of(embeddings, told["ids"])) == []
    eng = facelens.Engine(home=str(home))
    assert eng.check_collection("erase").consistent
    assert eng.describe_collection("erase").face_count == len(PEOPLE) - 2
    eng.close()


_PIN = textwrap.dedent("""
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN")
    print(conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0], flush=True)  # a snapshot: pins the WAL
    sys.stdin.readline()
    conn.execute("COMMIT")
    print("released", flush=True)
    sys.stdin.readline()
""")


def test_an_erasure_blocked_by_a_reader_is_finished_by_the_next_operation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader in another process that holds a snapshot keeps the WAL (with the erased rows in older
    frames) from being truncated; the erasure waits a bounded time, then the store's next operation
    after the reader lets go truncates it."""
    from facelens.store import collection as coll

    monkeypatch.setattr(coll, "_ERASE_WAIT_S", 0.3)
    home = tmp_path / "home"
    eng = facelens.Engine(home=str(home), threads=2)
    partly, embeddings, ids = fill(eng)
    secrets = secrets_of(embeddings, ids)
    reader = subprocess.Popen([sys.executable, "-c", _PIN, str(home / "collections" / "erase" / "faces.sqlite")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdin is not None
        assert int(reader.stdout.readline()) == len(PEOPLE) + 1
        erase(eng, partly)
        assert eng._store("erase").erasure_pending
        left = found_in(home, secrets)
        # while pinned: in the WAL's older frames (and, should a partial checkpoint copy them, the database)
        assert any("faces.sqlite-wal" in h for h in left), left
        assert all(" in collections/erase/faces.sqlite" in h for h in left), left
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "released"
        eng.search_faces_by_image("erase", portrait(PEOPLE[2], "b"))  # the next operation finishes it
        assert not eng._store("erase").erasure_pending
        assert found_in(home, secrets) == []
    finally:
        reader.kill()
        reader.wait(timeout=30)
    eng.close()


def test_an_approximate_index_file_is_rewritten_when_faces_are_erased(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved IVF file holds every face's code under its id: an erasure saves it again without the
    erased faces (before returning), and removes the temporary file a killed save left behind."""
    import faiss

    from facelens.store import FaceRecord, FaceStore
    from facelens.store import collection as coll

    monkeypatch.setattr(coll, "EXACT_LIMIT", 2000)
    monkeypatch.setattr(coll, "_TRAIN_PER_LIST", 4)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2500, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = tmp_path / "ivf"
    store = FaceStore.create(path, name="ivf", model_name="m", model_sha256="-", dim=32)
    store.add_images([(f"img-{i:05d}.", str(i), f"p-{i:05d}.", [FaceRecord((0, 0, 1, 1), 1.0, {}, x[i])])
                      for i in range(len(x))])
    assert store.index_factory.startswith("IVF")

    def saved_ids() -> set[int]:
        [saved] = path.glob("vectors.*.faiss")
        return coll._ids_of(faiss.read_index(str(saved)))

    assert {6, 7} <= saved_ids()  # vids count from 1: images 5 and 6
    victims = [store.search(x[i], 1)[0][0][0] for i in (5, 6)]
    assert [f.external_image_id for f in victims] == ["img-00005.", "img-00006."]
    secrets = {f"float{bits} {i}": np.asarray(x[i], f"<f{bits // 8}").tobytes() for i in (5, 6) for bits in (16, 32)}
    killed_save = path / ".vectors.3.99999.tmp"
    killed_save.write_bytes(secrets["float16 5"] + secrets["float32 6"])
    assert len(found_in(tmp_path, secrets)) >= 3  # the killed save's and SQLite's copies: the test can fail
    assert store.delete_faces([victims[0].face_id]) == [victims[0].face_id]
    store.delete_person("p-00006.")
    assert found_in(tmp_path, {**secrets, "ids": b"img-00005.", "person": b"p-00006."}) == []
    assert not killed_save.exists()
    assert saved_ids() == set(range(1, len(x) + 1)) - {6, 7}
    assert store.check().consistent
    store.close()


def test_an_erased_face_that_is_a_centroid_of_a_used_list_retrains_the_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A list trained on one face has that face's embedding as its centroid; once later faces joined
    the list, the centroid cannot be moved (their codes are relative to it), so erasing that face
    retrains the index from SQLite. (The list is made here by setting the centroid of the list of
    face 0, which holds other faces too, to face 0's embedding.)"""
    import faiss

    from facelens.store import FaceRecord, FaceStore
    from facelens.store import collection as coll

    monkeypatch.setattr(coll, "EXACT_LIMIT", 2000)
    monkeypatch.setattr(coll, "_TRAIN_PER_LIST", 4)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2500, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = tmp_path / "trained"
    store = FaceStore.create(path, name="trained", model_name="m", model_sha256="-", dim=32)
    stored = store.add_images([(f"img-{i:05d}.", str(i), None, [FaceRecord((0, 0, 1, 1), 1.0, {}, x[i])])
                               for i in range(len(x))])
    ivf = faiss.extract_index_ivf(store._index)
    quantizer = faiss.downcast_index(ivf.quantizer)
    centroids = faiss.rev_swig_ptr(quantizer.get_xb(), ivf.nlist * 32).reshape(ivf.nlist, 32)
    list_no = int(quantizer.assign(x[:1], 1)[0, 0])
    assert ivf.invlists.list_size(list_no) >= 2
    centroids[list_no] = x[0]
    store._unsaved = 1
    assert store.save_index()
    secret = {"float32 0": x[0].tobytes()}
    assert any("vectors" in h for h in found_in(path, secret))  # the test can fail
    caplog.set_level("WARNING", logger="facelens.store.collection")
    store.delete_faces([stored[0][0][0].face_id])
    assert "retraining" in caplog.text
    assert found_in(path, secret) == []
    assert store.search(x[1], 1)[0][0][0].external_image_id == "img-00001."
    assert store.check().consistent and store.face_count() == len(x) - 1
    store.close()


def test_erasure_through_the_cli_leaves_no_bytes_on_disk(tmp_path: Path) -> None:
    home = tmp_path / "home"
    eng = facelens.Engine(home=str(home), threads=2)
    partly, embeddings, ids = fill(eng)
    eng.close()
    env = {**os.environ, "PYTHONPATH": str(Path(facelens.__file__).resolve().parents[1])}
    for args in (["person", "delete", "erase", f"person-{ERASED_PERSON}"], ["faces", "delete", "erase", partly]):
        done = subprocess.run([sys.executable, "-m", "facelens", *args, "--json", "--home", str(home)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc.pop("receipt")["face_ids"] == [partly] and doc == {"deleted": [partly], "unknown": []}
    assert found_in(home, secrets_of(embeddings, [])) == []
    # the CLI records the erasure in the signed log with the person's id (what the receipt names), never an
    # embedding or an external image id; nothing else on disk names the person
    log_files = " in service/search-log.sqlite"
    assert found_in(home, secrets_of([], ids[1:])) == []
    assert all(log_files in h for h in found_in(home, secrets_of([], ids[:1])))


def test_erasure_through_the_service_leaves_no_bytes_on_disk(tmp_path: Path) -> None:
    """The service's search log names past candidates by person and face id (who was searched for,
    by design) but never holds embeddings: it is left out of the id check only."""
    import httpx

    from facelens.server import ServerSettings

    from ._service import LiveService, make_key

    home = tmp_path / "home"
    token = make_key(home, name="admin", admin=True)
    live = LiveService(ServerSettings(home=home, workers=2, engine_threads=1, rate_limit=0))
    try:
        http = httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {token}"})
        assert http.post("/v1/collections", json={"name": "erase"}).status_code == 201
        for p, which in [*((p, "a") for p in PEOPLE), (ERASED_PERSON, "b")]:
            r = http.post("/v1/collections/erase/faces", files={"image": portrait(p, which).read_bytes()},
                          data={"person_id": f"person-{p}", "external_image_id": f"ext-{p}-{which}"})
            assert r.status_code == 200 and len(r.json()["indexed"]) == 1, r.text
        found = http.post("/v1/collections/erase/search/image", data={"purpose": "test"},
                          files={"image": portrait(ERASED_PERSON, "b").read_bytes()})
        assert found.status_code == 200, found.text
        faces = http.get("/v1/collections/erase/faces", params={"limit": 1000}).json()["faces"]
        erased = [f for f in faces if f["person_id"] == f"person-{ERASED_PERSON}"
                  or f["external_image_id"] == f"ext-{PARTLY}-a"]
        reader = facelens.Engine(home=str(home), threads=1)  # to read the embeddings before they go
        embeddings = [reader._store("erase").get_face(f["face_id"])[1] for f in erased]
        reader.close()
        assert http.delete(f"/v1/collections/erase/persons/person-{ERASED_PERSON}").status_code == 200
        [partly] = [f["face_id"] for f in erased if f["external_image_id"] == f"ext-{PARTLY}-a"]
        doc = http.delete(f"/v1/collections/erase/faces/{partly}").json()
        assert doc.pop("receipt")["face_ids"] == [partly] and doc == {"deleted": [partly], "unknown": []}
        ids = [f"person-{ERASED_PERSON}", f"ext-{ERASED_PERSON}-a", f"ext-{ERASED_PERSON}-b", f"ext-{PARTLY}-a"]
        vectors = secrets_of(embeddings, [])
        assert found_in(home, vectors) == []
        log_files = " in service/search-log.sqlite"  # the log's database and its -wal
        named = found_in(home, secrets_of([], ids))
        assert any(log_files in h for h in named), named  # the search above was logged with the person
        assert [h for h in named if log_files not in h] == []
    finally:
        live.stop()
    assert found_in(home, secrets_of(embeddings, [])) == []


def test_a_deleted_collection_is_scrubbed_before_its_files_are_unlinked(tmp_path: Path) -> None:
    """Deleting a whole collection unlinks its files; the disk blocks must not keep the faces. Another
    process still holding the files open is what reads those blocks: hold descriptors on them here,
    delete, and read through the descriptors."""
    home = tmp_path / "home"
    eng = facelens.Engine(home=str(home), threads=2)
    partly, embeddings, ids = fill(eng)
    folder = home / "collections" / "erase"
    eng.check_collection("erase")  # writes the re-rank rows of every face
    held = {p.name: os.open(p, os.O_RDONLY) for p in folder.iterdir() if p.is_file()}
    assert "faces.sqlite" in held and "rerank.f16" in held
    secrets = secrets_of(embeddings, ids)
    try:
        def held_bytes() -> dict[str, bytes]:
            return {name: os.pread(fd, os.fstat(fd).st_size, 0) for name, fd in held.items()}

        before = [f"{w} in {n}" for n, data in held_bytes().items() for w, s in secrets.items() if s in data]
        assert any("float32 in faces.sqlite" in h for h in before) and any("float16 in rerank.f16" in h for h in before)
        eng.delete_collection("erase")
        assert not folder.exists()
        after = [f"{w} in {n}" for n, data in held_bytes().items() for w, s in secrets.items() if s in data]
        assert after == []
    finally:
        for fd in held.values():
            os.close(fd)
        eng.close()


def test_an_erasure_whose_process_died_before_zeroing_is_finished_by_the_next_opener(tmp_path: Path) -> None:
    """A process killed between an erasure's commit and its zeroing of the float16 rows (the soak
    benchmark found 6 such rows after 30 minutes of kill -9s) leaves the rows to others; a process that
    opens the collection later loads an index newer than the deletion and never applies it, so opening
    must zero them. The dead process is played by a raw SQLite transaction doing what the store's does."""
    import sqlite3

    from facelens.store import FaceRecord, FaceStore

    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 512)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = tmp_path / "c"
    store = FaceStore.create(path, name="c", model_name="m", model_sha256="-", dim=512)
    store.add_images([(f"e{i}", f"s{i}", "p", [FaceRecord((0, 0, 1, 1), 1.0, {}, x[i])]) for i in range(4)])
    store.close()
    conn = sqlite3.connect(path / "faces.sqlite", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    vid = conn.execute("SELECT vid FROM faces ORDER BY vid LIMIT 1").fetchone()[0]
    conn.execute("DELETE FROM faces WHERE vid = ?", (vid,))
    conn.execute("INSERT INTO changes (op, vid) VALUES ('del', ?)", (vid,))
    conn.execute("COMMIT")
    conn.close()
    f16 = np.asarray(x[0], "<f2").tobytes()
    assert f16 in (path / "rerank.f16").read_bytes()  # what the dead process left
    again = FaceStore.open(path, name="c")
    try:
        assert f16 not in (path / "rerank.f16").read_bytes()
        assert again.check().consistent
    finally:
        again.close()
