"""The video pipeline, composed of the engine's public steps: decode -> detect every Nth frame (still
scenes skipped) -> track -> embed a few faces per track (the largest, most frontal, sharpest) -> search
each track's embeddings in a collection.

What it costs: every frame is decoded (H.264 cannot skip frames), but only every ``every``-th frame is
converted to RGB and examined, and an examined frame whose 64-pixel grey thumbnail differs from the last
detected one by less than ``still_threshold`` grey levels on average is not detected at all: the faces
of the last detection are held. When a track starts or ends between two examined frames, the frames in
between (kept, decoded, since the last examined one) are searched by bisection for the first or last one
showing that face, so ``start_s`` and ``end_s`` are exact to a frame at a few extra detections per track.
The padded retry for faces that fill the picture never runs on video frames.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgumentError
from ..pipeline import check_cancelled
from ..quality import refusal_reasons
from ..types import BBox, Face, QualityFilter, SearchMode, SearchResult
from .decode import DecodedFrame, VideoInfo, VideoSource, open_video
from .tracking import Assignment, FaceTracker, iou_matrix

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["Track", "TrackBox", "VideoOptions", "VideoProgress", "VideoResult", "VideoStats", "face_rank",
           "run_video", "search_tracks"]

log = logging.getLogger(__name__)

_RANK_GAIN = 1.15  # a track is embedded again only for a face ranked this much better than its worst embedded one
_EMBED_SPACING_S = 0.5  # a track's embeddings are of faces at least this far apart in time (until it has its k)
_CROP_MARGIN = 0.25  # the best crop shows this much of the box's size around it on each side
_PRESENT_IOU = 0.2  # a face in a frame between two examined ones is the track's if it overlaps this much


@dataclass(frozen=True, slots=True)
class VideoOptions:
    """How a video is gone through.

    ``every``: examine every Nth decoded frame (1: all). ``still_threshold``: an examined frame whose grey
    thumbnail differs from the last detected frame's by less than this (mean absolute difference, grey
    levels out of 255) is not detected; its faces are those of the last detection (0 turns this off).
    ``max_still_s``: detect at least this often all the same. ``cut_threshold``: a frame whose thumbnail
    differs from the previous frame's by more than this (grey levels) starts a new shot: every track ends
    at the frame before it and the frame is examined at once (a face at the same place in the next shot
    is someone else until shown otherwise; 0 turns this off; measured on the hamilton clip: cuts 23-26,
    fast motion at most 11). ``embeddings_per_track``: how many faces of
    a track are embedded and searched (a better one replaces the worst; at most 4x this many embeddings
    are computed per track). ``quality_filter``: the faces that may be embedded (the detector's second
    look is not taken on video). ``min_detections``: tracks seen in fewer examined frames (detected, or held still)
    are dropped (a face detected once).
    ``box_interval_s``: the boxes of a track are kept at most this often. ``max_gap_s``: a face not seen
    for this long has left (its track ends where it was last seen). ``refine``: find the exact first and
    last frame of each track among the frames between examined ones.
    """

    every: int = 5
    still_threshold: float = 1.5
    cut_threshold: float = 18.0
    max_still_s: float = 2.0
    embeddings_per_track: int = 3
    quality_filter: QualityFilter = QualityFilter.LOW
    min_detections: int = 2
    box_interval_s: float = 0.2
    max_gap_s: float = 1.0
    refine: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise InvalidArgumentError(f"every must be an integer >= 1, got {self.every!r}")
        if not 0 <= self.still_threshold <= 255 or not 0 <= self.cut_threshold <= 255:
            raise InvalidArgumentError("still_threshold and cut_threshold must be in [0, 255] grey levels, got "
                                       f"{self.still_threshold} and {self.cut_threshold}")
        if self.embeddings_per_track < 1:
            raise InvalidArgumentError(f"embeddings_per_track must be >= 1, got {self.embeddings_per_track}")
        if self.min_detections < 1:
            raise InvalidArgumentError(f"min_detections must be >= 1, got {self.min_detections}")
        if not self.max_gap_s > 0 or not self.max_still_s >= 0 or not self.box_interval_s >= 0:
            raise InvalidArgumentError("max_gap_s must be > 0, max_still_s and box_interval_s >= 0")


@dataclass(frozen=True, slots=True)
class TrackBox:
    """Where a track's face was at ``time_s`` (seconds), and the detector's score."""

    time_s: float
    bbox: BBox
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": round(self.time_s, 3), "bbox": [round(v, 1) for v in self.bbox.as_list()],
                "score": round(self.score, 3)}


@dataclass(frozen=True, slots=True, eq=False)
class Track:
    """One person's face followed through the video.

    ``start_s``/``end_s``: the presentation times of the first and last frames showing it. ``boxes``: its
    boxes over time (one per detection, at most every ``box_interval_s``). ``best_face``/``best_time_s``/
    ``best_crop``: its best-ranked face (:func:`face_rank`), and an RGB crop of the frame around it, for a
    reviewer. ``embeddings``: the (k, d) embeddings searched (None for ``detect_video``, or when no face of
    the track passed the quality filter), taken at ``embedding_times``. ``search``: the collection search
    of those embeddings (:meth:`facelens.Engine.search_faces_by_embedding`), ``None`` without one.
    """

    track_id: int
    start_s: float
    end_s: float
    detections: int
    boxes: tuple[TrackBox, ...]
    best_face: Face
    best_time_s: float
    best_crop: npt.NDArray[np.uint8] = field(repr=False)
    embeddings: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    embedding_times: tuple[float, ...] = ()
    search: SearchResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape (``facelens video ... --json``)."""
        d: dict[str, Any] = {"track_id": self.track_id, "start_s": round(self.start_s, 3),
                             "end_s": round(self.end_s, 3), "detections": self.detections,
                             "best_time_s": round(self.best_time_s, 3), "best_face": self.best_face.to_dict(),
                             "embeddings": 0 if self.embeddings is None else len(self.embeddings),
                             "embedding_times": [round(t, 3) for t in self.embedding_times],
                             "boxes": [b.to_dict() for b in self.boxes]}
        if self.search is not None:
            d["search"] = self.search.to_dict()
        return d


