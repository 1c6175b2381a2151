"""Impostor-score curves: measuring them, storing them, and reading false-match rates and thresholds off them.

A calibration profile holds, for one recogniser (bound to its sha256), the histogram of the scores of
*impostor* pairs (two photos of different people) over all the data, and one per audited demographic
group (both photos in the group). From a curve, ``fmr(score)`` is the share of impostor pairs scoring at
least ``score`` and ``threshold(max_fmr)`` the lowest score whose false-match rate is at most ``max_fmr``.

Honest tails: a rate is *measured* only while at least :data:`MEASURED_MIN_PAIRS` impostor pairs score at
or above the threshold. Beyond that, the curve is continued by a fitted exponential tail (log FMR falls
linearly with the score, fitted where the curve is densely measured) and every value read there is
flagged ``extrapolated``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import CalibrationError, InvalidArgumentError

__all__ = [
    "MEASURED_MIN_PAIRS",
    "MIN_GROUP_PAIRS",
    "ImpostorCurve",
    "Policy",
    "ScoreCalibration",
    "build_calibration",
    "fpir_to_fmr",
    "impostor_histogram",
    "load_calibration",
    "score_bins",
]

FORMAT_VERSION = 2
SCORE_LO = -1.0
BIN_WIDTH = 1e-4
N_BINS = int(round(2.0 / BIN_WIDTH))
# Scores exactly on a bin edge (such as a threshold this table returned) must land in the bin that
# starts there, despite the rounding of (score - lo) / width in floating point.
_EDGE_TOLERANCE = 1e-6

MEASURED_MIN_PAIRS = 10
"""A false-match rate is measured while at least this many impostor pairs score at or above the
threshold; with fewer, the count says too little (10 pairs give a 95% interval of about 0.5x to 1.8x)."""

TAIL_FIT_RANGE = (1e-2, 1e-5)
"""The exponential tail is fitted to the curve between these false-match rates, where the shipped data
are densely measured (and, for LFW, unaffected by the few label errors that sit beyond 1e-6)."""

TAIL_FIT_MIN_PAIRS = 100
"""... and where at least this many pairs lie above each fitted point."""

MIN_GROUP_PAIRS = 10_000
"""Groups measured on fewer impostor pairs are kept in the profile but not used by the worst-group
policy: their curve is too coarse to set a threshold with."""

MIN_FMR = 1e-12
"""Rates below this are refused: no data or tail model speaks for them."""

Policy = Literal["worst-group", "overall"]
POLICIES: tuple[Policy, ...] = ("worst-group", "overall")


def score_bins(scores: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Bin index of each score (scores outside [-1, 1] go to the first or last bin)."""
    x = (np.asarray(scores, dtype=np.float64) - SCORE_LO) / BIN_WIDTH + _EDGE_TOLERANCE
    return np.clip(np.floor(x).astype(np.int64), 0, N_BINS - 1)


def fpir_to_fmr(max_fpir: float, gallery_size: int) -> float:
    """The per-comparison false-match rate at which a search of ``gallery_size`` faces for someone who is
    not among them returns any candidate with probability ``max_fpir``: ``1 - (1 - FPIR)^(1/N)``
    (comparisons taken as independent), about FPIR / N."""
    if not (0.0 < max_fpir < 1.0):
        raise InvalidArgumentError(f"max_fpir must be a rate in (0, 1), e.g. 0.003; got {max_fpir}")
    n = max(int(gallery_size), 1)
    return -math.expm1(math.log1p(-max_fpir) / n)


