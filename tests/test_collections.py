"""Collections: index, search, list, delete; durability under SIGKILL; bad ids and empty cases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facelens
from facelens import (
    CollectionExistsError,
    CollectionNotFoundError,
    FaceNotFoundError,
    InvalidArgumentError,
    ModelMismatchError,
    NoFaceError,
    RefusalReason,
)

from .conftest import PEOPLE, PORTRAITS, faiss_only, portrait


@pytest.fixture()
def home(tmp_path: Path, store_uri: str) -> Path:
    """A home whose new collections keep their vectors in ``store_uri`` (every test of this module that
    uses a home runs once per vector store: faiss and milvus-lite)."""
    return tmp_path / "home"


@pytest.fixture()
def gallery(home: Path) -> facelens.Engine:
    """An engine whose collection 'gallery' holds the 'a' portrait of each person."""
    eng = facelens.Engine(home=str(home), threads=2)
    eng.create_collection("gallery")
    for p in PEOPLE:
        eng.index_faces("gallery", portrait(p), external_image_id=f"{p}_a", person_id=p)
    return eng


def test_collection_create_list_describe_delete(home: Path, store_uri: str) -> None:
    eng = facelens.Engine(home=str(home))
    info = eng.create_collection("c-1.test_x")
    assert (info.face_count, info.person_count, info.model_name) == (0, 0, "buffalo_s")
    assert info.model_sha256 == eng.model_sha256 and info.vector_store == store_uri
    assert info.index_factory == ("IDMap2,Flat" if store_uri == "faiss" else "milvus:HNSW,M=16,efConstruction=200")
    assert eng.list_collections() == ["c-1.test_x"]
    with pytest.raises(CollectionExistsError):
        eng.create_collection("c-1.test_x")
    eng.delete_collection("c-1.test_x")
    assert eng.list_collections() == []
    with pytest.raises(CollectionNotFoundError):
        eng.describe_collection("c-1.test_x")
    with pytest.raises(CollectionNotFoundError):
        eng.delete_collection("c-1.test_x")


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", ".hidden", "-flag", "x" * 129, "a b", "ä"])
def test_collection_names_that_could_escape_or_confuse_are_refused(home: Path, name: str) -> None:
    eng = facelens.Engine(home=str(home))
    with pytest.raises(InvalidArgumentError, match="invalid collection name"):
        eng.create_collection(name)
    assert not (home / "collections").exists() or list((home / "collections").iterdir()) == []


def test_index_and_search_finds_the_other_photo_of_each_person(gallery: facelens.Engine) -> None:
    info = gallery.describe_collection("gallery")
    assert (info.face_count, info.person_count) == (len(PEOPLE), len(PEOPLE))
    for p in PEOPLE:
        [result] = gallery.search_faces_by_image("gallery", portrait(p, "b"))
        assert result.collection_size == len(PEOPLE)
        assert [m.person_id for m in result.matches] == [p]
        m = result.matches[0]
        assert m.external_image_id == f"{p}_a" and m.score >= result.threshold and m.fmr <= 1e-5


def test_index_same_image_twice_adds_nothing(gallery: facelens.Engine) -> None:
    again = gallery.index_faces("gallery", portrait(PEOPLE[0]), external_image_id=f"{PEOPLE[0]}_a")
    assert again.already_indexed and len(again.indexed) == 1
    assert gallery.describe_collection("gallery").face_count == len(PEOPLE)
    other_id = gallery.index_faces("gallery", portrait(PEOPLE[0]), external_image_id="copy")
    assert not other_id.already_indexed  # the same photo under another external id is a new entry


def test_index_reports_refused_faces_with_reasons(gallery: facelens.Engine, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.png"
    Image.open(portrait("C001079")).resize((45, 55)).save(tiny)
    r = gallery.index_faces("gallery", tiny, quality_filter="HIGH")
    assert r.indexed == () and len(r.unindexed) == 1
    assert RefusalReason.SMALL_BOUNDING_BOX in r.unindexed[0].refusal_reasons


def test_index_max_faces_keeps_the_largest(gallery: facelens.Engine) -> None:
    canvas = np.full((600, 1000, 3), 200, np.uint8)
    for x, (p, scale) in zip((10, 480), (("C001082", 0.9), ("D000601", 0.5)), strict=True):
        im = Image.open(portrait(p)).convert("RGB")
        a = np.asarray(im.resize((int(im.width * scale), int(im.height * scale))))
        canvas[10 : 10 + a.shape[0], x : x + a.shape[1]] = a
    r = gallery.index_faces("gallery", canvas, external_image_id="pair", max_faces=1)
    assert len(r.indexed) == 1 and len(r.unindexed) == 1
    assert r.unindexed[0].refusal_reasons == (RefusalReason.EXCEEDS_MAX_FACES,)
    assert r.indexed[0]["bbox"][2] - r.indexed[0]["bbox"][0] > r.unindexed[0].bbox.width


def test_search_all_faces_of_a_group_photo(gallery: facelens.Engine) -> None:
    canvas = np.full((600, 1000, 3), 200, np.uint8)
    for x, p in zip((10, 480), ("C001082", "D000601"), strict=True):
        a = np.asarray(Image.open(portrait(p, "b")).convert("RGB"))
        canvas[10 : 10 + a.shape[0], x : x + a.shape[1]] = a
    results = gallery.search_faces_by_image("gallery", canvas, all_faces=True)
    assert len(results) == 2
    assert sorted(r.matches[0].person_id or "" for r in results) == ["C001082", "D000601"]


def test_search_by_face_id_leaves_the_face_itself_out(gallery: facelens.Engine) -> None:
    r = gallery.index_faces("gallery", portrait("B001266", "b"), external_image_id="B001266_b", person_id="B001266")
    face_id = r.indexed[0]["face_id"]
    found = gallery.search_faces("gallery", face_id)
    assert [m.external_image_id for m in found.matches] == ["B001266_a"]
    with pytest.raises(FaceNotFoundError):
        gallery.search_faces("gallery", "no-such-face")


def test_search_empty_collection_and_face_less_probe(home: Path) -> None:
    eng = facelens.Engine(home=str(home))
    eng.create_collection("empty")
    [r] = eng.search_faces_by_image("empty", portrait("C001085"))
    assert r.matches == () and r.collection_size == 0
    with pytest.raises(NoFaceError):
        eng.search_faces_by_image("empty", np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(CollectionNotFoundError):
        eng.search_faces_by_image("nope", portrait("C001085"))


def test_deleted_faces_are_never_returned(gallery: facelens.Engine, home: Path) -> None:
    [before] = gallery.search_faces_by_image("gallery", portrait("C001085", "b"))
    victim = before.matches[0].face_id
    other = facelens.Engine(home=str(home))  # a second engine holding its own index of the collection
    assert other.search_faces_by_image("gallery", portrait("C001085", "b"))[0].matches
    assert gallery.delete_faces("gallery", [victim, "unknown"]) == [victim]
    assert gallery.search_faces_by_image("gallery", portrait("C001085", "b"))[0].matches == ()
    assert other.search_faces_by_image("gallery", portrait("C001085", "b"))[0].matches == ()
    assert victim not in {f.face_id for f in gallery.list_faces("gallery", limit=1000)[0]}


def test_list_faces_pages_through_everything(gallery: facelens.Engine) -> None:
    seen, token = [], None
    while True:
        page, token = gallery.list_faces("gallery", limit=3, next_token=token)
        seen += [f.face_id for f in page]
        if token is None:
            break
    assert len(seen) == len(set(seen)) == len(PEOPLE)
    with pytest.raises(InvalidArgumentError):
        gallery.list_faces("gallery", next_token="garbage")


def test_collection_refuses_another_models_engine(home: Path) -> None:
    pytest.importorskip("dlib")
    facelens.Engine(home=str(home), model="dlib").create_collection("dlibfaces")
    with pytest.raises(ModelMismatchError, match="dlib"):
        facelens.Engine(home=str(home)).index_faces("dlibfaces", portrait("C001085"))


def test_lost_vector_index_is_rebuilt_from_the_metadata(gallery: facelens.Engine, home: Path, store_uri: str) -> None:
    faiss_only(store_uri, "damages the saved FAISS file (test_store_milvus drops the Milvus collection instead)")
    gallery.close()
    folder = home / "collections" / "gallery"
    for f in folder.glob("vectors.*.faiss"):
        f.write_bytes(b"garbage")
    eng = facelens.Engine(home=str(home))
    assert eng.check_collection("gallery").consistent
    assert eng.search_faces_by_image("gallery", portrait("A000368", "b"))[0].matches[0].person_id == "A000368"


_WRITER = textwrap.dedent("""
    import sys, facelens
    home, portraits = sys.argv[1], sys.argv[2:]
    eng = facelens.Engine(home=home, threads=1)
    if "kill" not in eng.list_collections():
        eng.create_collection("kill")
    i = 0
    while True:
        for p in portraits:
            i += 1
            r = eng.index_faces("kill", p, external_image_id=f"{sys.argv[0]}-{i}-{p}")
            for f in r.indexed:
                print("ACK", f["face_id"], flush=True)
