"""The facelens API: open an :class:`Engine` once, then detect, analyze and compare faces."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from .calibration import ScoreCalibration, load_calibration
from .config import EngineConfig, check_fmr
from .errors import CalibrationError, FacelensError, InvalidArgumentError, NoFaceError
from .imageio import ImageInput, decode_image, describe_source
from .models.backends import Backend, open_backend
from .pipeline import Pipeline
from .types import Comparison, Face, QualityFilter

__all__ = ["Engine"]

log = logging.getLogger(__name__)


class Engine:
    """A face recognition engine: models opened once, then used for any number of images.

    Images are a file path, encoded bytes (JPEG, PNG, ...), or an (H, W, 3) uint8 **RGB** numpy array
    (OpenCV users: convert BGR to RGB first). Settings come from ``config``, then keyword overrides
    (see :class:`facelens.EngineConfig`), e.g. ``Engine(threads=2, det_size=480)``.

    An Engine is safe to share between threads.
    """

    def __init__(self, config: EngineConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = EngineConfig.from_env(**overrides)
        elif overrides:
            import dataclasses

            config = dataclasses.replace(config, **overrides)
        self.config = config
        backend = open_backend(config.model, threads=config.threads)
        self.model_name: str = backend.name
        #: sha256 of the recogniser file: embeddings are comparable only between equal values.
        self.model_sha256: str = backend.model_sha256
        self.embedding_size: int = backend.recognizer.embedding_size
        self.licence: str = backend.licence
        self._calibration_path = backend.calibration_path
        self.backend: Backend | None = backend
        self._pipeline: Pipeline | None = Pipeline(backend, config)
        self._calibration: ScoreCalibration | None = None
        log.info("engine opened: model %s (sha256 %s)", self.model_name, self.model_sha256[:12])

    # -- what this engine is ----------------------------------------------------------------------

    @property
    def calibration(self) -> ScoreCalibration:
        """The impostor-score table used to turn scores into false-match rates (loaded on first use)."""
        if self._calibration is None:
            path = self._calibration_path
            if path is None:
                raise CalibrationError(
                    f"model {self.model_name!r} has no calibration: false-match rates cannot be given. "
                    f"Measure one on labelled photos (docs/models.md) and name it in the manifest.")
            self._calibration = load_calibration(path, model_sha256=self.model_sha256)
        return self._calibration

    # -- faces ------------------------------------------------------------------------------------
    def detect(self, image: ImageInput, *, max_faces: int | None = None,
               quality_filter: QualityFilter | str | None = None) -> list[Face]:
        """All faces in the image, largest first, without embeddings.

        ``max_faces`` keeps only the largest ones. ``quality_filter`` (default: the engine's) decides
        which ``refusal_reasons`` each face gets.
        """
        return self._faces(image, embed=False, max_faces=max_faces, quality_filter=quality_filter)

    def analyze(self, image: ImageInput, *, max_faces: int | None = None,
                quality_filter: QualityFilter | str | None = None) -> list[Face]:
        """Like :meth:`detect`, with each face's embedding: (d,) float32, unit length."""
        return self._faces(image, embed=True, max_faces=max_faces, quality_filter=quality_filter)

    def embed(self, image: ImageInput) -> npt.NDArray[np.float32]:
        """The embedding of the largest face; raises :class:`NoFaceError` when there is none."""
        return self._largest_face(image).embedding  # type: ignore[return-value]

    def _faces(self, image: ImageInput, *, embed: bool, max_faces: int | None,
               quality_filter: QualityFilter | str | None) -> list[Face]:
        if max_faces is not None and max_faces < 1:
            raise InvalidArgumentError(f"max_faces must be >= 1, got {max_faces}")
        qf = None if quality_filter is None else QualityFilter.parse(quality_filter)
        if self._pipeline is None:
            raise FacelensError("this engine is closed; open a new facelens.Engine")
        rgb = decode_image(image, max_pixels=self.config.max_pixels)
        return self._pipeline.faces(rgb, embed=embed, max_faces=max_faces, quality_filter=qf)

    def _largest_face(self, image: ImageInput) -> Face:
        faces = self._faces(image, embed=True, max_faces=1, quality_filter=None)
        if not faces:
            raise NoFaceError("no face found in the image", source=describe_source(image))
        return faces[0]

    # -- comparison -------------------------------------------------------------------------------
    def threshold(self, max_fmr: float | None = None) -> float:
        """The score above which two faces match at false-match rate ``max_fmr`` (default: config)."""
        return self.calibration.threshold(check_fmr(self.config.max_fmr if max_fmr is None else max_fmr))

    def fmr(self, score: float) -> tuple[float, bool]:
        """False-match rate at ``score`` and whether it is only an upper bound (see ScoreCalibration)."""
        return self.calibration.fmr(score)

    def compare(self, image_a: ImageInput, image_b: ImageInput, *, max_fmr: float | None = None) -> Comparison:
        """Compare the largest face of each image.

        Returns the cosine score, the false-match rate that score stands for (how often two different
        people score this high), and ``match``: whether that rate is at most ``max_fmr`` (default
        ``config.max_fmr`` = 1e-5, one in 100,000). Raises :class:`NoFaceError` naming the image without
        a face.
        """
        max_fmr = check_fmr(self.config.max_fmr if max_fmr is None else max_fmr)
        self.calibration.threshold(max_fmr)  # refuse an unmeasurable max_fmr before running models
        return self.compare_faces(self._largest_face(image_a), self._largest_face(image_b), max_fmr=max_fmr)

    def compare_faces(self, face_a: Face, face_b: Face, *, max_fmr: float | None = None) -> Comparison:
        """Compare two faces already analysed by this engine (see :meth:`compare`)."""
        if face_a.embedding is None or face_b.embedding is None:
            raise InvalidArgumentError("compare_faces needs faces with embeddings (use analyze, not detect)")
        if face_a.embedding.shape != (self.embedding_size,) or face_b.embedding.shape != (self.embedding_size,):
            raise InvalidArgumentError(
                f"embeddings must be {self.embedding_size}-d vectors of model {self.model_name!r}")
        max_fmr = check_fmr(self.config.max_fmr if max_fmr is None else max_fmr)
        threshold = self.calibration.threshold(max_fmr)
        score = float(np.dot(face_a.embedding, face_b.embedding))
        fmr, bound = self.calibration.fmr(score)
        return Comparison(score=score, fmr=fmr, fmr_is_upper_bound=bound, match=score >= threshold,
                          max_fmr=max_fmr, threshold=threshold, face_a=face_a, face_b=face_b,
                          calibration=self.calibration.name)

    def close(self) -> None:
        """Release the model sessions (also done when the engine is garbage-collected).

        Later calls that need the models raise :class:`FacelensError`.
        """
        self._pipeline = None
        self.backend = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
