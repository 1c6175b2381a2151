"""image -> detections -> aligned crops -> quality and embeddings, in one obvious loop."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from .align import align_face
from .config import EngineConfig
from .models.backends import Backend
from .models.scrfd import Detection
from .quality import estimate_pose, measure_quality, refusal_reasons
from .types import BBox, Face, QualityFilter

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)

# When nothing is found, retry once on the image centred on a canvas twice its size. A face that fills
# the frame (ID-photo crops, UTKFace's 200x200 chips) is larger than the detector's biggest anchors
# once letterboxed; padding shrinks it back into range. Measured on 200 UTKFace chips enlarged to
# 800x800 and letterboxed to 640: found in 0.5% without padding, 100% with it.
_FALLBACK_PAD = 0.5


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

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        """Detections in image pixels, largest face first, faces below ``min_face_size`` dropped."""
        dets = self._detect_once(rgb)
        if not dets:
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
    ) -> list[Face]:
        """Detect, align, assess and (optionally) embed all faces of one image, largest first.

        All faces of the image are embedded in one model call.
        """
        qf = self.config.quality_filter if quality_filter is None else quality_filter
        dets = self.detect(rgb)
        if max_faces is not None:
            dets = dets[:max_faces]
        if not dets:
            return []
        aligned = np.stack([align_face(rgb, d.landmarks) for d in dets])
        embeddings = self.backend.recognizer.embed(rgb, dets, aligned) if embed else None
        faces = []
        for i, d in enumerate(dets):
            box = BBox(*(float(v) for v in d.box))
            pose = estimate_pose(d.landmarks)
            quality = measure_quality(aligned[i], min(box.width, box.height))
            faces.append(Face(
                bbox=box,
                score=d.score,
                landmarks=tuple((float(x), float(y)) for x, y in d.landmarks),
                pose=pose,
                quality=quality,
                refusal_reasons=refusal_reasons(d.score, pose, quality, qf),
                quality_filter=qf,
                embedding=None if embeddings is None else embeddings[i],
            ))
        return faces
