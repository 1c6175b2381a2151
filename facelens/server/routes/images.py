"""Detect and compare: work on uploaded images only, no collection. Compares are recorded by the engine."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..deps import FastJSONRoute, Key, ServicesDep, actor, fast_json, image_request_body, read_image_request
from ..schemas import CompareOptions, ComparisonOut, DetectOptions, DetectOut

router = APIRouter(prefix="/v1", tags=["images"], route_class=FastJSONRoute)


@router.post("/detect", **fast_json(DetectOut), summary="Find the faces in an image",
             openapi_extra=image_request_body(DetectOptions, ("image",)))
async def detect(request: Request, key: Key, services: ServicesDep) -> dict[str, Any]:
    """Every face, largest first (at most the service's limit per image, 100 by default; ``faces_over_limit``
    counts the others): box, landmarks, pose, quality and the reasons it would be refused for indexing.
    Any valid key may call this."""
    options, images = await read_image_request(request, DetectOptions, ("image",), services.settings.request_timeout_s)
    faces = await services.calls(lambda: services.engine.detect(images["image"], **options.engine_kwargs()))
    return {"faces": [f.to_dict() for f in faces], "faces_over_limit": faces.faces_over_limit}


@router.post("/compare", **fast_json(ComparisonOut), summary="Compare the largest faces of two images",
             openapi_extra=image_request_body(CompareOptions, ("image_a", "image_b")))
async def compare(request: Request, key: Key, services: ServicesDep) -> dict[str, Any]:
    """Score, false-match rate and decision at ``max_fmr``. Recorded in the signed log by the engine (with
    the sha256 of both images, never the images), so a ``purpose`` is required unless the service says
    otherwise; a failed compare is recorded with its error."""
    options, images = await read_image_request(request, CompareOptions, ("image_a", "image_b"),
                                               services.settings.request_timeout_s)
    purpose = services.purpose(None, options.purpose)
    result = await services.calls(lambda: services.engine.compare(
        images["image_a"], images["image_b"], actor=actor(key), purpose=purpose, **options.engine_kwargs()),
        recorded=True)
    return result.to_dict()
