"""What one client may cost the service before it has proved who it is, and after.

- :class:`RequestGuard`, the outermost ASGI middleware: authenticates the ``Authorization`` header of every
  ``/v1`` request (except ``/v1/version``) and charges the key's rate limit *before any body byte is read*;
  then reads the whole body under the size limit and within ``request_timeout_s`` (413, 408), and refuses
  JSON nested deeper than :data:`MAX_JSON_DEPTH` before anything parses it (422). With
  ``--insecure-no-auth`` it also refuses what a web page could send from a browser (:func:`browser_problem`).
- :class:`HeaderTimeoutHttpToolsProtocol` and :class:`HeaderTimeoutProtocol`: uvicorn's httptools and h11
  protocols with a deadline on the request head. uvicorn has none (its ``timeout_keep_alive`` only runs
  between requests and stops at the first byte), so a client sending headers a byte at a time held a
  connection forever (slowloris). :func:`http_protocol` picks one (httptools when installed).
- :func:`uvicorn_config`: the uvicorn configuration ``facelens serve`` runs with.

A refusal made here is answered at once; the rest of its body is then discarded by uvicorn as it arrives
(never buffered), for at most ``header_timeout_s`` before the connection is closed. A client too slow with
its body (408) is disconnected at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import InvalidArgumentError
from .errors import ApiError, error_status
from .settings import ServerSettings, is_loopback

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    _HTTPTOOLS = True
except ImportError:  # httptools is not installed: h11 only
    HttpToolsProtocol = H11Protocol  # type: ignore[misc,assignment]
    _HTTPTOOLS = False

if TYPE_CHECKING:
    import uvicorn

    from .deps import Services

__all__ = ["MAX_JSON_DEPTH", "HeaderTimeoutHttpToolsProtocol", "HeaderTimeoutProtocol", "RequestGuard",
           "browser_problem", "check_loop", "error_response", "http_protocol", "json_depth", "uvicorn_config"]

logger = logging.getLogger(__name__)

#: Request bodies nesting arrays and objects deeper than this are refused (422) before parsing: no request
#: of the API nests deeper than 2, and ``json.loads`` of ``[[[[...`` 100,000 deep raised RecursionError (500).
MAX_JSON_DEPTH = 32

#: Paths that need no key: everything outside /v1 (health, the documentation pages, the schema), and this.
OPEN_V1_PATHS = frozenset({"/v1/version"})

# A JSON string: quotes around anything but quotes and backslashes, or backslash escapes (unrolled loop,
# linear time, no backtracking).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape: ``{"error": {"code": ..., "message": ...}}``."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def json_depth(body: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings do not count).

    Meant for refusing texts before parsing; on invalid JSON the number may be off, never the refusal of
    valid JSON within the limit."""
    skeleton = _JSON_STRING.sub(b'""', body)
    b = np.frombuffer(skeleton, dtype=np.uint8)
    if not b.size:
        return 0
    steps = np.zeros(b.size, dtype=np.int8)
    steps[(b == ord("[")) | (b == ord("{"))] = 1
    steps[(b == ord("]")) | (b == ord("}"))] = -1
    return max(0, int(np.cumsum(steps, dtype=np.int32).max()))


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json"))


