"""The review queue: every candidate of an investigation becomes an item a person confirms or rejects.

An investigation (``mode="investigate"``) returns leads, never matches. On a collection whose policy
says ``review_required`` (the default), each candidate becomes a *review item* (state ``pending``), and
the searched face's small crop is kept beside the items, so that a reviewer can compare the two faces.
All of it is written in one transaction of the collection's database together with the signed log
entry of the search (the entry names the items, the items name the entry), so neither exists without
the other. Where the policy does not ``disclose_before_review`` (the default), the searcher's result
withholds who each candidate is (face id, external image id, person id): it shows ranks, scores, what
they mean and the item ids; the reviewer sees who.

A reviewer (an API key with the ``review`` or ``admin`` scope, or a local user) then *decides* each item:
``confirm`` (this lead is the searched person) or ``reject``, always with a reason. Four eyes: the
reviewer must not be the searcher (:meth:`facelens.Actor.same_person`); a search that named no searcher
(the bare Python API without ``actor=``) cannot have its items decided, since nobody could tell. Decisions
are final and recorded (``review_decided``); once the last pending item of a searched face is decided,
its probe crop is deleted.

Items not decided within the policy's ``retention_days`` *expire*: a purge (``review_purged``, reason
``expired``) marks them, clears who the lead pointed at and deletes the probe crops; the engine purges
before every queue operation, and the service every hour. Erasing a face withdraws its pending items
(state ``withdrawn``) and clears its identity from every item, decided ones too. What a decision was
stays in the signed log; the collection keeps no crop of a decided, expired or withdrawn lead's probe.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..crops import face_crop_jpeg
from ..errors import (
    FaceNotFoundError,
    InvalidArgumentError,
    ReviewDecidedError,
    ReviewForbiddenError,
    ReviewItemNotFoundError,
)
from ..types import Candidate, SearchResult
from .actor import Actor

if TYPE_CHECKING:
    from ..engine import Engine
    from ..store import FaceStore
    from .log import LogEntry

__all__ = ["MAX_REASON", "RETENTION_ACTOR", "Decision", "ReviewItem", "ReviewQueue", "ReviewState", "page_token",
           "withdrawn_record"]

MAX_REASON = 2000  # characters of a decision's reason
RETENTION_ACTOR = Actor.python("facelens-retention", "expiry of review items after the policy's retention_days")
"""Who purges expired items when the purge is the engine's own doing (before a queue operation, or the
service's hourly run): recorded as this actor, and only when the call that triggered it names an actor."""
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # (a reason may hold line breaks and tabs)
_LIMIT_MAX = 1000


class ReviewState(enum.StrEnum):
    """Where an item stands: ``pending`` (waiting for a reviewer), ``confirmed`` / ``rejected`` (decided,
    final), ``expired`` (not decided within the retention), ``withdrawn`` (its face was erased)."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


class Decision(enum.StrEnum):
    """A reviewer's decision: ``confirm`` (the lead is the searched person) or ``reject`` (it is not)."""

    CONFIRM = "confirm"
    REJECT = "reject"

    @property
    def state(self) -> ReviewState:
        return ReviewState.CONFIRMED if self is Decision.CONFIRM else ReviewState.REJECTED

    @classmethod
    def parse(cls, value: Decision | str) -> Decision:
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InvalidArgumentError(f"a review decision is 'confirm' or 'reject', got {value!r}") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _actor(text: str | None) -> Actor | None:
    return None if text is None else Actor.from_dict(json.loads(text))


