"""Pydantic models of the HTTP API, split by direction: what clients send (``...In``, ``...Options``) and
what the service answers (``...Out``). Pydantic stays here, at the HTTP boundary; the engine's frozen
dataclasses are turned into these through their ``to_dict()``.

Answer models allow extra keys, so a key the engine adds to a ``to_dict()`` reaches clients unchanged.
Option models forbid them, so a misspelt option is an error rather than silently ignored; each option
model's fields are the engine method's keyword arguments (``engine_kwargs()``), so an engine option
becomes an API option by adding one field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

QualityFilterName = Literal["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"]
SearchModeName = Literal["identify", "investigate"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str | None) -> str | None:
    """A purpose goes into the search log and the reports read from it: no control characters (line
    breaks, escapes, NUL) that could forge or hide lines there."""
    if value is not None and (bad := _CONTROL.search(value)):
        raise ValueError(f"purpose must not contain control characters (found U+{ord(bad.group()):04X})")
    return value


Purpose = Annotated[str | None, AfterValidator(_printable)]

_PURPOSE = Field(default=None, max_length=500, description=(
    "Why this search is made: a case reference or a reason, recorded in the search log. Required unless "
    "the service makes it optional for the collection. No control characters (U+0000-U+001F, U+007F)."))


# -- what clients send -----------------------------------------------------------------------------

class Options(BaseModel):
    """Options of a request; those that are not engine arguments are listed in ``NOT_ENGINE``."""

    model_config = ConfigDict(extra="forbid")
    NOT_ENGINE: ClassVar[frozenset[str]] = frozenset({"purpose", "face_id"})

    def engine_kwargs(self) -> dict[str, Any]:
        """The options to pass to the engine method as keyword arguments (unset ones left out)."""
        return self.model_dump(exclude_none=True, exclude=set(self.NOT_ENGINE))


class DetectOptions(Options):
    max_faces: int | None = Field(default=None, ge=1, le=1000, description="Keep only the N largest faces.")
    quality_filter: QualityFilterName | None = Field(
        default=None, description="Which faces get refusal reasons (default: the engine's, AUTO).")


class CompareOptions(Options):
    max_fmr: float | None = Field(default=None, gt=0, le=1, description=(
        "Declare a match when the false-match rate is at most this (default 1e-5)."))
    purpose: Purpose = _PURPOSE


class IndexOptions(Options):
    external_image_id: str | None = Field(default=None, min_length=1, max_length=255, description=(
        "Your id for the image; indexing the same image under the same id again stores nothing new."))
    person_id: str | None = Field(default=None, min_length=1, max_length=128, description=(
        "Give every indexed face to this person (created if needed): 1-128 letters, digits, _ . - :"))
    max_faces: int | None = Field(default=None, ge=1, le=1000, description="Index at most the N largest faces.")
    quality_filter: QualityFilterName | None = Field(default=None, description="Refuse faces below this quality.")


class SearchOptions(Options):
    """What a search is for (``mode``) and how it decides what to return. ``identify`` (the default): matches
    at most one of ``max_fpir`` (the default, 0.003), ``max_fmr`` and ``min_score``, at most ``max_results``.
    ``investigate``: up to ``max_candidates`` ranked leads above the collection's lead floor, for a person
    to review (the identify options are refused)."""

    mode: SearchModeName = Field(default="identify", description=(
        "identify: matches at a strict, measured rate (automatic decisions); investigate: a ranked list of "
        "candidates, leads that must be reviewed by a person before anything is done."))
    max_results: int | None = Field(default=None, ge=1, le=4096, description=(
        "identify: at most this many matches, best first (default 10)."))
    max_candidates: int | None = Field(default=None, ge=1, le=4096, description=(
        "investigate: at most this many candidates, best first (default 10)."))
    max_fpir: float | None = Field(default=None, gt=0, lt=1, description=(
        "identify: match so that a search for someone NOT in the collection returns anyone at most this "
        "often, whatever its size (default 0.003)."))
    max_fmr: float | None = Field(default=None, gt=0, le=1, description=(
        "identify, instead: a stored face matches when the false-match rate of its score is at most this."))
    min_score: float | None = Field(default=None, ge=-1, le=1, description=(
        "identify, instead: match at this raw cosine score; the false-match rate it stands for is reported."))
    purpose: Purpose = _PURPOSE


class SearchImageOptions(SearchOptions):
    all_faces: bool = Field(default=False, description="Search with every face of the image, not just the largest.")


class SearchFaceIn(SearchOptions):
    face_id: str = Field(min_length=1, max_length=128, description="A face of the collection to search with.")


class CollectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, description=(
        "1-128 letters, digits, _ . -, not starting with . or -"))


class PersonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person_id: str = Field(min_length=1, max_length=128)


class FaceIdsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    face_ids: list[str] = Field(min_length=1, max_length=4096)


# -- what the service answers ----------------------------------------------------------------------

class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code (docs/service.md lists them).")
    message: str = Field(description="What went wrong, for people.")


class ErrorOut(BaseModel):
    error: ErrorBody


class HealthOut(Out):
    status: Literal["ok"]


class VersionOut(Out):
    facelens: str
    api: str
    model_name: str
    model_sha256: str
    embedding_size: int


class PoseOut(Out):
    yaw: float
    pitch: float
    roll: float


class QualityOut(Out):
    sharpness: float
    brightness: float
    face_size: float


class FaceOut(Out):
    bbox: list[float] = Field(description="[left, top, right, bottom] in pixels of the upright image")
    score: float = Field(description="Detector confidence that this is a face")
    landmarks: list[list[float]]
    pose: PoseOut
    quality: QualityOut
    quality_filter: str
    refusal_reasons: list[str]


class DetectOut(Out):
    faces: list[FaceOut]
    faces_over_limit: int = Field(description="Faces beyond the service's limit per image (the largest are "
                                              "kept), left out")


class LogRef(Out):
    seq: int = Field(description="The search log entry recording this request")
    hash: str


class ComparisonOut(Out):
    """The engine's comparison (docs/cli.md, compare --json) and the log entry that records it."""

    score: float
    fmr: float
    match: bool
    max_fmr: float
    threshold: float
    calibration: str
    face_a: FaceOut
    face_b: FaceOut
    log_entry: LogRef


