"""What the engine records: the one place that builds each log record, and the erasure receipt.

Every state-changing action of the engine, and every search and compare, is recorded in the signed log
(:mod:`facelens.accountability.log`) when the engine is told who acts (``actor=``). The builders here give
each action its stable shape (the ``action`` names are read by the transparency report); ``Engine.record``
adds ``actor`` and ``key_id``. A record holds ids, counts, hashes, scores and rates: never an image, an
embedding, a face crop, a face box or an external image id (often a file name).

The order of a record and its change (docs/identification.md, "The record"):

- a search or compare changes nothing: it is recorded after its results are computed and before they are
  returned; if the record cannot be written, the call raises :class:`~facelens.errors.SearchLogError` and
  nobody sees the results. A failed attempt (no face, an unknown face id, a bad image, a refusal by the
  collection's policy, a timeout) is recorded too, with its error code, then raised;
- a change to a collection's data (index, delete or erase faces, persons) is recorded inside the
  collection's write transaction, after the change is made and before it commits: if the record cannot be
  written, the change is rolled back and the call raises; the change is never done unrecorded;
- a change outside that transaction (create, delete a collection, the lead floor) is recorded just before
  it is made;
- whenever a call fails after its record was written (the commit or the change itself failed), an
  ``action_failed`` entry naming the record's seq and hash follows it, so that nothing recorded looks done
  when it failed. The one case left: a process killed between writing the record and committing the change
  leaves a record of a change not made, never a change without a record.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import error_status
from ..types import Comparison, SearchResult
from .actor import Actor

__all__ = ["ErasureReceipt", "action_failed_record", "collection_created_record", "collection_deleted_record",
           "compare_record", "face_ids_record", "faces_deleted_record", "faces_indexed_record", "failure",
           "lead_floor_changed_record", "new_id", "now", "person_created_record", "person_erased_record",
           "search_record"]

# Left out of search and compare records: faces' boxes, landmarks and quality, external image ids, and what
# the answer adds for people (words, notices) or for finding the entry again (its search id, its log entry).
_NOT_LOGGED = frozenset({"bbox", "external_image_id", "searched_face", "face_a", "face_b", "matches",
                         "searched_face_id", "collection_size", "candidates", "mode", "notice", "meaning",
                         "search_id", "log_entry", "review_items"})


def new_id() -> str:
    """A fresh random id (uuid4, 32 hex digits): search ids and receipt ids."""
    return uuid.uuid4().hex


def _candidate(match: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in match.items() if k not in _NOT_LOGGED}


def failure(exc: BaseException) -> dict[str, str]:
    """The ``error`` of a record whose action failed: the stable code (``error_status``) and the message."""
    return {"code": error_status(exc)[1], "message": str(getattr(exc, "message", None) or exc)}


def search_record(*, action: str, search_id: str, purpose: str | None, collection: str, probe: Mapping[str, Any],
                  options: Mapping[str, Any], results: Sequence[SearchResult],
                  error: BaseException | None = None) -> dict[str, Any]:
    """The log record of one search: ``probe`` is ``{"image_sha256": ...}`` or ``{"face_id": ...}``;
    ``options`` the search options as passed to the engine (so new ones are recorded as they come);
    ``search_id`` the id the results carry (review items name it). A search that failed (no face in the
    probe, an unknown face id...) is recorded too, with no results and its ``error``: an attempt is part of
    who searched for whom. ``mode`` is the search's mode (``identify`` or ``investigate``);
    ``results[i]["candidates"]`` are the matches of an identification or the ranked leads of an
    investigation (with their ``rank`` and ``expected_strangers``)."""
    docs = [r.to_dict() for r in results]
    first = docs[0] if docs else {}
    record = {
        "action": action, "search_id": search_id, "purpose": purpose, "collection": collection,
        "mode": str(first.get("mode") or options.get("mode") or "identify"),
        "collection_size": first.get("collection_size"), "probe": dict(probe), "options": dict(options),
        "operating_point": {k: v for k, v in first.items() if k not in _NOT_LOGGED} if docs else None,
        "results": [{"candidates": [_candidate(m) for m in d.get("matches", d.get("candidates", []))]}
                    for d in docs],
    }
    if error is not None:
        record["error"] = failure(error)
    return record


def compare_record(*, purpose: str | None, image_a_sha256: str | None, image_b_sha256: str | None,
                   options: Mapping[str, Any], result: Comparison | None,
                   error: BaseException | None = None) -> dict[str, Any]:
    """The log record of one compare (no collection; its one "candidate" is the decision), or of a
    compare that failed (``result`` None, ``error`` given)."""
    doc = result.to_dict() if result is not None else {}
    outcome = {k: v for k, v in doc.items() if k in ("score", "fmr", "match") or k.startswith("fmr_")}
    record = {
        "action": "compare", "purpose": purpose, "collection": None, "collection_size": None,
        "probe": {"image_a_sha256": image_a_sha256, "image_b_sha256": image_b_sha256}, "options": dict(options),
        "operating_point": ({k: v for k, v in doc.items() if k not in _NOT_LOGGED and k not in outcome}
                            if result is not None else None),
        "results": [outcome] if result is not None else [],
    }
    if error is not None:
        record["error"] = failure(error)
    return record


def _action(action: str, collection: str | None, **fields: Any) -> dict[str, Any]:
    return {"action": action, "collection": collection, "purpose": None, **fields}


def collection_created_record(collection: str, *, policy: Mapping[str, Any], lead_floor_fmr: float | None,
                              calibration: str | None) -> dict[str, Any]:
    """``collection_created``: its policy, its lead floor (None: the default) and its own calibration
    profile's name (None: the model's)."""
    return _action("collection_created", collection, policy=dict(policy), lead_floor_fmr=lead_floor_fmr,
                   calibration=calibration)


def collection_deleted_record(collection: str, *, face_count: int, person_count: int) -> dict[str, Any]:
    """``collection_deleted``: how many faces and persons it held when deleted."""
    return _action("collection_deleted", collection, face_count=face_count, person_count=person_count)


def lead_floor_changed_record(collection: str, *, before: float, after: float) -> dict[str, Any]:
    """``lead_floor_changed``: the collection's lead floor (a per-comparison false-match rate) before and after."""
    return _action("lead_floor_changed", collection, before=before, after=after)