@dataclass(frozen=True, slots=True)
class VideoStats:
    """The work done: frames decoded, examined, detected (examined frames that moved), held still
    (examined, not detected), shot cuts found, extra detections to find tracks' first and last frames,
    faces detected, faces embedded, seconds of video gone through and of wall time spent."""

    frames_decoded: int
    frames_examined: int
    frames_detected: int
    frames_still: int
    cuts: int
    refine_detections: int
    faces_detected: int
    faces_embedded: int
    video_s: float
    elapsed_s: float

    @property
    def speed(self) -> float:
        """Seconds of video per second of wall time (3.0: three times faster than real time)."""
        return self.video_s / self.elapsed_s if self.elapsed_s > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"frames_decoded": self.frames_decoded, "frames_examined": self.frames_examined,
                "frames_detected": self.frames_detected, "frames_still": self.frames_still, "cuts": self.cuts,
                "refine_detections": self.refine_detections, "faces_detected": self.faces_detected,
                "faces_embedded": self.faces_embedded, "video_s": round(self.video_s, 3),
                "elapsed_s": round(self.elapsed_s, 3), "speed": round(self.speed, 2)}


@dataclass(frozen=True, slots=True, eq=False)
class VideoResult:
    """Who appeared in a video and when: its tracks by start time, what the container said about it, and
    the work done. ``collection`` and ``mode`` are those of the search (``None`` for ``detect_video``)."""

    info: VideoInfo
    tracks: tuple[Track, ...]
    stats: VideoStats
    collection: str | None = None
    mode: SearchMode | None = None

    def per_frame(self) -> list[dict[str, Any]]:
        """Rekognition GetFaceSearch's form: one record per sampled box of every track, by time:
        ``timestamp_ms``, ``person`` (``index``: the track id, ``bbox``, ``score``) and ``face_matches``
        (the track's matches, or its candidates when investigating; the same for all of a track's boxes)."""
        out: list[dict[str, Any]] = []
        for t in self.tracks:
            s = t.search
            found = [] if s is None else [m.to_dict() for m in s.matches] or [c.to_dict() for c in s.candidates]
            for b in t.boxes:
                out.append({"timestamp_ms": int(round(b.time_s * 1000)),
                            "person": {"index": t.track_id, "bbox": [round(v, 1) for v in b.bbox.as_list()],
                                       "score": round(b.score, 3)},
                            "face_matches": found})
        out.sort(key=lambda r: (int(r["timestamp_ms"]), int(r["person"]["index"])))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"video": self.info.to_dict(), "collection": self.collection,
                "mode": None if self.mode is None else self.mode.value,
                "tracks": [t.to_dict() for t in self.tracks], "stats": self.stats.to_dict()}


