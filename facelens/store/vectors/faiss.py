"""The embedded vector index: FAISS in the process, a cache of the collection's SQLite embeddings.

Exact (``IDMap2,Flat``) below :data:`facelens.store.collection.EXACT_LIMIT` faces, an inverted file of
4-bit PQ fast-scan codes above (``IVF<n>,PQ<m>x4fs``). The collection builds it from SQLite when it is
opened, replays its change log into it, saves the approximate one as ``vectors.<seq>.faiss`` and rebuilds
it when its size calls for another type (see :class:`facelens.store.FaceStore`): this class only wraps
the FAISS object behind :class:`facelens.store.vectors.VectorIndex`.

Erasure: the ids are removed from the in-memory index; an erased face that was a k-means centroid is
overwritten (or the index retrained); the store then saves the approximate index again, so when an
erasure returns no file of the collection holds the face's codes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import EraseOutcome, SearchPlan

__all__ = ["INDEX_FACTORY", "FaissIndex", "choose_scan", "factory_of", "ids_of", "nlist_of", "tune"]

log = logging.getLogger(__name__)

INDEX_FACTORY = "IDMap2,Flat"  # exact inner-product search; ids are the faces' row ids


class FaissIndex:
    """A FAISS index (``index``: the FAISS object, tuned for search) as a :class:`VectorIndex`."""

    uri = "faiss"
    shared = False

    def __init__(self, index: Any) -> None:
        self.index = tune(index)

    @classmethod
    def empty(cls, dim: int, factory: str) -> Any:
        """A new, empty FAISS index of ``factory`` (an IVF one is untrained), inner product."""
        import faiss

        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)

    @classmethod
    def read(cls, path: Path) -> FaissIndex:
        """The index saved at ``path`` (raises RuntimeError when the file is damaged)."""
        import faiss

        return cls(faiss.read_index(str(path)))

    def write(self, path: Path) -> None:
        """Write the index to ``path`` (the caller syncs and renames it into place)."""
        import faiss

        faiss.write_index(self.index, str(path))

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def factory(self) -> str:
        return factory_of(self.index)

    @property
    def exact(self) -> bool:
        return self.factory == INDEX_FACTORY

    @property
    def nlist(self) -> int:
        """The number of inverted lists (0 for the exact index)."""
        return 0 if self.exact else nlist_of(self.index)

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        if len(ids):
            self.index.remove_ids(ids)

    def search(self, queries: npt.NDArray[np.float32], k: int, plan: SearchPlan | None) -> npt.NDArray[np.int64]:
        n = self.count
        if plan is None or self.exact:
            _, ids = self.index.search(queries, min(k, n))
            return np.asarray(ids, dtype=np.int64)
        import faiss

        params = faiss.SearchParametersIVF()  # per call: concurrent searches may plan differently
        params.nprobe = max(1, self.nlist // plan.probe_share)
        choose_scan(self.index, len(queries), alone=plan.alone)
        _, ids = self.index.search(queries, min(plan.candidates, n), params=params)
        return np.asarray(ids, dtype=np.int64)

    def ids(self) -> set[int]:
        return ids_of(self.index)

    def erase(self, erased: npt.NDArray[np.float32]) -> EraseOutcome:
        """Remove erased embeddings from the approximate index's coarse quantizer: k-means leaves a
        list whose training sample held one point with that point as its centroid, i.e. a face's exact
        float32 embedding, saved with the index. Such a centroid of a list now empty is replaced by the
        mean of its 8 nearest centroids (no code depends on it); when its list still holds faces, the
        outcome says ``retrain`` (from SQLite, which no longer holds the face)."""
        how = "removed from the in-process FAISS index; the saved index rewritten without them"
        if self.exact or not len(erased):
            return EraseOutcome(gone=True, how=how)
        import faiss

        ivf: Any = faiss.extract_index_ivf(self.index)
        quantizer: Any = faiss.downcast_index(ivf.quantizer)
        dim = self.dim
        cents = faiss.rev_swig_ptr(quantizer.get_xb(), ivf.nlist * dim).reshape(ivf.nlist, dim)
        e = np.ascontiguousarray(erased, dtype=np.float32)
        d2 = (e * e).sum(1)[:, None] + (cents * cents).sum(1)[None, :] - 2 * (e @ cents.T)
        same = np.unique(np.nonzero(d2 < 1e-6)[1])  # equal up to float rounding
        for c in same.tolist():
            if ivf.invlists.list_size(c):
                return EraseOutcome(gone=True, how=how + " (retrained: an erased face was a centroid)", retrain=True)
            near = np.argsort(-(cents @ cents[c]))[1:9]
            cents[c] = cents[near].mean(axis=0)
        return EraseOutcome(gone=True, how=how)

    def describe(self) -> dict[str, str]:
        return {"vector_store": self.uri, "index_factory": self.factory}

    def close(self) -> None:
        self.index = None


def factory_of(index: Any) -> str:
    """The factory string of a FAISS index facelens built."""
    import faiss

    if isinstance(index, faiss.IndexIDMap2):
        return INDEX_FACTORY
    ivf = faiss.extract_index_ivf(index)
    if isinstance(index, faiss.IndexIVFPQFastScan):  # (extract_index_ivf returns the base class)
        return f"IVF{ivf.nlist},PQ{index.M}x4fs"
    return f"IVF{ivf.nlist},SQfp16"


def choose_scan(index: Any, n_queries: int, *, alone: bool) -> None:
    """Pick FAISS's fast-scan implementation for a search of ``n_queries``: a batch is split between
    threads by query (the default), but a single query runs on one thread unless implementation 15
    splits its lists between threads (2 threads, 1M faces: 2.1 ms instead of 3.3; batches are faster
    with the default). Only for a search running ``alone``: concurrent searches (a service) already
    keep the cores busy, and splitting each would oversubscribe them; nor for a candidate list, whose
    16,384 results implementation 15 collects slowly (2 threads, 1M faces, all lists: 32-36 ms against
    12.3 ms with the default). Concurrent searches may set this at once: either choice gives the same
    results."""
    import faiss

    if isinstance(index, faiss.IndexIVFFastScan):
        index.implem = 15 if alone and n_queries < faiss.omp_get_max_threads() else 0


def nlist_of(index: Any) -> int:
    """The number of inverted lists of an IVF index."""
    import faiss

    return int(faiss.extract_index_ivf(index).nlist)


def tune(index: Any) -> Any:
    """Set an IVF index's default probes (half its lists) and, where it can have one, a hash table
    from ids to entries (deletions look ids up instead of scanning every list)."""
    import faiss

    from ..collection import NPROBE_SHARE

    if not isinstance(index, faiss.IndexIDMap2):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = max(1, ivf.nlist // NPROBE_SHARE)
        if not isinstance(index, faiss.IndexIVFPQFastScan):  # fast-scan lists cannot use a hash table
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    return index


def ids_of(index: Any) -> set[int]:
    """Every id a FAISS index facelens built holds."""
    import faiss

    if isinstance(index, faiss.IndexIDMap2):
        return set(faiss.vector_to_array(index.id_map).tolist())
    ivf = faiss.extract_index_ivf(index)
    lists: Any = ivf.invlists
    ids: set[int] = set()
    for list_no in range(ivf.nlist):
        size = lists.list_size(list_no)
        if size:
            ids.update(faiss.rev_swig_ptr(lists.get_ids(list_no), size).tolist())
    return ids
