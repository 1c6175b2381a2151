"""What the console does, as the HTTP API does it: each method is the engine call (or the route function
itself) that one API route makes, under the signed-in key's scopes, and is logged as that route logs it.

The console never reaches past this module into the engine, so that a page can do nothing a client of
the API with the same key could not (docs/console.md lists the route behind each page). Errors are the
API's: :class:`~facelens.server.errors.ApiError` or a :class:`~facelens.errors.FacelensError`, which the
pages show with the API's status and message.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..accountability.actor import Actor
from ..accountability.log import LogEntry, compare_record
from ..errors import FacelensError
from ..server.deps import Services, not_found
from ..server.errors import ApiError
from ..server.keys import ApiKey, KeyStore, NewKey, Scope
from ..server.routes import collections as collections_routes
from ..server.routes import faces as faces_routes
from ..server.routes import log as log_routes
from ..server.routes import persons as persons_routes
from ..server.routes import search as search_routes
from ..server.schemas import CollectionIn, CompareOptions, DetectOptions, IndexOptions, SearchImageOptions
from ..types import Comparison

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

    def __init__(self, services: Services, key: ApiKey) -> None:
        self.services = services
        self.key = key

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

    # -- collections: GET/POST /v1/collections, GET/DELETE /v1/collections/{c} --------------------------

    async def list_collections(self) -> list[str]:
        answer = await collections_routes.list_collections(self.key, self.services)
        return list(answer["collections"])

    async def describe_collection(self, collection: str) -> dict[str, Any]:
        self.require(collection)
        return await collections_routes.describe_collection(collection, self.services)

    async def create_collection(self, name: str) -> dict[str, Any]:
        return await collections_routes.create_collection(CollectionIn(name=name), self.key, self.services)

    async def delete_collection(self, collection: str) -> dict[str, Any]:
        self.require(collection, Scope.ADMIN)
        return await collections_routes.delete_collection(collection, self.services)

    @property
    def actor(self) -> Actor:
        """Who acts: the signed-in key (its name is shown in the log and on every page)."""
        return Actor.for_key(self.key.key_id, self.key.name)

    # -- policies (issue 15): Engine.collection_policy / set_collection_policy ---------------------------

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
        return await faces_routes.list_faces(collection, self.services, limit=limit, next_token=next_token)

    async def list_persons(self, collection: str, *, limit: int, after: str | None) -> tuple[list[tuple[str, int]],
                                                                                             str | None]:
        """One page of GET /v1/collections/{c}/persons (the console pages it; the route answers them all)."""
        self.require(collection, Scope.READ)
        engine = self.services.engine
        return await self.services.calls(lambda: engine.list_persons_page(collection, limit=limit, after=after))

    async def index_faces(self, collection: str, image: bytes, options: IndexOptions) -> dict[str, Any]:
        """POST /v1/collections/{c}/faces with one image."""
        self.require(collection, Scope.INDEX)
        kwargs = options.engine_kwargs()
        engine = self.services.engine
        result = await self.services.calls(lambda: engine.index_faces(collection, image, **kwargs))
        return result.to_dict()

    async def erase_person(self, collection: str, person_id: str) -> dict[str, Any]:
        """DELETE /v1/collections/{c}/persons/{p}: the person, every face and vector of theirs."""
        self.require(collection, Scope.ADMIN)
        return await persons_routes.erase_person(person_id, collection, self.services)

    # -- images: POST /v1/detect, POST /v1/compare (logged) ---------------------------------------------

    async def detect(self, image: bytes, options: DetectOptions) -> dict[str, Any]:
        kwargs = options.engine_kwargs()
        engine = self.services.engine
        faces = await self.services.calls(lambda: engine.detect(image, **kwargs))
        return {"faces": [f.to_dict() for f in faces], "faces_over_limit": faces.faces_over_limit}

    async def compare(self, image_a: bytes, image_b: bytes, options: CompareOptions) -> dict[str, Any]:
        """As the route: the purpose checked, the compare run, then logged (a failed one too)."""
        services = self.services
        purpose = services.purpose(None, options.purpose)
        kwargs = options.engine_kwargs()

        def record(result: Comparison | None, error: FacelensError | None = None) -> dict[str, Any]:
            return compare_record(key_id=self.key.key_id, purpose=purpose, options=kwargs, result=result, error=error,
                                  image_a_sha256=hashlib.sha256(image_a).hexdigest(),
                                  image_b_sha256=hashlib.sha256(image_b).hexdigest())

        try:
            result = await services.calls(lambda: services.engine.compare(image_a, image_b, **kwargs))
        except FacelensError as exc:
            await services.record(record(None, exc))
            raise
        entry = await services.record(record(result))
        return {**result.to_dict(), "log_entry": {"seq": entry.seq, "hash": entry.hash}}

    # -- search: POST /v1/collections/{c}/search/image (logged before it answers) -----------------------

    async def search_by_image(self, collection: str, image: bytes, options: SearchImageOptions) -> dict[str, Any]:
        self.require(collection, Scope.SEARCH)
        services = self.services
        purpose = services.purpose(collection, options.purpose)
        kwargs = options.engine_kwargs()
        results, entry = await search_routes._logged(
            services, lambda: services.engine.search_faces_by_image(collection, image, **kwargs),
            action="search_faces_by_image", key_id=self.key.key_id, purpose=purpose, collection=collection,
            probe={"image_sha256": hashlib.sha256(image).hexdigest()}, options=kwargs)
        return {"collection": collection, "results": [r.to_dict() for r in results],
                "faces_over_limit": getattr(results, "faces_over_limit", 0),
                "log_entry": {"seq": entry.seq, "hash": entry.hash}}

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


def _newest(path: Path, flt: LogFilter, limit: int) -> list[dict[str, Any]]:
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