def _host_name(host: str) -> str:
    """The name of a Host header, without its port: ``[::1]:8000`` -> ``::1``, ``localhost:80`` -> ``localhost``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def browser_problem(method: str, headers: Headers, scheme: str = "http") -> str | None:
    """Why a request to a service without keys (``--insecure-no-auth``) could be a web page's doing, or None.

    Such a service trusts every local caller, so it must not be reachable through a browser visiting some
    site: (1) the Host must be a loopback name (127.0.0.1, [::1], localhost, with any port), against DNS
    rebinding; (2) an ``Origin`` must be this service's own, and a ``Sec-Fetch-Site`` ``same-origin`` or
    ``none``; (3) unless the browser says it comes from the service's own pages (its own ``Origin``, or
    ``Sec-Fetch-Site: same-origin``: the /docs page), a request that changes something (not
    GET/HEAD/OPTIONS) must be ``application/json`` or carry an ``X-Facelens`` header: a page may send a
    form (multipart, urlencoded, text/plain) to any address without asking, never a JSON body or a custom
    header, and browsers too old to send ``Origin`` on such a form still cannot add the header.
    """
    host = headers.get("host", "")
    if not is_loopback(_host_name(host)):
        return (f"Host {host!r} is not a loopback address: without API keys (--insecure-no-auth) the service "
                f"answers only requests addressed to 127.0.0.1, [::1] or localhost")
    origin = headers.get("origin")
    if origin is not None and origin.lower() != f"{scheme}://{host}".lower():
        return f"cross-origin request from {origin!r} refused: without API keys only this origin may call"
    fetch_site = (headers.get("sec-fetch-site") or "").lower()
    if fetch_site not in ("", "same-origin", "none"):
        return f"{fetch_site!r} request refused: without API keys, browsers may call only from this origin"
    own_page = origin is not None or fetch_site == "same-origin"
    if method not in _SAFE_METHODS and not own_page and "x-facelens" not in headers:
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return ("without API keys, a request that is not application/json needs an 'X-Facelens: 1' header "
                    "(a web page can send a form anywhere, but not a custom header)")
    return None


def _needs_key(path: str) -> bool:
    return (path == "/v1" or path.startswith("/v1/")) and path not in OPEN_V1_PATHS


class RequestGuard:
    """The outermost middleware: authentication and rate limit before the body, then the bounded body.

    For a guarded path it leaves the caller's :class:`~facelens.server.keys.ApiKey` in the scope under
    :data:`facelens.server.deps.KEY_SCOPE`, where the routes' ``Key`` dependency finds it.
    """

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self._guard(scope, receive, send)
        except ApiError as exc:  # refused before the app ran (the body unread, or read only in part)
            status, code = error_status(exc)
            headers = {**exc.headers, "Connection": "close"} if status == 408 else exc.headers
            await error_response(status, code, exc.message, headers)(scope, receive, send)

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        from .deps import KEY_SCOPE, NO_AUTH_KEY

        settings = self.services.settings
        headers = Headers(scope=scope)
        if settings.insecure_no_auth:
            problem = browser_problem(scope["method"], headers, scope.get("scheme", "http"))
            if problem:
                raise ApiError(403, "forbidden", problem)
        if _needs_key(scope["path"]):
            key = NO_AUTH_KEY if settings.insecure_no_auth else self._authenticate(headers)
            wait = self.services.limiter.acquire(key.key_id)
            if wait > 0:
                raise ApiError(429, "rate_limited", f"too many requests with this key; retry in {wait:.2f} s",
                               headers={"Retry-After": str(max(1, math.ceil(wait)))})
            scope[KEY_SCOPE] = key
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "invalid_request", "Content-Length is not a number")
            if int(declared) > settings.max_request_bytes:
                raise ApiError(413, "request_too_large",
                               f"the request body is over the limit of {settings.max_request_bytes:,} bytes")
        if (declared is None or declared == "0") and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        body = await self._read_body(receive, settings)
        if body is None:
            return  # the client went away
        if body and _is_json(headers.get("content-type", "")) and json_depth(body) > MAX_JSON_DEPTH:
            raise ApiError(422, "invalid_request", f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    def _authenticate(self, headers: Headers) -> Any:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "this request needs an API key: send 'Authorization: Bearer <key>' "
                                                "(keys are made with `facelens keys create`)",
                           headers={"WWW-Authenticate": "Bearer"})
        found = self.services.keys.authenticate(token.strip())
        if found is None:
            raise ApiError(401, "unauthorized", "the API key is invalid or has been revoked",
                           headers={"WWW-Authenticate": "Bearer"})
        return found

    @staticmethod
    async def _read_body(receive: Receive, settings: ServerSettings) -> bytes | None:
        """The whole body, within ``request_timeout_s`` and ``max_request_bytes`` (None: client gone)."""
        chunks: list[bytes] = []
        seen = 0
        with anyio.move_on_after(settings.request_timeout_s) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > settings.max_request_bytes:
                    raise ApiError(413, "request_too_large",
                                   f"the request body is over the limit of {settings.max_request_bytes:,} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            raise ApiError(408, "request_timeout",
                           f"the request body took longer than {settings.request_timeout_s:g} s to arrive")
        return b"".join(chunks)


class _HeadTimer:
    """The request-head deadline of one connection: armed when the connection opens and when a response
    ends with no next request begun, cancelled when a request head is complete; closes the connection
    when it fires."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, transport: asyncio.BaseTransport, client: Any) -> None:
        self.cancel()
        self._timer = self.loop.call_later(self.timeout_s, self._fired, transport, client)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fired(self, transport: asyncio.BaseTransport, client: Any) -> None:
        self._timer = None
        if not transport.is_closing():
            logger.info("closing a connection from %s: no complete request head within %g s", client, self.timeout_s)
            transport.close()


