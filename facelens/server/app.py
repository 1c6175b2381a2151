"""``create_app(settings)``: the FastAPI app of the facelens service (OpenAPI at /docs)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..accountability.log import SearchLog
from ..errors import FacelensError
from .deps import EngineCalls, Services
from .errors import InsecureSettingsError, error_status
from .keys import KeyStore
from .limits import RequestGuard, error_response
from .ratelimit import RateLimiter
from .routes import collections, faces, images, log, persons, policy, reports, review, search, system, video
from .schemas import ErrorOut
from .settings import SETTINGS_ENV, ServerSettings, is_loopback

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["app_from_environment", "check_can_serve", "create_app", "error_response"]

logger = logging.getLogger(__name__)

_HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout", 413: "request_too_large",
               415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited"}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FacelensError)
    async def facelens_error(request: Request, exc: FacelensError) -> JSONResponse:
        status, code = error_status(exc)
        if status >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
        headers = getattr(exc, "headers", None)
        return error_response(status, code, getattr(exc, "message", str(exc)), headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in list(exc.errors())[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error (the service log has the details)")


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text} for status, text in {
        400: "Invalid image or request", 401: "No valid API key", 403: "The key lacks the scope",
        404: "Unknown (or invisible) collection, face or person", 413: "Request or image too large",
        422: "Invalid options, no face, purpose missing", 429: "Rate limited (see Retry-After)",
        503: "Timeout or search log unavailable"}.items()}


def check_can_serve(settings: ServerSettings) -> None:
    """Raise :class:`~facelens.server.errors.InsecureSettingsError` when no API key exists (create one
    with ``facelens keys create``), unless ``settings.insecure_no_auth`` (loopback only)."""
    keys = KeyStore.open(settings.home)
    try:
        if not settings.insecure_no_auth and keys.active_count() == 0:
            where = "a loopback address" if is_loopback(settings.host) else f"{settings.host!r}"
            raise InsecureSettingsError(
                f"no API key exists in {keys.location}, so nobody could use the service on {where}: create one with "
                f"`facelens keys create --admin --name NAME --home {settings.home}`"
                + (" (or, for local tests only, pass --insecure-no-auth)" if is_loopback(settings.host) else ""))
    finally:
        keys.close()


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``facelens serve --processes N``: uvicorn imports this factory in
    each process it starts; the settings come from the environment (``SETTINGS_ENV``, set by serve)."""
    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise InsecureSettingsError(f"{SETTINGS_ENV} is not set: start the service with `facelens serve`")
    return create_app(ServerSettings.from_json(text))


def create_app(settings: ServerSettings, *, engine: Engine | None = None) -> FastAPI:
    """The service app: one engine (opened here unless given) shared by all requests.

    Raises :class:`~facelens.server.errors.InsecureSettingsError` when no API key exists (create one with
    ``facelens keys create``), unless ``settings.insecure_no_auth`` (loopback only).
    """
    check_can_serve(settings)
    keys = KeyStore.open(settings.home)
    search_log = SearchLog.open(settings.home, signing_key_path=settings.signing_key)
    if engine is None:
        from ..engine import Engine

        overrides: dict[str, Any] = {"home": str(settings.home), "threads": settings.engine_threads}
        if settings.model:
            overrides["model"] = settings.model
        if settings.max_faces_per_image is not None:
            overrides["max_faces_per_image"] = settings.max_faces_per_image
        engine = Engine(signed_log=search_log, **overrides)  # the engine records in the service's log
    services = Services(settings=settings, engine=engine, keys=keys, log=search_log,
                        limiter=RateLimiter(settings.rate_limit, settings.rate_burst),
                        calls=EngineCalls(workers=settings.workers, timeout_s=settings.request_timeout_s))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        purger = asyncio.create_task(review.purge_forever(services))  # review items past their retention
        await video.resume(app)  # the live streams running at the last shutdown, started again
        yield
        purger.cancel()
        await video.shutdown(app)  # live streams stopped (their ends recorded) and video jobs cancelled
        # uvicorn has stopped taking requests and waited for those in flight; engine calls abandoned
        # after a timeout may still run: let them finish before the stores close.
        if not services.calls.wait_idle(settings.graceful_shutdown_s):
            logger.warning("shutting down with %d engine call(s) still running", services.calls.running)
        services.engine.close()
        services.log.close()
        services.keys.close()

    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI and ReDoc from files shipped in
    # the package, not from a CDN, so they work on a machine without internet.
    app = FastAPIOffline(
        title="facelens", version=__version__, lifespan=lifespan,
        description=("Self-hosted face recognition with measured error rates. Every search and compare is "
                     "recorded in a hash-chained search log. Send an API key as `Authorization: Bearer <key>`. "
                     "Errors: `{\"error\": {\"code\", \"message\"}}`. See docs/service.md."),
    )
    app.state.services = services
    # outermost: keys, rate limit, Host and Origin checks before any body byte is read; then the bounded body
    app.add_middleware(RequestGuard, services=services)
    _install_error_handlers(app)
    app.include_router(system.router)
    for module in (images, collections, faces, persons, search, log, reports, policy, review, video):
        app.include_router(module.router, responses=_ERRORS)
    from ..console import install_console

    install_console(app, services)  # the web console: /console (and / leading there), docs/console.md
    return app
