"""A collection's rules: its policy (``GET`` with the read scope, ``PATCH`` with the admin scope) and its
lead floor (``PUT``, admin scope). Each change is recorded in the signed log by the engine
(``policy_changed`` / ``lead_floor_changed``, before and after) with the key that made it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..deps import AdminCollection, Key, ReadCollection, Services, ServicesDep, actor
from ..errors import ApiError
from ..schemas import LeadFloorIn, PolicyIn, PolicyOut

router = APIRouter(prefix="/v1/collections/{collection}", tags=["policy"])


async def _answer(services: Services, collection: str) -> dict[str, Any]:
    engine = services.engine
    policy, floor = await services.calls(lambda: (engine.collection_policy(collection), engine.lead_floor(collection)))
    return {"collection": collection, "policy": policy.to_dict(), "lead_floor_fmr": floor}


@router.get("/policy", response_model=PolicyOut, summary="The collection's policy and lead floor")
async def get_policy(collection: ReadCollection, services: ServicesDep) -> dict[str, Any]:
    return await _answer(services, collection)


@router.patch("/policy", response_model=PolicyOut, summary="Change fields of the collection's policy (admin)")
async def patch_policy(body: PolicyIn, collection: AdminCollection, key: Key, services: ServicesDep) -> dict[str, Any]:
    """The fields given are changed, the others kept; the answer is the new policy. Needs the admin scope on
    the collection; the change is logged with the policy before and after."""
    changes = body.changes()
    if not changes:
        raise ApiError(422, "invalid_argument", "give at least one policy field to change")
    await services.calls(lambda: services.engine.set_collection_policy(collection, changes, actor=actor(key)),
                         recorded=True)
    return await _answer(services, collection)


@router.put("/lead-floor", response_model=PolicyOut, summary="Set the collection's lead floor (admin)")
async def put_lead_floor(body: LeadFloorIn, collection: AdminCollection, key: Key,
                         services: ServicesDep) -> dict[str, Any]:
    """Set the per-comparison false-match rate an investigation's candidates must reach; logged with the
    floor before and after."""
    await services.calls(lambda: services.engine.set_lead_floor(collection, body.lead_floor_fmr, actor=actor(key)),
                         recorded=True)
    return await _answer(services, collection)
