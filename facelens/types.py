"""Frozen value types returned by the facelens API.

Conventions used everywhere:
- Coordinates are pixels of the *decoded, upright* image (EXIF orientation applied), origin top-left,
  x to the right, y down. Boxes are ``(left, top, right, bottom)`` floats.
- Landmarks are five ``(x, y)`` points in the order: left eye, right eye, nose tip, left mouth corner,
  right mouth corner, where "left" means the left side *of the picture* (the subject's right eye).
- Embeddings are ``(d,) float32`` vectors with unit L2 norm; the score of two embeddings is their
  cosine similarity (dot product) in ``[-1, 1]``; higher means more alike.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "LEAD_NOTICE",
    "BBox",
    "Candidate",
    "CollectionInfo",
    "Comparison",
    "EnrolmentCheck",
    "Face",
    "IndexResult",
    "Landmarks",
    "Match",
    "OperatingPoint",
    "PolicyFloor",
    "Pose",
    "Quality",
    "QualityFilter",
    "RefusalReason",
    "SearchMode",
    "SearchResult",
]

LEAD_NOTICE = ("These candidates are leads, not matches: each must be reviewed by a person before anything "
               "is done.")
"""Said with every investigation result, in its JSON (``notice``) and its text."""


@dataclass(frozen=True, slots=True)
class BBox:
    """A face box in image pixels: ``left <= right``, ``top <= bottom``."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2.0, (self.top + self.bottom) / 2.0)

    def as_list(self) -> list[float]:
        return [self.left, self.top, self.right, self.bottom]


Landmarks = tuple[tuple[float, float], ...]
"""Five ``(x, y)`` points: left eye, right eye, nose, left mouth corner, right mouth corner."""


@dataclass(frozen=True, slots=True)
class Pose:
    """Head orientation in degrees, estimated from the five landmarks (rough: frontal official portraits
    read pitch 0 on average, 90% of them within -13..+13 degrees; see docs/quality.md).

    ``yaw`` > 0: the face turns towards the picture's right; ``pitch`` > 0: the face looks up;
    ``roll`` > 0: the head tilts clockwise in the picture (right eye lower than left eye).
    """

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True, slots=True)
class Quality:
    """Measures of how usable a face is for recognition.

    ``sharpness`` and ``brightness`` are on a 0-100 scale measured on the aligned 112x112 face crop
    (sharpness: variance of the Laplacian mapped by ``100 * v / (v + 100)``, so 50 means a variance of
    100; brightness: mean luma as a percentage of white). ``face_size`` is the shorter side of the box
    in pixels of the original image.
    """

    sharpness: float
    brightness: float
    face_size: float


_E = TypeVar("_E", bound=enum.StrEnum)


def _parse_choice(cls: type[_E], value: _E | str, text: str, what: str) -> _E:
    """``value`` as a member of ``cls`` (already one, or its value spelt as ``text``), else
    :class:`~facelens.errors.InvalidArgumentError` listing the choices."""
    from .errors import InvalidArgumentError

    if isinstance(value, cls):
        return value
    try:
        return cls(text)
    except ValueError:
        names = ", ".join(m.value for m in cls)
        raise InvalidArgumentError(f"unknown {what} {value!r}; use one of {names}") from None


class QualityFilter(enum.StrEnum):
    """How strict indexing is about face quality (Rekognition's ``QualityFilter``).

    ``NONE`` refuses nothing; ``LOW``, ``MEDIUM`` and ``HIGH`` refuse progressively more faces;
    ``AUTO`` is facelens' recommended level (currently the same limits as ``MEDIUM``).
    """

    NONE = "NONE"
    AUTO = "AUTO"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"

    @classmethod
    def parse(cls, value: QualityFilter | str) -> QualityFilter:
        return _parse_choice(cls, value, str(value).upper(), "quality filter")


