"""The console's pages: one handler per page or form, each reading the signed-in session, making the API
call of :class:`~facelens.console.calls.ConsoleCalls` and rendering a template.

Every form is POSTed with the session's CSRF token (and, when the browser sends one, an ``Origin`` that is
the console's own); anything else is refused with 403 before the form is acted on. Errors of the API are
shown on the page with the API's status code and message.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import FacelensError
from ..server.deps import NO_AUTH_KEY, Services
from ..server.errors import ApiError, error_status
from ..server.keys import ApiKey, Scope
from .audits import KINDS
from .calls import ConsoleCalls, LogFilter
from .render import SECURITY_HEADERS, compare_words, html_page, match_words, picture
from .sessions import ConsoleSession, SessionStore

__all__ = ["PREFIX", "SESSION_COOKIE", "routes"]

logger = logging.getLogger(__name__)

PREFIX = "/console"
SESSION_COOKIE = "facelens_console"
SIGN_IN_COOKIE = "facelens_console_signin"  # double-submit CSRF token of the sign-in form (no session yet)
PAGE = 50  # rows per page of every list


class _Redirect(Exception):
    def __init__(self, to: str) -> None:
        self.to = to


@dataclass
class Ctx:
    """One request of a signed-in browser."""

    request: Request
    services: Services
    session: ConsoleSession
    key: ApiKey
    calls: ConsoleCalls

    def page(self, name: str, http_status: int = 200, **context: Any) -> Response:
        me = {"name": self.key.name, "key_id": self.key.key_id, "admin": self.key.admin}
        return html_page(name, http_status, me=me, csrf=self.session.csrf, version=__version__,
                         nav=context.pop("nav", ""), **context)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _sessions(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console_sessions
    return store


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _redirect(to: str) -> Response:
    return RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)


async def _context(request: Request) -> Ctx:
    """The signed-in session of this request, its key looked up again (a revoked key ends it), one request
    charged to the key's rate limit as the API does; else a redirect to the sign-in page."""
    services = _services(request)
    session = _sessions(request).get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise _Redirect(f"{PREFIX}/sign-in")
    key = NO_AUTH_KEY if session.key_id == NO_AUTH_KEY.key_id and services.settings.insecure_no_auth \
        else services.keys.get(session.key_id)
    if key is None:
        raise _Redirect(f"{PREFIX}/sign-in")
    wait = services.limiter.acquire(key.key_id)
    if wait > 0:
        raise ApiError(429, "rate_limited", f"too many requests with this key; retry in {wait:.2f} s",
                       headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return Ctx(request=request, services=services, session=session, key=key,
               calls=ConsoleCalls(services, key, request))


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    return origin is None or origin.lower() == f"{request.url.scheme}://{request.headers.get('host', '')}".lower()


async def _form(ctx: Ctx) -> FormData:
    """The POSTed form, once its CSRF token and origin are checked (403 otherwise)."""
    form = await ctx.request.form(max_files=200, max_fields=64)
    token = form.get("csrf_token")
    if not _same_origin(ctx.request) or not ctx.session.csrf_ok(token if isinstance(token, str) else None):
        raise ApiError(403, "csrf_failed", "this form's CSRF token is missing or wrong (or it came from another "
                                           "site): reload the page and send the form again")
    return form


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None


async def _files(form: FormData, name: str) -> list[tuple[str, bytes]]:
    out = []
    for value in form.getlist(name):
        if isinstance(value, UploadFile):
            data = await value.read()
            if data:
                out.append((value.filename or "image", data))
    return out


def _options(fields: dict[str, Any]) -> dict[str, Any]:
    """A form's API options, those left empty left out (the API's defaults); the route validates them."""
    return {k: v for k, v in fields.items() if v not in (None, "")}


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Callable[[Ctx], Awaitable[Response]]) -> Handler:
    """A page of a signed-in browser: API errors rendered as the error page, with the API's status."""
    async def run(request: Request) -> Response:
        try:
            ctx = await _context(request)
        except _Redirect as r:
            return _redirect(r.to)
        except ApiError as exc:
            return html_page("error.html", exc.status, exc.headers, me=None, csrf="", version=__version__, nav="",
                             status=exc.status, code=exc.code, message=exc.message)
        started = time.perf_counter()
        try:
            response = await handler(ctx)
        except FacelensError as exc:
            status, code = error_status(exc)
            if status >= 500:
                logger.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
            response = ctx.page("error.html", status, status=status, code=code,
                                message=getattr(exc, "message", str(exc)))
        # the server's time for the page (session, API calls, template), for browsers' tools and the benchmark
        response.headers["Server-Timing"] = f"console;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response
    run.__name__ = handler.__name__
    return run


