"""Batch enrolment on Ray Data: many workers examine images, one writer commits them.

The pipeline (:func:`index_with_ray`)::

    images (paths, or URIs the workers can read)
      -> skip those already in the collection (same external id and sha256: local files are hashed here)
      -> Ray Data dataset -> map_batches(_FaceWorker, ActorPoolStrategy(size=workers), num_cpus=1)
             each actor holds ONE model session (facelens.pipeline.Pipeline): read -> decode -> detect ->
             quality -> align -> embed; a file that fails is reported with its reason, never raised
      -> the driver iterates the results and ONE writer commits them in batches
             (Engine.index_embedded: the rules, ids, idempotency and log records of Engine.index_faces)

Nothing is acknowledged (in the progress callback, the report) before its transaction has committed. A worker
killed mid-run is restarted by Ray and its batch retried; a driver killed mid-run loses only what was not
committed, and a re-run completes the rest: an image already stored is skipped before it is sent to a worker,
and the writer checks again, so an image is never stored twice.

Ray is imported only here, when a pipeline runs (``pip install 'facelens[scale]'``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import FacelensError, InvalidArgumentError
from ..imageio import check_image_file
from ..types import IndexResult, QualityFilter
from .embedded import EmbeddedImage, ImageFailure, embed_image, failure

if TYPE_CHECKING:
    from ..accountability.actor import Actor
    from ..config import EngineConfig
    from ..engine import Engine

__all__ = ["LOCAL", "ImageOutcome", "RayIndexReport", "RayUnavailableError", "index_with_ray", "read_source"]

log = logging.getLogger(__name__)

LOCAL = "local"
"""The address that starts Ray inside this process, with as many CPUs as workers."""

#: Images per call of a worker (one Ray task): small, so that a killed worker loses little work and the
#: writer sees results early.
WORKER_BATCH = 8
#: Images per transaction of the writer.
COMMIT_BATCH = 32


class RayUnavailableError(InvalidArgumentError):
    """Ray (the ``scale`` extra) is not installed, or the cluster cannot run the workers asked for."""


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    """What became of one image: ``result`` (committed, or already stored) or ``error`` (not examined:
    nothing stored); ``worker_pid``: the process of the worker that examined it (None: not sent to one)."""

    source: str
    external_image_id: str | None
    result: IndexResult | None = None
    error: ImageFailure | None = None
    worker_pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The entry of ``facelens index --json`` for this image."""
        if self.error is not None:
            return {"image": self.source, "error": self.error.to_dict()}
        assert self.result is not None
        return {"image": self.source, "external_image_id": self.external_image_id, **self.result.to_dict()}


@dataclass(frozen=True, slots=True)
class RayIndexReport:
    """What :func:`index_with_ray` did: an outcome per image it looked at, in the order they were committed;
    ``skipped``: images left out by ``resume`` because they were already stored; ``workers``: the actors;
    ``seconds``: the pipeline's wall time (Ray's start-up excluded); ``writer_seconds``: of it, the time the
    writer spent committing (the part that does not scale out)."""

    outcomes: tuple[ImageOutcome, ...]
    skipped: int
    workers: int
    seconds: float
    writer_seconds: float = 0.0


ProgressCallback = Callable[[int, int, Sequence[ImageOutcome]], None]
"""``progress(done, total, outcomes)``: called after each commit with the images done so far (committed,
already stored, or failed), the total, and the outcomes just committed."""


def read_source(source: str) -> bytes:
    """The bytes of an image: a local path (a regular file: a FIFO or a device is refused before it is
    opened), a ``file://`` URI, or any URI fsspec opens (``s3://``... with its filesystem installed).
    Raises ImageDecodeError (a local file) or OSError naming the problem."""
    if source.startswith("file://"):
        source = source[len("file://"):]
    elif "://" in source:
        import fsspec  # a dependency of ray[data]

        with fsspec.open(source, "rb") as f:
            data: bytes = f.read()
        return data
    check_image_file(source)
    with open(source, "rb") as fp:
        return fp.read()


@dataclass(frozen=True, slots=True)
class _WorkerOptions:
    model_sha256: str
    quality_filter: QualityFilter | None
    embed_limit: int
    crops: bool