class RefusalReason(enum.StrEnum):
    """Why a face would not be indexed (names follow Rekognition's ``UnindexedFace.Reasons``)."""

    SMALL_BOUNDING_BOX = "SMALL_BOUNDING_BOX"
    LOW_SHARPNESS = "LOW_SHARPNESS"
    LOW_BRIGHTNESS = "LOW_BRIGHTNESS"
    EXTREME_POSE = "EXTREME_POSE"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    EXCEEDS_MAX_FACES = "EXCEEDS_MAX_FACES"
    NOT_THE_LARGEST_FACE = "NOT_THE_LARGEST_FACE"
    """Indexed for a person, only the image's largest face is theirs (``all_faces`` gives them every face)."""
    NO_MATCH_WITH_PERSON = "NO_MATCH_WITH_PERSON"
    """The face does not match the person's faces already stored at the enrolment rate (``enrol_max_fmr``);
    :class:`EnrolmentCheck` names the best score and the threshold."""


@dataclass(frozen=True, slots=True, eq=False)
class Face:
    """One detected face.

    ``score`` is the detector's confidence in ``[0, 1]`` (that this is a face, not who it is).
    ``embedding`` is ``None`` when only detection was asked for. ``refusal_reasons`` lists why the face
    would be refused for indexing under the quality filter it was analysed with (empty: acceptable).
    """

    bbox: BBox
    score: float
    landmarks: Landmarks
    pose: Pose
    quality: Quality
    refusal_reasons: tuple[RefusalReason, ...] = ()
    quality_filter: QualityFilter = QualityFilter.AUTO
    embedding: npt.NDArray[np.float32] | None = field(default=None, repr=False)

    @property
    def acceptable(self) -> bool:
        """True when the face passes the quality filter it was analysed with."""
        return not self.refusal_reasons

    def to_dict(self, *, include_embedding: bool = False) -> dict[str, Any]:
        """A JSON-ready description (the stable ``--json`` shape of the CLI)."""
        d: dict[str, Any] = {
            "bbox": [round(v, 2) for v in self.bbox.as_list()],
            "score": round(self.score, 4),
            "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.landmarks],
            "pose": {"yaw": round(self.pose.yaw, 1), "pitch": round(self.pose.pitch, 1),
                     "roll": round(self.pose.roll, 1)},
            "quality": {"sharpness": round(self.quality.sharpness, 1),
                        "brightness": round(self.quality.brightness, 1),
                        "face_size": round(self.quality.face_size, 1)},
            "quality_filter": self.quality_filter.value,
            "refusal_reasons": [r.value for r in self.refusal_reasons],
        }
        if include_embedding and self.embedding is not None:
            d["embedding"] = [float(v) for v in self.embedding]
        return d


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """The decision rule a comparison or search used, and what it stands for.

    ``threshold``: the lowest cosine score declared a match. ``max_fmr``: the false-match rate it stands
    for, per comparison of two different people (read off the calibration named ``calibration`` under
    ``policy``: ``worst-group`` takes the strictest threshold any audited group needs, and ``limited_by``
    names the curve that set it). For searches limited by a false-positive identification rate,
    ``max_fpir`` is the chance asked for that a search for someone who is NOT in the collection returns
    any candidate, and ``max_fmr`` the per-comparison rate that gives it with ``collection_size`` faces.
    ``extrapolated``: the threshold lies beyond what the calibration data measure (fewer than 10
    impostor pairs above it) and comes from the fitted tail.
    """

    threshold: float
    max_fmr: float
    policy: str
    extrapolated: bool
    limited_by: str
    calibration: str
    max_fpir: float | None = None
    collection_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": round(self.threshold, 6), "max_fmr": self.max_fmr, "max_fpir": self.max_fpir,
                "collection_size": self.collection_size, "extrapolated": self.extrapolated,
                "policy": self.policy, "limited_by": self.limited_by, "calibration": self.calibration}