""")


def test_kill_during_indexing_loses_nothing_acknowledged(home: Path, tmp_path: Path, store_uri: str) -> None:
    """On both stores: with milvus-lite, each process opens its database in turn (closing it releases it)."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    portraits = [str(p) for p in sorted(PORTRAITS.glob("*.jpg"))]
    acked: list[str] = []
    rng = np.random.default_rng(7)
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(home), *portraits], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     "PYTHONPATH": str(Path(facelens.__file__).resolve().parents[1])})
        assert proc.stdout is not None
        target = len(acked) + 4 + round_
        deadline = time.monotonic() + 120
        while len(acked) < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("ACK "):
                acked.append(line.split()[1])
        time.sleep(float(rng.uniform(0.0, 0.3)))  # die somewhere inside the next image
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:  # acknowledgements printed before the kill landed
            if line.startswith("ACK "):
                acked.append(line.split()[1])
        assert len(acked) >= target
        eng = facelens.Engine(home=str(home))
        report = eng.check_collection("kill")
        assert report.consistent, report  # no repair needed after a kill
        stored = {f.face_id for f in eng.list_faces("kill", limit=10_000)[0]}
        assert set(acked) <= stored
        for face_id in acked[-3:]:
            assert eng.search_faces("kill", face_id, max_results=1000).collection_size == len(stored)
        eng.close()


