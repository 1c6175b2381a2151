"""Error rates with confidence intervals, measured from embeddings: verification, demographics, 1:N search.

Every function takes plain arrays: ``embeddings`` (n, d) float32, L2-normalised (score = dot product,
higher = more alike); ``subjects`` (n,) str, who each image shows; ``groups`` group column -> (n,) str
label of each image (``''`` = unknown). Every result is a frozen dataclass whose ``to_dict()`` is JSON-able
(no NaN or infinity: an undefined number is ``None``); nothing here prints.

Conventions, stated once:

- A pair *matches* at threshold ``t`` when its score is ``>= t``. The false-match rate (FMR) is the share
  of impostor pairs (two different people) that match; the false non-match rate (FNMR) the share of
  genuine pairs (two photos of one person) that do not.
- All-pairs statistics are histograms over the bins of :mod:`facelens.calibration.table` (``N_BINS``
  bins of width ``BIN_WIDTH`` over [-1, 1]), computed in row blocks, never as an (n, n) matrix. A
  threshold is resolved to its bin: a score in the same bin as ``t`` counts as at or above ``t``. FMR is
  read conservatively (as :class:`~facelens.calibration.table.ScoreCalibration` reads it) and FNMR
  optimistically, by at most one bin (1e-4 of score).
- A rate is ``k`` events in ``n`` trials with an exact (Clopper-Pearson) interval. The interval assumes
  independent trials; pairs are not independent (every photo takes part in many pairs, every person in
  many photos), so the true uncertainty is wider than the interval. NIST IR 8280 states the same caveat.
- An FMR below ``1 / n`` (one false match among all the pairs there are) cannot be measured from ``n``
  pairs: such values are reported as not measurable, never extrapolated here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from ..calibration.table import BIN_WIDTH, N_BINS, SCORE_LO, score_bins
from ..errors import InvalidArgumentError

__all__ = [
    "DEFAULT_FMRS",
    "DEFAULT_FPIRS",
    "DemographicDifferentials",
    "DetCurve",
    "FalseMatchExperiment",
    "FalseMatchPoint",
    "FpirCheck",
    "FpirCheckPoint",
    "GalleryGrowthPoint",
    "GroupDifferentials",
    "GroupHistograms",
    "GroupIdentification",
    "Identification",
    "IdentificationPoint",
    "LabelDifferential",
    "LfwAccuracy",
    "NearDuplicates",
    "PairHistograms",
    "Rate",
    "RateRatio",
    "StrangerPair",
    "TarAtFmr",
    "Verification",
    "binomial_ci",
    "demographic_differentials",
    "det_curve",
    "false_match_experiment",
    "find_near_duplicates",
    "fpir_check",
    "fmr_at",
    "fnmr_at",
    "identification",
    "lfw_accuracy",
    "pair_histograms",
    "tar_at_fmr",
    "threshold_for_fmr",
    "verification",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Progress = Callable[[int, int], None]

DEFAULT_FMRS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_FPIRS = (0.1, 0.03, 0.01, 0.003, 0.001)

IMPOSTOR_UNIT = "comparisons of two different people"
GENUINE_UNIT = "comparisons of two photos of the same person"
FALSE_MATCH = "were wrongly declared a match"
FALSE_NON_MATCH = "were wrongly rejected"
TRUE_MATCH = "were correctly accepted"
NONMATED_UNIT = "searches for people not in the gallery"
MATED_UNIT = "searches for people enrolled in the gallery"

# Counts derived from a target rate are floored after this relative slack, so that e.g. 1e-5 * 100,000
# allows one pair despite floating-point rounding.
_RATE_SLACK = 1e-9


# ---------------------------------------------------------------------------------------------------
# Rates and intervals


def binomial_ci(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a rate of ``k`` events in ``n`` trials.

    ``k = 0`` gives a lower bound of 0 and ``k = n`` an upper bound of 1 (each then has the full
    one-sided ``(1 - confidence) / 2`` tail). ``n = 0`` returns ``(0.0, 1.0)``: no trials, no information.
    """
    if not 0.0 < confidence < 1.0:
        raise InvalidArgumentError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")
    if n < 0 or not 0 <= k <= n:
        raise InvalidArgumentError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import beta  # the audit alone needs scipy: imported when first used

    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _about(x: float) -> str:
    """``x`` to two significant digits with thousands separators (81,004 -> '81,000')."""
    if x >= 100:
        digits = int(math.floor(math.log10(x))) - 1
        return f"{round(x, -digits):,.0f}"
    if x >= 10:
        return f"{round(x):,d}"
    return f"{x:.2g}"


def _percent(v: float) -> str:
    text = f"{100 * v:.3g}" if v < 0.99 else f"{100 * v:.4g}"
    if text == "100" and v < 1.0:
        text = ">99.99"
    return f"{text}%"


@dataclass(frozen=True, slots=True)
class Rate:
    """``k`` events in ``n`` trials, with an exact confidence interval (:func:`binomial_ci`).

    ``unit`` names the trials in plain words ("comparisons of two different people") and ``event`` what
    happened in the ``k`` of them ("were wrongly declared a match"); ``note`` carries a caveat the reader
    must see. ``value`` is ``k / n``, or None when ``n = 0``.
    """

    k: int
    n: int
    unit: str = "trials"
    event: str = ""
    confidence: float = 0.95
    note: str = ""
    ci_low: float = field(init=False)
    ci_high: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "n", int(self.n))
        low, high = binomial_ci(self.k, self.n, confidence=self.confidence)
        object.__setattr__(self, "ci_low", low)
        object.__setattr__(self, "ci_high", high)

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    def plain(self) -> str:
        """The rate in words a non-engineer can read.

        "about 1 in 81,000 comparisons of two different people were wrongly declared a match (1,080 of
        87,500,000)"; "3 of 120 searches ... (2.5%)"; with ``k = 0``, the upper end of the interval.
        """
        event = f" {self.event}" if self.event else ""
        if self.n == 0:
            return f"not measured: there were no {self.unit}"
        if self.k == 0:
            return (f"none of {self.n:,} {self.unit}{event} (so the rate is below about 1 in "
                    f"{_about(1 / self.ci_high)}, at {self.confidence:.0%} confidence)")
        v = self.k / self.n
        if v >= 0.01:
            return f"{self.k:,} of {self.n:,} {self.unit}{event} ({_percent(v)})"
        return f"about 1 in {_about(1 / v)} {self.unit}{event} ({self.k:,} of {self.n:,})"

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "confidence": self.confidence, "unit": self.unit, "event": self.event, "note": self.note,
                "plain": self.plain()}


def _jsonable(v: Any) -> Any:
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if isinstance(v, Mapping):
        return {str(key): _jsonable(x) for key, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fields_dict(obj: Any) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(obj, f.name)) for f in fields(obj) if not f.name.startswith("_")}


# ---------------------------------------------------------------------------------------------------
# Input checks


def _as_embeddings(embeddings: npt.ArrayLike, what: str = "embeddings") -> F32:
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise InvalidArgumentError(f"{what} must be (n, d), got shape {emb.shape}")
    return emb


def _str_labels(values: npt.ArrayLike, n: int, what: str) -> npt.NDArray[np.str_]:
    arr = np.asarray(values).astype(str)
    if arr.shape != (n,):
        raise InvalidArgumentError(f"{what}: expected one entry per image ({n},), got shape {arr.shape}")
    return arr


def _codes(values: npt.ArrayLike, n: int, what: str) -> I64:
    _, inv = np.unique(_str_labels(values, n, what), return_inverse=True)
    return inv.astype(np.int64).reshape(n)


