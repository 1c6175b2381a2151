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
import html
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..errors import CalibrationError, FacelensError, InvalidArgumentError, SearchLogError
from ..store.home import collection_dir, list_collection_names, service_dir
from .log import (
    LOG_NAME,
    Checkpoint,
    LogEntry,
    LogPublicKey,
    LogSigningKey,
    VerifyReport,
    default_signing_key_path,
    public_key_path,
    read_entries,
    verify_log,
)

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


def _log_section(path: Path, keys: Sequence[LogPublicKey] | None, checkpoint: Checkpoint | None,
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
                       public_keys: Sequence[LogPublicKey] | None = None, log_path: Path | None = None,
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
    path = Path(log_path) if log_path is not None else service_dir(home) / LOG_NAME
    reader = _Reader(_iso(start) if start is not None else "", _iso(end))
    if path.is_file() and path.stat().st_size > 0:
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(report, indent=1, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"the report is not JSON-able ({exc}); build it with build_transparency") from exc
    page = render_transparency_html(report)
    paths = (out / "transparency.html", out / "transparency.json")
    for path, content in zip(paths, (page, text + "\n"), strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(path)
    return paths


# -- the page ----------------------------------------------------------------------------------------

def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else _e(x)


def _rate(v: Any) -> str:
    """A rate for the eye: 3.7&times;10<sup>-4</sup>, or a percentage from 1%."""
    if not isinstance(v, (int, float)):
        return "&ndash;"
    if v == 0:
        return "0"
    if v < 0.01:
        mant, exp = f"{v:.1e}".split("e")
        return f"{mant}&times;10<sup>{int(exp)}</sup>"
    return f"{100 * v:.3g}%"


def _one_in(v: Any) -> str:
    if not isinstance(v, (int, float)) or v <= 0:
        return ""
    x = 1 / v
    if x < 100:
        return f"about 1 in {x:.2g}"
    digits = int(np.floor(np.log10(x))) - 1
    return f"about 1 in {round(x, -digits):,.0f}"


def _when(text: Any) -> str:
    """An ISO time as ``2026-11-30 14:05 UTC`` (the JSON keeps the full time)."""
    try:
        t = dt.datetime.fromisoformat(str(text)).astimezone(dt.UTC)
    except ValueError:
        return _e(text)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _who(actor: Mapping[str, Any] | None) -> str:
    if not actor or actor.get("kind") == "unrecorded":
        return '<span class="muted">not recorded</span>'
    kind = {"key": "API key", "cli": "command-line user", "python": "program"}.get(str(actor.get("kind")),
                                                                                    str(actor.get("kind")))
    name = f' &ldquo;{_e(actor["name"])}&rdquo;' if actor.get("name") else ""
    return f"{_e(kind)} <code>{_e(actor.get('id'))}</code>{name}"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return '<p class="muted">None in this period.</p>'
    th = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


_STATUS_WORDS = {
    "intact": ("ok", "The record verifies", "Every entry is chained to the one before it and signed with the "
                                            "service's signing key: none was changed, removed or inserted "
                                            "since it was written."),
    "empty": ("warn", "The record is empty", "The log has no entries. A log that was emptied or deleted and "
                                            "started anew looks the same: only a checkpoint kept elsewhere "
                                            "tells."),
    "missing": ("warn", "There is no record", "No signed log was found, so nothing below can be proven."),
    "unproven": ("warn", "The record is not fully proven", "The chain holds, but its last entries are not "
                                                           "covered by a signature that could be checked."),
}


def _verification_box(report: Mapping[str, Any]) -> str:
    log = report["log"]
    v = log["verification"]
    kind, title, words = _STATUS_WORDS.get(str(v["status"]), (
        "bad", "THE RECORD FAILS VERIFICATION",
        "The log does not verify: it was changed after it was written, by someone without the signing key, "
        "or parts of it were removed. The numbers on this page are read from it and prove nothing."))
    parts = [f'<h2>The record</h2><div class="box {kind}"><h3 class="boxtitle">{_e(title)}</h3><p>{_e(words)}</p>']
    if not v["ok"] and v.get("problem"):
        parts.append(f'<p><b>What failed:</b> {_e(v["problem"])}</p>')
    if not v["ok"] and log["unproven_entries_in_period"]:
        parts.append(f"<p><b>{_plural(log['unproven_entries_in_period'], 'entry', 'entries')} of this period "
                     f"cannot be trusted.</b></p>")
    read = "Entries in the log" if v["ok"] else "Entries verified before the failure"
    facts = [("Status", _e(v["status"])), (read, _n(v["entries"])),
             ("Entries in this period", _n(log["entries_in_period"])
              + (f" (seq {log['first_seq']}&ndash;{log['last_seq']})" if log["first_seq"] is not None else "")),
             ("Signatures checked with public key", f"<code>{_e(log['public_key'] or 'none found')}</code>")]
    if v.get("head_seq") is not None:
        facts.append(("Latest entry", f"seq {v['head_seq']}, hash <code>{_e(v['head_hash'])}</code>"))
    cp = log.get("checkpoint")
    if cp is None:
        facts.append(("Signed checkpoint", '<span class="muted">none given: a checkpoint kept outside this '
                                           'service (<code>facelens log checkpoint</code>) would prove that '
                                           'no entry up to it was later cut or replaced</span>'))
    else:
        state = ("matches the log" if cp["log_matches"] else
                 "its signature is valid but the log no longer matches it" if cp["signature_valid"] else
                 "NOT signed by the log's key: ignored")
        facts.append(("Signed checkpoint", f"entry {cp['seq']} at {_when(cp['time'])} ({_e(cp['source'])}): "
                                           f"{_e(state)}; {'covers' if cp['covers_period'] else 'does not cover'} "
                                           f"the whole period"))
    for note in v.get("notes") or []:
        facts.append(("Note", _e(note)))
    parts.append(_table(["", ""], [[f"<b>{k}</b>", val] for k, val in facts], cls="kv"))
    parts.append("</div>")
    return "".join(parts)


def _banner(report: Mapping[str, Any]) -> str:
    """A warning at the top of the page when the record does not verify (the details follow below)."""
    v = report["log"]["verification"]
    if v["ok"]:
        return ""
    kind, title, _ = _STATUS_WORDS.get(str(v["status"]), ("bad", "THE RECORD FAILS VERIFICATION", ""))
    return (f'<div class="box {kind}"><b>{_e(title)}:</b> the numbers below are read from a record that cannot be '
            f"shown to be complete and unchanged (see &ldquo;The record&rdquo;).</div>")


def _headline(report: Mapping[str, Any]) -> str:
    t = report["totals"]
    period = report["period"]
    since = _when(period["since"]) if period["since"] else "the start of the record"
    lines = [
        f"{_plural(t['searches'], 'search', 'searches')} of {_plural(t['collections'], 'collection')}: "
        f"{t['identify']:,} identifications and {t['investigate']:,} investigations"
        + (f"; {t['searches_failed']:,} failed (of them {t['no_face']:,} had no face in the photo)"
           if t["searches_failed"] else "") + ".",
        f"Identifications returned {_plural(t['matches'], 'match', 'matches')}; investigations returned "
        f"{_plural(t['candidates'], 'candidate')} (leads for a person to review).",
        f"Of the candidates, reviewers confirmed {t['reviews_confirmed']:,} and rejected {t['reviews_rejected']:,}; "
        f"{t['reviews_expired']:,} expired unreviewed, {t['reviews_withdrawn']:,} "
        f"{'was' if t['reviews_withdrawn'] == 1 else 'were'} withdrawn by an erasure, and {t['reviews_pending']:,} "
        f"{'is' if t['reviews_pending'] == 1 else 'are'} still waiting for review.",
        f"{_plural(t['faces_enrolled'], 'face')} enrolled from {_plural(t['images_enrolled'], 'photo')}; "
        f"{_plural(t['faces_erased'], 'face')} erased ({_plural(t['persons_erased'], 'person')} erased "
        f"entirely), with {_plural(t['erasure_receipts'], 'erasure receipt')}.",
        (f"{_plural(t['searches_without_purpose'], 'search', 'searches')} stated no purpose. "
         if t["searches_without_purpose"] else "Every search stated a purpose. ") +
        f"{_plural(t['compares'], 'one-to-one comparison')}; {_plural(t['policy_changes'], 'policy change')}, "
        f"{_plural(t['lead_floor_changes'], 'lead-floor change')}; {_plural(t['keys_created'], 'API key')} "
        f"created, {t['keys_revoked']:,} revoked.",
    ]
    nums = [("searches", t["searches"]), ("candidates shown", t["candidates"]),
            ("confirmed by a reviewer", t["reviews_confirmed"]), ("awaiting review", t["reviews_pending"]),
            ("faces erased", t["faces_erased"])]
    cards = "".join(f'<div class="card"><div class="big">{v:,}</div><div>{_e(k)}</div></div>' for k, v in nums)
    return (f"<h2>In this period</h2><p class=\"muted\">From {since} to {_when(period['until'])} "
            f"(the end not included).</p><div class=\"cards\">{cards}</div>"
            + "<ul class=\"headline\">" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>")


_GLOSSARY = [
    ("Search", "A photo of a face compared against every face stored in a collection."),
    ("Identification", "A search in <i>identify</i> mode: it returns only <b>matches</b>, faces scoring above a "
                       "strict threshold chosen so that a search for someone who is not in the collection "
                       "returns anyone at most rarely (its FPIR, below)."),
    ("Investigation", "A search in <i>investigate</i> mode: it returns a short ranked list of <b>candidates</b>. "
                      "A candidate is a <b>lead</b>, never an identification: it may well be a stranger who "
                      "looks alike. Each is labelled with how many strangers would be expected to score as high "
                      "among the faces searched."),
    ("Review", "A person other than the one who searched looks at each candidate and <b>confirms</b> or "
               "<b>rejects</b> it, giving a reason; the decision is final and recorded. A candidate nobody "
               "reviews within the collection's retention period <b>expires</b> and is deleted; one whose "
               "face is erased meanwhile is <b>withdrawn</b>."),
    ("Purpose", "What the searcher wrote as the reason for the search (a case reference, for example). It is "
                "shown here exactly as written."),
    ("False-match rate (FMR)", "How often two photos of <i>different</i> people score at least a given "
                               "threshold, measured on many pairs of strangers' photos (the calibration). "
                               "The figure shown is a 95% upper confidence bound."),
    ("FPIR", "False-positive identification rate: how often a search for someone who is not in the collection "
             "returns anyone at all. It grows with the number of faces searched, so the threshold does too."),
    ("Measured / extrapolated / unsupported", "A rate is <i>measured</i> when at least 10 pairs of strangers in "
                                              "the calibration scored that high, <i>extrapolated</i> from a "
                                              "fitted tail when fewer did (within the range the data supports), "
                                              "and <i>unsupported</i> when the data for that group is too small "
                                              "to say anything at that rate."),
    ("Erasure receipt", "The proof given to a person who asked to be erased: what was removed, when and by "
                        "whom; its id appears in the record."),
]


def _glossary() -> str:
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in _GLOSSARY)
    return f'<h2>What the words mean</h2><dl class="gloss">{rows}</dl>'


def _purpose_cell(purpose: Any) -> str:
    return '<span class="muted">none stated</span>' if purpose is None else f"<q>{_e(purpose)}</q>"


def _point_words(p: Mapping[str, Any], a: Mapping[str, Any]) -> str:
    """One operating point's audited rates in words: how often strangers reach its threshold, overall and
    in the worst group, and how many a search of that many faces would be expected to return."""
    overall = a["overall"]
    what = "returned as a match" if p["mode"] == "identify" else "listed as a candidate"
    words = (f"At score {p['threshold']:.4f} ({_e(p['mode'])}), two photos of different people score this high "
             f"{_one_in(overall['fmr'])} times overall ({_e(overall['status'])})")
    if a["worst_group"]:
        words += (f", and {_one_in(a['worst_group_fmr'])} times in the worst audited group, "
                  f"<b>{_e(a['worst_group'])}</b> ({a['worst_group_ratio']:.2g}&times; as often)")
    size = p.get("collection_size")
    if size and overall["fmr"]:
        rate = a["worst_group_fmr"] or overall["fmr"]
        whose = "the worst group's" if a["worst_group_fmr"] else "the overall"
        words += (f". A search of {size['max']:,} faces for someone who is not among them would have about "
                  f"{size['max'] * rate:.2g} strangers {what}, at {whose} rate")
    unsupported = a.get("groups_unsupported") or []
    if unsupported:
        words += (". Too few pairs to say anything at this rate for: "
                  + ", ".join(f"<b>{_e(g)}</b>" for g in unsupported))
    return words + "."


def _points_section(c: Mapping[str, Any]) -> str:
    points = c["operating_points"]
    if not points:
        return ""
    rows = []
    for p in points:
        rate = (f"FPIR {_rate(p['max_fpir'])}, so FMR {_rate(p['max_fmr'])} per comparison"
                if p.get("max_fpir") is not None else f"FMR {_rate(p['max_fmr'])} per comparison")
        if p["mode"] == "investigate":
            rate = f"lead floor: {rate}"
        size = p.get("collection_size")
        sizes = "" if not size else (f"{size['min']:,}" if size["min"] == size["max"]
                                     else f"{size['min']:,}&ndash;{size['max']:,}")
        a = p.get("audited")
        if a is None:
            audited = '<span class="muted">calibration profile not available here</span>'
        else:
            worst = (f"worst group <b>{_e(a['worst_group'])}</b>: {_rate(a['worst_group_fmr'])}, "
                     f"{a['worst_group_ratio']:.2g}&times; the overall rate" if a["worst_group"] else "no group")
            audited = f"overall {_rate(a['overall']['fmr'])} ({_e(a['overall']['status'])}); {worst}"
        rows.append([_e(p["mode"]), rate, f"{p['threshold']:.4f}" if isinstance(p["threshold"], float) else
                     _e(p["threshold"]), sizes, _n(p["searches"]), audited])
    out = ["<h4>Operating points used</h4>",
           '<p class="plain">The operating point is the rule a search ran under: the score a face had to reach '
           "to be returned, derived from a target false-match rate. The audited rate is the share of pairs of "
           "photos of two different people, in the calibration data, that score at least that high: overall, "
           "and in each audited group of people. Groups are named by data set and label: "
           "<code>lfw:sex=F</code> is pairs of women in the LFW photos, <code>set:congress-historical</code> "
           "pairs of official portraits of former members of the US Congress.</p>",
           _table(["Mode", "Target rate", "Score threshold", "Faces searched", "Searches",
                   "Audited false-match rate at this threshold"], rows)]
    for p in points:
        a = p.get("audited")
        if a is None:
            continue
        out.append(f'<p class="plain">{_point_words(p, a)}</p>')
        grows = [[("<b>overall</b>" if g is a["overall"] else _e(g["name"])), _n(g["impostor_pairs"]),
                  '<span class="muted">too few pairs to say</span>' if g["status"] == "unsupported" else
                  _rate(g["fmr"]) + (f' <span class="muted">({_one_in(g["fmr"])})</span>' if g["fmr"] else ""),
                  "&ndash;" if g["status"] == "unsupported" else _rate(g["fmr_estimate"]),
                  f'<span class="st {_e(g["status"])}">{_e(g["status"])}</span>',
                  "yes" if g["used_by_worst_group"] else "no (too few pairs)"]
                 for g in [a["overall"], *a["groups"]]]
        out.append(f'<details open><summary>Per-group false-match rates at score {p["threshold"]:.4f} '
                   f'({_e(p["mode"])}, calibration <code>{_e(a["calibration"])}</code>, '
                   f'{_plural(a["impostor_pairs"], "pair")} of strangers)</summary>'
                   + _table(["Group", "Pairs of strangers", "FMR (95% upper bound)", "FMR (estimate)", "Status",
                             "Sets thresholds"], grows) + "</details>")
    return "".join(out)


def _collection_section(c: Mapping[str, Any]) -> str:
    s, cand, m, r = c["searches"], c["candidates"], c["matches"], c["reviews"]
    en, er = c["enrolments"], c["erasures"]
    gone = "" if c["exists_now"] else ' <span class="badge muted">no longer exists</span>'
    out = [f'<section class="coll"><h3>Collection <code>{_e(c["name"])}</code>{gone}</h3>']
    summary = [
        ["Searches", f"{s['total']:,} ({s['identify']:,} identify, {s['investigate']:,} investigate)"],
        ["Failed searches", f"{s['failed']:,}" + (f" ({s['no_face']:,} with no face in the photo"
                                                  + "".join(f", {n:,} {_e(k)}" for k, n in s['failed_by_code'].items()
                                                            if k != "no_face") + ")" if s["failed"] else "")],
        ["Matches returned (identify)", f"{m['total']:,} in {m['identifications']:,} identifications "
                                        f"({m['searches_with_a_match']:,} found a match)"],
        ["Candidates returned (investigate)",
         f"{cand['total']:,} in {cand['investigations']:,} investigations"
         + (f" (at most {cand['max']:,} in one, {cand['mean']:.1f} on average)" if cand["investigations"] else "")],
        ["Review items", f"{r['created']:,} created; {r['confirmed']:,} confirmed, {r['rejected']:,} rejected, "
                         f"{r['expired']:,} expired, {r['withdrawn']:,} withdrawn"
                         + (f", {r['deleted_with_collection']:,} deleted with the collection"
                            if r["deleted_with_collection"] else "") + f"; <b>{r['pending']:,} pending</b>"],
        ["Enrolments", f"{en['faces']:,} faces from {en['images']:,} photos ({en['faces_refused']:,} faces refused; "
                       f"{en['already_indexed']:,} photos already enrolled)"],
        ["Erasures", f"{_plural(er['faces'], 'face')} ({er['faces_deleted']:,} deleted in "
                     f"{_plural(er['face_deletions'], 'request')}; {_plural(er['persons_erased'], 'person')} erased "
                     f"with {_plural(er['person_faces_erased'], 'face')}); {_plural(len(er['receipts']), 'receipt')}"],
    ]
    out.append(_table(["", ""], [[f"<b>{k}</b>", v] for k, v in summary], cls="kv"))
    out.append('<div class="cols"><div>')
    out.append("<h4>Searches by purpose</h4>" + _table(
        ["Purpose", "Searches"], [[_purpose_cell(p["purpose"]), _n(p["count"])] for p in s["by_purpose"]]))
    out.append("</div><div>")
    out.append("<h4>Searches by who ran them</h4>" + _table(
        ["Searcher", "Searches"], [[_who(a["actor"]), _n(a["count"])] for a in s["by_actor"]]))
    out.append("</div></div>")
    if cand["per_search"]:
        out.append("<h4>Candidates per investigation</h4>" + _table(
            ["Candidates returned", "Investigations"],
            [[_n(d["returned"]), _n(d["searches"])] for d in cand["per_search"]]))
    out.append(_points_section(c))
    changes = [[_when(p["time"]), _who(p["actor"]), "; ".join(
        f"<code>{_e(k)}</code>: {_e(json.dumps(v['before']))} &rarr; {_e(json.dumps(v['after']))}"
        for k, v in p["changes"].items()) or '<span class="muted">no field changed</span>']
        for p in c["policy_changes"]]
    changes += [[_when(p["time"]), _who(p["actor"]),
                 f"<code>lead_floor_fmr</code>: {_rate(p['before'])} &rarr; {_rate(p['after'])}"]
                for p in c["lead_floor_changes"]]
    if changes:
        out.append("<h4>Rule changes</h4>" + _table(["When", "By", "What changed"], sorted(changes)))
    if c["lifecycle"]:
        out.append("<h4>Created and deleted</h4>" + _table(["When", "What", "By"], [
            [_when(x["time"]), _e(x["action"].replace("_", " ")), _who(x["actor"])] for x in c["lifecycle"]]))
    if er["receipts"]:
        out.append("<details><summary>Erasure receipts</summary>" + _table(
            ["Receipt", "When", "What", "Faces", "Log entry"],
            [[f"<code>{_e(x['receipt_id'])}</code>", _when(x["time"]), _e(str(x["action"]).replace("_", " ")),
              _n(x["faces"]), _n(x["seq"])] for x in er["receipts"]]) + "</details>")
    out.append("</section>")
    return "".join(out)


def _compares_section(report: Mapping[str, Any]) -> str:
    cmp = report["compares"]
    if not cmp["total"]:
        return ""
    return ("<h2>One-to-one comparisons</h2><p>Two photos compared with each other (no collection searched): "
            f"{cmp['total']:,}, of which {cmp['matches']:,} matched and {cmp['failed']:,} failed.</p>"
            '<div class="cols"><div>' + _table(["Purpose", "Comparisons"], [
                [_purpose_cell(p["purpose"]), _n(p["count"])] for p in cmp["by_purpose"]]) + "</div><div>"
            + _table(["By", "Comparisons"], [[_who(a["actor"]), _n(a["count"])] for a in cmp["by_actor"]])
            + "</div></div>")


def _keys_section(report: Mapping[str, Any]) -> str:
    keys = report["keys"]
    if not keys["created"] and not keys["revoked"]:
        return ""
    rows = [[_when(k["time"]), "created", f"<code>{_e(k['key_id'])}</code> &ldquo;{_e(k['name'])}&rdquo;",
             "global admin" if k.get("admin") else ", ".join(f"<code>{_e(x)}</code>" for x in k["collections"])
             or "none", _who(k["actor"])] for k in keys["created"]]
    rows += [[_when(k["time"]), "revoked", f"<code>{_e(k['key_id'])}</code> &ldquo;{_e(k['name'])}&rdquo;", "",
              _who(k["actor"])] for k in keys["revoked"]]
    return ("<h2>API keys</h2><p>Who may search: keys given to people or systems, and taken back.</p>"
            + _table(["When", "Event", "Key", "Collections", "By"], sorted(rows)))


def _about(report: Mapping[str, Any]) -> str:
    return ("<h2>About this report</h2><p>Every number on this page is counted from the service's signed "
            "log, the record it writes of every search, enrolment, erasure, review decision and rule change "
            "before it answers. Each entry is chained to the one before it and signed, so that a change made "
            "afterwards, by anyone without the signing key, shows in the verification above. The false-match "
            "rates come from the calibration profile each search used: pairs of photos of different people, "
            "grouped by the coarse demographic labels of the data sets they come from (labels made by "
            "others, some wrong); per-group rates show how the model behaves on that data, not a verdict on "
            "any group. The record holds no photos and no face data, and this page names no person who was "
            "searched for or found.</p>"
            f'<p class="muted">Generated {_when(report["generated"])} by facelens {_e(report["facelens_version"])} '
            f"(report format {_e(report['version'])}); the same numbers are in <code>transparency.json</code>.</p>")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em}h4{margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.35em .6em;
vertical-align:top;text-align:left}th{background:#f4f4f4}table.kv thead{display:none}
.muted{color:#666}.badge{display:inline-block;padding:0 .45em;border-radius:.6em;font-size:.78em;font-weight:600}
.badge.muted{background:#eef;color:#335;border:1px solid #ccd}
.box{border:2px solid;border-radius:6px;padding:.4em 1em;margin:1em 0}.box .boxtitle{margin:.3em 0}
.box.ok{border-color:#3a7d44;background:#f1f8f2}.box.warn{border-color:#b7791f;background:#fdf8ec}
.box.bad{border-color:#9b1c1c;background:#fde8e8}.box.bad .boxtitle,.box.bad p b{color:#9b1c1c}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:1em 0}.card{border:1px solid #ccc;border-radius:6px;
padding:.5em 1em;min-width:9em;background:#fafafa}.card .big{font-size:1.8em;font-weight:700}
ul.headline li{margin:.25em 0}dl.gloss{display:grid;grid-template-columns:minmax(10em,16em) 1fr;gap:.35em 1.2em}
dl.gloss dt{font-weight:600}dl.gloss dd{margin:0;max-width:52em}
section.coll{margin-top:1.5em}section.coll h3{background:#f4f4f4;padding:.3em .5em}
.plain{color:#333;max-width:60em}.cols{display:flex;flex-wrap:wrap;gap:2em}
.cols>div{flex:1 1 24em}q{quotes:"\\201C" "\\201D"}code{font-size:.9em;overflow-wrap:anywhere}
details{margin:.4em 0}summary{cursor:pointer;color:#234}
.st{font-weight:600}.st.measured{color:#2f6b38}.st.extrapolated{color:#8a5a00}.st.unsupported{color:#9b1c1c}
"""


def render_transparency_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page: no script, no external stylesheet, font or image; every
    text from the log (purposes, key names, user names) escaped."""
    period = report["period"]
    title = (f"Transparency report: {_when(period['since']) if period['since'] else 'start of record'} to "
             f"{_when(period['until'])}")
    body = [f"<h1>{_e(title)}</h1>",
            '<p class="muted">What this face recognition service did in the period: who searched, for what '
            "stated purpose, what they were shown, what reviewers decided, and what was enrolled and erased. "
            "Counted from its signed record.</p>",
            _banner(report), _headline(report), _verification_box(report), _glossary(), "<h2>Collections</h2>"]
    if not report["collections"]:
        body.append('<p class="muted">No collection was used in this period.</p>')
    body += [_collection_section(c) for c in report["collections"]]
    body += [_compares_section(report), _keys_section(report)]
    if report.get("other_actions"):
        body.append("<h2>Other recorded actions</h2>" + _table(
            ["Action", "Count"], [[_e(k), _n(v)] for k, v in report["other_actions"].items()]))
    body.append(_about(report))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")
