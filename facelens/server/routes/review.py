"""The review queue over HTTP (docs/identification.md, "Review"): the leads of investigations, their two
face crops, and the decisions of reviewers.

Who sees what: a key with the ``review`` (or ``admin``) scope on a collection lists, shows and decides
every item of it; a ``search`` key lists and shows only the items of its own searches, with who each lead
points at withheld until a reviewer confirmed it (unless the collection's policy discloses identities
before review), and decides none. The searcher never decides their own leads (four eyes: 403
``review_forbidden``, even with the ``review`` scope); a second decision is 409 ``review_decided``. The
crops are JPEGs sent with ``Cache-Control: no-store``; a stored face's crop needs the ``read`` scope.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from ...accountability.actor import Actor
from ...accountability.review import RETENTION_ACTOR, ReviewItem, page_token
from ...errors import CollectionNotFoundError, FacelensError, ReviewItemNotFoundError
from ..deps import Key, ReadCollection, Services, ServicesDep, VisibleCollection, not_found
from ..errors import ApiError
from ..keys import ApiKey, Scope
from ..schemas import ReviewDecisionIn, ReviewItemOut, ReviewListOut

__all__ = ["PURGE_INTERVAL_S", "purge_forever", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["review"])

PURGE_INTERVAL_S = 3600.0  # the service expires review items past their retention this often ...
PURGE_FIRST_S = 60.0  # ... first this long after it starts (not at once: start-up opens no collection)

ItemId = Annotated[str, Path(min_length=1, max_length=64, description="A review item's id (32 hex digits)")]
FaceId = Annotated[str, Path(min_length=1, max_length=128)]
StateName = Literal["pending", "confirmed", "rejected", "expired", "withdrawn"]
_JPEG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG crop"}}


def _actor(key: ApiKey) -> Actor:
    return Actor.for_key(key.key_id, key.name)


def _reviews_all(key: ApiKey, collection: str) -> bool:
    return Scope.REVIEW in key.scopes(collection)


def _shown(key: ApiKey, item: ReviewItem, disclosed: bool) -> dict[str, Any]:
    """The item as this key may see it: all of it for a reviewer; for the searcher, who the lead points at
    only once confirmed or where the policy discloses it before review (``disclosed``)."""
    if _reviews_all(key, item.collection) or item.state.value == "confirmed" or disclosed:
        return item.to_dict()
    return item.withheld().to_dict()


def _disclosed(services: Services, collections: list[str]) -> dict[str, bool]:
    """Whether each collection's policy discloses identities before review (read in a worker thread)."""
    return {c: services.engine.collection_policy(c).disclose_before_review for c in collections}


def _own(key: ApiKey, item: ReviewItem) -> bool:
    return item.searcher is not None and _actor(key).same_person(item.searcher)


async def _item(services: Services, key: ApiKey, collection: str, item_id: str) -> tuple[ReviewItem, bool]:
    """The item, if this key may see it (a reviewer: any; a searcher: its own), else 404; and whether the
    collection discloses identities before review."""
    scopes = key.scopes(collection)
    if Scope.REVIEW not in scopes and Scope.SEARCH not in scopes:
        raise ApiError(403, "forbidden", f"this key lacks the 'review' scope on collection {collection!r}")
    reviewer = Scope.REVIEW in scopes
    item, disclosed = await services.calls(lambda: (
        services.engine.review_get(collection, item_id, actor=_actor(key)),
        {collection: True} if reviewer else _disclosed(services, [collection])))
    if not reviewer and not _own(key, item):
        raise ReviewItemNotFoundError(f"no review item {item_id!r} in collection {collection!r}")
    return item, disclosed[collection]


@router.get("/v1/review", response_model=ReviewListOut, summary="List review items across collections")
async def list_review(key: Key, services: ServicesDep,
                      collection: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
                      state: StateName | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      after: Annotated[str | None, Query(max_length=128)] = None) -> dict[str, Any]:
    """Items oldest first: every item of the collections where this key has the ``review`` scope, and the
    items of its own searches where it has only ``search``; ``collection`` narrows to one."""
    if collection is not None:
        scopes = key.scopes(collection)
        if not scopes:
            raise not_found(collection)
        if Scope.REVIEW not in scopes and Scope.SEARCH not in scopes:
            raise ApiError(403, "forbidden", f"this key lacks the 'review' scope on collection {collection!r}")
        names = [collection]
    else:
        names = services.engine.list_collections() if key.admin else sorted(c for c in key.grants if key.scopes(c))
    everything = [c for c in names if Scope.REVIEW in key.scopes(c)]
    own = [c for c in names if c not in everything and Scope.SEARCH in key.scopes(c)]
    me = _actor(key)

    def run() -> tuple[list[ReviewItem], dict[str, bool]]:
        found: list[ReviewItem] = []
        for group, searcher in ((everything, None), (own, me)):
            if group:
                found += services.engine.review_list(group, state=state, limit=limit + 1, after=after,
                                                     searcher=searcher, actor=me)[0]
        found.sort(key=lambda i: (i.created, i.item_id))
        return found, _disclosed(services, own)

    found, disclosed = await services.calls(run)
    page = found[:limit]
    shown = [_shown(key, i, disclosed.get(i.collection, False)) for i in page]
    return {"items": shown, "next_after": page_token(page[-1]) if len(found) > limit else None}


