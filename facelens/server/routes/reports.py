"""Transparency reports, for global admins: what the service did in a period, counted from its signed log
(docs/identification.md, "Transparency reports")."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse

from ...accountability.transparency import build_transparency, render_transparency_html
from ..deps import AdminKey, ServicesDep

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get("/transparency", summary="The transparency report of a period (JSON, or the HTML page)",
            response_model=None)
async def transparency(key: AdminKey, services: ServicesDep,
                       since: Annotated[str | None, Query(max_length=64, description="ISO 8601 start (included); "
                                                          "default: the log's start")] = None,
                       until: Annotated[str | None, Query(max_length=64, description="ISO 8601 end (not "
                                                          "included); default: now")] = None,
                       format: Annotated[str, Query(pattern="^(json|html)$")] = "json",  # noqa: A002
                       ) -> JSONResponse | HTMLResponse:
    """Searches per collection, purpose, mode and key; candidates and matches returned; reviews; enrolments
    and erasures; operating points with the audited per-group false-match rates at their thresholds; and
    the log's verification status, read with the service's own signing key. ``format=html``: the
    self-contained page of ``facelens report transparency``."""
    log = services.log
    report: dict[str, Any] = await services.calls(lambda: build_transparency(
        services.engine, since, until, log_path=log.path, public_keys=[log.signing_key.public_key]))
    if format == "html":
        return HTMLResponse(render_transparency_html(report))
    return JSONResponse(report)