# -- sign in and out -------------------------------------------------------------------------------

async def sign_in_page(request: Request) -> Response:
    token = secrets.token_urlsafe(32)
    response = html_page("sign_in.html", me=None, csrf=token, version=__version__, nav="", problem=None,
                         no_auth=_services(request).settings.insecure_no_auth)
    response.set_cookie(SIGN_IN_COOKIE, token, max_age=3600, path=PREFIX, httponly=True, samesite="strict",
                        secure=_secure(request))
    return response


async def sign_in(request: Request) -> Response:
    """Check the API key typed in; open a session for it (the key itself is not kept, only its id)."""
    services = _services(request)
    form = await request.form(max_files=0, max_fields=8)
    given = form.get("csrf_token")
    expected = request.cookies.get(SIGN_IN_COOKIE)
    if (not _same_origin(request) or not isinstance(given, str) or not expected
            or not secrets.compare_digest(given.encode(), expected.encode())):
        return html_page("error.html", 403, me=None, csrf="", version=__version__, nav="", status=403,
                         code="csrf_failed", message="the sign-in form's CSRF token is missing or wrong: open the "
                                                     "sign-in page again")
    token = _text(form, "api_key") or ""
    key = (NO_AUTH_KEY if services.settings.insecure_no_auth and not token
           else services.keys.authenticate(token))
    response: Response
    if key is None:
        fresh = secrets.token_urlsafe(32)
        response = html_page("sign_in.html", 401, me=None, csrf=fresh, version=__version__, nav="",
                             problem="That API key is invalid or has been revoked.",
                             no_auth=services.settings.insecure_no_auth)
        response.set_cookie(SIGN_IN_COOKIE, fresh, max_age=3600, path=PREFIX, httponly=True, samesite="strict",
                            secure=_secure(request))
        return response
    cookie, _ = _sessions(request).create(key.key_id)
    response = _redirect(f"{PREFIX}/")
    response.set_cookie(SESSION_COOKIE, cookie, max_age=int(_sessions(request).hours * 3600), path=PREFIX,
                        httponly=True, samesite="strict", secure=_secure(request))
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=_secure(request))
    return response


@page
async def sign_out(ctx: Ctx) -> Response:
    await _form(ctx)
    _sessions(ctx.request).end(ctx.request.cookies.get(SESSION_COOKIE))
    response = _redirect(f"{PREFIX}/sign-in")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=_secure(ctx.request))
    return response


# -- dashboard and collections ---------------------------------------------------------------------

@page
async def dashboard(ctx: Ctx) -> Response:
    names = await ctx.calls.list_collections()
    start = max(0, int(ctx.request.query_params.get("start", "0") or 0)) if ctx.request.query_params.get(
        "start", "0").isdigit() else 0
    shown = []
    for name in names[start:start + PAGE]:
        info = await ctx.calls.describe_collection(name)
        shown.append({**info, "scopes": sorted(ctx.calls.scopes(name))})
    engine = ctx.services.engine
    try:
        calibration = engine.calibration.name
    except FacelensError as exc:
        calibration = f"none ({exc})"
    recent = await ctx.calls.log_newest(LogFilter(), limit=10) if ctx.key.admin else []
    return ctx.page("dashboard.html", nav="dashboard", collections=shown, total=len(names), start=start, page=PAGE,
                    model={"name": engine.model_name, "sha256": engine.model_sha256, "calibration": calibration,
                           "embedding_size": engine.embedding_size},
                    recent=recent, running=ctx.services.calls.running, workers=ctx.services.calls.workers)


@page
async def create_collection(ctx: Ctx) -> Response:
    form = await _form(ctx)
    name = _text(form, "name") or ""
    await ctx.calls.create_collection(name)
    return _redirect(f"{PREFIX}/c/{name}")


