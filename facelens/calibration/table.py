"""Impostor-score curves: measuring them, storing them, and reading false-match rates and thresholds off them.

A calibration profile holds, for one recogniser (bound to its sha256), the histogram of the scores of
*impostor* pairs (two photos of different people) over all the data, and one per audited demographic
group (both photos in the group). From a curve, ``fmr(score)`` is a one-sided 95% upper confidence bound
on the share of impostor pairs scoring at least ``score``, and ``threshold(max_fmr)`` the lowest score
at which that bound is at most ``max_fmr``: thresholds are chosen from the bound, not the point estimate
(``fmr_estimate`` gives the latter).

Honest tails: a rate is *measured* while at least :data:`MEASURED_MIN_PAIRS` impostor pairs score at or
above the score; its bound is then the exact (Clopper-Pearson) binomial upper bound. Beyond that, the
curve is continued by a generalised Pareto distribution (GPD) fitted to the exceedances over a high
threshold ``u`` (peaks over threshold): ``u`` is the score of the :data:`TAIL_EXCEEDANCES`-th highest
pair, or the score at FMR :data:`TAIL_EXCEEDANCE_RATE` when that leaves fewer (but at least
:data:`TAIL_MIN_EXCEEDANCES` pairs). The bound there comes
from a parametric bootstrap of the fit (the exceedance count drawn binomially, the exceedances from the
fitted GPD, the GPD refitted), and every value read there is flagged ``extrapolated``. A curve is read
at most log10(exceedances / 10) decades (at most :data:`EXTRAPOLATION_DECADES`) below the rates it
measures: lower rates are refused (``CalibrationError`` naming the number of impostor pairs that would
support them).
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
from scipy import optimize, stats

from ..errors import CalibrationError, InvalidArgumentError, UnsupportedRateError

__all__ = [
    "CONFIDENCE",
    "EXTRAPOLATION_DECADES",
    "MEASURED_MIN_PAIRS",
    "MIN_GROUP_PAIRS",
    "ImpostorCurve",
    "Policy",
    "ScoreCalibration",
    "TailFit",
    "build_calibration",
    "fit_tail",
    "fpir_to_fmr",
    "impostor_histogram",
    "load_calibration",
    "pairs_needed",
    "score_bins",
]

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
SCORE_LO = -1.0
BIN_WIDTH = 1e-4
N_BINS = int(round(2.0 / BIN_WIDTH))
# Scores exactly on a bin edge (such as a threshold this table returned) must land in the bin that
# starts there, despite the rounding of (score - lo) / width in floating point.
_EDGE_TOLERANCE = 1e-6

CONFIDENCE = 0.95
"""Level of the one-sided upper confidence bounds on false-match rates."""

MEASURED_MIN_PAIRS = 10
"""A false-match rate is measured while at least this many impostor pairs score at or above the
threshold; with fewer, the count says too little (10 pairs give a 95% interval of about 0.5x to 1.8x)."""

TAIL_EXCEEDANCES = 1000
"""Peaks over threshold: the GPD is fitted to the this-many highest pairs (u: the score of the last), or
to the top TAIL_EXCEEDANCE_RATE of the pairs when that is fewer ..."""

TAIL_EXCEEDANCE_RATE = 1e-3

TAIL_MIN_EXCEEDANCES = 100
"""... but to at least this many ..."""

TAIL_MAX_EXCEEDANCE_RATE = 1e-2
"""... and never to more than this share of the pairs (a curve of fewer than 10,000 pairs has no tail:
its 100 highest pairs are not a tail)."""

EXTRAPOLATION_DECADES = 3.0
"""A curve is read at most log10(exceedances / 10) decades of FMR below its measured floor
(MEASURED_MIN_PAIRS / pairs), and never more than this: 1 decade with 100 exceedances, 2 with 1,000.
Asking for less refuses."""

BOOTSTRAP_DRAWS = 200
"""Parametric bootstrap draws of the tail fit (upper bound = their CONFIDENCE quantile)."""

MIN_GROUP_PAIRS = 10_000
"""Groups measured on fewer impostor pairs are kept in the profile but not used by the worst-group
policy: their curve is too coarse to set a threshold with."""

MIN_FMR = 1e-12
"""Rates below this are refused: no data or tail model speaks for them."""

_CACHE_LIMIT = 4096
"""Memoised thresholds a profile keeps (forgotten all at once past this: a collection that grows by one face
per search asks for a new rate each time)."""

Policy = Literal["worst-group", "overall"]
POLICIES: tuple[Policy, ...] = ("worst-group", "overall")


def score_bins(scores: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Bin index of each score (scores outside [-1, 1] go to the first or last bin)."""
    x = (np.asarray(scores, dtype=np.float64) - SCORE_LO) / BIN_WIDTH + _EDGE_TOLERANCE
    return np.clip(np.floor(x).astype(np.int64), 0, N_BINS - 1)