def faces_indexed_record(collection: str, *, image_sha256: str, face_ids: Sequence[str], person_id: str | None,
                         refused: Sequence[Sequence[str]], already_indexed: bool) -> dict[str, Any]:
    """``faces_indexed``: the image's sha256, the ids of the faces stored (or, ``already_indexed``, of
    those stored before for the same image), the person they were given to, and for each face refused
    the reasons (``refused``: ``[{"reasons": [...]}]``, no box)."""
    return _action("faces_indexed", collection, image_sha256=image_sha256, face_ids=list(face_ids),
                   person_id=person_id, refused=[{"reasons": [str(r) for r in rs]} for rs in refused],
                   already_indexed=already_indexed)


def faces_deleted_record(collection: str, *, face_ids: Sequence[str], receipt_id: str) -> dict[str, Any]:
    """``faces_deleted``: the ids of the faces erased (unknown ids asked for are not named) and the
    receipt's id."""
    return _action("faces_deleted", collection, face_ids=list(face_ids), receipt_id=receipt_id)


def person_created_record(collection: str, *, person_id: str) -> dict[str, Any]:
    return _action("person_created", collection, person_id=person_id)


def face_ids_record(action: str, collection: str, *, person_id: str, face_ids: Sequence[str]) -> dict[str, Any]:
    """``faces_associated`` / ``faces_disassociated``: the person and the ids of the faces changed."""
    return _action(action, collection, person_id=person_id, face_ids=list(face_ids))


def person_erased_record(collection: str, *, person_id: str, face_ids: Sequence[str], receipt_id: str,
                         review_items_withdrawn: Sequence[str] = ()) -> dict[str, Any]:
    """``person_erased``: the person, the ids of their faces erased, the review items withdrawn with them
    and the receipt's id."""
    return _action("person_erased", collection, person_id=person_id, face_ids=list(face_ids),
                   review_items_withdrawn=list(review_items_withdrawn), receipt_id=receipt_id)


def action_failed_record(entry_seq: int, entry_hash: str, action: str, collection: str | None,
                         error: BaseException) -> dict[str, Any]:
    """``action_failed``: the action recorded in entry ``entry_seq`` failed after its record was written
    (its change was not made, or not wholly: ``error`` says why)."""
    return _action("action_failed", collection, failed_entry={"seq": entry_seq, "hash": entry_hash, "action": action},
                   error=failure(error))


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """The answer to an erasure request: what was removed, from which collection, when and by whom.

    ``receipt_id`` is also in the log entry that records the erasure (``log_entry``: its ``seq`` and
    ``hash``; None when no actor was given, so nothing was recorded), so a data subject given the receipt
    can have it checked against the signed log. ``face_ids`` are the faces erased (their embeddings and
    every copy on disk; unknown ids asked for are not named); ``person_id`` the person erased (None for an
    erasure of faces); ``counts`` how many of each kind of thing went (``faces``; the review queue adds
    ``crops``, ``review_items_withdrawn`` and ``probe_crops``). ``erased_at`` is the record's time (UTC,
    ISO 8601). Holds no image, embedding or box."""

    receipt_id: str
    collection: str
    person_id: str | None
    face_ids: tuple[str, ...]
    counts: Mapping[str, int]
    erased_at: str
    actor: Actor | None = None
    log_entry: Mapping[str, Any] | None = None
    review_items_withdrawn: tuple[str, ...] = field(default=())
    #: the vector store's account of the erased vectors: ``store`` (its URI), ``bytes_gone`` (no file of
    #: the store holds them when the erasure returned) and ``how`` (docs/scale-out.md); None: not told
    vectors: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape (HTTP ``receipt``, ``--json`` of the CLI)."""
        return {"receipt_id": self.receipt_id, "collection": self.collection, "person_id": self.person_id,
                "face_ids": list(self.face_ids), "counts": dict(self.counts), "erased_at": self.erased_at,
                "actor": self.actor.to_dict() if self.actor is not None else None,
                "log_entry": dict(self.log_entry) if self.log_entry is not None else None,
                "review_items_withdrawn": list(self.review_items_withdrawn),
                "vectors": dict(self.vectors) if self.vectors is not None else None}

    def describe(self) -> str:
        """The receipt in words, for the CLI and for a reply to the data subject."""
        what = (f"person {self.person_id!r} and {len(self.face_ids)} face(s)" if self.person_id is not None
                else f"{len(self.face_ids)} face(s)")
        by = f" by {self.actor}" if self.actor is not None else ""
        where = (f"; recorded in the signed log as entry {self.log_entry['seq']} (hash {self.log_entry['hash']})"
                 if self.log_entry is not None else "; not recorded (no actor given)")
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return (f"erasure receipt {self.receipt_id}: {what} erased from collection {self.collection!r} at "
                f"{self.erased_at}{by} ({counts}){where}")


def now() -> str:
    """The time now in the log's format (UTC, microseconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