@dataclass(frozen=True, slots=True, eq=False)
class ImpostorCurve:
    """One impostor-score histogram and its fitted tail.

    ``counts[i]`` is the number of impostor pairs whose score falls in
    ``[SCORE_LO + i * BIN_WIDTH, SCORE_LO + (i + 1) * BIN_WIDTH)``. Rates are read conservatively: a
    pair in the same bin as ``score`` counts as scoring at least ``score``. ``fallback_slope`` is used
    when this curve has too few points to fit its own tail (a small group).
    """

    name: str
    counts: npt.NDArray[np.int64]
    fallback_slope: float | None = None
    _at_least: npt.NDArray[np.int64] = field(init=False, repr=False)
    _anchor: int = field(init=False, repr=False)
    _slope: float = field(init=False, repr=False)
    _slope_fitted: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.counts.shape != (N_BINS,):
            raise CalibrationError(f"curve {self.name!r}: expected {N_BINS} bins, got {self.counts.shape}")
        at_least = np.cumsum(self.counts[::-1])[::-1].copy()
        if at_least[0] == 0:
            raise CalibrationError(f"curve {self.name!r} holds no impostor pairs")
        object.__setattr__(self, "_at_least", at_least)
        # the last bin at which MEASURED_MIN_PAIRS pairs still lie at or above (at_least is non-increasing)
        anchor = int(np.searchsorted(-at_least, -MEASURED_MIN_PAIRS, side="right")) - 1
        object.__setattr__(self, "_anchor", max(anchor, 0))
        slope = _fit_tail(at_least)
        object.__setattr__(self, "_slope_fitted", slope is not None)
        if slope is None:
            slope = self.fallback_slope
        if slope is None:
            raise CalibrationError(f"curve {self.name!r}: too few impostor pairs ({self.n_pairs}) to fit its tail")
        object.__setattr__(self, "_slope", slope)

    @property
    def n_pairs(self) -> int:
        """Number of impostor pairs measured."""
        return int(self._at_least[0])

    @property
    def measured_floor(self) -> float:
        """The lowest false-match rate read off the data itself: MEASURED_MIN_PAIRS / n_pairs."""
        return MEASURED_MIN_PAIRS / self.n_pairs

    @property
    def tail_slope(self) -> float:
        """Decades of false-match rate per unit of score beyond the measured part (fitted or borrowed)."""
        return self._slope

    @property
    def tail_fitted(self) -> bool:
        return self._slope_fitted

    def _anchor_point(self) -> tuple[float, float]:
        return SCORE_LO + self._anchor * BIN_WIDTH, float(self._at_least[self._anchor]) / self.n_pairs

    def fmr(self, score: float) -> tuple[float, bool]:
        """False-match rate at ``score`` and whether it is extrapolated (fewer than MEASURED_MIN_PAIRS
        impostor pairs score that high: the rate then comes from the fitted tail, not from the few pairs,
        as the count of so few pairs says little)."""
        b = int(score_bins(float(score)))
        count = int(self._at_least[b])
        if count >= MEASURED_MIN_PAIRS:
            return count / self.n_pairs, False
        s0, f0 = self._anchor_point()
        tail = f0 * 10.0 ** (-self._slope * (SCORE_LO + b * BIN_WIDTH - s0))
        return max(min(tail, f0), MIN_FMR), True  # no tail model speaks for rates below MIN_FMR

    def threshold(self, max_fmr: float) -> tuple[float, bool]:
        """The lowest score whose false-match rate is at most ``max_fmr``, and whether it is extrapolated
        (``max_fmr`` below :attr:`measured_floor`)."""
        if max_fmr >= self.measured_floor:
            # first bin where at_least drops to <= allowed
            idx = int(np.searchsorted(-self._at_least, -max_fmr * self.n_pairs, side="left"))
            return SCORE_LO + idx * BIN_WIDTH, False
        s0, f0 = self._anchor_point()
        tail = s0 + math.log10(f0 / max_fmr) / self._slope
        # on the bin grid, rounded up (and past the measured part), so that fmr(threshold) <= max_fmr
        tail_bin = max(math.ceil((tail - SCORE_LO) / BIN_WIDTH - _EDGE_TOLERANCE), self._anchor + 1)
        return SCORE_LO + tail_bin * BIN_WIDTH, True

    def summary(self) -> dict[str, Any]:
        s0, f0 = self._anchor_point()
        return {"name": self.name, "impostor_pairs": self.n_pairs, "measured_down_to_fmr": self.measured_floor,
                "measured_up_to_score": round(s0, 4), "tail_decades_per_unit_score": round(self._slope, 3),
                "tail_fitted": self._slope_fitted}


def _fit_tail(at_least: npt.NDArray[np.int64]) -> float | None:
    """Slope (decades per unit score, > 0) of log10 FMR against score over TAIL_FIT_RANGE; None when
    fewer than 5 distinct points lie there."""
    n = float(at_least[0])
    rate = at_least / n
    hi, lo = TAIL_FIT_RANGE
    sel = (rate <= hi) & (rate >= lo) & (at_least >= TAIL_FIT_MIN_PAIRS)
    idx = np.nonzero(sel)[0]
    if idx.size == 0:
        return None
    # one point per distinct count (the first bin of each plateau), so flat runs do not weigh in
    keep = idx[np.r_[True, np.diff(at_least[idx]) != 0]]
    if keep.size < 5:
        return None
    x = SCORE_LO + keep * BIN_WIDTH
    y = np.log10(rate[keep])
    slope = -float(np.polyfit(x, y, 1)[0])
    return slope if slope > 0 else None


