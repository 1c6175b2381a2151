"""Transparency reports: what a facelens home did in a period, counted from its signed log.

:func:`build_transparency` reads the home's signed log (``<home>/service/search-log.sqlite``), which is what
can be proven afterwards, and counts, per collection: searches by mode, purpose and actor; probes that had
no face or failed; the candidates (investigations) and matches (identifications) returned; review items
created, confirmed, rejected, expired, withdrawn and still pending; enrolments; erasures and their
receipts; policy and lead-floor changes; and the operating points the searches ran at, each with the
audited per-group false-match rates AT ITS THRESHOLD read off the calibration profile the search used.
Beside the counts it says whether the log verifies with the home's public key (and, given one, against a
signed checkpoint kept elsewhere): numbers read from a log that does not verify are not proof of anything.

:func:`write_transparency` writes the report as ``transparency.json`` and as ``transparency.html``, one
self-contained page (no script, no external asset) a member of the public can read: headline numbers in
plain words, tables, and what each term means. The JSON keys are documented in docs/identification.md
("Transparency reports") and stable.

What the report never holds: images, embeddings, face or person ids, external image ids. It does show
purposes (free text, as the searcher wrote it: they are the accountability), API key ids and names, and
the local user names of CLI actors.

Reading the period: entries whose ``time`` is at or after ``since`` and before ``until`` (half-open, so
consecutive reports neither overlap nor leave a gap). Review items still pending are counted as of
``until``: created by a search at or before it (in the period or earlier) and not decided or purged by then.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from .._files import write_files
from ..database import is_database_url
from ..errors import CalibrationError, FacelensError, InvalidArgumentError, SearchLogError
from ..store.home import collection_dir, list_collection_names, service_dir
from .log import (
    LOG_NAME,
    Checkpoint,
    LogEntry,
    LogLocation,
    LogPublicKey,
    LogSigningKey,
    VerifyReport,
    default_signing_key_path,
    log_location,
    public_key_path,
    read_entries,
    verify_log,
)
from .transparency_page import render_transparency_html

if TYPE_CHECKING:
    from ..calibration.table import ImpostorCurve, ScoreCalibration
    from ..engine import Engine

__all__ = ["REPORT_VERSION", "SEARCH_ACTIONS", "build_transparency", "render_transparency_html",
           "write_transparency"]

logger = logging.getLogger(__name__)

REPORT_VERSION = 1
SEARCH_ACTIONS = ("search_faces_by_image", "search_faces", "search_persons_by_image")
"""The ``action`` names of the searches of a collection (``compare`` has no collection: counted apart)."""
CHECKPOINT_DIR = "checkpoints"
"""Where a report looks for signed checkpoints when none is given: ``<home>/service/checkpoints/*.json``."""
NO_PURPOSE = None  # how a search without a stated purpose is listed (``purpose``: null)
_UNRECORDED = {"kind": "unrecorded", "id": "(not recorded)", "name": None}
_SHIPPED_PROFILES = Path(__file__).resolve().parent.parent / "calibration" / "data"


# -- reading the period ------------------------------------------------------------------------------

def _time(value: str | dt.datetime | None, what: str) -> dt.datetime | None:
    """An ISO 8601 time (a date alone: midnight; no zone: UTC) as an aware UTC datetime; None or blank: none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        t = value
    else:
        try:
            t = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise InvalidArgumentError(f"{what} is not an ISO 8601 time: {value!r} (e.g. 2026-11-01 or "
                                       f"2026-11-01T00:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    try:
        return t.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00: before the first representable UTC time
        raise InvalidArgumentError(f"{what} is out of range: {value!r}") from None


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="microseconds")


def _actor(body: Mapping[str, Any]) -> dict[str, Any]:
    """Who did it: the entry's ``actor``, or for entries from before actors were logged, its ``key_id``."""
    actor = body.get("actor")
    if isinstance(actor, Mapping) and actor.get("id"):
        return {"kind": str(actor.get("kind")), "id": str(actor.get("id")),
                "name": None if actor.get("name") is None else str(actor.get("name"))}
    if body.get("key_id"):
        return {"kind": "key", "id": str(body["key_id"]), "name": None}
    return dict(_UNRECORDED)


def _actor_key(actor: Mapping[str, Any]) -> tuple[str, str]:
    return str(actor["kind"]), str(actor["id"])


def _ids(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


class _Tally:
    """A count per value, remembering each value's first JSON form (actors: by kind and id; the name is
    the latest seen)."""

    def __init__(self) -> None:
        self.counts: Counter[Any] = Counter()
        self.shown: dict[Any, Any] = {}

    def add(self, key: Any, shown: Any = None, n: int = 1) -> None:
        self.counts[key] += n
        if shown is not None and (key not in self.shown or shown.get("name")):
            self.shown[key] = shown

    def listing(self, label: str) -> list[dict[str, Any]]:
        """``[{label: value, "count": n}]``, most frequent first, then by value."""
        items = sorted(self.counts.items(), key=lambda kv: (-kv[1], json.dumps(kv[0], default=str)))
        return [{label: self.shown.get(k, k), "count": n} for k, n in items]


@dataclass
class _OperatingPoints:
    """Distinct operating points of a collection's searches: key -> (point, searches, collection sizes)."""

    points: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)

    def add(self, mode: str, op: Mapping[str, Any], size: Any) -> None:
        key = (mode, op.get("max_fpir"), op.get("max_fmr"), op.get("threshold"), op.get("policy"),
               op.get("calibration"))
        entry = self.points.setdefault(key, {
            "mode": mode, "max_fpir": op.get("max_fpir"), "max_fmr": op.get("max_fmr"),
            "threshold": op.get("threshold"), "policy": op.get("policy"), "calibration": op.get("calibration"),
            "extrapolated": bool(op.get("extrapolated")), "limited_by": op.get("limited_by"), "searches": 0,
            "sizes": []})
        entry["searches"] += 1
        if isinstance(size, int) and not isinstance(size, bool):
            entry["sizes"].append(size)


@dataclass
class _Collection:
    """What one collection's entries add up to (see :func:`build_transparency` for the keys)."""

    name: str
    searches: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    by_mode: Counter[str] = field(default_factory=Counter)
    purposes: _Tally = field(default_factory=_Tally)
    actors: _Tally = field(default_factory=_Tally)
    failed: Counter[str] = field(default_factory=Counter)
    candidates_per_search: Counter[int] = field(default_factory=Counter)
    matches_per_search: Counter[int] = field(default_factory=Counter)
    reviews: Counter[str] = field(default_factory=Counter)
    images: int = 0
    faces: int = 0
    faces_refused: int = 0
    already_indexed: int = 0
    face_deletions: int = 0
    faces_deleted: int = 0
    persons_erased: int = 0
    person_faces_erased: int = 0
    receipts: list[dict[str, Any]] = field(default_factory=list)
    lifecycle: list[dict[str, Any]] = field(default_factory=list)
    policy_changes: list[dict[str, Any]] = field(default_factory=list)
    lead_floor_changes: list[dict[str, Any]] = field(default_factory=list)
    points: _OperatingPoints = field(default_factory=_OperatingPoints)
    other: Counter[str] = field(default_factory=Counter)


def _distribution(counter: Counter[int]) -> list[dict[str, int]]:
    return [{"returned": k, "searches": n} for k, n in sorted(counter.items())]


def _changes(before: Any, after: Any) -> dict[str, dict[str, Any]]:
    """The fields a policy change changed: ``{field: {"before", "after"}}``."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return {}
    return {k: {"before": before.get(k), "after": after.get(k)} for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)}


class _Reader:
    """Walks the log once: the period's entries are counted, every entry up to ``until`` feeds the
    review items' states as of ``until``."""

    def __init__(self, since: str, until: str) -> None:
        self.since, self.until = since, until
        self.collections: dict[str, _Collection] = {}
        self.compares = _Collection("(compare)")
        self.keys_created: list[dict[str, Any]] = []
        self.keys_revoked: list[dict[str, Any]] = []
        self.other: Counter[str] = Counter()
        self.entries_in_period = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.seqs: list[int] = []
        # review items: id -> collection, created (at or before until); closed: id -> state
        self.items: dict[str, str] = {}
        self.closed: dict[str, str] = {}

    def _collection(self, name: Any) -> _Collection:
        key = str(name)
        if key not in self.collections:
            self.collections[key] = _Collection(key)
        return self.collections[key]

    def feed(self, entry: LogEntry) -> None:
        body = entry.body
        when = str(body.get("time", ""))
        if when >= self.until:
            return
        action = str(body.get("action"))
        in_period = when >= self.since
        self._reviews(action, body, in_period)
        if not in_period:
            return
        self.entries_in_period += 1
        self.seqs.append(entry.seq)
        self.first_seq = entry.seq if self.first_seq is None else min(self.first_seq, entry.seq)
        self.last_seq = entry.seq if self.last_seq is None else max(self.last_seq, entry.seq)
        ref = {"seq": entry.seq, "time": when, "actor": _actor(body)}
        if action in SEARCH_ACTIONS and body.get("collection") is not None:
            self._search(self._collection(body["collection"]), action, body)
        elif action == "compare":
            self._search(self.compares, action, body)
        elif action == "faces_indexed":
            c = self._collection(body.get("collection"))
            if body.get("already_indexed"):
                c.already_indexed += 1
            else:
                c.images += 1
                c.faces += len(_ids(body.get("face_ids")))
            refused = body.get("refused")
            c.faces_refused += len(refused) if isinstance(refused, list) else 0
        elif action == "faces_deleted":
            c = self._collection(body.get("collection"))
            n = len(_ids(body.get("face_ids")))
            c.face_deletions += 1
            c.faces_deleted += n
            self._receipt(c, body, ref, n)
        elif action == "person_erased":
            c = self._collection(body.get("collection"))
            n = len(_ids(body.get("face_ids")))
            c.persons_erased += 1
            c.person_faces_erased += n
            self._receipt(c, body, ref, n)
        elif action in ("collection_created", "collection_deleted"):
            c = self._collection(body.get("collection"))
            item = {"action": action, **ref}
            for k in ("face_count", "person_count", "lead_floor_fmr", "calibration"):
                if k in body:
                    item[k] = body[k]
            c.lifecycle.append(item)
        elif action == "policy_changed":
            self._collection(body.get("collection")).policy_changes.append(
                {**ref, "changes": _changes(body.get("before"), body.get("after"))})
        elif action == "lead_floor_changed":
            self._collection(body.get("collection")).lead_floor_changes.append(
                {**ref, "before": body.get("before"), "after": body.get("after")})
        elif action in ("key_created", "key_revoked"):
            raw = body.get("subject")
            subject: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
            item = {**ref, "key_id": subject.get("key_id"), "name": subject.get("name")}
            if action == "key_created":
                grants = subject.get("grants")
                item["admin"] = bool(subject.get("admin"))
                item["collections"] = sorted(grants) if isinstance(grants, Mapping) else []
                self.keys_created.append(item)
            else:
                self.keys_revoked.append(item)
        elif action in ("review_decided", "review_purged"):
            pass  # counted by _reviews
        elif body.get("collection") is not None:
            self._collection(body["collection"]).other[action] += 1
        else:
            self.other[action] += 1

    def _receipt(self, c: _Collection, body: Mapping[str, Any], ref: Mapping[str, Any], faces: int) -> None:
        if body.get("receipt_id"):
            c.receipts.append({"receipt_id": str(body["receipt_id"]), "action": body.get("action"),
                               "seq": ref["seq"], "time": ref["time"], "faces": faces})

    def _search(self, c: _Collection, action: str, body: Mapping[str, Any]) -> None:
        mode = str(body.get("mode") or "identify")
        c.searches += 1
        c.by_action[action] += 1
        c.by_mode[mode] += 1
        purpose = body.get("purpose")
        purpose = str(purpose).strip() or NO_PURPOSE if purpose is not None else NO_PURPOSE
        c.purposes.add(purpose)
        actor = _actor(body)
        c.actors.add(_actor_key(actor), actor)
        error = body.get("error")
        if isinstance(error, Mapping):
            c.failed[str(error.get("code") or "error")] += 1
            return
        given = body.get("results")
        results: list[Any] = given if isinstance(given, list) else []
        if action == "compare":
            match = any(isinstance(r, Mapping) and bool(r.get("match")) for r in results)
            c.matches_per_search[1 if match else 0] += 1
            return
        returned = sum(len(r.get("candidates") or []) for r in results if isinstance(r, Mapping))
        (c.candidates_per_search if mode == "investigate" else c.matches_per_search)[returned] += 1
        op = body.get("operating_point")
        if isinstance(op, Mapping):
            c.points.add(mode, op, body.get("collection_size"))

    def _reviews(self, action: str, body: Mapping[str, Any], in_period: bool) -> None:
        collection = str(body.get("collection"))
        if action in SEARCH_ACTIONS:
            created = _ids(body.get("review_items"))
            for item in created:
                self.items[item] = collection
            if in_period and created:
                self._collection(collection).reviews["created"] += len(created)
        elif action == "review_decided":
            decision = str(body.get("decision"))
            item = str(body.get("item_id"))
            self.closed[item] = decision
            if in_period:
                self._collection(collection).reviews[decision] += 1
        elif action == "collection_deleted":  # its review items went with it
            gone = [item for item, c in self.items.items() if c == collection and item not in self.closed]
            for item in gone:
                self.closed[item] = "deleted_with_collection"
            if in_period and gone:
                self._collection(collection).reviews["deleted_with_collection"] += len(gone)
        elif action == "review_purged":
            reason = str(body.get("reason") or "expired")
            items = _ids(body.get("item_ids"))
            for item in items:
                self.closed.setdefault(item, reason)
            if in_period:
                n = len(items) if items else int(body.get("count") or 0)
                self._collection(collection).reviews[reason] += n

    def pending(self) -> Counter[str]:
        """Per collection, the review items created at or before ``until`` and not closed by then."""
        return Counter(c for item, c in self.items.items() if item not in self.closed)


# -- the audited rates at a threshold ----------------------------------------------------------------

class _Profiles:
    """The calibration profiles the searches named, found by name: a collection's own profile (in its
    folder), the engine's model profile, or a profile shipped with facelens. Each is loaded once."""

    def __init__(self, home: Path, engine: Engine | None) -> None:
        self.home = home
        self.engine = engine
        self.loaded: dict[Path, ScoreCalibration] = {}

    def _load(self, path: Path) -> ScoreCalibration | None:
        from ..calibration import load_calibration

        if path not in self.loaded:
            try:
                self.loaded[path] = load_calibration(path)
            except CalibrationError as exc:
                logger.warning("transparency report: cannot read the calibration %s: %s", path, exc)
                return None
        return self.loaded[path]

    @staticmethod
    def _name(path: Path) -> str | None:
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as z:
                return str(json.loads(str(z["meta"])).get("name"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def find(self, collection: str, name: str | None) -> tuple[ScoreCalibration | None, str | None]:
        """(profile, where it came from: ``collection`` or ``model``) for the profile ``name`` a search used."""
        if name is None:
            return None, None
        try:
            own = collection_dir(self.home, collection) / "calibration.npz"
        except InvalidArgumentError:
            own = None
        if own is not None and own.is_file() and self._name(own) == name:
            return self._load(own), "collection"
        if self.engine is not None:
            try:
                cal = self.engine.calibration
            except FacelensError:
                cal = None
            if cal is not None and cal.name == name:
                return cal, "model"
        for path in sorted(_SHIPPED_PROFILES.glob("*.npz")):
            if self._name(path) == name:
                return self._load(path), "model"
        return None, None


def _curve_at(curve: ImpostorCurve, threshold: float, *, used: bool) -> dict[str, Any]:
    """One curve's false-match rate at ``threshold``: the 95% upper bound (``fmr``), the point estimate,
    and whether the curve measures it (at least 10 of its impostor pairs score that high), extrapolates it
    (its fitted tail, within the range the curve supports) or cannot speak for it (``unsupported``)."""
    bound, extrapolated = curve.fmr(threshold)
    estimate, _ = curve.fmr_estimate(threshold)
    if not extrapolated:
        status = "measured"
    elif curve.tail_fitted and curve.supports(bound):
        status = "extrapolated"
    else:
        status = "unsupported"
    return {"name": curve.name, "impostor_pairs": curve.n_pairs, "fmr": bound, "fmr_estimate": estimate,
            "status": status, "supported_down_to_fmr": curve.supported_floor, "used_by_worst_group": used}


def audited_rates(profile: ScoreCalibration, threshold: float) -> dict[str, Any]:
    """The false-match rate of every curve of ``profile`` (overall and each audited group) at ``threshold``,
    the worst group the profile can speak for, and its rate against the overall one."""
    from ..calibration.table import MIN_GROUP_PAIRS

    overall = _curve_at(profile.overall, threshold, used=True)
    groups = [_curve_at(c, threshold, used=c.n_pairs >= MIN_GROUP_PAIRS) for c in profile.curves.values()]
    spoken = [g for g in groups if g["status"] != "unsupported"]
    worst = max(spoken, key=lambda g: (g["fmr"], g["name"]), default=None)
    return {"calibration": profile.name, "impostor_pairs": profile.n_pairs, "overall": overall, "groups": groups,
            "worst_group": None if worst is None else worst["name"],
            "worst_group_fmr": None if worst is None else worst["fmr"],
            "worst_group_ratio": None if worst is None or not overall["fmr"] else worst["fmr"] / overall["fmr"],
            "worst_group_ratio_estimate": (None if worst is None or not overall["fmr_estimate"]
                                           else worst["fmr_estimate"] / overall["fmr_estimate"]),
            "groups_unsupported": [g["name"] for g in groups if g["status"] == "unsupported"]}


# -- the log's standing ------------------------------------------------------------------------------

def _public_keys(home: Path) -> list[LogPublicKey] | None:
    """The home's public key: ``log-signing.pub`` beside its signing key, else the signing key's own."""
    key_path = default_signing_key_path(home)
    try:
        if public_key_path(key_path).is_file():
            return [LogPublicKey.load(public_key_path(key_path))]
        if key_path.is_file():
            return [LogSigningKey.load(key_path).public_key]
    except SearchLogError as exc:
        logger.warning("transparency report: %s", exc)
    return None


def _find_checkpoint(given: Checkpoint | str | Path | None, home: Path,
                     keys: Sequence[LogPublicKey] | None) -> tuple[Checkpoint | None, str | None]:
    """The checkpoint to verify against: the one given (a Checkpoint or its file; a folder: the latest
    one in it signed by the log's key), else the latest such in ``<home>/service/checkpoints/``."""
    if isinstance(given, Checkpoint):
        return given, "given"
    folder: Path | None = None
    if given is not None:
        path = Path(given)
        if not path.is_dir():
            return Checkpoint.load(path), "given"
        folder = path
    else:
        folder = service_dir(home) / CHECKPOINT_DIR
        if not folder.is_dir():
            return None, None
    best: Checkpoint | None = None
    for path in sorted(folder.glob("*.json")):
        try:
            cp = Checkpoint.load(path)
        except SearchLogError:
            continue
        if keys and not any(cp.signed_by(k) for k in keys):
            continue
        if best is None or cp.seq > best.seq:
            best = cp
    return best, ("given" if given is not None else "found") if best is not None else None


def _log_section(path: LogLocation, keys: Sequence[LogPublicKey] | None, checkpoint: Checkpoint | None,
                 source: str | None, reader: _Reader) -> dict[str, Any]:
    signature_ok = checkpoint is not None and bool(keys) and any(checkpoint.signed_by(k) for k in keys or ())
    report: VerifyReport = verify_log(path, public_keys=keys, checkpoint=checkpoint if signature_ok else None)
    if report.ok:
        unproven = 0
    elif report.first_bad_seq is not None:
        unproven = sum(1 for s in reader.seqs if s >= report.first_bad_seq)
    else:
        unproven = len(reader.seqs)
    cp: dict[str, Any] | None = None
    if checkpoint is not None:
        cp = {**checkpoint.to_dict(), "source": source, "signature_valid": signature_ok,
              "log_matches": signature_ok and report.ok,
              "covers_period": reader.last_seq is None or checkpoint.seq >= reader.last_seq}
    return {"file": LOG_NAME, "public_key": keys[0].fingerprint if keys else None,
            "entries_in_period": reader.entries_in_period, "first_seq": reader.first_seq,
            "last_seq": reader.last_seq, "unproven_entries_in_period": unproven,
            "verification": report.to_dict(), "checkpoint": cp}


# -- the report --------------------------------------------------------------------------------------

def _collection_doc(c: _Collection, pending: int, profiles: _Profiles | None, exists: bool) -> dict[str, Any]:
    failed = sum(c.failed.values())
    candidates = sum(k * n for k, n in c.candidates_per_search.items())
    investigations = sum(c.candidates_per_search.values())
    identifications = sum(c.matches_per_search.values())
    points = []
    for p in sorted(c.points.points.values(), key=lambda p: (p["mode"], -p["searches"], str(p["threshold"]))):
        sizes = p.pop("sizes")
        p["collection_size"] = {"min": min(sizes), "max": max(sizes)} if sizes else None
        audited: dict[str, Any] | None = None
        if profiles is not None and isinstance(p["threshold"], (int, float)):
            profile, source = profiles.find(c.name, p["calibration"])
            if profile is not None:
                audited = {**audited_rates(profile, float(p["threshold"])), "source": source}
        p["audited"] = audited
        points.append(p)
    return {
        "name": c.name,
        "exists_now": exists,
        "searches": {
            "total": c.searches, "identify": c.by_mode.get("identify", 0),
            "investigate": c.by_mode.get("investigate", 0), "by_mode": dict(sorted(c.by_mode.items())),
            "by_action": dict(sorted(c.by_action.items())), "by_purpose": c.purposes.listing("purpose"),
            "without_purpose": c.purposes.counts.get(NO_PURPOSE, 0), "by_actor": c.actors.listing("actor"),
            "failed": failed, "no_face": c.failed.get("no_face", 0), "failed_by_code": dict(sorted(c.failed.items())),
        },
        "candidates": {"investigations": investigations, "total": candidates,
                       "per_search": _distribution(c.candidates_per_search),
                       "max": max(c.candidates_per_search, default=0),
                       "mean": candidates / investigations if investigations else None},
        "matches": {"identifications": identifications,
                    "total": sum(k * n for k, n in c.matches_per_search.items()),
                    "searches_with_a_match": sum(n for k, n in c.matches_per_search.items() if k > 0),
                    "per_search": _distribution(c.matches_per_search)},
        "reviews": {"created": c.reviews.get("created", 0), "confirmed": c.reviews.get("confirmed", 0),
                    "rejected": c.reviews.get("rejected", 0), "expired": c.reviews.get("expired", 0),
                    "withdrawn": c.reviews.get("withdrawn", 0),
                    "deleted_with_collection": c.reviews.get("deleted_with_collection", 0), "pending": pending},
        "enrolments": {"images": c.images, "faces": c.faces, "faces_refused": c.faces_refused,
                       "already_indexed": c.already_indexed},
        "erasures": {"face_deletions": c.face_deletions, "faces_deleted": c.faces_deleted,
                     "persons_erased": c.persons_erased, "person_faces_erased": c.person_faces_erased,
                     "faces": c.faces_deleted + c.person_faces_erased, "receipts": c.receipts},
        "lifecycle": c.lifecycle,
        "policy_changes": c.policy_changes,
        "lead_floor_changes": c.lead_floor_changes,
        "operating_points": points,
        "other_actions": dict(sorted(c.other.items())),
    }


def _totals(collections: Sequence[Mapping[str, Any]], compares: Mapping[str, Any],
            keys_created: int, keys_revoked: int) -> dict[str, Any]:
    def total(section: str, key: str) -> int:
        return sum(int(c[section][key]) for c in collections)

    return {
        "collections": len(collections), "searches": total("searches", "total"),
        "identify": total("searches", "identify"), "investigate": total("searches", "investigate"),
        "searches_failed": total("searches", "failed"), "no_face": total("searches", "no_face"),
        "searches_without_purpose": total("searches", "without_purpose"),
        "candidates": total("candidates", "total"), "matches": total("matches", "total"),
        **{f"reviews_{k}": total("reviews", k)
           for k in ("created", "confirmed", "rejected", "expired", "withdrawn", "pending")},
        "images_enrolled": total("enrolments", "images"), "faces_enrolled": total("enrolments", "faces"),
        "faces_erased": total("erasures", "faces"), "persons_erased": total("erasures", "persons_erased"),
        "erasure_receipts": sum(len(c["erasures"]["receipts"]) for c in collections),
        "policy_changes": sum(len(c["policy_changes"]) for c in collections),
        "lead_floor_changes": sum(len(c["lead_floor_changes"]) for c in collections),
        "compares": compares["total"], "keys_created": keys_created, "keys_revoked": keys_revoked,
    }


def build_transparency(source: Engine | str | Path, since: str | dt.datetime | None = None,
                       until: str | dt.datetime | None = None, *,
                       checkpoint: Checkpoint | str | Path | None = None,
                       public_keys: Sequence[LogPublicKey] | None = None, log_path: LogLocation | None = None,
                       with_rates: bool = True) -> dict[str, Any]:
    """The transparency report of a facelens home for ``[since, until)`` (ISO 8601; a date alone is
    midnight, no zone is UTC; default: from the log's start until now), as a JSON-ready dict.

    ``source``: an :class:`~facelens.Engine` (its home, and its model's calibration profile) or a home
    folder. The counts come from the home's signed log (``log_path`` overrides where it is), checked with
    ``public_keys`` (default: the home's ``log-signing.pub``, else its signing key's public key) and, when
    given or found in ``<home>/service/checkpoints/``, a signed ``checkpoint`` (a :class:`Checkpoint`, its
    file, or a folder of them: the latest signed by the log's key). ``with_rates=False`` leaves out the
    per-group rates (which load calibration profiles). Read-only. Keys: docs/identification.md,
    "Transparency reports". Raises InvalidArgumentError for a bad period, SearchLogError for a log file
    that cannot be read (a missing log is reported as such, with no activity).
    """
    engine = None if isinstance(source, (str, Path)) else source
    home = Path(source).expanduser() if isinstance(source, (str, Path)) else Path(source.home)
    now = dt.datetime.now(dt.UTC)
    start, end = _time(since, "since"), _time(until, "until") or now
    if start is not None and start >= end:
        raise InvalidArgumentError(f"since ({_iso(start)}) must be before until ({_iso(end)})")
    path: LogLocation = (log_path if is_database_url(log_path) else Path(log_path)) if log_path is not None \
        else log_location(home)
    reader = _Reader(_iso(start) if start is not None else "", _iso(end))
    if is_database_url(path) or Path(path).is_file() and Path(path).stat().st_size > 0:
        try:
            for entry in read_entries(path):
                reader.feed(entry)
        except SearchLogError as exc:
            logger.warning("transparency report: %s", exc)
    keys = list(public_keys) if public_keys is not None else _public_keys(home)
    cp, cp_source = _find_checkpoint(checkpoint, home, keys)
    log_doc = _log_section(path, keys, cp, cp_source, reader)
    existing = set(list_collection_names(home))
    profiles = _Profiles(home, engine) if with_rates else None
    pending = reader.pending()
    for name in pending:
        reader._collection(name)
    collections = [_collection_doc(c, pending.get(name, 0), profiles, name in existing)
                   for name, c in sorted(reader.collections.items())]
    cmp = reader.compares
    compares = {"total": cmp.searches, "matches": cmp.matches_per_search.get(1, 0),
                "failed": sum(cmp.failed.values()), "failed_by_code": dict(sorted(cmp.failed.items())),
                "by_purpose": cmp.purposes.listing("purpose"),
                "without_purpose": cmp.purposes.counts.get(NO_PURPOSE, 0),
                "by_actor": cmp.actors.listing("actor")}
    return {
        "report": "facelens transparency report", "version": REPORT_VERSION, "facelens_version": __version__,
        "generated": _iso(now),
        "period": {"since": _iso(start) if start is not None else None, "until": _iso(end)},
        "log": log_doc,
        "totals": _totals(collections, compares, len(reader.keys_created), len(reader.keys_revoked)),
        "collections": collections,
        "compares": compares,
        "keys": {"created": reader.keys_created, "revoked": reader.keys_revoked},
        "other_actions": dict(sorted(reader.other.items())),
    }


def write_transparency(report: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``transparency.html`` and ``transparency.json`` into ``out_dir`` (created if needed), each
    atomically; returns (html path, json path)."""
    try:
        text = json.dumps(report, indent=1, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"the report is not JSON-able ({exc}); build it with build_transparency") from exc
    html_path, json_path = write_files(out_dir, {"transparency.html": render_transparency_html(report),
                                                 "transparency.json": text + "\n"})
    return html_path, json_path
