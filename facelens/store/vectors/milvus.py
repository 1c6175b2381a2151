"""Vectors in Milvus (pymilvus's MilvusClient): a Milvus server (``milvus://HOST:PORT``) or milvus-lite.

One Milvus collection per facelens collection, named after the collection's generation
(``facelens_<generation>``), so a collection deleted and created again under the same name never sees
the old one's vectors. Fields: ``vid`` (INT64 primary key: the SQLite row id, the id FAISS uses) and
``vec`` (FLOAT_VECTOR, the unit-length float32 embedding, metric IP). facelens searches filter nothing
in the index (a face left out of a search by id is dropped from the candidates), so no scalar field is
stored: an image's or person's ids never leave SQLite. Consistency level Strong: a search sees every
write acknowledged before it, by any process.

Index types: HNSW by default (M=16, efConstruction=200; search ef = the candidates asked, at least 64),
or one named in the URI's query (``milvus://h:19530?index=IVF_PQ&nlist=1024&m=64``); milvus-lite takes
FLAT, HNSW, HNSW_SQ, IVF_FLAT and IVF_SQ8, a server also IVF_PQ, DISKANN... The type and parameters are
recorded in the collection's meta (``index_factory``, e.g. ``milvus:HNSW,M=16,efConstruction=200``).

Erasure. Milvus deletes are soft: a delete hides the rows from every search at once, the bytes stay in
the sealed segments until a compaction rewrites them. On a server, :meth:`MilvusIndex.erase` flushes,
starts a compaction and waits for it (up to ``compaction_wait_s``), and says what it saw; the segment
files compaction replaced are then removed by Milvus's garbage collector after
``dataCoord.gc.dropTolerance`` (3 h by default: lower it where erasure must be prompt). milvus-lite's
``compact`` does nothing on request (it merges files only by size tiers), so on milvus-lite an erasure
rebuilds the Milvus collection from SQLite (``retrain``): the old files are dropped (unlinked) before
the erasure returns.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import EraseOutcome, SearchPlan, StoreUnavailableError, require_pymilvus

__all__ = ["LITE_FILE", "MilvusIndex", "collection_name", "parse_index", "release_idle"]

log = logging.getLogger(__name__)

# milvus-lite runs one local server per database path for the whole process and never stops it: the
# clients of this process are counted per path, and a server none uses is stopped by release_idle(): at
# close, so that another process can open the database (milvus-lite locks it), and when its collection
# is dropped (a deleted collection's folder must not keep a server writing into it). A store may be
# closed by a garbage-collection finalizer that runs inside milvus-lite's own (non-reentrant) lock: the
# close then leaves the server to the next release_idle() instead of waiting for that lock forever.
_lite_users: dict[str, int] = {}
_lite_idle: set[str] = set()
_lite_lock = threading.RLock()


def release_idle(*, only_if_free: bool = False) -> None:
    """Stop the milvus-lite servers of this process that no open client uses. ``only_if_free``: only if
    milvus-lite's lock is free now (a close, which may run in a finalizer inside that lock)."""
    with _lite_lock:
        idle = [t for t in _lite_idle if _lite_users.get(t, 0) == 0]
        if not idle:
            return
        from milvus_lite.server_manager import server_manager_instance

        manager_lock: Any = getattr(server_manager_instance, "_lock", None)
        if only_if_free and manager_lock is not None:
            if not manager_lock.acquire(blocking=False):
                return  # (held: maybe by this very thread, below us on the stack)
            manager_lock.release()
        _lite_idle.difference_update(idle)
    for target in idle:
        server_manager_instance.release_server(target)

def _inside_grpc() -> bool:
    """Whether this call runs, somewhere down the stack, inside gRPC's code (a server thread)."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        if "/grpc/" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


LITE_FILE = "milvus.db"  # milvus-lite's database (a folder) inside the collection folder
MAX_LIMIT = 16384  # Milvus refuses a search limit (topk) above this
_BATCH = 2000  # rows per insert/upsert request
_LITE_TYPES = ("FLAT", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8")
_DEFAULT_INDEX: dict[str, Any] = {"index": "HNSW", "M": 16, "efConstruction": 200}
_CONNECT_TIMEOUT_S = 10.0


def collection_name(generation: str) -> str:
    """The Milvus collection of the facelens collection of this generation."""
    return f"facelens_{generation}"


def parse_index(query: str, *, lite: bool) -> tuple[str, dict[str, Any]]:
    """(index type, build parameters) from a store URI's query (``index=HNSW&M=16``); HNSW by default."""
    fields = dict(urllib.parse.parse_qsl(query, keep_blank_values=False))
    kind = fields.pop("index", str(_DEFAULT_INDEX["index"])).upper()
    if lite and kind not in _LITE_TYPES:
        from ...errors import InvalidArgumentError

        raise InvalidArgumentError(f"milvus-lite has no index type {kind!r}: use one of {', '.join(_LITE_TYPES)}")
    params: dict[str, Any] = {}
    if kind == "HNSW" and not fields:
        params = {"M": _DEFAULT_INDEX["M"], "efConstruction": _DEFAULT_INDEX["efConstruction"]}
    for key, value in fields.items():
        params[key] = int(value) if value.isdigit() else value
    return kind, params


