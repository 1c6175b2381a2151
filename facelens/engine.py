"""The facelens API: open an :class:`Engine` once, then detect, analyze and compare faces."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from .accountability.actor import Actor
from .accountability.policy import POLICY_META_KEY, CollectionPolicy
from .accountability.records import (
    ErasureReceipt,
    action_failed_record,
    collection_created_record,
    collection_deleted_record,
    compare_record,
    face_ids_record,
    faces_deleted_record,
    faces_indexed_record,
    failure,
    lead_floor_changed_record,
    new_id,
    now,
    person_created_record,
    person_erased_record,
    search_record,
)
from .accountability.review import Decision, ReviewItem, ReviewQueue, ReviewState, crop_of
from .calibration import ScoreCalibration, load_calibration
from .calibration.table import Policy, fpir_to_fmr
from .config import EngineConfig, check_fmr
from .errors import (
    CalibrationError,
    FacelensError,
    InvalidArgumentError,
    ModelMismatchError,
    NoFaceError,
    PolicyError,
    VideoDecodeError,
)
from .imageio import ImageInput, check_image_file, decode_image, describe_source
from .models.backends import Backend, open_backend
from .pipeline import FaceList, Pipeline, commit_work
from .store import FaceRecord, FaceStore, collection_dir, collection_generation, default_home, list_collection_names
from .store.collection import BeforeCommit, CheckReport, Erased, StoredFace
from .store.vectors import default_store
from .types import (
    Candidate,
    CollectionInfo,
    Comparison,
    EnrolmentCheck,
    Face,
    IndexResult,
    Match,
    OperatingPoint,
    PolicyFloor,
    QualityFilter,
    RefusalReason,
    SearchMode,
    SearchResult,
)

if TYPE_CHECKING:
    from .accountability.log import LogEntry, SearchLog
    from .scale.embedded import EmbeddedImage
    from .video.pipeline import ProgressCallback, VideoOptions, VideoResult
    from .video.stream import EventCallback, StreamOptions, StreamProcessor

__all__ = ["DEFAULT_ENROL_MAX_FMR", "DEFAULT_LEAD_FLOOR_FMR", "DEFAULT_MAX_CANDIDATES", "READ_ONLY_METHODS",
           "RECORDED_METHODS", "Engine", "FaceList", "IndexPlan", "SearchResultList"]

log = logging.getLogger(__name__)

_EXTERNAL_ID = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
_PERSON_ID = re.compile(r"[A-Za-z0-9_.\-:]{1,128}")
COLLECTION_CALIBRATION = "calibration.npz"  # a collection's own calibration profile, when it has one
DEFAULT_LEAD_FLOOR_FMR = 1e-3
"""An investigation's candidates score at least the threshold of this per-comparison false-match rate, unless
the collection sets its own (``lead_floor_fmr``): with 1,000 faces, about one stranger is expected above it."""
DEFAULT_MAX_CANDIDATES = 10
"""An investigation lists at most this many candidates unless asked for another number (NIST's FRTE 1:N
evaluations use candidate lists of this length)."""
DEFAULT_MAX_RESULTS = 10  # an identification returns at most this many matches unless asked for another number
DEFAULT_ENROL_MAX_FMR = 1e-4
"""A face indexed for a person must match one of their stored faces at this per-comparison false-match rate
(unless the call gives ``enrol_max_fmr``, or turns the check off): a stranger passes about once in 10,000."""
T = TypeVar("T")

#: Every public method of :class:`Engine` is in one of these two sets (tests/test_record.py fails for a public
#: method in neither, so that a new method that changes state cannot forget its record). Recorded: it takes
#: ``actor`` and, given one, records what it did (or tried) in the signed log (accountability/records.py).
RECORDED_METHODS = frozenset({
    "record", "create_collection", "delete_collection", "set_lead_floor", "set_collection_policy", "index_faces",
    "delete_faces", "erase_faces", "create_person", "associate_faces", "disassociate_faces", "delete_person",
    "erase_person", "search_faces_by_image", "search_faces", "search_persons_by_image", "compare",
    "search_faces_by_embedding", "search_video", "prepare_index", "store_indexed", "watch_stream",
    "index_embedded",  # faces embedded elsewhere (facelens.scale), committed as index_faces would
    # the review queue's (docs: design of issue 15)
    "review_decide", "review_purge",
})
#: Read-only: changes nothing stored and shows nothing of a collection beyond what the entry points' own
#: rights allow (``compare_faces`` compares faces its caller already holds; ``check_collection(repair=True)``
#: rebuilds only derived files, the vector index, from the data; ``close`` releases resources).
READ_ONLY_METHODS = frozenset({
    "detect", "analyze", "embed", "operating_point", "threshold", "fmr", "compare_faces", "collection_calibration",
    "list_collections", "describe_collection", "collection_policy", "collection_generation", "check_collection",
    "list_faces", "lead_floor", "list_persons", "list_persons_page", "close", "embed_faces", "detect_video",
    # the review queue's (docs: design of issue 15)
    "review_list", "review_get", "face_crop", "review_probe_crop",
})


@dataclasses.dataclass(frozen=True, slots=True)
class IndexPlan:
    """An image detected, embedded and checked for indexing, not yet stored (:meth:`Engine.prepare_index`):
    what :meth:`Engine.store_indexed` writes, and the refusals and checks its result reports."""

    external_image_id: str | None
    image_sha256: str
    person_id: str | None
    records: tuple[FaceRecord, ...]
    refused: tuple[Face, ...]
    faces_over_limit: int
    enrolment: tuple[EnrolmentCheck, ...]


class SearchResultList(list[SearchResult]):
    """The results of a search by image, one per searched face, and ``faces_over_limit``: faces of the image
    beyond ``EngineConfig.max_faces_per_image``, left out of an ``all_faces`` search. ``search_id``: the
    search's id (each result carries it too); ``log_entry``: where it is recorded (``seq``, ``hash``; None
    when nothing was recorded)."""

    def __init__(self, results: list[SearchResult], *, faces_over_limit: int = 0, search_id: str | None = None,
                 log_entry: dict[str, Any] | None = None) -> None:
        super().__init__(results)
        self.faces_over_limit = faces_over_limit
        self.search_id = search_id
        self.log_entry = log_entry


def _check_person_id(person_id: str) -> str:
    if not isinstance(person_id, str) or not _PERSON_ID.fullmatch(person_id):
        raise InvalidArgumentError(f"invalid person id {person_id!r}: use 1-128 letters, digits, '_', '.', '-', ':'")
    return person_id


def image_sha256(image: ImageInput) -> str:
    """sha256 of an image's encoded bytes (a file's content) or of an array's shape and pixels."""
    h = hashlib.sha256()
    if isinstance(image, np.ndarray):
        h.update(f"{image.shape}{image.dtype}".encode())
        h.update(np.ascontiguousarray(image).tobytes())
    elif isinstance(image, (bytes, bytearray, memoryview)):
        h.update(image)
    else:
        check_image_file(image)  # a FIFO or a device would block open() or never end
        try:
            with open(image, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            decode_image(image)  # raises the ImageDecodeError that names the problem
            raise
    return h.hexdigest()


def _close_stores(stores: dict[str, FaceStore], lock: threading.Lock) -> None:
    with lock:
        for store in stores.values():
            store.close()
        stores.clear()


class Engine:
    """A face recognition engine: models opened once, then used for any number of images.

    Images are a file path, encoded bytes (JPEG, PNG, ...), or an (H, W, 3) uint8 **RGB** numpy array
    (OpenCV users: convert BGR to RGB first). Settings come from ``config``, then keyword overrides
    (see :class:`facelens.EngineConfig`), e.g. ``Engine(threads=2, det_size=480)``.

    An Engine is safe to share between threads.

    Accountability: methods that change state or search take ``actor`` (:class:`facelens.Actor`, who is
    acting); given one, the action is recorded in the home's signed log (:meth:`record`) before the call
    returns. The HTTP service and the CLI always give one; the bare Python API records nothing unless told
    who acts. ``signed_log``: the log to record in (default: ``<home>/service/search-log.sqlite``, or the home's
    PostgreSQL database when ``$FACELENS_DATABASE`` or ``<home>/facelens.toml`` names one; opened on first
    use, signed with ``$FACELENS_LOG_SIGNING_KEY`` or the home's own signing key).
    """

    def __init__(self, config: EngineConfig | None = None, *, signed_log: SearchLog | None = None,
                 **overrides: Any) -> None:
        if config is None:
            config = EngineConfig.from_env(**overrides)
        elif overrides:
            import dataclasses

            config = dataclasses.replace(config, **overrides)
        self.config = config
        backend = open_backend(config.model, threads=config.threads)
        self.model_name: str = backend.name
        #: sha256 of the recogniser file: embeddings are comparable only between equal values.
        self.model_sha256: str = backend.model_sha256
        self.embedding_size: int = backend.recognizer.embedding_size
        self.licence: str = backend.licence
        self._calibration_path = backend.calibration_path
        self.backend: Backend | None = backend
        self._pipeline: Pipeline | None = Pipeline(backend, config)
        self._calibration: ScoreCalibration | None = None
        self.home = Path(config.home).expanduser() if config.home else default_home()
        self._stores: dict[str, FaceStore] = {}
        self._collection_calibrations: dict[str, ScoreCalibration] = {}
        self._stores_lock = threading.Lock()
        self._log = signed_log
        self._own_log = False  # whether close() closes it (this engine opened it)
        self._log_lock = threading.Lock()
        self.reviews = ReviewQueue(self)  # the review queue of investigations (accountability/review.py)
        # closes the stores (saving approximate indexes) on close(), garbage collection or exit, so
        # that short-lived engines (the CLI's) save what they wrote too
        self._finalizer = weakref.finalize(self, _close_stores, self._stores, self._stores_lock)
        log.info("engine opened: model %s (sha256 %s)", self.model_name, self.model_sha256[:12])

    # -- the record ----------------------------------------------------------------------------------

    @property
    def log(self) -> SearchLog:
        """The signed log this engine records actions in (opened on first use)."""
        with self._log_lock:
            if self._log is None:
                from .accountability.log import SearchLog

                self._log = SearchLog.open(self.home)
                self._own_log = True
            return self._log

    def record(self, actor: Actor | None, record: Mapping[str, Any]) -> LogEntry | None:
        """Append ``record`` (a JSON object naming its ``action``) to the signed log as done by ``actor``,
        durably, and return the entry; with no actor, nothing is recorded (None). Raises SearchLogError:
        an action that cannot be recorded must not be reported as done."""
        if actor is None:
            return None
        return self.log.append({**record, "actor": actor.to_dict(),
                                "key_id": actor.id if actor.kind == "key" else None})

    def _record_failed_after(self, actor: Actor | None, entry: LogEntry | None, exc: BaseException) -> None:
        """The call recorded in ``entry`` failed after its record was written: append ``action_failed`` so
        that the record does not look done (records.py). A log that cannot take it is logged here; the
        call raises its own error."""
        if entry is None:
            return
        try:
            self.record(actor, action_failed_record(entry.seq, entry.hash, str(entry.body.get("action")),
                                                    entry.body.get("collection"), exc))
        except FacelensError:
            log.exception("log entry %d (%s) failed after it was recorded, and its failure could not be recorded",
                          entry.seq, entry.body.get("action"))

    def _recorded_write(self, actor: Actor | None, write: Callable[[BeforeCommit | None], T],
                        record: Callable[[T], Mapping[str, Any]]) -> tuple[T, LogEntry | None]:
        """Run ``write(before_commit)``, a store write, recording ``record(result)`` inside its transaction
        just before it commits (no actor: no record): a record that cannot be written rolls the change back."""
        if actor is None:
            return write(None), None
        written: list[LogEntry] = []

        def before_commit(result: Any) -> None:
            entry = self.record(actor, record(result))
            if entry is not None:
                written.append(entry)

        try:
            result = write(before_commit)
        except BaseException as exc:
            self._record_failed_after(actor, written[0] if written else None, exc)
            raise
        return result, written[0] if written else None

    def _recorded_change(self, actor: Actor | None, record: Mapping[str, Any],
                         change: Callable[[], T]) -> tuple[T, LogEntry | None]:
        """Record, then make a change that no collection transaction holds (``action_failed`` follows the
        record if the change raises)."""
        entry = self.record(actor, record)
        try:
            return change(), entry
        except BaseException as exc:
            self._record_failed_after(actor, entry, exc)
            raise

    def _recorded_search(self, actor: Actor | None, purpose: str | None, *, action: str, collection: str,
                         probe: Mapping[str, Any], options: Mapping[str, Any],
                         run: Callable[[], Sequence[SearchResult]],
                         probe_crops: Sequence[bytes | None] = ()) -> tuple[list[SearchResult], LogEntry | None]:
        """Run a search and record it: its results, computed and committed (:func:`facelens.pipeline.commit_work`:
        a search cancelled before raises CancelledError, recorded as code ``timeout``), are recorded before
        they are returned; a failed attempt is recorded with its error, then raised. The results carry the
        search's id and log entry. An investigation on a collection whose policy requires review opens its
        review items (``probe_crops``: the searched faces' crops, filled by ``run``) in the transaction that
        records it, with the items in the record (:meth:`ReviewQueue.open`)."""
        search_id = new_id()
        fields: dict[str, Any] = {"action": action, "search_id": search_id, "purpose": purpose,
                                  "collection": collection, "probe": probe, "options": options}
        try:
            results = list(run())
            if actor is not None:  # (a search inside a recorded call, a video's, leaves the commit to it)
                commit_work()
        except FacelensError as exc:
            self.record(actor, search_record(**fields, results=[], error=exc))
            raise
        if results and results[0].mode is SearchMode.INVESTIGATE:
            opened = self.reviews.open(collection, results, actor=actor, purpose=purpose, search_id=search_id,
                                       record=lambda shown: search_record(**fields, results=shown),
                                       probe_crops=probe_crops)
            if opened is not None:
                return opened
        record = search_record(**fields, results=results)
        entry = self.record(actor, record)
        ref = _ref(entry)
        return [dataclasses.replace(r, search_id=search_id, log_entry=ref) for r in results], entry

    def _receipt(self, receipt_id: str, collection: str, person_id: str | None, done: Erased,
                 actor: Actor | None, entry: LogEntry | None) -> ErasureReceipt:
        counts = {"faces": len(done.face_ids), "crops": done.crops,
                  "review_items_withdrawn": len(done.review_items_withdrawn), "probe_crops": done.probe_crops}
        vectors = {"store": done.vector_store, "bytes_gone": done.vectors_gone, "how": done.vectors_note}
        return ErasureReceipt(receipt_id=receipt_id, collection=collection, person_id=person_id,
                              face_ids=tuple(done.face_ids), counts=counts,
                              erased_at=str(entry.body["time"]) if entry is not None else now(), actor=actor,
                              log_entry=_ref(entry), vectors=vectors)

    # -- what this engine is ----------------------------------------------------------------------

    @property
    def calibration(self) -> ScoreCalibration:
        """The impostor-score table used to turn scores into false-match rates (loaded on first use)."""
        if self._calibration is None:
            path = self._calibration_path
            if path is None:
                raise CalibrationError(
                    f"model {self.model_name!r} has no calibration: false-match rates cannot be given. "
                    f"Measure one on labelled photos (docs/models.md) and name it in the manifest.")
            self._calibration = load_calibration(path, model_sha256=self.model_sha256)
        return self._calibration

    # -- faces ------------------------------------------------------------------------------------
    def detect(self, image: ImageInput, *, max_faces: int | None = None,
               quality_filter: QualityFilter | str | None = None, pad_retry: bool = True) -> FaceList:
        """All faces in the image, largest first, without embeddings.

        ``max_faces`` keeps only the largest ones. ``quality_filter`` (default: the engine's) decides
        which ``refusal_reasons`` each face gets. At most ``config.max_faces_per_image`` (100) faces are
        returned, the largest; the list's ``faces_over_limit`` counts those left out. ``pad_retry``: when
        nothing is found, look again on the image padded to twice its size, for a face that fills the
        frame (an ID-photo crop); turn it off for video frames, where most face-less frames are empty.
        This is the pipeline's detect step; :meth:`embed_faces` is its align+embed step.
        """
        return self._faces(image, embed=False, max_faces=max_faces, quality_filter=quality_filter,
                           pad_retry=pad_retry)

    def analyze(self, image: ImageInput, *, max_faces: int | None = None,
                quality_filter: QualityFilter | str | None = None) -> FaceList:
        """Like :meth:`detect`, with each face's embedding: (d,) float32, unit length."""
        return self._faces(image, embed=True, max_faces=max_faces, quality_filter=quality_filter)

    def embed(self, image: ImageInput) -> npt.NDArray[np.float32]:
        """The embedding of the largest face; raises :class:`NoFaceError` when there is none."""
        return self._largest_face(image).embedding  # type: ignore[return-value]

    def _faces(self, image: ImageInput, *, embed: bool, max_faces: int | None,
               quality_filter: QualityFilter | str | None, embed_acceptable: int | None = None,
               pad_retry: bool = True, decoded: npt.NDArray[np.uint8] | None = None) -> FaceList:
        """The faces of ``image`` (``decoded``: its pixels, already decoded by the caller)."""
        if max_faces is not None and max_faces < 1:
            raise InvalidArgumentError(f"max_faces must be >= 1, got {max_faces}")
        qf = None if quality_filter is None else QualityFilter.parse(quality_filter)
        if self._pipeline is None:
            raise FacelensError("this engine is closed; open a new facelens.Engine")
        rgb = decode_image(image, max_pixels=self.config.max_pixels) if decoded is None else decoded
        return self._pipeline.faces(rgb, embed=embed, max_faces=max_faces, quality_filter=qf,
                                    embed_acceptable=embed_acceptable, pad_retry=pad_retry)

    def embed_faces(self, image: ImageInput, faces: list[Face]) -> FaceList:
        """The align+embed step: ``faces`` found in ``image`` by :meth:`detect`, each with its embedding
        ((d,) float32, unit length), in the same order. Checks cancellation between batches."""
        if self._pipeline is None:
            raise FacelensError("this engine is closed; open a new facelens.Engine")
        rgb = decode_image(image, max_pixels=self.config.max_pixels)
        return FaceList(self._pipeline.embed_faces(rgb, faces))

    def _largest_face(self, image: ImageInput, decoded: npt.NDArray[np.uint8] | None = None) -> Face:
        faces = self._faces(image, embed=True, max_faces=1, quality_filter=None, decoded=decoded)
        if not faces:
            raise NoFaceError("no face found in the image", source=describe_source(image))
        return faces[0]

    # -- comparison -------------------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        return self.config.policy  # type: ignore[return-value]

    def operating_point(self, *, max_fmr: float | None = None, max_fpir: float | None = None,
                        collection_size: int | None = None, min_score: float | None = None,
                        calibration: ScoreCalibration | None = None) -> OperatingPoint:
        """The threshold for a target rate, and what it stands for.

        Give at most one of: ``max_fmr`` (per-comparison false-match rate), ``max_fpir`` (the chance that a
        search of ``collection_size`` faces for someone absent returns any candidate; converted to a
        per-comparison rate as ``1 - (1 - max_fpir)^(1/N)``), or ``min_score`` (a raw cosine threshold,
        reported with the false-match rate it stands for). With none, ``config.max_fmr`` (or
        ``config.max_fpir`` when ``collection_size`` is given: a search).
        """
        cal = calibration or self.calibration
        given = [v is not None for v in (max_fmr, max_fpir, min_score)]
        if sum(given) > 1:
            raise InvalidArgumentError("give at most one of max_fmr, max_fpir and min_score")
        if min_score is not None:
            if not -1.0 <= float(min_score) <= 1.0:
                raise InvalidArgumentError(f"min_score must be a cosine score in [-1, 1], got {min_score}")
            rate, extrapolated, curve = cal.fmr_detail(float(min_score), self.policy)
            return OperatingPoint(threshold=float(min_score), max_fmr=rate, policy=self.policy,
                                  extrapolated=extrapolated, limited_by=curve, calibration=cal.name,
                                  collection_size=collection_size)
        if max_fmr is None and collection_size is not None:
            max_fpir = self.config.max_fpir if max_fpir is None else max_fpir
        if max_fpir is not None:
            if collection_size is None:
                raise InvalidArgumentError("max_fpir applies to searches: it needs the collection's size")
            max_fmr = fpir_to_fmr(float(max_fpir), collection_size)
        max_fmr = check_fmr(self.config.max_fmr if max_fmr is None else max_fmr)
        threshold, extrapolated, curve = cal.threshold_detail(max_fmr, self.policy)
        return OperatingPoint(threshold=threshold, max_fmr=max_fmr, policy=self.policy, extrapolated=extrapolated,
                              limited_by=curve, calibration=cal.name,
                              max_fpir=None if max_fpir is None else float(max_fpir), collection_size=collection_size)

    def threshold(self, max_fmr: float | None = None) -> float:
        """The score above which two faces match at false-match rate ``max_fmr`` (default: config)."""
        return self.operating_point(max_fmr=max_fmr).threshold

    def fmr(self, score: float) -> tuple[float, bool]:
        """False-match rate at ``score`` under the engine's policy, and whether it is extrapolated."""
        return self.calibration.fmr(score, self.policy)

    def compare(self, image_a: ImageInput, image_b: ImageInput, *, max_fmr: float | None = None,
                actor: Actor | None = None, purpose: str | None = None) -> Comparison:
        """Compare the largest face of each image.

        Returns the cosine score, the false-match rate that score stands for (how often two different
        people score this high), and ``match``: whether that rate is at most ``max_fmr`` (default
        ``config.max_fmr`` = 1e-5, one in 100,000). Raises :class:`NoFaceError` naming the image without
        a face. Given an ``actor``, the compare is recorded (the images' sha256, the outcome, ``purpose``;
        a failed one with its error) before it returns, and ``log_entry`` says where.
        """
        purpose = _purpose(purpose)
        a_sha, b_sha = (_probe_sha256(image_a), _probe_sha256(image_b)) if actor is not None else (None, None)
        fields: dict[str, Any] = {"purpose": purpose, "image_a_sha256": a_sha, "image_b_sha256": b_sha,
                                  "options": {} if max_fmr is None else {"max_fmr": max_fmr}}
        try:
            self.operating_point(max_fmr=max_fmr)  # refuse a bad max_fmr before running models
            result = self.compare_faces(self._largest_face(image_a), self._largest_face(image_b), max_fmr=max_fmr)
            commit_work()
        except FacelensError as exc:
            self.record(actor, compare_record(**fields, result=None, error=exc))
            raise
        entry = self.record(actor, compare_record(**fields, result=result))
        return result if entry is None else dataclasses.replace(result, log_entry=_ref(entry))

    def compare_faces(self, face_a: Face, face_b: Face, *, max_fmr: float | None = None) -> Comparison:
        """Compare two faces already analysed by this engine (see :meth:`compare`)."""
        if face_a.embedding is None or face_b.embedding is None:
            raise InvalidArgumentError("compare_faces needs faces with embeddings (use analyze, not detect)")
        if face_a.embedding.shape != (self.embedding_size,) or face_b.embedding.shape != (self.embedding_size,):
            raise InvalidArgumentError(
                f"embeddings must be {self.embedding_size}-d vectors of model {self.model_name!r}")
        op = self.operating_point(max_fmr=max_fmr)
        score = float(np.dot(face_a.embedding, face_b.embedding))
        fmr, extrapolated = self.calibration.fmr(score, self.policy)
        return Comparison(score=score, fmr=fmr, fmr_extrapolated=extrapolated, match=score >= op.threshold,
                          operating_point=op, face_a=face_a, face_b=face_b)

    # -- collections ------------------------------------------------------------------------------
    def _open_store(self, name: str) -> FaceStore:
        """The collection's store, opened once per engine and reopened when the collection of that
        name is no longer the one opened (deleted, or deleted and created again, by any process)."""
        path = collection_dir(self.home, name)
        stale = None
        try:
            with self._stores_lock:
                store = self._stores.get(name)
                if store is not None and not store.is_current():
                    stale, store = self._stores.pop(name), None
                    self._collection_calibrations.pop(name, None)
                if store is None:
                    store = FaceStore.open(path, name=name)
                    self._stores[name] = store
        finally:
            if stale is not None:
                stale.close()  # saves nothing: it no longer owns the collection
        return store

    def list_persons_page(self, collection: str, *, limit: int = 100,
                          after: str | None = None) -> tuple[list[tuple[str, int]], str | None]:
        """One page of persons with their face counts, sorted by id, after the person ``after``; and the
        ``after`` of the next page (None at the end). For lists that must not read a whole collection."""
        return self._store(collection).list_persons_page(limit=limit, after=after)

    def _store(self, name: str) -> FaceStore:
        """The collection's store, refusing one bound to another model."""
        store = self._open_store(name)
        meta = store.meta
        if meta["model_sha256"] != self.model_sha256:
            raise ModelMismatchError(
                f"collection {name!r} holds faces of model {meta['model_name']!r} (sha256 "
                f"{meta['model_sha256'][:12]}...); this engine runs {self.model_name!r} (sha256 "
                f"{self.model_sha256[:12]}...). Open the engine with model={meta['model_name']!r}.")
        return store

    def create_collection(self, name: str, *, calibration: str | Path | None = None,
                          lead_floor_fmr: float | None = None,
                          policy: CollectionPolicy | Mapping[str, Any] | None = None,
                          actor: Actor | None = None, store: str | None = None) -> CollectionInfo:
        """Create an empty collection bound to this engine's model; raises CollectionExistsError.

        ``calibration``: a calibration profile (``facelens calibrate``) for this collection's searches,
        copied into the collection; by default the model's shipped profile is used. ``lead_floor_fmr``: the
        collection's lead floor for investigations (default :data:`DEFAULT_LEAD_FLOOR_FMR`; see
        :meth:`set_lead_floor`). ``policy``: its rules (:class:`facelens.CollectionPolicy` or a mapping of
        its fields; default: the defaults), written with the collection, never after it. Given an
        ``actor``, ``collection_created`` is recorded before the collection appears. ``store``: where its
        vectors are kept, ``faiss`` (default), ``milvus-lite`` or ``milvus://HOST:PORT`` (default: the
        environment's ``FACELENS_VECTOR_STORE``; docs/scale-out.md).
        """
        store_uri = store if store is not None else default_store()
        if lead_floor_fmr is not None:
            lead_floor_fmr = check_fmr(lead_floor_fmr, "lead_floor_fmr")
        rules = policy if isinstance(policy, CollectionPolicy) else CollectionPolicy.from_dict(policy or {})
        extra = {POLICY_META_KEY: rules.to_json()}
        if lead_floor_fmr is not None:
            extra["lead_floor_fmr"] = repr(lead_floor_fmr)
        profile = None
        if calibration is not None:
            profile = load_calibration(calibration, model_sha256=self.model_sha256)
            profile.require_supports(self.config.max_fmr)  # a profile too small for the compare default refuses
        path = collection_dir(self.home, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        own = profile  # (bound for the closure: mypy cannot narrow a variable captured by a lambda)
        written: list[LogEntry] = []

        def prepare(folder: Path) -> None:
            if own is not None:
                own.save(folder / COLLECTION_CALIBRATION)
            entry = self.record(actor, collection_created_record(  # before the collection is renamed into place
                name, policy=rules.to_dict(), lead_floor_fmr=lead_floor_fmr, calibration=own.name if own else None))
            written.extend([entry] if entry is not None else [])

        try:
            opened = FaceStore.create(path, name=name, model_name=self.model_name, model_sha256=self.model_sha256,
                                      dim=self.embedding_size, calibration=profile.name if profile else None,
                                      prepare=prepare, extra_meta=extra, store=store_uri)
        except BaseException as exc:
            self._record_failed_after(actor, written[0] if written else None, exc)
            raise
        with self._stores_lock:
            stale = self._stores.pop(name, None)  # a deleted collection's store (deleted elsewhere)
            self._collection_calibrations.pop(name, None)
            self._stores[name] = opened
        if stale is not None:
            stale.close()
        return self.describe_collection(name)

    def collection_calibration(self, name: str) -> ScoreCalibration:
        """The calibration profile a collection's searches use (its own, else the model's)."""
        store = self._store(name)
        path = store.path / COLLECTION_CALIBRATION
        if not path.is_file():
            return self.calibration
        with self._stores_lock:
            cal = self._collection_calibrations.get(name)
            if cal is None:
                cal = load_calibration(path, model_sha256=self.model_sha256)
                self._collection_calibrations[name] = cal
        return cal

    def list_collections(self) -> list[str]:
        """Names of the collections in this engine's home folder, sorted."""
        return list_collection_names(self.home)

    def describe_collection(self, name: str) -> CollectionInfo:
        """Face and person counts, the model the collection is bound to, its index type, when created, its
        lead floor and its policy."""
        store = self._open_store(name)
        m = store.meta
        own = m.get("calibration") or ""
        return CollectionInfo(name=name, face_count=store.face_count(), person_count=store.person_count(),
                              model_name=m["model_name"], model_sha256=m["model_sha256"],
                              index_factory=store.index_factory, created=m["created"],
                              calibration=own or (self.calibration.name if self._calibration_path else ""),
                              generation=store.generation, lead_floor_fmr=_lead_floor(store),
                              policy=CollectionPolicy.from_json(store.policy_json()).to_dict(),
                              vector_store=store.vector_store)

    def collection_policy(self, name: str) -> CollectionPolicy:
        """The collection's policy now (as another process may just have changed it); raises
        CollectionNotFoundError."""
        return CollectionPolicy.from_json(self._store(name).policy_json())

    def set_collection_policy(self, name: str, changes: CollectionPolicy | Mapping[str, Any], *,
                              actor: Actor | None = None) -> CollectionPolicy:
        """Change the collection's policy (a whole :class:`CollectionPolicy`, or a mapping of the fields to
        change) and record ``policy_changed`` with the policy before and after; returns the new policy.
        Who may change it is the entry point's rule (the service: admin keys only)."""
        store = self._store(name)
        before = CollectionPolicy.from_json(store.policy_json())
        after = changes if isinstance(changes, CollectionPolicy) else before.replace(**dict(changes))
        self.record(actor, {"action": "policy_changed", "collection": name, "purpose": None,
                            "before": before.to_dict(), "after": after.to_dict()})
        store.set_policy_json(after.to_json())
        return after

    def collection_generation(self, name: str) -> str:
        """The identity of the collection named ``name`` now (a new one each time a collection of that
        name is created); raises CollectionNotFoundError. Key grants are bound to it."""
        return collection_generation(self.home, name)

    def delete_collection(self, name: str, *, actor: Actor | None = None) -> None:
        """Delete a collection and everything in it, for every process at once; raises
        CollectionNotFoundError. Other engines (threads, processes) holding it open get
        CollectionNotFoundError from their next call on it (or, once a collection of that name is
        created again, that new collection); none of their writes outlives the deletion unnoticed.
        Given an ``actor``, ``collection_deleted`` (its face and person counts just before) is recorded
        before the deletion."""
        path = collection_dir(self.home, name)
        record: dict[str, Any] = {}
        if actor is not None:
            info = self.describe_collection(name)  # an unknown collection raises before anything is recorded
            record = collection_deleted_record(name, face_count=info.face_count, person_count=info.person_count)

        def delete() -> None:
            with self._stores_lock:
                store = self._stores.pop(name, None)
                self._collection_calibrations.pop(name, None)
                if store is not None:
                    store.close(save=False)
                FaceStore.delete(path, name=name)

        self._recorded_change(actor, record, delete)

    def check_collection(self, name: str, *, repair: bool = False) -> CheckReport:
        """Compare the vector index with the metadata (the truth); ``repair`` rebuilds it if they differ."""
        return self._store(name).check(repair=repair)

    def index_faces(
        self,
        collection: str,
        image: ImageInput,
        *,
        external_image_id: str | None = None,
        person_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: QualityFilter | str | None = None,
        all_faces: bool = False,
        enrol_max_fmr: float | None = None,
        match_check: bool = True,
        actor: Actor | None = None,
    ) -> IndexResult:
        """Detect the faces of an image and store those that pass the quality filter.

        Indexed for a person (``person_id``), only the image's largest face is given to them: the others
        are refused (``NOT_THE_LARGEST_FACE``; ``all_faces=True`` offers every face), and a face offered is
        refused (``NO_MATCH_WITH_PERSON``) unless it matches one of the person's faces already stored at
        per-comparison false-match rate ``enrol_max_fmr`` (default :data:`DEFAULT_ENROL_MAX_FMR`, under the
        collection's calibration); ``match_check=False`` skips that check, and the result says so.
        ``enrolment`` in the result reports each check (best score, threshold).

        Faces refused by the filter, and acceptable faces beyond the ``max_faces`` largest, are returned in
        ``unindexed`` with their reasons; only the faces stored are embedded. Faces beyond
        ``config.max_faces_per_image`` (100) are not examined, only counted (``faces_over_limit``).
        Indexing the same image under the same ``external_image_id`` again stores nothing new
        (``already_indexed``). When this returns, the faces are durably stored; work cancelled (see
        :func:`facelens.pipeline.cancellable`) before the write stores nothing. Given an ``actor``,
        ``faces_indexed`` (the image's sha256, the face ids, the person, the refusals' reasons; no box, no
        external id) is recorded in the write's transaction: faces are never stored unrecorded.

        :meth:`prepare_index` and :meth:`store_indexed` are its two halves, for storing many images in
        one transaction.
        """
        done = self.prepare_index(collection, image, external_image_id=external_image_id, person_id=person_id,
                                  max_faces=max_faces, quality_filter=quality_filter, all_faces=all_faces,
                                  enrol_max_fmr=enrol_max_fmr, match_check=match_check, actor=actor)
        if isinstance(done, IndexResult):
            return done
        return self.store_indexed(collection, [done], actor=actor)[0]

    def prepare_index(
        self,
        collection: str,
        image: ImageInput,
        *,
        external_image_id: str | None = None,
        person_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: QualityFilter | str | None = None,
        all_faces: bool = False,
        enrol_max_fmr: float | None = None,
        match_check: bool = True,
        actor: Actor | None = None,
    ) -> IndexResult | IndexPlan:
        """The first half of :meth:`index_faces` (whose docstring gives the rules): everything but the write.
        Returns the :class:`IndexPlan` to hand to :meth:`store_indexed` (detected, embedded, checked;
        nothing stored), or the :class:`~facelens.types.IndexResult` when there is nothing to store: the
        image is already indexed (recorded as such with an ``actor``), or its person's faces refused them
        all (recorded). Nothing is durable until :meth:`store_indexed` returns."""
        if external_image_id is not None and not _EXTERNAL_ID.fullmatch(external_image_id):
            raise InvalidArgumentError("external_image_id must be 1-255 printable characters")
        if person_id is not None:
            _check_person_id(person_id)
        if max_faces is not None and max_faces < 1:
            raise InvalidArgumentError(f"max_faces must be >= 1, got {max_faces}")
        enrol_fmr = _check_enrolment(person_id, all_faces=all_faces, enrol_max_fmr=enrol_max_fmr,
                                     match_check=match_check)
        store = self._store(collection)
        digest = image_sha256(image)
        existing = store.find_image(external_image_id=external_image_id, image_sha256=digest)
        if existing is not None:
            self.record(actor, faces_indexed_record(collection, image_sha256=digest, person_id=person_id, refused=[],
                                                    face_ids=[f.face_id for f in existing], already_indexed=True))
            return IndexResult(indexed=tuple(f.to_dict() for f in existing), unindexed=(), already_indexed=True)
        one = person_id is not None and not all_faces  # only the largest face can be stored
        rgb = decode_image(image, max_pixels=self.config.max_pixels)
        faces = self._faces(image, embed=False, max_faces=None, quality_filter=quality_filter,
                            embed_acceptable=1 if one else max_faces or self.config.max_faces_per_image,
                            decoded=rgb)
        plan = self._plan(collection, store, list(faces), external_image_id=external_image_id, image_sha256=digest,
                          person_id=person_id, max_faces=max_faces, all_faces=all_faces, enrol_fmr=enrol_fmr,
                          match_check=match_check, faces_over_limit=faces.faces_over_limit,
                          crop=lambda f: crop_of(rgb, f.bbox.as_list()), actor=actor)
        if isinstance(plan, IndexPlan):
            commit_work()  # the last point where a cancelled call leaves no trace; past it, the faces are stored
        return plan

    def _plan(self, collection: str, store: FaceStore, faces: list[Face], *, external_image_id: str | None,
              image_sha256: str, person_id: str | None, max_faces: int | None, all_faces: bool, enrol_fmr: float,
              match_check: bool, faces_over_limit: int, crop: Callable[[Face], bytes | None],
              actor: Actor | None) -> IndexResult | IndexPlan:
        """The indexing rules applied to an image's ``faces`` (largest first): quality refusals, ``max_faces``,
        a person's largest face and match check. Returns what to store, or the (recorded) result when a
        person's checks refused every face: nothing stored, not even the image, which may be offered again.
        ``crop(face)``: its JPEG crop, kept when the collection's policy says so. Shared by
        :meth:`prepare_index` and :meth:`index_embedded`."""
        accepted = [f for f in faces if f.acceptable]
        refused = [f for f in faces if not f.acceptable]
        if max_faces is not None and len(accepted) > max_faces:
            refused += [_refuse(f, RefusalReason.EXCEEDS_MAX_FACES) for f in accepted[max_faces:]]
            accepted = accepted[:max_faces]
        checks: tuple[EnrolmentCheck, ...] = ()
        if person_id is not None:
            if not all_faces:  # the person's face is the image's largest (faces come largest first), if acceptable
                largest = faces[0] if faces else None
                refused = ([f if f is largest else _refuse(f, RefusalReason.NOT_THE_LARGEST_FACE) for f in refused]
                           + [_refuse(f, RefusalReason.NOT_THE_LARGEST_FACE) for f in accepted if f is not largest])
                accepted = [f for f in accepted if f is largest]
            if any(f.embedding is None for f in accepted):
                raise InvalidArgumentError(f"{external_image_id or image_sha256}: a face to store has no embedding")
            checks = self._enrolment_checks(collection, store, person_id, accepted, max_fmr=enrol_fmr,
                                            checked=match_check)
            refused += [_refuse(f, RefusalReason.NO_MATCH_WITH_PERSON)
                        for f, c in zip(accepted, checks, strict=True) if not c.passed]
            accepted = [f for f, c in zip(accepted, checks, strict=True) if c.passed]
            if not accepted and checks:  # nothing stored, not even the image: it may be offered again (rightly)
                self.record(actor, {**faces_indexed_record(
                    collection, image_sha256=image_sha256, face_ids=[], person_id=person_id, already_indexed=False,
                    refused=[f.refusal_reasons for f in refused]), "enrolment": [c.to_record() for c in checks]})
                return IndexResult(indexed=(), unindexed=tuple(refused), already_indexed=False,
                                   faces_over_limit=faces_over_limit, enrolment=checks)
        if any(f.embedding is None for f in accepted):
            raise InvalidArgumentError(f"{external_image_id or image_sha256}: a face to store has no embedding")
        crops = self.collection_policy(collection).face_crops  # a small JPEG per face, for reviewers
        records = [FaceRecord(bbox=f.bbox.as_list(), score=f.score, embedding=f.embedding,  # type: ignore[arg-type]
                              quality={**f.to_dict()["quality"], "pose": f.to_dict()["pose"]},
                              crop=crop(f) if crops else None)
                   for f in accepted]
        return IndexPlan(external_image_id, image_sha256, person_id, tuple(records), tuple(refused),
                         faces_over_limit, checks)

    def store_indexed(self, collection: str, plans: Sequence[IndexPlan], *,
                      actor: Actor | None = None) -> list[IndexResult]:
        """Store the faces of images already detected and embedded (:meth:`prepare_index`)
        in one transaction of the collection, all or none: with an ``actor``, each image's ``faces_indexed``
        record is written inside it, just before it commits. When this returns, every image is durably
        stored; when it raises, none is. For indexing many images: one commit for a batch, not one per image.
        """
        store = self._store(collection)

        def write(hook: BeforeCommit | None) -> list[tuple[list[StoredFace], bool]]:
            return store.add_images([(p.external_image_id, p.image_sha256, p.person_id, p.records) for p in plans],
                                    before_commit=hook)

        def record(plan: IndexPlan, out: tuple[list[StoredFace], bool]) -> dict[str, Any]:
            rec = faces_indexed_record(collection, image_sha256=plan.image_sha256,
                                       face_ids=[f.face_id for f in out[0]], person_id=plan.person_id,
                                       refused=[f.refusal_reasons for f in plan.refused], already_indexed=not out[1])
            # with a person: how each face was checked against theirs (an override, match_check=False, shows)
            return ({**rec, "enrolment": [c.to_record() for c in plan.enrolment]} if plan.person_id is not None
                    else rec)

        if actor is None:
            outs = write(None)
        else:
            written: list[LogEntry] = []

            def before_commit(results: list[tuple[list[StoredFace], bool]]) -> None:
                for plan, out in zip(plans, results, strict=True):
                    entry = self.record(actor, record(plan, out))
                    if entry is not None:
                        written.append(entry)

            try:
                outs = write(before_commit)
            except BaseException as exc:
                for entry in written:  # recorded, then rolled back: each record is followed by its failure
                    self._record_failed_after(actor, entry, exc)
                raise
        return [IndexResult(indexed=tuple(f.to_dict() for f in stored), unindexed=plan.refused,
                            already_indexed=not added, faces_over_limit=plan.faces_over_limit,
                            enrolment=plan.enrolment)
                for plan, (stored, added) in zip(plans, outs, strict=True)]

    def _enrolment_checks(self, collection: str, store: FaceStore, person_id: str, offered: list[Face], *,
                          max_fmr: float, checked: bool) -> tuple[EnrolmentCheck, ...]:
        """Check each face ``offered`` to a person against the person's stored faces: it passes when its best
        score against them reaches the threshold of ``max_fmr`` (or nothing is stored, or ``checked`` is off)."""
        if not offered:
            return ()
        face_ids, stored = store.person_embeddings(person_id)
        threshold = None
        if checked and face_ids:
            threshold = self.operating_point(max_fmr=max_fmr, calibration=self.collection_calibration(collection)
                                             ).threshold
        out = []
        for face in offered:
            best_score = best_id = None
            if threshold is not None:
                assert face.embedding is not None
                scores = stored @ face.embedding
                best = int(np.argmax(scores))
                best_score, best_id = float(scores[best]), face_ids[best]
            out.append(EnrolmentCheck(person_id=person_id, bbox=tuple(face.bbox.as_list()), checked=checked,
                                      existing_faces=len(face_ids), max_fmr=max_fmr, threshold=threshold,
                                      best_score=best_score, best_face_id=best_id,
                                      passed=threshold is None
                                      or (best_score is not None and best_score >= threshold)))
        return tuple(out)

    def index_embedded(
        self,
        collection: str,
        images: Sequence[EmbeddedImage],
        *,
        person_id: str | None = None,
        max_faces: int | None = None,
        all_faces: bool = False,
        enrol_max_fmr: float | None = None,
        match_check: bool = True,
        actor: Actor | None = None,
    ) -> list[IndexResult]:
        """Commit images whose faces were found and embedded elsewhere (:func:`facelens.scale.embed_image`, on
        a Ray worker say) as :meth:`index_faces` commits one image: the same rules (quality refusals carried
        from the worker, ``max_faces``, a person's largest face and match check), the same idempotency (an
        image already stored under the same external id and sha256 stores nothing, ``already_indexed``), the
        same ``faces_indexed`` record per image, written in the write's transaction. Returns one
        :class:`IndexResult` per image, in order.

        The images are committed in ONE transaction (all or none; for a person, one per image, so that each
        match check sees the faces stored before it); when this returns they are durably stored. Raises
        :class:`ModelMismatchError` for faces embedded by another model than this engine's, and
        InvalidArgumentError for a face to store without an embedding.
        """
        if person_id is not None:
            _check_person_id(person_id)
        if max_faces is not None and max_faces < 1:
            raise InvalidArgumentError(f"max_faces must be >= 1, got {max_faces}")
        enrol_fmr = _check_enrolment(person_id, all_faces=all_faces, enrol_max_fmr=enrol_max_fmr,
                                     match_check=match_check)
        for im in images:
            if im.external_image_id is not None and not _EXTERNAL_ID.fullmatch(im.external_image_id):
                raise InvalidArgumentError(f"{im.source}: external_image_id must be 1-255 printable characters")
            if im.model_sha256 != self.model_sha256:
                raise ModelMismatchError(f"{im.source}: its faces were embedded by model sha256 "
                                         f"{im.model_sha256[:12]}...; this engine runs {self.model_name!r} "
                                         f"(sha256 {self.model_sha256[:12]}...): run the workers with the same model")
        if person_id is not None and len(images) > 1:
            return [r for im in images for r in self.index_embedded(
                collection, [im], person_id=person_id, max_faces=max_faces, all_faces=all_faces,
                enrol_max_fmr=enrol_max_fmr, match_check=match_check, actor=actor)]
        store = self._store(collection)
        results: list[IndexResult | IndexPlan] = []
        for im in images:
            existing = store.find_image(external_image_id=im.external_image_id, image_sha256=im.image_sha256)
            if existing is not None:
                self.record(actor, faces_indexed_record(
                    collection, image_sha256=im.image_sha256, person_id=person_id, refused=[],
                    face_ids=[f.face_id for f in existing], already_indexed=True))
                results.append(IndexResult(indexed=tuple(f.to_dict() for f in existing), unindexed=(),
                                           already_indexed=True))
                continue
            faces = list(im.faces)
            crops: dict[int, bytes | None] = {id(f): c for f, c in zip(faces, im.crops, strict=False)}

            def worker_crop(face: Face, crops: dict[int, bytes | None] = crops) -> bytes | None:
                return crops.get(id(face))  # the worker's crop of this face (it has the pixels)

            results.append(self._plan(collection, store, faces, external_image_id=im.external_image_id,
                                      image_sha256=im.image_sha256, person_id=person_id, max_faces=max_faces,
                                      all_faces=all_faces, enrol_fmr=enrol_fmr, match_check=match_check,
                                      faces_over_limit=im.faces_over_limit,
                                      crop=worker_crop, actor=actor))
        plans = [r for r in results if isinstance(r, IndexPlan)]
        if not plans:
            return [r for r in results if isinstance(r, IndexResult)]
        commit_work()  # the last point where a cancelled call leaves no trace; past it, the faces are stored
        stored = iter(self.store_indexed(collection, plans, actor=actor))
        return [next(stored) if isinstance(r, IndexPlan) else r for r in results]


    def list_faces(self, collection: str, *, limit: int = 100,
                   next_token: str | None = None) -> tuple[list[StoredFace], str | None]:
        """One page of stored faces, oldest first, and the token of the next page (None at the end)."""
        return self._store(collection).list_faces(limit=limit, after=next_token)

    def delete_faces(self, collection: str, face_ids: list[str], *, actor: Actor | None = None) -> list[str]:
        """Delete faces by id; returns those that existed. A deleted face is never returned by a search.
        :meth:`erase_faces` does the same and returns the erasure's receipt."""
        return list(self.erase_faces(collection, face_ids, actor=actor).face_ids)

    def erase_faces(self, collection: str, face_ids: Sequence[str], *, actor: Actor | None = None) -> ErasureReceipt:
        """Erase faces by id (their embeddings and every copy on disk; unknown ids are ignored) and return
        the :class:`~facelens.accountability.records.ErasureReceipt` naming those erased. Given an ``actor``,
        ``faces_deleted`` (the ids, the receipt's id) is recorded in the erasure's transaction."""
        store = self._store(collection)
        receipt_id = new_id()
        done, entry = self._recorded_write(
            actor, lambda hook: store.erase_faces(list(face_ids), before_commit=hook),
            lambda d: {**faces_deleted_record(collection, face_ids=d.face_ids, receipt_id=receipt_id),
                       "review_items_withdrawn": list(d.review_items_withdrawn)})
        return self._receipt(receipt_id, collection, None, done, actor, entry)

    def _ranked(self, store: FaceStore, queries: npt.NDArray[np.float32], *, k: int, op: OperatingPoint,
                calibration: ScoreCalibration, mode: SearchMode, exclude: str | None = None) -> list[list[Match]]:
        """Per query, the ``k`` best stored faces (``exclude`` left out) scoring at least the operating
        point's threshold, best first, each with the false-match rate of its score.

        An investigation's list must hold the true ``k`` best (the store's slower candidate-list plan:
        recall@10 0.989 against exact search at 1M, BENCHMARKS.md); an identification returns only faces
        above a strict threshold, far above strangers, which the 1-result plan finds as fast as one."""
        out = []
        listing = mode is SearchMode.INVESTIGATE
        for hits in store.search(queries, k + (1 if exclude else 0), candidate_list=listing):
            matches = []
            for stored, score in hits:
                if score < op.threshold or stored.face_id == exclude:
                    continue
                fmr, extrapolated = calibration.fmr(score, self.policy)
                matches.append(Match(face_id=stored.face_id, external_image_id=stored.external_image_id,
                                     person_id=stored.person_id, score=score, fmr=fmr, fmr_extrapolated=extrapolated,
                                     bbox=stored.bbox))
            out.append(matches[:k])
        return out

    def lead_floor(self, collection: str) -> float:
        """The collection's lead floor: the per-comparison false-match rate whose threshold an investigation's
        candidates must reach (:data:`DEFAULT_LEAD_FLOOR_FMR` unless set at creation or by
        :meth:`set_lead_floor`)."""
        return _lead_floor(self._store(collection))

    def set_lead_floor(self, collection: str, lead_floor_fmr: float, *, actor: Actor | None = None) -> float:
        """Set the collection's lead floor (a false-match rate in (0, 1]; stored in the collection, seen by
        every process from its next search); returns it. Given an ``actor``, ``lead_floor_changed`` (before,
        after) is recorded first."""
        if isinstance(lead_floor_fmr, bool) or not isinstance(lead_floor_fmr, (int, float)):
            raise InvalidArgumentError(f"lead_floor_fmr must be a rate in (0, 1], got {lead_floor_fmr!r}")
        value = check_fmr(lead_floor_fmr, "lead_floor_fmr")
        store = self._store(collection)
        record = lead_floor_changed_record(collection, before=_lead_floor(store), after=value)
        self._recorded_change(actor, record, lambda: store.set_lead_floor_fmr(repr(value)))
        return value

    def _search_setup(self, collection: str, *, mode: SearchMode | str, max_fmr: float | None,
                      max_fpir: float | None, min_score: float | None, max_results: int | None,
                      max_candidates: int | None, purpose: str | None = None, looks: int = 1,
                      rate_given: bool = True) -> _Search:
        """Check a search's options for its mode and the collection's policy, and work out its operating
        point and list length. ``looks``: the searched person's embeddings searched together (the identify
        rates given are per look, the policy's floor too); ``rate_given=False``: the identify rate passed is
        the default's, not the caller's (a floor raises it instead of refusing it)."""
        mode = SearchMode.parse(mode)
        if mode is SearchMode.INVESTIGATE:
            given = [n for n, v in (("max_fmr", max_fmr), ("max_fpir", max_fpir), ("min_score", min_score),
                                    ("max_results", max_results)) if v is not None]
            if given:
                raise InvalidArgumentError(
                    f"{' and '.join(given)} belong{'s' if len(given) == 1 else ''} to identify mode; an investigation "
                    f"lists up to max_candidates leads above the collection's lead floor (lead_floor_fmr)")
            limit = DEFAULT_MAX_CANDIDATES if max_candidates is None else int(max_candidates)
            if limit < 1:
                raise InvalidArgumentError(f"max_candidates must be >= 1, got {max_candidates}")
        else:
            if max_candidates is not None:
                raise InvalidArgumentError("max_candidates belongs to investigate mode; an identification returns "
                                           "at most max_results matches")
            limit = DEFAULT_MAX_RESULTS if max_results is None else int(max_results)
            if limit < 1:
                raise InvalidArgumentError(f"max_results must be >= 1, got {max_results}")
        store = self._store(collection)
        rules = CollectionPolicy.from_json(store.policy_json())
        _check_search_policy(collection, rules, mode, purpose)
        cal = self.collection_calibration(collection)
        size = store.searchable_count()
        floor = None
        if mode is SearchMode.INVESTIGATE:
            op = self.operating_point(max_fmr=_lead_floor(store), collection_size=size, calibration=cal)
        else:
            op = self.operating_point(max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score, collection_size=size,
                                      calibration=cal)
            asked = {n: float(v) for n, v in (("max_fpir", max_fpir), ("max_fmr", max_fmr), ("min_score", min_score))
                     if v is not None and rate_given}
            op, floor = self._policy_floor(collection, rules, op, asked=asked, size=size, calibration=cal,
                                           looks=looks)
        return _Search(store=store, calibration=cal, op=op, mode=mode, limit=limit, size=size, floor=floor)

    def _policy_floor(self, collection: str, rules: CollectionPolicy, op: OperatingPoint, *, asked: dict[str, float],
                      size: int, calibration: ScoreCalibration,
                      looks: int = 1) -> tuple[OperatingPoint, PolicyFloor | None]:
        """An identification's operating point under the policy's floor (``max_fpir`` / ``max_fmr``, per look
        divided by ``looks``): a rate the search asked for (``asked``) that is looser than the floor (a larger
        rate of the same kind, or any option giving a lower threshold than the floor's) is refused with
        PolicyError; the default operating point, when looser, is replaced by the floor (the strictest
        floor's threshold)."""
        floors: list[tuple[str, float, OperatingPoint]] = []
        if rules.max_fpir is not None and rules.max_fpir < 1:  # an FPIR of 1 allows anything
            floors.append(("max_fpir", rules.max_fpir / looks, self.operating_point(
                max_fpir=rules.max_fpir / looks, collection_size=size, calibration=calibration)))
        if rules.max_fmr is not None:
            floors.append(("max_fmr", rules.max_fmr / looks, self.operating_point(
                max_fmr=rules.max_fmr / looks, collection_size=size, calibration=calibration)))
        if not floors:
            return op, None
        looser = [(name, value, point) for name, value, point in floors
                  if op.threshold < point.threshold or asked.get(name, 0.0) > value]
        if looser and asked:
            (name, value), = asked.items()
            shown = f"{name} {value:g} (threshold {op.threshold:.4f})"
            limits = " and ".join(f"{n} {v:g} (threshold {p.threshold:.4f})" for n, v, p in looser)
            per_look = f" (per look, of {looks})" if looks > 1 else ""
            raise PolicyError(
                f"collection {collection!r}'s policy allows identifications no looser than {limits} at its "
                f"{size:,} faces{per_look}; this search asked for {shown}. Ask for a stricter rate, or leave the "
                f"rate out to search at the policy's floor; only an admin may change the policy")
        if looser:
            op = max((point for _, _, point in looser), key=lambda point: point.threshold)
        return op, PolicyFloor(max_fpir=rules.max_fpir, max_fmr=rules.max_fmr, applied=bool(looser))

    def _result(self, s: _Search, found: list[Match], *, face: Face | None = None,
                face_id: str | None = None, looks: int = 1) -> SearchResult:
        """The result of one searched face: its first ``s.limit`` matches, or candidates in investigate mode."""
        found = found[:s.limit]
        if s.mode is SearchMode.IDENTIFY:
            return SearchResult(matches=tuple(found), operating_point=s.op, collection_size=s.size, face=face,
                                face_id=face_id, policy_floor=s.floor)
        return SearchResult(matches=(), operating_point=s.op, collection_size=s.size, face=face, face_id=face_id,
                            mode=s.mode,
                            candidates=tuple(_lead(rank, m, s.size, looks) for rank, m in enumerate(found, 1)),
                            max_candidates=s.limit)

    def search_faces_by_image(self, collection: str, image: ImageInput, *, max_results: int | None = None,
                              max_fmr: float | None = None, max_fpir: float | None = None,
                              min_score: float | None = None, all_faces: bool = False,
                              mode: SearchMode | str = SearchMode.IDENTIFY,
                              max_candidates: int | None = None, actor: Actor | None = None,
                              purpose: str | None = None) -> SearchResultList:
        """Search the collection for the largest face of ``image`` (every face with ``all_faces``).

        ``mode="identify"`` (the default) returns ``matches``, at most ``max_results`` (10): the match
        threshold is ``max_fpir`` (default ``config.max_fpir`` = 0.003: a search for someone who is not in
        the collection returns anyone at most 3 times in 1,000, whatever the collection's size), or
        ``max_fmr`` (per comparison), or a raw ``min_score``; see :meth:`operating_point`.

        ``mode="investigate"`` returns ``candidates`` instead: up to ``max_candidates`` (10) ranked leads
        scoring at least the collection's lead floor (:meth:`lead_floor`), each saying how many strangers
        among the faces searched would be expected to score as high. Leads are not matches: a person must
        review them. The threshold options belong to identify mode and are refused here.

        ``purpose``: why the search is made (a case reference or reason; recorded with the search). The
        collection's policy (:meth:`collection_policy`) may require one, restrict the modes, and set a floor
        on the identify rates: a looser rate asked for raises PolicyError; the default, when looser, is
        raised to the floor (``policy_floor`` in the result says which applied).

        Returns one result per searched face (with ``all_faces``, at most ``config.max_faces_per_image``,
        the largest; ``faces_over_limit`` counts the others); raises NoFaceError if there is none.

        Given an ``actor``, the search is recorded with its ``purpose`` before it returns (the image's sha256,
        the options, the operating point, each result's face ids, scores and rates; no image, embedding or
        box), a failed one with its error; every result carries the ``search_id`` and ``log_entry``. An
        investigation on a collection whose policy requires review opens a review item per candidate, in the
        same transaction as its record (:meth:`review_list`); the candidates then carry their
        ``review_item_id``, and who they are only where the policy discloses it before review.
        """
        over: list[int] = [0]
        crops: list[bytes | None] = []

        def run() -> list[SearchResult]:
            s = self._search_setup(collection, mode=mode, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                                   max_results=max_results, max_candidates=max_candidates, purpose=purpose)
            rgb = decode_image(image, max_pixels=self.config.max_pixels)
            faces = self._faces(image, embed=True, max_faces=None if all_faces else 1,
                                quality_filter=QualityFilter.NONE, decoded=rgb)
            if not faces:
                raise NoFaceError("no face found in the image to search with", source=describe_source(image))
            over[0] = faces.faces_over_limit
            if s.mode is SearchMode.INVESTIGATE:
                crops.extend(crop_of(rgb, f.bbox.as_list()) for f in faces)
            queries = np.stack([f.embedding for f in faces])  # type: ignore[misc]
            found = self._ranked(s.store, queries, k=s.limit, op=s.op, calibration=s.calibration, mode=s.mode)
            return [self._result(s, m, face=f) for f, m in zip(faces, found, strict=True)]

        options = _options(max_results=max_results, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                           all_faces=all_faces or None, mode=mode, max_candidates=max_candidates)
        probe = {"image_sha256": _probe_sha256(image) if actor is not None else None}
        results, entry = self._recorded_search(actor, _purpose(purpose), action="search_faces_by_image",
                                               collection=collection, probe=probe, options=options, run=run,
                                               probe_crops=crops)
        return SearchResultList(results, faces_over_limit=over[0], search_id=results[0].search_id,
                                log_entry=_ref(entry))

    def search_faces(self, collection: str, face_id: str, *, max_results: int | None = None,
                     max_fmr: float | None = None, max_fpir: float | None = None, min_score: float | None = None,
                     mode: SearchMode | str = SearchMode.IDENTIFY, max_candidates: int | None = None,
                     actor: Actor | None = None, purpose: str | None = None) -> SearchResult:
        """Search the collection with one of its own stored faces (it is left out of the results); the
        modes, options and record are those of :meth:`search_faces_by_image` (the probe: the face id; the
        probe crop of its review items: the stored face's crop)."""
        crops: list[bytes | None] = []

        def run() -> list[SearchResult]:
            s = self._search_setup(collection, mode=mode, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                                   max_results=max_results, max_candidates=max_candidates, purpose=purpose)
            _, embedding = s.store.get_face(face_id)
            if s.mode is SearchMode.INVESTIGATE:
                crops.append(s.store.face_crop(face_id))
            found = self._ranked(s.store, embedding[None, :], k=s.limit, op=s.op, calibration=s.calibration,
                                 mode=s.mode, exclude=face_id)
            return [self._result(s, found[0], face_id=face_id)]

        options = _options(max_results=max_results, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                           mode=mode, max_candidates=max_candidates)
        results, _ = self._recorded_search(actor, _purpose(purpose), action="search_faces", collection=collection,
                                           probe={"face_id": face_id}, options=options, run=run, probe_crops=crops)
        return results[0]

    def search_faces_by_embedding(self, collection: str, embeddings: npt.ArrayLike, *,
                                  max_results: int | None = None, max_fmr: float | None = None,
                                  max_fpir: float | None = None, min_score: float | None = None,
                                  mode: SearchMode | str = SearchMode.IDENTIFY, max_candidates: int | None = None,
                                  face: Face | None = None, actor: Actor | None = None,
                                  purpose: str | None = None) -> SearchResult:
        """Search the collection with one face's embedding, or with several embeddings of one person
        (the views of a video track): ``(d,)`` or ``(n, d)`` unit vectors of this engine's model.

        Modes, options, ``purpose`` and policy rules are those of :meth:`search_faces_by_image` (a policy's
        floor, like the rates, is divided among the ``n`` looks). With ``n`` embeddings, each stored
        face keeps its best score over the ``n`` and the error rates account for the ``n`` looks: in
        identify mode each look is made at ``max_fpir / n`` (or ``max_fmr / n``; a raw ``min_score`` is
        kept as given), so that a search for someone absent still returns anyone with probability at most
        ``max_fpir``, and the reported operating point is that of one look; in investigate mode a
        candidate's ``expected_strangers`` counts ``n x`` the faces searched. ``face`` is reported as the
        searched face. Recorded as :meth:`search_faces_by_image` is (the probe: the number of embeddings,
        never the embeddings)."""
        def run() -> list[SearchResult]:
            return [self._search_by_embedding(collection, embeddings, max_results=max_results, max_fmr=max_fmr,
                                              max_fpir=max_fpir, min_score=min_score, mode=mode,
                                              max_candidates=max_candidates, face=face, purpose=purpose)]

        count = int(np.shape(embeddings)[0]) if np.ndim(embeddings) == 2 else 1
        options = _options(max_results=max_results, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                           mode=mode, max_candidates=max_candidates)
        results, _ = self._recorded_search(actor, _purpose(purpose), action="search_faces_by_embedding",
                                           collection=collection, probe={"embedding_count": count},
                                           options=options, run=run)
        return results[0]

    def _search_by_embedding(self, collection: str, embeddings: npt.ArrayLike, *, max_results: int | None,
                             max_fmr: float | None, max_fpir: float | None, min_score: float | None,
                             mode: SearchMode | str, max_candidates: int | None, face: Face | None,
                             purpose: str | None = None) -> SearchResult:
        q = np.asarray(embeddings, dtype=np.float32)
        q = q[None, :] if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[0] < 1 or q.shape[1] != self.embedding_size or not np.isfinite(q).all():
            raise InvalidArgumentError(
                f"embeddings must be one or more {self.embedding_size}-d vectors of model {self.model_name!r}")
        n = q.shape[0]
        rate_given = not (max_fmr is None and max_fpir is None and min_score is None)
        if n > 1 and SearchMode.parse(mode) is SearchMode.IDENTIFY and min_score is None:
            if max_fmr is not None:
                max_fmr = check_fmr(max_fmr) / n
            else:
                max_fpir = check_fmr(self.config.max_fpir if max_fpir is None else max_fpir, "max_fpir") / n
        s = self._search_setup(collection, mode=mode, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                               max_results=max_results, max_candidates=max_candidates, purpose=purpose, looks=n,
                               rate_given=rate_given)
        best: dict[str, Match] = {}
        for hits in self._ranked(s.store, q, k=s.limit, op=s.op, calibration=s.calibration, mode=s.mode):
            for m in hits:
                if m.face_id not in best or m.score > best[m.face_id].score:
                    best[m.face_id] = m
        found = sorted(best.values(), key=lambda m: -m.score)
        return self._result(s, found, face=face, looks=n)

    # -- persons ----------------------------------------------------------------------------------
    def create_person(self, collection: str, person_id: str, *, actor: Actor | None = None) -> None:
        """Create a person (Rekognition's "user"): an id that groups several faces of one individual.

        ``index_faces(..., person_id=...)`` creates the person when needed. Given an ``actor``,
        ``person_created`` is recorded in the write's transaction.
        """
        store = self._store(collection)
        pid = _check_person_id(person_id)
        self._recorded_write(actor, lambda hook: store.create_person(pid, before_commit=hook),
                             lambda _: person_created_record(collection, person_id=pid))

    def list_persons(self, collection: str) -> list[tuple[str, int]]:
        """(person id, number of faces) for each person of the collection."""
        return self._store(collection).list_persons()

    def associate_faces(self, collection: str, person_id: str, face_ids: list[str], *,
                        actor: Actor | None = None) -> list[str]:
        """Give stored faces to a person; returns the face ids that exist (others are ignored). Given an
        ``actor``, ``faces_associated`` (the ids changed) is recorded in the write's transaction."""
        store = self._store(collection)
        pid = _check_person_id(person_id)
        done, _ = self._recorded_write(
            actor, lambda hook: store.associate(pid, face_ids, before_commit=hook),
            lambda ids: face_ids_record("faces_associated", collection, person_id=pid, face_ids=ids))
        return done

    def disassociate_faces(self, collection: str, person_id: str, face_ids: list[str], *,
                           actor: Actor | None = None) -> list[str]:
        """Take faces away from a person (they stay in the collection); returns the ids changed. Given an
        ``actor``, ``faces_disassociated`` is recorded in the write's transaction."""
        store = self._store(collection)
        pid = _check_person_id(person_id)
        done, _ = self._recorded_write(
            actor, lambda hook: store.disassociate(pid, face_ids, before_commit=hook),
            lambda ids: face_ids_record("faces_disassociated", collection, person_id=pid, face_ids=ids))
        return done

    def delete_person(self, collection: str, person_id: str, *, actor: Actor | None = None) -> list[str]:
        """Erase a person: the person and all their faces and vectors; no search returns them afterwards.

        Returns the deleted face ids (:meth:`erase_person` returns the receipt). Raises FaceNotFoundError
        for an unknown person.
        """
        return list(self.erase_person(collection, person_id, actor=actor).face_ids)

    def erase_person(self, collection: str, person_id: str, *, actor: Actor | None = None) -> ErasureReceipt:
        """Erase a person and every face of theirs (see :meth:`delete_person`) and return the erasure's
        :class:`~facelens.accountability.records.ErasureReceipt`, the answer to a data subject's request.
        Given an ``actor``, ``person_erased`` (the person, the face ids, the receipt's id) is recorded in
        the erasure's transaction. Raises FaceNotFoundError for an unknown person (nothing recorded)."""
        store = self._store(collection)
        pid = _check_person_id(person_id)
        receipt_id = new_id()
        done, entry = self._recorded_write(
            actor, lambda hook: store.erase_person(pid, before_commit=hook),
            lambda d: person_erased_record(collection, person_id=pid, face_ids=d.face_ids, receipt_id=receipt_id,
                                           review_items_withdrawn=d.review_items_withdrawn))
        return self._receipt(receipt_id, collection, pid, done, actor, entry)

    def search_persons_by_image(self, collection: str, image: ImageInput, *, max_results: int | None = None,
                                max_fmr: float | None = None, max_fpir: float | None = None,
                                min_score: float | None = None, mode: SearchMode | str = SearchMode.IDENTIFY,
                                max_candidates: int | None = None, actor: Actor | None = None,
                                purpose: str | None = None) -> SearchResult:
        """Like :meth:`search_faces_by_image` for the largest face, but one match (or, investigating, one
        candidate) per person: the best scoring face of each person (faces with no person are left out).
        Recorded as :meth:`search_faces_by_image` is."""
        crops: list[bytes | None] = []

        def run() -> list[SearchResult]:
            s = self._search_setup(collection, mode=mode, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                                   max_results=max_results, max_candidates=max_candidates, purpose=purpose)
            rgb = decode_image(image, max_pixels=self.config.max_pixels)
            face = self._largest_face(image, decoded=rgb)
            assert face.embedding is not None
            if s.mode is SearchMode.INVESTIGATE:
                crops.append(crop_of(rgb, face.bbox.as_list()))
            k = min(max(100, 10 * s.limit), max(s.size, 1))
            best: dict[str, Match] = {}
            for m in self._ranked(s.store, face.embedding[None, :], k=k, op=s.op, calibration=s.calibration,
                                   mode=s.mode)[0]:
                if m.person_id is not None and m.person_id not in best:
                    best[m.person_id] = m
            return [self._result(s, list(best.values()), face=face)]

        options = _options(max_results=max_results, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                           mode=mode, max_candidates=max_candidates)
        probe = {"image_sha256": _probe_sha256(image) if actor is not None else None}
        results, _ = self._recorded_search(actor, _purpose(purpose), action="search_persons_by_image",
                                           collection=collection, probe=probe, options=options, run=run,
                                           probe_crops=crops)
        return results[0]

    # -- video ------------------------------------------------------------------------------------
    def detect_video(self, video: str | Path, *, every: int | None = None, options: VideoOptions | None = None,
                     progress: ProgressCallback | None = None) -> VideoResult:
        """The faces of a video file (mp4, mkv, webm, mov, avi...) followed as tracks, without a collection.

        Each track has ``start_s``/``end_s`` (presentation times from the container, seconds from the first
        frame), its boxes over time and its best face and crop. ``every``: examine every Nth frame (default
        5; :class:`facelens.video.VideoOptions` holds the other settings). ``progress`` is called about
        once per second of video. Raises VideoDecodeError naming the file when it is not a video, is
        corrupt or truncated; cancellable (:func:`facelens.pipeline.cancellable`) between frames.
        """
        from .video.pipeline import VideoResult, run_video

        info, tracks, stats = run_video(self, video, options=_video_options(options, every), embed=False,
                                        progress=progress)
        return VideoResult(info=info, tracks=tuple(tracks), stats=stats)

    def search_video(self, collection: str, video: str | Path, *, mode: SearchMode | str = SearchMode.IDENTIFY,
                     max_fpir: float | None = None, max_fmr: float | None = None, min_score: float | None = None,
                     max_results: int | None = None, max_candidates: int | None = None, every: int | None = None,
                     options: VideoOptions | None = None, progress: ProgressCallback | None = None,
                     actor: Actor | None = None, purpose: str | None = None) -> VideoResult:
        """Who of the collection appears in a video, and when (Rekognition's StartFaceSearch/GetFaceSearch).

        As :meth:`detect_video`, and each track's best faces (up to ``options.embeddings_per_track``, 3:
        the largest, most frontal and sharpest that pass ``options.quality_filter``) are embedded and
        searched together with :meth:`search_faces_by_embedding`: ``track.search`` holds the matches (or,
        with ``mode="investigate"``, the candidates) and the operating point, the options being those of
        :meth:`search_faces_by_image`. The options are checked before the video is opened.

        With an ``actor``, the search is recorded in the signed log (action ``search_video``, with
        ``purpose``, the video's sha256, each searched track's times and its matches or candidates: ids and
        scores, no image, box or file name), failed searches too, before this returns.
        """
        from .video.pipeline import VideoResult, run_video, search_tracks

        search = {"mode": str(mode), "max_fpir": max_fpir, "max_fmr": max_fmr, "min_score": min_score,
                  "max_results": max_results, "max_candidates": max_candidates}
        opts = _video_options(options, every)
        try:
            self._search_setup(collection, mode=mode, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                               max_results=max_results, max_candidates=max_candidates, purpose=purpose)
            info, tracks, stats = run_video(self, video, options=opts, embed=True, progress=progress)
            tracks = search_tracks(self, collection, tracks, mode=mode, max_fpir=max_fpir, max_fmr=max_fmr,
                                   min_score=min_score, max_results=max_results, max_candidates=max_candidates,
                                   purpose=purpose)
            if actor is not None:
                commit_work()  # cancelled before: recorded as the timeout it is; past it, recorded and returned
        except FacelensError as exc:
            if actor is not None:
                self.record(actor, _video_record(collection, purpose, video, search, opts, [], exc))
            raise
        result = VideoResult(info=info, tracks=tuple(tracks), stats=stats, collection=collection,
                             mode=SearchMode.parse(mode))
        if actor is not None:
            self.record(actor, _video_record(collection, purpose, video, search, opts, list(result.tracks), None))
        return result

    # -- live streams (facelens/video/stream.py) ------------------------------------------------------
    def watch_stream(self, collection: str, source: str | Path, *, name: str | None = None,
                     mode: SearchMode | str = SearchMode.IDENTIFY, max_fpir: float | None = None,
                     max_fmr: float | None = None, min_score: float | None = None, max_results: int | None = None,
                     max_candidates: int | None = None, every: int | None = None,
                     options: StreamOptions | None = None, on_event: EventCallback | None = None,
                     events_path: str | Path | None = None, actor: Actor | None = None,
                     purpose: str | None = None) -> StreamProcessor:
        """Follow a live source and search the faces on it in the collection, as they appear (Rekognition's
        stream processors): returns the running :class:`facelens.video.StreamProcessor` (``status()``,
        ``events()``, ``stop()``).

        ``source``: ``rtsp://``, ``http(s)://`` (MPEG-TS, MJPEG, HLS), ``udp://`` URL, a camera device
        (``/dev/video0``) or a file. Frames are dropped, never queued, when analysis cannot keep up
        (:class:`facelens.video.StreamOptions`; ``every``: analyse every Nth frame). Modes and options as
        for :meth:`search_faces_by_embedding`; in identify mode each track gets up to
        ``options.embeddings_per_track`` looks, each at ``max_fpir`` (or ``max_fmr``) divided by that
        number, and a ``track_identified`` event for the first that matches; in investigate mode a track's
        looks are searched together once (``track_candidates``, review items where the policy asks).
        The options are checked, and the source opened, before this returns: VideoDecodeError names a
        source that cannot be opened within ``options.open_timeout_s``. With an ``actor``, the stream's
        start and end (``watch_stream``, ``stream_ended``) and every search of a track
        (``search_stream``: ids, scores, the stream and track, no image) are recorded with ``purpose``."""
        from .video.stream import StreamOptions, StreamProcessor, redact_source

        opts = options or StreamOptions()
        if every is not None:
            opts = dataclasses.replace(opts, every=every)
        search = {"mode": SearchMode.parse(mode).value, "max_fpir": max_fpir, "max_fmr": max_fmr,
                  "min_score": min_score, "max_results": max_results, "max_candidates": max_candidates}
        name = name or new_id()[:12]
        if not _PERSON_ID.fullmatch(name):
            raise InvalidArgumentError(f"invalid stream name {name!r}: use 1-128 letters, digits, '_', '.', '-', ':'")
        purpose = _purpose(purpose)
        record = {"action": "watch_stream", "stream": name, "collection": collection, "purpose": purpose,
                  "source": redact_source(os.fspath(source)), "options": {**_options(**search),
                                                                         **dataclasses.asdict(opts)}}
        try:
            self._search_setup(collection, mode=mode, max_fmr=max_fmr, max_fpir=max_fpir, min_score=min_score,
                               max_results=max_results, max_candidates=max_candidates, purpose=purpose)
            processor = StreamProcessor(self, collection, source, name=name, search=search, options=opts,
                                        actor=actor, purpose=purpose, on_event=on_event, events_path=events_path)
            processor.start()
        except FacelensError as exc:
            self.record(actor, {**record, "error": failure(exc)})
            raise
        try:
            self.record(actor, record)
        except BaseException:
            processor.stop()
            raise
        return processor

    def _stream_search(self, processor: StreamProcessor, track_id: int, embeddings: npt.NDArray[np.float32],
                       face: Face, rgb: npt.NDArray[np.uint8], stream_time_s: float, *,
                       looks_per_track: int) -> tuple[SearchResult, dict[str, Any] | None]:
        """One search of a stream's track (recorded as ``search_stream``): identify looks at the stream's
        rate divided by ``looks_per_track``; an investigation opens review items with the face's crop."""
        search = dict(processor.search)
        mode = SearchMode.parse(search.pop("mode"))
        if looks_per_track > 1 and mode is SearchMode.IDENTIFY and search.get("min_score") is None:
            if search.get("max_fmr") is not None:
                search["max_fmr"] = check_fmr(search["max_fmr"]) / looks_per_track
            else:
                fpir = self.config.max_fpir if search.get("max_fpir") is None else search["max_fpir"]
                search["max_fpir"] = check_fmr(fpir, "max_fpir") / looks_per_track
        crops: list[bytes | None] = []

        def run() -> list[SearchResult]:
            if mode is SearchMode.INVESTIGATE:
                crops.append(crop_of(rgb, face.bbox.as_list()))
            return [self._search_by_embedding(processor.collection, embeddings, mode=mode, face=face,
                                              purpose=processor.purpose, **search)]

        probe = {"stream": processor.name, "track_id": track_id, "stream_time_s": round(stream_time_s, 3),
                 "embedding_count": int(embeddings.shape[0])}
        results, entry = self._recorded_search(processor.actor, processor.purpose, action="search_stream",
                                               collection=processor.collection, probe=probe,
                                               options=_options(mode=mode, **search), run=run, probe_crops=crops)
        return results[0], _ref(entry)

    def _stream_record_end(self, processor: StreamProcessor) -> None:
        """Record that a stream ended (``stream_ended``: how, and its counts)."""
        s = processor.status()
        self.record(processor.actor, {
            "action": "stream_ended", "stream": processor.name, "collection": processor.collection,
            "purpose": processor.purpose, "state": "failed" if s.error else s.state, "error": s.error,
            "counts": {"frames_decoded": s.frames_decoded, "frames_analysed": s.frames_analysed,
                       "frames_dropped": s.frames_dropped, "tracks": s.tracks_total,
                       "tracks_identified": s.tracks_identified, "reconnects": s.reconnects}})

    # -- the review queue (accountability/review.py) -------------------------------------------------
    def review_list(self, collection: str | list[str] | None = None, *, state: ReviewState | str | None = None,
                    limit: int = 100, after: str | None = None, searcher: Actor | None = None,
                    actor: Actor | None = None) -> tuple[list[ReviewItem], str | None]:
        """Review items of investigations, oldest first, and the next page's token (None at the end):
        of ``collection`` (a name, a list, or None: every collection), of ``state`` (pending, confirmed,
        rejected, expired, withdrawn; None: any), ``searcher``'s searches only if given. Expired items are
        purged first. Each item holds the lead (rank, score, what it means, who it points at), the search's
        log entry, its purpose and searcher (:class:`facelens.accountability.review.ReviewItem`)."""
        return self.reviews.list_items(collection, state=state, limit=limit, after=after, searcher=searcher,
                                       actor=actor)

    def review_get(self, collection: str, item_id: str, *, actor: Actor | None = None) -> ReviewItem:
        """One review item; raises ReviewItemNotFoundError."""
        return self.reviews.get(collection, item_id, actor=actor)

    def review_decide(self, collection: str, item_id: str, decision: Decision | str, reason: str, *,
                      actor: Actor | None) -> ReviewItem:
        """Confirm (the lead is the searched person) or reject a pending item, with the ``reason`` (what in
        the faces decided it), as ``actor``, who must not be the searcher (four eyes: ReviewForbiddenError).
        Final: a second decision raises ReviewDecidedError. Recorded (``review_decided``); the probe crop is
        deleted once no item of its searched face is pending."""
        return self.reviews.decide(collection, item_id, decision, reason, actor=actor)

    def review_purge(self, collection: str, *, actor: Actor | None = None) -> list[str]:
        """Expire the collection's pending items older than its policy's ``retention_days`` (their probe
        crops deleted, who they pointed at cleared), recorded (``review_purged``) as ``actor``; returns the
        ids expired."""
        return self.reviews.purge(collection, actor=actor)

    def review_probe_crop(self, collection: str, item_id: str) -> bytes:
        """The JPEG crop of the face searched for a review item (while it is pending); raises
        ReviewItemNotFoundError."""
        return self.reviews.probe_crop(collection, item_id)

    def face_crop(self, collection: str, face_id: str) -> bytes:
        """The small JPEG crop kept of a stored face (policy ``face_crops``); raises FaceNotFoundError."""
        return self.reviews.face_crop(collection, face_id)

    def close(self) -> None:
        """Release the model sessions and close the collections (also done when the engine is
        garbage-collected or the interpreter exits: an approximate index is saved then).

        Later calls that need the models raise :class:`FacelensError`.
        """
        self._pipeline = None
        self.backend = None
        self._finalizer()
        with self._log_lock:
            if self._own_log and self._log is not None:
                self._log.close()
                self._log, self._own_log = None, False

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True, slots=True)
class _Search:
    """A search's checked setup: the store, its calibration, the operating point (the lead floor's when
    investigating), the mode, how many results at most, and the number of faces searched."""

    store: FaceStore
    calibration: ScoreCalibration
    op: OperatingPoint
    mode: SearchMode
    limit: int
    size: int
    floor: PolicyFloor | None = None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_search_policy(collection: str, rules: CollectionPolicy, mode: SearchMode, purpose: str | None) -> None:
    """Refuse (PolicyError) a search in a mode the collection's policy does not allow, or without a purpose
    where it requires one; a purpose with control characters is an InvalidArgumentError (it is logged)."""
    if not rules.allows(mode):
        raise PolicyError(f"collection {collection!r}'s policy allows only {' and '.join(rules.allowed_modes)} "
                          f"searches, not {mode.value}; only an admin may change the policy")
    if purpose is not None and (bad := _CONTROL.search(purpose)):
        raise InvalidArgumentError(f"purpose must not contain control characters (found U+{ord(bad.group()):04X})")
    if rules.purpose_required and not (purpose or "").strip():
        raise PolicyError(f"collection {collection!r}'s policy requires a purpose for every search: give purpose, "
                          f"a case reference or reason (recorded in the log); only an admin may change the policy")


def _refuse(face: Face, reason: RefusalReason) -> Face:
    """``face`` with ``reason`` among its refusal reasons."""
    if reason in face.refusal_reasons:
        return face
    return dataclasses.replace(face, refusal_reasons=(*face.refusal_reasons, reason))


def _check_enrolment(person_id: str | None, *, all_faces: bool, enrol_max_fmr: float | None,
                     match_check: bool) -> float:
    """Validate the enrolment options of index_faces (they need a person); returns the enrolment rate."""
    given = [n for n, v in (("all_faces", all_faces), ("enrol_max_fmr", enrol_max_fmr is not None),
                            ("match_check=False", not match_check)) if v]
    if person_id is None and given:
        raise InvalidArgumentError(f"{', '.join(given)} apply to indexing for a person: give person_id")
    if enrol_max_fmr is None:
        return DEFAULT_ENROL_MAX_FMR
    if isinstance(enrol_max_fmr, bool) or not isinstance(enrol_max_fmr, (int, float)):
        raise InvalidArgumentError(f"enrol_max_fmr must be a rate in (0, 1], got {enrol_max_fmr!r}")
    return check_fmr(enrol_max_fmr, "enrol_max_fmr")


def _ref(entry: LogEntry | None) -> dict[str, Any] | None:
    """Where a record is in the log: ``{"seq", "hash"}`` (None: nothing was recorded)."""
    return None if entry is None else {"seq": entry.seq, "hash": entry.hash}


def _purpose(purpose: str | None) -> str | None:
    """The purpose to record: stripped; empty is none."""
    if purpose is not None and not isinstance(purpose, str):
        raise InvalidArgumentError(f"purpose must be a string, got {purpose!r}")
    return (purpose or "").strip() or None


def _options(**given: Any) -> dict[str, Any]:
    """A search's options as recorded: those given (not None), the mode as its name."""
    out = {k: v for k, v in given.items() if v is not None}
    if "mode" in out:
        out["mode"] = str(getattr(out["mode"], "value", out["mode"]))
    return out


def _probe_sha256(image: ImageInput) -> str | None:
    """The image's sha256 for the record, or None when it cannot be read (the call then fails, and is
    recorded with the error that says why)."""
    try:
        return image_sha256(image)
    except (FacelensError, OSError, TypeError, ValueError):
        return None


def _video_record(collection: str, purpose: str | None, video: str | Path, search: dict[str, Any],
                  options: VideoOptions, tracks: list[Any], error: FacelensError | None) -> dict[str, Any]:
    """The log record of a video search (:func:`facelens.accountability.records.search_record`'s shape, one
    result per searched track, plus each track's times)."""
    try:
        digest: str | None = _file_sha256(video)
    except OSError:
        digest = None
    searched = [t for t in tracks if t.search is not None]
    record = search_record(action="search_video", search_id=new_id(), purpose=purpose, collection=collection,
                           probe={"video_sha256": digest}, options={**search, **dataclasses.asdict(options)},
                           results=[t.search for t in searched], error=error)
    record["tracks"] = [{"track_id": t.track_id, "start_s": round(t.start_s, 3), "end_s": round(t.end_s, 3),
                         "embeddings": len(t.embeddings)} for t in searched]
    record["tracks_unsearched"] = len(tracks) - len(searched)
    if isinstance(error, VideoDecodeError):  # the message without the file's name
        record["error"]["message"] = str(error).removeprefix(f"{error.source}: ")
    return record


def _file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _video_options(options: VideoOptions | None, every: int | None) -> VideoOptions:
    from .video.pipeline import VideoOptions

    options = options or VideoOptions()
    return options if every is None else dataclasses.replace(options, every=every)


def _lead_floor(store: FaceStore) -> float:
    raw = store.lead_floor_fmr()
    return DEFAULT_LEAD_FLOOR_FMR if raw is None else float(raw)


def _lead(rank: int, m: Match, size: int, looks: int = 1) -> Candidate:
    """Label a match of an investigation as the ``rank``-th lead among ``size`` faces searched (``looks``
    times: the best score of several embeddings of one person)."""
    expected = float(f"{looks * size * m.fmr:.4g}")
    return Candidate(rank=rank, face_id=m.face_id, external_image_id=m.external_image_id, person_id=m.person_id,
                     score=m.score, fmr=m.fmr, fmr_extrapolated=m.fmr_extrapolated, expected_strangers=expected,
                     meaning=lead_meaning(rank, m.score, m.fmr, m.fmr_extrapolated, expected, size), bbox=m.bbox)


def lead_meaning(rank: int, score: float, fmr: float, extrapolated: bool, expected: float, size: int) -> str:
    """One sentence saying what a candidate's score means among ``size`` faces searched, and that it is a
    lead to review, not a match."""
    how = ("extrapolated from the calibration's fitted tail: fewer than 10 calibration pairs of strangers "
           "scored this high" if extrapolated else "measured on the calibration's pairs of strangers")
    if expected >= 1:
        words = "the score alone does not single this face out"
    elif expected > 0:
        once = f"one search in about {_about(1 / expected)} for someone absent would show a stranger this high"
        words = f"strangers rarely score this high: {once}" if expected < 0.01 else once
    else:
        words = "no stranger is expected this high"
    return (f"Lead {rank}, not a match: score {score:.3f}. Among the {size:,} faces searched, about {expected:.2g} "
            f"strangers would be expected to score this high (false-match rate {fmr:.1e} per comparison, {how}); "
            f"{words}. It must be reviewed by a person before anything is done.")


def _about(n: float) -> str:
    """A large count to two significant figures, in words a reader takes in at once (1,200; 4.9 million)."""
    def two(x: float) -> str:
        return f"{float(f'{x:.2g}'):,.0f}" if x >= 10 else f"{x:.2g}"

    if n < 1e6:
        return two(n)
    if n < 1e15:
        div, unit = next((d, u) for d, u in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")) if n >= d)
        return f"{two(n / div)} {unit}"
    return f"{n:.1e}"
