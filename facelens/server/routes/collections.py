"""Collections: list (only those the key may see), create, describe, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..deps import AdminCollection, Key, ServicesDep, VisibleCollection, actor
from ..errors import ApiError
from ..keys import Scope
from ..schemas import CollectionIn, CollectionListOut, CollectionOut, DeletedCollectionOut

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.get("", response_model=CollectionListOut, summary="The collections this key may see")
async def list_collections(key: Key, services: ServicesDep) -> dict[str, Any]:
    names = await services.calls(services.engine.list_collections)
    return {"collections": [n for n in names if key.scopes(n)]}


@router.post("", response_model=CollectionOut, status_code=201, summary="Create an empty collection")
async def create_collection(body: CollectionIn, key: Key, services: ServicesDep) -> dict[str, Any]:
    """Needs a global admin key: grants name an existing collection's generation, so no other key can
    hold a scope on a name that does not exist yet."""
    if Scope.ADMIN not in key.scopes(body.name):
        raise ApiError(403, "forbidden", f"this key may not create collection {body.name!r}")
    info = await services.calls(lambda: services.engine.create_collection(body.name, actor=actor(key)), recorded=True)
    return info.to_dict()


@router.get("/{collection}", response_model=CollectionOut, summary="Face and person counts, model, index")
async def describe_collection(collection: VisibleCollection, services: ServicesDep) -> dict[str, Any]:
    info = await services.calls(lambda: services.engine.describe_collection(collection))
    return info.to_dict()


@router.delete("/{collection}", response_model=DeletedCollectionOut, summary="Delete a collection and its faces")
async def delete_collection(collection: AdminCollection, key: Key, services: ServicesDep) -> dict[str, Any]:
    await services.calls(lambda: services.engine.delete_collection(collection, actor=actor(key)), recorded=True)
    return {"deleted": collection}