@dataclass(frozen=True, slots=True, eq=False)
class ScoreCalibration:
    """A calibration profile: the overall impostor curve and one per audited group.

    ``groups`` maps a group name such as ``"lfw:sex=F"`` or ``"utkface:race=Black"`` to its histogram.
    ``fallback_slope``: the tail slope used when the data are too few to fit one (a small calibration set
    borrows it from the model's shipped profile; kept in the file, reported as not fitted).
    The ``worst-group`` policy takes, for a target false-match rate, the highest threshold of the overall
    curve and of every group measured on at least :data:`MIN_GROUP_PAIRS` pairs, so that every audited
    group meets the target; ``overall`` uses the overall curve alone.
    """

    name: str
    model_sha256: str
    counts: npt.NDArray[np.int64]
    meta: dict[str, Any] = field(default_factory=dict)
    groups: Mapping[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    fallback_slope: float | None = None
    overall: ImpostorCurve = field(init=False, repr=False)
    curves: dict[str, ImpostorCurve] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        overall = ImpostorCurve("overall", np.asarray(self.counts, dtype=np.int64), fallback_slope=self.fallback_slope)
        object.__setattr__(self, "overall", overall)
        curves = {g: ImpostorCurve(g, np.asarray(c, dtype=np.int64), fallback_slope=overall.tail_slope)
                  for g, c in sorted(self.groups.items())}
        object.__setattr__(self, "curves", curves)

    @property
    def n_pairs(self) -> int:
        """Number of impostor pairs of the overall curve."""
        return self.overall.n_pairs

    @property
    def resolution(self) -> float:
        """1 / number of impostor pairs of the overall curve."""
        return 1.0 / self.n_pairs

    def policy_curves(self, policy: Policy = "worst-group") -> list[ImpostorCurve]:
        """The curves a policy takes the worst of: the overall one, and the large enough groups."""
        if policy not in POLICIES:
            raise InvalidArgumentError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
        if policy == "overall":
            return [self.overall]
        return [self.overall] + [c for c in self.curves.values() if c.n_pairs >= MIN_GROUP_PAIRS]

    def threshold_detail(self, max_fmr: float, policy: Policy = "worst-group") -> tuple[float, bool, str]:
        """(threshold, extrapolated, the curve that set it) for a target false-match rate."""
        if not (MIN_FMR <= max_fmr <= 1.0):
            raise InvalidArgumentError(f"max_fmr must be between {MIN_FMR:g} and 1; got {max_fmr:g}")
        best = (-math.inf, False, "overall")
        for curve in self.policy_curves(policy):
            thr, extrapolated = curve.threshold(max_fmr)
            if thr > best[0]:
                best = (thr, extrapolated, curve.name)
        return best

    def threshold(self, max_fmr: float, policy: Policy = "worst-group") -> float:
        """The lowest score at which the false-match rate is at most ``max_fmr`` under ``policy``."""
        return self.threshold_detail(max_fmr, policy)[0]

    def fmr_detail(self, score: float, policy: Policy = "worst-group") -> tuple[float, bool, str]:
        """(false-match rate, extrapolated, the curve it comes from) at ``score``: under ``worst-group``
        the highest rate of any curve the policy uses."""
        best = (-1.0, False, "overall")
        for curve in self.policy_curves(policy):
            rate, extrapolated = curve.fmr(score)
            if rate > best[0]:
                best = (rate, extrapolated, curve.name)
        return best

    def fmr(self, score: float, policy: Policy = "worst-group") -> tuple[float, bool]:
        """False-match rate at ``score`` and whether it is extrapolated."""
        rate, extrapolated, _ = self.fmr_detail(score, policy)
        return rate, extrapolated

    def summary(self) -> dict[str, Any]:
        """What the profile holds, JSON-able."""
        return {"name": self.name, "model_sha256": self.model_sha256, "overall": self.overall.summary(),
                "groups": {g: dict(c.summary(), used_by_worst_group=c.n_pairs >= MIN_GROUP_PAIRS)
                           for g, c in self.curves.items()},
                "meta": self.meta}

    def save(self, path: str | Path) -> None:
        """Write the ``.npz`` file (atomically)."""
        path = Path(path)
        meta = dict(self.meta, name=self.name, model_sha256=self.model_sha256, format_version=FORMAT_VERSION,
                    score_lo=SCORE_LO, bin_width=BIN_WIDTH, n_pairs=self.n_pairs, groups=sorted(self.curves),
                    fallback_slope=self.fallback_slope)
        arrays = {"counts_overall": self.overall.counts}
        for i, g in enumerate(sorted(self.curves)):
            arrays[f"counts_group_{i}"] = self.curves[g].counts
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)  # type: ignore[arg-type]
        tmp.replace(path)


