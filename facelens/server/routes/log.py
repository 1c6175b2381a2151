"""The search log, for global admins: entries a page at a time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ...accountability.log import MAX_SEQ
from ..deps import AdminKey, ServicesDep
from ..schemas import LogPageOut

router = APIRouter(prefix="/v1/log", tags=["search log"])


@router.get("", response_model=LogPageOut, summary="Search log entries, oldest first")
async def list_entries(key: AdminKey, services: ServicesDep,
                       after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Entries after this seq")] = 0,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Each entry with its ``seq``, ``time``, ``prev_hash``, ``signer``, ``hash`` and ``sig``
    (docs/service.md). Verify the log with ``facelens log verify`` and the log's public key."""
    entries = await services.calls(lambda: services.log.entries(after_seq=after, limit=limit))
    head = await services.calls(services.log.head)
    return {"entries": [e.to_dict() for e in entries],
            "next_after": entries[-1].seq if len(entries) == limit else None,
            "head": {"seq": head[0], "hash": head[1]} if head else None}