def _collection_name(ctx: Ctx) -> str:
    return str(ctx.request.path_params["collection"])


@page
async def collection_page(ctx: Ctx) -> Response:
    name = _collection_name(ctx)
    info = await ctx.calls.describe_collection(name)
    scopes = ctx.calls.scopes(name)
    q = ctx.request.query_params
    faces = persons = None
    if Scope.READ in scopes:
        faces = await ctx.calls.list_faces(name, limit=PAGE, next_token=q.get("faces_after") or None)
        rows, after = await ctx.calls.list_persons(name, limit=PAGE, after=q.get("persons_after") or None)
        persons = {"rows": rows, "next": after}
    policy = await ctx.calls.collection_policy(name)
    crops = bool(policy["face_crops"])  # thumbnails where the policy keeps crops
    return ctx.page("collection.html", nav="collections", c=info, scopes=sorted(scopes), faces=faces, persons=persons,
                    crops=crops, policy=policy, faces_after=q.get("faces_after"), persons_after=q.get("persons_after"),
                    results=None)


@page
async def enrol(ctx: Ctx) -> Response:
    """Index each uploaded image (POST /v1/collections/{c}/faces per image). With ``X-Console-Part`` (the
    page's script, one image per request) the answer is the results fragment only."""
    name = _collection_name(ctx)
    form = await _form(ctx)
    by_file = form.get("person_from_file") == "on"
    fields = {"person_id": _text(form, "person_id"), "quality_filter": _text(form, "quality_filter")}
    results = []
    for filename, data in await _files(form, "images"):
        if by_file:  # "A000368_a.jpg" -> person A000368
            fields["person_id"] = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0].split("_", 1)[0]
        options = _options(fields)
        try:
            answer = await ctx.calls.index_faces(name, data, options)
            results.append({"file": filename, "ok": True, **answer})
        except FacelensError as exc:
            status, code = error_status(exc)
            results.append({"file": filename, "ok": False, "status": status, "code": code,
                            "message": getattr(exc, "message", str(exc))})
    if not results:
        raise ApiError(422, "invalid_request", "choose at least one image to enrol")
    if ctx.request.headers.get("x-console-part"):
        return html_page("_enrol_results.html", results=results)
    info = await ctx.calls.describe_collection(name)
    return ctx.page("enrolled.html", nav="collections", c=info, results=results)


@page
async def erase_person(ctx: Ctx) -> Response:
    name = _collection_name(ctx)
    form = await _form(ctx)
    person_id = _text(form, "person_id") or ""
    answer = await ctx.calls.erase_person(name, person_id)  # the route's answer: its receipt is the engine's
    return ctx.page("erased.html", nav="collections", answer=answer)


def _rate_field(form: FormData, name: str) -> float | None:
    text = _text(form, name)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ApiError(422, "invalid_request", f"{name} must be a rate such as 0.001, or empty for none") from None


@page
async def set_policy(ctx: Ctx) -> Response:
    """Change the collection's policy: every field of the form, logged once with the policy before and after."""
    name = _collection_name(ctx)
    form = await _form(ctx)
    days = _rate_field(form, "retention_days")
    changes: dict[str, Any] = {
        "allowed_modes": [m for m in form.getlist("allowed_modes") if isinstance(m, str)],
        "max_fpir": _rate_field(form, "max_fpir"), "max_fmr": _rate_field(form, "max_fmr"),
        **{flag: form.get(flag) == "on" for flag in ("purpose_required", "review_required",
                                                     "disclose_before_review", "face_crops")},
        "retention_days": days if days is not None else 30.0}
    await ctx.calls.set_collection_policy(name, changes)
    return _redirect(f"{PREFIX}/c/{name}#policy")


@page
async def delete_collection(ctx: Ctx) -> Response:
    name = _collection_name(ctx)
    form = await _form(ctx)
    if _text(form, "confirm") != name:
        raise ApiError(422, "invalid_request", f"type the collection's name, {name!r}, to confirm its deletion")
    await ctx.calls.delete_collection(name)
    return _redirect(f"{PREFIX}/")