def _bin_score(b: int) -> float:
    return SCORE_LO + b * BIN_WIDTH


def fpir_to_fmr(max_fpir: float, gallery_size: int) -> float:
    """The per-comparison false-match rate at which a search of ``gallery_size`` faces for someone who is
    not among them returns any candidate with probability ``max_fpir``: ``1 - (1 - FPIR)^(1/N)``
    (comparisons taken as independent), about FPIR / N."""
    if not (0.0 < max_fpir < 1.0):
        raise InvalidArgumentError(f"max_fpir must be a rate in (0, 1), e.g. 0.003; got {max_fpir}")
    n = max(int(gallery_size), 1)
    return -math.expm1(math.log1p(-max_fpir) / n)


def _tail_exceedances(n_pairs: int) -> int:
    """How many of ``n_pairs`` the tail is fitted to (0: too few pairs for a tail)."""
    k = max(min(TAIL_EXCEEDANCES, int(TAIL_EXCEEDANCE_RATE * n_pairs)), TAIL_MIN_EXCEEDANCES)
    return 0 if k > TAIL_MAX_EXCEEDANCE_RATE * n_pairs else k


def _supported_floor(n_pairs: int, exceedances: int) -> float:
    """The lowest FMR a curve of ``n_pairs`` with a tail of ``exceedances`` (0: none) may be read at."""
    floor = MEASURED_MIN_PAIRS / n_pairs
    if exceedances <= MEASURED_MIN_PAIRS:
        return floor
    return float(floor * 10.0 ** -min(EXTRAPOLATION_DECADES, math.log10(exceedances / MEASURED_MIN_PAIRS)))


def pairs_needed(max_fmr: float) -> int:
    """The fewest impostor pairs a curve needs to be read at ``max_fmr``, by the rules above (a fitted
    tail, read no further below the measured floor than its exceedances allow)."""
    lo, hi = 1, 10**15
    while lo < hi:
        mid = (lo + hi) // 2
        if _supported_floor(mid, _tail_exceedances(mid)) <= max_fmr:
            hi = mid
        else:
            lo = mid + 1
    return lo


def clopper_pearson_upper(k: npt.ArrayLike, n: int, confidence: float = CONFIDENCE) -> npt.NDArray[np.float64]:
    """Exact one-sided upper confidence bound on a binomial rate: ``k`` successes in ``n`` trials."""
    k = np.asarray(k, dtype=np.float64)
    out = np.ones_like(k)
    below = k < n
    out[below] = stats.beta.ppf(confidence, k[below] + 1.0, n - k[below])
    return out


# -- the generalised Pareto tail -------------------------------------------------------------------

def _gpd_sf(y: npt.NDArray[np.float64], xi: float, sigma: float) -> npt.NDArray[np.float64]:
    """P(Y >= y) for a GPD of shape ``xi`` and scale ``sigma`` (y >= 0); 0 past a bounded tail's end."""
    z = np.maximum(y, 0.0) / sigma
    if abs(xi) < 1e-9:
        return np.exp(-z)
    base = 1.0 + xi * z
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(base > 0.0, np.power(np.maximum(base, 1e-300), -1.0 / xi), 0.0)
    return out


def _grouped_nll(params: npt.NDArray[np.float64], lo: npt.NDArray[np.float64],
                 counts: npt.NDArray[np.float64]) -> float:
    xi, log_sigma = float(params[0]), float(params[1])
    if not (-1.0 < xi < 1.0):
        return 1e300
    sigma = math.exp(log_sigma)
    p = _gpd_sf(lo, xi, sigma) - _gpd_sf(lo + BIN_WIDTH, xi, sigma)
    if np.any(p <= 0.0):
        return 1e300
    return -float(np.dot(counts, np.log(p)))


