"""SCRFD face detector (InsightFace), ONNX, with 5 landmarks.

The model predicts, for each anchor of three feature maps (strides 8, 16 and 32, two anchors per
cell), a face score, the distances from the anchor centre to the four box sides and the offsets of
five landmarks. This wrapper letterboxes the image to the input size, decodes those outputs into
boxes in original-image pixels, and applies non-maximum suppression.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .onnx import open_session

__all__ = ["Detection", "SCRFD"]

_STRIDES = (8, 16, 32)
_ANCHORS_PER_CELL = 2

# The second look of :meth:`SCRFD.confirm_score`: the face with one face-size margin on each side (so it
# fills about a third of the view) letterboxed to this many pixels. Measured in BENCHMARKS.md ("Detector
# scores: faces vs non-faces"): a dog's face detected at 0.61 scores 0.40 there, while every real face
# among the LFW, UTKFace and congress-past faces measured keeps a score of 0.5 or more.
CONFIRM_INPUT_SIZE = 160
CONFIRM_MARGIN = 1.0


@dataclass(frozen=True, slots=True)
class Detection:
    """A raw detection: ``box`` (4,) ``[l, t, r, b]``, ``score``, ``landmarks`` (5, 2), in image pixels."""

    box: npt.NDArray[np.float32]
    score: float
    landmarks: npt.NDArray[np.float32]


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; returns kept indices in decreasing score order."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep


class SCRFD:
    """One SCRFD ONNX session; ``detect`` takes an RGB uint8 image.

    ``input_size`` is the square letterbox side in pixels (a multiple of 32): larger finds smaller
    faces and costs time quadratically.
    """

    def __init__(self, path: Path, *, intra_op_threads: int) -> None:
        self.path = path
        # always onnxruntime: OpenVINO runs this detector slower (its input size changes between images and
        # the confirming second look, and each new shape costs OpenVINO a reshape; BENCHMARKS.md)
        self.session = open_session(path, intra_op_threads=intra_op_threads, runtime="onnxruntime")
        self.input_name = self.session.get_inputs()[0].name
        self._centres: dict[tuple[int, int, int], npt.NDArray[np.float32]] = {}

    def _anchor_centres(self, height: int, width: int, stride: int) -> npt.NDArray[np.float32]:
        key = (height, width, stride)
        c = self._centres.get(key)
        if c is None:
            ys, xs = np.mgrid[:height, :width]
            c = np.stack([xs, ys], axis=-1).astype(np.float32).reshape(-1, 2) * stride
            c = np.repeat(c, _ANCHORS_PER_CELL, axis=0)
            self._centres[key] = c
        return c

    def detect(
        self,
        rgb: npt.NDArray[np.uint8],
        *,
        input_size: int,
        score_threshold: float,
        nms_threshold: float,
    ) -> list[Detection]:
        """Detect faces in an (H, W, 3) uint8 RGB image; results sorted by decreasing score."""
        import cv2

        h, w = rgb.shape[:2]
        scale = min(input_size / h, input_size / w)
        new_w, new_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
        canvas = np.zeros((input_size, input_size, 3), dtype=np.float32)
        canvas[:new_h, :new_w] = (resized.astype(np.float32) - 127.5) / 128.0
        blob = canvas.transpose(2, 0, 1)[None]
        outs = self.session.run(None, {self.input_name: blob})

        boxes_all, scores_all, kps_all = [], [], []
        for i, stride in enumerate(_STRIDES):
            scores = outs[i][0, :, 0] if outs[i].ndim == 3 else outs[i][:, 0]
            dist = (outs[i + 3][0] if outs[i + 3].ndim == 3 else outs[i + 3]) * stride
            kps = (outs[i + 6][0] if outs[i + 6].ndim == 3 else outs[i + 6]) * stride
            centres = self._anchor_centres(input_size // stride, input_size // stride, stride)
            keep = np.nonzero(scores >= score_threshold)[0]
            if keep.size == 0:
                continue
            c = centres[keep]
            d = dist[keep]
            boxes_all.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1],
                                       c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], axis=-1))
            k = kps[keep].reshape(-1, 5, 2) + c[:, None, :]
            kps_all.append(k)
            scores_all.append(scores[keep])
        if not scores_all:
            return []
        boxes = np.concatenate(boxes_all).astype(np.float32) / scale
        landmarks = np.concatenate(kps_all).astype(np.float32) / scale
        scores = np.concatenate(scores_all).astype(np.float32)
        kept = nms(boxes, scores, nms_threshold)
        return [Detection(box=boxes[i], score=float(scores[i]), landmarks=landmarks[i]) for i in kept]

    def confirm_score(self, rgb: npt.NDArray[np.uint8], box: npt.NDArray[np.floating], *,
                      nms_threshold: float = 0.4) -> float:
        """The detector's score for the face in ``box`` on a second look at one standard scale.

        ``box`` ``[l, t, r, b]`` in pixels of the (H, W, 3) uint8 RGB ``rgb``. The box with a margin of
        ``CONFIRM_MARGIN`` box sizes on each side (clipped to the image) is letterboxed to
        ``CONFIRM_INPUT_SIZE`` pixels and detected again; the result is the best score of a detection
        that overlaps the box (intersection over union >= 0.3), 0.0 when none does. A face the
        detector was unsure of at the first scale keeps a similar score here; a face-like pattern
        (an animal, a texture) tends to lose it. Costs one small model run.
        """
        h, w = rgb.shape[:2]
        left, t, r, b = (float(v) for v in box[:4])
        mx, my = CONFIRM_MARGIN * (r - left), CONFIRM_MARGIN * (b - t)
        x0, y0 = int(max(0.0, left - mx)), int(max(0.0, t - my))
        x1, y1 = int(min(float(w), r + mx)), int(min(float(h), b + my))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return 0.0
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        dets = self.detect(crop, input_size=CONFIRM_INPUT_SIZE, score_threshold=0.05, nms_threshold=nms_threshold)
        target = np.array([left - x0, t - y0, r - x0, b - y0], dtype=np.float32)
        return max((d.score for d in dets if _iou(d.box, target) >= 0.3), default=0.0)


def _iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Intersection over union of two ``[l, t, r, b]`` boxes."""
    iw = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    ih = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    inter = iw * ih
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0