@page
async def face_crop(ctx: Ctx) -> Response:
    """A stored face's crop (kept where the collection's policy says ``face_crops``)."""
    name = _collection_name(ctx)
    data = await ctx.calls.face_crop(name, str(ctx.request.path_params["face_id"]))
    return Response(data, media_type="image/jpeg", headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


# -- detect, compare, search -----------------------------------------------------------------------

@page
async def detect(ctx: Ctx) -> Response:
    if ctx.request.method == "GET":
        return ctx.page("detect.html", nav="detect", result=None, pic=None)
    form = await _form(ctx)
    files = await _files(form, "image")
    if not files:
        raise ApiError(422, "invalid_request", "choose an image")
    options = _options({"quality_filter": _text(form, "quality_filter")})
    result = await ctx.calls.detect(files[0][1], options)
    return ctx.page("detect.html", nav="detect", result=result, pic=picture(files[0][1], result["faces"]),
                    filename=files[0][0])


@page
async def compare(ctx: Ctx) -> Response:
    need = ctx.calls.purpose_required(None)
    if ctx.request.method == "GET":
        return ctx.page("compare.html", nav="compare", result=None, purpose_required=need)
    form = await _form(ctx)
    a, b = await _files(form, "image_a"), await _files(form, "image_b")
    if not a or not b:
        raise ApiError(422, "invalid_request", "choose two images")
    options = _options({"purpose": _text(form, "purpose"), "max_fmr": _text(form, "max_fmr")})
    result = await ctx.calls.compare(a[0][1], b[0][1], options)
    return ctx.page("compare.html", nav="compare", result=result, words=compare_words(result), purpose_required=need,
                    pic_a=picture(a[0][1], [result["face_a"]]), pic_b=picture(b[0][1], [result["face_b"]]))


async def _search_rules(ctx: Ctx, collection: str | None) -> dict[str, Any]:
    """What a search of ``collection`` must do under its POLICY (and the service's purpose setting): the
    form requires it, and the browser refuses the form before sending what the API would refuse."""
    if collection is None:
        return {"collection": None, "purpose_required": False, "allowed_modes": ["identify", "investigate"],
                "max_fpir": None, "max_fmr": None, "default_fpir": ctx.services.engine.config.max_fpir, "words": ""}
    policy = await ctx.calls.collection_policy(collection)
    service_purpose = ctx.calls.purpose_required(collection)
    need = bool(policy["purpose_required"]) or service_purpose
    modes = list(policy["allowed_modes"])
    default_fpir = ctx.services.engine.config.max_fpir
    parts = [f"{' and '.join(modes)} only" if len(modes) == 1 else "identify and investigate allowed",
             ("a purpose is required" + ("" if policy["purpose_required"] else " (by the service's setting)"))
             if need else "a purpose is optional"]
    if policy["max_fpir"] is not None:
        parts.append(f"identifications at a false-positive identification rate of at most {policy['max_fpir']:g}")
    if policy["max_fmr"] is not None:
        parts.append(f"at a per-comparison false-match rate of at most {policy['max_fmr']:g}")
    return {"collection": collection, "purpose_required": need, "allowed_modes": modes,
            "max_fpir": policy["max_fpir"], "max_fmr": policy["max_fmr"], "default_fpir": default_fpir,
            "words": f"Policy of {collection}: " + "; ".join(parts) + "."}


@page
async def search_rules(ctx: Ctx) -> Response:
    """GET /console/c/{c}/search-rules.json: the search form's rules for another collection chosen in it."""
    rules = await _search_rules(ctx, _collection_name(ctx))
    return JSONResponse(rules, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@page
async def search(ctx: Ctx) -> Response:
    names = [n for n in await ctx.calls.list_collections() if Scope.SEARCH in ctx.calls.scopes(n)]
    asked = ctx.request.query_params.get("collection")
    chosen = asked if asked in names else (names[0] if names else None)
    rules = await _search_rules(ctx, chosen)
    mode = "identify" if "identify" in rules["allowed_modes"] else rules["allowed_modes"][0]
    context: dict[str, Any] = {"nav": "search", "names": names, "chosen": chosen, "result": None, "mode": mode,
                               "purpose": "", "rules": rules, "max_fpir": ""}
    if ctx.request.method == "GET":
        return ctx.page("search.html", **context)
    form = await _form(ctx)
    chosen = _text(form, "collection") or ""
    files = await _files(form, "image")
    if not files:
        raise ApiError(422, "invalid_request", "choose a probe image")
    mode = _text(form, "mode") or "identify"
    count = _text(form, "max_results")
    fpir = _rate_field(form, "max_fpir") if mode == "identify" else None
    options = _options({"mode": mode, "purpose": _text(form, "purpose"), "max_fpir": fpir,
                        ("max_candidates" if mode == "investigate" else "max_results"): count})
    result = await ctx.calls.search_by_image(chosen, files[0][1], options)
    first = result["results"][0] if result["results"] else None
    rows = []
    if first is not None:
        size = first.get("collection_size")
        for m in first.get("matches") or []:
            rows.append({**m, "meaning": match_words(m, size)})
        for cand in first.get("candidates") or []:
            rows.append(cand)
    context.update(chosen=chosen, mode=mode, purpose=_text(form, "purpose") or "", result=result, first=first,
                   rows=rows, crops=bool((await ctx.calls.collection_policy(chosen))["face_crops"]),
                   rules=await _search_rules(ctx, chosen), max_fpir=_text(form, "max_fpir") or "",
                   pic=picture(files[0][1], [first["searched_face"]] if first and first.get("searched_face") else []))
    return ctx.page("search.html", **context)


# -- review queue: the API's review routes ----------------------------------------------------------

REVIEW_STATES = ("pending", "confirmed", "rejected", "expired", "withdrawn")


@page
async def review(ctx: Ctx) -> Response:
    """The items this key may see, filtered by collection and state (pending first by default)."""
    q = ctx.request.query_params
    collection = q.get("collection") or None
    state = q.get("state", "pending") or None
    if state is not None and state not in REVIEW_STATES:
        raise ApiError(422, "invalid_request", f"state is one of {', '.join(REVIEW_STATES)}")
    answer = await ctx.calls.review_list(collection=collection, state=state, limit=PAGE, after=q.get("after") or None)
    names = await ctx.calls.list_collections()
    return ctx.page("review.html", nav="review", items=answer["items"], next=answer["next_after"],
                    collection=collection, state=state, states=REVIEW_STATES, names=names,
                    after=q.get("after"))


def _item_ids(ctx: Ctx) -> tuple[str, str]:
    return str(ctx.request.path_params["collection"]), str(ctx.request.path_params["item_id"])


@page
async def review_item(ctx: Ctx) -> Response:
    """Probe and candidate side by side, the score and what it means, and the decision form."""
    collection, item_id = _item_ids(ctx)
    item = await ctx.calls.review_get(collection, item_id)
    can_decide = Scope.REVIEW in ctx.calls.scopes(collection)
    searcher = item.get("searcher") or {}
    own = searcher.get("kind") == "key" and searcher.get("id") == ctx.key.key_id
    return ctx.page("review_item.html", nav="review", item=item, can_decide=can_decide and not own, own=own)


@page
async def review_decide(ctx: Ctx) -> Response:
    collection, item_id = _item_ids(ctx)
    form = await _form(ctx)
    decision = _text(form, "decision") or ""
    await ctx.calls.review_decide(collection, item_id, decision, _text(form, "reason") or "")
    return _redirect(f"{PREFIX}/review/{collection}/{item_id}")


@page
async def review_probe(ctx: Ctx) -> Response:
    collection, item_id = _item_ids(ctx)
    data = await ctx.calls.review_probe_crop(collection, item_id)
    return Response(data, media_type="image/jpeg", headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


# -- log, keys, audit (global admins) --------------------------------------------------------------

@page
async def log_page(ctx: Ctx) -> Response:
    q = ctx.request.query_params
    before = q.get("before")
    flt = LogFilter(action=q.get("action") or None, collection=q.get("collection") or None,
                    key_id=q.get("key_id") or None, before=int(before) if before and before.isdigit() else None)
    entries = await ctx.calls.log_newest(flt, limit=PAGE)
    head = await ctx.calls.log_head()
    return ctx.page("log.html", nav="log", entries=entries, head=head, flt=flt, verified=None,
                    older=entries[-1]["seq"] if len(entries) == PAGE else None)


@page
async def log_verify(ctx: Ctx) -> Response:
    await _form(ctx)
    report = await ctx.calls.verify_log()
    entries = await ctx.calls.log_newest(LogFilter(), limit=PAGE)
    head = await ctx.calls.log_head()
    return ctx.page("log.html", nav="log", entries=entries, head=head, flt=LogFilter(), verified=report,
                    older=entries[-1]["seq"] if len(entries) == PAGE else None)


async def _keys_page(ctx: Ctx, new: Any = None, status: int = 200) -> Response:
    keys = await ctx.calls.list_keys()
    names = await ctx.calls.list_collections()
    return ctx.page("keys.html", http_status=status, nav="keys", keys=[k.to_dict() for k in keys], names=names, new=new,
                    scopes=[s.value for s in Scope])


@page
async def keys_page(ctx: Ctx) -> Response:
    return await _keys_page(ctx)


@page
async def create_key(ctx: Ctx) -> Response:
    form = await _form(ctx)
    admin = form.get("admin") == "on"
    collection = _text(form, "collection")
    scopes = [s for s in form.getlist("scope") if isinstance(s, str)]
    grants = {collection: scopes} if collection and not admin else {}
    new = await ctx.calls.create_key(name=_text(form, "name") or "", admin=admin, grants=grants)
    return await _keys_page(ctx, new={"token": new.token, **new.key.to_dict()}, status=201)


@page
async def revoke_key(ctx: Ctx) -> Response:
    await _form(ctx)
    await ctx.calls.revoke_key(str(ctx.request.path_params["key_id"]))
    return _redirect(f"{PREFIX}/keys")


@page
async def audit_page(ctx: Ctx) -> Response:
    """Audit reports (listed from ``<home>/audits``, one shown framed), the audits started here with their
    progress, the form that starts one, and the way to the transparency report."""
    reports = ctx.calls.list_audits()
    shown = ctx.request.query_params.get("report")
    return _audit_page(ctx, reports=reports, shown=shown if shown in {r["name"] for r in reports} else None)


def _audit_page(ctx: Ctx, http_status: int = 200, *, reports: list[dict[str, Any]] | None = None,
                shown: str | None = None, problem: str | None = None, form: dict[str, str] | None = None) -> Response:
    return ctx.page("audit.html", http_status=http_status, nav="audit",
                    reports=ctx.calls.list_audits() if reports is None else reports, shown=shown,
                    folder=str(ctx.calls.audits_dir()), jobs=ctx.calls.audit_jobs(), kinds=KINDS, problem=problem,
                    form=form or {})


@page
async def audit_start(ctx: Ctx) -> Response:
    """Start an audit of a dataset on the server; a refused one is shown on the form, with why."""
    form = await _form(ctx)
    fields = {n: _text(form, n) or "" for n in ("dataset", "name", "kind", "max_fmr")}
    try:
        max_fmr = _rate_field(form, "max_fmr")
        job = await ctx.calls.start_audit(dataset=fields["dataset"], name=fields["name"] or None,
                                          kind=fields["kind"] or None, max_fmr=max_fmr)
    except FacelensError as exc:
        status, _ = error_status(exc)
        if status >= 500 or status in (401, 403):
            raise
        return _audit_page(ctx, status, problem=getattr(exc, "message", str(exc)), form=fields)
    return _redirect(f"{PREFIX}/audit?job={job.name}#job-{job.name}")


@page
async def audit_job_status(ctx: Ctx) -> Response:
    """A job's state as JSON, for the Audit page's script (the page itself shows the same)."""
    job = ctx.calls.audit_job(str(ctx.request.path_params["name"]))
    body = {**job.to_dict(), "percent": job.percent,
            "report": f"{PREFIX}/audit?report={job.name}" if job.state == "done" else None}
    return JSONResponse(body, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def _period(ctx: Ctx) -> tuple[str | None, str | None]:
    q = ctx.request.query_params
    return (q.get("since") or "").strip() or None, (q.get("until") or "").strip() or None


@page
async def transparency_page(ctx: Ctx) -> Response:
    """The transparency report of a period: its headline numbers and the log's verification here, the
    public page (``facelens report transparency``'s) framed below."""
    since, until = _period(ctx)
    report = await ctx.calls.transparency(since=since, until=until)
    query = urlencode({k: v for k, v in (("since", since), ("until", until)) if v})
    return ctx.page("transparency.html", nav="audit", report=report, since=since or "", until=until or "",
                    query=query)


@page
async def transparency_report(ctx: Ctx) -> Response:
    since, until = _period(ctx)
    data = await ctx.calls.transparency_html(since=since, until=until)
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": REPORT_CSP, "X-Frame-Options": "SAMEORIGIN"}
    return Response(data, media_type="text/html; charset=utf-8", headers=headers)


#: An audit report is facelens's own static HTML (inline style, images as data: URLs, no script): framed
#: by the audit page in a sandbox, with a policy allowing exactly that.
REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"


@page
async def audit_report(ctx: Ctx) -> Response:
    data = ctx.calls.audit_report(str(ctx.request.path_params["name"]))
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": REPORT_CSP, "X-Frame-Options": "SAMEORIGIN"}
    return Response(data, media_type="text/html; charset=utf-8", headers=headers)


async def root(request: Request) -> Response:
    return _redirect(f"{PREFIX}/")


routes = [
    Route("/", root, methods=["GET"], include_in_schema=False),
    Route(f"{PREFIX}", root, methods=["GET"], include_in_schema=False),
    Route(f"{PREFIX}/", dashboard, methods=["GET"]),
    Route(f"{PREFIX}/sign-in", sign_in_page, methods=["GET"]),
    Route(f"{PREFIX}/sign-in", sign_in, methods=["POST"]),
    Route(f"{PREFIX}/sign-out", sign_out, methods=["POST"]),
    Route(f"{PREFIX}/collections", create_collection, methods=["POST"]),
    Route(f"{PREFIX}/c/{{collection}}", collection_page, methods=["GET"]),
    Route(f"{PREFIX}/c/{{collection}}/enrol", enrol, methods=["POST"]),
    Route(f"{PREFIX}/c/{{collection}}/erase", erase_person, methods=["POST"]),
    Route(f"{PREFIX}/c/{{collection}}/delete", delete_collection, methods=["POST"]),
    Route(f"{PREFIX}/c/{{collection}}/policy", set_policy, methods=["POST"]),
    Route(f"{PREFIX}/c/{{collection}}/faces/{{face_id}}/crop.jpg", face_crop, methods=["GET"]),
    Route(f"{PREFIX}/c/{{collection}}/search-rules.json", search_rules, methods=["GET"]),
    Route(f"{PREFIX}/detect", detect, methods=["GET", "POST"]),
    Route(f"{PREFIX}/compare", compare, methods=["GET", "POST"]),
    Route(f"{PREFIX}/search", search, methods=["GET", "POST"]),
    Route(f"{PREFIX}/review", review, methods=["GET"]),
    Route(f"{PREFIX}/review/{{collection}}/{{item_id}}", review_item, methods=["GET"]),
    Route(f"{PREFIX}/review/{{collection}}/{{item_id}}/decide", review_decide, methods=["POST"]),
    Route(f"{PREFIX}/review/{{collection}}/{{item_id}}/probe.jpg", review_probe, methods=["GET"]),
    Route(f"{PREFIX}/log", log_page, methods=["GET"]),
    Route(f"{PREFIX}/log/verify", log_verify, methods=["POST"]),
    Route(f"{PREFIX}/keys", keys_page, methods=["GET"]),
    Route(f"{PREFIX}/keys", create_key, methods=["POST"]),
    Route(f"{PREFIX}/keys/{{key_id}}/revoke", revoke_key, methods=["POST"]),
    Route(f"{PREFIX}/audit", audit_page, methods=["GET"]),
    Route(f"{PREFIX}/audit", audit_start, methods=["POST"]),
    Route(f"{PREFIX}/audit/jobs/{{name}}.json", audit_job_status, methods=["GET"]),
    Route(f"{PREFIX}/audit/transparency", transparency_page, methods=["GET"]),
    Route(f"{PREFIX}/audit/transparency.html", transparency_report, methods=["GET"]),
    Route(f"{PREFIX}/audit/{{name}}/report.html", audit_report, methods=["GET"]),
]
