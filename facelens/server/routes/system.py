"""Health and version: the two routes that need no key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ... import __version__
from ..deps import ServicesDep
from ..schemas import HealthOut, VersionOut

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthOut, summary="Liveness: the service answers")
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/v1/version", response_model=VersionOut, summary="facelens and model versions")
async def version(services: ServicesDep) -> dict[str, Any]:
    e = services.engine
    return {"facelens": __version__, "api": "v1", "model_name": e.model_name, "model_sha256": e.model_sha256,
            "embedding_size": e.embedding_size}
