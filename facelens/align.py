"""Face alignment: a similarity transform from five landmarks to a fixed template.

Pure functions, no model. ``ARCFACE_TEMPLATE_112`` is the standard 5-point template used to train
ArcFace-family recognisers (InsightFace ``arcface_dst``) for 112x112 crops.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ARCFACE_TEMPLATE_112", "similarity_transform", "align_face"]

ARCFACE_TEMPLATE_112: npt.NDArray[np.float32] = np.array(
    [
        [38.2946, 51.6963],  # left eye (picture left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float32,
)


def similarity_transform(src: npt.NDArray[np.floating], dst: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src to dst.

    Umeyama's closed form (IEEE PAMI 1991), the same estimate as scikit-image's
    ``SimilarityTransform.estimate`` used by InsightFace; written here (12 lines) rather than pulling in
    scikit-image for one function. ``src`` and ``dst`` are (n, 2); returns the (2, 3) affine matrix.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / n
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * rot @ src_mean
    return m


def align_face(
    rgb: npt.NDArray[np.uint8],
    landmarks: npt.NDArray[np.floating],
    *,
    size: int = 112,
    template: npt.NDArray[np.float32] = ARCFACE_TEMPLATE_112,
) -> npt.NDArray[np.uint8]:
    """Warp the face with these (5, 2) landmarks onto the template; returns (size, size, 3) uint8.

    ``template`` is given for a 112-pixel crop and is scaled for other sizes.
    """
    import cv2

    dst = template.astype(np.float64) * (size / 112.0)
    m = similarity_transform(landmarks, dst)
    crop = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return np.asarray(crop, dtype=np.uint8)