def _fit_gpd(excess_bins: npt.NDArray[np.int64], counts: npt.NDArray[np.float64],
             start_at: tuple[float, float] | None = None) -> tuple[float, float]:
    """Maximum-likelihood (xi, sigma) of a GPD for exceedances grouped into bins of BIN_WIDTH:
    ``counts[i]`` exceedances in ``[excess_bins[i] * w, (excess_bins[i] + 1) * w)``; the search starts
    at ``start_at`` (xi, sigma), else at an exponential with the exceedances' mean."""
    lo = excess_bins.astype(np.float64) * BIN_WIDTH
    if start_at is None:
        mean = float(np.dot(lo + BIN_WIDTH / 2, counts) / counts.sum())
        start = np.array([0.0, math.log(max(mean, BIN_WIDTH))])
    else:
        start = np.array([start_at[0], math.log(start_at[1])])
    res = optimize.minimize(_grouped_nll, start, args=(lo, counts), method="Nelder-Mead",
                            options={"xatol": 1e-4, "fatol": 1e-4, "maxiter": 2000})
    return float(res.x[0]), float(math.exp(res.x[1]))


@dataclass(frozen=True, slots=True, eq=False)
class TailFit:
    """A peaks-over-threshold fit: the pairs scoring at or above ``u`` (``exceedances`` of ``n_pairs``)
    follow a GPD of shape ``xi`` and scale ``sigma`` in ``score - u``; ``draws`` (B, 3) holds the
    parametric bootstrap's (exceedance rate, xi, sigma)."""

    u: float
    exceedances: int
    n_pairs: int
    xi: float
    sigma: float
    draws: npt.NDArray[np.float64]

    @property
    def rate(self) -> float:
        """Share of the pairs at or above ``u``."""
        return self.exceedances / self.n_pairs

    def estimate(self, score: float) -> float:
        """Point estimate of the FMR at ``score`` (>= u)."""
        return self.rate * float(_gpd_sf(np.array([score - self.u]), self.xi, self.sigma)[0])

    def upper(self, score: float) -> float:
        """One-sided CONFIDENCE upper bound on the FMR at ``score`` (>= u), from the bootstrap draws."""
        y = np.array([score - self.u])
        values = np.array([r * float(_gpd_sf(y, xi, sg)[0]) for r, xi, sg in self.draws])
        return float(np.quantile(values, CONFIDENCE))

    def summary(self) -> dict[str, Any]:
        return {"u": round(self.u, 4), "exceedances": self.exceedances, "exceedance_rate": self.rate,
                "xi": round(self.xi, 4), "sigma": round(self.sigma, 5), "bootstrap_draws": int(self.draws.shape[0])}


