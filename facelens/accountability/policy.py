"""Collection policies: the rules a collection's searches and reviews follow, whoever runs them.

A policy is set when the collection is created and changed only by an admin, each change logged
(``policy_changed``, with the policy before and after). It is stored in the collection itself (its meta
key ``policy``, JSON), so every process sees a change from its next call and a deleted collection takes
its policy with it. A collection created before policies existed has the defaults.

What each rule means (docs/identification.md, "Policies"):

- ``allowed_modes``: the search modes the collection answers (``identify``, ``investigate``).
- ``max_fpir`` / ``max_fmr``: the loosest operating point an identification may use. A search may ask
  for a stricter one (a smaller rate); one asking for a looser rate (or a raw ``min_score`` below the
  floor's threshold) is refused, whoever asks.
- ``purpose_required``: every search must state its purpose (a case reference or reason, logged).
- ``review_required``: every candidate of an investigation becomes a review item that a person other
  than the searcher confirms or rejects before anything is done with it.
- ``retention_days``: how long review items and their probe crops are kept before they expire and are
  purged (the purge is logged; a decided item's record stays in the log).
- ``disclose_before_review``: whether an investigation shows the searcher its candidates' identities
  (face id, external image id, person id) before a reviewer has confirmed them; off by default, so the
  searcher sees ranks, scores and what they mean, and the reviewer sees who.
- ``face_crops``: keep a small crop of each enrolled face, for reviewers and the console (erased with
  the face; never in the log).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import check_fmr
from ..errors import InvalidArgumentError
from ..types import SearchMode

__all__ = ["POLICY_META_KEY", "CollectionPolicy"]

POLICY_META_KEY = "policy"
_MODES = tuple(m.value for m in SearchMode)
_MAX_RETENTION_DAYS = 3650.0


@dataclass(frozen=True)
class CollectionPolicy:
    """The rules of one collection (see the module docstring for what each means)."""

    allowed_modes: tuple[str, ...] = _MODES
    max_fpir: float | None = None
    max_fmr: float | None = None
    purpose_required: bool = False
    review_required: bool = True
    retention_days: float = 30.0
    disclose_before_review: bool = False
    face_crops: bool = True

    def __post_init__(self) -> None:
        modes = self.allowed_modes
        if isinstance(modes, str) or not isinstance(modes, (tuple, list)):
            raise InvalidArgumentError(f"allowed_modes must be a list of modes ({', '.join(_MODES)}), got {modes!r}")
        parsed = tuple(dict.fromkeys(SearchMode.parse(m).value for m in modes))
        if not parsed:
            raise InvalidArgumentError("allowed_modes needs at least one mode: a collection nobody may search "
                                       "is deleted, not locked")
        object.__setattr__(self, "allowed_modes", tuple(m for m in _MODES if m in parsed))
        for name in ("max_fpir", "max_fmr"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise InvalidArgumentError(f"{name} must be a rate in (0, 1] or null, got {value!r}")
                object.__setattr__(self, name, check_fmr(value, name))
        for name in ("purpose_required", "review_required", "disclose_before_review", "face_crops"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(f"{name} must be true or false, got {getattr(self, name)!r}")
        days = self.retention_days
        if (isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days)
                or not 0 < days <= _MAX_RETENTION_DAYS):
            raise InvalidArgumentError(f"retention_days must be a number of days in (0, {_MAX_RETENTION_DAYS:g}], "
                                       f"got {days!r}")
        object.__setattr__(self, "retention_days", float(days))

    def allows(self, mode: SearchMode | str) -> bool:
        return SearchMode.parse(mode).value in self.allowed_modes

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "allowed_modes": list(self.allowed_modes)}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> CollectionPolicy:
        """A policy from ``to_dict()``'s keys; a key missing takes its default, an unknown key is refused."""
        if not isinstance(obj, Mapping):
            raise InvalidArgumentError(f"a policy is a JSON object, got {obj!r}")
        unknown = set(obj) - _FIELDS
        if unknown:
            raise InvalidArgumentError(f"unknown policy field(s) {', '.join(sorted(map(str, unknown)))}; the fields "
                                       f"are {', '.join(sorted(_FIELDS))}")
        return cls(**dict(obj))

    def replace(self, **changes: Any) -> CollectionPolicy:
        """This policy with ``changes`` (policy fields), validated."""
        return CollectionPolicy.from_dict({**self.to_dict(), **changes})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> CollectionPolicy:
        """The policy stored as ``text`` (None: a collection from before policies, the defaults)."""
        if text is None:
            return cls()
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise InvalidArgumentError(f"a stored policy is not valid JSON: {exc}") from None
        return cls.from_dict(obj)


_FIELDS = frozenset(f.name for f in dataclasses.fields(CollectionPolicy))
