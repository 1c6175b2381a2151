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
        self.session = open_session(path, intra_op_threads=intra_op_threads)
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
