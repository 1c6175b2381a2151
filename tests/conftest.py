"""Shared fixtures: the bundled public-domain portraits and engines opened once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

import facelens

PORTRAITS = Path(__file__).resolve().parents[1] / "examples" / "portraits"
PEOPLE = sorted({p.stem.rsplit("_", 1)[0] for p in PORTRAITS.glob("*.jpg")})


def portrait(person: str, which: str = "a") -> Path:
    return PORTRAITS / f"{person}_{which}.jpg"


def load_rgb(path: Path) -> npt.NDArray[np.uint8]:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def engine() -> facelens.Engine:
    return facelens.Engine(threads=2)


@pytest.fixture(scope="session")
def dlib_engine() -> facelens.Engine:
    pytest.importorskip("dlib")
    return facelens.Engine(model="dlib")


# The vector stores the collection tests run against (docs/scale-out.md): the embedded FAISS index, and
# Milvus through milvus-lite (a milvus-lite database inside the collection folder; skipped, saying so,
# where pymilvus or milvus-lite is not installed: pip install 'facelens[scale]').
VECTOR_STORES = ["faiss", "milvus-lite"]


@pytest.fixture(params=VECTOR_STORES)
def store_uri(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store new collections get in this test (via FACELENS_VECTOR_STORE, as a home would set it)."""
    uri = str(request.param)
    if uri != "faiss":
        pytest.importorskip("pymilvus", reason="milvus-lite store tests need pymilvus (pip install 'facelens[scale]')")
        pytest.importorskip("milvus_lite", reason="milvus-lite store tests need milvus-lite (facelens[scale])")
    monkeypatch.setenv("FACELENS_VECTOR_STORE", uri)
    return uri


def faiss_only(store_uri: str, why: str) -> None:
    """Skip this test's run on a store other than FAISS, saying why."""
    if store_uri != "faiss":
        pytest.skip(f"FAISS only: {why}")