def test_persons_group_faces_and_search_returns_one_match_per_person(gallery: facelens.Engine) -> None:
    extra = gallery.index_faces("gallery", portrait("C001079", "b"), external_image_id="C001079_b")
    face_id = extra.indexed[0]["face_id"]
    assert extra.indexed[0]["person_id"] is None
    assert gallery.associate_faces("gallery", "C001079", [face_id, "ghost"]) == [face_id]
    assert dict(gallery.list_persons("gallery"))["C001079"] == 2
    faces = gallery.search_faces_by_image("gallery", portrait("C001079", "b"))[0]
    assert [m.person_id for m in faces.matches] == ["C001079", "C001079"]
    persons = gallery.search_persons_by_image("gallery", portrait("C001079", "b"))
    assert [m.person_id for m in persons.matches] == ["C001079"]
    assert persons.matches[0].face_id == face_id  # the best face of that person (the same photo)
    assert gallery.disassociate_faces("gallery", "C001079", [face_id]) == [face_id]
    assert dict(gallery.list_persons("gallery"))["C001079"] == 1
    gallery.create_person("gallery", "nobody")
    with pytest.raises(InvalidArgumentError, match="already exists"):
        gallery.create_person("gallery", "nobody")
    with pytest.raises(FaceNotFoundError, match="no person"):
        gallery.associate_faces("gallery", "ghost", [face_id])
    with pytest.raises(InvalidArgumentError, match="invalid person id"):
        gallery.create_person("gallery", "has space")


def test_erasing_a_person_removes_them_from_every_search(gallery: facelens.Engine, home: Path) -> None:
    gallery.index_faces("gallery", portrait("D000601", "b"), external_image_id="D000601_b", person_id="D000601")
    reader = facelens.Engine(home=str(home))
    assert reader.search_faces_by_image("gallery", portrait("D000601"))[0].matches
    deleted = gallery.delete_person("gallery", "D000601")
    assert len(deleted) == 2
    for eng in (gallery, reader):
        for which in "ab":
            for r in eng.search_faces_by_image("gallery", portrait("D000601", which), max_fmr=0.5,
                                               max_results=100):
                assert all(m.person_id != "D000601" and m.face_id not in deleted for m in r.matches)
        assert "D000601" not in dict(eng.list_persons("gallery"))
    with pytest.raises(FaceNotFoundError):
        gallery.delete_person("gallery", "D000601")
    # the same photos may be indexed again afterwards
    assert not gallery.index_faces("gallery", portrait("D000601"), external_image_id="D000601_a").already_indexed