@dataclass(frozen=True, slots=True, eq=False)
class Comparison:
    """The result of comparing two faces.

    ``score`` is the cosine similarity of the two embeddings. ``fmr`` is the false-match rate at that
    score: the share of pairs of *different* people in the calibration data that score at least this
    high (under the worst-group policy, the highest such share of any audited group). A small ``fmr``
    means two strangers rarely look this alike. ``fmr_extrapolated`` is True when fewer than 10
    calibration pairs scored this high, so the rate comes from the fitted tail, not a count.

    ``match`` is ``score >= operating_point.threshold``, the score whose false-match rate is
    ``operating_point.max_fmr``: the decision is made at a false-match rate, never at a raw similarity.
    """

    score: float
    fmr: float
    fmr_extrapolated: bool
    match: bool
    operating_point: OperatingPoint
    face_a: Face
    face_b: Face
    #: where the compare is recorded in the signed log (``seq``, ``hash``); None when nothing was recorded
    log_entry: dict[str, Any] | None = None

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    @property
    def max_fmr(self) -> float:
        return self.operating_point.max_fmr

    @property
    def calibration(self) -> str:
        return self.operating_point.calibration

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "fmr": self.fmr,
            "fmr_extrapolated": self.fmr_extrapolated,
            "match": self.match,
            **self.operating_point.to_dict(),
            "face_a": self.face_a.to_dict(),
            "face_b": self.face_b.to_dict(),
            **({"log_entry": dict(self.log_entry)} if self.log_entry is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class Match:
    """One stored face found by a search.

    ``score`` is the cosine similarity to the searched face; ``fmr`` the false-match rate at that score
    (how often two different people score this high), ``fmr_extrapolated`` as in :class:`Comparison`.
    """

    face_id: str
    external_image_id: str | None
    person_id: str | None
    score: float
    fmr: float
    fmr_extrapolated: bool
    bbox: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"face_id": self.face_id, "external_image_id": self.external_image_id,
                "person_id": self.person_id, "score": round(self.score, 6), "fmr": self.fmr,
                "fmr_extrapolated": self.fmr_extrapolated, "bbox": [round(v, 2) for v in self.bbox]}


