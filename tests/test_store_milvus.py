"""The vector-store seam: choosing a store per collection, and what the Milvus store (on milvus-lite)
guarantees beyond the collection tests that run on both stores (tests/test_collections.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facelens
from facelens import CollectionNotFoundError, InvalidArgumentError
from facelens.store import FaceRecord, FaceStore
from facelens.store.vectors import StoreUnavailableError, default_store, normalise_store_uri

from .conftest import PEOPLE, portrait

ROOT = Path(__file__).resolve().parents[1]


def _lite() -> None:
    pytest.importorskip("pymilvus", reason="needs pymilvus (pip install 'facelens[scale]')")
    pytest.importorskip("milvus_lite", reason="needs milvus-lite (pip install 'facelens[scale]')")


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _files_holding(folder: Path, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes())


@pytest.mark.parametrize(("uri", "canonical"), [("faiss", "faiss"), (" Milvus-Lite ", "milvus-lite"),
                                                ("milvus://db.example:19530/", "milvus://db.example:19530"),
                                                ("milvus://10.0.0.5", "milvus://10.0.0.5:19530")])
def test_store_uris_are_read_in_one_canonical_form(uri: str, canonical: str) -> None:
    assert normalise_store_uri(uri) == canonical


@pytest.mark.parametrize("uri", ["redis://x:1", "milvus://:19530", "milvus://h:99999", "milvus://h:port", "", "lite"])
def test_unknown_or_malformed_store_uris_are_refused_by_name(tmp_path: Path, uri: str) -> None:
    eng = facelens.Engine(home=str(tmp_path / "home"))
    with pytest.raises(InvalidArgumentError, match="store") as err:
        eng.create_collection("x", store=uri)
    assert repr(uri.strip()) in str(err.value) or uri == ""
    assert eng.list_collections() == []


def test_the_home_wide_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACELENS_VECTOR_STORE", raising=False)
    assert default_store() == "faiss"
    monkeypatch.setenv("FACELENS_VECTOR_STORE", "milvus://h:1")
    assert default_store() == "milvus://h:1"
    monkeypatch.setenv("FACELENS_VECTOR_STORE", "nosuch")
    with pytest.raises(InvalidArgumentError, match="nosuch"):
        default_store()


def test_an_unreachable_milvus_server_is_named_and_nothing_is_created(tmp_path: Path) -> None:
    pytest.importorskip("pymilvus", reason="needs pymilvus (pip install 'facelens[scale]')")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    eng = facelens.Engine(home=str(tmp_path / "home"))
    with pytest.raises(StoreUnavailableError, match=f"milvus://127.0.0.1:{port}"):
        eng.create_collection("x", store=f"milvus://127.0.0.1:{port}")
    assert eng.list_collections() == []
    assert facelens.errors.error_status(StoreUnavailableError("x")) == (503, "vector_store_unavailable")


def test_without_pymilvus_a_milvus_store_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # (find_spec then reports it missing)
    eng = facelens.Engine(home=str(tmp_path / "home"))
    with pytest.raises(StoreUnavailableError, match=r"pip install 'facelens\[scale\]'"):
        eng.create_collection("x", store="milvus-lite")
    assert eng.list_collections() == []


def test_cli_creates_a_milvus_lite_collection_and_describes_its_store(tmp_path: Path) -> None:
    _lite()
    home = tmp_path / "home"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "facelens", "collection", "create", "lite", "--store",
                          "milvus-lite?index=IVF_FLAT&nlist=16", "--home", str(home), "--json"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["vector_store"], info["index_factory"]) == ("milvus-lite", "milvus:IVF_FLAT,nlist=16")
    bad = subprocess.run([sys.executable, "-m", "facelens", "collection", "create", "x", "--store", "mongo://h",
                          "--home", str(home)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert bad.returncode != 0 and "unknown vector store 'mongo://h'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_milvus_lite_search_is_reranked_exactly_and_erasure_leaves_no_bytes(tmp_path: Path) -> None:
    """Candidates come from Milvus, scores from SQLite's float32 embeddings; an erased face's float32
    bytes are in no file of the collection folder (milvus-lite's files included) when erasure returns."""
    _lite()
    rng = np.random.default_rng(3)
    vecs = _unit(rng, 300, 64)
    store = FaceStore.create(tmp_path / "c", name="c", model_name="m", model_sha256="-", dim=64, store="milvus-lite")
    try:
        faces = [FaceRecord(bbox=(0, 0, 1, 1), score=0.9, quality={}, embedding=v) for v in vecs]
        added = store.add_images([(f"img{i}", f"{i:064x}", None, [f]) for i, f in enumerate(faces)])
        ids = [fs[0].face_id for fs, _ in added]
        assert store.meta["vector_store"] == "milvus-lite" and store.searchable_count() == 300
        hits = store.search(vecs[:20], 5)
        exact = np.argsort(-(vecs[:20] @ vecs.T), axis=1)[:, :5]
        for q, row, want in zip(vecs[:20], hits, exact, strict=True):
            assert [f.face_id for f, _ in row] == [ids[i] for i in want]
            assert [s for _, s in row] == pytest.approx([float(q @ vecs[j]) for j in want], abs=1e-6)
        needle = np.ascontiguousarray(vecs[7], dtype="<f4").tobytes()
        store.close()
        store = FaceStore.open(tmp_path / "c", name="c")  # (its files flushed by the close)
        assert _files_holding(tmp_path / "c", needle)  # the face is there (SQLite, milvus-lite) ...
        done = store.erase_faces([ids[7]])
        assert done.face_ids == [ids[7]] and done.vectors_gone and "milvus-lite" in done.vectors_note
        assert _files_holding(tmp_path / "c", needle) == []  # ... and in no file once erased
        assert all(f.face_id != ids[7] for f, _ in store.search(vecs[7], 3)[0])
        assert store.check().consistent and store.searchable_count() == 299
    finally:
        store.close()


def test_a_lost_milvus_collection_is_rebuilt_from_sqlite_when_opened(tmp_path: Path) -> None:
    _lite()
    from pymilvus import MilvusClient

    rng = np.random.default_rng(5)
    vecs = _unit(rng, 40, 32)
    store = FaceStore.create(tmp_path / "c", name="c", model_name="m", model_sha256="-", dim=32, store="milvus-lite")
    store.add_images([(f"i{i}", f"{i:064x}", None, [FaceRecord((0, 0, 1, 1), 0.9, {}, v)]) for i, v in enumerate(vecs)])
    name = store.vectors.describe()["milvus_collection"]
    store.close()
    client = MilvusClient(str(tmp_path / "c" / "milvus.db"))
    client.drop_collection(name)
    client.close()
    store = FaceStore.open(tmp_path / "c", name="c")
    try:
        assert store.check().consistent and store.searchable_count() == 40
        assert store.search(vecs[3], 1)[0][0][1] == pytest.approx(1.0, abs=1e-5)
    finally:
        store.close()


def test_deleting_a_collection_drops_its_milvus_collection_and_a_new_one_starts_empty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _lite()
    monkeypatch.setenv("FACELENS_VECTOR_STORE", "milvus-lite")
    home = tmp_path / "home"
    eng = facelens.Engine(home=str(home))
    first = eng.create_collection("g")
    for p in PEOPLE[:3]:
        eng.index_faces("g", portrait(p), person_id=p)
    receipt = eng.erase_person("g", PEOPLE[0])
    assert receipt.to_dict()["vectors"]["store"] == "milvus-lite" and receipt.to_dict()["vectors"]["bytes_gone"]
    eng.delete_collection("g")
    assert not (home / "collections" / "g").exists() and list((home / "collections").iterdir()) == []
    with pytest.raises(CollectionNotFoundError):
        eng.search_faces_by_image("g", portrait(PEOPLE[1], "b"))
    second = eng.create_collection("g")
    assert second.generation != first.generation and second.face_count == 0
    assert not eng.search_faces_by_image("g", portrait(PEOPLE[1], "b"))[0].matches
