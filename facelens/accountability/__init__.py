"""The accountability core: who did what (the signed log, the actor), under which rules (collection
policies), and what a person decided about each lead (the review queue). The engine calls it; the HTTP
service and the CLI only say who the actor is."""

from __future__ import annotations

from .actor import Actor
from .policy import CollectionPolicy

__all__ = ["Actor", "CollectionPolicy"]