def fit_tail(at_least: npt.NDArray[np.int64], *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> TailFit | None:
    """Peaks-over-threshold GPD fit to a curve given as ``at_least[b]`` (pairs scoring in bin b or above);
    None when the curve has too few pairs for a tail (fewer than TAIL_MIN_EXCEEDANCES within the top
    TAIL_MAX_EXCEEDANCE_RATE of its pairs)."""
    n = int(at_least[0])
    want = _tail_exceedances(n)
    if want == 0:
        return None
    # u: the first bin edge at which at most `want` pairs remain (at_least is non-increasing) ...
    ub = int(np.searchsorted(-at_least, -want, side="left"))
    # ... moved down one bin when a tie leaves fewer than TAIL_MIN_EXCEEDANCES above it
    while ub > 0 and at_least[ub] < TAIL_MIN_EXCEEDANCES:
        ub -= 1
    k = int(at_least[ub])
    counts = np.diff(-np.r_[at_least[ub:], 0]).astype(np.float64)  # pairs in each bin from ub up
    nz = np.nonzero(counts)[0]
    xi, sigma = _fit_gpd(nz.astype(np.int64), counts[nz])
    rng = np.random.default_rng(seed)
    out = np.empty((draws, 3), np.float64)
    span = N_BINS - ub
    for i in range(draws):
        k_star = max(int(rng.binomial(n, k / n)), TAIL_MIN_EXCEEDANCES // 2)
        u01 = rng.random(k_star)
        y = sigma * np.log1p(-u01) / -1.0 if abs(xi) < 1e-9 else sigma / xi * (np.power(1.0 - u01, -xi) - 1.0)
        b = np.minimum(np.floor(y / BIN_WIDTH).astype(np.int64), span - 1)
        bins, c = np.unique(b, return_counts=True)
        xi_s, sg_s = _fit_gpd(bins, c.astype(np.float64), (xi, sigma))
        out[i] = (k_star / n, xi_s, sg_s)
    return TailFit(u=_bin_score(ub), exceedances=k, n_pairs=n, xi=xi, sigma=sigma, draws=out)


@dataclass(frozen=True, slots=True, eq=False)
class ImpostorCurve:
    """One impostor-score histogram, its confidence bounds and its fitted tail.

    ``counts[i]`` is the number of impostor pairs whose score falls in
    ``[SCORE_LO + i * BIN_WIDTH, SCORE_LO + (i + 1) * BIN_WIDTH)``. Rates are read conservatively: a
    pair in the same bin as ``score`` counts as scoring at least ``score``. ``tail``: a stored fit (from a
    profile file); fitted here when None.
    """

    name: str
    counts: npt.NDArray[np.int64]
    tail: TailFit | None = None
    _at_least: npt.NDArray[np.int64] = field(init=False, repr=False)
    _upper: npt.NDArray[np.float64] = field(init=False, repr=False)
    _anchor: int = field(init=False, repr=False)

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
        values, inverse = np.unique(at_least, return_inverse=True)
        object.__setattr__(self, "_upper", clopper_pearson_upper(values, int(at_least[0]))[inverse])
        if self.tail is None:
            object.__setattr__(self, "tail", fit_tail(at_least))

    @property
    def n_pairs(self) -> int:
        """Number of impostor pairs measured."""
        return int(self._at_least[0])

    @property
    def measured_floor(self) -> float:
        """The lowest false-match rate read off the data itself: MEASURED_MIN_PAIRS / n_pairs."""
        return MEASURED_MIN_PAIRS / self.n_pairs

    @property
    def supported_floor(self) -> float:
        """The lowest false-match rate this curve may be read at: its measured floor, or with a fitted tail
        EXTRAPOLATION_DECADES decades below it."""
        return _supported_floor(self.n_pairs, 0 if self.tail is None else self.tail.exceedances)

    @property
    def tail_fitted(self) -> bool:
        return self.tail is not None

    def _require(self, max_fmr: float) -> None:
        if max_fmr < self.supported_floor:
            raise UnsupportedRateError(
                f"calibration curve {self.name!r} has {self.n_pairs:,} impostor pairs: too few to support a "
                f"false-match rate of {max_fmr:.3g} (it supports {self.supported_floor:.3g}); that needs at least "
                f"{pairs_needed(max_fmr):,} impostor pairs of different people. Calibrate on more people, or "
                f"ask for a higher rate (a larger --max-fmr / --max-fpir, or a smaller collection)")

    def supports(self, max_fmr: float) -> bool:
        """Whether this curve may be read at ``max_fmr``."""
        return max_fmr >= self.supported_floor

    def _tail_upper(self, b: int) -> float:
        assert self.tail is not None
        return min(self.tail.upper(_bin_score(b)), float(self._upper[self._anchor]))

    def fmr(self, score: float) -> tuple[float, bool]:
        """Upper CONFIDENCE bound on the false-match rate at ``score``, and whether it is extrapolated
        (fewer than MEASURED_MIN_PAIRS impostor pairs score that high: the rate then comes from the fitted
        tail, or for a curve without one, from the exact bound on the few pairs' count)."""
        b = int(score_bins(float(score)))
        if self._at_least[b] >= MEASURED_MIN_PAIRS or self.tail is None:
            return max(float(self._upper[b]), MIN_FMR), bool(self._at_least[b] < MEASURED_MIN_PAIRS)
        return max(self._tail_upper(b), MIN_FMR), True  # no tail model speaks for rates below MIN_FMR

    def fmr_estimate(self, score: float) -> tuple[float, bool]:
        """Point estimate of the false-match rate at ``score`` (the share of pairs, or the fitted tail's
        value beyond the measured part) and whether it is extrapolated."""
        b = int(score_bins(float(score)))
        count = int(self._at_least[b])
        if count >= MEASURED_MIN_PAIRS or self.tail is None:
            return count / self.n_pairs, count < MEASURED_MIN_PAIRS
        anchor_rate = float(self._at_least[self._anchor]) / self.n_pairs
        return max(min(self.tail.estimate(_bin_score(b)), anchor_rate), MIN_FMR), True

    def threshold(self, max_fmr: float) -> tuple[float, bool]:
        """The lowest score whose false-match rate's upper bound is at most ``max_fmr``, and whether it is
        extrapolated (beyond the last MEASURED_MIN_PAIRS pairs). Refuses a rate below
        :attr:`supported_floor` (CalibrationError naming the pairs needed)."""
        self._require(max_fmr)
        # first bin where the measured bound drops to <= max_fmr (the bound is non-increasing)
        idx = int(np.searchsorted(-self._upper, -max_fmr, side="left"))
        if idx <= self._anchor:
            return _bin_score(idx), False
        if self.tail is None:
            return _bin_score(min(idx, N_BINS - 1)), True
        lo, hi = self._anchor + 1, N_BINS - 1
        if self._tail_upper(hi) > max_fmr:
            raise UnsupportedRateError(
                f"calibration curve {self.name!r}: no score keeps the upper bound on the false-match rate at or "
                f"below {max_fmr:.3g}: its tail is too heavy (the highest-scoring pairs of different people, such "
                f"as twins and look-alikes, score high at any threshold; the bound at score 1.0 is "
                f"{self._tail_upper(hi):.2g}). Ask for a higher rate (a larger --max-fmr / --max-fpir, a smaller "
                f"collection), or search in investigate mode (--mode investigate), whose candidates a person reviews")
        while lo < hi:  # the tail bound is non-increasing in the score: bisect for its first bin <= max_fmr
            mid = (lo + hi) // 2
            if self._tail_upper(mid) <= max_fmr:
                hi = mid
            else:
                lo = mid + 1
        return _bin_score(lo), True

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "impostor_pairs": self.n_pairs, "measured_down_to_fmr": self.measured_floor,
                "supported_down_to_fmr": self.supported_floor,
                "measured_up_to_score": round(_bin_score(self._anchor), 4),
                "tail": None if self.tail is None else self.tail.summary(), "tail_fitted": self.tail is not None}


@dataclass(frozen=True, slots=True, eq=False)
class ScoreCalibration:
    """A calibration profile: the overall impostor curve and one per audited group.

    ``groups`` maps a group name such as ``"lfw:sex=F"`` or ``"utkface:race=Black"`` to its histogram.
    ``tails``: stored tail fits by curve name (``"overall"`` or a group), as read from a file; curves
    without one are fitted when the profile is made.
    The ``worst-group`` policy takes, for a target false-match rate, the highest threshold of the overall
    curve and of every group measured on at least :data:`MIN_GROUP_PAIRS` pairs that supports the rate,
    so that every audited group meets the target; ``overall`` uses the overall curve alone. The overall
    curve must support the rate asked for (else CalibrationError); a group that cannot is passed over
    and listed by :meth:`groups_unsupported`.
    """

    name: str
    model_sha256: str
    counts: npt.NDArray[np.int64]
    meta: dict[str, Any] = field(default_factory=dict)
    groups: Mapping[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    tails: Mapping[str, TailFit] = field(default_factory=dict)
    overall: ImpostorCurve = field(init=False, repr=False)
    curves: dict[str, ImpostorCurve] = field(init=False, repr=False)
    _thresholds: dict[tuple[float, str], tuple[float, bool, str]] = field(init=False, repr=False)
    _rates: dict[tuple[int, str], tuple[float, bool, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Memos of the two pure readings a search makes (the curves never change once made): the threshold
        # for (rate, policy), and the rate at a score's bin for (bin, policy). A search's operating point
        # reads fitted tails (a bootstrap of 200 fits per point read) for every curve of the policy: cached,
        # a search pays for it once per (rate, policy), i.e. once per gallery size and rate asked.
        object.__setattr__(self, "_thresholds", {})
        object.__setattr__(self, "_rates", {})
        overall = ImpostorCurve("overall", np.asarray(self.counts, dtype=np.int64), tail=self.tails.get("overall"))
        object.__setattr__(self, "overall", overall)
        curves = {g: ImpostorCurve(g, np.asarray(c, dtype=np.int64), tail=self.tails.get(g))
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

    @property
    def supported_floor(self) -> float:
        """The lowest false-match rate this profile can set a threshold for (its overall curve's)."""
        return self.overall.supported_floor

    def require_supports(self, max_fmr: float) -> None:
        """Refuse (CalibrationError naming the impostor pairs needed) a rate this profile cannot support."""
        self.overall._require(max_fmr)

    def policy_curves(self, policy: Policy = "worst-group") -> list[ImpostorCurve]:
        """The curves a policy takes the worst of: the overall one, and the large enough groups."""
        if policy not in POLICIES:
            raise InvalidArgumentError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
        if policy == "overall":
            return [self.overall]
        return [self.overall] + [c for c in self.curves.values() if c.n_pairs >= MIN_GROUP_PAIRS]

    def groups_unsupported(self, max_fmr: float, policy: Policy = "worst-group") -> list[str]:
        """Groups the policy would use but that are too small to support ``max_fmr`` (passed over)."""
        return [c.name for c in self.policy_curves(policy)[1:] if not c.supports(max_fmr)]

    def clear_cache(self) -> None:
        """Forget the memoised thresholds and rates (they are recomputed, identically, on the next reading)."""
        self._thresholds.clear()
        self._rates.clear()

    def threshold_detail(self, max_fmr: float, policy: Policy = "worst-group") -> tuple[float, bool, str]:
        """(threshold, extrapolated, the curve that set it) for a target false-match rate, chosen from the
        upper confidence bound. Memoised per (rate, policy): the value is exactly :meth:`compute_threshold`'s."""
        if policy not in POLICIES:
            raise InvalidArgumentError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
        key = (float(max_fmr), str(policy))
        hit = self._thresholds.get(key)
        if hit is None:
            hit = self.compute_threshold(max_fmr, policy)  # a refusal raises and is not remembered
            if len(self._thresholds) >= _CACHE_LIMIT:
                self._thresholds.clear()
            self._thresholds[key] = hit
        return hit

    def compute_threshold(self, max_fmr: float, policy: Policy = "worst-group") -> tuple[float, bool, str]:
        """:meth:`threshold_detail` computed afresh (no memo): read off every curve the policy uses."""
        if not (MIN_FMR <= max_fmr <= 1.0):
            raise InvalidArgumentError(f"max_fmr must be between {MIN_FMR:g} and 1; got {max_fmr:g}")
        thr, extrapolated = self.overall.threshold(max_fmr)  # refuses a rate the profile cannot support
        best = (thr, extrapolated, "overall")
        for curve in self.policy_curves(policy)[1:]:
            if not curve.supports(max_fmr):
                continue
            thr, extrapolated = curve.threshold(max_fmr)
            if thr > best[0]:
                best = (thr, extrapolated, curve.name)
        return best

    def threshold(self, max_fmr: float, policy: Policy = "worst-group") -> float:
        """The lowest score at which the false-match rate is at most ``max_fmr`` under ``policy``."""
        return self.threshold_detail(max_fmr, policy)[0]

    def fmr_detail(self, score: float, policy: Policy = "worst-group") -> tuple[float, bool, str]:
        """(upper bound on the false-match rate, extrapolated, the curve it comes from) at ``score``: under
        ``worst-group`` the highest bound of the overall curve and of any group curve the policy uses that
        supports the value it reads (a group's value below its supported floor is passed over). Memoised per
        (score bin, policy), on which alone it depends: the value is exactly :meth:`compute_fmr`'s."""
        if policy not in POLICIES:
            raise InvalidArgumentError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
        key = (int(score_bins(float(score))), str(policy))
        hit = self._rates.get(key)
        if hit is None:
            hit = self.compute_fmr(score, policy)
            self._rates[key] = hit  # at most N_BINS x len(POLICIES) entries
        return hit

    def compute_fmr(self, score: float, policy: Policy = "worst-group") -> tuple[float, bool, str]:
        """:meth:`fmr_detail` computed afresh (no memo)."""
        rate, extrapolated = self.overall.fmr(score)
        best = (rate, extrapolated, "overall")
        for curve in self.policy_curves(policy)[1:]:
            rate, extrapolated = curve.fmr(score)
            if rate > best[0] and curve.supports(rate):
                best = (rate, extrapolated, curve.name)
        return best

    def fmr(self, score: float, policy: Policy = "worst-group") -> tuple[float, bool]:
        """Upper bound on the false-match rate at ``score`` and whether it is extrapolated."""
        rate, extrapolated, _ = self.fmr_detail(score, policy)
        return rate, extrapolated

    def summary(self) -> dict[str, Any]:
        """What the profile holds, JSON-able."""
        return {"name": self.name, "model_sha256": self.model_sha256, "overall": self.overall.summary(),
                "groups": {g: dict(c.summary(), used_by_worst_group=c.n_pairs >= MIN_GROUP_PAIRS)
                           for g, c in self.curves.items()},
                "meta": self.meta}

    def save(self, path: str | Path) -> None:
        """Write the ``.npz`` file (atomically), with the tail fits so that reading it refits nothing."""
        path = Path(path)
        names = sorted(self.curves)
        meta = dict(self.meta, name=self.name, model_sha256=self.model_sha256, format_version=FORMAT_VERSION,
                    score_lo=SCORE_LO, bin_width=BIN_WIDTH, n_pairs=self.n_pairs, groups=names,
                    confidence=CONFIDENCE, supported_down_to_fmr=self.supported_floor)
        arrays: dict[str, npt.NDArray[Any]] = {"counts_overall": self.overall.counts}
        keyed = [("overall", self.overall)] + [(f"group_{i}", self.curves[g]) for i, g in enumerate(names)]
        for key, curve in keyed:
            if key != "overall":
                arrays[f"counts_{key}"] = curve.counts
            if curve.tail is not None:
                t = curve.tail
                arrays[f"tail_{key}"] = np.array([t.u, t.exceedances, t.n_pairs, t.xi, t.sigma], np.float64)
                arrays[f"draws_{key}"] = t.draws
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)  # type: ignore[arg-type]
        tmp.replace(path)


def _read_tail(z: Any, key: str) -> TailFit | None:
    if f"tail_{key}" not in z.files:
        return None
    u, k, n, xi, sigma = (float(v) for v in z[f"tail_{key}"])
    return TailFit(u=u, exceedances=int(k), n_pairs=int(n), xi=xi, sigma=sigma,
                   draws=np.asarray(z[f"draws_{key}"], dtype=np.float64))


def load_calibration(path: str | Path, *, model_sha256: str | None = None) -> ScoreCalibration:
    """Read a calibration profile (format 1, 2 or 3; the tails of formats 1 and 2 are fitted on reading);
    when ``model_sha256`` is given, refuse one made for another model."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            version = meta.get("format_version")
            counts = np.asarray(z["counts_overall"], dtype=np.int64)
            names = meta.get("groups", []) if version in (2, 3) else []
            groups = {g: np.asarray(z[f"counts_group_{i}"], dtype=np.int64) for i, g in enumerate(names)}
            tails: dict[str, TailFit] = {}
            if version == 3:
                for key, name in [("overall", "overall")] + [(f"group_{i}", g) for i, g in enumerate(names)]:
                    tail = _read_tail(z, key)
                    if tail is not None:
                        tails[name] = tail
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(f"{path}: not a facelens calibration file ({exc})") from exc
    if version not in READABLE_VERSIONS:
        raise CalibrationError(f"{path}: unsupported calibration format {version!r}")
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise CalibrationError(
            f"{path}: made for model sha256 {meta.get('model_sha256')}, not {model_sha256}; scores of "
            f"different models are not comparable")
    for key in ("groups", "fallback_slope", "confidence", "supported_down_to_fmr"):
        meta.pop(key, None)
    return ScoreCalibration(name=str(meta["name"]), model_sha256=str(meta["model_sha256"]), counts=counts,
                            meta=meta, groups=groups, tails=tails)


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