class CollectionOut(Out):
    name: str
    face_count: int
    person_count: int
    model_name: str
    model_sha256: str
    index_factory: str
    created: str


class CollectionListOut(Out):
    collections: list[str]


class DeletedCollectionOut(Out):
    deleted: str


class StoredFaceOut(Out):
    face_id: str
    external_image_id: str | None
    image_sha256: str
    person_id: str | None
    bbox: list[float]
    score: float
    quality: dict[str, Any]
    created: str


class IndexOut(Out):
    indexed: list[StoredFaceOut]
    unindexed: list[FaceOut]
    already_indexed: bool
    faces_over_limit: int = Field(default=0, description="Faces beyond the service's limit per image, not examined")


class FacePageOut(Out):
    faces: list[StoredFaceOut]
    next_token: str | None


class ActorOut(Out):
    kind: Literal["key", "cli", "python"] = Field(description="An API key, a command-line user, a Python program")
    id: str = Field(description="The key's public id, the user's name, the program's name")
    name: str | None = None


class ReceiptOut(Out):
    """An erasure's receipt (docs/identification.md, "The record"): what was removed, when, by whom."""

    receipt_id: str
    collection: str
    person_id: str | None
    face_ids: list[str] = Field(description="The faces erased (their embeddings and every copy on disk)")
    counts: dict[str, int]
    erased_at: str
    actor: ActorOut | None
    log_entry: LogRef | None = Field(description="The signed log entry recording the erasure")


class DeletedFacesOut(Out):
    deleted: list[str]
    unknown: list[str]
    receipt: ReceiptOut


class PersonOut(Out):
    person_id: str
    faces: int


class PersonListOut(Out):
    persons: list[PersonOut]


class AssociatedOut(Out):
    associated: list[str]
    unknown: list[str]


class DisassociatedOut(Out):
    disassociated: list[str]
    unchanged: list[str]


class ErasedOut(Out):
    deleted_person: str
    deleted_faces: list[str]
    receipt: ReceiptOut


class MatchOut(Out):
    face_id: str
    external_image_id: str | None
    person_id: str | None
    score: float
    fmr: float
    bbox: list[float]


class CandidateOut(Out):
    """One lead of an investigation (docs/identification.md): never a match, to be reviewed by a person."""

    rank: int = Field(description="1 for the best-scoring candidate")
    face_id: str
    external_image_id: str | None
    person_id: str | None
    score: float
    fmr: float = Field(description="False-match rate at this score, per comparison")
    fmr_extrapolated: bool = Field(description="True when the rate comes from the fitted tail, not a count")
    expected_strangers: float = Field(description="collection_size x fmr: strangers expected to score this high "
                                                  "among the faces searched")
    meaning: str = Field(description="What the score means in this collection, in words")
    bbox: list[float]


class _SearchResultOut(Out):
    threshold: float
    max_fmr: float
    collection_size: int
    searched_face: FaceOut | None = None
    searched_face_id: str | None = None


class IdentifyResultOut(_SearchResultOut):
    """An identification (docs/cli.md, search --json): the matches and the operating point."""

    mode: Literal["identify"]
    matches: list[MatchOut] = Field(description="The matches, best first")


class InvestigateResultOut(_SearchResultOut):
    """An investigation (docs/identification.md): ranked candidates, leads to review, never matches."""

    mode: Literal["investigate"]
    candidates: list[CandidateOut] = Field(description="The ranked leads, best first")
    max_candidates: int
    lead_floor_fmr: float = Field(description="The collection's lead floor (a per-comparison false-match rate)")
    notice: str = Field(description="That the candidates are leads a person must review")


SearchResultOut = Annotated[IdentifyResultOut | InvestigateResultOut, Field(discriminator="mode")]
"""The engine's search result, by its ``mode``: ``matches`` (identify) or ``candidates`` (investigate)."""


class SearchImageOut(Out):
    collection: str
    results: list[SearchResultOut] = Field(description="One result per searched face (the largest only, "
                                                       "unless all_faces)")
    faces_over_limit: int = Field(description="With all_faces: faces beyond the service's limit per image "
                                              "(the largest are searched), left out")
    search_id: str = Field(description="The search's id in the signed log (review items name it)")
    log_entry: LogRef


class IdentifyOneOut(IdentifyResultOut):
    collection: str
    search_id: str
    log_entry: LogRef


class InvestigateOneOut(InvestigateResultOut):
    collection: str
    search_id: str
    log_entry: LogRef


SearchOneOut = Annotated[IdentifyOneOut | InvestigateOneOut, Field(discriminator="mode")]
"""One search result (by face id, for persons) with the collection and the log entry that records it."""


class LogEntryOut(Out):
    seq: int
    time: str
    prev_hash: str
    hash: str
    action: str
    key_id: str | None = Field(default=None, description=(
        "The API key that made the request; null for what was done from the command line (a key created or "
        "revoked with `facelens keys`)"))
    actor: ActorOut | None = Field(default=None, description=(
        "Who acted: the key, the command-line user or the Python program; absent in entries from before actors"))


class LogPageOut(Out):
    entries: list[LogEntryOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null at the end")
    head: LogRef | None