@router.get("/v1/collections/{collection}/review/{item_id}", response_model=ReviewItemOut,
            summary="Show one review item")
async def get_review(collection: VisibleCollection, item_id: ItemId, key: Key, services: ServicesDep) -> dict[str, Any]:
    """The lead (rank, score, what it means, who it points at), the search's log entry, purpose and searcher,
    and the decision once made."""
    return _shown(key, *await _item(services, key, collection, item_id))


@router.get("/v1/collections/{collection}/review/{item_id}/probe.jpg", response_class=Response, responses=_JPEG,
            summary="The crop of the face searched for a review item")
async def get_probe_crop(collection: VisibleCollection, item_id: ItemId, key: Key, services: ServicesDep) -> Response:
    """Kept while an item of that searched face is pending; 404 once decided, expired or withdrawn."""
    await _item(services, key, collection, item_id)
    jpeg = await services.calls(lambda: services.engine.review_probe_crop(collection, item_id))
    return Response(content=jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/v1/collections/{collection}/faces/{face_id}/crop.jpg", response_class=Response, responses=_JPEG,
            summary="The crop kept of a stored face")
async def get_face_crop(collection: ReadCollection, face_id: FaceId, services: ServicesDep) -> Response:
    """The small JPEG a collection keeps of each enrolled face (policy ``face_crops``); 404 when none."""
    jpeg = await services.calls(lambda: services.engine.face_crop(collection, face_id))
    return Response(content=jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _decide(services: Services, key: ApiKey, collection: str, item_id: str, decision: str,
                  body: ReviewDecisionIn) -> dict[str, Any]:
    if not _reviews_all(key, collection):
        raise ApiError(403, "forbidden", f"deciding needs the 'review' scope on collection {collection!r}")
    item = await services.calls(lambda: services.engine.review_decide(collection, item_id, decision, body.reason,
                                                                      actor=_actor(key)))
    return item.to_dict()


@router.post("/v1/collections/{collection}/review/{item_id}/confirm", response_model=ReviewItemOut,
             summary="Confirm a lead: it is the searched person")
async def confirm_review(collection: VisibleCollection, item_id: ItemId, body: ReviewDecisionIn, key: Key,
                         services: ServicesDep) -> dict[str, Any]:
    """Final and recorded (``review_decided``); the reviewer must not be the searcher."""
    return await _decide(services, key, collection, item_id, "confirm", body)


@router.post("/v1/collections/{collection}/review/{item_id}/reject", response_model=ReviewItemOut,
             summary="Reject a lead: it is not the searched person")
async def reject_review(collection: VisibleCollection, item_id: ItemId, body: ReviewDecisionIn, key: Key,
                        services: ServicesDep) -> dict[str, Any]:
    """Final and recorded (``review_decided``); the reviewer must not be the searcher."""
    return await _decide(services, key, collection, item_id, "reject", body)


def purge_all(services: Services) -> int:
    """Expire the review items past their retention in every collection (recorded as RETENTION_ACTOR);
    returns how many."""
    n = 0
    for name in services.engine.list_collections():
        try:
            n += len(services.engine.review_purge(name, actor=RETENTION_ACTOR))
        except CollectionNotFoundError:
            continue  # deleted meanwhile
        except FacelensError as exc:
            logger.warning("review purge of collection %s failed: %s", name, exc)
    return n


async def purge_forever(services: Services, interval_s: float = PURGE_INTERVAL_S,
                        first_s: float = PURGE_FIRST_S) -> None:
    """The service's retention task: :func:`purge_all` after ``first_s``, then every ``interval_s``, until
    cancelled. (Every queue operation also purges its collection first, so no expired item is ever
    decided or shown as pending; this run deletes the probe crops of collections nobody looks at.)"""
    await asyncio.sleep(first_s)
    while True:
        try:
            n = await services.calls(lambda: purge_all(services))
        except Exception as exc:  # a failure (a timeout under load) must not end the task: next time
            logger.warning("review purge failed: %s", exc)
        else:
            if n:
                logger.info("expired %d review item(s) past their collections' retention", n)
        await asyncio.sleep(interval_s)