@dataclass(frozen=True, slots=True)
class VideoProgress:
    """Where a video's processing is: ``time_s`` reached of ``duration_s`` (``None``: unknown), frames
    decoded, tracks so far, wall time spent."""

    time_s: float
    duration_s: float | None
    frames_decoded: int
    tracks: int
    elapsed_s: float


ProgressCallback = Callable[[VideoProgress], None]


SAME_PERSON_FMR = 0.01
"""A face that takes a track's place after a miss is the same person when it scores at least the threshold
of this false-match rate against one of the track's embeddings (:func:`same_person_score`)."""


def same_person_score(engine: Engine) -> float:
    """The cosine score at :data:`SAME_PERSON_FMR`: under it, a returned track's face is someone else."""
    return engine.operating_point(max_fmr=SAME_PERSON_FMR).threshold


def face_rank(face: Face) -> float:
    """How good a face is for recognition, in (0, 1]: larger (up to the recogniser's 112 pixels), more
    frontal, sharper and more confidently detected is better. Chooses which faces of a track are embedded
    and which crop is shown."""
    size = min(face.quality.face_size, 112.0) / 112.0
    frontal = max(math.cos(math.radians(min(abs(face.pose.yaw), 89.0))), 0.01) * \
        max(math.cos(math.radians(min(abs(face.pose.pitch), 89.0))), 0.01)
    sharp = 0.5 + 0.5 * face.quality.sharpness / 100.0
    return max(size * frontal * sharp * face.score, 1e-6)


class _Build:
    """A track being built (mutable, private to one run)."""

    __slots__ = ("best", "box_t", "boxes", "embed_count", "embeds", "held", "hits", "start_s")

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s
        self.hits = 0
        self.held = 0  # examined frames that showed it still, without a detection
        self.boxes: list[TrackBox] = []
        self.box_t = -math.inf
        self.best: tuple[float, Face, float, npt.NDArray[np.uint8]] | None = None
        self.embeds: list[tuple[float, npt.NDArray[np.float32], float]] = []  # (rank, vector, time)
        self.embed_count = 0


def _crop(rgb: npt.NDArray[np.uint8], box: BBox) -> npt.NDArray[np.uint8]:
    h, w = rgb.shape[:2]
    mx, my = box.width * _CROP_MARGIN, box.height * _CROP_MARGIN
    left, top = max(int(box.left - mx), 0), max(int(box.top - my), 0)
    right, bottom = min(int(math.ceil(box.right + mx)), w), min(int(math.ceil(box.bottom + my)), h)
    return np.ascontiguousarray(rgb[top:max(bottom, top + 1), left:max(right, left + 1)])


def _boxes(faces: list[Face]) -> npt.NDArray[np.float64]:
    return np.array([f.bbox.as_list() for f in faces], dtype=np.float64).reshape(-1, 4)


