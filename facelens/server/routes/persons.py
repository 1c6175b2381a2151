"""Persons of a collection: create, list, associate and disassociate faces, erase."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path

from ...errors import FaceNotFoundError
from ..deps import AdminCollection, IndexCollection, Key, ReadCollection, ServicesDep, actor
from ..errors import ApiError
from ..schemas import AssociatedOut, DisassociatedOut, ErasedOut, FaceIdsIn, PersonIn, PersonListOut, PersonOut

router = APIRouter(prefix="/v1/collections/{collection}/persons", tags=["persons"])

T = TypeVar("T")
PersonId = Annotated[str, Path(min_length=1, max_length=128, description="1-128 letters, digits, _ . - :")]


def _person(fn: Callable[[], T]) -> Callable[[], T]:
    """The engine reports an unknown person as FaceNotFoundError; here it gets its own code."""
    def call() -> T:
        try:
            return fn()
        except FaceNotFoundError as exc:
            raise ApiError(404, "person_not_found", str(exc)) from exc
    return call


@router.post("", response_model=PersonOut, status_code=201, summary="Create a person")
async def create_person(body: PersonIn, collection: IndexCollection, key: Key, services: ServicesDep) -> dict[str, Any]:
    """A person groups several faces of one individual; indexing with ``person_id`` also creates one."""
    await services.calls(lambda: services.engine.create_person(collection, body.person_id, actor=actor(key)),
                         recorded=True)
    return {"person_id": body.person_id, "faces": 0}


@router.get("", response_model=PersonListOut, summary="List persons with their face counts")
async def list_persons(collection: ReadCollection, services: ServicesDep) -> dict[str, Any]:
    rows = await services.calls(lambda: services.engine.list_persons(collection))
    return {"persons": [{"person_id": p, "faces": n} for p, n in rows]}


@router.post("/{person_id}/associate", response_model=AssociatedOut, summary="Give stored faces to a person")
async def associate(person_id: PersonId, body: FaceIdsIn, collection: IndexCollection, key: Key,
                    services: ServicesDep) -> dict[str, Any]:
    done = await services.calls(_person(
        lambda: services.engine.associate_faces(collection, person_id, list(body.face_ids), actor=actor(key))),
        recorded=True)
    return {"associated": done, "unknown": [f for f in body.face_ids if f not in done]}


@router.post("/{person_id}/disassociate", response_model=DisassociatedOut,
             summary="Take faces away from a person (they stay in the collection)")
async def disassociate(person_id: PersonId, body: FaceIdsIn, collection: IndexCollection, key: Key,
                       services: ServicesDep) -> dict[str, Any]:
    done = await services.calls(_person(
        lambda: services.engine.disassociate_faces(collection, person_id, list(body.face_ids), actor=actor(key))),
        recorded=True)
    return {"disassociated": done, "unchanged": [f for f in body.face_ids if f not in done]}


@router.delete("/{person_id}", response_model=ErasedOut, summary="Erase a person: their faces and vectors")
async def erase_person(person_id: PersonId, collection: AdminCollection, key: Key,
                       services: ServicesDep) -> dict[str, Any]:
    """Deletes the person and every face and vector of theirs; no search returns them afterwards. The
    ``receipt`` (what was erased, when, by which key, and the signed log entry recording it) answers the
    person's erasure request. The log keeps the ids of past candidates (never images or embeddings)."""
    receipt = await services.calls(_person(lambda: services.engine.erase_person(collection, person_id,
                                                                                actor=actor(key))), recorded=True)
    return {"deleted_person": person_id, "deleted_faces": list(receipt.face_ids), "receipt": receipt.to_dict()}