class _FaceWorker:
    """One Ray actor: one model session (a :class:`~facelens.pipeline.Pipeline`, one onnxruntime thread),
    called with batches of ``{"source", "external_id"}`` rows, returning per row the pickled
    :class:`EmbeddedImage` or :class:`ImageFailure` and the worker's pid."""

    def __init__(self, config: EngineConfig, options: _WorkerOptions) -> None:
        from ..models.backends import open_backend
        from ..pipeline import Pipeline

        backend = open_backend(config.model, threads=1)
        if backend.model_sha256 != options.model_sha256:
            raise FacelensError(f"this worker's model {backend.name!r} (sha256 {backend.model_sha256[:12]}...) "
                                f"is not the driver's (sha256 {options.model_sha256[:12]}...): install the same "
                                f"facelens and model packages on every node")
        self.pipeline = Pipeline(backend, config)
        self.options = options

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        out = []
        for source, ext in zip(batch["source"], batch["external_id"], strict=True):
            external_id = str(ext) or None
            try:
                done: EmbeddedImage | ImageFailure = embed_image(
                    self.pipeline, read_source(str(source)), source=str(source), external_image_id=external_id,
                    model_sha256=self.options.model_sha256, quality_filter=self.options.quality_filter,
                    embed_limit=self.options.embed_limit, crops=self.options.crops)
            except Exception as exc:  # noqa: BLE001 - reported per file, never out of the pipeline
                done = failure(str(source), external_id, exc)
            out.append(pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL))
        return {"outcome": np.array(out, dtype=object), "pid": np.full(len(out), os.getpid(), dtype=np.int64)}


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError("--ray needs Ray Data, which is not installed: pip install 'facelens[scale]'"
                                  ) from None
    return ray


