"""The impostor-score table: measuring it, storing it, and reading false-match rates off it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import CalibrationError, InvalidArgumentError

__all__ = ["ScoreCalibration", "build_calibration", "impostor_histogram", "load_calibration", "score_bins"]

FORMAT_VERSION = 1
SCORE_LO = -1.0
BIN_WIDTH = 1e-4
N_BINS = int(round(2.0 / BIN_WIDTH))
# Scores exactly on a bin edge (such as a threshold this table returned) must land in the bin that
# starts there, despite the rounding of (score - lo) / width in floating point.
_EDGE_TOLERANCE = 1e-6


def score_bins(scores: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Bin index of each score (scores outside [-1, 1] go to the first or last bin)."""
    x = (np.asarray(scores, dtype=np.float64) - SCORE_LO) / BIN_WIDTH + _EDGE_TOLERANCE
    return np.clip(np.floor(x).astype(np.int64), 0, N_BINS - 1)


@dataclass(frozen=True, slots=True, eq=False)
class ScoreCalibration:
    """Impostor-score histogram for one recogniser.

    ``counts[i]`` is the number of impostor pairs whose score falls in
    ``[SCORE_LO + i * BIN_WIDTH, SCORE_LO + (i + 1) * BIN_WIDTH)``. Rates are read conservatively:
    a pair in the same bin as ``score`` counts as scoring at least ``score``.
    """

    name: str
    model_sha256: str
    counts: npt.NDArray[np.int64]
    meta: dict[str, Any] = field(default_factory=dict)
    _at_least: npt.NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.counts.shape != (N_BINS,):
            raise CalibrationError(f"calibration {self.name!r}: expected {N_BINS} bins, got {self.counts.shape}")
        object.__setattr__(self, "_at_least", np.cumsum(self.counts[::-1])[::-1].copy())

    @property
    def n_pairs(self) -> int:
        """Number of impostor pairs measured."""
        return int(self._at_least[0])

    @property
    def resolution(self) -> float:
        """The smallest non-zero false-match rate the data can show: 1 / number of pairs."""
        return 1.0 / self.n_pairs

    def fmr(self, score: float) -> tuple[float, bool]:
        """False-match rate at ``score``, and whether it is only an upper bound.

        The bound case is a score above every impostor pair measured: the true rate is below the
        data's resolution, which is returned.
        """
        count = int(self._at_least[int(score_bins(float(score)))])
        if count == 0:
            return self.resolution, True
        return count / self.n_pairs, False

    def threshold(self, max_fmr: float) -> float:
        """The lowest score at which the measured false-match rate is at most ``max_fmr``.

        Raises :class:`InvalidArgumentError` when ``max_fmr`` is below the data's resolution: such a
        rate cannot be measured from this calibration (a later version extrapolates the tail).
        """
        if max_fmr < self.resolution:
            raise InvalidArgumentError(
                f"max_fmr {max_fmr:g} is below what calibration {self.name!r} can measure "
                f"({self.resolution:.2g} = 1 in {self.n_pairs:,} impostor pairs)")
        allowed = max_fmr * self.n_pairs
        # _at_least is non-increasing; first index where it drops to <= allowed.
        idx = int(np.searchsorted(-self._at_least, -allowed, side="left"))
        return SCORE_LO + idx * BIN_WIDTH

    def save(self, path: str | Path) -> None:
        """Write the ``.npz`` file (atomically)."""
        path = Path(path)
        meta = dict(self.meta, name=self.name, model_sha256=self.model_sha256, format_version=FORMAT_VERSION,
                    score_lo=SCORE_LO, bin_width=BIN_WIDTH, n_pairs=self.n_pairs)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, counts_overall=self.counts, meta=np.array(json.dumps(meta, sort_keys=True)))
        tmp.replace(path)


def load_calibration(path: str | Path, *, model_sha256: str | None = None) -> ScoreCalibration:
    """Read a calibration file; when ``model_sha256`` is given, refuse one made for another model."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            counts = np.asarray(z["counts_overall"], dtype=np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise CalibrationError(f"{path}: not a facelens calibration file ({exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise CalibrationError(f"{path}: unsupported calibration format {meta.get('format_version')!r}")
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise CalibrationError(
            f"{path}: made for model sha256 {meta.get('model_sha256')}, not {model_sha256}; scores of "
            f"different models are not comparable")
    return ScoreCalibration(name=str(meta["name"]), model_sha256=str(meta["model_sha256"]), counts=counts,
                            meta=meta)


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
    meta: dict[str, Any] | None = None,
) -> ScoreCalibration:
    """Measure a calibration from labelled embeddings (all impostor pairs)."""
    imp, _ = impostor_histogram(embeddings, labels)
    if imp.sum() == 0:
        raise CalibrationError("no impostor pairs: the data must hold at least two identities")
    return ScoreCalibration(name=name, model_sha256=model_sha256, counts=imp, meta=dict(meta or {}))
