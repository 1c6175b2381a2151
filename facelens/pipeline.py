"""image -> detections -> aligned crops -> quality and embeddings, in one obvious loop.

The work one image can cost is bounded: at most ``config.max_faces_per_image`` faces (the largest) go past
detection, only the faces asked for are embedded, in batches of :data:`EMBED_BATCH`, and a caller may stop
the work between faces and batches with a :class:`CancelToken` (the HTTP service does when a request
times out).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt

from .align import align_face
from .config import EngineConfig
from .errors import CancelledError
from .models.backends import Backend
from .models.scrfd import Detection
from .quality import estimate_pose, measure_quality, refusal_reasons
from .types import BBox, Face, QualityFilter

__all__ = ["EMBED_BATCH", "CancelToken", "CancelledError", "FaceList", "Pipeline", "cancellable", "check_cancelled",
           "commit_work"]

log = logging.getLogger(__name__)

# When nothing is found, retry once on the image centred on a canvas twice its size. A face that fills
# the frame (ID-photo crops, UTKFace's 200x200 chips) is larger than the detector's biggest anchors
# once letterboxed; padding shrinks it back into range. Measured on 200 UTKFace chips enlarged to
# 800x800 and letterboxed to 640: found in 0.5% without padding, 100% with it.
_FALLBACK_PAD = 0.5

#: Faces embedded per recogniser call. One call per image made the recogniser's working memory grow with
#: the number of faces. Measured (buffalo_s, 1 thread, 100 faces of a mosaic): peak RSS +56 MB in batches
#: of 8, +114 MB of 16, +235 MB of 32, same time (2.7 s); one call for 1,023 faces: +3,990 MB.
EMBED_BATCH = 8


class CancelToken:
    """A flag that stops work run under :func:`cancellable` at its next check (between faces and between
    embedding batches), until the work *commits*: past :func:`commit_work` it finishes and is reported
    (recorded in the log, returned) whatever happens, and :meth:`cancel` says so by returning False.
    Safe to use from any thread.

    ``reason``: the message of the :class:`CancelledError` the work raises (and records) once cancelled."""

    def __init__(self, reason: str = "the work was cancelled: its caller stopped waiting for it") -> None:
        self.reason = reason
        self._lock = threading.Lock()
        self._state = "open"  # open -> cancelled, or open -> committed; never both

    def cancel(self) -> bool:
        """Stop the work at its next check; False if it has already committed (it will finish, and its
        caller should wait for its result), True if it is cancelled now (or was already)."""
        with self._lock:
            if self._state == "committed":
                return False
            self._state = "cancelled"
            return True

    def commit(self) -> bool:
        """Mark the point of no return; False if the work was cancelled first (it must stop, leaving what
        it did recorded as cancelled), True if it will now finish whatever :meth:`cancel` says."""
        with self._lock:
            if self._state == "cancelled":
                return False
            self._state = "committed"
            return True

    @property
    def cancelled(self) -> bool:
        with self._lock:
            return self._state == "cancelled"

    @property
    def committed(self) -> bool:
        with self._lock:
            return self._state == "committed"


_current = threading.local()


@contextmanager
def cancellable(token: CancelToken) -> Iterator[CancelToken]:
    """Run the engine calls of this block, in this thread, under ``token``: once it is cancelled they raise
    :class:`CancelledError` at their next check instead of finishing."""
    previous = getattr(_current, "token", None)
    _current.token = token
    try:
        yield token
    finally:
        _current.token = previous


def check_cancelled() -> None:
    """Raise :class:`CancelledError` if this thread's work (see :func:`cancellable`) has been cancelled."""
    token: CancelToken | None = getattr(_current, "token", None)
    if token is not None and token.cancelled:
        raise CancelledError(token.reason)


def commit_work() -> None:
    """The point of no return of this thread's work (see :func:`cancellable`): raise
    :class:`CancelledError` if it was cancelled before, else commit it, so that a later cancel is refused
    and the work finishes (the engine calls this just before it records and returns what it did)."""
    token: CancelToken | None = getattr(_current, "token", None)
    if token is not None and not token.commit():
        raise CancelledError(token.reason)


class FaceList(list[Face]):
    """The faces of one image, largest first, and ``faces_over_limit``: how many more faces were detected
    but left out because of ``EngineConfig.max_faces_per_image`` (faces left out by a caller's own
    ``max_faces`` are not counted)."""

    def __init__(self, faces: Iterable[Face] = (), *, faces_over_limit: int = 0) -> None:
        super().__init__(faces)
        self.faces_over_limit = faces_over_limit


