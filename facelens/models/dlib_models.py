"""The dlib backend: HOG detector, 5-point shape predictor and ResNet recogniser (128-d).

These are the models the face_recognition library runs (install with ``pip install facelens[dlib]``).
dlib's 5-point predictor marks eye corners and the base of the nose but no mouth; facelens estimates
the two mouth corners from the eye and nose points (for pose and quality only: dlib aligns and embeds
from its own shape). Detector scores are HOG SVM margins mapped to (0, 1) by a logistic function, so
the default threshold 0.5 is dlib's own margin of 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from .files import KNOWN_FILES, packaged
from .scrfd import Detection

__all__ = ["DlibDetector", "DlibRecognizer", "open_dlib_backend"]


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise ModelError(
            "the dlib backend needs dlib: pip install 'facelens[dlib]' (dlib-bin, face-recognition-models)"
        ) from exc
    return dlib


class DlibDetector:
    """dlib's frontal-face HOG detector plus the 5-point shape predictor for landmarks.

    ``upsample`` is how many times the image is doubled before detection (face_recognition's default 1).
    ``input_size`` is ignored: HOG scans the whole image.
    """

    def __init__(self, predictor_path: Path, *, upsample: int = 1) -> None:
        dlib = _import_dlib()
        self._dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor_path))
        self.upsample = upsample

    def detect(self, rgb: npt.NDArray[np.uint8], *, input_size: int, score_threshold: float,
               nms_threshold: float) -> list[Detection]:
        margin = math.log(score_threshold / (1.0 - score_threshold)) if 0 < score_threshold < 1 else 0.0
        rects, scores, _ = self.hog.run(rgb, self.upsample, margin)
        out = []
        for rect, s in sorted(zip(rects, scores, strict=True), key=lambda rs: -rs[1]):
            pts = self.predictor(rgb, rect)
            out.append(Detection(
                box=np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32),
                score=float(1.0 / (1.0 + math.exp(-s))),
                landmarks=five_points(np.array([[p.x, p.y] for p in pts.parts()], dtype=np.float32)),
            ))
        return out


def five_points(dlib5: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """facelens' 5 landmarks from dlib's 5 points (right-eye corners, left-eye corners, nose base).

    dlib's points 0-1 are the corners of the eye on the picture's right, 2-3 of the eye on the left.
    Mouth corners are estimated on the ArcFace template's proportions: the mouth lies ~0.55 of the
    eye-to-nose-base distance below the nose base, and is ~0.83 as wide as the eye spacing.
    """
    right_eye = dlib5[0:2].mean(axis=0)
    left_eye = dlib5[2:4].mean(axis=0)
    nose = dlib5[4]
    eye_mid = (left_eye + right_eye) / 2.0
    across = (right_eye - left_eye) / 2.0
    down = nose - eye_mid
    mouth_mid = nose + 0.55 * down
    points = [left_eye, right_eye, nose, mouth_mid - 0.83 * across, mouth_mid + 0.83 * across]
    return np.stack(points).astype(np.float32)


class DlibRecognizer:
    """dlib's ResNet face descriptor (128-d), L2-normalised so scores are cosine similarities."""

    embedding_size = 128

    def __init__(self, resnet_path: Path, predictor: Any) -> None:
        dlib = _import_dlib()
        self._dlib = dlib
        self.model = dlib.face_recognition_model_v1(str(resnet_path))
        self.predictor = predictor

    def embed(self, rgb: npt.NDArray[np.uint8], detections: Sequence[Detection],
              aligned: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        if not detections:
            return np.zeros((0, 128), dtype=np.float32)
        shapes = self._dlib.full_object_detections()
        for d in detections:
            left, top, right, bottom = (int(round(float(v))) for v in d.box)
            shapes.append(self.predictor(rgb, self._dlib.rectangle(left, top, right, bottom)))
        vecs = np.asarray(self.model.compute_face_descriptor(rgb, shapes, 1), dtype=np.float32)
        vecs = vecs.reshape(len(detections), 128)
        unit: npt.NDArray[np.float32] = (vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
                                         ).astype(np.float32)
        return unit


def open_dlib_backend(*, calibration_path: Path) -> Any:
    from .backends import Backend

    det = DlibDetector(packaged("dlib_shape_predictor_5"))
    rec = DlibRecognizer(packaged("dlib_resnet_v1"), det.predictor)
    return Backend(
        name="dlib",
        detector=det,
        recognizer=rec,
        model_sha256=KNOWN_FILES["dlib_resnet_v1"].sha256,
        calibration_path=calibration_path,
        licence=KNOWN_FILES["dlib_resnet_v1"].licence,
    )