def _connect(address: str, workers: int) -> bool:
    """Connect to Ray (``local``: start it in this process with ``workers`` CPUs); True if this call started
    it (and so shuts it down after). Raises RayUnavailableError when the cluster has fewer CPUs than workers."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        if address == LOCAL:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        started = True
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus < workers:
        if started:
            ray.shutdown()
        raise RayUnavailableError(f"the Ray cluster has {cpus:g} CPUs: it cannot run {workers} workers of one CPU "
                                  f"each (give --ray-workers {max(1, int(cpus))} or add nodes)")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the caller reports progress (the CLI's bar)
    ctx.print_on_execution_start = False
    return started


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def index_with_ray(
    engine: Engine,
    collection: str,
    images: Sequence[tuple[str, str | None]],
    *,
    address: str = LOCAL,
    workers: int = 2,
    person_id: str | None = None,
    max_faces: int | None = None,
    quality_filter: QualityFilter | str | None = None,
    all_faces: bool = False,
    enrol_max_fmr: float | None = None,
    match_check: bool = True,
    resume: bool = False,
    actor: Actor | None = None,
    progress: ProgressCallback | None = None,
    worker_batch: int = WORKER_BATCH,
    commit_batch: int = COMMIT_BATCH,
) -> RayIndexReport:
    """Index ``images`` (``(path or URI, external image id)`` pairs) into ``collection`` on Ray Data, with
    ``workers`` actors of one CPU each; the same faces, ids, refusals and log records as
    :meth:`Engine.index_faces` on each image in turn (the options mean the same).

    ``address``: ``"local"`` starts Ray in this process (``workers`` CPUs) and stops it after; a cluster's
    address (``host:6379``, or ``auto`` on one of its nodes) connects to it, whose nodes must have the same
    facelens and model packages (checked: a worker with another model refuses to start). An already
    connected Ray (``ray.init`` by the caller) is used as it is.

    An image already stored under its external id with the same sha256 is not sent to a worker: it is
    reported ``already_indexed`` (and recorded so, as index_faces does), or with ``resume`` only counted in
    ``skipped``, unrecorded (a re-run of a big job after a crash). Local files are hashed here to find them;
    a URI is hashed by its worker, and the writer then skips it. Failures (unreadable, not an image, too
    large) are outcomes with their reason; an error of the collection or the log (FacelensError) stops the run,
    with everything committed before it stored and the rest left to a re-run.
    """
    from ..engine import _EXTERNAL_ID, _check_enrolment, _check_person_id

    if workers < 1:
        raise InvalidArgumentError(f"workers must be >= 1, got {workers}")
    if person_id is not None:
        _check_person_id(person_id)
    if max_faces is not None and max_faces < 1:
        raise InvalidArgumentError(f"max_faces must be >= 1, got {max_faces}")
    _check_enrolment(person_id, all_faces=all_faces, enrol_max_fmr=enrol_max_fmr, match_check=match_check)
    qf = None if quality_filter is None else QualityFilter.parse(quality_filter)
    store = engine._store(collection)  # only to skip stored images early; the writer is index_embedded
    crops = engine.collection_policy(collection).face_crops
    one = person_id is not None and not all_faces
    options = _WorkerOptions(model_sha256=engine.model_sha256, quality_filter=qf, crops=crops,
                             embed_limit=1 if one else max_faces or engine.config.max_faces_per_image)
    enrol = {"person_id": person_id, "max_faces": max_faces, "all_faces": all_faces,
             "enrol_max_fmr": enrol_max_fmr, "match_check": match_check}
    total = len(images)
    outcomes: list[ImageOutcome] = []
    rows: list[dict[str, str]] = []
    skipped = 0
    early: list[ImageOutcome] = []  # decided here: failures and images already stored
    for source, external_id in images:
        if external_id is not None and not _EXTERNAL_ID.fullmatch(external_id):
            early.append(ImageOutcome(source, external_id, error=failure(source, external_id, InvalidArgumentError(
                f"{source}: external image id must be 1-255 printable characters"))))
            continue
        if "://" not in source or source.startswith("file://"):
            path = source.removeprefix("file://")
            try:
                check_image_file(path)
                digest = _sha256_file(path)
            except (FacelensError, OSError) as exc:
                early.append(ImageOutcome(source, external_id, error=failure(source, external_id, exc)))
                continue
            existing = store.find_image(external_image_id=external_id, image_sha256=digest)
            if existing is not None:
                if resume:
                    skipped += 1
                    continue
                from ..accountability.records import faces_indexed_record

                engine.record(actor, faces_indexed_record(collection, image_sha256=digest, person_id=person_id,
                                                          refused=[], face_ids=[f.face_id for f in existing],
                                                          already_indexed=True))
                early.append(ImageOutcome(source, external_id, result=IndexResult(
                    indexed=tuple(f.to_dict() for f in existing), unindexed=(), already_indexed=True)))
                continue
        rows.append({"source": source, "external_id": external_id or ""})
    done = skipped
    if early:
        outcomes += early
        done += len(early)
        if progress is not None:
            progress(done, total, early)
    if not rows:
        return RayIndexReport(outcomes=tuple(outcomes), skipped=skipped, workers=workers, seconds=0.0)

    started = _connect(address, workers)
    ray = _ray()
    t0 = time.perf_counter()
    writer = 0.0
    try:
        ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / worker_batch)))
        ds = ds.map_batches(_FaceWorker, fn_constructor_kwargs={"config": engine.config, "options": options},
                            batch_size=worker_batch, batch_format="numpy", num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=workers))
        for batch in ds.iter_batches(batch_size=commit_batch, batch_format="numpy", prefetch_batches=1):
            t1 = time.perf_counter()
            committed = _commit(engine, collection, batch, enrol, actor)
            writer += time.perf_counter() - t1
            outcomes += committed
            done += len(committed)
            if progress is not None:
                progress(done, total, committed)
    finally:
        seconds = time.perf_counter() - t0
        if started:
            ray.shutdown()
    return RayIndexReport(outcomes=tuple(outcomes), skipped=skipped, workers=workers, seconds=seconds,
                          writer_seconds=writer)


def _commit(engine: Engine, collection: str, batch: dict[str, npt.NDArray[Any]], enrol: dict[str, Any],
            actor: Actor | None) -> list[ImageOutcome]:
    """Commit one batch of the workers' results (one transaction) and say what became of each image."""
    got: list[tuple[EmbeddedImage | ImageFailure, int]] = [
        (pickle.loads(blob), int(pid)) for blob, pid in zip(batch["outcome"], batch["pid"], strict=True)]
    embedded = [(e, pid) for e, pid in got if isinstance(e, EmbeddedImage)]
    results = engine.index_embedded(collection, [e for e, _ in embedded], actor=actor, **enrol)
    out = [ImageOutcome(e.source, e.external_image_id, result=r, worker_pid=pid)
           for (e, pid), r in zip(embedded, results, strict=True)]
    out += [ImageOutcome(e.source, e.external_image_id, error=e, worker_pid=pid)
            for e, pid in got if isinstance(e, ImageFailure)]
    return out