class Pipeline:
    """Runs one backend with one configuration over decoded (H, W, 3) uint8 RGB images."""

    def __init__(self, backend: Backend, config: EngineConfig) -> None:
        self.backend = backend
        self.config = config

    def _detect_once(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        cfg = self.config
        h, w = rgb.shape[:2]
        size = cfg.det_size
        if not cfg.det_upscale and max(h, w) < size:
            size = max(32, -(-max(h, w) // 32) * 32)  # the image's own size, rounded up to 32
        return self.backend.detector.detect(
            rgb, input_size=size, score_threshold=cfg.det_threshold, nms_threshold=cfg.nms_threshold)

    def detect(self, rgb: npt.NDArray[np.uint8], *, pad_retry: bool = True) -> list[Detection]:
        """Detections in image pixels, largest face first, faces below ``min_face_size`` dropped.

        ``pad_retry``: when nothing is found, look again on the image padded to twice its size (a face
        filling the frame); video turns it off, where most face-less frames are just empty scenes."""
        dets = self._detect_once(rgb)
        if not dets and pad_retry:
            h, w = rgb.shape[:2]
            pad = int(round(max(h, w) * _FALLBACK_PAD))
            padded = np.zeros((h + 2 * pad, w + 2 * pad, 3), dtype=np.uint8)
            padded[pad : pad + h, pad : pad + w] = rgb
            offset = np.array([pad, pad], dtype=np.float32)
            dets = [
                Detection(box=d.box - np.tile(offset, 2), score=d.score, landmarks=d.landmarks - offset)
                for d in self._detect_once(padded)
            ]
            if dets:
                log.debug("found %d face(s) only after padding (face fills the frame)", len(dets))
        min_size = self.config.min_face_size
        dets = [d for d in dets if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= min_size]
        dets.sort(key=lambda d: -float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
        return dets

    def faces(
        self,
        rgb: npt.NDArray[np.uint8],
        *,
        embed: bool,
        max_faces: int | None = None,
        quality_filter: QualityFilter | None = None,
        embed_acceptable: int | None = None,
        pad_retry: bool = True,
    ) -> FaceList:
        """Detect, align, assess and (optionally) embed the faces of one image, largest first.

        At most ``max_faces`` and at most ``config.max_faces_per_image`` faces are kept. ``embed`` embeds
        them all; ``embed_acceptable=N`` instead embeds only the first N faces that pass the quality filter
        (indexing: refused faces are never embedded), the others keep ``embedding=None``. Quality and
        refusals come from the aligned crops, before any embedding. Checks :func:`check_cancelled` between
        faces and between embedding batches.
        """
        qf = self.config.quality_filter if quality_filter is None else quality_filter
        dets = self.detect(rgb)
        wanted = len(dets) if max_faces is None else min(len(dets), max_faces)
        kept = min(wanted, self.config.max_faces_per_image)
        if kept < wanted:
            log.info("image has %d faces: kept the largest %d (max_faces_per_image)", wanted, kept)
        dets = dets[:kept]
        aligned: list[npt.NDArray[np.uint8]] = []
        faces: list[Face] = []
        # the detector's second look (SCRFD.confirm_score) refuses face-like patterns such as animals;
        # it costs a detector run per face, so it is taken only for faces nothing else refuses
        confirm = getattr(self.backend.detector, "confirm_score", None) if qf is not QualityFilter.NONE else None
        for d in dets:
            check_cancelled()
            crop = align_face(rgb, d.landmarks)
            box = BBox(*(float(v) for v in d.box))
            pose = estimate_pose(d.landmarks)
            quality = measure_quality(crop, min(box.width, box.height))
            reasons = refusal_reasons(d.score, pose, quality, qf)
            if confirm is not None and not reasons:
                reasons = refusal_reasons(d.score, pose, quality, qf, confirmed_score=confirm(rgb, d.box))
            aligned.append(crop)
            faces.append(Face(
                bbox=box,
                score=d.score,
                landmarks=tuple((float(x), float(y)) for x, y in d.landmarks),
                pose=pose,
                quality=quality,
                refusal_reasons=reasons,
                quality_filter=qf,
            ))
        if embed_acceptable is not None:
            chosen = [i for i, f in enumerate(faces) if f.acceptable][:embed_acceptable]
        else:
            chosen = list(range(len(faces))) if embed else []
        vectors = self._embed(rgb, [dets[i] for i in chosen], [aligned[i] for i in chosen])
        for i, vector in zip(chosen, vectors, strict=True):
            faces[i] = dataclasses.replace(faces[i], embedding=vector)
        return FaceList(faces, faces_over_limit=wanted - kept)

    def _embed(self, rgb: npt.NDArray[np.uint8], dets: list[Detection],
               aligned: list[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.float32]]:
        """Embeddings of ``dets`` (aligned crops given), in batches of :data:`EMBED_BATCH`, checking
        :func:`check_cancelled` before each batch."""
        out: list[npt.NDArray[np.float32]] = []
        for start in range(0, len(dets), EMBED_BATCH):
            check_cancelled()
            crops = np.stack(aligned[start : start + EMBED_BATCH])
            out.extend(self.backend.recognizer.embed(rgb, dets[start : start + EMBED_BATCH], crops))
        return out

    def embed_faces(self, rgb: npt.NDArray[np.uint8], faces: Iterable[Face]) -> list[Face]:
        """The align+embed step on its own: ``faces`` (found in ``rgb`` by :meth:`faces` without
        embeddings) with their embeddings, in the same order."""
        faces = list(faces)
        dets = [Detection(box=np.asarray(f.bbox.as_list(), dtype=np.float32), score=f.score,
                          landmarks=np.asarray(f.landmarks, dtype=np.float32)) for f in faces]
        vectors = self._embed(rgb, dets, [align_face(rgb, d.landmarks) for d in dets])
        return [dataclasses.replace(f, embedding=v) for f, v in zip(faces, vectors, strict=True)]
