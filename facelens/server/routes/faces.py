"""Faces of a collection: index an image, list, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from ..deps import (
    AdminCollection,
    IndexCollection,
    Key,
    ReadCollection,
    ServicesDep,
    actor,
    image_request_body,
    read_image_request,
)
from ..errors import ApiError
from ..schemas import DeletedFacesOut, FaceIdsIn, FacePageOut, IndexOptions, IndexOut

router = APIRouter(prefix="/v1/collections/{collection}/faces", tags=["faces"])


@router.post("", response_model=IndexOut, summary="Index the faces of an image",
             openapi_extra=image_request_body(IndexOptions, ("image",)))
async def index_faces(request: Request, collection: IndexCollection, key: Key, services: ServicesDep) -> dict[str, Any]:
    """Detect the faces of the image and store those that pass the quality filter; refused faces come
    back in ``unindexed`` with their reasons. When this answers, the faces are durably stored."""
    options, images = await read_image_request(request, IndexOptions, ("image",), services.settings.request_timeout_s)
    result = await services.calls(
        lambda: services.engine.index_faces(collection, images["image"], actor=actor(key), **options.engine_kwargs()),
        recorded=True)
    return result.to_dict()


@router.get("", response_model=FacePageOut, summary="List stored faces, a page at a time")
async def list_faces(collection: ReadCollection, services: ServicesDep,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     next_token: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    page, token = await services.calls(
        lambda: services.engine.list_faces(collection, limit=limit, next_token=next_token))
    return {"faces": [f.to_dict() for f in page], "next_token": token}


@router.post("/delete", response_model=DeletedFacesOut, summary="Delete several faces by id")
async def delete_faces(body: FaceIdsIn, collection: AdminCollection, key: Key, services: ServicesDep) -> dict[str, Any]:
    """Erases the faces (their embeddings and every copy on disk); the ``receipt`` names those erased and
    the signed log entry that records the erasure."""
    receipt = await services.calls(lambda: services.engine.erase_faces(collection, list(body.face_ids),
                                                                       actor=actor(key)), recorded=True)
    return {"deleted": list(receipt.face_ids), "unknown": [f for f in body.face_ids if f not in receipt.face_ids],
            "receipt": receipt.to_dict()}


@router.delete("/{face_id}", response_model=DeletedFacesOut, summary="Delete one face")
async def delete_face(face_id: Annotated[str, Path(min_length=1, max_length=128)], collection: AdminCollection,
                      key: Key, services: ServicesDep) -> dict[str, Any]:
    receipt = await services.calls(lambda: services.engine.erase_faces(collection, [face_id], actor=actor(key)),
                                   recorded=True)
    if not receipt.face_ids:
        raise ApiError(404, "face_not_found", f"no face {face_id!r} in collection {collection!r}")
    return {"deleted": list(receipt.face_ids), "unknown": [], "receipt": receipt.to_dict()}
