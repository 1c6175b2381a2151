"""The service's own errors. Any facelens error becomes an HTTP status and a stable code in one place, the
core's :func:`facelens.errors.error_status` (the signed log records the same codes for failed actions).

Every error response has one shape: ``{"error": {"code": "stable_code", "message": "what happened"}}``.
Codes are stable (clients may branch on them); messages are for people and may change.
"""

from __future__ import annotations

from ..errors import FacelensError, SearchLogError, error_status

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
