"""Typed dependencies of the routes: the shared services, the caller's key, access to a collection, and
the reading of image uploads (multipart or base64 JSON)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from fastapi import Depends, Path, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse

from ..accountability.actor import Actor
from ..accountability.log import SearchLog
from ..pipeline import CancelledError, CancelToken, cancellable
from .errors import ApiError
from .keys import ApiKey, KeyStore, Scope
from .ratelimit import RateLimiter
from .settings import ServerSettings

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = [
    "AdminCollection", "AdminKey", "EngineCalls", "FastJSON", "FastJSONRoute", "IndexCollection", "Key",
    "ReadCollection", "SearchCollection", "Services", "ServicesDep", "VisibleCollection", "actor", "fast_json",
    "image_request_body", "read_image_request",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
OptionsT = TypeVar("OptionsT", bound=BaseModel)

NO_AUTH_KEY = ApiKey(key_id="insecure-no-auth", name="--insecure-no-auth", admin=True)
#: Where :class:`facelens.server.limits.RequestGuard` leaves the caller's key in the ASGI scope.
KEY_SCOPE = "facelens.key"


class FastJSON(JSONResponse):
    """The response class of the hot routes (searches, detect, compare): their dict, rendered by orjson.
    ``NaN`` would be rendered as null, where ``json`` refuses it; no such score exists."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def fast_json(model: Any) -> dict[str, Any]:
    """Route options of a hot route answering ``model``: no ``response_model`` (FastAPI would validate and
    re-serialise the route's dict through it), the model documented as the 200 answer of the OpenAPI
    schema instead. The routes build dicts with exactly the model's fields (tests/test_server.py checks
    each answer against its model)."""
    return {"response_model": None, "responses": {200: {"model": model, "description": "Successful Response"}}}


