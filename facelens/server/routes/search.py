"""Searches of a collection: by image, by stored face, for persons, each in one of two modes (``mode``):
``identify`` returns matches at a strict, measured rate; ``investigate`` returns ranked candidates, leads for
a person to review (docs/identification.md). The engine records each search in the signed log, with its
mode, the key that asked and its purpose, before it answers; a search that cannot be recorded answers an
error, not its results; a failed one (no face, an unknown face, a timeout) is recorded with its error."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..deps import (
    FastJSONRoute,
    Key,
    SearchCollection,
    ServicesDep,
    actor,
    fast_json,
    image_request_body,
    read_image_request,
)
from ..schemas import SearchFaceIn, SearchImageOptions, SearchImageOut, SearchOneOut, SearchOptions

router = APIRouter(prefix="/v1/collections/{collection}/search", tags=["search"], route_class=FastJSONRoute)


def _full(result: dict[str, Any]) -> dict[str, Any]:
    """A search result as its response model has it (the routes answer dicts, not validated models): the
    probe field it lacks, ``searched_face`` or ``searched_face_id``, null."""
    return {"searched_face": None, "searched_face_id": None, **result}


@router.post("/image", **fast_json(SearchImageOut), summary="Search with the face(s) of an image",
             openapi_extra=image_request_body(SearchImageOptions, ("image",)))
async def search_by_image(request: Request, collection: SearchCollection, key: Key,
                          services: ServicesDep) -> dict[str, Any]:
    """Identify: stored faces matching the largest face of the image (every face with ``all_faces``) at the
    search threshold, best first. Investigate: up to ``max_candidates`` ranked leads above the collection's
    lead floor, each with what its score means among the faces searched."""
    given, images = await read_image_request(request, SearchImageOptions, ("image",),
                                             services.settings.request_timeout_s)
    purpose = services.purpose(collection, given.purpose)
    results = await services.calls(lambda: services.engine.search_faces_by_image(
        collection, images["image"], actor=actor(key), purpose=purpose, **given.engine_kwargs()), recorded=True)
    return {"collection": collection, "search_id": results.search_id, "results": [_full(r.to_dict()) for r in results],
            "faces_over_limit": results.faces_over_limit, "log_entry": results.log_entry}


@router.post("/face", **fast_json(SearchOneOut), summary="Search with a face already in the collection")
async def search_by_face(body: SearchFaceIn, collection: SearchCollection, key: Key,
                         services: ServicesDep) -> dict[str, Any]:
    """Like a search by image, with a stored face of the collection (left out of the results)."""
    purpose = services.purpose(collection, body.purpose)
    result = await services.calls(lambda: services.engine.search_faces(
        collection, body.face_id, actor=actor(key), purpose=purpose, **body.engine_kwargs()), recorded=True)
    return {**_full(result.to_dict()), "collection": collection}


@router.post("/persons", **fast_json(SearchOneOut), summary="Search for persons with the face of an image",
             openapi_extra=image_request_body(SearchOptions, ("image",)))
async def search_persons(request: Request, collection: SearchCollection, key: Key,
                         services: ServicesDep) -> dict[str, Any]:
    """Like a search by image, with one match (or candidate) per person: their best-scoring face."""
    given, images = await read_image_request(request, SearchOptions, ("image",), services.settings.request_timeout_s)
    purpose = services.purpose(collection, given.purpose)
    result = await services.calls(lambda: services.engine.search_persons_by_image(
        collection, images["image"], actor=actor(key), purpose=purpose, **given.engine_kwargs()), recorded=True)
    return {**_full(result.to_dict()), "collection": collection}
