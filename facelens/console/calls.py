"""What the console does, as the HTTP API does it: each method is the engine call (or the route function
itself) that one API route makes, under the signed-in key's scopes, and is logged as that route logs it.

The console never reaches past this module into the engine, so that a page can do nothing a client of
the API with the same key could not (docs/console.md lists the route behind each page). Errors are the
API's: :class:`~facelens.server.errors.ApiError` or a :class:`~facelens.errors.FacelensError`, which the
pages show with the API's status and message.
"""

from __future__ import annotations

import base64
import inspect
import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Message

from ..accountability.actor import Actor
from ..accountability.log import LogEntry
from ..server.deps import Services, not_found
from ..server.errors import ApiError
from ..server.keys import ApiKey, KeyStore, NewKey, Scope
from ..server.routes import collections as collections_routes
from ..server.routes import faces as faces_routes
from ..server.routes import images as images_routes
from ..server.routes import log as log_routes
from ..server.routes import persons as persons_routes
from ..server.routes import reports as reports_routes
from ..server.routes import review as review_routes
from ..server.routes import search as search_routes
from ..server.schemas import CollectionIn, ReviewDecisionIn
from .audits import AuditJob, audit_jobs, read_job, start_audit

__all__ = ["ConsoleCalls", "KeyActionLog", "LogFilter"]


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which log entries the log page shows: by ``action``, ``collection`` and the acting ``key_id``
    (None: any), newest first, ``before`` a seq (None: from the newest)."""

    action: str | None = None
    collection: str | None = None
    key_id: str | None = None
    before: int | None = None


class KeyActionLog:
    """The search log as the key store's action log, naming the signed-in key as the one who acted
    (``key_created`` / ``key_revoked`` from the console carry the admin key's id and name)."""

    def __init__(self, services: Services, key: ApiKey) -> None:
        self.services = services
        self.key = key

    def append(self, record: Mapping[str, Any]) -> LogEntry:
        actor = Actor.for_key(self.key.key_id, self.key.name)
        return self.services.log.append({**record, "key_id": self.key.key_id, "actor": actor.to_dict()})


class ConsoleCalls:
    """The API calls of one signed-in ``key``."""

    def __init__(self, services: Services, key: ApiKey, request: Request | None = None) -> None:
        self.services = services
        self.key = key
        self.request = request  # the console's request (its ASGI scope is the app's; uploads are rebuilt from it)

    # -- access, as the routes' dependencies (server/deps.py) decide it ---------------------------------

    def scopes(self, collection: str) -> frozenset[Scope]:
        return self.key.scopes(collection)

    def require(self, collection: str, scope: Scope | None = None) -> str:
        """``collection`` when the key has ``scope`` on it (None: any scope); else the API's 404 (invisible)
        or 403 (visible, but not this scope), word for word."""
        scopes = self.key.scopes(collection)
        if not scopes:
            raise not_found(collection)
        if scope is not None and scope not in scopes:
            raise ApiError(403, "forbidden", f"this key lacks the {scope.value!r} scope on collection {collection!r}")
        return collection

    def require_admin(self) -> None:
        """The API's answer to a key that is not a global admin (routes' ``AdminKey``)."""
        if not self.key.admin:
            raise ApiError(403, "forbidden", "this needs a global admin key (`facelens keys create --admin`)")

    # -- calling the API's route functions ---------------------------------------------------------------

    async def _route(self, fn: Callable[..., Awaitable[Any]], *,
                     json_body: Mapping[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        """:meth:`_invoke` of a route answering JSON (a dict)."""
        answer: dict[str, Any] = await self._invoke(fn, json_body=json_body, **params)
        return answer

    async def _invoke(self, fn: Callable[..., Awaitable[Any]], *,
                      json_body: Mapping[str, Any] | None = None, **params: Any) -> Any:
        """Call a route function of ``facelens/server/routes`` as FastAPI would after its dependencies: each
        parameter it declares by name (``key``, ``services``, ``collection``, ``request``...) from ``params``,
        this key and the services. ``json_body``: the JSON body of a route that reads its request itself (image
        uploads: images base64-encoded, as any API client may send them), given as a real ASGI request."""
        available: dict[str, Any] = {"key": self.key, "services": self.services, **params}
        if json_body is not None:
            available["request"] = self._json_request(json_body)
        names = inspect.signature(fn).parameters
        return await fn(**{name: available[name] for name in names if name in available})

    def _json_request(self, body: Mapping[str, Any]) -> Request:
        data = json.dumps(body).encode()
        scope = {**(self.request.scope if self.request is not None else {"type": "http"}), "method": "POST",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]}
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}
        return Request(scope, receive)

    # -- collections: GET/POST /v1/collections, GET/DELETE /v1/collections/{c} --------------------------

    async def list_collections(self) -> list[str]:
        answer = await self._route(collections_routes.list_collections)
        return list(answer["collections"])

    async def describe_collection(self, collection: str) -> dict[str, Any]:
        self.require(collection)
        return await self._route(collections_routes.describe_collection, collection=collection)

    async def create_collection(self, name: str) -> dict[str, Any]:
        try:
            body = CollectionIn(name=name)
        except ValidationError:
            raise ApiError(422, "invalid_request", "a collection name is 1-128 letters, digits, _ . -") from None
        return await self._route(collections_routes.create_collection, body=body)

    async def delete_collection(self, collection: str) -> dict[str, Any]:
        self.require(collection, Scope.ADMIN)
        return await self._route(collections_routes.delete_collection, collection=collection)

    @property
    def actor(self) -> Actor:
        """Who acts: the signed-in key (its name is shown in the log and on every page)."""
        return Actor.for_key(self.key.key_id, self.key.name)

    # -- policies: Engine.collection_policy / set_collection_policy ---------------------------

    async def collection_policy(self, collection: str) -> dict[str, Any]:
        self.require(collection)
        engine = self.services.engine
        return (await self.services.calls(lambda: engine.collection_policy(collection))).to_dict()

    async def set_collection_policy(self, collection: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change the policy (the collection's admins), logged as ``policy_changed`` with this key as actor."""
        self.require(collection, Scope.ADMIN)
        engine, actor = self.services.engine, self.actor
        policy = await self.services.calls(lambda: engine.set_collection_policy(collection, changes, actor=actor))
        return policy.to_dict()

    # -- faces and persons ---------------------------------------------------------------------------

    async def list_faces(self, collection: str, *, limit: int, next_token: str | None) -> dict[str, Any]:
        """GET /v1/collections/{c}/faces: one page."""
        self.require(collection, Scope.READ)
        return await self._route(faces_routes.list_faces, collection=collection, limit=limit, next_token=next_token)

    async def list_persons(self, collection: str, *, limit: int, after: str | None) -> tuple[list[tuple[str, int]],
                                                                                             str | None]:
        """One page of GET /v1/collections/{c}/persons (the console pages it; the route answers them all)."""
        self.require(collection, Scope.READ)
        engine = self.services.engine
        return await self.services.calls(lambda: engine.list_persons_page(collection, limit=limit, after=after))

    async def index_faces(self, collection: str, image: bytes, options: Mapping[str, Any]) -> dict[str, Any]:
        """POST /v1/collections/{c}/faces with one image and the API's options (person_id, quality_filter...)."""
        self.require(collection, Scope.INDEX)
        return await self._route(faces_routes.index_faces, collection=collection,
                                 json_body={**options, "image": _b64(image)})

    async def face_crop(self, collection: str, face_id: str) -> bytes:
        """The small JPEG crop kept of a stored face (``Engine.face_crop``: policy ``face_crops``); the
        read scope, as listing the faces needs."""
        self.require(collection, Scope.READ)
        engine = self.services.engine
        return await self.services.calls(lambda: engine.face_crop(collection, face_id))

    async def erase_person(self, collection: str, person_id: str) -> dict[str, Any]:
        """DELETE /v1/collections/{c}/persons/{p}: the person, every face and vector of theirs."""
        self.require(collection, Scope.ADMIN)
        return await self._route(persons_routes.erase_person, collection=collection, person_id=person_id)

    # -- images: POST /v1/detect, POST /v1/compare (logged) ---------------------------------------------

    async def detect(self, image: bytes, options: Mapping[str, Any]) -> dict[str, Any]:
        return await self._route(images_routes.detect, json_body={**options, "image": _b64(image)})

    async def compare(self, image_a: bytes, image_b: bytes, options: Mapping[str, Any]) -> dict[str, Any]:
        """POST /v1/compare: the purpose checked, the compare run and logged (a failed one too)."""
        return await self._route(images_routes.compare,
                                 json_body={**options, "image_a": _b64(image_a), "image_b": _b64(image_b)})

    # -- search: POST /v1/collections/{c}/search/image (logged before it answers) -----------------------

    async def search_by_image(self, collection: str, image: bytes, options: Mapping[str, Any]) -> dict[str, Any]:
        self.require(collection, Scope.SEARCH)
        return await self._route(search_routes.search_by_image, collection=collection,
                                 json_body={**options, "image": _b64(image)})

    # -- the review queue: routes/review.py ------------------------------------------------------------

    async def review_list(self, *, collection: str | None, state: str | None, limit: int,
                          after: str | None) -> dict[str, Any]:
        """GET /v1/review: the items this key may see (a reviewer: all of the collection; a searcher: its own)."""
        answer: dict[str, Any] = await self._route(review_routes.list_review, collection=collection, state=state,
                                                   limit=limit, after=after)
        return answer

    async def review_get(self, collection: str, item_id: str) -> dict[str, Any]:
        """GET /v1/collections/{c}/review/{item}."""
        self.require(collection)
        answer: dict[str, Any] = await self._route(review_routes.get_review, collection=collection,
                                                   item_id=item_id)
        return answer

    async def review_probe_crop(self, collection: str, item_id: str) -> bytes:
        """GET /v1/collections/{c}/review/{item}/probe.jpg."""
        self.require(collection)
        response = await self._invoke(review_routes.get_probe_crop, collection=collection, item_id=item_id)
        return bytes(response.body)

    async def review_decide(self, collection: str, item_id: str, decision: str, reason: str) -> dict[str, Any]:
        """POST /v1/collections/{c}/review/{item}/confirm or /reject, with the reason; four eyes enforced by
        the core (the searcher cannot decide: 403), final (a second decision: 409)."""
        self.require(collection)
        fn = {"confirm": review_routes.confirm_review, "reject": review_routes.reject_review}.get(decision)
        if fn is None:
            raise ApiError(422, "invalid_request", "the decision is confirm or reject")
        try:
            body = ReviewDecisionIn(reason=reason)
        except ValidationError:
            raise ApiError(422, "invalid_request", "a decision needs a reason (1-2,000 characters): what in the "
                                                   "two faces decided it") from None
        answer: dict[str, Any] = await self._route(fn, collection=collection, item_id=item_id, body=body)
        return answer

    def purpose_required(self, collection: str | None) -> bool:
        return self.services.settings.purpose_policy(collection) == "required"

    # -- the log (global admins): GET /v1/log -----------------------------------------------------------

    async def log_page(self, *, after: int, limit: int) -> dict[str, Any]:
        self.require_admin()
        return await log_routes.list_entries(self.key, self.services, after=after, limit=limit)

    async def log_newest(self, flt: LogFilter, *, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` entries matching ``flt``, newest first (the log page; GET /v1/log reads the same
        entries oldest first). A read-only query of the log file: filters run in SQLite, on the page only."""
        self.require_admin()
        path, keys = self.services.log.path, self.services.keys
        entries = await self.services.calls(lambda: _newest(path, flt, limit))
        names = {k.key_id: k.name for k in await self.services.calls(keys.list_keys)}
        for e in entries:  # who acted: the actor's name, else the name of the key the entry names
            actor = e.get("actor") if isinstance(e.get("actor"), dict) else None
            key_id = e.get("key_id")
            e["who"] = ((actor or {}).get("name") or (actor or {}).get("id")
                        or (names.get(key_id, f"key {key_id}") if key_id else "the command line"))
        return entries

    async def log_head(self) -> tuple[int, str] | None:
        self.require_admin()
        return await self.services.calls(self.services.log.head)

    async def verify_log(self) -> dict[str, Any]:
        """``facelens log verify`` of the service's log with its own public key (reads every entry)."""
        self.require_admin()
        report = await self.services.calls(self.services.log.verify)
        return report.to_dict()

    # -- keys (global admins; the CLI's `facelens keys`, no HTTP route) ---------------------------------

    def _key_store(self) -> KeyStore:
        keys = self.services.keys
        return KeyStore(keys.path, home=keys.home, action_log=KeyActionLog(self.services, self.key))

    async def list_keys(self) -> list[ApiKey]:
        self.require_admin()
        return await self.services.calls(self.services.keys.list_keys)

    async def create_key(self, *, name: str, admin: bool, grants: Mapping[str, Sequence[str]]) -> NewKey:
        self.require_admin()

        def create() -> NewKey:
            store = self._key_store()
            try:
                return store.create(name=name, admin=admin, grants=grants)
            finally:
                store.close()
        return await self.services.calls(create)

    async def revoke_key(self, key_id: str) -> ApiKey:
        self.require_admin()

        def revoke() -> ApiKey:
            store = self._key_store()
            try:
                return store.revoke(key_id)
            finally:
                store.close()
        return await self.services.calls(revoke)

    # -- audit reports (global admins): <home>/audits/<name>/report.html --------------------------------

    def audits_dir(self) -> Path:
        return Path(self.services.settings.home) / "audits"

    def list_audits(self) -> list[dict[str, Any]]:
        self.require_admin()
        root = self.audits_dir()
        if not root.is_dir():
            return []
        found = []
        for report in sorted(root.glob("*/report.html")):
            st = report.stat()
            found.append({"name": report.parent.name, "bytes": st.st_size, "modified": st.st_mtime})
        return found

    def audit_report(self, name: str) -> bytes:
        self.require_admin()
        root = self.audits_dir()
        names = {p.parent.name for p in root.glob("*/report.html")} if root.is_dir() else set()
        if name not in names:  # only names listed from the folder: no path from the request is opened
            raise ApiError(404, "not_found", f"no audit report named {name!r} in {root}")
        return (root / name / "report.html").read_bytes()


    # -- running an audit (global admins; the CLI's `facelens audit`, no HTTP route): console/audits.py ----

    async def start_audit(self, *, dataset: str, name: str | None, kind: str | None,
                          max_fmr: float | None) -> AuditJob:
        """Read the dataset on the server (a path on this machine) and start its audit; the job runs on."""
        self.require_admin()
        engine, root, by = self.services.engine, self.audits_dir(), self.key.name
        return await self.services.calls(lambda: start_audit(engine, root, dataset=dataset, name=name, kind=kind,
                                                             max_fmr=max_fmr, by=by))

    def audit_jobs(self) -> list[AuditJob]:
        self.require_admin()
        return audit_jobs(self.audits_dir())

    def audit_job(self, name: str) -> AuditJob:
        self.require_admin()
        job = read_job(self.audits_dir(), name)
        if job is None:
            raise ApiError(404, "not_found", f"no audit named {name!r} was started from the console")
        return job

    # -- the transparency report (global admins): GET /v1/reports/transparency --------------------------

    async def transparency(self, *, since: str | None, until: str | None) -> dict[str, Any]:
        """The report of ``[since, until)`` as JSON (the route's ``format=json``)."""
        self.require_admin()
        response = await self._invoke(reports_routes.transparency, since=since, until=until, format="json")
        answer: dict[str, Any] = json.loads(bytes(response.body))
        return answer

    async def transparency_html(self, *, since: str | None, until: str | None) -> bytes:
        """The report's self-contained page (the route's ``format=html``, as ``facelens report transparency``)."""
        self.require_admin()
        response = await self._invoke(reports_routes.transparency, since=since, until=until, format="html")
        return bytes(response.body)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _newest(path: Path | str, flt: LogFilter, limit: int) -> list[dict[str, Any]]:
    if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):  # the log in PostgreSQL
        from ..accountability.log_pg import newest_pg_entries

        fields = {f: v for f, v in (("action", flt.action), ("collection", flt.collection), ("key_id", flt.key_id))
                  if v}
        return [{**e.body, "seq": e.seq, "hash": e.hash, "signed": bool(e.sig)}
                for e in newest_pg_entries(path, before=flt.before, fields=fields, limit=limit)]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        where: list[str] = ["1"]
        args: list[int | str] = []
        if flt.before is not None:
            where.append("seq < ?")
            args.append(flt.before)
        for field, value in (("action", flt.action), ("collection", flt.collection), ("key_id", flt.key_id)):
            if value:
                where.append(f"json_extract(body, '$.{field}') = ?")
                args.append(value)
        rows = conn.execute(f"SELECT seq, hash, body, sig FROM entries WHERE {' AND '.join(where)} "
                            "ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
    finally:
        conn.close()
    return [{**json.loads(body), "seq": int(seq), "hash": digest, "signed": bool(sig)}
            for seq, digest, body, sig in rows]
