"""The facelens HTTP service: ``create_app(settings)`` builds a FastAPI app around one :class:`facelens.Engine`.

Nothing heavy happens at import: FastAPI is imported when :func:`create_app` is first used, so the
``facelens`` command stays fast. See docs/service.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ServerSettings

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'facelens.server' has no attribute {name!r}")