def factory_string(kind: str, params: dict[str, Any]) -> str:
    """``milvus:HNSW,M=16,efConstruction=200``: the index type and parameters, as the meta records them."""
    return ",".join([f"milvus:{kind}", *(f"{k}={v}" for k, v in sorted(params.items()))])


def parse_factory(factory: str) -> tuple[str, dict[str, Any]]:
    """The inverse of :func:`factory_string`."""
    head, *rest = factory.split(",")
    params: dict[str, Any] = {}
    for item in rest:
        key, _, value = item.partition("=")
        params[key] = int(value) if value.isdigit() else value
    return head.removeprefix("milvus:"), params


class MilvusIndex:
    """The vectors of one facelens collection in one Milvus collection (see the module's docstring)."""

    shared = True

    def __init__(self, uri: str, *, folder: Path, dim: int, generation: str, factory: str,
                 compaction_wait_s: float = 60.0) -> None:
        """Connect to the store of ``uri`` (``milvus-lite``: the database in ``folder``) and use (or
        create) the Milvus collection of ``generation``; raises :class:`StoreUnavailableError`."""
        require_pymilvus(uri)
        from pymilvus import MilvusClient

        self.uri = uri
        self.lite = uri == "milvus-lite"
        self.dim = dim
        self.name = collection_name(generation)
        self.kind, self.params = parse_factory(factory)
        self.compaction_wait_s = compaction_wait_s
        self._target = str((folder / LITE_FILE).absolute()) if self.lite else "http://" + uri.removeprefix("milvus://")
        self._closed = False
        if self.lite:
            release_idle()
            with _lite_lock:
                _lite_users[self._target] = _lite_users.get(self._target, 0) + 1
        try:
            self.client: Any = MilvusClient(uri=self._target, timeout=_CONNECT_TIMEOUT_S)
        except Exception as exc:  # pymilvus raises MilvusException (and others) for an unreachable server
            self._forget()
            raise StoreUnavailableError(f"vector store {uri!r} is unreachable: {_short(exc)}") from None
        try:
            #: whether the Milvus collection was missing and created empty (a rebuild from SQLite is due)
            self.created = bool(self._call(self._ensure_collection))
        except BaseException:
            self.close()
            raise

    # -- pymilvus calls ---------------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one pymilvus call; its errors become :class:`StoreUnavailableError` naming the URI."""
        try:
            return fn(*args, **kwargs)
        except StoreUnavailableError:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("pymilvus", "grpc", "milvus_lite")):
                raise StoreUnavailableError(f"vector store {self.uri!r} failed: {_short(exc)}") from None
            raise

    def _ensure_collection(self) -> bool:
        """Load the Milvus collection, creating it when there is none; returns whether it was created."""
        from pymilvus import DataType, MilvusClient

        if self.client.has_collection(self.name):
            self.client.load_collection(self.name)
            return False
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("vid", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.dim)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vec", index_type=self.kind, metric_type="IP", params=dict(self.params))
        self.client.create_collection(self.name, schema=schema, index_params=index, consistency_level="Strong")
        self.client.load_collection(self.name)
        log.info("created Milvus collection %s on %s (%s)", self.name, self.uri, self.factory)
        return True

    # -- VectorIndex ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        rows = self._call(self.client.query, self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    @property
    def factory(self) -> str:
        return factory_string(self.kind, self.params)

    @property
    def exact(self) -> bool:
        return False  # (even FLAT: its float32 ranking is re-checked by the same re-rank as every index)

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        for start in range(0, len(ids), _BATCH):
            rows = [{"vid": int(i), "vec": v} for i, v in zip(ids[start:start + _BATCH], vecs[start:start + _BATCH],
                                                              strict=True)]
            self._call(self.client.upsert, self.name, rows)  # upsert: replaying the same add twice keeps one row

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        for start in range(0, len(ids), _BATCH):
            self._call(self.client.delete, self.name, ids=[int(i) for i in ids[start:start + _BATCH]])

    def search(self, queries: npt.NDArray[np.float32], k: int, plan: SearchPlan | None) -> npt.NDArray[np.int64]:
        # As many candidates as FAISS's plan asks: with 640 for a 10-result search (HNSW, ef 640) recall@10
        # was 0.77 on 100,000 unit-Gaussian vectors (benchmarks/bench_milvus.py), the strangers of ranks 2
        # to 10 scoring too close together for the graph search; a candidate list asks 16,384
        limit = min(MAX_LIMIT, max(k, k if plan is None else plan.candidates))
        params: dict[str, Any] = {}
        if self.kind.startswith("HNSW"):
            params["ef"] = max(limit, 64)
        elif self.kind.startswith("IVF"):
            nlist = int(self.params.get("nlist", 128))
            params["nprobe"] = max(1, nlist // (plan.probe_share if plan is not None else 2))
        elif self.kind == "DISKANN":
            params["search_list"] = max(limit, 100)
        res = self._call(self.client.search, self.name, data=[q for q in np.asarray(queries, dtype=np.float32)],
                         limit=limit, anns_field="vec", output_fields=["vid"],
                         search_params={"metric_type": "IP", "params": params})
        out = np.full((len(queries), limit), -1, dtype=np.int64)
        for row, hits in enumerate(res):
            got = [int(h["id"] if "id" in h else h["vid"]) for h in hits][:limit]
            out[row, : len(got)] = got
        return out

    def ids(self) -> set[int]:
        it = self._call(self.client.query_iterator, self.name, batch_size=4096, filter="", output_fields=["vid"])
        got: set[int] = set()
        try:
            while batch := self._call(it.next):
                got.update(int(r["vid"]) for r in batch)
        finally:
            it.close()
        return got

    def flush(self) -> None:
        """Seal what was written, so that it is indexed and persisted by Milvus."""
        self._call(self.client.flush, self.name)

    def wait_indexed(self, timeout_s: float = 600.0) -> bool:
        """Flush, then wait until Milvus has built the index over every row (a server searches rows not
        yet indexed with a temporary IVF index of its own, ``queryNode.segcore.interimIndex``, whose
        recall is lower: docs/scale-out.md). Returns whether it finished within ``timeout_s``."""
        self.flush()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self._call(self.client.describe_index, self.name, "vec")
            # (2.3.5 can leave pending_index_rows at the total once every row is indexed)
            if (int(info.get("pending_index_rows", 0) or 0) == 0
                    or int(info.get("indexed_rows", 0) or 0) >= int(info.get("total_rows", 0) or 0)):
                return True
            time.sleep(1.0)
        return False

    def erase(self, erased: npt.NDArray[np.float32]) -> EraseOutcome:
        if self.lite:
            return EraseOutcome(gone=True, retrain=True,
                                how="milvus-lite: its collection rebuilt from SQLite without them, old files dropped")
        self.flush()
        job = self._call(self.client.compact, self.name)
        deadline = time.monotonic() + self.compaction_wait_s
        state = ""
        while time.monotonic() < deadline:
            state = str(self._call(self.client.get_compaction_state, job))
            if state.lower().endswith("completed"):
                return EraseOutcome(gone=False, how=(
                    f"deleted in Milvus ({self.uri}); compaction {job} completed: the live segments no longer hold "
                    "them; the replaced segment files are removed by Milvus's garbage collector "
                    "(dataCoord.gc.dropTolerance)"))
            time.sleep(0.2)
        return EraseOutcome(gone=False, how=(
            f"deleted in Milvus ({self.uri}): hidden from every search; compaction {job} still {state or 'pending'} "
            f"after {self.compaction_wait_s:.0f} s, the bytes stay in its segments until it completes"))

    def describe(self) -> dict[str, str]:
        return {"vector_store": self.uri, "index_factory": self.factory, "milvus_collection": self.name}

    def drop(self) -> None:
        """Drop the Milvus collection (the facelens collection is being deleted)."""
        if self._call(self.client.has_collection, self.name):
            self._call(self.client.drop_collection, self.name)

    def recreate(self) -> None:
        """Drop the Milvus collection and create it empty again (a rebuild from SQLite follows)."""
        self.drop()
        self._call(self._ensure_collection)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        except Exception as exc:  # closing must not fail a close
            log.debug("closing the Milvus client of %s: %s", self.uri, exc)
        self._forget()
        if self.lite:
            if _inside_grpc():
                # a finalizer run by a garbage collection inside one of a milvus-lite server's own gRPC
                # threads: stopping that server here would wait for this very thread forever (seen: a test
                # run hung at exit), so another thread stops it once this one has returned
                threading.Thread(target=release_idle, name="milvus-lite-release", daemon=True).start()
            else:
                release_idle(only_if_free=True)

    def _forget(self) -> None:
        """This client no longer uses its milvus-lite server (stopped by the next release_idle())."""
        if self.lite:
            with _lite_lock:
                left = _lite_users.get(self._target, 1) - 1
                if left > 0:
                    _lite_users[self._target] = left
                else:
                    _lite_users.pop(self._target, None)
                    _lite_idle.add(self._target)


def _short(exc: BaseException) -> str:
    """A pymilvus error as one line (its message, not its traceback)."""
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())[:300]