def _encode_labels(values: npt.ArrayLike, n: int, what: str) -> tuple[tuple[str, ...], I64]:
    """Sorted known labels and each image's label index, -1 for unknown (``''``)."""
    uniq, inv = np.unique(_str_labels(values, n, what), return_inverse=True)
    labels = [str(u) for u in uniq]
    codes = inv.astype(np.int64).reshape(n)
    if "" in labels:
        u = labels.index("")
        codes = np.where(codes == u, -1, codes - (codes > u))
        labels.remove("")
    return tuple(labels), codes


def _hist(h: npt.ArrayLike, what: str) -> I64:
    arr = np.asarray(h, dtype=np.int64)
    if arr.shape != (N_BINS,):
        raise InvalidArgumentError(f"{what} must be a ({N_BINS},) histogram over score bins, got {arr.shape}")
    return arr


def _edge(idx: int) -> float:
    """Score at the lower edge of bin ``idx``."""
    return round(SCORE_LO + idx * BIN_WIDTH, 4)


def _allowed(rate: float, n: int) -> int:
    """How many of ``n`` trials a rate of at most ``rate`` allows."""
    return int(math.floor(rate * n * (1 + _RATE_SLACK)))


# ---------------------------------------------------------------------------------------------------
# Pair histograms


@dataclass(frozen=True, slots=True, eq=False)
class GroupHistograms:
    """Score histograms of one group column (``sex``, ``race``...), per label.

    ``labels``: the known labels, sorted; ``n_images[i]`` images carry ``labels[i]`` and ``n_unknown``
    carry none. ``genuine[i]``: (N_BINS,) genuine pairs whose two images both carry ``labels[i]``.
    ``cross_impostor[i, j]``: (N_BINS,) impostor pairs with one image in ``labels[i]`` and the other in
    ``labels[j]`` (symmetric; the diagonal holds the impostor pairs within one label).
    """

    column: str
    labels: tuple[str, ...]
    n_images: tuple[int, ...]
    n_unknown: int
    genuine: I64
    cross_impostor: I64

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise InvalidArgumentError(f"group {self.column!r} has no label {label!r}; it has {self.labels}") from None

    def genuine_of(self, label: str) -> I64:
        return np.asarray(self.genuine[self.index(label)], dtype=np.int64)

    def impostor_of(self, label: str) -> I64:
        i = self.index(label)
        return np.asarray(self.cross_impostor[i, i], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "labels": list(self.labels), "n_images": list(self.n_images),
                "n_unknown": self.n_unknown,
                "genuine": {lab: _sparse(self.genuine[i]) for i, lab in enumerate(self.labels)},
                "cross_impostor": [[_sparse(self.cross_impostor[i, j]) for j in range(len(self.labels))]
                                   for i in range(len(self.labels))]}


def _sparse(h: I64) -> dict[str, list[int]]:
    nz = np.flatnonzero(h)
    return {"bins": nz.tolist(), "counts": h[nz].tolist()}


@dataclass(frozen=True, slots=True, eq=False)
class PairHistograms:
    """Score histograms of every unordered pair of images ``i < j``.

    ``genuine`` and ``impostor``: (N_BINS,) int64 counts over all pairs of the same / of different
    subjects. ``groups``: one :class:`GroupHistograms` per group column. ``n_excluded``: pairs set aside
    from every histogram (see :func:`find_near_duplicates`). ``to_dict()`` lists the non-empty bins only.
    """

    genuine: I64
    impostor: I64
    n_images: int
    n_excluded: int
    groups: dict[str, GroupHistograms]

    @property
    def n_genuine(self) -> int:
        return int(self.genuine.sum())

    @property
    def n_impostor(self) -> int:
        return int(self.impostor.sum())

    def to_dict(self) -> dict[str, Any]:
        return {"n_images": self.n_images, "n_excluded": self.n_excluded, "n_genuine": self.n_genuine,
                "n_impostor": self.n_impostor, "bin_width": BIN_WIDTH, "score_lo": SCORE_LO,
                "genuine": _sparse(self.genuine), "impostor": _sparse(self.impostor),
                "groups": {k: g.to_dict() for k, g in self.groups.items()}}


def _pair_keys(pairs: npt.ArrayLike | None, n: int) -> I64:
    """Sorted unique keys ``i * n + j`` (``i < j``) of index pairs (m, 2); pairs ``i == j`` are dropped."""
    if pairs is None:
        return np.zeros(0, dtype=np.int64)
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise InvalidArgumentError(f"pair indices must be in [0, {n})")
    i, j = arr.min(axis=1), arr.max(axis=1)
    keep = i != j
    return np.unique(i[keep] * n + j[keep])


