"""Who acts: the actor every logged action names.

The core records actions (searches, enrolments, erasures, policy changes, review decisions) when it is
told who performs them; the entry points only say who that is: the HTTP service names the API key that
authenticated the request, the CLI the local user who ran it, a Python program whatever it chooses.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidArgumentError

__all__ = ["ACTOR_ENV", "Actor", "ActorKind"]

ActorKind = Literal["key", "cli", "python"]
ACTOR_ENV = "FACELENS_ACTOR"
_KINDS = ("key", "cli", "python")


@dataclass(frozen=True)
class Actor:
    """One actor: ``kind`` ``key`` (an API key; ``id`` is its public key id, ``name`` what it is for),
    ``cli`` (a local user of the ``facelens`` command; ``id`` is the user name) or ``python`` (a program
    using the Python API; ``id`` is what it calls itself). Never a secret."""

    kind: ActorKind
    id: str
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InvalidArgumentError(f"actor kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if not isinstance(self.id, str) or not self.id.strip() or len(self.id) > 200:
            raise InvalidArgumentError(f"an actor needs an id (1-200 characters), got {self.id!r}")

    @classmethod
    def for_key(cls, key_id: str, name: str | None = None) -> Actor:
        """The actor of a request authenticated by the API key ``key_id``."""
        return cls("key", key_id, name)

    @classmethod
    def cli(cls) -> Actor:
        """The local user running the ``facelens`` command: ``$FACELENS_ACTOR`` if set (a shared account's
        operator naming themself), else the login name."""
        given = os.environ.get(ACTOR_ENV, "").strip()
        if given:
            return cls("cli", given)
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (a container's numeric uid)
            user = f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"
        return cls("cli", user)

    @classmethod
    def python(cls, id: str, name: str | None = None) -> Actor:  # noqa: A002 - the field's name
        """A program using the Python API, named by itself."""
        return cls("python", id, name)

    def same_person(self, other: Actor | None) -> bool:
        """Whether ``other`` is this actor (same kind and id): four eyes refuses a reviewer who is."""
        return other is not None and (self.kind, self.id) == (other.kind, other.id)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name}

    @classmethod
    def from_dict(cls, obj: Any) -> Actor:
        """The actor of a ``to_dict()`` (as stored in a review item or a log entry)."""
        if not isinstance(obj, dict):
            raise InvalidArgumentError(f"an actor is a JSON object, got {obj!r}")
        return cls(obj.get("kind"), obj.get("id"), obj.get("name"))  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}" + (f" ({self.name})" if self.name else "")