class _Run:
    """One pass over a video (see the module's docstring)."""

    def __init__(self, engine: Engine, options: VideoOptions, *, embed: bool,
                 progress: ProgressCallback | None) -> None:
        self.engine = engine
        self.o = options
        self.embed = embed
        self.progress = progress
        self.tracker = FaceTracker(max_gap_s=options.max_gap_s)
        self.builds: dict[int, _Build] = {}
        self.done: list[tuple[_Build, float]] = []  # (track, end_s)
        self.n_decoded = self.n_examined = self.n_detected = self.n_still = self.n_refine = self.n_cuts = 0
        self.n_faces = self.n_embedded = self.n_splits = 0
        self._same: float | None = None
        self.t0 = time.perf_counter()

    def detect(self, frame: DecodedFrame) -> list[Face]:
        return list(self.engine.detect(frame.rgb(), quality_filter=QualityFilter.NONE, pad_retry=False))

    def run(self, source: VideoSource | Path) -> tuple[VideoInfo, list[Track], VideoStats]:
        o = self.o
        with open_video(source, max_pixels=self.engine.config.max_pixels) as reader:
            info = reader.info
            pending: list[DecodedFrame] = []
            last_thumb: npt.NDArray[np.float32] | None = None  # the last detected frame's
            prev_thumb: npt.NDArray[np.float32] | None = None  # the previous decoded frame's
            last_detect_s = -math.inf
            last_examined = -(10**9)
            seen_before: set[int] = set()
            next_report = 0.0
            t = 0.0
            for frame in reader.frames():
                check_cancelled()
                self.n_decoded += 1
                t = frame.time_s
                if self.progress is not None and t >= next_report:
                    self._report(t, info.duration_s)
                    next_report = t + 1.0
                thumb = frame.thumbnail() if o.still_threshold > 0 or o.cut_threshold > 0 else None
                cut = (o.cut_threshold > 0 and thumb is not None and prev_thumb is not None
                       and float(np.mean(np.abs(thumb - prev_thumb))) > o.cut_threshold)
                prev_thumb = thumb
                if cut:
                    self.n_cuts += 1
                    self._end_all(pending, seen_before)
                    seen_before, last_thumb = set(), None
                    pending.clear()
                elif frame.index - last_examined < o.every:
                    if o.refine:
                        pending.append(frame)
                    continue
                last_examined = frame.index
                self.n_examined += 1
                if (o.still_threshold > 0 and thumb is not None and last_thumb is not None
                        and t - last_detect_s < o.max_still_s
                        and float(np.mean(np.abs(thumb - last_thumb))) < o.still_threshold):
                    self.tracker.hold(t)
                    for tid in seen_before:
                        self.builds[tid].held += 1
                    self.n_still += 1
                    pending.clear()
                    continue
                faces = self.detect(frame)
                self.n_detected += 1
                self.n_faces += len(faces)
                last_thumb, last_detect_s = thumb, t
                a = self.tracker.update(_boxes(faces), [f.score for f in faces], t)
                cache: dict[int, npt.NDArray[np.float64]] = {}
                for tid in a.born:
                    box = _boxes([faces[a.track_ids.index(tid)]])[0]
                    start = self._first_present(pending, box, cache) if pending else None
                    self.builds[tid] = _Build(t if start is None else start)
                for tid in a.missed:
                    if tid in seen_before and pending:
                        st = self.tracker.active[tid]
                        last = self._last_present(pending, st.box, cache)
                        if last is not None:
                            st.last_s = last
                for st in a.ended:
                    self.done.append((self.builds.pop(st.track_id), st.last_s))
                track_ids = self._check_returned(frame, faces, a) if self.embed and a.returned else a.track_ids
                self._observe(frame, faces, track_ids)
                seen_before = {tid for tid in track_ids if tid is not None}
                for f in pending:
                    f.release()
                pending.clear()
                frame.release()
            self._end_all(pending, seen_before)
            if self.progress is not None:
                self._report(t, info.duration_s)
        tracks = self._tracks()
        video_s = t + (1.0 / info.fps if info.fps else 0.0) if self.n_decoded else 0.0
        stats = VideoStats(frames_decoded=self.n_decoded, frames_examined=self.n_examined,
                           frames_detected=self.n_detected, frames_still=self.n_still, cuts=self.n_cuts,
                           refine_detections=self.n_refine, faces_detected=self.n_faces,
                           faces_embedded=self.n_embedded, video_s=video_s,
                           elapsed_s=time.perf_counter() - self.t0)
        return info, tracks, stats

    def _check_returned(self, frame: DecodedFrame, faces: list[Face], a: Assignment) -> tuple[int | None, ...]:
        """A track missed by the previous pass and matched again may be someone else who took the place
        (one person leaves, the next steps in): its face is embedded and compared with the track's
        embeddings; under the same-person score (the threshold of a 1% false-match rate) the track ends
        where it was last seen and a new one starts here. Returns the detections' track ids."""
        ids = list(a.track_ids)
        for tid, last_s in a.returned:
            b = self.builds.get(tid)
            if b is None or not b.embeds:
                continue
            i = ids.index(tid)
            face = self.engine.embed_faces(frame.rgb(), [faces[i]])[0]
            assert face.embedding is not None
            self.n_embedded += 1
            if max(float(np.dot(face.embedding, e[1])) for e in b.embeds) >= self._same_person():
                continue
            ended, new_id = self.tracker.split(tid, last_s)
            self.done.append((self.builds.pop(tid), ended.last_s))
            self.builds[new_id] = _Build(frame.time_s)
            ids[i] = new_id
            self.n_splits += 1
        return tuple(ids)

    def _same_person(self) -> float:
        if self._same is None:
            self._same = same_person_score(self.engine)
        return self._same

    def _end_all(self, pending: list[DecodedFrame], seen_before: set[int]) -> None:
        """A new shot starts, or the video ends: every track ends at the last frame showing it (among
        ``pending``, the frames since the last examined one, for those seen there)."""
        cache: dict[int, npt.NDArray[np.float64]] = {}
        for st in self.tracker.finish():
            if st.track_id in seen_before and pending:
                last = self._last_present(pending, st.box, cache)
                if last is not None:
                    st.last_s = last
            self.done.append((self.builds.pop(st.track_id), st.last_s))
        for f in pending:
            f.release()

    def _report(self, t: float, duration: float | None) -> None:
        assert self.progress is not None
        self.progress(VideoProgress(time_s=t, duration_s=duration, frames_decoded=self.n_decoded,
                                    tracks=len(self.builds) + len(self.done),
                                    elapsed_s=time.perf_counter() - self.t0))

    def _present(self, frame: DecodedFrame, box: npt.NDArray[np.float64],
                 cache: dict[int, npt.NDArray[np.float64]]) -> bool:
        """Whether a face overlapping ``box`` shows in a frame between two examined ones."""
        boxes = cache.get(frame.index)
        if boxes is None:
            check_cancelled()
            boxes = cache[frame.index] = _boxes(self.detect(frame))
            self.n_refine += 1
        return bool(len(boxes)) and float(iou_matrix(box[None, :], boxes).max()) >= _PRESENT_IOU

    def _first_present(self, pending: list[DecodedFrame], box: npt.NDArray[np.float64],
                       cache: dict[int, npt.NDArray[np.float64]]) -> float | None:
        """The time of the first of ``pending`` showing the face (None: none does), by bisection."""
        lo, hi = 0, len(pending)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._present(pending[mid], box, cache):
                hi = mid
            else:
                lo = mid + 1
        return pending[lo].time_s if lo < len(pending) else None

    def _last_present(self, pending: list[DecodedFrame], box: npt.NDArray[np.float64],
                      cache: dict[int, npt.NDArray[np.float64]]) -> float | None:
        """The time of the last of ``pending`` still showing the face (None: none does), by bisection."""
        lo, hi = 0, len(pending)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._present(pending[mid], box, cache):
                lo = mid + 1
            else:
                hi = mid
        return pending[lo - 1].time_s if lo > 0 else None

    def _observe(self, frame: DecodedFrame, faces: list[Face], track_ids: tuple[int | None, ...]) -> None:
        """Record one detection pass's faces in their tracks, and embed those worth it."""
        o = self.o
        t = frame.time_s
        to_embed: list[tuple[_Build, Face, float]] = []
        k = o.embeddings_per_track
        for face, tid in zip(faces, track_ids, strict=True):
            if tid is None:
                continue
            b = self.builds[tid]
            b.hits += 1
            if t - b.box_t >= o.box_interval_s:
                b.boxes.append(TrackBox(time_s=t, bbox=face.bbox, score=face.score))
                b.box_t = t
            rank = face_rank(face)
            if b.best is None or rank > b.best[0]:
                b.best = (rank, face, t, _crop(frame.rgb(), face.bbox))
            if not self.embed or b.embed_count >= 4 * k:
                continue
            if refusal_reasons(face.score, face.pose, face.quality, o.quality_filter):
                continue
            if not b.embeds:
                wanted = True
            elif len(b.embeds) < k:  # another view, not a copy of the last one: later and nearly as good
                wanted = (t - max(e[2] for e in b.embeds) >= _EMBED_SPACING_S
                          and rank * _RANK_GAIN > max(e[0] for e in b.embeds))
            else:  # a clearly better face replaces the worst one
                wanted = rank > min(e[0] for e in b.embeds) * _RANK_GAIN
            if wanted:
                to_embed.append((b, face, rank))
        if not to_embed:
            return
        embedded = self.engine.embed_faces(frame.rgb(), [f for _, f, _ in to_embed])
        self.n_embedded += len(embedded)
        for (b, _, rank), face in zip(to_embed, embedded, strict=True):
            assert face.embedding is not None
            b.embed_count += 1
            if len(b.embeds) >= k:
                b.embeds.remove(min(b.embeds, key=lambda e: e[0]))
            b.embeds.append((rank, face.embedding, t))

    def _tracks(self) -> list[Track]:
        kept = sorted((item for item in self.done if item[0].hits + item[0].held >= self.o.min_detections),
                      key=lambda item: item[0].start_s)
        tracks = []
        for n, (b, end_s) in enumerate(kept, 1):
            assert b.best is not None
            _, face, best_t, crop = b.best
            embeds = sorted(b.embeds, key=lambda e: e[2])
            tracks.append(Track(
                track_id=n, start_s=b.start_s, end_s=max(end_s, b.start_s), detections=b.hits,
                boxes=tuple(b.boxes), best_face=face, best_time_s=best_t, best_crop=crop,
                embeddings=np.stack([e[1] for e in embeds]) if embeds else None,
                embedding_times=tuple(e[2] for e in embeds)))
        return tracks


def run_video(engine: Engine, source: VideoSource | Path, *, options: VideoOptions, embed: bool,
              progress: ProgressCallback | None = None) -> tuple[VideoInfo, list[Track], VideoStats]:
    """Go through a video once: its tracks (embedded when ``embed``), what its container says, and the
    work done."""
    return _Run(engine, options, embed=embed, progress=progress).run(source)


def search_tracks(engine: Engine, collection: str, tracks: list[Track], **search: Any) -> list[Track]:
    """Each track with the collection search of its embeddings (tracks without any are kept unsearched)."""
    out = []
    for tr in tracks:
        check_cancelled()
        if tr.embeddings is None:
            out.append(tr)
            continue
        result = engine.search_faces_by_embedding(collection, tr.embeddings, **search)
        out.append(Track(track_id=tr.track_id, start_s=tr.start_s, end_s=tr.end_s, detections=tr.detections,
                         boxes=tr.boxes, best_face=tr.best_face, best_time_s=tr.best_time_s,
                         best_crop=tr.best_crop, embeddings=tr.embeddings, embedding_times=tr.embedding_times,
                         search=result))
    return out
