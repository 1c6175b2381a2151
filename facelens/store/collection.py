"""One collection: SQLite metadata and embeddings (source of truth) + a FAISS index over them."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import mmap
import os
import shutil
import sqlite3
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import (
    CollectionError,
    CollectionExistsError,
    CollectionNotFoundError,
    FaceNotFoundError,
    InvalidArgumentError,
)
from .vectors import DEFAULT_STORE, EraseOutcome, SearchPlan, VectorIndex, normalise_store_uri, store_kind
from .vectors.faiss import INDEX_FACTORY, FaissIndex, choose_scan, factory_of, ids_of, nlist_of, tune

__all__ = ["CheckReport", "Erased", "FaceRecord", "FaceStore", "StoredFace", "legacy_generation", "new_generation"]

log = logging.getLogger(__name__)

#: Called with a write's result inside its transaction, just before the commit (see FaceStore._write).
BeforeCommit = Callable[[Any], None]

SCHEMA_VERSION = 1
DB_NAME = "faces.sqlite"
_SAVE_EVERY = 10_000  # persist the vector index after this many changes (and on close)
# The exact index holds the raw float32 embeddings, so it is never written to disk: it is rebuilt from
# SQLite when a collection is opened (docs/collections.md: 0.7 s at 99k faces). Only approximate
# indexes (IVF, above EXACT_LIMIT) are saved, and saved again after every erasure.
_TOMBSTONE = "deleted"  # meta key: the collection was deleted (committed with the rename of its folder)
_GRAVE_PREFIX = ".deleted-"  # a deleted collection's folder is renamed to this (never a valid name) first
_CRADLE_PREFIX = ".creating-"  # a collection is built in such a folder, then renamed into place
_CRADLE_MAX_AGE_S = 3600.0  # a cradle older than this was left by a killed create: removed
_BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another process's writer lock
_ERASE_WAIT_S = 5.0  # how long an erasure waits for readers to let go of the WAL before leaving it pending
# Above this many faces the index becomes approximate: an inverted file (IVF) whose lists hold 4-bit
# product-quantisation codes scanned with SIMD "fast-scan" (d/8 bytes a face: 64 bytes for 512-d, so
# 10M faces take 640 MB), searched in the lists nearest the query; the best candidates (see _plan) are
# re-ranked with float16 copies of the embeddings (RERANK_FILE, memory-mapped: 1 KB a face, read from
# the OS page cache, not held by the process), and the k best scored exactly with their float32
# embeddings from SQLite. Below the limit, exact search is fast enough.
EXACT_LIMIT = 100_000
RERANK_FILE = "rerank.f16"  # row v = face vid v's embedding as little-endian float16; zeros = none
# Lists probed per query, as a share of all lists. Face embeddings of different people are spread
# almost uniformly, so an inverted file must look at many lists: on a 1M gallery (benchmarks/
# sweep_ivf.py) probing 1/32 of 1,024 lists found the exact top hit for 74% of queries, 1/2 for 98%.
NPROBE_SHARE = 2
# Candidates re-ranked per result: on the 1M gallery, 16 found the exact top hit for 98.3% of queries,
# 64 for 99.0% (benchmarks/sweep_ivf.py, k-factor); the PQ codes, not the lists probed, lose the rest.
RERANK = 64
# Never fewer candidates than a 10-result search gets: with 1,680 probes on the 1M benchmark collection
# (nprobe 512), the exact top hit is among the best 256 PQ candidates for 98.8% of queries, among 640
# for 99.1%; scoring 640 float16 rows costs ~0.3 ms more than 256.
_MIN_CANDIDATES = 640
# A candidate list (a search of k > 1, unless told otherwise) needs more than the best face right: its
# 2nd to 10th faces are strangers whose scores lie close together, which the 4-bit PQ codes reorder
# by thousands of places, and some lie in lists far from the query. On the 1M benchmark collection
# (bench_search.py --diagnose, 300 probes) half the lists hold 96.2% of the exact top 10, all of them
# 100%; probing all, the best 640 PQ candidates hold 75% of it, 8,192 96.7%, 16,384 98.9%, 32,768
# 99.9%; the float16 re-rank loses none of those. So such searches probe LIST_NPROBE_SHARE of the
# lists and re-rank LIST_CANDIDATES (at least RERANK x k): recall@10 0.989 against 0.744, k=10 p50
# 18.8 ms against 4.6 ms, 1 thread (BENCHMARKS.md "Collections"; k=1 searches are unchanged).
LIST_NPROBE_SHARE = 1
LIST_CANDIDATES = 16384
_RERANK_CHUNK = 2048  # float16 rows gathered and scored at a time (see FaceStore._rerank)
_RETRAIN_GROWTH = 8  # retrain the inverted file when the collection has grown 8x since training
_TRAIN_PER_LIST = 40  # k-means training points per list (faiss warns below 39)


def choose_factory(n_faces: int, dim: int = 512) -> str:
    """The FAISS factory string for a collection of ``n_faces``: exact below EXACT_LIMIT, else an IVF
    with about sqrt(n) lists (1,024 to 4,096, so that training stays within minutes on two cores) of
    4-bit PQ fast-scan codes (float16 vectors when the dimension is not a multiple of 8)."""
    if n_faces < EXACT_LIMIT:
        return INDEX_FACTORY
    nlist = 1024
    while nlist < 4096 and nlist * nlist < n_faces:
        nlist *= 2
    return f"IVF{nlist},PQ{dim // 8}x4fs" if dim % 8 == 0 else f"IVF{nlist},SQfp16"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    image_id INTEGER PRIMARY KEY,
    external_image_id TEXT NOT NULL,      -- '' when none was given
    image_sha256 TEXT NOT NULL,
    indexed_at TEXT NOT NULL,
    UNIQUE (external_image_id, image_sha256)
);
CREATE TABLE faces (
    vid INTEGER PRIMARY KEY AUTOINCREMENT, -- the id of the face's vector in the FAISS index
    face_id TEXT NOT NULL UNIQUE,
    image_id INTEGER NOT NULL REFERENCES images (image_id),
    person_id TEXT,
    bbox TEXT NOT NULL,
    det_score REAL NOT NULL,
    quality TEXT NOT NULL,
    created TEXT NOT NULL,
    embedding BLOB NOT NULL               -- float32, little-endian, dim values
);
CREATE INDEX faces_person ON faces (person_id);
CREATE TABLE persons (person_id TEXT PRIMARY KEY, created TEXT NOT NULL);
CREATE INDEX faces_image ON faces (image_id);
CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL CHECK (op IN ('add', 'del')),
                      vid INTEGER NOT NULL);
"""
# Tables added after the first format: created with every new collection and, if missing, when an older
# collection is opened (the format stays 1: an older facelens ignores tables it does not know).
# face_crops: one small JPEG per stored face (facelens.crops), written with the face when the policy keeps
# crops, deleted with it. review_items: one per candidate of an investigation on a collection whose
# policy requires review (facelens.accountability.review); the candidate's face_id/person_id are cleared
# when the face is erased or the item expires. review_probes: the searched face's crop, one per searched
# face (probe_index) of a search, kept while any item of it is pending.
_REVIEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS face_crops (face_id TEXT PRIMARY KEY, jpeg BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS review_items (
    item_id TEXT PRIMARY KEY,
    search_id TEXT NOT NULL,
    probe_index INTEGER NOT NULL,          -- which searched face of the search (0: the largest)
    action TEXT NOT NULL,                  -- the search method (search_faces_by_image, ...)
    created TEXT NOT NULL,                 -- ISO 8601 UTC, microseconds (compared as text)
    expires TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'rejected', 'expired', 'withdrawn')),
    searcher TEXT,                         -- the searcher's Actor.to_dict() as JSON; NULL: not named
    purpose TEXT,
    probe_sha256 TEXT,                     -- the searched image's sha256 (by image)
    probe_face_id TEXT,                    -- the stored face searched with (by face id)
    rank INTEGER NOT NULL,
    score REAL NOT NULL,
    fmr REAL NOT NULL,
    fmr_extrapolated INTEGER NOT NULL,
    expected_strangers REAL NOT NULL,
    collection_size INTEGER NOT NULL,
    face_id TEXT,                          -- the candidate; NULL once erased or expired
    person_id TEXT,
    log_seq INTEGER,                       -- the signed log entry of the search (NULL: not logged)
    log_hash TEXT,
    decided_by TEXT,                       -- the reviewer's Actor.to_dict() as JSON
    decided_at TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS review_items_face ON review_items (face_id);
CREATE INDEX IF NOT EXISTS review_items_search ON review_items (search_id, probe_index);
CREATE INDEX IF NOT EXISTS review_items_order ON review_items (created, item_id);
CREATE INDEX IF NOT EXISTS review_items_due ON review_items (state, expires);
CREATE TABLE IF NOT EXISTS review_probes (
    search_id TEXT NOT NULL,
    probe_index INTEGER NOT NULL,
    jpeg BLOB NOT NULL,
    PRIMARY KEY (search_id, probe_index)
);
"""
_REVIEW_TABLES = ("face_crops", "review_items", "review_probes")
_REVIEW_COLUMNS = ("item_id", "search_id", "probe_index", "action", "created", "expires", "state", "searcher",
                   "purpose", "probe_sha256", "probe_face_id", "rank", "score", "fmr", "fmr_extrapolated",
                   "expected_strangers", "collection_size", "face_id", "person_id", "log_seq", "log_hash",
                   "decided_by", "decided_at", "reason")


@dataclass(frozen=True, slots=True)
class FaceRecord:
    """A face to store: its box, detector score, quality/pose summary and (dim,) float32 embedding."""

    bbox: Sequence[float]
    score: float
    quality: dict[str, Any]
    embedding: npt.NDArray[np.float32] = field(repr=False)
    crop: bytes | None = field(default=None, repr=False)  # a JPEG of the face (facelens.crops), kept when given


@dataclass(frozen=True, slots=True)
class StoredFace:
    """A face as the collection holds it."""

    face_id: str
    external_image_id: str | None
    image_sha256: str
    person_id: str | None
    bbox: tuple[float, ...]
    score: float
    quality: dict[str, Any]
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {"face_id": self.face_id, "external_image_id": self.external_image_id,
                "image_sha256": self.image_sha256, "person_id": self.person_id,
                "bbox": [round(v, 2) for v in self.bbox], "score": round(self.score, 4),
                "quality": self.quality, "created": self.created}


@dataclass(slots=True)
class Erased:
    """What an erasure removed: the faces deleted (ids), their crops, the ids of the review items it
    withdrew (pending leads pointing at those faces) and the probe crops no open item needed any more."""

    face_ids: list[str] = field(default_factory=list)
    crops: int = 0
    review_items_withdrawn: list[str] = field(default_factory=list)
    probe_crops: int = 0
    #: the vector store's account of the erased vectors' bytes (see facelens.store.vectors.EraseOutcome):
    #: whether no file of the store holds them when the erasure returns, and how
    vectors_gone: bool = True
    vectors_note: str = ""
    vector_store: str = DEFAULT_STORE  # the collection's store (its URI)


def _drop_idle_probes(conn: sqlite3.Connection, probes: Sequence[tuple[str, int]]) -> int:
    """Delete the probe crops of these (search_id, probe_index) that no pending review item needs now;
    returns how many."""
    n = 0
    for search_id, index in probes:
        n += conn.execute("DELETE FROM review_probes WHERE search_id = ? AND probe_index = ? AND NOT EXISTS "
                          "(SELECT 1 FROM review_items WHERE search_id = ? AND probe_index = ? AND state = 'pending')",
                          (search_id, index, search_id, index)).rowcount
    return n


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Differences between SQLite (truth) and the vector index, and whether they were repaired."""

    faces: int
    vectors: int
    missing_from_index: int
    extra_in_index: int
    repaired: bool
    rerank_rows_wrong: int = 0  # float16 rows missing, stale, or left behind by a deleted face

    @property
    def consistent(self) -> bool:
        return self.missing_from_index == 0 and self.extra_in_index == 0 and self.rerank_rows_wrong == 0