class FastJSONRoute(APIRoute):
    """The route class of the hot routers (searches, detect, compare): over HTTP, the dict a route function
    returns is answered as :class:`FastJSON` at once, without FastAPI's ``jsonable_encoder`` pass over it
    (~0.5-3 ms for a search's answer). The functions themselves still return their dicts, which the
    console calls directly."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if getattr(endpoint, "_answers_fast_json", False):  # copied by include_router: wrapped already
            super().__init__(path, endpoint, **kwargs)
            return

        @functools.wraps(endpoint)
        async def answer(*args: Any, **kw: Any) -> FastJSON:
            return FastJSON(await endpoint(*args, **kw))

        answer._answers_fast_json = True  # type: ignore[attr-defined]
        super().__init__(path, answer, **kwargs)


class EngineCalls:
    """Runs blocking engine work in worker threads: at most ``workers`` at once, each under the
    request timeout, counted so that shutdown can wait for the ones still running.

    A call past the timeout is cancelled (:class:`~facelens.pipeline.CancelToken`): it stops at its next
    check (between faces and embedding batches, see :func:`facelens.pipeline.check_cancelled`); one still
    waiting for a worker slot is dropped (nothing ran). It answers 503 ``timeout`` at once, unless it is
    ``recorded``: a call whose outcome the engine records in the signed log (searches, compares, changes)
    is answered with that outcome, so that the answer and the log agree. Such a call, cancelled, stops at its
    next check and is recorded as the timeout it is then answered with; one that has committed already
    (:func:`facelens.pipeline.commit_work`: a search whose results are being recorded, an index call writing
    its faces) or that never checks (a deletion) finishes, and its result is answered. Work that cannot be
    interrupted (one model call, a store write) finishes first, so that 503 comes that much after the
    timeout. Until its thread has really returned, a call keeps its worker slot, so no more than
    ``workers`` engine threads ever run, abandoned ones included.
    """

    def __init__(self, *, workers: int, timeout_s: float) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self._slots: anyio.CapacityLimiter | None = None
        self._threads: anyio.CapacityLimiter | None = None
        self._running = 0
        self._idle = threading.Condition()

    def _timeout(self) -> ApiError:
        return ApiError(503, "timeout", f"the request took longer than {self.timeout_s:g} s and was abandoned; "
                                        f"the service is overloaded or the image very large",
                        headers={"Retry-After": "1"})

    async def __call__(self, fn: Callable[[], T], *, recorded: bool = False) -> T:
        if self._slots is None or self._threads is None:
            self._slots = anyio.CapacityLimiter(self.workers)
            self._threads = anyio.CapacityLimiter(float("inf"))  # the slots limit the threads
        slots = self._slots
        loop = asyncio.get_running_loop()
        borrower = object()
        timeout = self._timeout()
        token = CancelToken(reason=timeout.message)
        state = {"phase": "queued"}  # queued -> running -> done, or queued -> dropped
        lock = threading.Lock()
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

        def release() -> None:
            slots.release_on_behalf_of(borrower)

        def tracked() -> T | None:
            with lock:
                if state["phase"] == "dropped":  # cancelled before it started: its slot is already free
                    return None
                state["phase"] = "running"
            outcome.set_running_or_notify_cancel()  # (so that no waiter can cancel it: it is set below)
            with self._idle:
                self._running += 1
            try:
                with cancellable(token):
                    result = fn()
                outcome.set_result(result)
                return result
            except BaseException as exc:
                outcome.set_exception(exc)
                raise
            finally:
                with lock:
                    state["phase"] = "done"
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()
                try:
                    loop.call_soon_threadsafe(release)
                except RuntimeError:  # the event loop is closed: nothing waits for a slot any more
                    with contextlib.suppress(Exception):
                        release()

        def stop() -> bool:
            """The caller stops waiting (timeout, client gone, shutdown): drop the call if it has not
            started, else cancel it; its thread frees the slot when it returns. Returns whether the call
            runs on (its outcome is still to come)."""
            with lock:
                phase = state["phase"]
                if phase == "queued":
                    state["phase"] = "dropped"
            if phase == "queued":
                release()
            elif phase == "running":
                token.cancel()  # refused once the call has committed: it finishes either way
            return phase == "running"

        runs_on = False
        with anyio.move_on_after(self.timeout_s):
            await slots.acquire_on_behalf_of(borrower)
            try:
                result = await anyio.to_thread.run_sync(tracked, abandon_on_cancel=True, limiter=self._threads)
                return result  # type: ignore[return-value]  # None only for a dropped call, never returned
            finally:
                runs_on = stop()  # a no-op when the call is done
        if runs_on and recorded:
            # the call stops at its next check, records what it did (a search: the timeout) and ends: answer
            # what it ended with, a cancelled call as the timeout it was recorded as
            try:
                return await asyncio.wrap_future(outcome)
            except CancelledError:
                raise timeout from None
        raise timeout

    @property
    def running(self) -> int:
        """Engine threads running now, abandoned ones included (never more than ``workers``)."""
        with self._idle:
            return self._running

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no engine call runs (True), or ``timeout_s`` passes (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout=timeout_s)


@dataclass
class Services:
    """What every request shares: one engine, the key store, the search log, the rate limiter. The engine
    records what the requests do in the log (it is handed the same log); routes only name the actor."""

    settings: ServerSettings
    engine: Engine
    keys: KeyStore
    log: SearchLog
    limiter: RateLimiter
    calls: EngineCalls

    def purpose(self, collection: str | None, given: str | None) -> str | None:
        """The purpose to record, or 422 ``purpose_required`` when the policy needs one and none was given."""
        purpose = given.strip() if given else None
        if not purpose and self.settings.purpose_policy(collection) == "required":
            where = f"collection {collection!r}" if collection is not None else "compare"
            raise ApiError(422, "purpose_required", (
                f"{where} requires a purpose: give 'purpose', a case reference or reason such as "
                f"\"case 2024-0173\"; it is recorded in the search log with this request"))
        return purpose or None


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="An API key made with `facelens keys create`.")


async def get_key(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiKey:
    """The caller's key. :class:`~facelens.server.limits.RequestGuard` authenticated it, and charged it one
    request against its rate limit, before any byte of the body was read; ``credentials`` is declared so
    that the OpenAPI schema shows the bearer scheme."""
    key = request.scope.get(KEY_SCOPE)
    if not isinstance(key, ApiKey):  # a route outside the guarded paths asked for a key
        raise ApiError(401, "unauthorized", "this request needs an API key: send 'Authorization: Bearer <key>'",
                       headers={"WWW-Authenticate": "Bearer"})
    return key


Key = Annotated[ApiKey, Depends(get_key)]


def actor(key: ApiKey) -> Actor:
    """The actor the engine records a request's action under: the API key that authenticated it (its
    public id and name, never its secret)."""
    return Actor.for_key(key.key_id, key.name)


async def get_admin_key(key: Key) -> ApiKey:
    if not key.admin:
        raise ApiError(403, "forbidden", "this needs a global admin key (`facelens keys create --admin`)")
    return key


AdminKey = Annotated[ApiKey, Depends(get_admin_key)]

_COLLECTION_PATH = Path(description="Collection name", min_length=1, max_length=128)


def not_found(collection: str) -> ApiError:
    """The answer for a collection the key may not see: word for word the one for a missing collection."""
    return ApiError(404, "collection_not_found", f"no collection named {collection!r}")


def _access(scope: Scope | None) -> Callable[..., Coroutine[Any, Any, str]]:
    """The dependency that lets a request at ``{collection}`` through when the key has ``scope`` on it
    (None: any scope). ``key.scopes`` counts a grant only while its collection is the one it was made
    for (the same generation): a deleted collection, or a new one reusing the name, answers 404 as if
    missing. That check is a ``stat`` of the collection's file (keys.GenerationCache)."""

    async def dependency(collection: Annotated[str, _COLLECTION_PATH], key: Key) -> str:
        scopes = key.scopes(collection)
        if not scopes:
            raise not_found(collection)
        if scope is not None and scope not in scopes:
            raise ApiError(403, "forbidden", f"this key lacks the {scope.value!r} scope on collection {collection!r}")
        return collection
    return dependency


