"""Pose, quality measures, and the quality filter that decides which faces may be indexed.

Pure functions over landmarks and aligned crops; no model. The pose is a geometric estimate from
five landmarks, good enough to refuse extreme poses, not to measure head orientation: on frontal
official portraits (congress-past, 400 photos) pitch averages +0.5 degrees with 90% of them within
-13..+13 (faces differ in nose length and in how far the head is tipped); coarser beyond 45 degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .types import Pose, Quality, QualityFilter, RefusalReason

__all__ = ["QualityLimits", "LIMITS", "estimate_pose", "measure_quality", "refusal_reasons"]

# Depth of the nose tip in front of the eye/mouth plane, as a fraction of the distance between the
# eyes (anthropometric average; drives the yaw and pitch estimates).
_NOSE_DEPTH = 0.5
# Where the nose tip lies between the eye line (0) and the mouth line (1) on a frontal face, as the detector
# places the landmarks: the median over the 400 frontal official portraits of congress-past (0.618; the 16
# bundled portraits give the same). The ArcFace alignment template's 0.495 read frontal portraits as
# looking down 13 degrees. See BENCHMARKS.md, "Detector scores: faces vs non-faces".
_FRONTAL_NOSE_T = 0.618


def estimate_pose(landmarks: npt.NDArray[np.floating]) -> Pose:
    """Yaw, pitch and roll in degrees from (5, 2) landmarks (see :class:`facelens.Pose` for signs)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    le, re, nose, lm, rm = pts
    roll = math.degrees(math.atan2(re[1] - le[1], re[0] - le[0]))
    # Undo the roll about the eye midpoint so that the eye line is horizontal.
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    rot = np.array([[c, -s], [s, c]])
    eye_mid = (le + re) / 2.0
    le, re, nose, lm, rm = ((p - eye_mid) @ rot.T for p in (le, re, nose, lm, rm))
    iod = max(float(np.linalg.norm(re - le)), 1e-6)
    mouth_mid = (lm + rm) / 2.0
    mid_x = mouth_mid[0] / 2.0  # midline between eye midpoint (x = 0) and mouth midpoint
    depth = _NOSE_DEPTH * iod
    yaw = math.degrees(math.atan2(nose[0] - mid_x, depth))
    eye_to_mouth = max(float(mouth_mid[1]), 1e-6)
    t = nose[1] / eye_to_mouth
    pitch = math.degrees(math.atan2((_FRONTAL_NOSE_T - t) * eye_to_mouth, depth))
    return Pose(yaw=yaw, pitch=pitch, roll=roll)


def measure_quality(aligned: npt.NDArray[np.uint8], box_size: float) -> Quality:
    """Sharpness and brightness on the aligned (s, s, 3) crop; ``box_size``: shorter box side."""
    import cv2

    s = aligned.shape[0]
    m = s // 7  # the warp leaves black borders on tilted faces: measure the central region only
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)[m : s - m, m : s - m]
    lap_var = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    sharpness = 100.0 * lap_var / (lap_var + 100.0)
    brightness = 100.0 * float(grey.mean()) / 255.0
    return Quality(sharpness=sharpness, brightness=brightness, face_size=float(box_size))


@dataclass(frozen=True, slots=True)
class QualityLimits:
    """The limits one quality-filter level applies; a face failing any is refused for that reason."""

    min_face_size: float
    min_score: float
    min_sharpness: float
    min_brightness: float
    max_yaw: float
    max_pitch: float
    min_confirmed_score: float
    """Lowest score the detector may give the face on its second look (``SCRFD.confirm_score``)."""


# max_pitch: the pitch estimate was recentred on frontal portraits (+13 degrees for most faces); MEDIUM
# and HIGH were widened by 5 and 10 so that none of LFW, UTKFace, congress-past or congress-historical has
# more faces refused for pose than before. min_confirmed_score: 0.5 is the detector's own threshold (on
# the second look, no LFW/UTKFace/congress-past face scores below it, a dog's face scores 0.40); LOW's 0.3
# keeps 99.9% of congress-historical's engravings and paintings. Measured in BENCHMARKS.md.
LIMITS: dict[QualityFilter, QualityLimits] = {
    QualityFilter.LOW: QualityLimits(min_face_size=20, min_score=0.5, min_sharpness=5, min_brightness=8,
                                     max_yaw=75, max_pitch=60, min_confirmed_score=0.3),
    QualityFilter.MEDIUM: QualityLimits(min_face_size=40, min_score=0.6, min_sharpness=15,
                                        min_brightness=15, max_yaw=55, max_pitch=50, min_confirmed_score=0.5),
    QualityFilter.HIGH: QualityLimits(min_face_size=80, min_score=0.7, min_sharpness=30,
                                      min_brightness=25, max_yaw=35, max_pitch=40, min_confirmed_score=0.5),
}
LIMITS[QualityFilter.AUTO] = LIMITS[QualityFilter.MEDIUM]


def refusal_reasons(score: float, pose: Pose, quality: Quality, quality_filter: QualityFilter, *,
                    confirmed_score: float | None = None) -> tuple[RefusalReason, ...]:
    """Why a face would be refused for indexing under ``quality_filter`` (empty when acceptable).

    ``confirmed_score``: the detector's score on a second look at the face (``SCRFD.confirm_score``),
    when the detector has one; below the level's ``min_confirmed_score`` the face is refused as
    ``LOW_CONFIDENCE``, as for a low first score. A face-like pattern (an animal) can score as high as
    real faces at the first look and is told apart by the second. ``None`` skips that check.
    """
    limits = LIMITS.get(quality_filter)
    if limits is None:  # QualityFilter.NONE
        return ()
    reasons: list[RefusalReason] = []
    if quality.face_size < limits.min_face_size:
        reasons.append(RefusalReason.SMALL_BOUNDING_BOX)
    if quality.sharpness < limits.min_sharpness:
        reasons.append(RefusalReason.LOW_SHARPNESS)
    if quality.brightness < limits.min_brightness:
        reasons.append(RefusalReason.LOW_BRIGHTNESS)
    if abs(pose.yaw) > limits.max_yaw or abs(pose.pitch) > limits.max_pitch:
        reasons.append(RefusalReason.EXTREME_POSE)
    if score < limits.min_score or (confirmed_score is not None and confirmed_score < limits.min_confirmed_score):
        reasons.append(RefusalReason.LOW_CONFIDENCE)
    return tuple(reasons)
