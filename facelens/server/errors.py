"""The service's errors, and the one place where any facelens error becomes an HTTP status and a code.

Every error response has one shape: ``{"error": {"code": "stable_code", "message": "what happened"}}``.
Codes are stable (clients may branch on them); messages are for people and may change.
"""

from __future__ import annotations

from ..errors import (
    CalibrationError,
    CollectionExistsError,
    CollectionNotFoundError,
    FacelensError,
    FaceNotFoundError,
    ImageDecodeError,
    ImageTooLargeError,
    InvalidArgumentError,
    ModelError,
    ModelMismatchError,
    NoFaceError,
)

__all__ = [
    "ApiError",
    "InsecureSettingsError",
    "SearchLogError",
    "ServiceError",
    "error_status",
]


class ServiceError(FacelensError):
    """Root of the errors of the HTTP service and its key and log stores."""


class InsecureSettingsError(ServiceError):
    """The service was asked to run in a way that would expose it (no keys, auth off on a public address)."""


class SearchLogError(ServiceError):
    """The search log could not be written or read, or its file is not a facelens search log."""


class ApiError(ServiceError):
    """An error with its HTTP status and stable code, raised by the routes themselves.

    ``headers`` are added to the response (``Retry-After`` for 429, ``WWW-Authenticate`` for 401).
    """

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# Most specific first: the first class the error is an instance of decides.
_STATUS: tuple[tuple[type[FacelensError], int, str], ...] = (
    (ImageTooLargeError, 413, "image_too_large"),
    (ImageDecodeError, 400, "invalid_image"),
    (NoFaceError, 422, "no_face"),
    (CollectionNotFoundError, 404, "collection_not_found"),
    (CollectionExistsError, 409, "collection_exists"),
    (FaceNotFoundError, 404, "face_not_found"),
    (ModelMismatchError, 409, "model_mismatch"),
    (InvalidArgumentError, 422, "invalid_argument"),
    (SearchLogError, 503, "search_log_unavailable"),
    (CalibrationError, 500, "calibration_error"),
    (ModelError, 500, "model_error"),
)


def error_status(exc: FacelensError) -> tuple[int, str]:
    """The HTTP status and stable code of a facelens error (500 ``internal_error`` if unknown)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"