@dataclass(frozen=True)
class ReviewItem:
    """One lead of one investigation, as the queue holds it.

    ``search_id`` and ``log_entry`` ({seq, hash}: None when the search was not recorded) tie it to the
    signed log entry of the search; ``probe_index`` is which searched face of that search (0: the largest);
    ``searcher`` who ran it and ``purpose`` why. ``rank``, ``score``, ``fmr``, ``fmr_extrapolated``,
    ``expected_strangers`` (among ``collection_size`` faces) and ``meaning`` are the candidate's, as the
    searcher was shown. ``face_id``, ``external_image_id`` and ``person_id`` say who the lead points at
    (None once erased or expired, or withheld). ``decided_by``, ``decided_at`` and ``reason`` are the
    decision's. Times are ISO 8601 UTC.
    """

    item_id: str
    collection: str
    search_id: str
    probe_index: int
    action: str
    state: ReviewState
    created: str
    expires: str
    searcher: Actor | None
    purpose: str | None
    probe_sha256: str | None
    probe_face_id: str | None
    rank: int
    score: float
    fmr: float
    fmr_extrapolated: bool
    expected_strangers: float
    collection_size: int
    meaning: str
    face_id: str | None
    external_image_id: str | None
    person_id: str | None
    log_entry: Mapping[str, Any] | None
    decided_by: Actor | None = None
    decided_at: str | None = None
    reason: str | None = None

    @classmethod
    def from_row(cls, collection: str, row: Mapping[str, Any], *, external_image_id: str | None = None,
                 person_id: str | None = None) -> ReviewItem:
        """The item of a stored ``review_items`` row; ``external_image_id``/``person_id``: the candidate's
        face as the collection holds it now (else the person id stored with the item)."""
        from ..engine import lead_meaning

        rank, score, fmr = int(row["rank"]), float(row["score"]), float(row["fmr"])
        extrapolated, expected, size = bool(row["fmr_extrapolated"]), float(row["expected_strangers"]), \
            int(row["collection_size"])
        seq = row["log_seq"]
        return cls(item_id=row["item_id"], collection=collection, search_id=row["search_id"],
                   probe_index=int(row["probe_index"]), action=row["action"], state=ReviewState(row["state"]),
                   created=row["created"], expires=row["expires"], searcher=_actor(row["searcher"]),
                   purpose=row["purpose"], probe_sha256=row["probe_sha256"], probe_face_id=row["probe_face_id"],
                   rank=rank, score=score, fmr=fmr, fmr_extrapolated=extrapolated, expected_strangers=expected,
                   collection_size=size, meaning=lead_meaning(rank, score, fmr, extrapolated, expected, size),
                   face_id=row["face_id"], external_image_id=external_image_id,
                   person_id=person_id if person_id is not None else row["person_id"],
                   log_entry=None if seq is None else {"seq": int(seq), "hash": row["log_hash"]},
                   decided_by=_actor(row["decided_by"]), decided_at=row["decided_at"], reason=row["reason"])

    @property
    def decided(self) -> bool:
        return self.state in (ReviewState.CONFIRMED, ReviewState.REJECTED)

    def withheld(self) -> ReviewItem:
        """This item without who the lead points at (for a searcher not yet allowed to know)."""
        return dataclasses.replace(self, face_id=None, external_image_id=None, person_id=None)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape (``facelens review show --json``, ``GET .../review/{item}``)."""
        return {"item_id": self.item_id, "collection": self.collection, "state": self.state.value,
                "search_id": self.search_id, "probe_index": self.probe_index, "action": self.action,
                "created": self.created, "expires": self.expires,
                "searcher": None if self.searcher is None else self.searcher.to_dict(), "purpose": self.purpose,
                "probe": {"image_sha256": self.probe_sha256, "face_id": self.probe_face_id},
                "candidate": {"rank": self.rank, "score": round(self.score, 6), "fmr": self.fmr,
                              "fmr_extrapolated": self.fmr_extrapolated,
                              "expected_strangers": self.expected_strangers,
                              "collection_size": self.collection_size, "meaning": self.meaning,
                              "face_id": self.face_id, "external_image_id": self.external_image_id,
                              "person_id": self.person_id},
                "log_entry": None if self.log_entry is None else dict(self.log_entry),
                "decision": None if not self.decided else {
                    "decision": self.state.value, "decided_by": None if self.decided_by is None
                    else self.decided_by.to_dict(), "decided_at": self.decided_at, "reason": self.reason}}


def check_reason(reason: str | None) -> str:
    """A decision's reason, stripped: required (1-2,000 characters), no control characters but line breaks
    and tabs (it goes into the signed log)."""
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise InvalidArgumentError("a review decision needs a reason: what in the two faces decided it")
    if len(text) > MAX_REASON:
        raise InvalidArgumentError(f"a review reason is at most {MAX_REASON} characters, got {len(text)}")
    if bad := _CONTROL.search(text):
        raise InvalidArgumentError(f"a review reason must not contain control characters "
                                   f"(found U+{ord(bad.group()):04X})")
    return text


def withdrawn_record(collection: str, item_ids: Sequence[str]) -> dict[str, Any]:
    """The ``review_purged`` record of items an erasure withdrew (to record beside the erasure's own)."""
    return {"action": "review_purged", "collection": collection, "purpose": None, "item_ids": list(item_ids),
            "count": len(item_ids), "reason": "withdrawn"}


def _withhold(c: Candidate) -> Candidate:
    return dataclasses.replace(c, face_id=None, external_image_id=None, person_id=None, bbox=())


def page_token(item: ReviewItem | Mapping[str, Any]) -> str:
    """The page token that lists the items after this one (oldest first)."""
    if isinstance(item, ReviewItem):
        return f"{item.created}~{item.item_id}"
    return f"{item['created']}~{item['item_id']}"


def _parse_token(token: str | None) -> tuple[str, str] | None:
    if not token:
        return None
    created, sep, item_id = token.partition("~")
    if not sep or not re.fullmatch(r"[0-9a-f]{32}", item_id) or not created:
        raise InvalidArgumentError(f"invalid page token {token!r}")
    return created, item_id


class ReviewQueue:
    """The review queue of an engine's collections (``engine.reviews``; the engine's ``review_*`` methods
    call it)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _store(self, collection: str) -> FaceStore:
        # the queue needs no model: a collection of another model can be reviewed by this engine
        return self._engine._open_store(collection)

    # -- opening items, with the search --------------------------------------------------------------
    def open(self, collection: str, results: Sequence[SearchResult], *, actor: Actor | None, purpose: str | None,
             search_id: str, record: Callable[[Sequence[SearchResult]], Mapping[str, Any]],
             probe_crops: Sequence[bytes | None]) -> tuple[list[SearchResult], LogEntry | None] | None:
        """After an investigation of ``collection`` computed ``results`` (one per searched face), make its
        review items when the policy requires review, record the search with them in the same transaction,
        and return the results as the searcher may see them: each candidate with its ``review_item_id``,
        identities withheld unless the policy discloses them, ``search_id`` and ``log_entry`` set.

        ``record(results)``: the search's log record (its ``action``, ``probe``, ``options``... as any
        search's) for these results; ``review_items`` (the item ids) and ``search_id`` are added to it and
        it is recorded as done by ``actor`` (the searcher; None records nothing, as everywhere).
        ``probe_crops[i]``: the JPEG of the face searched for ``results[i]`` (None: none kept). Returns None
        when the policy requires no review (the caller records the search as any other); else the results
        and the log entry (None: no actor, nothing recorded)."""
        engine = self._engine
        policy = engine.collection_policy(collection)
        if not policy.review_required:
            return None
        store = self._store(collection)
        now = _now()
        created, expires = _iso(now), _iso(now + dt.timedelta(days=policy.retention_days))
        base = record([])  # (what the search was: its action and probe)
        probe, action = base.get("probe") or {}, str(base["action"])
        rows: list[dict[str, Any]] = []
        full: list[SearchResult] = []
        for index, result in enumerate(results):
            cands = []
            for c in result.candidates:
                item_id = uuid.uuid4().hex
                rows.append({
                    "item_id": item_id, "search_id": search_id, "probe_index": index, "action": action,
                    "created": created, "expires": expires, "state": ReviewState.PENDING.value,
                    "searcher": None if actor is None else json.dumps(actor.to_dict(), sort_keys=True),
                    "purpose": purpose, "probe_sha256": probe.get("image_sha256"),
                    "probe_face_id": probe.get("face_id"),
                    "rank": c.rank, "score": c.score, "fmr": c.fmr, "fmr_extrapolated": int(c.fmr_extrapolated),
                    "expected_strangers": c.expected_strangers, "collection_size": result.collection_size,
                    "face_id": c.face_id, "person_id": c.person_id})
                cands.append(dataclasses.replace(c, review_item_id=item_id))
            full.append(dataclasses.replace(result, candidates=tuple(cands), search_id=search_id))
        logged_record = {**record(full), "search_id": search_id, "review_items": [r["item_id"] for r in rows]}
        entry: dict[str, Any] = {}
        done: list[LogEntry] = []

        def log_it() -> tuple[int, str] | None:
            logged = engine.record(actor, logged_record)
            if logged is None:
                return None
            done.append(logged)
            entry.update(seq=logged.seq, hash=logged.hash)
            return logged.seq, logged.hash

        probes = [(search_id, i, jpeg) for i, jpeg in enumerate(probe_crops) if jpeg is not None]
        if rows:
            store.add_review_items(rows, probes, log_it)
        else:
            log_it()
        shown = []
        for r in full:
            seen = r.candidates if policy.disclose_before_review else tuple(_withhold(c) for c in r.candidates)
            shown.append(dataclasses.replace(r, candidates=seen, log_entry=dict(entry) if entry else None))
        self.purge(collection, actor=RETENTION_ACTOR if actor is not None else None)
        return shown, (done[0] if done else None)

    # -- reading ------------------------------------------------------------------------------------
    def _items(self, collection: str, store: FaceStore, rows: Sequence[Mapping[str, Any]]) -> list[ReviewItem]:
        live = store.faces_by_id([r["face_id"] for r in rows if r["face_id"] is not None])
        out = []
        for r in rows:
            face = live.get(r["face_id"]) if r["face_id"] is not None else None
            out.append(ReviewItem.from_row(collection, r, external_image_id=face.external_image_id if face else None,
                                           person_id=face.person_id if face else None))
        return out

    def list_items(self, collection: str | Sequence[str] | None = None, *, state: ReviewState | str | None = None,
             limit: int = 100, after: str | None = None, searcher: Actor | None = None,
             actor: Actor | None = None) -> tuple[list[ReviewItem], str | None]:
        """Review items, oldest first, of ``collection`` (a name, several, or None: every collection of the
        home), of ``state`` (None: any), at most ``limit``, after the page token ``after``; and the token of
        the next page (None at the end). ``searcher``: only the items of that actor's searches. Expired
        items are purged first (recorded as :data:`RETENTION_ACTOR` when ``actor`` is given)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _LIMIT_MAX:
            raise InvalidArgumentError(f"limit must be 1-{_LIMIT_MAX}, got {limit!r}")
        wanted = None if state is None else _state(state)
        start = _parse_token(after)
        names = (self._engine.list_collections() if collection is None
                 else [collection] if isinstance(collection, str) else list(collection))
        found: list[tuple[str, FaceStore, dict[str, Any]]] = []
        for name in names:
            store = self._store(name)
            self.purge(name, actor=RETENTION_ACTOR if actor is not None else None)
            rows = store.review_items(state=None if wanted is None else wanted.value, limit=limit + 1, after=start,
                                      searcher=None if searcher is None else (searcher.kind, searcher.id))
            found += [(name, store, r) for r in rows]
        found.sort(key=lambda t: (t[2]["created"], t[2]["item_id"]))
        page, more = found[:limit], len(found) > limit
        items = [self._items(name, store, [row])[0] for name, store, row in page]
        return items, (page_token(page[-1][2]) if more else None)

    def get(self, collection: str, item_id: str, *, actor: Actor | None = None) -> ReviewItem:
        """One item, with who the lead points at; raises ReviewItemNotFoundError."""
        store = self._store(collection)
        self.purge(collection, actor=RETENTION_ACTOR if actor is not None else None)
        rows = store.review_items(item_id=_check_id(item_id, collection))
        if not rows:
            raise ReviewItemNotFoundError(f"no review item {item_id!r} in collection {collection!r}")
        return self._items(collection, store, rows)[0]

    def probe_crop(self, collection: str, item_id: str) -> bytes:
        """The JPEG crop of the face searched for this item (kept while an item of that face is pending);
        raises ReviewItemNotFoundError (no such item, or its crop is deleted: decided, expired, withdrawn)."""
        item = self.get(collection, item_id)
        jpeg = self._store(collection).review_probe(item.item_id)
        if jpeg is None:
            why = ("no crop was kept of the face searched" if item.state is ReviewState.PENDING
                   else f"the item is {item.state.value}, and its probe crop was deleted")
            raise ReviewItemNotFoundError(f"review item {item_id!r} of collection {collection!r} has no probe crop: "
                                          f"{why}")
        return jpeg

    # -- deciding -----------------------------------------------------------------------------------
    def decide(self, collection: str, item_id: str, decision: Decision | str, reason: str, *,
               actor: Actor | None) -> ReviewItem:
        """Confirm or reject an item, with a reason, as ``actor``: final, recorded (``review_decided``).
        Raises ReviewForbiddenError (no actor; the actor ran the search; the search named no searcher),
        ReviewDecidedError (decided already, expired, withdrawn), ReviewItemNotFoundError."""
        verdict = Decision.parse(decision)
        text = check_reason(reason)
        _check_id(item_id, collection)
        if actor is None:
            raise ReviewForbiddenError("a review decision must name who makes it (actor=): it is recorded, and "
                                       "four eyes needs to know that the reviewer is not the searcher")
        store = self._store(collection)
        self.purge(collection, actor=RETENTION_ACTOR)
        now = _now()

        def check(row: dict[str, Any] | None) -> None:
            if row is None:
                raise ReviewItemNotFoundError(f"no review item {item_id!r} in collection {collection!r}")
            if row["state"] != ReviewState.PENDING.value:
                was = row["state"]
                when = f" by {_actor(row['decided_by'])} at {row['decided_at']}" if row["decided_by"] else ""
                raise ReviewDecidedError(f"review item {item_id!r} is {was}{when}: decisions are final, and only a "
                                         f"pending item can be decided")
            if row["expires"] <= _iso(now):
                raise ReviewDecidedError(f"review item {item_id!r} expired at {row['expires']} (the collection's "
                                         f"retention); it can no longer be decided")
            searcher = _actor(row["searcher"])
            if searcher is None:
                raise ReviewForbiddenError(f"review item {item_id!r} comes from a search that named no searcher "
                                           f"(the Python API without actor=): four eyes cannot be checked")
            if actor.same_person(searcher):
                raise ReviewForbiddenError(f"four eyes: {actor} ran the search of review item {item_id!r}; another "
                                           f"person must review it")

        def log_it(row: dict[str, Any]) -> tuple[int, str] | None:
            entry = self._engine.record(actor, {
                "action": "review_decided", "collection": collection, "purpose": None, "item_id": item_id,
                "search_id": row["search_id"], "decision": verdict.state.value, "reason": text,
                "face_id": row["face_id"]})
            return None if entry is None else (entry.seq, entry.hash)

        row = store.decide_review_item(item_id, {
            "state": verdict.state.value, "decided_by": json.dumps(actor.to_dict(), sort_keys=True),
            "decided_at": _iso(now), "reason": text}, check, log_it)
        return self._items(collection, store, [row])[0]

    def purge(self, collection: str, *, actor: Actor | None = None) -> list[str]:
        """Expire the collection's pending items past their retention: state ``expired``, the lead's
        identity cleared, probe crops deleted; recorded (``review_purged``, reason ``expired``) as
        ``actor`` when there were any. Returns the ids expired."""
        store = self._store(collection)

        def log_it(ids: list[str]) -> object:
            return self._engine.record(actor, {"action": "review_purged", "collection": collection, "purpose": None,
                                               "item_ids": ids, "count": len(ids), "reason": "expired"})

        return store.expire_review_items(_iso(_now()), log_it)

    # -- face crops ---------------------------------------------------------------------------------
    def face_crop(self, collection: str, face_id: str) -> bytes:
        """The JPEG crop kept of a stored face; raises FaceNotFoundError (no such face, or none kept)."""
        jpeg = self._store(collection).face_crop(face_id)
        if jpeg is None:
            raise FaceNotFoundError(f"face {face_id!r} of collection {collection!r} has no crop: it was indexed "
                                    f"while the collection's policy kept none (face_crops), or before crops existed")
        return jpeg


def _state(value: ReviewState | str) -> ReviewState:
    try:
        return ReviewState(str(value).lower())
    except ValueError:
        raise InvalidArgumentError(f"a review state is one of {', '.join(s.value for s in ReviewState)}, "
                                   f"got {value!r}") from None


def _check_id(item_id: str, collection: str) -> str:
    if not isinstance(item_id, str) or not re.fullmatch(r"[0-9a-f]{32}", item_id):
        raise ReviewItemNotFoundError(f"no review item {item_id!r} in collection {collection!r}")
    return item_id


def crop_of(rgb: npt.NDArray[np.uint8], bbox: Sequence[float]) -> bytes | None:
    """The face's crop (:func:`facelens.crops.face_crop_jpeg`), or None when it cannot be made (a box
    outside the image): a face or lead without a crop is still stored or reviewable, and neither the
    enrolment nor the search fails for it."""
    try:
        return face_crop_jpeg(rgb, bbox)
    except InvalidArgumentError:
        return None
