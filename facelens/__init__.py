"""facelens: a self-hosted, accountable face recognition engine.

    >>> import facelens
    >>> engine = facelens.Engine()
    >>> result = engine.compare("a.jpg", "b.jpg")
    >>> result.score, result.fmr, result.match

Nothing heavy happens at import: models load when an :class:`Engine` is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .accountability import Actor, CollectionPolicy
from .config import DEFAULT_MAX_FMR, DEFAULT_MAX_FPIR, EngineConfig
from .errors import (
    CalibrationError,
    CollectionError,
    CollectionExistsError,
    CollectionNotFoundError,
    FacelensError,
    FaceNotFoundError,
    ImageDecodeError,
    ImageTooLargeError,
    InvalidArgumentError,
    ModelError,
    ModelFileError,
    ModelMismatchError,
    NoFaceError,
    PolicyError,
    ReviewDecidedError,
    ReviewError,
    ReviewForbiddenError,
    ReviewItemNotFoundError,
    SearchLogError,
    UnsupportedRateError,
)
from .types import (
    BBox,
    Candidate,
    CollectionInfo,
    Comparison,
    EnrolmentCheck,
    Face,
    IndexResult,
    Landmarks,
    Match,
    OperatingPoint,
    PolicyFloor,
    Pose,
    Quality,
    QualityFilter,
    RefusalReason,
    SearchMode,
    SearchResult,
)

if TYPE_CHECKING:
    from .engine import Engine

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Engine pulls in numpy and the model code: load it on first use so `import facelens` stays fast.
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module 'facelens' has no attribute {name!r}")

__all__ = [
    "Actor",
    "BBox",
    "Candidate",
    "CalibrationError",
    "UnsupportedRateError",
    "CollectionError",
    "CollectionExistsError",
    "CollectionInfo",
    "CollectionNotFoundError",
    "CollectionPolicy",
    "Comparison",
    "DEFAULT_MAX_FMR",
    "DEFAULT_MAX_FPIR",
    "Engine",
    "EngineConfig",
    "EnrolmentCheck",
    "Face",
    "FaceNotFoundError",
    "FacelensError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "IndexResult",
    "InvalidArgumentError",
    "Landmarks",
    "Match",
    "OperatingPoint",
    "ModelError",
    "ModelFileError",
    "ModelMismatchError",
    "NoFaceError",
    "PolicyError",
    "PolicyFloor",
    "Pose",
    "Quality",
    "QualityFilter",
    "RefusalReason",
    "ReviewDecidedError",
    "ReviewError",
    "ReviewForbiddenError",
    "ReviewItemNotFoundError",
    "SearchLogError",
    "SearchMode",
    "SearchResult",
    "__version__",
]