class SearchMode(enum.StrEnum):
    """What a search is for.

    ``IDENTIFY`` (the default): an automatic decision; only stored faces above the strict search threshold
    (the max-FPIR operating point) are returned, as ``matches``. ``INVESTIGATE``: a short ranked list of
    ``candidates`` above the collection's lead floor, for a person to review; a candidate is a lead, never
    a match.
    """

    IDENTIFY = "identify"
    INVESTIGATE = "investigate"

    @classmethod
    def parse(cls, value: SearchMode | str) -> SearchMode:
        return _parse_choice(cls, value, str(value).lower(), "search mode")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One lead of an investigation search: a stored face ranked by its score, and what that score means.

    ``rank`` is 1 for the best-scoring candidate. ``fmr`` is the false-match rate at ``score`` (the share
    of pairs of different people in the calibration data scoring at least this high); ``fmr_extrapolated``
    is True when fewer than 10 calibration pairs scored this high, so the rate comes from the fitted tail,
    not a count. ``expected_strangers`` is ``collection_size x fmr``: how many of the faces searched would
    be expected to score this high if none of them were the searched person. Near 1 or above, the score
    alone does not single this face out; well below 1, strangers rarely score this high. ``meaning`` says
    all of this in one sentence. A candidate is never a match: a person must review it.

    ``review_item_id``: the review item this lead became (the collection's policy requires review), else
    None. Where the policy does not disclose identities before review, ``face_id``, ``external_image_id``
    and ``person_id`` are None and ``bbox`` empty: the searcher sees ranks and scores, the reviewer who.
    """

    rank: int
    face_id: str | None
    external_image_id: str | None
    person_id: str | None
    score: float
    fmr: float
    fmr_extrapolated: bool
    expected_strangers: float
    meaning: str
    bbox: tuple[float, ...]
    review_item_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "face_id": self.face_id, "external_image_id": self.external_image_id,
                "person_id": self.person_id, "score": round(self.score, 6), "fmr": self.fmr,
                "fmr_extrapolated": self.fmr_extrapolated, "expected_strangers": self.expected_strangers,
                "meaning": self.meaning, "bbox": [round(v, 2) for v in self.bbox],
                "review_item_id": self.review_item_id}


@dataclass(frozen=True, slots=True)
class PolicyFloor:
    """The collection policy's floor on an identification's operating point (docs/identification.md,
    "Policies"): the loosest ``max_fpir`` / per-comparison ``max_fmr`` a search of it may use (None: no
    floor of that kind). ``applied``: the search gave no rate and the default was looser than the floor, so
    it ran at the floor (a search that asks for a looser rate is refused instead)."""

    max_fpir: float | None
    max_fmr: float | None
    applied: bool

    def to_dict(self) -> dict[str, Any]:
        return {"max_fpir": self.max_fpir, "max_fmr": self.max_fmr, "applied": self.applied}


@dataclass(frozen=True, slots=True, eq=False)
class SearchResult:
    """What one searched face found, best first, and in which ``mode``.

    ``identify``: ``matches`` are the stored faces whose score reaches ``operating_point.threshold``, at most
    ``max_results``. ``collection_size`` is the number of faces searched: with N faces, a search for someone
    absent returns a false match with probability about N x max_fmr (the ``max_fpir`` of the operating
    point when the search was limited that way).

    ``investigate``: ``matches`` is empty; ``candidates`` are up to ``max_candidates`` ranked leads scoring
    at least the collection's lead floor (``operating_point``: its ``max_fmr`` is the floor's per-comparison
    false-match rate), each labelled with what its score means among ``collection_size`` faces. They must
    be reviewed by a person before anything is done (:data:`LEAD_NOTICE`).

    ``face`` is the searched face (``None`` when searching by a stored face id).
    """

    matches: tuple[Match, ...]
    operating_point: OperatingPoint
    collection_size: int
    face: Face | None = None
    face_id: str | None = None
    mode: SearchMode = SearchMode.IDENTIFY
    candidates: tuple[Candidate, ...] = ()
    max_candidates: int | None = None
    policy_floor: PolicyFloor | None = None  # identify: the collection policy's floor, when it sets one
    #: the search's id (one per search: every face of a search by image shares it; review items name it)
    search_id: str | None = None
    #: where the search is recorded in the signed log (``seq``, ``hash``); None when nothing was recorded
    log_entry: dict[str, Any] | None = None

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    @property
    def max_fmr(self) -> float:
        return self.operating_point.max_fmr

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape (docs/cli.md, ``search --json``): ``mode``, then ``matches`` (identify) or
        ``candidates``, ``max_candidates``, ``lead_floor_fmr`` and ``notice`` (investigate), the operating
        point and ``collection_size``."""
        d: dict[str, Any] = {"mode": self.mode.value}
        if self.mode is SearchMode.INVESTIGATE:
            d.update(candidates=[c.to_dict() for c in self.candidates], max_candidates=self.max_candidates,
                     lead_floor_fmr=self.operating_point.max_fmr, notice=LEAD_NOTICE)
        else:
            d["matches"] = [m.to_dict() for m in self.matches]
        d.update(self.operating_point.to_dict(), collection_size=self.collection_size,
                 policy_floor=None if self.policy_floor is None else self.policy_floor.to_dict())
        if self.face is not None:
            d["searched_face"] = self.face.to_dict()
        if self.face_id is not None:
            d["searched_face_id"] = self.face_id
        if self.search_id is not None:
            d["search_id"] = self.search_id
        if self.log_entry is not None:
            d["log_entry"] = dict(self.log_entry)
        return d


