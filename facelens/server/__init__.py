"""The facelens HTTP service: ``create_app(settings)`` builds a FastAPI app around one :class:`facelens.Engine`.

Nothing heavy happens at import: FastAPI is imported when :func:`create_app` is first used, and the
settings (which import the store, hence numpy) when :class:`ServerSettings` is, so the ``facelens``
command, which imports :mod:`facelens.server.errors`, stays fast. See docs/service.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServerSettings":  # lazily too: the settings import the store (numpy), the CLI imports .errors
        from .settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'facelens.server' has no attribute {name!r}")
