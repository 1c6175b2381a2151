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

__all__ = ["CheckReport", "FaceRecord", "FaceStore", "StoredFace", "legacy_generation", "new_generation"]

log = logging.getLogger(__name__)

#: Called with a write's result inside its transaction, just before the commit (see FaceStore._write).
BeforeCommit = Callable[[Any], None]

SCHEMA_VERSION = 1
DB_NAME = "faces.sqlite"
_SAVE_EVERY = 10_000  # persist the vector index after this many changes (and on close)
INDEX_FACTORY = "IDMap2,Flat"  # exact inner-product search; ids are the faces' row ids
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


@dataclass(frozen=True, slots=True)
class FaceRecord:
    """A face to store: its box, detector score, quality/pose summary and (dim,) float32 embedding."""

    bbox: Sequence[float]
    score: float
    quality: dict[str, Any]
    embedding: npt.NDArray[np.float32] = field(repr=False)


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
                for table in ("faces", "images", "persons", "changes"):
                    conn.execute(f"DELETE FROM {table}")
                conn.execute("COMMIT")
                conn.execute(f"PRAGMA busy_timeout={int(_ERASE_WAIT_S * 1000)}")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
        except sqlite3.Error as exc:  # a damaged file: its blocks are zeroed below instead
            log.warning("%s: could not scrub the deleted collection's database (%s); zeroing it", folder, exc)
            _zero_file(db)
    for f in folder.iterdir():
        if f.is_file() and not f.is_symlink() and not f.name.startswith(DB_NAME):
            _zero_file(f)


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
        self._rerank_fd = -1
        try:
            self._meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if int(self._meta.get("schema_version", 0)) != SCHEMA_VERSION:
                raise CollectionError(f"{path}: unsupported collection format {self._meta.get('schema_version')!r}")
            self._meta.setdefault("name", path.name)
            if _TOMBSTONE in self._meta:
                raise CollectionNotFoundError(f"no collection named {self._meta['name']!r} (it was deleted)")
            self.dim = int(self._meta["dim"])
            self._index: Any = None
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

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, *, name: str, model_name: str, model_sha256: str, dim: int,
               calibration: str | None = None, prepare: Callable[[Path], None] | None = None,
               extra_meta: Mapping[str, str] | None = None) -> FaceStore:
        """Create a new, empty collection folder at ``path``; raises CollectionExistsError.

        The collection is built in a hidden folder beside ``path`` (schema, meta with ``extra_meta`` such as
        its policy, and whatever ``prepare(folder)`` adds, such as its calibration profile) and renamed into
        place whole, so no other process ever opens a half-made collection."""
        _sweep_graves(path.parent)
        if path.exists():
            raise CollectionExistsError(f"collection {name!r} already exists")
        cradle = path.parent / f"{_CRADLE_PREFIX}{uuid.uuid4().hex}"
        cradle.mkdir(parents=True)
        try:
            conn = _connect(cradle / DB_NAME, create=True)
            try:
                conn.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
                meta = {"schema_version": str(SCHEMA_VERSION), "name": name, "model_name": model_name,
                        "model_sha256": model_sha256, "dim": str(dim), "created": _now(),
                        "index_factory": INDEX_FACTORY, "calibration": calibration or "",
                        "generation": new_generation()}
                meta.update({k: v for k, v in (extra_meta or {}).items() if k not in meta})
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                conn.execute("COMMIT")
            finally:
                conn.close()  # (its journal files name the hidden folder: open again once in place)
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
        """The factory string of the vector index this process is searching."""
        return "IVF" if self._index is None else _factory_of(self._index)

    def _load_index(self) -> None:
        import faiss

        files = self._index_files()
        if files:
            seq, path = files[-1]
            try:
                self._index = _tune(faiss.read_index(str(path)))
                self._seq = seq
            except RuntimeError as exc:
                log.warning("%s: vector index unreadable (%s); rebuilding from SQLite", path, exc)
                self._index = None
        if self._index is not None and (self._index.d != self.dim or _factory_of(self._index) == INDEX_FACTORY):
            self._index = None  # another dimension, or an exact index saved by an older version (raw vectors)
        if self._index is None:
            factory = choose_factory(self.face_count(), self.dim)
            if factory == INDEX_FACTORY:
                self._restore_rerank_file()
                self._index, self._seq, self._trained_on = self._build(factory, rerank=False)
                self.save_index()  # saves nothing: removes what older versions or killed saves left
            else:
                self._rebuild(factory)
        else:
            self._restore_rerank_file()
            self.refresh()
            self._maybe_rebuild()

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
        return _tune(index), seq, n

    def _rebuild(self, factory: str) -> None:
        """Rebuild the index from SQLite (the truth), then catch up with changes made meanwhile."""
        index, seq, n = self._build(factory)
        with self._rw.write():
            self._index, self._seq, self._trained_on = index, seq, n
            self._unsaved = 1
        self.refresh()
        self.save_index()
        self._set_meta(index_factory=factory, trained_on=str(n))

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
        n = self._index.ntotal
        wanted = choose_factory(n, self.dim)
        current = _factory_of(self._index)
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
            dels = np.array([v for v, op in final.items() if op == "del"], dtype=np.int64)
            if dels.size:
                self._index.remove_ids(dels)
                self._write_rerank(dels, None)
            adds = [v for v, op in final.items() if op == "add"]
            for start in range(0, len(adds), 900):
                chunk = adds[start : start + 900]
                got = reader.execute(
                    f"SELECT vid, embedding FROM faces WHERE vid IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                if got:
                    ids, vecs = _decode(got, self.dim)
                    self._index.add_with_ids(vecs, ids)
                    self._write_rerank_live(ids, vecs)
            self._seq = int(rows[-1][0])
            self._unsaved += len(rows)
            return bool(dels.size)

    def _save_due(self) -> bool:
        """Saving writes the whole index: do it once per 50% growth (at least _SAVE_EVERY changes), so
        its total cost stays within a few times the final size. Unsaved changes are replayed from
        SQLite's change log when the collection is next opened. The exact index is never saved."""
        return (_factory_of(self._index) != INDEX_FACTORY
                and self._unsaved >= max(_SAVE_EVERY, self._index.ntotal // 2))

    def save_index(self) -> bool:
        """Persist the approximate vector index as ``vectors.<seq>.faiss`` (atomic rename), removing
        older files and temporary files of killed saves; returns whether a file was written.

        Runs under SQLite's writer lock, after applying every committed change, and only while this
        store is still the collection at its path: no process saves an index that misses a committed
        deletion, nor writes into a collection that replaced a deleted one. The exact index is not
        saved (it holds the raw embeddings): saving it only removes files left by older versions."""
        import faiss

        with self._write_lock:
            try:
                self._begin_owned()
            except CollectionNotFoundError:
                return False
            try:
                self.refresh()
                with self._rw.write():
                    for stale in self.path.glob(".vectors.*.tmp"):  # killed saves (no save runs now)
                        stale.unlink(missing_ok=True)
                    if _factory_of(self._index) == INDEX_FACTORY:
                        for _, old in self._index_files():
                            old.unlink()
                        self._unsaved = 0
                        return False
                    if self._unsaved == 0 and self._index_files():
                        return False
                    final = self.path / f"vectors.{self._seq}.faiss"
                    tmp = self.path / f".vectors.{self._seq}.{os.getpid()}.tmp"
                    faiss.write_index(self._index, str(tmp))
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
                self._conn.execute("ROLLBACK")  # nothing was written to SQLite: this only releases the lock

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

    def _scrub_centroids(self, erased: npt.NDArray[np.float32]) -> bool:
        """Remove erased embeddings from the approximate index's coarse quantizer: k-means leaves a
        list whose training sample held one point with that point as its centroid, i.e. a face's exact
        float32 embedding, saved with the index. Such a centroid of a list now empty is replaced by the
        mean of its 8 nearest centroids (no code depends on it); when its list still holds faces,
        returns True: the index must be retrained (from SQLite, which no longer holds the face)."""
        import faiss

        with self._rw.write():
            if _factory_of(self._index) == INDEX_FACTORY:
                return False
            ivf: Any = faiss.extract_index_ivf(self._index)
            quantizer: Any = faiss.downcast_index(ivf.quantizer)
            cents = faiss.rev_swig_ptr(quantizer.get_xb(), ivf.nlist * self.dim).reshape(ivf.nlist, self.dim)
            e = np.ascontiguousarray(erased, dtype=np.float32)
            d2 = (e * e).sum(1)[:, None] + (cents * cents).sum(1)[None, :] - 2 * (e @ cents.T)
            same = np.unique(np.nonzero(d2 < 1e-6)[1])  # equal up to float rounding
            for c in same.tolist():
                if ivf.invlists.list_size(c):
                    log.warning("collection %s: an erased face was a centroid of the vector index; retraining it",
                                self._meta["name"])
                    return True
                near = np.argsort(-(cents @ cents[c]))[1:9]
                cents[c] = cents[near].mean(axis=0)
            return False

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
                out.append((int(image_id), True))  # type: ignore[arg-type]
            # the faces as committed, read in the same transaction (the store may be deleted right after)
            return [(self._faces_where("f.image_id = ?", (image_id,), conn=conn), added) for image_id, added in out]

        return list(self._write(fn, before_commit=before_commit))

    @staticmethod
    def _delete_in(conn: sqlite3.Connection, face_ids: Sequence[str], erased: list[bytes]) -> list[str]:
        """Delete these faces in ``conn``'s transaction; their embeddings are appended to ``erased``."""
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
            deleted.append(fid)
            erased.append(row[2])
        return deleted

    def delete_faces(self, face_ids: Sequence[str], *, before_commit: BeforeCommit | None = None) -> list[str]:
        """Erase these faces (unknown ids are ignored); returns the ids that were deleted. When this
        returns, no file of the collection holds their embeddings or, for an image left without faces,
        its external id (see :meth:`_erase_wal` for the one case that can stay pending)."""
        erased: list[bytes] = []
        return list(self._write(lambda conn: self._delete_in(conn, face_ids, erased), erased=erased,
                                before_commit=before_commit))

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

    def face_count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def searchable_count(self) -> int:
        """Faces a search looks through now: the up-to-date index's size (cheaper than COUNT(*))."""
        self._catch_up()
        with self._rw.read():
            return int(self._index.ntotal)

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
                if erased and self._scrub_centroids(np.frombuffer(b"".join(erased), "<f4").reshape(-1, self.dim)):
                    self._rebuild(_factory_of(self._index))
                self.save_index()  # an approximate index's saved file holds the erased faces' codes
                self._erase_wal(wait_s=_ERASE_WAIT_S)
            elif self._save_due():
                self.save_index()
            self._maybe_rebuild()
        except CollectionNotFoundError:
            log.info("collection %s was deleted just after a write committed", self._meta["name"])
        return result

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
        """Erase a person: delete the person and every face (and vector) of theirs; returns the face ids."""
        def fn(conn: sqlite3.Connection) -> list[str]:
            self._require_person(conn, person_id)
            ids = [r[0] for r in conn.execute("SELECT face_id FROM faces WHERE person_id = ?", (person_id,))]
            self._delete_in(conn, ids, erased)
            conn.execute("DELETE FROM persons WHERE person_id = ?", (person_id,))
            return ids
        erased: list[bytes] = []
        return list(self._write(fn, erased=erased, before_commit=before_commit))

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
            if self._index.ntotal == 0:
                return [[] for _ in range(len(q))]
            exact = _factory_of(self._index) == INDEX_FACTORY
            if exact:
                _, ids = self._index.search(q, min(k, self._index.ntotal))
            else:
                import faiss

                params = faiss.SearchParametersIVF()  # per call: concurrent searches may plan differently
                as_list = k > 1 if candidate_list is None else candidate_list
                params.nprobe, n_candidates = _plan(self._index, k, as_list)
                _choose_scan(self._index, len(q), alone=self._rw.readers <= 1 and not as_list)
                _, ids = self._index.search(q, min(n_candidates, self._index.ntotal), params=params)
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

    # -- maintenance ------------------------------------------------------------------------------
    def check(self, *, repair: bool = False) -> CheckReport:
        """Compare the index with SQLite; with ``repair``, rebuild the index when they differ."""
        self.refresh()
        with self._rw.write():
            truth = {r[0] for r in self._reader().execute("SELECT vid FROM faces")}
            have = _ids_of(self._index)
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
                if save:
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


def _factory_of(index: Any) -> str:
    import faiss

    if isinstance(index, faiss.IndexIDMap2):
        return INDEX_FACTORY
    ivf = faiss.extract_index_ivf(index)
    if isinstance(index, faiss.IndexIVFPQFastScan):  # (extract_index_ivf returns the base class)
        return f"IVF{ivf.nlist},PQ{index.M}x4fs"
    return f"IVF{ivf.nlist},SQfp16"


def _choose_scan(index: Any, n_queries: int, *, alone: bool) -> None:
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


def _plan(index: Any, k: int, candidate_list: bool) -> tuple[int, int]:
    """(lists to probe, PQ candidates to re-rank) for a search of ``k`` results in an IVF ``index``:
    the best face needs half the lists and 640 candidates (RERANK x k for a larger k); a
    ``candidate_list`` needs the lists and candidates its strangers lie in (see LIST_NPROBE_SHARE)."""
    nlist = _nlist(index)
    if not candidate_list:
        return max(1, nlist // NPROBE_SHARE), max(RERANK * k, _MIN_CANDIDATES)
    return max(1, nlist // LIST_NPROBE_SHARE), max(RERANK * k, _MIN_CANDIDATES, LIST_CANDIDATES)


def _nlist(index: Any) -> int:
    """The number of inverted lists of an IVF index."""
    import faiss

    return int(faiss.extract_index_ivf(index).nlist)


def _tune(index: Any) -> Any:
    import faiss

    if not isinstance(index, faiss.IndexIDMap2):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = max(1, ivf.nlist // NPROBE_SHARE)
        if not isinstance(index, faiss.IndexIVFPQFastScan):  # fast-scan lists cannot use a hash table
            # deletions look ids up in a hash table instead of scanning every list
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    return index


def _ids_of(index: Any) -> set[int]:
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
