"""The facelens console: web pages for operators, reviewers and auditors, served by ``facelens serve``
under ``/console`` (``/`` leads there). Server-rendered Jinja2 templates (autoescaped), one small script of
its own, no CDN; sign-in with an API key, whose scopes decide what each page shows. See docs/console.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..server.deps import Services

__all__ = ["install_console"]


def install_console(app: Starlette, services: Services) -> None:
    """Add the console's pages and static files to the service ``app`` (whose ``state.services`` they use)."""
    from importlib.resources import files

    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from .pages import PREFIX, routes
    from .sessions import SessionStore

    app.state.console_sessions = SessionStore.open(services.settings.home)
    static = StaticFiles(directory=str(files("facelens.console") / "static"))
    app.router.routes.extend([*routes, Mount(f"{PREFIX}/static", app=static, name="console-static")])
