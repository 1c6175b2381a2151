"""Searches of a collection: by image, by stored face, for persons, each in one of two modes (``mode``):
``identify`` returns matches at a strict, measured rate; ``investigate`` returns ranked candidates, leads for
a person to review (docs/identification.md). Each search is written to the search log, with its mode,
before it answers; a search that cannot be logged answers an error, not its results."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request

from ...accountability.actor import Actor
from ...accountability.log import LogEntry, search_record
from ...errors import FacelensError
from ...types import SearchResult
from ..deps import Key, SearchCollection, Services, ServicesDep, image_request_body, read_image_request
from ..keys import ApiKey
from ..schemas import SearchFaceIn, SearchImageOptions, SearchImageOut, SearchOneOut, SearchOptions

router = APIRouter(prefix="/v1/collections/{collection}/search", tags=["search"])


async def _logged(services: Services, search: Callable[[], Sequence[SearchResult]], **record: Any,
                  ) -> tuple[Sequence[SearchResult], LogEntry | Mapping[str, Any]]:
    """Run ``search`` on the engine, then log it; a failed attempt (no face, an unknown face id, a
    timeout) is logged with its error and answered as that error. The log is written after the engine
    call returns, outside its timeout, so an abandoned search never logs results nobody was shown. An
    investigation whose candidates became review items was recorded by the engine, with the items, in
    the same transaction (its results carry that ``log_entry``): it is not logged twice."""
    try:
        results = await services.calls(search)
    except FacelensError as exc:
        await services.record(search_record(results=[], error=exc, **record))
        raise
    if results and results[0].log_entry is not None:
        return results, results[0].log_entry
    return results, await services.record(search_record(results=results, **record))


def _actor(key: ApiKey) -> Actor:
    return Actor.for_key(key.key_id, key.name)


async def _by_image(request: Request, collection: str, key: ApiKey, services: Services, options: type[SearchOptions],
                    action: str, run: Callable[[bytes, dict[str, Any]], Sequence[SearchResult]],
                    ) -> tuple[Sequence[SearchResult], LogEntry | Mapping[str, Any]]:
    """A search with an uploaded image: read it and its ``options``, check the purpose, run
    ``run(image, engine options)`` and log it with the image's sha256 as the probe."""
    given, images = await read_image_request(request, options, ("image",), services.settings.request_timeout_s)
    purpose = services.purpose(collection, given.purpose)
    kwargs = given.engine_kwargs()
    image = images["image"]
    who = {"actor": _actor(key), "purpose": purpose}
    return await _logged(services, lambda: run(image, {**kwargs, **who}), action=action, key_id=key.key_id,
                         purpose=purpose, collection=collection,
                         probe={"image_sha256": hashlib.sha256(image).hexdigest()}, options=kwargs)


def _ref(entry: LogEntry | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(entry, LogEntry):
        return {"seq": entry.seq, "hash": entry.hash}
    return {"seq": entry["seq"], "hash": entry["hash"]}


@router.post("/image", response_model=SearchImageOut, summary="Search with the face(s) of an image",
             openapi_extra=image_request_body(SearchImageOptions, ("image",)))
async def search_by_image(request: Request, collection: SearchCollection, key: Key,
                          services: ServicesDep) -> dict[str, Any]:
    """Identify: stored faces matching the largest face of the image (every face with ``all_faces``) at the
    search threshold, best first. Investigate: up to ``max_candidates`` ranked leads above the collection's
    lead floor, each with what its score means among the faces searched."""
    results, entry = await _by_image(
        request, collection, key, services, SearchImageOptions, "search_faces_by_image",
        lambda image, kwargs: services.engine.search_faces_by_image(collection, image, **kwargs))
    return {"collection": collection, "results": [r.to_dict() for r in results],
            "faces_over_limit": getattr(results, "faces_over_limit", 0), "log_entry": _ref(entry)}


@router.post("/face", response_model=SearchOneOut, summary="Search with a face already in the collection")
async def search_by_face(body: SearchFaceIn, collection: SearchCollection, key: Key,
                         services: ServicesDep) -> dict[str, Any]:
    """Like a search by image, with a stored face of the collection (left out of the results)."""
    purpose = services.purpose(collection, body.purpose)
    kwargs = body.engine_kwargs()
    results, entry = await _logged(
        services, lambda: [services.engine.search_faces(collection, body.face_id, **kwargs, actor=_actor(key),
                                                        purpose=purpose)],
        action="search_faces", key_id=key.key_id, purpose=purpose, collection=collection,
        probe={"face_id": body.face_id}, options=kwargs)
    return {**results[0].to_dict(), "collection": collection, "log_entry": _ref(entry)}


@router.post("/persons", response_model=SearchOneOut, summary="Search for persons with the face of an image",
             openapi_extra=image_request_body(SearchOptions, ("image",)))
async def search_persons(request: Request, collection: SearchCollection, key: Key,
                         services: ServicesDep) -> dict[str, Any]:
    """Like a search by image, with one match (or candidate) per person: their best-scoring face."""
    results, entry = await _by_image(
        request, collection, key, services, SearchOptions, "search_persons_by_image",
        lambda image, kwargs: [services.engine.search_persons_by_image(collection, image, **kwargs)])
    return {**results[0].to_dict(), "collection": collection, "log_entry": _ref(entry)}
