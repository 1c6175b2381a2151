"""Engine settings: explicit arguments > ``FACELENS_*`` environment variables > defaults."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError
from .types import QualityFilter

__all__ = ["DATABASE_ENV", "DEFAULT_MAX_FMR", "DEFAULT_MAX_FPIR", "HOME_CONFIG", "EngineConfig", "database_url",
           "home_setting"]

DEFAULT_MAX_FMR = 1e-5
# A search for someone who is not in the collection returns any candidate at most 3 times in 1,000:
# NIST's FRTE 1:N reports miss rates (FNIR) at this FPIR; see docs/error-rates.md for the choice.
DEFAULT_MAX_FPIR = 0.003
"""Default decision point of ``compare``: at most one false match in 100,000 comparisons of strangers."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How an :class:`facelens.Engine` detects, embeds and decides.

    model: ``"buffalo_s"`` (default: SCRFD-500M + MobileFaceNet/WebFace600K, 512-d), ``"dlib"`` (dlib
        HOG + ResNet, 128-d; needs ``facelens[dlib]``), or the path of a folder holding a
        ``facelens-model.json`` manifest (see docs/models.md).
    det_size: longest side, in pixels, of the square letterbox the detector sees. Larger finds smaller
        faces in large photos and costs time quadratically.
    det_upscale: also enlarge images smaller than ``det_size`` (off: small images are detected at their
        own size, which is faster and finds faces that fill the frame).
    det_threshold: minimum detector score in [0, 1] for a detection to count as a face.
    nms_threshold: overlap (IoU) above which two detections are taken for the same face.
    min_face_size: faces whose shorter box side is below this many pixels are dropped entirely.
    threads: onnxruntime intra-op threads per model; 0 lets onnxruntime use one per core.
    max_pixels: images declaring more pixels are refused before decoding (decompression bombs).
    max_faces_per_image: at most this many faces of one image, the largest, are aligned, assessed and
        embedded (Rekognition's limit: 100); the others are left out and counted (``FaceList.faces_over_limit``,
        ``IndexResult.faces_over_limit``). Bounds the time and memory one image can cost: a mosaic of a
        thousand tiny faces costs what a hundred do.
    quality_filter: level used to fill ``Face.refusal_reasons``.
    max_fmr: default false-match rate at which ``compare`` declares a match (1e-5: one in 100,000
        comparisons of two different people).
    max_fpir: default false-positive identification rate of searches: the chance that a search for
        someone who is not in the collection returns any candidate (0.003); converted to a
        per-comparison false-match rate with the collection's size at search time.
    policy: how a target rate becomes a threshold: ``worst-group`` (every audited group of the
        calibration meets the target) or ``overall``.
    home: folder holding the collections; empty means ``FACELENS_HOME`` or the per-user data folder.
    """

    model: str = "buffalo_s"
    det_size: int = 640
    det_upscale: bool = False
    det_threshold: float = 0.5
    nms_threshold: float = 0.4
    min_face_size: float = 0.0
    threads: int = 0
    max_pixels: int = 40_000_000
    max_faces_per_image: int = 100
    quality_filter: QualityFilter = QualityFilter.AUTO
    max_fmr: float = DEFAULT_MAX_FMR
    max_fpir: float = DEFAULT_MAX_FPIR
    policy: str = "worst-group"
    home: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "quality_filter", QualityFilter.parse(self.quality_filter))
        if not 32 <= self.det_size <= 8192 or self.det_size % 32:
            raise InvalidArgumentError(f"det_size must be a multiple of 32 from 32 to 8192, got {self.det_size}")
        for name in ("det_threshold", "nms_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InvalidArgumentError(f"{name} must be in [0, 1], got {v}")
        if not self.min_face_size >= 0 or self.min_face_size == float("inf"):  # nan too
            raise InvalidArgumentError(f"min_face_size must be a finite number >= 0, got {self.min_face_size}")
        if not 0 <= self.threads <= 1024:
            raise InvalidArgumentError(f"threads must be from 0 to 1024, got {self.threads}")
        if self.max_pixels <= 0:
            raise InvalidArgumentError(f"max_pixels must be > 0, got {self.max_pixels}")
        if self.max_faces_per_image < 1:
            raise InvalidArgumentError(f"max_faces_per_image must be >= 1, got {self.max_faces_per_image}")
        check_fmr(self.max_fmr)
        if not 0.0 < self.max_fpir < 1.0:
            raise InvalidArgumentError(f"max_fpir must be a rate in (0, 1), e.g. 0.003; got {self.max_fpir}")
        if self.policy not in ("worst-group", "overall"):
            raise InvalidArgumentError(f"policy must be 'worst-group' or 'overall', got {self.policy!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> EngineConfig:
        """Defaults, overridden by ``FACELENS_<FIELD>`` variables, overridden by ``overrides``.

        ``None`` values in ``overrides`` are ignored, so CLI options left unset fall through.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"FACELENS_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, cls)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidArgumentError(f"unknown engine setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)


def check_fmr(value: float, name: str = "max_fmr") -> float:
    """Validate a false-match rate: a probability in (0, 1]."""
    if not (0.0 < float(value) <= 1.0):
        raise InvalidArgumentError(f"{name} must be a rate in (0, 1], e.g. 1e-5; got {value}")
    return float(value)


def _parse(name: str, raw: str, cls: type[EngineConfig]) -> Any:
    default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, QualityFilter):
            return QualityFilter.parse(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return raw
    except ValueError:
        raise InvalidArgumentError(f"FACELENS_{name.upper()}={raw!r} is not a valid value") from None


# -- the home's database (issue 13): where the signed log and the API keys live ----------------------

DATABASE_ENV = "FACELENS_DATABASE"
"""``postgresql://user@host:port/db`` keeps the home's signed log and API keys in PostgreSQL; unset (or
empty, or ``sqlite``): the SQLite files under ``<home>/service/`` as always."""
HOME_CONFIG = "facelens.toml"
"""A home's optional settings file (``<home>/facelens.toml``), e.g. ``database = "postgresql://..."``."""
_DATABASE_SCHEMES = ("postgresql://", "postgres://")


def home_setting(home: Path, name: str) -> str | None:
    """The string ``name`` of the home's settings file (``<home>/facelens.toml``), None when the file or the
    setting is absent; InvalidArgumentError for a file that is not TOML or a setting that is not a string."""
    path = Path(home).expanduser() / HOME_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        value = tomllib.loads(text).get(name)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgumentError(f"{path} is not valid TOML: {exc}") from None
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentError(f"{path}: {name} must be a string, got {type(value).__name__}")
    return value


def database_url(home: Path | None = None, explicit: str | None = None,
                 environ: Mapping[str, str] | None = None) -> str | None:
    """The PostgreSQL URL the home's log and keys live in, or None for the SQLite files: ``explicit``
    (``--database``) > ``$FACELENS_DATABASE`` > ``database`` in ``<home>/facelens.toml``. The value
    ``sqlite`` (or empty) means the files; anything else must be a ``postgresql://`` URL."""
    env = os.environ if environ is None else environ
    value = explicit
    if value is None:
        value = env.get(DATABASE_ENV)
    if value is None and home is not None:
        value = home_setting(home, "database")
    value = (value or "").strip()
    if value in ("", "sqlite"):
        return None
    if not value.startswith(_DATABASE_SCHEMES):
        raise InvalidArgumentError(f"the database (--database, ${DATABASE_ENV} or database in {HOME_CONFIG}) must "
                                   f"be a postgresql://user@host:port/db URL, or 'sqlite' for the files under "
                                   f"<home>/service/; got {value.split('://')[0]!r}...")
    return value