def new_generation() -> str:
    """A new collection identity: 32 random hex digits, recorded in the collection's meta table when it
    is created. A collection deleted and created again under the same name has another generation."""
    return uuid.uuid4().hex


def legacy_generation(meta: dict[str, str]) -> str:
    """The generation of a collection made before generations were recorded: derived from its creation
    time, so every process derives the same one."""
    import hashlib

    return hashlib.sha256(f"legacy:{meta.get('name', '')}:{meta.get('created', '')}".encode()).hexdigest()[:32]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _uri(path: Path, mode: str) -> str:
    """A SQLite URI for ``path``: ``mode`` ``rw`` opens an existing file only (never creates an empty
    one where a deleted collection was), ``ro`` reads only, ``rwc`` may create."""
    return f"file:{urllib.parse.quote(str(path.absolute()))}?mode={mode}"


def _connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(_uri(path, "rwc" if create else "rw"), uri=True, isolation_level=None,
                           check_same_thread=False, timeout=_BUSY_TIMEOUT_S)
    # A face row is ~2.3 KB (its float32 embedding is 2 KB): with SQLite's default 4 KB pages only one
    # fits a page and a face takes 4.2 KB on disk; with 16 KB pages, 2.4 KB (42 GB vs 24 GB at 10M faces).
    # Only takes effect when the database is created (before WAL mode); existing files keep theirs.
    conn.execute("PRAGMA page_size=16384")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # an acknowledged image survives a crash, not just a kill
    conn.execute("PRAGMA foreign_keys=ON")
    # an erased face's cells, index entries and freed pages are overwritten with zeros, not just unlinked
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _tombstoned(conn: sqlite3.Connection) -> bool:
    """Whether the collection of this connection was deleted (its tombstone row is committed, or
    written by this connection's own transaction)."""
    return conn.execute("SELECT 1 FROM meta WHERE key = ?", (_TOMBSTONE,)).fetchone() is not None


def _sweep_graves(root: Path) -> None:
    """Remove what deletions left behind: folders renamed away by a delete that was killed before it
    could remove them (scrubbed first, as by the delete itself)."""
    if not root.is_dir():
        return
    for grave in root.glob(f"{_GRAVE_PREFIX}*"):
        _scrub(grave)
        shutil.rmtree(grave, ignore_errors=True)
    now = time.time()
    for cradle in root.glob(f"{_CRADLE_PREFIX}*"):  # (empty collections: nothing to scrub)
        with contextlib.suppress(OSError):
            if now - cradle.stat().st_mtime > _CRADLE_MAX_AGE_S:
                shutil.rmtree(cradle, ignore_errors=True)


def _scrub(folder: Path) -> None:
    """Overwrite a deleted collection's biometric data before its files are unlinked, so that the disk
    blocks freed do not keep embeddings or ids: every row is deleted in one transaction (secure_delete
    zeroes the pages; other processes still holding the file see an empty collection, never a torn
    one), the WAL is truncated, and the derived files (re-rank rows, saved vector index) are zeroed in
    place (same size, so a process that memory-maps the re-rank file reads zeros, not a fault)."""
    db = folder / DB_NAME
    if db.is_file():
        try:
            conn = _connect(db)
            try:
                conn.execute("BEGIN IMMEDIATE")
                have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                for table in ("faces", "images", "persons", "changes", *_REVIEW_TABLES):
                    if table in have:  # (a collection from before the review tables has none)
                        conn.execute(f"DELETE FROM {table}")
                conn.execute("COMMIT")
                conn.execute(f"PRAGMA busy_timeout={int(_ERASE_WAIT_S * 1000)}")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
        except sqlite3.Error as exc:  # a damaged file: its blocks are zeroed below instead
            log.warning("%s: could not scrub the deleted collection's database (%s); zeroing it", folder, exc)
            _zero_file(db)
    for f in folder.rglob("*"):  # (milvus-lite keeps a folder of files)
        if f.is_file() and not f.is_symlink() and not (f.parent == folder and f.name.startswith(DB_NAME)):
            _zero_file(f)


def _store_meta(store: str) -> tuple[str, str]:
    """(canonical store URI, index_factory meta value) of a new collection's ``store`` argument."""
    uri, _, query = store.partition("?")
    canonical = normalise_store_uri(uri)
    if canonical == DEFAULT_STORE:
        if query:
            raise InvalidArgumentError(f"the faiss store takes no parameters, got {store!r}")
        return canonical, INDEX_FACTORY
    from .vectors import require_pymilvus
    from .vectors.milvus import factory_string, parse_index

    require_pymilvus(canonical)
    return canonical, factory_string(*parse_index(query, lite=canonical == "milvus-lite"))


def _drop_vectors(meta: Mapping[str, str], folder: Path) -> None:
    """Drop the Milvus collection of a collection being deleted (nothing for FAISS, whose index lives
    in the folder). Raises :class:`facelens.store.vectors.StoreUnavailableError` when the store fails."""
    store = meta.get("vector_store") or DEFAULT_STORE
    if store == DEFAULT_STORE:
        return
    from .vectors.milvus import MilvusIndex, release_idle

    generation = meta.get("generation") or legacy_generation(dict(meta))
    index = MilvusIndex(store, folder=folder, dim=int(meta["dim"]), generation=generation,
                        factory=meta.get("index_factory", ""))
    try:
        index.drop()
        log.info("dropped Milvus collection %s on %s", index.name, store)
    finally:
        index.close()
        release_idle()  # (a milvus-lite server of this folder stops before the folder is renamed away)


def _zero_file(path: Path) -> None:
    """Overwrite a file's bytes with zeros in place and sync them."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        size = os.fstat(fd).st_size
        block = bytes(1 << 20)
        for start in range(0, size, len(block)):
            os.pwrite(fd, block[: min(len(block), size - start)], start)
        os.fsync(fd)
    finally:
        os.close(fd)


def _path_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path`` now, or None when there is none."""
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


