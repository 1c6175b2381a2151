"""Parameter-stability and mean-residual-life look at the peaks-over-threshold rule of the shipped profile.

    python benchmarks/tail_stability.py [--profile facelens/calibration/data/buffalo_s.npz]

For thresholds ``u`` at FMR 1e-2 ... 1e-5 of the overall impostor curve (and of each group curve with
--groups): the number of exceedances, the mean excess (mean residual life: for a GPD it is linear in
``u``), the maximum-likelihood GPD shape and modified scale (sigma - xi * u, constant in ``u`` for a
GPD), and the point-estimate threshold the fit gives at FMR 1e-7 and 3e-9 (the default search at 1M
faces). Stable values across ``u`` support the rule (u at FMR 1e-3); no bootstrap is run here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from facelens.calibration.table import (  # noqa: E402
    BIN_WIDTH,
    SCORE_LO,
    _fit_gpd,
    _gpd_sf,
    load_calibration,
)

ROOT = Path(__file__).resolve().parents[1]


def look(name: str, counts: np.ndarray) -> None:
    at_least = np.cumsum(counts[::-1])[::-1]
    n = int(at_least[0])
    print(f"\n{name}: {n:,} impostor pairs")
    print("| u at FMR | u | exceedances | mean excess | xi | sigma - xi*u | threshold at 1e-7 | at 3e-9 |")
    print("|---|---|---|---|---|---|---|---|")
    for rate in (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5):
        ub = int(np.searchsorted(-at_least, -rate * n, side="left"))
        k = int(at_least[ub])
        if k < 50:
            continue
        c = np.diff(-np.r_[at_least[ub:], 0]).astype(np.float64)
        nz = np.nonzero(c)[0]
        xi, sigma = _fit_gpd(nz.astype(np.int64), c[nz])
        u = SCORE_LO + ub * BIN_WIDTH
        mean_excess = float(np.dot((nz + 0.5) * BIN_WIDTH, c[nz]) / c[nz].sum())
        grid = np.arange(0, 1.0 - u, BIN_WIDTH)
        tail = k / n * _gpd_sf(grid, xi, sigma)
        thr = []
        for target in (1e-7, 3e-9):
            idx = np.nonzero(tail <= target)[0]
            thr.append(f"{u + grid[idx[0]]:.4f}" if idx.size else "-")
        print(f"| {rate:g} | {u:.4f} | {k:,} | {mean_excess:.4f} | {xi:.3f} | {sigma - xi * u:.4f} | {thr[0]} | "
              f"{thr[1]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", type=Path, default=ROOT / "facelens" / "calibration" / "data" / "buffalo_s.npz")
    ap.add_argument("--groups", action="store_true", help="also each group curve")
    args = ap.parse_args()
    cal = load_calibration(args.profile)
    look("overall", cal.overall.counts)
    if args.groups:
        for g, c in cal.curves.items():
            look(g, c.counts)


if __name__ == "__main__":
    main()
