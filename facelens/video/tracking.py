"""Face tracking between detections: ByteTrack's association (two rounds of IoU matching, confident
detections first, then the doubtful ones against tracks already followed) solved with scipy's
``linear_sum_assignment``, and a constant-velocity prediction in seconds (not frames), so that detections
every Nth frame of a variable-frame-rate video are matched as well as every frame.

Why not a tracking library: Roboflow's ``trackers`` (Apache-2.0) works with opencv-python-headless when
installed with ``--no-deps``, but declares non-headless ``opencv-python`` (both install a ``cv2``
package, so a plain ``pip install`` of facelens would overwrite one with the other) and pulls in
``supervision`` and five more packages for one association step; ``norfair`` pins numpy < 2; ``boxmot``
is AGPL-3.0 and needs torch. Faces move little between detections, and one detector gives every box, so
the association is all that is needed (docs/video.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

__all__ = ["Assignment", "FaceTracker", "TrackState", "iou_matrix"]


def iou_matrix(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Intersection over union of every box of ``a`` (n, 4) with every box of ``b`` (m, 4), [l, t, r, b]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


@dataclass(slots=True)
class TrackState:
    """A followed face: ``box`` where it was last seen (at ``last_s``), its velocity in pixels per
    second, when it was first seen, and how many detections it has had."""

    track_id: int
    box: npt.NDArray[np.float64]
    first_s: float
    last_s: float
    hits: int = 1
    velocity: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(4))
    seen_last_pass: bool = True

    def predicted(self, t: float) -> npt.NDArray[np.float64]:
        """Where the box should be at time ``t`` if it keeps moving as it did (at most 0.5 s ahead)."""
        return self.box + self.velocity * min(max(t - self.last_s, 0.0), 0.5)


@dataclass(frozen=True, slots=True)
class Assignment:
    """The outcome of one detection pass: per detection the track it belongs to (``None``: a doubtful
    detection that matched no track), the tracks born, the tracks not seen in this pass (``missed``:
    they may come back), and the tracks ended (not seen for ``max_gap_s``)."""

    track_ids: tuple[int | None, ...]
    born: tuple[int, ...]
    missed: tuple[int, ...]
    ended: tuple[TrackState, ...]
    returned: tuple[tuple[int, float], ...] = ()
    """Tracks matched in this pass that the previous pass missed, with when they were last seen before:
    the face may be someone else who took the place (:meth:`FaceTracker.split` tells them apart)."""


class FaceTracker:
    """Assigns the boxes of successive detection passes to tracks.

    ``high_score``: detections at least this confident may start a track and are matched first;
    less confident ones only continue a track (ByteTrack's second round). ``min_iou``: the overlap, with
    the predicted box, that a match needs. ``max_gap_s``: a track not seen for this long has ended (a face
    missed by a few passes, or hidden for a moment, keeps its track).
    """

    def __init__(self, *, high_score: float = 0.6, min_iou: float = 0.2, max_gap_s: float = 1.0) -> None:
        self.high_score = high_score
        self.min_iou = min_iou
        self.max_gap_s = max_gap_s
        self.active: dict[int, TrackState] = {}
        self._next_id = 1

    def _match(self, tracks: list[TrackState], boxes: npt.NDArray[np.float64], t: float,
               min_iou: float) -> list[tuple[int, int]]:
        if not tracks or len(boxes) == 0:
            return []
        iou = iou_matrix(np.stack([tr.predicted(t) for tr in tracks]), boxes)
        rows, cols = linear_sum_assignment(-iou)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]

    def update(self, boxes: npt.ArrayLike, scores: npt.ArrayLike, t: float) -> Assignment:
        """Assign one pass's detections (``boxes`` (n, 4) [l, t, r, b] in pixels, ``scores`` (n,)) seen at
        time ``t`` (seconds) to tracks."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        ids: list[int | None] = [None] * len(b)
        tracks = list(self.active.values())
        high = [i for i in range(len(b)) if s[i] >= self.high_score]
        low = [i for i in range(len(b)) if s[i] < self.high_score]
        matched_tracks: set[int] = set()
        for r, c in self._match(tracks, b[high], t, self.min_iou):
            ids[high[c]] = tracks[r].track_id
            matched_tracks.add(r)
        rest = [i for i in range(len(tracks)) if i not in matched_tracks and tracks[i].seen_last_pass]
        for r, c in self._match([tracks[i] for i in rest], b[low], t, max(self.min_iou, 0.5)):
            ids[low[c]] = tracks[rest[r]].track_id
            matched_tracks.add(rest[r])
        born = []
        for i in high:
            if ids[i] is None:
                tr = TrackState(track_id=self._next_id, box=b[i].copy(), first_s=t, last_s=t)
                self._next_id += 1
                self.active[tr.track_id] = tr
                ids[i] = tr.track_id
                born.append(tr.track_id)
        returned = []
        for i, tid in enumerate(ids):
            if tid is None or tid in born:
                continue
            tr = self.active[tid]
            if not tr.seen_last_pass:
                returned.append((tid, tr.last_s))
            dt = t - tr.last_s
            if dt > 0:
                v = (b[i] - tr.box) / dt
                tr.velocity = v if tr.hits == 1 else 0.5 * tr.velocity + 0.5 * v
            tr.box, tr.last_s, tr.hits = b[i].copy(), t, tr.hits + 1
        seen = {tid for tid in ids if tid is not None}
        missed, ended = [], []
        for tid, tr in list(self.active.items()):
            tr.seen_last_pass = tid in seen
            if tid in seen:
                continue
            if t - tr.last_s > self.max_gap_s:
                ended.append(self.active.pop(tid))
            else:
                missed.append(tid)
        return Assignment(track_ids=tuple(ids), born=tuple(born), missed=tuple(missed), ended=tuple(ended),
                          returned=tuple(returned))

    def split(self, track_id: int, last_s: float) -> tuple[TrackState, int]:
        """A returned track's face is someone else: end the track as last seen at ``last_s`` and start a
        new one where the face is now; returns the ended track and the new track's id."""
        old = self.active.pop(track_id)
        new = TrackState(track_id=self._next_id, box=old.box.copy(), first_s=old.last_s, last_s=old.last_s)
        self._next_id += 1
        self.active[new.track_id] = new
        old.last_s = last_s
        return old, new.track_id

    def hold(self, t: float) -> None:
        """Nothing moved in the picture up to time ``t``: the tracks seen in the last pass are still there."""
        for tr in self.active.values():
            if tr.seen_last_pass:
                tr.last_s = max(tr.last_s, t)
                tr.velocity = np.zeros(4)

    def finish(self) -> list[TrackState]:
        """End every track (the video is over)."""
        out = list(self.active.values())
        self.active.clear()
        return out