def pair_histograms(
    embeddings: npt.ArrayLike,
    subjects: npt.ArrayLike,
    groups: Mapping[str, npt.ArrayLike] | None = None,
    *,
    exclude: npt.ArrayLike | None = None,
    chunk: int = 512,
    progress: Progress | None = None,
) -> PairHistograms:
    """Score histograms of all genuine and impostor pairs, overall and per group label.

    ``exclude``: (m, 2) index pairs left out of every histogram, such as :attr:`NearDuplicates.pairs`.
    Every unordered pair is scored once, in blocks of ``chunk`` rows (memory about ``chunk * n * 30``
    bytes). Within-label histograms take pairs whose two images both carry the label; pairs with an
    unknown label count only overall.
    """
    emb = _as_embeddings(embeddings)
    n = emb.shape[0]
    if chunk < 1:
        raise InvalidArgumentError(f"chunk must be >= 1, got {chunk}")
    subj = _codes(subjects, n, "subjects")
    columns = [(str(name), *_encode_labels(values, n, f"group {name!r}")) for name, values in (groups or {}).items()]
    excluded = _pair_keys(exclude, n)
    gen = np.zeros(N_BINS, dtype=np.int64)
    imp = np.zeros(N_BINS, dtype=np.int64)
    within = [np.zeros(len(labels) * N_BINS, dtype=np.int64) for _, labels, _ in columns]
    cross = [np.zeros(len(labels) ** 2 * N_BINS, dtype=np.int64) for _, labels, _ in columns]
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = np.arange(start, stop)
        keep = np.arange(start, n)[None, :] > rows[:, None]  # columns j > row i
        lo, hi = np.searchsorted(excluded, [start * n, stop * n])
        if hi > lo:
            keys = excluded[lo:hi]
            keep[keys // n - start, keys % n - start] = False
        bins = score_bins(emb[start:stop] @ emb[start:].T)
        same = subj[start:stop, None] == subj[None, start:]
        is_gen, is_imp = keep & same, keep & ~same
        gen_bins, imp_bins = bins[is_gen], bins[is_imp]
        gen += np.bincount(gen_bins, minlength=N_BINS)
        imp += np.bincount(imp_bins, minlength=N_BINS)
        for (_, labels, codes), w, c in zip(columns, within, cross, strict=True):
            n_lab = len(labels)
            if n_lab == 0:
                continue
            a = np.broadcast_to(codes[start:stop, None], bins.shape)
            b = np.broadcast_to(codes[None, start:], bins.shape)
            ai, bi = a[is_imp], b[is_imp]
            ok = (ai >= 0) & (bi >= 0)
            c += np.bincount((ai[ok] * n_lab + bi[ok]) * N_BINS + imp_bins[ok], minlength=n_lab * n_lab * N_BINS)
            ag, bg = a[is_gen], b[is_gen]
            ok = (ag >= 0) & (ag == bg)
            w += np.bincount(ag[ok] * N_BINS + gen_bins[ok], minlength=n_lab * N_BINS)
        if progress is not None:
            progress(stop, n)
    out: dict[str, GroupHistograms] = {}
    for (name, labels, codes), w, c in zip(columns, within, cross, strict=True):
        n_lab = len(labels)
        c3 = c.reshape(n_lab, n_lab, N_BINS)
        sym = c3 + c3.transpose(1, 0, 2)
        d = np.arange(n_lab)
        sym[d, d] -= c3[d, d]
        out[name] = GroupHistograms(
            column=name, labels=labels, n_images=tuple(int((codes == i).sum()) for i in range(n_lab)),
            n_unknown=int((codes < 0).sum()), genuine=w.reshape(n_lab, N_BINS), cross_impostor=sym)
    return PairHistograms(genuine=gen, impostor=imp, n_images=n, n_excluded=int(excluded.size), groups=out)


@dataclass(frozen=True, slots=True, eq=False)
class NearDuplicates:
    """Pairs of different subjects that score so high they are taken for one person photographed twice.

    ``pairs``: (m, 2) int64 image indices ``i < j``, highest score first; ``scores``: (m,) their scores.
    On data without reliable identity labels (UTKFace: every image is its own "subject") such pairs are
    mostly labelling errors, not false matches; :attr:`rule` states how they are set aside.
    """

    pairs: I64
    scores: F64
    min_score: float

    @property
    def rule(self) -> str:
        return (f"pairs of different subjects scoring at least {self.min_score:g} are taken to be two photos "
                f"of the same person (a labelling error, not a false match) and are left out of every statistic")

    def to_dict(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "count": int(len(self.scores)), "rule": self.rule,
                "pairs": self.pairs.tolist(), "scores": [round(float(s), 6) for s in self.scores]}


def find_near_duplicates(
    embeddings: npt.ArrayLike, subjects: npt.ArrayLike, min_score: float = 0.9, *, chunk: int = 512,
) -> NearDuplicates:
    """Impostor pairs (different ``subjects``) scoring at least ``min_score``; pass them to
    :func:`pair_histograms` as ``exclude``."""
    emb = _as_embeddings(embeddings)
    n = emb.shape[0]
    subj = _codes(subjects, n, "subjects")
    found_i: list[I64] = []
    found_j: list[I64] = []
    found_s: list[F64] = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        s = emb[start:stop] @ emb[start:].T
        hit = (s >= min_score) & (np.arange(start, n)[None, :] > np.arange(start, stop)[:, None])
        hit &= subj[start:stop, None] != subj[None, start:]
        r, c = np.nonzero(hit)
        found_i.append(r.astype(np.int64) + start)
        found_j.append(c.astype(np.int64) + start)
        found_s.append(s[r, c].astype(np.float64))
    i = np.concatenate(found_i) if found_i else np.zeros(0, dtype=np.int64)
    j = np.concatenate(found_j) if found_j else np.zeros(0, dtype=np.int64)
    sc = np.concatenate(found_s) if found_s else np.zeros(0, dtype=np.float64)
    order = np.argsort(-sc, kind="stable")
    return NearDuplicates(pairs=np.stack([i[order], j[order]], axis=1).reshape(-1, 2), scores=sc[order],
                          min_score=float(min_score))


# ---------------------------------------------------------------------------------------------------
# Verification (1:1)


def fmr_at(impostor: npt.ArrayLike, threshold: float, *, confidence: float = 0.95) -> Rate:
    """False-match rate at ``threshold``: impostor pairs in its bin or above, over all impostor pairs."""
    h = _hist(impostor, "impostor")
    b = int(score_bins(float(threshold)))
    return Rate(int(h[b:].sum()), int(h.sum()), unit=IMPOSTOR_UNIT, event=FALSE_MATCH, confidence=confidence)


def fnmr_at(genuine: npt.ArrayLike, threshold: float, *, confidence: float = 0.95) -> Rate:
    """False non-match rate at ``threshold``: genuine pairs in bins below its bin, over all genuine pairs."""
    h = _hist(genuine, "genuine")
    b = int(score_bins(float(threshold)))
    return Rate(int(h[:b].sum()), int(h.sum()), unit=GENUINE_UNIT, event=FALSE_NON_MATCH, confidence=confidence)


def _at_least(h: I64) -> I64:
    return np.cumsum(h[::-1])[::-1]


def threshold_for_fmr(impostor: npt.ArrayLike, target: float) -> float | None:
    """The lowest bin edge at which the measured FMR is at most ``target``.

    None when ``target`` is below the data's resolution ``1 / n_impostor`` (not measurable: fewer pairs
    than one false match at that rate needs), or when even the top bin holds more pairs than allowed.
    """
    h = _hist(impostor, "impostor")
    allowed = _allowed(target, int(h.sum()))
    if allowed < 1:
        return None
    idx = int(np.searchsorted(-_at_least(h), -allowed, side="left"))
    return _edge(idx) if idx < N_BINS else None


@dataclass(frozen=True, slots=True)
class DetCurve:
    """Detection error trade-off: FNMR against FMR as the threshold moves.

    One point per distinct threshold reached by a log-spaced set of target FMRs (``points_per_decade``)
    from 1 down to ``1 / n_impostor``; ``thresholds`` ascend, so ``fmr`` descends.
    """

    label: str
    n_genuine: int
    n_impostor: int
    thresholds: tuple[float, ...]
    fmr: tuple[float, ...]
    fnmr: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def det_curve(genuine: npt.ArrayLike, impostor: npt.ArrayLike, *, label: str = "",
              points_per_decade: int = 20) -> DetCurve:
    """The DET curve of one pair of histograms (empty when either holds no pair)."""
    hg, hi = _hist(genuine, "genuine"), _hist(impostor, "impostor")
    ng, ni = int(hg.sum()), int(hi.sum())
    if ng == 0 or ni == 0:
        return DetCurve(label=label, n_genuine=ng, n_impostor=ni, thresholds=(), fmr=(), fnmr=())
    at_least = _at_least(hi)
    below = np.concatenate([[0], np.cumsum(hg)[:-1]])  # genuine pairs in bins below each bin
    floor_decade = math.log10(1.0 / ni)
    steps = np.arange(0, math.floor(-floor_decade * points_per_decade) + 1)
    targets = np.concatenate([10.0 ** (-steps / points_per_decade), [1.0 / ni]])
    allowed = np.floor(targets * ni * (1 + _RATE_SLACK))
    idx = np.unique(np.searchsorted(-at_least, -allowed, side="left"))
    idx = idx[idx < N_BINS]
    return DetCurve(label=label, n_genuine=ng, n_impostor=ni,
                    thresholds=tuple(_edge(int(i)) for i in idx),
                    fmr=tuple(float(v) for v in at_least[idx] / ni),
                    fnmr=tuple(float(v) for v in below[idx] / ng))


@dataclass(frozen=True, slots=True)
class TarAtFmr:
    """True-accept rate at the threshold that gives ``target_fmr``.

    ``measurable`` is False when ``target_fmr`` is below ``1 / n_impostor`` (then ``threshold``, ``fmr``
    and ``tar`` are None and ``note`` says why). ``fmr`` is the rate actually measured at ``threshold``
    (at most the target). The interval on ``tar`` covers the genuine pairs' sampling only: the threshold
    itself is estimated from the impostor pairs.
    """

    target_fmr: float
    measurable: bool
    threshold: float | None
    fmr: Rate | None
    tar: Rate | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def tar_at_fmr(genuine: npt.ArrayLike, impostor: npt.ArrayLike, fmrs: Sequence[float] = DEFAULT_FMRS, *,
               confidence: float = 0.95) -> tuple[TarAtFmr, ...]:
    """True-accept rate (1 - FNMR) at each target FMR, from genuine and impostor histograms."""
    hg, hi = _hist(genuine, "genuine"), _hist(impostor, "impostor")
    ng, ni = int(hg.sum()), int(hi.sum())
    out = []
    for f in fmrs:
        thr = threshold_for_fmr(hi, f)
        if thr is None:
            need = math.ceil(1 / f * (1 - _RATE_SLACK))
            note = (f"not measurable: an FMR of {f:g} needs at least {need:,} comparisons of two different "
                    f"people; there are {ni:,}")
            out.append(TarAtFmr(target_fmr=f, measurable=False, threshold=None, fmr=None, tar=None, note=note))
            continue
        b = int(score_bins(thr))
        tar = Rate(int(hg[b:].sum()), ng, unit=GENUINE_UNIT, event=TRUE_MATCH, confidence=confidence)
        out.append(TarAtFmr(target_fmr=f, measurable=True, threshold=thr, fmr=fmr_at(hi, thr, confidence=confidence),
                            tar=tar, note="" if ng else "no genuine pairs"))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class LfwAccuracy:
    """LFW View 2 protocol: per fold, the threshold that is most accurate on the other folds, applied to it.

    ``mean`` and ``std`` (population standard deviation, as LFW results are usually quoted) over folds.
    """

    mean: float
    std: float
    folds: tuple[float, ...]
    thresholds: tuple[float, ...]
    n_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def lfw_accuracy(scores: npt.ArrayLike, same: npt.ArrayLike, fold: npt.ArrayLike) -> LfwAccuracy:
    """Cross-validated verification accuracy over protocol pairs.

    ``scores``: (m,) score of each pair (``-inf`` for a pair with a missing face: never accepted);
    ``same``: (m,) bool; ``fold``: (m,) fold number. The candidate thresholds are the training scores
    (and +inf, accept nothing); a tie in training accuracy goes to the lowest threshold.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(same, dtype=bool).reshape(-1)
    f = np.asarray(fold).reshape(-1)
    if not len(s) == len(y) == len(f) or len(s) == 0:
        raise InvalidArgumentError("scores, same and fold must be non-empty and of one length")
    if np.isnan(s).any():
        raise InvalidArgumentError("scores must not be NaN (use -inf for a pair that cannot be scored)")
    folds = np.unique(f)
    if len(folds) < 2:
        raise InvalidArgumentError("need at least two folds")
    accs, thrs = [], []
    for k in folds:
        train, test = f != k, f == k
        cands = np.append(np.unique(s[train]), np.inf)
        pos = np.sort(s[train & y])
        neg = np.sort(s[train & ~y])
        correct = (len(pos) - np.searchsorted(pos, cands, side="left")) + np.searchsorted(neg, cands, side="left")
        t = float(cands[int(np.argmax(correct))])
        accs.append(float(((s[test] >= t) == y[test]).mean()))
        thrs.append(t)
    return LfwAccuracy(mean=float(np.mean(accs)), std=float(np.std(accs)), folds=tuple(accs),
                       thresholds=tuple(thrs), n_pairs=len(s))


@dataclass(frozen=True, slots=True)
class Verification:
    """Verification at one operating threshold, with the DET curves and the TAR-at-FMR table.

    ``det_by_group[column][label]``: DET of the pairs within the label.
    """

    threshold: float
    fmr: Rate
    fnmr: Rate
    det: DetCurve
    tar_at_fmr: tuple[TarAtFmr, ...]
    det_by_group: dict[str, dict[str, DetCurve]]
    lfw: LfwAccuracy | None = None

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def verification(hists: PairHistograms, threshold: float, *, fmrs: Sequence[float] = DEFAULT_FMRS,
                 lfw: LfwAccuracy | None = None, confidence: float = 0.95) -> Verification:
    """Everything 1:1 the report shows, from :func:`pair_histograms`."""
    by_group = {name: {lab: det_curve(g.genuine_of(lab), g.impostor_of(lab), label=lab) for lab in g.labels}
                for name, g in hists.groups.items()}
    return Verification(threshold=float(threshold), fmr=fmr_at(hists.impostor, threshold, confidence=confidence),
                        fnmr=fnmr_at(hists.genuine, threshold, confidence=confidence),
                        det=det_curve(hists.genuine, hists.impostor, label="all"),
                        tar_at_fmr=tar_at_fmr(hists.genuine, hists.impostor, fmrs, confidence=confidence),
                        det_by_group=by_group, lfw=lfw)


# ---------------------------------------------------------------------------------------------------
# Demographic differentials


@dataclass(frozen=True, slots=True)
class RateRatio:
    """Highest over lowest rate across labels (NIST IR 8280's measure of a demographic differential).

    Only labels with at least ``min_pairs`` trials enter (the others are listed in ``excluded_labels``).
    ``kind``: ``"estimate"`` (both rates non-zero; ``ratio_low``/``ratio_high`` is a conservative range
    from the two intervals), ``"lower_bound"`` (the lowest label had no events: the point estimate is
    infinite, and ``ratio`` = highest rate / upper end of the lowest label's interval is what the data
    supports), or ``"undefined"`` (no label had any event, or fewer than two labels qualify).
    ``explanation`` says which, in words.
    """

    metric: str
    kind: str
    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None
    highest_label: str | None
    lowest_label: str | None
    min_pairs: int
    excluded_labels: tuple[str, ...]
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


MEASURED_ERRORS = 10
"""A label with at least this many errors has a measured rate however few its pairs: it takes part in a
ratio even below the ``min_pairs`` that a label with few or no errors needs."""


def _ratio(metric: str, rates: Mapping[str, Rate], min_pairs: int) -> RateRatio:
    eligible = {lab: r for lab, r in rates.items() if r.n >= min_pairs or (r.n and r.k >= MEASURED_ERRORS)}
    excluded = tuple(lab for lab in rates if lab not in eligible)
    base: dict[str, Any] = {"metric": metric, "min_pairs": min_pairs, "excluded_labels": excluded}
    left_out = (f"; left out for having fewer than {min_pairs:,} pairs and fewer than {MEASURED_ERRORS} errors: "
                f"{', '.join(excluded)}" if excluded else "")
    if len(eligible) < 2:
        return RateRatio(kind="undefined", ratio=None, ratio_low=None, ratio_high=None, highest_label=None,
                         lowest_label=None, explanation=f"fewer than two labels have the {min_pairs:,} pairs (or "
                         f"{MEASURED_ERRORS} errors) needed to compare their {metric} rates{left_out}", **base)
    hi_lab = max(eligible, key=lambda lab: eligible[lab].k / eligible[lab].n)
    lo_lab = min(eligible, key=lambda lab: eligible[lab].k / eligible[lab].n)
    hi, lo = eligible[hi_lab], eligible[lo_lab]
    if hi.k == 0:
        return RateRatio(kind="undefined", ratio=None, ratio_low=None, ratio_high=None, highest_label=hi_lab,
                         lowest_label=lo_lab, explanation=f"no label had a single {metric} at this threshold, so no "
                         f"ratio can be measured{left_out}", **base)
    hv = hi.k / hi.n
    if lo.k == 0:
        bound = hv / lo.ci_high
        return RateRatio(
            kind="lower_bound", ratio=bound, ratio_low=bound, ratio_high=None, highest_label=hi_lab,
            lowest_label=lo_lab,
            explanation=(f"{lo_lab} had no {metric} in {lo.n:,} pairs, so its rate is at most {lo.ci_high:.2g} "
                         f"({lo.confidence:.0%} upper bound) and the {metric} rate of {hi_lab} is at least "
                         f"{bound:.3g} times that of {lo_lab} (the point estimate is infinite){left_out}"), **base)
    lv = lo.k / lo.n
    r_low, r_high = hi.ci_low / lo.ci_high, hi.ci_high / lo.ci_low
    return RateRatio(kind="estimate", ratio=hv / lv, ratio_low=r_low, ratio_high=r_high, highest_label=hi_lab,
                     lowest_label=lo_lab,
                     explanation=(f"the {metric} rate of {hi_lab} is {hv / lv:.3g} times that of {lo_lab} (between "
                                  f"{r_low:.3g} and {r_high:.3g} by the two intervals){left_out}"), **base)


@dataclass(frozen=True, slots=True)
class LabelDifferential:
    """One label's error rates at the operating threshold: ``fmr`` over the impostor pairs within the label,
    ``fnmr`` over its genuine pairs. ``breaks_target``: the measured FMR is above the target;
    ``clearly_breaks_target``: even the lower end of its interval is."""

    label: str
    n_images: int
    fmr: Rate
    fnmr: Rate
    breaks_target: bool
    clearly_breaks_target: bool

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


@dataclass(frozen=True, slots=True)
class GroupDifferentials:
    """One group column's differentials. ``cross_fmr[i][j]``: FMR of impostor pairs with one image in
    ``labels[i]`` and the other in ``labels[j]`` (the diagonal = within-label FMR)."""

    column: str
    labels: tuple[str, ...]
    n_unknown: int
    per_label: tuple[LabelDifferential, ...]
    cross_fmr: tuple[tuple[Rate, ...], ...]
    fmr_ratio: RateRatio
    fnmr_ratio: RateRatio
    breaking_labels: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


@dataclass(frozen=True, slots=True)
class DemographicDifferentials:
    """Per group column: how error rates at one threshold differ between labels (NIST IR 8280).

    ``min_impostor_pairs`` / ``min_genuine_pairs``: the fewest pairs a label needs to enter the FMR /
    FNMR ratio.
    """

    threshold: float
    target_fmr: float
    overall_fmr: Rate
    overall_fnmr: Rate
    min_impostor_pairs: int
    min_genuine_pairs: int
    columns: tuple[GroupDifferentials, ...]

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def demographic_differentials(
    hists: PairHistograms,
    threshold: float,
    target_fmr: float,
    *,
    min_impostor_pairs: int | None = None,
    min_genuine_pairs: int = 100,
    confidence: float = 0.95,
) -> DemographicDifferentials:
    """Per-label FMR and FNMR at ``threshold``, the cross-label FMR matrix, and max/min ratios.

    ``min_impostor_pairs`` defaults to ``ceil(10 / target_fmr)``: a label whose FMR equalled the target
    would then show about 10 false matches, enough to be told apart from none. Labels with fewer pairs are
    reported but left out of the ratio. A label "breaks the target" when its measured FMR exceeds
    ``target_fmr``.
    """
    if not 0.0 < target_fmr < 1.0:
        raise InvalidArgumentError(f"target_fmr must be in (0, 1), got {target_fmr}")
    min_imp = math.ceil(10 / target_fmr * (1 - _RATE_SLACK)) if min_impostor_pairs is None else int(min_impostor_pairs)
    b = int(score_bins(float(threshold)))
    columns = []
    for name, g in hists.groups.items():
        n_lab = len(g.labels)
        cross = tuple(
            tuple(Rate(int(g.cross_impostor[i, j, b:].sum()), int(g.cross_impostor[i, j].sum()), unit=IMPOSTOR_UNIT,
                       event=FALSE_MATCH, confidence=confidence) for j in range(n_lab))
            for i in range(n_lab))
        per_label = []
        for i, lab in enumerate(g.labels):
            fmr = cross[i][i]
            fnmr = fnmr_at(g.genuine[i], threshold, confidence=confidence)
            per_label.append(LabelDifferential(
                label=lab, n_images=g.n_images[i], fmr=fmr, fnmr=fnmr,
                breaks_target=fmr.n > 0 and fmr.k / fmr.n > target_fmr,
                clearly_breaks_target=fmr.ci_low > target_fmr))
        columns.append(GroupDifferentials(
            column=name, labels=g.labels, n_unknown=g.n_unknown, per_label=tuple(per_label), cross_fmr=cross,
            fmr_ratio=_ratio("false match", {d.label: d.fmr for d in per_label}, min_imp),
            fnmr_ratio=_ratio("false non-match", {d.label: d.fnmr for d in per_label}, min_genuine_pairs),
            breaking_labels=tuple(d.label for d in per_label if d.breaks_target)))
    return DemographicDifferentials(
        threshold=float(threshold), target_fmr=float(target_fmr),
        overall_fmr=fmr_at(hists.impostor, threshold, confidence=confidence),
        overall_fnmr=fnmr_at(hists.genuine, threshold, confidence=confidence),
        min_impostor_pairs=min_imp, min_genuine_pairs=int(min_genuine_pairs), columns=tuple(columns))


# ---------------------------------------------------------------------------------------------------
# Identification (1:N)

IDENTIFICATION_DEFINITIONS = {
    "design": ("every subject with two or more images enrols one of them in the gallery and searches with "
               "another (a mated search); subjects with one image are split at random: half are enrolled as "
               "distractors, half search a gallery they are not in (non-mated searches); further images of a "
               "subject are not used"),
    "rank": "a mate's rank is 1 + the number of gallery entries scoring strictly higher than the mate",
    "fpir": ("false-positive identification rate: the share of non-mated searches whose top candidate scores "
             "at or above the threshold"),
    "threshold": ("for a target FPIR f over m non-mated searches, the lowest threshold at which at most "
                  "floor(f * m) of them return a candidate; a target below 1 / m is not measurable"),
    "fnir": ("false-negative identification rate (NIST's definition): the share of mated searches whose mate "
             "is not in the candidate list, i.e. not among the top R candidates or scoring below the threshold"),
}


@dataclass(frozen=True, slots=True)
class IdentificationPoint:
    """One operating point of 1:N search, set by a target FPIR on the non-mated searches."""

    target_fpir: float
    measurable: bool
    threshold: float | None
    fpir: Rate | None
    fnir: Rate | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


@dataclass(frozen=True, slots=True)
class GalleryGrowthPoint:
    """Search at a fixed threshold in a random subset of ``gallery_size`` gallery entries (the subsets
    are nested). ``fnir`` and ``rank1`` count the mated searches whose mate is in the subset."""

    gallery_size: int
    fpir: Rate
    fnir: Rate
    rank1: Rate

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


@dataclass(frozen=True, slots=True)
class GroupIdentification:
    """One label's searches (by the probe image's label): ``fpir[i]`` / ``fnir[i]`` at
    ``Identification.points[i]``'s threshold (None where that point is not measurable)."""

    label: str
    rank1: Rate
    fpir: tuple[Rate | None, ...]
    fnir: tuple[Rate | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


@dataclass(frozen=True, slots=True)
class Identification:
    """1:N search results; ``definitions`` states the design and each measure in words."""

    n_images: int
    n_gallery: int
    n_distractors: int
    n_mated: int
    n_nonmated: int
    n_unused: int
    rank: int
    rank1: Rate
    rank_n: Rate
    points: tuple[IdentificationPoint, ...]
    growth_threshold: float | None
    growth: tuple[GalleryGrowthPoint, ...]
    groups: dict[str, tuple[GroupIdentification, ...]]
    rng_seed: int
    definitions: dict[str, str] = field(default_factory=lambda: dict(IDENTIFICATION_DEFINITIONS))

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def _fpir_threshold(nonmated_top: F64, target: float) -> float | None:
    m = len(nonmated_top)
    allowed = _allowed(target, m)
    if allowed < 1:
        return None
    if allowed >= m:
        return float(nonmated_top.min())
    desc = np.sort(nonmated_top)[::-1]
    return float(np.nextafter(desc[allowed], np.inf))


def _default_sizes(n_gallery: int) -> list[int]:
    sizes = [s for s in (100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000) if s < n_gallery]
    return sizes + [n_gallery] if n_gallery else []


def identification(
    embeddings: npt.ArrayLike,
    subjects: npt.ArrayLike,
    groups: Mapping[str, npt.ArrayLike] | None = None,
    *,
    rng_seed: int = 0,
    gallery_sizes: Sequence[int] | None = None,
    fpirs: Sequence[float] = DEFAULT_FPIRS,
    rank: int = 10,
    threshold: float | None = None,
    confidence: float = 0.95,
    chunk: int = 512,
) -> Identification:
    """Open-set 1:N search on a gallery built from the data (see ``IDENTIFICATION_DEFINITIONS``).

    Reports rank-1 and rank-``rank`` hit rates, FNIR at each target FPIR (candidate list: the top
    ``rank`` entries at or above the threshold), FPIR and FNIR at ``threshold`` as the gallery grows
    (``gallery_sizes``, default 100, 300, 1,000...; the full gallery is always added; ``threshold`` defaults to the
    FPIR-0.01 point), and per-label breakdowns by the probe image's label. The split is random but fixed
    by ``rng_seed``.
    """
    emb = _as_embeddings(embeddings)
    n = emb.shape[0]
    if rank < 1:
        raise InvalidArgumentError(f"rank must be >= 1, got {rank}")
    subj = _codes(subjects, n, "subjects")
    columns = [(str(name), *_encode_labels(values, n, f"group {name!r}")) for name, values in (groups or {}).items()]
    rng = np.random.default_rng(rng_seed)
    order = rng.permutation(n)
    order = order[np.argsort(subj[order], kind="stable")]  # grouped by subject, random within
    starts = np.flatnonzero(np.r_[True, subj[order][1:] != subj[order][:-1]]) if n else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, n])
    multi = starts[counts >= 2]
    enrolled, mated = order[multi], order[multi + 1]
    single = order[starts[counts == 1]]
    single = single[rng.permutation(len(single))]
    nonmated, distractors = single[: len(single) // 2], single[len(single) // 2 :]
    gallery = np.concatenate([enrolled, distractors])
    perm = rng.permutation(len(gallery))
    gallery = gallery[perm]
    position = np.empty(len(gallery), dtype=np.int64)
    position[perm] = np.arange(len(gallery))
    mate_col = position[: len(enrolled)]
    n_mated, n_non, n_gal = len(mated), len(nonmated), len(gallery)
    sizes = sorted({int(s) for s in (gallery_sizes if gallery_sizes is not None else _default_sizes(n_gal))})
    if any(s < 1 or s > n_gal for s in sizes):
        raise InvalidArgumentError(f"gallery sizes must be in [1, {n_gal}], got {sizes}")
    # searched at every requested size and at the full gallery (the last column), in one pass
    sizes = all_sizes = sorted(set(sizes) | {n_gal}) if n_gal else []
    size_idx = np.asarray(all_sizes, dtype=np.int64) - 1

    gal = emb[gallery]
    mate_score = np.full(n_mated, -np.inf)
    mate_rank = np.full(n_mated, n_gal + 1, dtype=np.int64)
    rank_at_size = np.zeros((n_mated, len(all_sizes)), dtype=np.int64)
    top_at_size = np.full((n_non, max(len(all_sizes), 1)), -np.inf)
    for start in range(0, n_mated, chunk):
        stop = min(start + chunk, n_mated)
        s = emb[mated[start:stop]] @ gal.T
        ms = s[np.arange(stop - start), mate_col[start:stop]]
        higher = s > ms[:, None]
        mate_score[start:stop] = ms
        rank_at_size[start:stop] = 1 + np.cumsum(higher, axis=1)[:, size_idx]
        mate_rank[start:stop] = rank_at_size[start:stop, -1]
    for start in range(0, n_non if n_gal else 0, chunk):
        stop = min(start + chunk, n_non)
        s = emb[nonmated[start:stop]] @ gal.T
        top_at_size[start:stop] = np.maximum.accumulate(s, axis=1)[:, size_idx]
    nonmated_top = top_at_size[:, -1]

    def fnir_rate(sel: npt.NDArray[np.bool_], t: float) -> Rate:
        miss = (mate_rank[sel] > rank) | (mate_score[sel] < t)
        return Rate(int(miss.sum()), int(sel.sum()), unit=MATED_UNIT, confidence=confidence,
                    event=f"missed their mate (not in the top {rank} at or above the threshold)")

    def fpir_rate(sel: npt.NDArray[np.bool_], t: float) -> Rate:
        return Rate(int((nonmated_top[sel] >= t).sum()), int(sel.sum()), unit=NONMATED_UNIT, confidence=confidence,
                    event="returned a candidate at or above the threshold")

    all_mated = np.ones(n_mated, dtype=bool)
    all_non = np.ones(n_non, dtype=bool)
    points = []
    for f in fpirs:
        t = _fpir_threshold(nonmated_top, f) if n_non else None
        if t is None:
            points.append(IdentificationPoint(
                target_fpir=f, measurable=False, threshold=None, fpir=None, fnir=None,
                note=f"not measurable: an FPIR of {f:g} needs at least {math.ceil(1 / f * (1 - _RATE_SLACK)):,} "
                     f"non-mated searches; there are {n_non:,}"))
            continue
        points.append(IdentificationPoint(target_fpir=f, measurable=True, threshold=t, fpir=fpir_rate(all_non, t),
                                          fnir=fnir_rate(all_mated, t)))
    if threshold is None:
        usable = [p for p in points if p.threshold is not None]
        preferred = [p for p in usable if math.isclose(p.target_fpir, 0.01)]
        threshold = (preferred or usable)[0].threshold if usable else None
    growth = []
    if threshold is not None:
        for size in sizes:
            c = all_sizes.index(size)
            in_subset = mate_col < size
            miss = (rank_at_size[in_subset, c] > rank) | (mate_score[in_subset] < threshold)
            growth.append(GalleryGrowthPoint(
                gallery_size=size,
                fpir=Rate(int((top_at_size[:, c] >= threshold).sum()), n_non, unit=NONMATED_UNIT,
                          event="returned a candidate at or above the threshold", confidence=confidence),
                fnir=Rate(int(miss.sum()), int(in_subset.sum()), unit=MATED_UNIT, confidence=confidence,
                          event=f"missed their mate (not in the top {rank} at or above the threshold)"),
                rank1=Rate(int((rank_at_size[in_subset, c] == 1).sum()), int(in_subset.sum()), unit=MATED_UNIT,
                           event="found their mate at rank 1", confidence=confidence)))
    by_group: dict[str, tuple[GroupIdentification, ...]] = {}
    for name, labels, codes in columns:
        rows = []
        for i, lab in enumerate(labels):
            sel_m, sel_n = codes[mated] == i, codes[nonmated] == i
            rows.append(GroupIdentification(
                label=lab,
                rank1=Rate(int((mate_rank[sel_m] == 1).sum()), int(sel_m.sum()), unit=MATED_UNIT,
                           event="found their mate at rank 1", confidence=confidence),
                fpir=tuple(None if p.threshold is None else fpir_rate(sel_n, p.threshold) for p in points),
                fnir=tuple(None if p.threshold is None else fnir_rate(sel_m, p.threshold) for p in points)))
        by_group[name] = tuple(rows)
    return Identification(
        n_images=n, n_gallery=n_gal, n_distractors=len(distractors), n_mated=n_mated, n_nonmated=n_non,
        n_unused=n - n_gal - n_mated - n_non, rank=rank,
        rank1=Rate(int((mate_rank == 1).sum()), n_mated, unit=MATED_UNIT, event="found their mate at rank 1",
                   confidence=confidence),
        rank_n=Rate(int((mate_rank <= rank).sum()), n_mated, unit=MATED_UNIT, confidence=confidence,
                    event=f"found their mate in the top {rank}"),
        points=tuple(points), growth_threshold=threshold, growth=tuple(growth), groups=by_group, rng_seed=rng_seed)


# ---------------------------------------------------------------------------------------------------
# False-match experiment (strangers searched against strangers)


@dataclass(frozen=True, slots=True)
class StrangerPair:
    """A high-scoring pair of a probe and a gallery entry known to be different people, for a person to
    look at. Image paths are set when the caller passed them."""

    probe_index: int
    gallery_index: int
    score: float
    probe_id: str
    gallery_id: str
    probe_image: str | None = None
    gallery_image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


@dataclass(frozen=True, slots=True)
class FalseMatchPoint:
    """One operating point of the experiment.

    ``probes_with_false_match``: probes with at least one stranger at or above ``threshold``;
    ``false_candidates``: all such (probe, stranger) pairs; ``by_group[column][label]``: the first rate
    among that label's probes; ``mates_found``: probes whose own second photo scores at or above
    ``threshold`` (None without second photos): the cost of the strictness.
    """

    label: str
    threshold: float
    description: str
    probes_with_false_match: Rate
    false_candidates: int
    by_group: dict[str, dict[str, Rate]]
    mates_found: Rate | None

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


@dataclass(frozen=True, slots=True)
class FalseMatchExperiment:
    """Each probe searched against a gallery of people it is not (the ACLU's 2018 test: 535 members of
    Congress against 25,000 arrest photos at 80% similarity gave 28 false matches).

    ``n_excluded_pairs``: (probe, gallery) pairs set aside as the same person (equal ids, or listed in
    ``exclude``); ``top_pairs``: the highest-scoring stranger pairs, highest first.
    """

    n_probes: int
    n_gallery: int
    n_excluded_pairs: int
    points: tuple[FalseMatchPoint, ...]
    top_pairs: tuple[StrangerPair, ...]

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def false_match_experiment(
    probe_emb: npt.ArrayLike,
    probe_ids: npt.ArrayLike,
    probe_groups: Mapping[str, npt.ArrayLike] | None,
    gallery_emb: npt.ArrayLike,
    gallery_ids: npt.ArrayLike,
    operating_points: Sequence[tuple[str, float, str]],
    *,
    mate_emb: npt.ArrayLike | None = None,
    exclude: Collection[tuple[str, str]] | None = None,
    top_n: int = 20,
    probe_paths: Sequence[str] | None = None,
    gallery_paths: Sequence[str] | None = None,
    confidence: float = 0.95,
    chunk: int = 512,
) -> FalseMatchExperiment:
    """Search every probe against a gallery of strangers and count who gets a candidate anyway.

    ``probe_emb`` (p, d) and ``gallery_emb`` (g, d): float32, L2-normalised. ``operating_points``:
    ``(label, threshold, description)``, e.g. ``("aclu", 0.80, "...")``. A gallery entry whose id equals
    the probe's, or whose ``(probe_id, gallery_id)`` is in ``exclude`` (known overlaps: the same person in
    both sets), is never counted. ``mate_emb`` (p, d): each probe's second photo; a row of zeros (or
    non-finite values) means the probe has none.
    """
    probes = _as_embeddings(probe_emb, "probe_emb")
    gal = _as_embeddings(gallery_emb, "gallery_emb")
    p, g = probes.shape[0], gal.shape[0]
    if p and g and probes.shape[1] != gal.shape[1]:
        raise InvalidArgumentError(f"probe and gallery embeddings differ in width: {probes.shape[1]} vs {gal.shape[1]}")
    pid = _str_labels(probe_ids, p, "probe_ids")
    gid = _str_labels(gallery_ids, g, "gallery_ids")
    columns = [(str(name), *_encode_labels(values, p, f"group {name!r}"))
               for name, values in (probe_groups or {}).items()]
    ops = [(str(label), float(t), str(desc)) for label, t, desc in operating_points]
    for paths, count, what in ((probe_paths, p, "probe_paths"), (gallery_paths, g, "gallery_paths")):
        if paths is not None and len(paths) != count:
            raise InvalidArgumentError(f"{what}: expected {count} paths, got {len(paths)}")
    gallery_cols: dict[str, list[int]] = {}
    for j, x in enumerate(gid.tolist()):
        gallery_cols.setdefault(x, []).append(j)
    also: dict[str, set[str]] = {}
    for a, b in exclude or ():
        also.setdefault(str(a), set()).add(str(b))
    excluded_rows: list[int] = []
    excluded_cols: list[int] = []
    for i, x in enumerate(pid.tolist()):
        for other in {x} | also.get(x, set()):
            cols = gallery_cols.get(other, [])
            excluded_rows.extend([i] * len(cols))
            excluded_cols.extend(cols)
    ex_r = np.asarray(excluded_rows, dtype=np.int64)
    ex_c = np.asarray(excluded_cols, dtype=np.int64)

    best = np.full(p, -np.inf)
    n_candidates = np.zeros((p, len(ops)), dtype=np.int64)
    top_s = np.zeros(0, dtype=np.float64)
    top_r = np.zeros(0, dtype=np.int64)
    top_c = np.zeros(0, dtype=np.int64)
    for start in range(0, p, chunk):
        stop = min(start + chunk, p)
        s = probes[start:stop] @ gal.T
        sel = (ex_r >= start) & (ex_r < stop)
        s[ex_r[sel] - start, ex_c[sel]] = -np.inf
        if g:
            best[start:stop] = s.max(axis=1)
        for k, (_, t, _) in enumerate(ops):
            n_candidates[start:stop, k] = (s >= t).sum(axis=1)
        flat = s.reshape(-1)
        take = min(top_n, flat.size)
        if take:
            idx = np.argpartition(-flat, take - 1)[:take]
            idx = idx[np.isfinite(flat[idx])]
            top_s = np.concatenate([top_s, flat[idx].astype(np.float64)])
            top_r = np.concatenate([top_r, idx // g + start])
            top_c = np.concatenate([top_c, idx % g])
            keep = np.argsort(-top_s, kind="stable")[:top_n]
            top_s, top_r, top_c = top_s[keep], top_r[keep], top_c[keep]

    has_mate = np.zeros(p, dtype=bool)
    mate_score = np.full(p, -np.inf)
    if mate_emb is not None:
        mates = _as_embeddings(mate_emb, "mate_emb")
        if mates.shape != probes.shape:
            raise InvalidArgumentError(f"mate_emb must have the probes' shape {probes.shape}, got {mates.shape}")
        has_mate = np.isfinite(mates).all(axis=1) & (np.abs(mates).sum(axis=1) > 0)
        mate_score[has_mate] = (probes[has_mate] * mates[has_mate]).sum(axis=1)

    points = []
    for k, (label, t, desc) in enumerate(ops):
        hit = best >= t
        event = "had at least one stranger at or above the threshold"
        by_group = {name: {lab: Rate(int(hit[codes == i].sum()), int((codes == i).sum()), unit="people searched",
                                     event=event, confidence=confidence) for i, lab in enumerate(labels)}
                    for name, labels, codes in columns}
        mates_found = None
        if mate_emb is not None:
            mates_found = Rate(int((mate_score[has_mate] >= t).sum()), int(has_mate.sum()), confidence=confidence,
                               unit="people searched with a second photo of themselves",
                               event="still matched that second photo")
        points.append(FalseMatchPoint(
            label=label, threshold=t, description=desc,
            probes_with_false_match=Rate(int(hit.sum()), p, unit="people searched", event=event, confidence=confidence),
            false_candidates=int(n_candidates[:, k].sum()), by_group=by_group, mates_found=mates_found))
    top = tuple(StrangerPair(
        probe_index=int(r), gallery_index=int(c), score=round(float(s), 6), probe_id=str(pid[r]),
        gallery_id=str(gid[c]),
        probe_image=None if probe_paths is None else str(probe_paths[int(r)]),
        gallery_image=None if gallery_paths is None else str(gallery_paths[int(c)]))
        for s, r, c in zip(top_s, top_r, top_c, strict=True))
    return FalseMatchExperiment(n_probes=p, n_gallery=g, n_excluded_pairs=int(len(ex_r)), points=tuple(points),
                                top_pairs=top)


# ---------------------------------------------------------------------------------------------------
# Honesty check: the FPIR the calibration predicts for a search vs the FPIR measured on real searches


@dataclass(frozen=True, slots=True)
class FpirCheckPoint:
    """One gallery size of :func:`fpir_check`.

    ``threshold``: the search's threshold at this size (from the operating point), set so that the
    calibration's upper bound on the per-comparison rate is ``max_fmr``. ``predicted_fpir``: the FPIR the
    calibration's point estimate of the FMR at that threshold predicts, ``1 - (1 - FMR)^N``;
    ``bound_fpir``: the same from the upper bound (at most the target by construction). ``measured``:
    non-mated searches that returned any candidate at or above the threshold. ``consistent``: the
    prediction lies within ``factor`` of the measured rate's 95% interval.
    """

    gallery_size: int
    threshold: float
    max_fmr: float
    extrapolated: bool
    predicted_fpir: float
    bound_fpir: float
    measured: Rate
    consistent: bool

    @property
    def ratio(self) -> float | None:
        """predicted / measured (None when nothing was measured)."""
        v = self.measured.value
        return self.predicted_fpir / v if v else None

    def to_dict(self) -> dict[str, Any]:
        return dict(_fields_dict(self), ratio=self.ratio)


@dataclass(frozen=True, slots=True)
class FpirCheck:
    """Predicted vs measured FPIR at a search's operating point, gallery size by gallery size."""

    max_fpir: float
    searches: int
    factor: float
    duplicates_set_aside: int
    points: tuple[FpirCheckPoint, ...]
    description: str = ""

    @property
    def all_consistent(self) -> bool:
        return all(p.consistent for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return dict(_fields_dict(self), all_consistent=self.all_consistent)


def fpir_check(
    probes: npt.ArrayLike,
    gallery: npt.ArrayLike,
    sizes: Sequence[int],
    operating_point: Callable[[int], tuple[float, float, bool]],
    fmr_estimate: Callable[[float], float],
    *,
    probe_labels: npt.ArrayLike | None = None,
    gallery_labels: npt.ArrayLike | None = None,
    exclude: Collection[tuple[str, str]] = (),
    max_fpir: float = 0.003,
    duplicates_above: float = 0.9,
    factor: float = 3.0,
    seed: int = 0,
    chunk: int = 256,
    description: str = "",
) -> FpirCheck:
    """Search every probe (people who are **not** in the gallery) against galleries of ``sizes`` faces
    (random subsets of ``gallery``, drawn once per size with ``seed``; a size at or above the gallery's
    is the whole gallery) by exact search, and count the searches that return any candidate at the
    search's threshold for that size: the measured FPIR, beside the FPIR the calibration predicts.

    ``operating_point(N)`` -> (threshold, max_fmr, extrapolated) for a collection of N faces;
    ``fmr_estimate(score)``: the calibration's point estimate of the FMR at a score. A gallery row with
    the probe's label (``probe_labels`` / ``gallery_labels``: the same person) is left out of that probe's
    search, as is a row whose label is paired with the probe's in ``exclude`` ((probe label, gallery
    label): known to be the same person), and any row scoring ``duplicates_above`` or more (the same
    photo; counted).
    """
    p = _as_embeddings(probes, "probes")
    g = _as_embeddings(gallery, "gallery")
    if p.shape[1] != g.shape[1]:
        raise InvalidArgumentError(f"probes have dimension {p.shape[1]}, the gallery {g.shape[1]}")
    if len(p) == 0 or len(g) == 0:
        raise InvalidArgumentError("fpir_check needs at least one probe and one gallery face")
    if factor < 1.0:
        raise InvalidArgumentError(f"factor must be >= 1, got {factor}")
    pl = None if probe_labels is None else _str_labels(probe_labels, len(p), "probe_labels")
    gl = None if gallery_labels is None else _str_labels(gallery_labels, len(g), "gallery_labels")
    excluded = sorted({(str(a), str(b)) for a, b in exclude})
    if excluded and (pl is None or gl is None):
        raise InvalidArgumentError("exclude needs probe_labels and gallery_labels")
    rng = np.random.default_rng(seed)
    points: list[FpirCheckPoint] = []
    duplicates = 0
    for n_req in sorted({int(s) for s in sizes}):
        if n_req < 1:
            raise InvalidArgumentError(f"gallery sizes must be >= 1, got {n_req}")
        n = min(n_req, len(g))
        sub = np.arange(len(g)) if n == len(g) else np.sort(rng.choice(len(g), size=n, replace=False))
        top = np.full(len(p), -np.inf, np.float32)
        dups_here = 0
        for start in range(0, len(p), chunk):
            stop = min(start + chunk, len(p))
            s = p[start:stop] @ g[sub].T
            if pl is not None and gl is not None:
                s[pl[start:stop, None] == gl[None, sub]] = -np.inf
                for a, b in excluded:
                    rows_a = np.nonzero(pl[start:stop] == a)[0]
                    if rows_a.size:
                        s[np.ix_(rows_a, np.nonzero(gl[sub] == b)[0])] = -np.inf
            dup = s >= duplicates_above
            dups_here += int(dup.sum())
            s[dup] = -np.inf
            top[start:stop] = s.max(axis=1)
        duplicates = max(duplicates, dups_here)
        threshold, max_fmr, extrapolated = operating_point(n)
        k = int((top >= threshold).sum())
        measured = Rate(k, len(p), unit="searches for someone not in the gallery", event="returned a candidate")
        fmr = min(max(fmr_estimate(threshold), 0.0), 1.0)
        predicted = -math.expm1(n * math.log1p(-fmr)) if fmr < 1.0 else 1.0
        bound = -math.expm1(n * math.log1p(-min(max_fmr, 1.0 - 1e-16)))
        consistent = predicted / factor <= measured.ci_high and predicted * factor >= measured.ci_low
        points.append(FpirCheckPoint(gallery_size=n, threshold=float(threshold), max_fmr=float(max_fmr),
                                     extrapolated=bool(extrapolated), predicted_fpir=predicted, bound_fpir=bound,
                                     measured=measured, consistent=consistent))
    return FpirCheck(max_fpir=max_fpir, searches=len(p), factor=factor, duplicates_set_aside=duplicates,
                     points=tuple(points), description=description)
