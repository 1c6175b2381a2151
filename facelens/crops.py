"""Small JPEG crops of faces, for the people who review investigation leads (and the console).

A crop is the face box padded by :data:`PAD` of its size on every side (clipped to the image), scaled
down so that its longer side is at most :data:`MAX_SIDE` pixels, and encoded as a baseline JPEG of
quality :data:`QUALITY` with no metadata (no EXIF, no comment): a few kilobytes that show a person
who the face is, and nothing else about the photo. A collection keeps one per enrolled face while its
policy says ``face_crops`` (erased with the face), and one per searched face while review items of
that search are open (deleted when the last one is decided, expires or is withdrawn). Crops are never
written to the signed log.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from .errors import InvalidArgumentError

__all__ = ["MAX_SIDE", "PAD", "QUALITY", "face_crop_jpeg"]

MAX_SIDE = 160  # pixels: the crop's longer side at most
PAD = 0.25  # of the box's width (height) added left and right (top and bottom): hair, chin and ears show
QUALITY = 85  # JPEG quality: 3-6 KB for a 160 px face


def face_crop_jpeg(rgb: npt.NDArray[np.uint8], bbox: Sequence[float], *, max_side: int = MAX_SIDE,
                   pad: float = PAD, quality: int = QUALITY) -> bytes:
    """The JPEG bytes of the face at ``bbox`` ([left, top, right, bottom] in pixels of the upright
    ``(H, W, 3)`` uint8 RGB image ``rgb``), padded by ``pad`` x its size on each side, clipped to the
    image, longer side scaled down to ``max_side`` pixels (never up). Raises InvalidArgumentError for a
    box that lies outside the image or has no area."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidArgumentError(f"a face crop needs an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    if len(bbox) != 4:
        raise InvalidArgumentError(f"a face box is [left, top, right, bottom], got {list(bbox)}")
    left, top, right, bottom = (float(v) for v in bbox)
    w, h = right - left, bottom - top
    if not (w > 0 and h > 0):
        raise InvalidArgumentError(f"a face box needs an area, got {list(bbox)}")
    height, width = rgb.shape[:2]
    x0, y0 = max(0, int(np.floor(left - pad * w))), max(0, int(np.floor(top - pad * h)))
    x1, y1 = min(width, int(np.ceil(right + pad * w))), min(height, int(np.ceil(bottom + pad * h)))
    if x1 <= x0 or y1 <= y0:
        raise InvalidArgumentError(f"the face box {list(bbox)} lies outside the {width}x{height} image")
    img = Image.fromarray(np.ascontiguousarray(rgb[y0:y1, x0:x1]), mode="RGB")
    scale = max_side / max(img.width, img.height)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()
