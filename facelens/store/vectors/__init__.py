"""The vector index behind a collection: one interface, two implementations.

A collection (:class:`facelens.store.FaceStore`) keeps its face metadata and float32 embeddings in SQLite
(the truth), the change log other processes replay, the float16 re-rank file and the locks. Its vectors
are searched through a :class:`VectorIndex`, chosen when the collection is created and recorded in its
meta (``vector_store``):

- ``faiss`` (the default): an in-process FAISS index (exact below 100,000 faces, IVF-PQ above), a cache
  of SQLite rebuilt or replayed when the collection is opened (:mod:`facelens.store.vectors.faiss`);
- ``milvus-lite``: a milvus-lite database inside the collection folder (one process at a time; tests);
- ``milvus://HOST:PORT``: a Milvus server shared by every facelens process (:mod:`.milvus`).

Whatever the index, a search asks it for candidate row ids and facelens scores them itself (float16 rows,
then the exact float32 embeddings from SQLite), so scores and false-match rates never depend on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ...errors import CollectionError, InvalidArgumentError

__all__ = ["DEFAULT_STORE", "ENV_VAR", "EraseOutcome", "SearchPlan", "StoreUnavailableError", "VectorIndex",
           "default_store", "normalise_store_uri", "store_kind"]

ENV_VAR = "FACELENS_VECTOR_STORE"  # the home-wide default store of new collections
DEFAULT_STORE = "faiss"
_SCALE_HINT = "pip install 'facelens[scale]'"


class StoreUnavailableError(CollectionError):
    """The vector store a collection uses cannot be reached or set up: a Milvus server that does not
    answer, or pymilvus not installed. The message names the store's URI. HTTP 503."""

    status = 503
    code = "vector_store_unavailable"


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """How many candidates a search asks the index for, per query: ``candidates`` ids (the index may
    return fewer), ``probe_share`` the share of an inverted file's lists to probe (1: all, 2: half), and
    ``alone``: no other search runs in this process (FAISS may then split one query between threads)."""

    candidates: int
    probe_share: int = 2
    alone: bool = False


@dataclass(frozen=True, slots=True)
class EraseOutcome:
    """What removing vectors did to their bytes: ``gone`` (True: no file of the index holds them any
    more when the call returns), ``how`` (one line for the erasure receipt and the log), and ``retrain``
    (FAISS only: an erased face was a centroid of a list that still holds faces, so the index must be
    rebuilt from SQLite)."""

    gone: bool
    how: str
    retrain: bool = False


@runtime_checkable
class VectorIndex(Protocol):
    """The vectors of one collection, by int64 row id (the SQLite ``faces.vid``), compared by inner
    product on unit-length float32 vectors. Adding an id that is there replaces it; removing an id
    that is not there does nothing (every process may replay the same change)."""

    #: ``faiss``, ``milvus-lite`` or ``milvus://HOST:PORT`` (the collection meta's ``vector_store``)
    uri: str
    #: whether several processes see the same vectors (Milvus): changes need not be replayed to be seen
    shared: bool

    @property
    def count(self) -> int:
        """How many vectors the index holds."""
        ...

    @property
    def factory(self) -> str:
        """The index type and parameters, like a FAISS factory string (``IDMap2,Flat``, ``milvus:HNSW,M=16...``)."""
        ...

    @property
    def exact(self) -> bool:
        """Whether its ranking is exact (float32 inner product over every vector): then a search asks
        for ``k`` ids only, else for a :class:`SearchPlan`'s candidates, re-ranked by facelens."""
        ...

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Add (or replace) these vectors."""
        ...

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        """Remove these ids from every search from now on (their bytes may stay until :meth:`erase`)."""
        ...

    def search(self, queries: npt.NDArray[np.float32], k: int, plan: SearchPlan | None) -> npt.NDArray[np.int64]:
        """For each query row, up to ``k`` ids (exact index, ``plan`` None) or ``plan.candidates`` ids,
        best first; -1 pads."""
        ...

    def ids(self) -> set[int]:
        """Every id the index holds (for ``collection check``)."""
        ...

    def erase(self, erased: npt.NDArray[np.float32]) -> EraseOutcome:
        """Make the vectors just removed (``erased``: their float32 values) unrecoverable from the
        index's files, as far as this store can: see each implementation."""
        ...

    def describe(self) -> dict[str, str]:
        """Meta entries to record for the collection (``vector_store``, ``index_factory``...)."""
        ...

    def close(self) -> None:
        """Release connections and memory (the vectors stay where they are kept)."""
        ...


def normalise_store_uri(uri: str) -> str:
    """The canonical form of a store URI (``faiss``, ``milvus-lite``, ``milvus://host:port``); raises
    :class:`InvalidArgumentError` naming the URI for anything else."""
    text = uri.strip()
    low = text.lower()
    if low in ("faiss", "milvus-lite"):
        return low
    if low.startswith("milvus://"):
        rest = text[len("milvus://"):].rstrip("/")
        host, sep, port = rest.rpartition(":")
        if not sep:
            host, port = rest, "19530"
        if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgumentError(f"invalid Milvus store URI {uri!r}: expected milvus://HOST:PORT")
        return f"milvus://{host}:{int(port)}"
    raise InvalidArgumentError(f"unknown vector store {uri!r}: expected 'faiss', 'milvus-lite' or milvus://HOST:PORT")


def store_kind(uri: str) -> str:
    """``faiss``, ``milvus-lite`` or ``milvus`` (a server) for a canonical store URI."""
    return "milvus" if uri.startswith("milvus://") else uri


def default_store(environ: Mapping[str, str] | None = None) -> str:
    """The store of a collection created without naming one: ``FACELENS_VECTOR_STORE`` when set, else faiss."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    return normalise_store_uri(value) if value else DEFAULT_STORE


def require_pymilvus(uri: str) -> None:
    """Raise :class:`StoreUnavailableError` (with the install hint) when pymilvus (or, for ``milvus-lite``,
    milvus-lite) is not installed."""
    import importlib.util

    need = ["pymilvus"] + (["milvus_lite"] if uri == "milvus-lite" else [])
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise StoreUnavailableError(f"vector store {uri!r} needs {', '.join(missing)}: {_SCALE_HINT}")