def test_large_collections_switch_to_an_approximate_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above EXACT_LIMIT faces the store trains an IVF index; search, deletion, reopening and checks
    keep working. (The limit is lowered here so that the test stays small.)"""
    from facelens.store import FaceRecord, FaceStore
    from facelens.store import collection as coll

    monkeypatch.setattr(coll, "EXACT_LIMIT", 4000)
    monkeypatch.setattr(coll, "_TRAIN_PER_LIST", 4)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12_000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    store = FaceStore.create(tmp_path / "big", name="big", model_name="m", model_sha256="-", dim=32)
    for start in range(0, len(x), 3000):
        store.add_images([(str(i), str(i), None, [FaceRecord((0, 0, 1, 1), 1.0, {}, x[i])])
                          for i in range(start, start + 3000)])
    assert store.index_factory == "IVF1024,PQ4x4fs"
    queries = x[:100] + 0.05 * rng.normal(size=(100, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    hits = store.search(queries, 1)
    assert np.mean([h[0][0].external_image_id == str(i) for i, h in enumerate(hits)]) >= 0.95
    victim = hits[0][0][0].face_id
    store.delete_faces([victim])
    assert all(f.face_id != victim for f, _ in store.search(queries[:1], 10)[0])
    assert store.check().consistent
    store.close()
    reopened = FaceStore.open(tmp_path / "big", name="big")
    assert reopened.index_factory == "IVF1024,PQ4x4fs" and reopened.meta["index_factory"] == "IVF1024,PQ4x4fs"
    assert reopened.check().consistent and reopened.face_count() == len(x) - 1
    reopened.close()


def test_rerank_file_follows_deletions_and_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float16 copies used to re-rank approximate candidates: a deleted face's row is zeroed (erasure
    leaves no vector behind), damage is found and repaired by check, and a lost file only costs speed:
    candidates are then read from SQLite and the scores reported stay exact."""
    from facelens.store import FaceRecord, FaceStore
    from facelens.store import collection as coll

    monkeypatch.setattr(coll, "EXACT_LIMIT", 4000)
    monkeypatch.setattr(coll, "_TRAIN_PER_LIST", 4)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    store = FaceStore.create(tmp_path / "big", name="big", model_name="m", model_sha256="-", dim=32)
    store.add_images([(str(i), str(i), None, [FaceRecord((0, 0, 1, 1), 1.0, {}, x[i])]) for i in range(len(x))])
    rows = np.memmap(tmp_path / "big" / coll.RERANK_FILE, dtype="<f2", mode="r").reshape(-1, 32)
    (first, score), *_ = store.search(x[7], 3)[0]
    assert first.external_image_id == "7" and score == pytest.approx(float(x[7] @ x[7]), abs=1e-6)
    vid = 8  # vids count from 1 in indexing order
    np.testing.assert_array_equal(rows[vid], x[7].astype(np.float16))
    store.delete_faces([first.face_id])
    assert not rows[vid].any()
    with open(tmp_path / "big" / coll.RERANK_FILE, "r+b") as f:  # damage two live rows
        f.seek(20 * 64)
        f.write(b"\x01" * 128)
    report = store.check()
    assert report.rerank_rows_wrong == 2 and not report.consistent
    assert store.check(repair=True).repaired and store.check().consistent
    with open(tmp_path / "big" / coll.RERANK_FILE, "r+b") as f:  # a row never written (say, a crash)
        f.seek(101 * 64)
        f.write(b"\x00" * 64)
    (hit, score), *_ = store.search(x[100], 1)[0]
    assert hit.external_image_id == "100" and score == pytest.approx(1.0, abs=1e-6)
    store.close()
    (tmp_path / "big" / coll.RERANK_FILE).unlink()
    reopened = FaceStore.open(tmp_path / "big", name="big")  # a lost file is rewritten from SQLite
    assert reopened.check().consistent
    reopened.close()