@dataclass(frozen=True, slots=True)
class EnrolmentCheck:
    """How a face indexed for a person was checked against that person's faces already stored
    (docs/collections.md, "Enrolment").

    ``existing_faces``: how many stored faces of ``person_id`` the new face was compared with (0: a new
    person, nothing to compare). ``checked``: False when the caller turned the check off
    (``match_check=False``, ``--no-match-check``); the result and the log say so. ``max_fmr``: the
    per-comparison false-match rate the new face had to match at, and ``threshold`` its score under the
    collection's calibration; ``best_score`` / ``best_face_id``: the person's best-scoring stored face.
    ``passed``: the face was given to the person (no faces to compare, check off, or ``best_score`` at least
    ``threshold``). ``bbox``: which face of the image was checked. ``reason`` says it in one sentence.
    """

    person_id: str
    bbox: tuple[float, ...]
    checked: bool
    existing_faces: int
    max_fmr: float
    threshold: float | None
    best_score: float | None
    best_face_id: str | None
    passed: bool

    @property
    def reason(self) -> str:
        who = f"person {self.person_id!r}"
        if not self.checked:
            return f"not checked against {who}'s stored faces: the match check was turned off"
        if self.existing_faces == 0 or self.best_score is None or self.threshold is None:
            return f"{who} had no stored face to compare with: this is their first"
        verdict = "matches" if self.passed else "does not match"
        return (f"the face {verdict} {who}: best score {self.best_score:.3f} against their face {self.best_face_id} "
                f"(of {self.existing_faces}), threshold {self.threshold:.3f} (false-match rate {self.max_fmr:g} "
                f"per comparison)")

    def to_dict(self) -> dict[str, Any]:
        return {"person_id": self.person_id, "bbox": [round(v, 2) for v in self.bbox], "checked": self.checked,
                "existing_faces": self.existing_faces,
                "max_fmr": self.max_fmr, "threshold": None if self.threshold is None else round(self.threshold, 6),
                "best_score": None if self.best_score is None else round(self.best_score, 6),
                "best_face_id": self.best_face_id, "passed": self.passed, "reason": self.reason}

    def to_record(self) -> dict[str, Any]:
        """The fields for the signed log's ``faces_indexed`` record: :meth:`to_dict` without the face box
        (the log holds no biometric data)."""
        d = self.to_dict()
        del d["bbox"]
        return d


@dataclass(frozen=True, slots=True, eq=False)
class IndexResult:
    """What indexing one image did.

    ``indexed``: the stored faces (each a dict of :meth:`facelens.store.StoredFace.to_dict`);
    ``unindexed``: faces found but refused, each with its reasons; ``already_indexed``: the same image was
    indexed before under the same external id, and ``indexed`` lists the faces stored then;
    ``faces_over_limit``: faces detected beyond ``EngineConfig.max_faces_per_image``, left out unexamined;
    ``enrolment``: indexed for a person, how each face offered to them was checked against their stored
    faces (empty otherwise).
    """

    indexed: tuple[dict[str, Any], ...]
    unindexed: tuple[Face, ...]
    already_indexed: bool
    faces_over_limit: int = 0
    enrolment: tuple[EnrolmentCheck, ...] = ()  # indexed for a person: how each face was checked against theirs

    def to_dict(self) -> dict[str, Any]:
        return {"indexed": list(self.indexed), "unindexed": [f.to_dict() for f in self.unindexed],
                "already_indexed": self.already_indexed, "faces_over_limit": self.faces_over_limit,
                "enrolment": [c.to_dict() for c in self.enrolment]}


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """What ``describe_collection`` reports."""

    name: str
    face_count: int
    person_count: int
    model_name: str
    model_sha256: str
    index_factory: str
    created: str
    calibration: str = ""
    generation: str = ""  # the collection's identity: another one after it is deleted and re-created
    lead_floor_fmr: float | None = None  # the false-match rate an investigation's candidates must reach
    policy: Mapping[str, Any] | None = None  # the collection's policy (CollectionPolicy.to_dict())
    vector_store: str = "faiss"  # where its vectors are: faiss, milvus-lite, milvus://HOST:PORT (docs/scale-out.md)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "face_count": self.face_count, "person_count": self.person_count,
                "model_name": self.model_name, "model_sha256": self.model_sha256,
                "index_factory": self.index_factory, "created": self.created, "calibration": self.calibration,
                "generation": self.generation, "lead_floor_fmr": self.lead_floor_fmr,
                "policy": None if self.policy is None else dict(self.policy), "vector_store": self.vector_store}