def _waiting_for_a_head(cycle: Any) -> bool:
    """Whether a connection whose current request/response cycle is ``cycle`` waits for a request head:
    none yet, or the last response is complete and no next request has begun (h11 and httptools alike)."""
    return cycle is None or bool(cycle.response_complete)


class _HeadDeadline:
    """The request-head deadline of both protocol classes below (mixed in before uvicorn's protocol): the
    timer is armed when a connection opens and when a response ends with no next request begun, and
    cancelled when the connection is lost; each subclass cancels it when its parser completes a head."""

    loop: asyncio.AbstractEventLoop
    client: Any
    cycle: Any
    transport: asyncio.Transport

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]
        self.head_timer = _HeadTimer(self.loop, getattr(config, "header_timeout_s", 10.0))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.head_timer.arm(transport, self.client)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if _waiting_for_a_head(self.cycle) and not self.transport.is_closing():
            self.head_timer.arm(self.transport, self.client)

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_timer.cancel()
        super().connection_lost(exc)  # type: ignore[misc]


class HeaderTimeoutProtocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head (request line and headers) is not
    complete ``header_timeout_s`` after the connection opened or the previous response ended.

    The timeout is read from the uvicorn config's ``header_timeout_s`` attribute (:func:`uvicorn_config`
    sets it), so that the class can be named in the config that ``--processes`` hands to its workers.
    """

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request head was parsed: its body has the app's own deadline
            self.head_timer.cancel()



class HeaderTimeoutHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, Node's C parser: less CPU per request than h11) with the
    same request-head deadline as :class:`HeaderTimeoutProtocol`, and the same bound on a head's size:
    httptools has none (a 10 MB header was buffered whole), so a connection that has sent more than
    h11's limit (uvicorn's ``h11_max_incomplete_event_size``, 16 KB) without completing a head is
    answered 400 and closed, as h11 does."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.max_head_bytes: int = config.h11_max_incomplete_event_size or 16 * 1024
        self._head_bytes = 0


    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        # bytes of a head, not the rest of a body the app answered without reading (that is bounded by the
        # head deadline, armed when the response ended)
        in_head = cycle is None or (cycle.response_complete and not cycle.more_body)
        super().data_received(data)
        if self.cycle is not cycle:  # on_headers_complete made the next cycle: a head is complete
            self.head_timer.cancel()
            self._head_bytes = 0
        elif in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                logger.info("closing a connection from %s: a request head over %d bytes", self.client,
                            self.max_head_bytes)
                self.send_400_response("Request head too large.")



def http_protocol(name: str = "auto") -> type[asyncio.Protocol]:
    """The HTTP/1.1 protocol class of ``name``: ``httptools``, ``h11``, or ``auto`` (httptools when it is
    installed, as with ``pip install facelens``, else h11); each with the request-head deadline."""
    if name == "auto":
        name = "httptools" if _HTTPTOOLS else "h11"
    if name == "h11":
        return HeaderTimeoutProtocol
    if name == "httptools":
        if not _HTTPTOOLS:
            raise InvalidArgumentError("the httptools protocol needs the httptools package (pip install httptools)")
        return HeaderTimeoutHttpToolsProtocol
    raise InvalidArgumentError(f"unknown HTTP protocol {name!r}: choose auto, httptools or h11")


def check_loop(name: str) -> None:
    """Raise InvalidArgumentError when the event loop ``name`` (auto, uvloop, asyncio) cannot be had."""
    if name not in ("auto", "uvloop", "asyncio"):
        raise InvalidArgumentError(f"unknown event loop {name!r}: choose auto, uvloop or asyncio")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise InvalidArgumentError("the uvloop event loop needs the uvloop package (pip install uvloop)") from None


def uvicorn_config(app: Any, settings: ServerSettings, *, http: str = "auto", **kwargs: Any) -> uvicorn.Config:
    """The uvicorn configuration of the service: the HTTP protocol ``http`` (:func:`http_protocol`) with
    the request-head deadline (``settings.header_timeout_s``), at most ``settings.max_connections``
    connections and requests at once (uvicorn answers 503 beyond), no ``Server`` header, no proxy headers;
    ``kwargs`` add to these (``loop``: uvicorn's ``auto`` takes uvloop when it is installed)."""
    import uvicorn

    config = uvicorn.Config(app, http=http_protocol(http), proxy_headers=False, server_header=False,
                            limit_concurrency=settings.max_connections, **kwargs)
    config.header_timeout_s = settings.header_timeout_s  # type: ignore[attr-defined]
    return config