def test_searches_run_while_another_thread_and_process_index(gallery: facelens.Engine, home: Path,
                                                              store_uri: str) -> None:
    faiss_only(store_uri, "milvus-lite opens its database in one process at a time (a server takes several)")
    import threading

    errors: list[BaseException] = []
    seen_sizes: list[int] = []
    stop = threading.Event()
    started = threading.Event()
    reader = facelens.Engine(home=str(home))  # its own store: sees the writer's commits through SQLite

    def search_loop() -> None:
        try:
            while not stop.is_set():
                [r] = reader.search_faces_by_image("gallery", portrait("C001085", "b"))
                assert r.matches and r.matches[0].person_id == "C001085"
                seen_sizes.append(r.collection_size)
                started.set()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            started.set()

    t = threading.Thread(target=search_loop)
    t.start()
    assert started.wait(timeout=60)
    try:
        for i, path in enumerate(sorted(PORTRAITS.glob("*_b.jpg"))):
            gallery.index_faces("gallery", path, external_image_id=f"extra-{i}",
                                person_id=path.stem.rsplit("_", 1)[0])
    finally:
        stop.set()
        t.join(timeout=60)
    assert not errors, errors
    assert seen_sizes and seen_sizes == sorted(seen_sizes)  # the reader only ever sees the collection grow
    assert reader.describe_collection("gallery").face_count == 2 * len(PEOPLE)


def test_a_collection_can_carry_its_own_calibration(home: Path, tmp_path: Path) -> None:
    from facelens.calibration import ScoreCalibration

    eng = facelens.Engine(home=str(home))
    shipped = eng.calibration
    strict = ScoreCalibration(name="stricter", model_sha256=eng.model_sha256,
                              counts=np.roll(shipped.counts, 1000))  # every impostor 0.1 more alike
    strict.save(tmp_path / "strict.npz")
    eng.create_collection("own", calibration=tmp_path / "strict.npz")
    eng.create_collection("default")
    assert eng.describe_collection("own").calibration == "stricter"
    assert eng.describe_collection("default").calibration == shipped.name
    for name in ("own", "default"):
        eng.index_faces(name, portrait("C001085"), external_image_id="a")
    own = eng.search_faces_by_image("own", portrait("C001085", "b"), max_fmr=1e-4)[0]
    default = eng.search_faces_by_image("default", portrait("C001085", "b"), max_fmr=1e-4)[0]
    assert own.operating_point.calibration == "stricter"
    assert own.threshold == pytest.approx(shipped.threshold(1e-4, "overall") + 0.1, abs=2e-4)
    assert default.threshold == shipped.threshold(1e-4)  # worst group of the shipped profile
    assert own.matches[0].score == pytest.approx(default.matches[0].score, abs=1e-6)
    assert own.matches[0].fmr > shipped.fmr(own.matches[0].score, "overall")[0]
    other = ScoreCalibration(name="x", model_sha256="00" * 32, counts=shipped.counts)
    other.save(tmp_path / "other.npz")
    with pytest.raises(facelens.CalibrationError, match="not comparable"):
        eng.create_collection("foreign", calibration=tmp_path / "other.npz")
    assert "foreign" not in eng.list_collections()


def test_searches_do_not_wait_for_a_writers_transaction(gallery: facelens.Engine) -> None:
    """A writer holding its SQLite transaction (a slow fsync, say) must not hold up searches; searches
    in several threads at once all succeed; a collection closed under a search answers 'not found'."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    store = gallery._store("gallery")
    probe = gallery.analyze(portrait("C001085", "b"))[0].embedding
    assert probe is not None
    with store._write_lock:  # another thread is in the middle of indexing
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: store.search(probe[None], 3)[0], range(8)))
    assert all(r[0][0].person_id == "C001085" for r in results)
    blocked = threading.Event()
    with store._rw.read():  # a search in flight: close waits for it, then later searches are refused
        closer = threading.Thread(target=lambda: (store.close(), blocked.set()))
        closer.start()
        assert not blocked.wait(0.3)
    closer.join(10)
    assert blocked.is_set()
    with pytest.raises(CollectionNotFoundError, match="closed or deleted"):
        store.search(probe[None], 3)