def load_calibration(path: str | Path, *, model_sha256: str | None = None) -> ScoreCalibration:
    """Read a calibration profile; when ``model_sha256`` is given, refuse one made for another model."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            counts = np.asarray(z["counts_overall"], dtype=np.int64)
            names = meta.get("groups", []) if meta.get("format_version") == FORMAT_VERSION else []
            groups = {g: np.asarray(z[f"counts_group_{i}"], dtype=np.int64) for i, g in enumerate(names)}
    except (OSError, ValueError, KeyError) as exc:
        raise CalibrationError(f"{path}: not a facelens calibration file ({exc})") from exc
    if meta.get("format_version") not in (1, FORMAT_VERSION):
        raise CalibrationError(f"{path}: unsupported calibration format {meta.get('format_version')!r}")
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise CalibrationError(
            f"{path}: made for model sha256 {meta.get('model_sha256')}, not {model_sha256}; scores of "
            f"different models are not comparable")
    meta.pop("groups", None)
    fallback = meta.pop("fallback_slope", None)
    return ScoreCalibration(name=str(meta["name"]), model_sha256=str(meta["model_sha256"]), counts=counts,
                            meta=meta, groups=groups, fallback_slope=None if fallback is None else float(fallback))


def impostor_histogram(
    embeddings: npt.NDArray[np.float32],
    labels: npt.NDArray[Any],
    *,
    chunk: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Score histograms of all impostor and all genuine pairs ``i < j``.

    ``embeddings``: (n, d) float32, L2-normalised; ``labels``: (n,) identity of each row. Every unordered
    pair is scored once (about n^2 / 2 dot products, done in row blocks of ``chunk``). Returns
    ``(impostor_counts, genuine_counts)``, each (N_BINS,) int64 over the bins of :class:`ScoreCalibration`.
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(labels):
        raise InvalidArgumentError("embeddings must be (n, d) with one label per row")
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    n = emb.shape[0]
    imp = np.zeros(N_BINS, dtype=np.int64)
    gen = np.zeros(N_BINS, dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        scores = emb[start:stop] @ emb[start + 1 :].T  # row r vs columns j > start
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start + 1, n)[None, :]
        upper = cols > rows
        same = codes[start:stop, None] == codes[None, start + 1 :]
        bins = score_bins(scores)
        imp += np.bincount(bins[upper & ~same], minlength=N_BINS)
        gen += np.bincount(bins[upper & same], minlength=N_BINS)
        if progress is not None:
            progress(stop, n)
    return imp, gen


def build_calibration(
    embeddings: npt.NDArray[np.float32], labels: npt.NDArray[Any], *, name: str, model_sha256: str,
    meta: dict[str, Any] | None = None, groups: Mapping[str, npt.NDArray[Any]] | None = None,
    min_group_pairs: int = 1000,
) -> ScoreCalibration:
    """Measure a calibration profile from labelled embeddings: all impostor pairs overall and, for each
    ``groups`` entry (group name -> (n,) bool mask of its rows), the pairs with both rows in the group.
    Groups with fewer than ``min_group_pairs`` impostor pairs are left out (listed in ``meta``)."""
    imp, _ = impostor_histogram(embeddings, labels)
    if imp.sum() == 0:
        raise CalibrationError("no impostor pairs: the data must hold at least two identities")
    curves: dict[str, npt.NDArray[np.int64]] = {}
    too_small: dict[str, int] = {}
    for group, mask in (groups or {}).items():
        sel = np.asarray(mask, dtype=bool)
        g_imp, _ = impostor_histogram(embeddings[sel], np.asarray(labels)[sel])
        if g_imp.sum() >= min_group_pairs:
            curves[group] = g_imp
        else:
            too_small[group] = int(g_imp.sum())
    meta = dict(meta or {})
    if too_small:
        meta["groups_left_out"] = {"min_pairs": min_group_pairs, "pairs": too_small}
    return ScoreCalibration(name=name, model_sha256=model_sha256, counts=imp, meta=meta, groups=curves)