def _open_db(db: Path, *, name: str) -> tuple[int, sqlite3.Connection]:
    """Open a collection's database file (a descriptor held for its identity, and a connection);
    raises :class:`CollectionNotFoundError` when there is none."""
    try:
        fd = os.open(db, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CollectionNotFoundError(f"no collection named {name!r}") from None
    try:
        conn = _connect(db)
    except sqlite3.OperationalError:  # removed in between
        os.close(fd)
        raise CollectionNotFoundError(f"no collection named {name!r}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd, conn


def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in folder ``path`` durable (POSIX: fsync the folder)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _RWLock:
    """Many readers or one writer. The writer may re-enter (and read); waiting writers go before new
    readers, so a stream of searches cannot starve an update. A reader must not ask to write."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            nested = self._writer == me
            if not nested:
                while self._writer is not None or self._waiting:
                    self._cond.wait()
                self._readers += 1
        try:
            yield
        finally:
            if not nested:
                with self._cond:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @property
    def readers(self) -> int:
        """How many threads hold the lock to read right now (a snapshot, for tuning only)."""
        return self._readers

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                self._waiting += 1
                while self._writer is not None or self._readers:
                    self._cond.wait()
                self._waiting -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._cond.notify_all()


# The writer connections with a transaction this thread began (see _begin_owned): a store closed by a
# garbage-collection finalizer (an Engine dropped without close()) may run at any allocation, including
# inside another store's write transaction on the same file in this thread; its save would then wait for
# a writer lock this thread holds (a test run hung so). Such a close skips the save: the index is rebuilt
# or its changes replayed when next opened, and erasures saved theirs already.
_thread_txns = threading.local()


def _note_transaction(conn: sqlite3.Connection) -> None:
    conns: list[sqlite3.Connection] | None = getattr(_thread_txns, "conns", None)
    if conns is None:
        conns = _thread_txns.conns = []
    conns.append(conn)


def _in_write_transaction() -> bool:
    """Whether this thread is inside a write transaction of any store (pruning those that ended)."""
    live = []
    for conn in getattr(_thread_txns, "conns", ()):
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed since
            if conn.in_transaction:
                live.append(conn)
    _thread_txns.conns = live
    return bool(live)


class FaceStore:
    """A collection folder, opened. Thread-safe; several processes may open the same collection.

    Writes go to SQLite first, in one transaction per image; the in-memory FAISS index follows.
    Every search first applies changes other processes committed (the ``changes`` log), and maps index
    hits back through SQLite, so a deleted face is never returned even by a stale index.

    Lifetime (docs/collections.md): the store holds its database file open and compares that file's
    identity (device, inode) with the one at the collection's path before every read; every write
    transaction also checks the collection's tombstone under SQLite's writer lock. A collection
    deleted or re-created by any process therefore raises :class:`CollectionNotFoundError` here from
    the next operation on, a write either commits before the deletion or fails, and a store that no
    longer owns its path never writes anything there (see :meth:`is_current`).

    Concurrency within a process: searches run in parallel (FAISS searches are read-only; each thread
    reads SQLite through its own connection, which sees only committed data); a writer commits on the
    writer connection, then takes the index exclusively only to apply the change, so a search waits for
    at most one index update, never for a commit's fsync.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, db_fd: int) -> None:
        """Open the store over ``conn``, a connection to the file that ``db_fd`` holds open (both opened
        from ``path``); raises :class:`CollectionNotFoundError` when that file is deleted or is no
        longer the one at ``path``. Takes ownership of ``conn`` and ``db_fd``."""
        self.path = path
        self._db_path = path / DB_NAME
        self._conn = conn  # the writer connection: used under self._write_lock (and while opening)
        self._db_fd = db_fd  # held so that the file's identity (inode) cannot be reused while open
        self._ident = _identity(os.fstat(db_fd))
        self._write_lock = threading.RLock()  # one SQLite write transaction at a time in this process
        self._rw = _RWLock()  # the FAISS index: searches share it, updates take it alone
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._erase_pending = False  # the WAL may still hold erased rows (a checkpoint was blocked)
        self._erase_shared = False  # vectors re-removed from a shared index wait for its compaction
        self._rerank_fd = -1
        try:
            self._meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if int(self._meta.get("schema_version", 0)) != SCHEMA_VERSION:
                raise CollectionError(f"{path}: unsupported collection format {self._meta.get('schema_version')!r}")
            self._meta.setdefault("name", path.name)
            if _TOMBSTONE in self._meta:
                raise CollectionNotFoundError(f"no collection named {self._meta['name']!r} (it was deleted)")
            self.dim = int(self._meta["dim"])
            self._migrate()
            self._vectors: VectorIndex | None = None
            self._seq = 0
            self._unsaved = 0
            self._trained_on = int(self._meta.get("trained_on", "0") or 0)
            self._rerank_fd = os.open(self.path / RERANK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._rerank_map: npt.NDArray[np.float16] | None = None
            self._rerank_mmap: mmap.mmap | None = None
            # Everything was opened by path: it is this collection's only if the path still names the
            # file held open (a folder renamed away by a deletion never comes back, so no file opened
            # in between can be another collection's).
            self._require_current()
            self._load_index()
            # a process killed between an erasure's commit and its zeroing of the float16 rows, or its
            # truncation of the WAL, left them to others: a process opening the collection later never
            # applies that deletion (it is older than what it loads), so it finishes the erasure here
            self._zero_deleted_rows()
            self._erase_wal(wait_s=0.0, track=False)
        except (OSError, sqlite3.Error) as exc:
            gone = _path_identity(self._db_path) != self._ident  # deleted while opening
            self._release()
            if gone:
                raise CollectionNotFoundError(f"no collection named {path.name!r} (it was deleted)") from exc
            raise
        except BaseException:
            self._release()
            raise

    def _migrate(self) -> None:
        """Add the tables newer versions keep (face crops, the review queue) to a collection made before
        them; one query when they are there."""
        have = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if have.issuperset(_REVIEW_TABLES):
            return
        try:
            self._conn.executescript("BEGIN IMMEDIATE;" + _REVIEW_SCHEMA + "COMMIT;")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        log.info("collection %s: added the face crop and review tables", self._meta["name"])

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, *, name: str, model_name: str, model_sha256: str, dim: int,
               calibration: str | None = None, prepare: Callable[[Path], None] | None = None,
               extra_meta: Mapping[str, str] | None = None, store: str = DEFAULT_STORE) -> FaceStore:
        """Create a new, empty collection folder at ``path``; raises CollectionExistsError.

        The collection is built in a hidden folder beside ``path`` (schema, meta with ``extra_meta`` such as
        its policy, and whatever ``prepare(folder)`` adds, such as its calibration profile) and renamed into
        place whole, so no other process ever opens a half-made collection. ``store``: where its vectors
        are kept (``faiss``, ``milvus-lite``, ``milvus://HOST:PORT``, optionally with an index in the query,
        ``?index=IVF_SQ8&nlist=256``; see :mod:`facelens.store.vectors`), recorded in its meta."""
        store_uri, factory = _store_meta(store)
        _sweep_graves(path.parent)
        if path.exists():
            raise CollectionExistsError(f"collection {name!r} already exists")
        cradle = path.parent / f"{_CRADLE_PREFIX}{uuid.uuid4().hex}"
        cradle.mkdir(parents=True)
        try:
            conn = _connect(cradle / DB_NAME, create=True)
            try:
                conn.executescript("BEGIN;" + _SCHEMA + _REVIEW_SCHEMA + "COMMIT;")
                meta = {"schema_version": str(SCHEMA_VERSION), "name": name, "model_name": model_name,
                        "model_sha256": model_sha256, "dim": str(dim), "created": _now(),
                        "index_factory": factory, "calibration": calibration or "",
                        "generation": new_generation(), "vector_store": store_uri}
                meta.update({k: v for k, v in (extra_meta or {}).items() if k not in meta})
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                conn.execute("COMMIT")
            finally:
                conn.close()  # (its journal files name the hidden folder: open again once in place)
            if store_kind(store_uri) == "milvus":
                # the server answers, and the Milvus collection exists, before the collection appears
                from .vectors.milvus import MilvusIndex

                MilvusIndex(store_uri, folder=cradle, dim=dim, generation=meta["generation"], factory=factory).close()
            if prepare is not None:
                prepare(cradle)
            _fsync_dir(cradle)
            try:
                # atomic; refused when a collection (a non-empty folder) took the name meanwhile
                os.rename(cradle, path)
            except OSError as exc:
                if path.exists():
                    raise CollectionExistsError(f"collection {name!r} already exists") from None
                raise CollectionError(f"cannot create collection {name!r}: {exc}") from exc
            _fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(cradle, ignore_errors=True)
            raise
        return cls.open(path, name=name)

    @classmethod
    def open(cls, path: Path, *, name: str) -> FaceStore:
        """Open the collection at ``path``; raises :class:`CollectionNotFoundError` if there is none."""
        fd, conn = _open_db(path / DB_NAME, name=name)
        return cls(path, conn, fd)

    @classmethod
    def delete(cls, path: Path, *, name: str) -> None:
        """Delete the collection at ``path``, for every process at once; raises CollectionNotFoundError.

        Under SQLite's writer lock, the collection's folder is renamed away (to a name no collection can
        have) and a tombstone row is committed: every other process's next read finds its file gone
        from the path, its next write finds the tombstone, and the name is free for a new collection
        the moment the rename is done. The renamed folder is then removed. Open stores elsewhere
        release their files at their next operation."""
        fd, conn = _open_db(path / DB_NAME, name=name)
        grave: Path | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if _tombstoned(conn) or _path_identity(path / DB_NAME) != _identity(os.fstat(fd)):
                    raise CollectionNotFoundError(f"no collection named {name!r}")
                # the vectors first: a deletion killed after this leaves a collection whose Milvus
                # collection is rebuilt from SQLite when opened; one that fails here deletes nothing
                _drop_vectors(dict(conn.execute("SELECT key, value FROM meta").fetchall()), path)
                conn.execute("INSERT INTO meta VALUES (?, ?)", (_TOMBSTONE, _now()))
                grave = path.parent / f"{_GRAVE_PREFIX}{uuid.uuid4().hex}"
                os.rename(path, grave)  # the moment of deletion
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
            os.close(fd)
        _fsync_dir(path.parent)
        _scrub(grave)
        shutil.rmtree(grave, ignore_errors=True)
        _sweep_graves(path.parent)

    @property
    def meta(self) -> dict[str, str]:
        return dict(self._meta)

    def lead_floor_fmr(self) -> str | None:
        """The collection's ``lead_floor_fmr`` meta value as stored (None: not set), read from the database
        so a change made by another process is seen (see Engine.set_lead_floor)."""
        row = self._reader().execute("SELECT value FROM meta WHERE key = 'lead_floor_fmr'").fetchone()
        return None if row is None else str(row[0])

    def set_lead_floor_fmr(self, value: str) -> None:
        """Store the collection's ``lead_floor_fmr`` meta value (validated by the engine)."""
        self._set_meta(lead_floor_fmr=value)

    def policy_json(self) -> str | None:
        """The collection's ``policy`` meta value (JSON; None: not set), read from the database so a change
        made by another process is seen (see Engine.collection_policy)."""
        row = self._reader().execute("SELECT value FROM meta WHERE key = 'policy'").fetchone()
        return None if row is None else str(row[0])

    def set_policy_json(self, value: str) -> None:
        """Store the collection's ``policy`` meta value (validated by the engine)."""
        self._set_meta(policy=value)

    @property
    def generation(self) -> str:
        """This collection's identity (see :func:`new_generation`)."""
        return self._meta.get("generation") or legacy_generation(self._meta)

    # -- lifetime ---------------------------------------------------------------------------------
    def is_current(self) -> bool:
        """Whether this store is open and still the collection at its path: False once it was closed,
        deleted, or deleted and created again (by any process). One stat() call."""
        return not self._closed and _path_identity(self._db_path) == self._ident

    def _gone(self) -> CollectionNotFoundError:
        return CollectionNotFoundError(f"collection {self._meta['name']!r} was closed or deleted")

    def _require_current(self) -> None:
        if not self.is_current():
            raise self._gone()

    def _begin_owned(self) -> None:
        """BEGIN IMMEDIATE on the writer connection (caller holds self._write_lock), then make sure the
        collection is still this one: neither tombstoned nor moved. Raises CollectionNotFoundError
        (with no transaction left open) otherwise. A deletion commits under the same lock, so nothing
        written in this transaction can outlive the collection unseen."""
        if not self.is_current():  # (checked again below, under the lock)
            raise self._gone()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            if not self.is_current():
                raise self._gone() from None
            raise
        _note_transaction(self._conn)
        try:
            if _tombstoned(self._conn) or not self.is_current():
                raise self._gone()
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    # -- the vector index -------------------------------------------------------------------------
    def _index_files(self) -> list[tuple[int, Path]]:
        files = []
        for p in self.path.glob("vectors.*.faiss"):
            try:
                files.append((int(p.name.split(".")[1]), p))
            except ValueError:
                continue
        return sorted(files)

    @property
    def index_factory(self) -> str:
        """The factory string of the vector index this process is searching (``milvus:...`` for Milvus)."""
        return "IVF" if self._vectors is None else self._vectors.factory

    @property
    def vector_store(self) -> str:
        """The store of the collection's vectors: ``faiss``, ``milvus-lite`` or ``milvus://HOST:PORT``."""
        return self._meta.get("vector_store") or DEFAULT_STORE

    @property
    def vectors(self) -> VectorIndex:
        """The collection's vector index (see :mod:`facelens.store.vectors`)."""
        if self._vectors is None:
            raise self._gone()
        return self._vectors

    @property
    def _index(self) -> Any:
        """The FAISS object of a FAISS collection (for tools and tests that inspect it; None otherwise)."""
        return self._vectors.index if isinstance(self._vectors, FaissIndex) else None

    @property
    def _faiss(self) -> FaissIndex | None:
        return self._vectors if isinstance(self._vectors, FaissIndex) else None

    def _load_index(self) -> None:
        if self.vector_store != DEFAULT_STORE:
            self._load_milvus()
            return
        files = self._index_files()
        if files:
            seq, path = files[-1]
            try:
                self._vectors = FaissIndex.read(path)
                self._seq = seq
            except RuntimeError as exc:
                log.warning("%s: vector index unreadable (%s); rebuilding from SQLite", path, exc)
                self._vectors = None
        if self._faiss is not None and (self._faiss.dim != self.dim or self._faiss.exact):
            self._vectors = None  # another dimension, or an exact index saved by an older version (raw vectors)
        if self._vectors is None:
            factory = choose_factory(self.face_count(), self.dim)
            if factory == INDEX_FACTORY:
                self._restore_rerank_file()
                self._vectors, self._seq, self._trained_on = self._build(factory, rerank=False)
                self.save_index()  # saves nothing: removes what older versions or killed saves left
            else:
                self._rebuild(factory)
        else:
            self._restore_rerank_file()
            self.refresh()
            self._maybe_rebuild()

    def _load_milvus(self) -> None:
        """Connect to the collection's Milvus collection and bring it up to date: the changes committed
        after ``vectors_seq`` (the last change some process applied to it and recorded, see
        :meth:`save_index`) are applied again (upserts and deletes: applying one twice changes
        nothing). A Milvus collection found missing (lost, or dropped by a deletion that was killed
        before it committed) is rebuilt from SQLite."""
        from .vectors.milvus import MilvusIndex

        vectors = MilvusIndex(self.vector_store, folder=self.path, dim=self.dim, generation=self.generation,
                              factory=self._meta.get("index_factory", ""))
        self._vectors = vectors
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'vectors_seq'").fetchone()
        self._seq = int(row[0]) if row is not None else 0
        self._restore_rerank_file()
        if vectors.created and self._seq > 0:
            log.warning("collection %s: its Milvus collection was missing; rebuilding it from SQLite",
                        self._meta["name"])
            self._rebuild(vectors.factory)
        else:
            self.refresh()

    def _zero_deleted_rows(self) -> int:
        """Zero (and sync) the float16 rows of deleted faces that still hold values; returns how many.
        One query over the change log's deletions and one read of their rows: vids are never reused
        (AUTOINCREMENT), so every vid recorded as deleted must have a zero row."""
        dead = np.array([r[0] for r in self._reader().execute("SELECT DISTINCT vid FROM changes WHERE op = 'del'")],
                        dtype=np.int64)
        if not dead.size:
            return 0
        stray = dead[self._rerank_rows(dead).any(axis=1)]
        if stray.size:
            log.warning("collection %s: %d deleted faces still had float16 rows (a process was killed "
                        "mid-erasure); zeroed", self._meta["name"], stray.size)
            self._write_rerank(stray, None)
            os.fsync(self._rerank_fd)
        return int(stray.size)

    def _restore_rerank_file(self) -> None:
        """Rewrite the float16 file from SQLite when it is shorter than the faces need (lost or new)."""
        top = self._conn.execute("SELECT MAX(vid) FROM faces").fetchone()[0]
        if top is None or os.fstat(self._rerank_fd).st_size >= (int(top) + 1) * 2 * self.dim:
            return
        log.info("%s: rewriting the float16 re-rank file from SQLite", self.path)
        cur = self._conn.execute("SELECT vid, embedding FROM faces ORDER BY vid")
        while rows := cur.fetchmany(65536):
            self._write_rerank_live(*_decode(rows, self.dim))

    def _build(self, factory: str, *, rerank: bool = True) -> tuple[Any, int, int]:
        """Build an index of ``factory`` from a consistent snapshot of SQLite, on its own connection so
        that this thread's searches and writes are not held up (``rerank``: write the float16 rows
        too). Returns (index, snapshot seq, n)."""
        import faiss

        conn = sqlite3.connect(_uri(self._db_path, "ro"), uri=True, timeout=_BUSY_TIMEOUT_S)
        try:
            conn.execute("BEGIN")  # one read transaction: a snapshot, whatever other writers do
            seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])
            self._require_current()  # the snapshot is this collection's (opened by path)
            n = int(conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0])
            index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)

            if not index.is_trained:
                nlist = faiss.extract_index_ivf(index).nlist
                step = max(1, n // (nlist * _TRAIN_PER_LIST))
                sample = conn.execute("SELECT vid, embedding FROM faces WHERE vid % ? = 0", (step,)).fetchall()
                log.info("training %s on %d of %d vectors", factory, len(sample), n)
                index.train(_decode(sample, self.dim)[1])
            cur = conn.execute("SELECT vid, embedding FROM faces ORDER BY vid")
            while rows := cur.fetchmany(65536):
                ids, vecs = _decode(rows, self.dim)
                index.add_with_ids(vecs, ids)
                if rerank:
                    self._write_rerank_live(ids, vecs)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return FaissIndex(index), seq, n

    def _rebuild(self, factory: str) -> None:
        """Rebuild the index from SQLite (the truth), then catch up with changes made meanwhile."""
        if self._faiss is None:
            self._rebuild_shared()
            return
        index, seq, n = self._build(factory)
        with self._rw.write():
            old, self._vectors, self._seq, self._trained_on = self._vectors, index, seq, n
            self._unsaved = 1
        if old is not None:
            old.close()
        self.refresh()
        self.save_index()
        self._set_meta(index_factory=factory, trained_on=str(n))

    def _rebuild_shared(self) -> None:
        """Rebuild a Milvus collection from SQLite: drop it, create it empty, insert every face of a
        snapshot, then apply the changes committed meanwhile. Searches wait (the index is taken alone)."""
        from .vectors.milvus import MilvusIndex

        vectors = self._vectors
        assert isinstance(vectors, MilvusIndex)
        with self._rw.write():
            vectors.recreate()
            conn = sqlite3.connect(_uri(self._db_path, "ro"), uri=True, timeout=_BUSY_TIMEOUT_S)
            try:
                conn.execute("BEGIN")
                seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])
                self._require_current()
                cur = conn.execute("SELECT vid, embedding FROM faces ORDER BY vid")
                while rows := cur.fetchmany(8192):
                    vectors.add(*_decode(rows, self.dim))
                conn.execute("COMMIT")
            finally:
                conn.close()
            self._seq = seq
            self._unsaved = 1
        self.refresh()
        self.save_index()

    def _set_meta(self, **values: str) -> None:
        with self._write_lock:
            self._begin_owned()
            self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())
            self._conn.execute("COMMIT")
            self._meta.update(values)

    def _maybe_rebuild(self) -> None:
        """Switch to the index type the collection's size calls for (called outside the lock).

        Exact <-> approximate when the size crosses EXACT_LIMIT (back to exact only below half of it);
        an approximate index is retrained, with the number of lists the size then calls for, only when
        the collection has grown _RETRAIN_GROWTH times since it was trained: each rebuild reads every
        embedding, so it must stay rare (a 10M collection is rebuilt at 100k, 800k and 6.4M faces)."""
        faiss_index = self._faiss
        if faiss_index is None:
            return  # (Milvus builds and rebuilds its own index)
        n = faiss_index.count
        wanted = choose_factory(n, self.dim)
        current = faiss_index.factory
        if current == INDEX_FACTORY:
            if wanted == INDEX_FACTORY:
                return
        elif wanted == INDEX_FACTORY:
            if n > EXACT_LIMIT // 2:
                return  # hysteresis: stay approximate until the collection has shrunk well below the limit
        elif n < _RETRAIN_GROWTH * max(self._trained_on, 1):
            return
        log.info("collection %s: %d faces, rebuilding the vector index as %s", self._meta["name"], n, wanted)
        self._rebuild(wanted)

    def refresh(self) -> bool:
        """Apply the changes committed (by any process) since the index was last brought up to date;
        returns whether any of them deleted faces."""
        with self._rw.write():
            reader = self._reader()
            rows = reader.execute("SELECT seq, op, vid FROM changes WHERE seq > ? ORDER BY seq",
                                      (self._seq,)).fetchall()
            if not rows:
                return False
            final: dict[int, str] = {}
            for _, op, vid in rows:
                final[vid] = op
            # An add is never applied twice (self._seq moves with what the index holds), so only deleted
            # faces need removing; remove_ids costs a pass over the index.
            vectors = self.vectors
            dels = np.array([v for v, op in final.items() if op == "del"], dtype=np.int64)
            if dels.size:
                vectors.remove(dels)
                self._write_rerank(dels, None)
            adds = [v for v, op in final.items() if op == "add"]
            for start in range(0, len(adds), 900):
                chunk = adds[start : start + 900]
                got = reader.execute(
                    f"SELECT vid, embedding FROM faces WHERE vid IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                if got:
                    ids, vecs = _decode(got, self.dim)
                    vectors.add(ids, vecs)
                    self._write_rerank_live(ids, vecs)
                    if vectors.shared:
                        dels = np.concatenate([dels, self._remove_gone(ids)])
            self._seq = int(rows[-1][0])
            self._unsaved += len(rows)
            return bool(dels.size)

    def _remove_gone(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Remove again from a shared index those of ``ids`` (just added) that SQLite no longer holds:
        another process may have deleted them from Milvus between this one's reading of the change log
        and its upsert, which would otherwise bring them back. A deletion is committed before it is
        applied, so if this check sees a face live its deletion's own removal comes after the upsert.
        Returns the ids removed again."""
        lo, hi = int(np.min(ids)), int(np.max(ids))
        live = {r[0] for r in self._reader().execute("SELECT vid FROM faces WHERE vid BETWEEN ? AND ?", (lo, hi))}
        gone = np.array([v for v in ids.tolist() if v not in live], dtype=np.int64)
        if gone.size:
            self.vectors.remove(gone)
            self._erase_shared = True  # their bytes: compacted at this store's next write or close
        return gone

    def _save_due(self) -> bool:
        """Saving writes the whole index: do it once per 50% growth (at least _SAVE_EVERY changes), so
        its total cost stays within a few times the final size. Unsaved changes are replayed from
        SQLite's change log when the collection is next opened. The exact index is never saved; a
        Milvus collection is flushed and its applied change recorded every _SAVE_EVERY changes."""
        vectors = self._faiss
        if vectors is None:
            return self._unsaved >= _SAVE_EVERY
        return not vectors.exact and self._unsaved >= max(_SAVE_EVERY, vectors.count // 2)

    def save_index(self) -> bool:
        """Persist the approximate vector index as ``vectors.<seq>.faiss`` (atomic rename), removing
        older files and temporary files of killed saves; returns whether a file was written.

        Runs under SQLite's writer lock, after applying every committed change, and only while this
        store is still the collection at its path: no process saves an index that misses a committed
        deletion, nor writes into a collection that replaced a deleted one. The exact index is not
        saved (it holds the raw embeddings): saving it only removes files left by older versions."""
        with self._write_lock:
            try:
                self._begin_owned()
            except CollectionNotFoundError:
                return False
            try:
                self.refresh()
                faiss_index = self._faiss
                if faiss_index is None:
                    return self._save_shared()
                with self._rw.write():
                    for stale in self.path.glob(".vectors.*.tmp"):  # killed saves (no save runs now)
                        stale.unlink(missing_ok=True)
                    if faiss_index.exact:
                        for _, old in self._index_files():
                            old.unlink()
                        self._unsaved = 0
                        return False
                    if self._unsaved == 0 and self._index_files():
                        return False
                    final = self.path / f"vectors.{self._seq}.faiss"
                    tmp = self.path / f".vectors.{self._seq}.{os.getpid()}.tmp"
                    faiss_index.write(tmp)
                    with open(tmp, "rb") as f:
                        os.fsync(f.fileno())
                    os.fsync(self._rerank_fd)
                    os.replace(tmp, final)
                    for seq, old in self._index_files():
                        if seq < self._seq:
                            old.unlink(missing_ok=True)
                    _fsync_dir(self.path)
                    self._unsaved = 0
                    return True
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")  # nothing was written to SQLite: this only releases the lock

    def _save_shared(self) -> bool:
        """:meth:`save_index` for a Milvus collection (in its transaction): flush Milvus, then record
        ``vectors_seq``, the last change this process applied to it (every process applies every change
        it reads), so that the next process to open the collection replays only the later ones."""
        if self._unsaved == 0:
            return False
        from .vectors.milvus import MilvusIndex

        vectors = self.vectors
        if isinstance(vectors, MilvusIndex):
            vectors.flush()
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('vectors_seq', ?)", (str(self._seq),))
        self._conn.execute("COMMIT")
        self._unsaved = 0
        return True

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (each statement sees what was committed when it ran). Raises
        :class:`CollectionNotFoundError` once the collection was closed, deleted or re-created."""
        self._require_current()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(_uri(self._db_path, "rw"), uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=_BUSY_TIMEOUT_S)
            try:
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchone()  # opens the WAL, by path too
                self._require_current()  # ... so check the path still names this collection after
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _catch_up(self) -> None:
        """Apply other writers' committed changes, if there are any (one cheap query when there are not)."""
        top = self._reader().execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        if int(top) > self._seq and self.refresh():
            self._erase_pending = True  # the deleting process may have died before truncating the WAL
        if self._erase_pending:
            self._erase_wal(wait_s=0.0, blocking=False)

    # -- erasure ----------------------------------------------------------------------------------
    def _erase_wal(self, *, wait_s: float, blocking: bool = True, track: bool = True) -> bool:
        """Copy the write-ahead log into the database and truncate it to zero bytes, so that rows an
        erasure deleted (zeroed in the database by secure_delete) no longer survive in older WAL frames.
        Waits up to ``wait_s`` for readers in other processes that still use the WAL; if they hold it
        longer, the erasure stays pending (``track``), is logged, and this store's next search or
        write finishes it. Returns whether the WAL is now empty."""
        if not self._write_lock.acquire(blocking=blocking):
            return False
        try:
            if self._closed or self._conn.in_transaction:
                return False
            self._conn.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
            try:
                done = int(self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]) == 0
            except sqlite3.OperationalError:  # locked: another process is writing
                done = False
            finally:
                self._conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            if done and self.is_current():
                # SQLite truncates without syncing: make the truncation itself survive a power loss
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(self.path / f"{DB_NAME}-wal", os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            if not done and wait_s > 0:
                log.warning("collection %s: other processes still read the write-ahead log, which holds "
                            "erased rows until it can be truncated; retrying at the next operation",
                            self._meta["name"])
            elif done and self._erase_pending:
                log.info("collection %s: pending erasure finished (write-ahead log truncated)", self._meta["name"])
            if track or done:
                self._erase_pending = not done
            return done
        finally:
            self._write_lock.release()

    @property
    def erasure_pending(self) -> bool:
        """Whether an erasure could not yet truncate the write-ahead log (readers in other processes
        held it), so that erased rows may still be in its older frames; see :meth:`_erase_wal`."""
        return self._erase_pending

    # -- the float16 re-rank file ------------------------------------------------------------------
    def _write_rerank(self, vids: npt.NDArray[np.int64], vecs: npt.NDArray[np.float32] | None) -> None:
        """Write these faces' float16 rows (zeros when ``vecs`` is None: deleted faces). Every process
        writes the same bytes for the same vid, so concurrent writers agree. The file is derived data,
        like the FAISS index: a missing row is read from SQLite instead, and ``check`` repairs it."""
        if len(vids) == 0:
            return
        row_bytes = 2 * self.dim
        data = (np.zeros((len(vids), self.dim), "<f2") if vecs is None
                else np.ascontiguousarray(vecs, dtype="<f2"))
        order = np.argsort(vids)
        vids, data = np.asarray(vids)[order], data[order]
        # one pwrite per run of consecutive vids (indexing appends runs)
        breaks = np.nonzero(np.diff(vids) != 1)[0] + 1
        for run_ids, run in zip(np.split(vids, breaks), np.split(data, breaks), strict=True):
            os.pwrite(self._rerank_fd, run.tobytes(), int(run_ids[0]) * row_bytes)

    def _write_rerank_live(self, vids: npt.NDArray[np.int64], vecs: npt.NDArray[np.float32]) -> None:
        """Write live faces' float16 rows read from SQLite earlier, then zero again those deleted
        meanwhile: a deletion zeroes its rows after it commits, so a row written after that zeroing was
        written after the commit, and the check that follows it sees the deletion."""
        if len(vids) == 0:
            return
        self._write_rerank(vids, vecs)
        lo, hi = int(np.min(vids)), int(np.max(vids))
        live = {r[0] for r in self._reader().execute("SELECT vid FROM faces WHERE vid BETWEEN ? AND ?", (lo, hi))}
        gone = np.array([v for v in np.asarray(vids).tolist() if v not in live], dtype=np.int64)
        self._write_rerank(gone, None)

    def _rerank_rows(self, vids: npt.NDArray[np.int64]) -> npt.NDArray[np.float16]:
        """The float16 rows of these vids (zeros for rows not written)."""
        need = (int(vids.max()) + 1) if len(vids) else 0
        m = self._rerank_map
        if m is None or m.shape[0] < need:
            size = os.fstat(self._rerank_fd).st_size // (2 * self.dim)
            if size == 0:
                return np.zeros((len(vids), self.dim), np.float16)
            # mapped from the file held open, never by path: the path may name another collection now
            mm = mmap.mmap(self._rerank_fd, size * 2 * self.dim, prot=mmap.PROT_READ)
            m = np.frombuffer(mm, dtype="<f2").reshape(size, self.dim)
            self._rerank_map, self._rerank_mmap = m, mm  # (the old map is released with its last user)
        rows = m
        inside = vids < rows.shape[0]
        if inside.all():
            return rows[vids]
        out = np.zeros((len(vids), self.dim), np.float16)
        out[inside] = rows[vids[inside]]
        return out

    # -- writing ----------------------------------------------------------------------------------
    def find_image(self, *, external_image_id: str | None, image_sha256: str) -> list[StoredFace] | None:
        """The faces stored for this image under this external id, or None if it was never indexed."""
        row = self._reader().execute("SELECT image_id FROM images WHERE external_image_id = ? AND image_sha256 = ?",
                                 (external_image_id or "", image_sha256)).fetchone()
        if row is None:
            return None
        return self._faces_where("f.image_id = ?", (row[0],))

    def add_image(self, *, external_image_id: str | None, image_sha256: str, person_id: str | None,
                  faces: Sequence[FaceRecord], before_commit: BeforeCommit | None = None,
                  ) -> tuple[list[StoredFace], bool]:
        """Store an image's faces in one transaction; returns (faces, newly_added).

        Indexing the same image bytes under the same external id again adds nothing and returns the
        faces stored the first time. ``before_commit``: see :meth:`_write`.
        """
        hook = None if before_commit is None else (lambda out: before_commit(out[0]))
        return self.add_images([(external_image_id, image_sha256, person_id, faces)], before_commit=hook)[0]

    def add_images(
        self, images: Sequence[tuple[str | None, str, str | None, Sequence[FaceRecord]]], *,
        before_commit: BeforeCommit | None = None,
    ) -> list[tuple[list[StoredFace], bool]]:
        """Store several images, each ``(external_image_id, image_sha256, person_id, faces)``, in one
        transaction (all or none); returns ``add_image``'s result for each."""
        for *_, faces in images:
            for f in faces:
                if f.embedding.shape != (self.dim,):
                    raise InvalidArgumentError(f"embedding must have shape ({self.dim},), got {f.embedding.shape}")

        def fn(conn: sqlite3.Connection) -> list[tuple[list[StoredFace], bool]]:
            out: list[tuple[int, bool]] = []
            now = _now()
            for external_image_id, image_sha256, person_id, faces in images:
                row = conn.execute("SELECT image_id FROM images WHERE external_image_id = ? AND image_sha256 = ?",
                                   (external_image_id or "", image_sha256)).fetchone()
                if row is not None:
                    out.append((int(row[0]), False))
                    continue
                if person_id is not None:
                    conn.execute("INSERT OR IGNORE INTO persons VALUES (?, ?)", (person_id, now))
                image_id = conn.execute(
                    "INSERT INTO images (external_image_id, image_sha256, indexed_at) VALUES (?, ?, ?)",
                    (external_image_id or "", image_sha256, now)).lastrowid
                for f in faces:
                    vid = conn.execute(
                        "INSERT INTO faces (face_id, image_id, person_id, bbox, det_score, quality, created, "
                        "embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (str(uuid.uuid4()), image_id, person_id, json.dumps([float(v) for v in f.bbox]),
                         float(f.score), json.dumps(f.quality), now,
                         np.ascontiguousarray(f.embedding, dtype="<f4").tobytes())).lastrowid
                    conn.execute("INSERT INTO changes (op, vid) VALUES ('add', ?)", (vid,))
                    if f.crop is not None:
                        conn.execute("INSERT INTO face_crops (face_id, jpeg) SELECT face_id, ? FROM faces "
                                     "WHERE vid = ?", (f.crop, vid))
                out.append((int(image_id), True))  # type: ignore[arg-type]
            # the faces as committed, read in the same transaction (the store may be deleted right after)
            return [(self._faces_where("f.image_id = ?", (image_id,), conn=conn), added) for image_id, added in out]

        return list(self._write(fn, before_commit=before_commit))

    @staticmethod
    def _delete_in(conn: sqlite3.Connection, face_ids: Sequence[str], erased: list[bytes],
                   done: Erased | None = None) -> list[str]:
        """Delete these faces in ``conn``'s transaction; their embeddings are appended to ``erased``.
        With them go their crops, and the review items naming them lose the face's identity (pending ones
        are withdrawn; a probe crop no pending item needs any more is deleted); ``done`` counts these."""
        deleted = []
        for fid in face_ids:
            row = conn.execute("SELECT vid, image_id, embedding FROM faces WHERE face_id = ?", (fid,)).fetchone()
            if row is None:
                continue
            conn.execute("DELETE FROM faces WHERE vid = ?", (row[0],))
            conn.execute("INSERT INTO changes (op, vid) VALUES ('del', ?)", (row[0],))
            # an image with no face left is forgotten, so it can be indexed again
            conn.execute("DELETE FROM images WHERE image_id = ? AND NOT EXISTS "
                         "(SELECT 1 FROM faces WHERE image_id = ?)", (row[1], row[1]))
            crops = conn.execute("DELETE FROM face_crops WHERE face_id = ?", (fid,)).rowcount
            withdrawn = [r[0] for r in conn.execute(
                "SELECT item_id FROM review_items WHERE face_id = ? AND state = 'pending'", (fid,))]
            probes = [(r[0], r[1]) for r in conn.execute(
                "SELECT DISTINCT search_id, probe_index FROM review_items WHERE face_id = ?", (fid,))]
            conn.execute("UPDATE review_items SET state = CASE state WHEN 'pending' THEN 'withdrawn' ELSE state END, "
                         "face_id = NULL, person_id = NULL WHERE face_id = ?", (fid,))
            dropped = _drop_idle_probes(conn, probes)
            deleted.append(fid)
            erased.append(row[2])
            if done is not None:
                done.crops += crops
                done.review_items_withdrawn.extend(withdrawn)
                done.probe_crops += dropped
        if done is not None:
            done.face_ids.extend(deleted)
        return deleted

    def delete_faces(self, face_ids: Sequence[str], *, before_commit: BeforeCommit | None = None) -> list[str]:
        """Erase these faces (unknown ids are ignored); returns the ids that were deleted. When this
        returns, no file of the collection holds their embeddings, their crops or, for an image left
        without faces, its external id (see :meth:`_erase_wal` for the one case that can stay pending)."""
        hook = None if before_commit is None else (lambda done: before_commit(done.face_ids))
        return self.erase_faces(face_ids, before_commit=hook).face_ids

    def erase_faces(self, face_ids: Sequence[str], *, before_commit: BeforeCommit | None = None) -> Erased:
        """:meth:`delete_faces`, saying what went with the faces (their crops, the review items withdrawn);
        ``before_commit`` (see :meth:`_write`) is given that :class:`Erased`."""
        erased: list[bytes] = []
        done = Erased()

        def fn(conn: sqlite3.Connection) -> Erased:
            self._delete_in(conn, face_ids, erased, done)
            return done

        self._write(fn, erased=erased, before_commit=before_commit)
        return done

    # -- reading ----------------------------------------------------------------------------------
    _SELECT = ("SELECT f.face_id, NULLIF(i.external_image_id, ''), i.image_sha256, f.person_id, f.bbox, "
               "f.det_score, f.quality, f.created, f.vid FROM faces f JOIN images i USING (image_id)")
    _SELECT_EMBEDDING = _SELECT.replace("f.vid FROM", "f.vid, f.embedding FROM")

    def _faces_where(self, where: str, args: Sequence[Any], *,
                     conn: sqlite3.Connection | None = None) -> list[StoredFace]:
        rows = (conn or self._reader()).execute(f"{self._SELECT} WHERE {where} ORDER BY f.vid", tuple(args)).fetchall()
        return [self._face(r) for r in rows]

    @staticmethod
    def _face(r: Sequence[Any]) -> StoredFace:
        return StoredFace(face_id=r[0], external_image_id=r[1], image_sha256=r[2], person_id=r[3],
                          bbox=tuple(json.loads(r[4])), score=float(r[5]), quality=json.loads(r[6]), created=r[7])

    def faces_by_id(self, face_ids: Sequence[str]) -> dict[str, StoredFace]:
        """The stored faces of these ids (those that exist), by id."""
        out: dict[str, StoredFace] = {}
        ids = list(dict.fromkeys(face_ids))
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            out.update((f.face_id, f) for f in self._faces_where(f"f.face_id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    def face_count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def searchable_count(self) -> int:
        """Faces a search looks through now: the up-to-date index's size (cheaper than COUNT(*))."""
        self._catch_up()
        with self._rw.read():
            return self.vectors.count

    def person_count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM persons").fetchone()[0])

    # -- persons ----------------------------------------------------------------------------------
    def _write(self, fn: Any, *, erased: list[bytes] | None = None, before_commit: BeforeCommit | None = None) -> Any:
        """Run ``fn(conn)`` in one write transaction, then bring the index up to date. ``erased``: the
        transaction deletes faces and ``fn`` appends their embeddings there; every copy of them on disk
        is removed before returning. ``before_commit(result)`` runs inside the transaction, after ``fn``
        and before the commit (the engine writes the change's record there): if it raises, nothing is
        committed.

        The transaction checks under SQLite's writer lock that the collection was not deleted (see
        :meth:`delete`): the write is committed before any deletion, or raises CollectionNotFoundError.
        What follows the commit cannot undo it, so a deletion racing that part does not fail the call."""
        with self._write_lock:
            self._begin_owned()
            try:
                result = fn(self._conn)
                if before_commit is not None:
                    before_commit(result)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        try:
            self.refresh()
            if erased is not None:
                os.fsync(self._rerank_fd)  # the zeroed float16 rows, on disk before the call returns
                outcome = self._erase_vectors(np.frombuffer(b"".join(erased), "<f4").reshape(-1, self.dim))
                if isinstance(result, Erased):
                    result.vector_store = self.vector_store
                    if outcome is not None:
                        result.vectors_gone, result.vectors_note = outcome.gone, outcome.how
                self.save_index()  # an approximate index's saved file holds the erased faces' codes
                self._erase_wal(wait_s=_ERASE_WAIT_S)
            elif self._erase_shared:
                self._erase_vectors(np.zeros((0, self.dim), np.float32))
            elif self._save_due():
                self.save_index()
            self._maybe_rebuild()
        except CollectionNotFoundError:
            log.info("collection %s was deleted just after a write committed", self._meta["name"])
        return result

    def _erase_vectors(self, erased: npt.NDArray[np.float32]) -> EraseOutcome | None:
        """Have the vector index make the vectors just removed unrecoverable (a FAISS centroid scrubbed,
        a Milvus compaction, a milvus-lite rebuild: see each index's ``erase``); None when no face was
        erased."""
        if not len(erased) and not self._erase_shared:
            return None
        vectors = self.vectors
        if vectors.shared:  # (a compaction may take a while: searches go on meanwhile)
            outcome = vectors.erase(erased)
        else:
            with self._rw.write():
                outcome = vectors.erase(erased)
        self._erase_shared = False
        if outcome.retrain:
            if self._faiss is not None:
                log.warning("collection %s: an erased face was a centroid of the vector index; retraining it",
                            self._meta["name"])
            self._rebuild(self.vectors.factory)
        log.info("collection %s: %d vectors erased: %s", self._meta["name"], len(erased), outcome.how)
        return outcome

    def create_person(self, person_id: str, *, exist_ok: bool = False,
                      before_commit: BeforeCommit | None = None) -> bool:
        """Create a person; returns False if it existed (an error unless ``exist_ok``)."""
        def fn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("INSERT OR IGNORE INTO persons VALUES (?, ?)", (person_id, _now()))
            if cur.rowcount == 0 and not exist_ok:
                raise InvalidArgumentError(f"person {person_id!r} already exists")
            return bool(cur.rowcount)
        return bool(self._write(fn, before_commit=before_commit))

    def list_persons(self) -> list[tuple[str, int]]:
        """(person id, number of faces) for every person, sorted by id."""
        return [(r[0], int(r[1])) for r in self._reader().execute(
            "SELECT p.person_id, COUNT(f.vid) FROM persons p LEFT JOIN faces f USING (person_id) "
            "GROUP BY p.person_id ORDER BY p.person_id")]

    def list_persons_page(self, *, limit: int = 100,
                          after: str | None = None) -> tuple[list[tuple[str, int]], str | None]:
        """One page of (person id, number of faces), sorted by id, after the person ``after``; and the id to
        pass as ``after`` for the next page (None at the end). Reads only the page's persons."""
        if limit < 1:
            raise InvalidArgumentError(f"limit must be >= 1, got {limit}")
        ids = [str(r[0]) for r in self._reader().execute(
            "SELECT person_id FROM persons WHERE person_id > ? ORDER BY person_id LIMIT ?", (after or "", limit + 1))]
        more = len(ids) > limit
        ids = ids[:limit]
        counts = dict(self._reader().execute(
            f"SELECT person_id, COUNT(*) FROM faces WHERE person_id IN ({','.join('?' * len(ids))}) "
            "GROUP BY person_id", ids).fetchall()) if ids else {}
        return [(p, int(counts.get(p, 0))) for p in ids], (ids[-1] if more else None)

    def _require_person(self, conn: sqlite3.Connection, person_id: str) -> None:
        if conn.execute("SELECT 1 FROM persons WHERE person_id = ?", (person_id,)).fetchone() is None:
            raise FaceNotFoundError(f"no person {person_id!r} in collection {self._meta['name']!r}")

    def associate(self, person_id: str, face_ids: Sequence[str], *,
                  before_commit: BeforeCommit | None = None) -> list[str]:
        """Give these faces to the person (taking them from any other); returns the ids that exist."""
        def fn(conn: sqlite3.Connection) -> list[str]:
            self._require_person(conn, person_id)
            done = []
            for fid in face_ids:
                if conn.execute("UPDATE faces SET person_id = ? WHERE face_id = ?", (person_id, fid)).rowcount:
                    done.append(fid)
            return done
        return list(self._write(fn, before_commit=before_commit))

    def disassociate(self, person_id: str, face_ids: Sequence[str], *,
                     before_commit: BeforeCommit | None = None) -> list[str]:
        """Take these faces away from the person (they stay in the collection); returns those changed."""
        def fn(conn: sqlite3.Connection) -> list[str]:
            self._require_person(conn, person_id)
            done = []
            for fid in face_ids:
                if conn.execute("UPDATE faces SET person_id = NULL WHERE face_id = ? AND person_id = ?",
                                (fid, person_id)).rowcount:
                    done.append(fid)
            return done
        return list(self._write(fn, before_commit=before_commit))

    def delete_person(self, person_id: str, *, before_commit: BeforeCommit | None = None) -> list[str]:
        """Erase a person: delete the person and every face (and vector, and crop) of theirs; returns the
        face ids."""
        hook = None if before_commit is None else (lambda done: before_commit(done.face_ids))
        return self.erase_person(person_id, before_commit=hook).face_ids

    def erase_person(self, person_id: str, *, before_commit: BeforeCommit | None = None) -> Erased:
        """:meth:`delete_person`, saying what went with the faces (their crops, the review items withdrawn).
        Review items that named the person under a face of theirs lose the person id too. ``before_commit``
        (see :meth:`_write`) is given that :class:`Erased`."""
        def fn(conn: sqlite3.Connection) -> Erased:
            self._require_person(conn, person_id)
            ids = [r[0] for r in conn.execute("SELECT face_id FROM faces WHERE person_id = ?", (person_id,))]
            self._delete_in(conn, ids, erased, done)
            conn.execute("DELETE FROM persons WHERE person_id = ?", (person_id,))
            # (a lead whose face was since given to someone else still named this person)
            conn.execute("UPDATE review_items SET person_id = NULL WHERE person_id = ?", (person_id,))
            return done
        erased: list[bytes] = []
        done = Erased()
        self._write(fn, erased=erased, before_commit=before_commit)
        return done

    def person_embeddings(self, person_id: str) -> tuple[list[str], npt.NDArray[np.float32]]:
        """The face ids of a person's stored faces (oldest first) and their embeddings, (n, dim) float32,
        unit length; none (an unknown person, or one without faces): ``([], (0, dim))``."""
        rows = self._reader().execute("SELECT face_id, embedding FROM faces WHERE person_id = ? ORDER BY vid",
                                      (person_id,)).fetchall()
        if not rows:
            return [], np.zeros((0, self.dim), np.float32)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), self.dim)
        return [str(r[0]) for r in rows], vectors.astype(np.float32)

    def get_face(self, face_id: str) -> tuple[StoredFace, npt.NDArray[np.float32]]:
        """A stored face and its embedding; raises :class:`FaceNotFoundError`."""
        row = self._reader().execute(f"{self._SELECT} WHERE f.face_id = ?", (face_id,)).fetchone()
        if row is None:
            raise FaceNotFoundError(f"no face {face_id!r} in collection {self._meta['name']!r}")
        emb = self._reader().execute("SELECT embedding FROM faces WHERE face_id = ?", (face_id,)).fetchone()
        if emb is None:  # deleted in between
            raise FaceNotFoundError(f"no face {face_id!r} in collection {self._meta['name']!r}")
        emb = emb[0]
        return self._face(row), np.frombuffer(emb, dtype="<f4").astype(np.float32)

    def list_faces(self, *, limit: int = 100, after: str | None = None) -> tuple[list[StoredFace], str | None]:
        """One page of faces in the order they were indexed; pass the returned token to get the next."""
        if limit < 1:
            raise InvalidArgumentError(f"limit must be >= 1, got {limit}")
        start = 0
        if after:
            try:
                start = int(after)
            except ValueError:
                raise InvalidArgumentError(f"invalid page token {after!r}") from None
            if not 0 <= start < 2**63:  # SQLite integers are 64-bit: a bigger token was never handed out
                raise InvalidArgumentError(f"invalid page token {after!r}")
        rows = self._reader().execute(f"{self._SELECT} WHERE f.vid > ? ORDER BY f.vid LIMIT ?",
                                  (start, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [self._face(r) for r in rows], (str(rows[-1][8]) if more else None)

    def search(self, queries: npt.NDArray[np.float32], k: int, *,
               candidate_list: bool | None = None) -> list[list[tuple[StoredFace, float]]]:
        """For each (d,) row of ``queries`` (unit length), the ``k`` most similar stored faces, best first.

        On an approximate index, ``candidate_list`` (the default when ``k`` > 1) asks for the true
        ``k`` best, ranks 2 to ``k`` included, as an investigation's candidate list needs: the search
        probes more lists and re-ranks many more candidates (slower; BENCHMARKS.md "Collections").
        ``candidate_list=False`` asks only for the best face and faces scoring far above strangers (an
        identification's matches above a strict threshold), at the speed of a 1-result search; its
        lower ranks among strangers are approximate."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise InvalidArgumentError(f"queries must be (n, {self.dim}), got {q.shape}")
        self._catch_up()
        with self._rw.read():
            if self._closed:
                raise CollectionNotFoundError(f"collection {self._meta['name']!r} was closed or deleted")
            vectors = self.vectors
            if vectors.shared:
                if self.face_count() == 0:  # (one SQLite query; a Milvus count(*) is a round trip)
                    return [[] for _ in range(len(q))]
            elif vectors.count == 0:
                return [[] for _ in range(len(q))]
            if vectors.exact:
                ids = vectors.search(q, k, None)
            else:
                as_list = k > 1 if candidate_list is None else candidate_list
                ids = vectors.search(q, k, _search_plan(k, as_list, alone=self._rw.readers <= 1 and not as_list))
                ids = self._rerank(q, ids, k)
            out = []
            for query, irow in zip(q, ids, strict=True):
                vids = [int(v) for v in irow if v >= 0]
                hits: list[tuple[StoredFace, float]] = []
                if vids:
                    # the hits' records and float32 embeddings: scores reported are exact
                    marks = ",".join("?" * len(vids))
                    rows = self._reader().execute(f"{self._SELECT_EMBEDDING} WHERE f.vid IN ({marks})", vids).fetchall()
                    hits = [(self._face(r), float(np.frombuffer(r[9], dtype="<f4") @ query)) for r in rows]
                    hits.sort(key=lambda h: -h[1])
                out.append(hits)
            return out

    def _rerank(self, q: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.int64]:
        """Re-rank approximate candidates with their float16 embeddings; keep the best ``k`` ids (-1 pads).
        Rows missing from the float16 file (written after a crash, say) are read from SQLite. Candidates
        are scored _RERANK_CHUNK at a time, so that a long candidate list never allocates (and faults
        in) a fresh copy of all its rows: on the 1M benchmark collection (1 thread) a 10-result search
        took p50 31.7 ms with its 16,384 candidates in one piece, 18.8 ms in chunks of 2,048."""
        import faiss

        out = np.full((len(q), k), -1, dtype=np.int64)
        index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        for row, (query, cand) in enumerate(zip(q, ids, strict=True)):
            vids = cand[cand >= 0]
            if not len(vids):
                continue
            scores: list[npt.NDArray[np.float32]] = []
            kept: list[npt.NDArray[np.int64]] = []
            for start in range(0, len(vids), _RERANK_CHUNK):
                part = vids[start : start + _RERANK_CHUNK]
                part_scores, best = self._score_rows(index, query, part, k)
                scores.append(part_scores)
                kept.append(part[best])
            top = np.argsort(-np.concatenate(scores), kind="stable")[:k]
            out[row, : len(top)] = np.concatenate(kept)[top]
        return out

    def _score_rows(self, index: Any, query: npt.NDArray[np.float32], vids: npt.NDArray[np.int64],
                    k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Scores and positions (in ``vids``) of the best ``k`` of these faces by their float16 rows,
        best first; ``index`` is an empty fp16 FAISS index to reuse (left empty)."""
        halves = self._rerank_rows(vids)
        # an unwritten (all-zero) row, judged by its first 8 values: a real embedding with 8 zeros
        # in float16 is not met in practice, and if it were it would only be re-read from SQLite
        missing = ~halves[:, :8].view(np.uint16).any(axis=1)
        if not missing.any():
            # FAISS scores float16 codes with SIMD (F16C); numpy's float16 cast is ~8x slower here
            # (1.2 ms for 640 candidates of 512-d, against 0.15 ms)
            index.add_sa_codes(halves.view(np.uint8))
            try:
                dist, best = index.search(query[None], min(k, len(vids)))
            finally:
                index.reset()
            keep = best[0] >= 0
            return dist[0][keep].astype(np.float32), best[0][keep].astype(np.int64)
        vecs = halves.astype(np.float32)
        lost = [int(v) for v in vids[missing]]
        got = dict(self._reader().execute(
            f"SELECT vid, embedding FROM faces WHERE vid IN ({','.join('?' * len(lost))})", lost).fetchall())
        for i in np.nonzero(missing)[0]:
            blob = got.get(int(vids[i]))
            vecs[i] = np.frombuffer(blob, dtype="<f4") if blob is not None else -2.0  # deleted: last
        all_scores = (vecs @ query).astype(np.float32)
        order = np.argsort(-all_scores, kind="stable")[:k]
        return all_scores[order], order.astype(np.int64)

    # -- face crops and the review queue ----------------------------------------------------------
    def face_crop(self, face_id: str) -> bytes | None:
        """The stored JPEG crop of a face (None: the face has none: indexed while the policy kept no
        crops, or before crops existed); raises :class:`FaceNotFoundError` for a face not in the collection."""
        reader = self._reader()
        row = reader.execute("SELECT c.jpeg, f.face_id FROM faces f LEFT JOIN face_crops c USING (face_id) "
                             "WHERE f.face_id = ?", (face_id,)).fetchone()
        if row is None:
            raise FaceNotFoundError(f"no face {face_id!r} in collection {self._meta['name']!r}")
        return None if row[0] is None else bytes(row[0])

    def add_review_items(self, items: Sequence[Mapping[str, Any]], probes: Sequence[tuple[str, int, bytes]],
                         record: Callable[[], tuple[int, str] | None]) -> list[dict[str, Any]]:
        """Write an investigation's review items (dicts of the ``review_items`` columns but the log's) and
        its probe crops ``(search_id, probe_index, jpeg)`` in one transaction. ``record()`` runs inside it,
        before anything is written (it appends the search to the signed log and returns the entry's seq and
        hash, stored with each item; an exception rolls everything back). A candidate erased since the
        search found it is written withdrawn, without its identity. Returns the items as written."""
        def fn(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            entry = record()
            out = []
            for item in items:
                row = {**item, "log_seq": entry[0] if entry else None, "log_hash": entry[1] if entry else None}
                if row.get("face_id") is not None and conn.execute(
                        "SELECT 1 FROM faces WHERE face_id = ?", (row["face_id"],)).fetchone() is None:
                    row.update(state="withdrawn", face_id=None, person_id=None)
                values = [row.get(c) for c in _REVIEW_COLUMNS]
                conn.execute(f"INSERT INTO review_items ({', '.join(_REVIEW_COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(_REVIEW_COLUMNS))})", values)
                out.append(dict(zip(_REVIEW_COLUMNS, values, strict=True)))
            open_probes = {(r["search_id"], r["probe_index"]) for r in out if r["state"] == "pending"}
            for search_id, index, jpeg in probes:
                if (search_id, index) in open_probes:
                    conn.execute("INSERT INTO review_probes VALUES (?, ?, ?)", (search_id, index, jpeg))
            return out
        return list(self._write(fn))

    def review_items(self, *, item_id: str | None = None, state: str | None = None, limit: int = 100,
                     after: tuple[str, str] | None = None,
                     searcher: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        """Review items as stored (dicts of the ``review_items`` columns), oldest first: the one of
        ``item_id``, or up to ``limit`` of ``state`` (None: any) after the item ``after`` = (created, item_id);
        ``searcher`` = (kind, id): only the items of that actor's searches."""
        where: list[str] = []
        args: list[Any] = []
        if searcher is not None:
            where.append("json_extract(searcher, '$.kind') = ? AND json_extract(searcher, '$.id') = ?")
            args.extend(searcher)
        if item_id is not None:
            where.append("item_id = ?")
            args.append(item_id)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if after is not None:
            where.append("(created, item_id) > (?, ?)")
            args.extend(after)
        sql = (f"SELECT {', '.join(_REVIEW_COLUMNS)} FROM review_items"
               + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY created, item_id LIMIT ?")
        rows = self._reader().execute(sql, (*args, limit)).fetchall()
        return [dict(zip(_REVIEW_COLUMNS, r, strict=True)) for r in rows]

    def review_probe(self, item_id: str) -> bytes | None:
        """The probe crop of a review item's search (None: no item of that id, or its crop is gone)."""
        row = self._reader().execute(
            "SELECT p.jpeg FROM review_items r JOIN review_probes p USING (search_id, probe_index) "
            "WHERE r.item_id = ?", (item_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def decide_review_item(self, item_id: str, changes: Mapping[str, Any],
                           check: Callable[[dict[str, Any]], None],
                           record: Callable[[dict[str, Any]], tuple[int, str] | None]) -> dict[str, Any]:
        """Decide a review item in one transaction: ``check(item)`` sees the item as stored under the
        writer lock (and raises to refuse), ``record(item)`` appends the decision to the signed log, then
        ``changes`` (state, decided_by, decided_at, reason) are written and the probe crop is deleted if no
        pending item of its search needs it. Raises ReviewItemNotFoundError (via ``check``, given None)."""
        dropped = 0

        def fn(conn: sqlite3.Connection) -> dict[str, Any]:
            nonlocal dropped
            row = conn.execute(f"SELECT {', '.join(_REVIEW_COLUMNS)} FROM review_items WHERE item_id = ?",
                               (item_id,)).fetchone()
            item = dict(zip(_REVIEW_COLUMNS, row, strict=True)) if row is not None else None
            check(item)  # type: ignore[arg-type]  # (raises for None)
            assert item is not None
            record(item)
            sets = dict(changes)
            conn.execute(f"UPDATE review_items SET {', '.join(f'{k} = ?' for k in sets)} WHERE item_id = ?",
                         (*sets.values(), item_id))
            dropped = _drop_idle_probes(conn, [(item["search_id"], item["probe_index"])])
            return {**item, **sets}

        out = dict(self._write(fn))
        if dropped:
            self._erase_wal(wait_s=_ERASE_WAIT_S)  # the deleted crop's bytes out of the WAL too
        return out

    def expire_review_items(self, now: str, record: Callable[[list[str]], object]) -> list[str]:
        """Expire the pending review items whose ``expires`` is at or before ``now`` (ISO 8601 UTC): state
        ``expired``, the candidate's identity cleared, probe crops no pending item needs deleted, all in one
        transaction in which ``record(item_ids)`` appends the purge to the signed log (only when there are
        items to expire). Returns the ids expired."""
        def fn(conn: sqlite3.Connection) -> list[str]:
            due = conn.execute("SELECT item_id, search_id, probe_index FROM review_items WHERE state = 'pending' "
                               "AND expires <= ? ORDER BY created, item_id", (now,)).fetchall()
            if not due:
                return []
            ids = [r[0] for r in due]
            record(ids)
            conn.executemany("UPDATE review_items SET state = 'expired', face_id = NULL, person_id = NULL "
                             "WHERE item_id = ?", [(i,) for i in ids])
            _drop_idle_probes(conn, sorted({(r[1], r[2]) for r in due}))
            return ids

        if self._reader().execute("SELECT 1 FROM review_items WHERE state = 'pending' AND expires <= ? LIMIT 1",
                                  (now,)).fetchone() is None:
            return []  # (no write transaction for the common case)
        expired = list(self._write(fn))
        if expired:
            self._erase_wal(wait_s=_ERASE_WAIT_S)
        return expired

    # -- maintenance ------------------------------------------------------------------------------
    def check(self, *, repair: bool = False) -> CheckReport:
        """Compare the index with SQLite; with ``repair``, rebuild the index when they differ."""
        self.refresh()
        with self._rw.write():
            truth = {r[0] for r in self._reader().execute("SELECT vid FROM faces")}
            have = self.vectors.ids()
            missing, extra = len(truth - have), len(have - truth)
            wrong = self._check_rerank(repair=repair)
        repaired = False
        if repair and (missing or extra):
            self._rebuild(choose_factory(len(truth), self.dim))
            repaired = True
        with self._rw.read():
            return CheckReport(faces=len(truth), vectors=len(have), missing_from_index=missing,
                               extra_in_index=extra, repaired=repaired or (repair and wrong > 0),
                               rerank_rows_wrong=wrong)

    def _check_rerank(self, *, repair: bool) -> int:
        """Rows of the float16 file that differ from SQLite (live faces) or are not zero (deleted ones)."""
        wrong = 0
        live: set[int] = set()
        cur = self._reader().execute("SELECT vid, embedding FROM faces ORDER BY vid")
        while rows := cur.fetchmany(65536):
            ids, want = _decode(rows, self.dim)
            live.update(ids.tolist())
            bad = np.any(self._rerank_rows(ids) != want.astype(np.float16), axis=1)
            wrong += int(bad.sum())
            if repair and bad.any():
                self._write_rerank_live(ids[bad], want[bad])
        n_rows = os.fstat(self._rerank_fd).st_size // (2 * self.dim)
        for start in range(0, n_rows, 65536):
            ids = np.arange(start, min(start + 65536, n_rows), dtype=np.int64)
            stray = ids[self._rerank_rows(ids).any(axis=1)]
            stray = np.array([v for v in stray.tolist() if v not in live], dtype=np.int64)
            wrong += len(stray)
            if repair and len(stray):
                self._write_rerank(stray, None)
        return wrong

    def close(self, *, save: bool = True) -> None:
        """Save the index (if ``save`` and this store still owns the collection) and close. Searches in
        flight finish first; later calls raise :class:`CollectionNotFoundError`."""
        # lock order everywhere: _write_lock before _rw, never the other way round
        with self._write_lock:
            if self._closed:
                return
            try:
                if save and _in_write_transaction():
                    log.debug("collection %s: closed inside a write transaction of this thread (a finalizer): "
                              "index not saved, rebuilt or replayed when next opened", self._meta["name"])
                elif save:
                    self.save_index()
            except (sqlite3.Error, OSError) as exc:
                log.warning("collection %s: vector index not saved on close (%s); it is rebuilt from "
                            "SQLite when next opened", self._meta["name"], exc)
            finally:
                with self._rw.write():
                    self._release()

    def _release(self) -> None:
        """Close every connection and file (under both locks, or while opening)."""
        self._closed = True
        for conn in self._readers:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._readers.clear()
        if self._vectors is not None:
            self._vectors.close()
            self._vectors = None
        with contextlib.suppress(sqlite3.Error):
            # Empty the WAL before letting go: when the last connection closes SQLite unlinks the WAL
            # without overwriting it, and a process still holding the file (or the freed blocks) would
            # keep whatever erased rows its frames held. Other processes reading: no wait, they finish it.
            self._conn.execute("PRAGMA busy_timeout=0")
            if not self._conn.in_transaction:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._rerank_map = self._rerank_mmap = None
        for fd in (self._rerank_fd, self._db_fd):
            if fd >= 0:
                os.close(fd)
        self._rerank_fd = self._db_fd = -1


def _decode(rows: Sequence[Any], dim: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(vid, embedding blob) rows -> (n,) int64 ids and (n, dim) float32 vectors."""
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
    return ids, np.ascontiguousarray(vecs, dtype=np.float32)


# (the FAISS helpers moved to facelens.store.vectors.faiss; these names stay for tools that use them)
_factory_of, _choose_scan, _nlist, _tune, _ids_of = factory_of, choose_scan, nlist_of, tune, ids_of


def _search_plan(k: int, candidate_list: bool, *, alone: bool) -> SearchPlan:
    """The candidates a search of ``k`` results asks an approximate index for (see :func:`_plan`)."""
    if not candidate_list:
        return SearchPlan(candidates=max(RERANK * k, _MIN_CANDIDATES), probe_share=NPROBE_SHARE, alone=alone)
    return SearchPlan(candidates=max(RERANK * k, _MIN_CANDIDATES, LIST_CANDIDATES), probe_share=LIST_NPROBE_SHARE,
                      alone=alone)


def _plan(index: Any, k: int, candidate_list: bool) -> tuple[int, int]:
    """(lists to probe, PQ candidates to re-rank) for a search of ``k`` results in an IVF ``index``:
    the best face needs half the lists and 640 candidates (RERANK x k for a larger k); a
    ``candidate_list`` needs the lists and candidates its strangers lie in (see LIST_NPROBE_SHARE)."""
    nlist = nlist_of(index)
    if not candidate_list:
        return max(1, nlist // NPROBE_SHARE), max(RERANK * k, _MIN_CANDIDATES)
    return max(1, nlist // LIST_NPROBE_SHARE), max(RERANK * k, _MIN_CANDIDATES, LIST_CANDIDATES)