VisibleCollection = Annotated[str, Depends(_access(None))]
ReadCollection = Annotated[str, Depends(_access(Scope.READ))]
IndexCollection = Annotated[str, Depends(_access(Scope.INDEX))]
SearchCollection = Annotated[str, Depends(_access(Scope.SEARCH))]
AdminCollection = Annotated[str, Depends(_access(Scope.ADMIN))]


# -- image uploads ---------------------------------------------------------------------------------

def _summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _b64(name: str, value: str) -> bytes:
    text = value.strip()
    if text.startswith("data:") and "," in text:  # a data: URL
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_image", f"{name!r} is not valid base64") from None


async def read_image_request(request: Request, model: type[OptionsT], images: tuple[str, ...],
                             timeout_s: float) -> tuple[OptionsT, dict[str, bytes]]:
    """Read a request carrying images: ``multipart/form-data`` with a file part per image name and the
    options as text fields, or ``application/json`` with each image base64-encoded. Returns the options
    validated by ``model`` and the image bytes by name."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    blobs: dict[str, bytes] = {}
    fields: dict[str, Any] = {}
    try:
        with anyio.fail_after(timeout_s):
            if ctype == "application/json":
                try:
                    data = json.loads(await request.body())
                except ValueError:
                    raise ApiError(422, "invalid_request", "the body is not valid JSON") from None
                except RecursionError:  # RequestGuard refuses deep nesting first; this if it ever misses one
                    raise ApiError(422, "invalid_request", "the JSON body nests too deeply") from None
                if not isinstance(data, dict):
                    raise ApiError(422, "invalid_request", "the body must be a JSON object")
                for name in images:
                    value = data.pop(name, None)
                    if value is None:
                        continue
                    if not isinstance(value, str):
                        raise ApiError(422, "invalid_request", f"{name!r} must be a string: the image file, base64")
                    blobs[name] = _b64(name, value)
                fields = data
            elif ctype == "multipart/form-data":
                async with request.form(max_files=len(images), max_fields=32) as form:
                    for name, value in form.multi_items():
                        if name in blobs or name in fields:
                            raise ApiError(422, "invalid_request", f"{name!r} is given twice")
                        if name in images:
                            if not isinstance(value, UploadFile):
                                raise ApiError(422, "invalid_request", f"{name!r} must be a file part")
                            blobs[name] = await value.read()
                        elif isinstance(value, UploadFile):
                            raise ApiError(422, "invalid_request", f"unexpected file part {name!r}")
                        else:
                            fields[name] = value
            else:
                raise ApiError(415, "unsupported_media_type", (
                    "send multipart/form-data with the image as a file part, or application/json with the image "
                    "base64-encoded"))
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"the request body took longer than {timeout_s:g} s to arrive") from None
    missing = [n for n in images if n not in blobs]
    if missing:
        raise ApiError(422, "invalid_request", f"missing image {', '.join(map(repr, missing))}")
    for name, blob in blobs.items():
        if not blob:
            raise ApiError(400, "invalid_image", f"{name!r} is empty")
    try:
        options = model.model_validate(fields)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", _summary(exc)) from None
    return options, blobs


def image_request_body(model: type[BaseModel], images: tuple[str, ...]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body read by :func:`read_image_request`: both content types."""
    schema = model.model_json_schema()
    props = dict(schema.get("properties", {}))
    required = list(schema.get("required", [])) + list(images)

    def with_images(image_schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {**{n: dict(image_schema) for n in images}, **props},
                "required": required, "additionalProperties": False}

    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": with_images({"type": "string", "format": "binary",
                                                       "description": "the image file (JPEG, PNG, WebP...)"})},
        "application/json": {"schema": with_images({"type": "string", "contentEncoding": "base64",
                                                    "description": "the image file, base64-encoded"})},
    }}}
