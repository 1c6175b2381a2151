"""One exception tree for facelens.

Every error the library raises on purpose derives from :class:`FacelensError`, so callers (the CLI,
the HTTP service, user code) can catch one class and map it to a message or a status code in one
place. Errors carry the context a user needs to act on them (which file, which model, which limit).
"""

from __future__ import annotations

__all__ = [
    "FacelensError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "InvalidArgumentError",
    "ModelError",
    "ModelFileError",
    "NoFaceError",
    "CalibrationError",
    "UnsupportedRateError",
    "CollectionError",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "FaceNotFoundError",
    "ModelMismatchError",
    "SearchLogError",
    "CancelledError",
    "PolicyError",
    "ReviewError",
    "ReviewItemNotFoundError",
    "ReviewForbiddenError",
    "ReviewDecidedError",
    "error_status",
    "VideoDecodeError",
]


class FacelensError(Exception):
    """Root of every error facelens raises on purpose."""


class InvalidArgumentError(FacelensError, ValueError):
    """An argument has a value the API cannot accept (a negative size, an unknown option...)."""


class ImageDecodeError(FacelensError):
    """The input could not be decoded as an image: empty, truncated, or not an image at all.

    ``source`` names where the bytes came from (a path, or ``"<bytes>"``/``"<array>"``).
    """

    def __init__(self, message: str, *, source: str = "<bytes>") -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class ImageTooLargeError(ImageDecodeError):
    """The image declares more pixels than allowed; refused before its pixels are decoded.

    This is the defence against decompression bombs: a small file that claims to be huge.
    """

    def __init__(self, *, width: int, height: int, max_pixels: int, source: str = "<bytes>") -> None:
        super().__init__(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (raise max_pixels / FACELENS_MAX_PIXELS if this is intended)",
            source=source,
        )
        self.width = width
        self.height = height
        self.max_pixels = max_pixels


class NoFaceError(FacelensError):
    """An operation that needs a face (compare, embed-one) found none in an image."""

    def __init__(self, message: str, *, source: str = "<image>") -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class ModelError(FacelensError):
    """A model could not be set up or run."""


class ModelFileError(ModelError):
    """A model file is missing, or its sha256 differs from the one facelens was built against."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class CalibrationError(FacelensError):
    """A calibration table is missing, malformed, or belongs to another model."""


class UnsupportedRateError(CalibrationError, InvalidArgumentError):
    """A false-match rate (or an FPIR at a collection size) the calibration cannot support: too few
    impostor pairs to read it, or a tail so heavy that no score keeps the bound that low. The message
    names the pairs needed or the way out (a higher rate, a smaller collection); a request error (HTTP 422,
    CLI usage), not a broken installation."""


class CollectionError(FacelensError):
    """A collection operation failed."""


class CollectionNotFoundError(CollectionError):
    """No collection of that name exists."""


class CollectionExistsError(CollectionError):
    """A collection of that name already exists."""


class FaceNotFoundError(CollectionError):
    """A face id is not in the collection."""


class ModelMismatchError(CollectionError):
    """A collection is bound to one model and refuses embeddings of another."""


class SearchLogError(FacelensError):
    """The signed log could not be written or read, or its file is not a facelens log. Whatever needed
    the log to be written (a search, an enrolment, an erasure) answers this error instead of its result."""


class CancelledError(FacelensError):
    """The work was stopped through its :class:`facelens.pipeline.CancelToken`: its caller stopped waiting
    for it (the service: the request timed out). The message says why; recorded as code ``timeout``."""


class PolicyError(FacelensError):
    """A collection's policy forbids the request: a mode it does not allow, a rate looser than its floor,
    no purpose where one is required, a policy change by someone who is not an admin. The message names
    the rule and who can change it."""


class ReviewError(FacelensError):
    """A review-queue operation failed."""


class ReviewItemNotFoundError(ReviewError):
    """No review item of that id in the collection (never created, or purged)."""


class ReviewForbiddenError(ReviewError):
    """Four eyes: the reviewer is the one who ran the search, or has no right to decide."""


class ReviewDecidedError(ReviewError):
    """The review item was already decided (decisions are final), expired or withdrawn."""


class VideoDecodeError(FacelensError):
    """A video could not be opened or decoded: not a video, no video stream, corrupt, or truncated.

    ``source`` names the file or stream; ``at_s`` is the time in the video where decoding failed, when
    some frames had been decoded before it (a truncated or damaged file), else ``None``.
    """

    def __init__(self, message: str, *, source: str, at_s: float | None = None) -> None:
        where = f" at {at_s:.3f} s" if at_s is not None else ""
        super().__init__(f"{source}: {message}{where}")
        self.source = source
        self.at_s = at_s


# The one table from errors to stable codes and HTTP statuses (the service renders every error with
# them; the signed log records the code of a failed action). Most specific first: the first class the
# error is an instance of decides. An error object with its own ``status`` and ``code`` attributes (the
# service's ApiError) gives those.
_STATUS: tuple[tuple[type[FacelensError], int, str], ...] = (
    (ImageTooLargeError, 413, "image_too_large"),
    (ImageDecodeError, 400, "invalid_image"),
    (VideoDecodeError, 400, "invalid_video"),
    (NoFaceError, 422, "no_face"),
    (CollectionNotFoundError, 404, "collection_not_found"),
    (CollectionExistsError, 409, "collection_exists"),
    (FaceNotFoundError, 404, "face_not_found"),
    (ModelMismatchError, 409, "model_mismatch"),
    (InvalidArgumentError, 422, "invalid_argument"),
    (SearchLogError, 503, "search_log_unavailable"),
    (CancelledError, 503, "timeout"),
    (PolicyError, 403, "policy_forbids"),
    (ReviewItemNotFoundError, 404, "review_item_not_found"),
    (ReviewForbiddenError, 403, "review_forbidden"),
    (ReviewDecidedError, 409, "review_decided"),
    (CalibrationError, 500, "calibration_error"),
    (ModelError, 500, "model_error"),
)


def error_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and stable code of an error (500 ``internal_error`` if unknown)."""
    status, code = getattr(exc, "status", None), getattr(exc, "code", None)
    if isinstance(status, int) and isinstance(code, str):
        return status, code
    for cls, status_, code_ in _STATUS:
        if isinstance(exc, cls):
            return status_, code_
    return 500, "internal_error"
