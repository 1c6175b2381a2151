"""Print, as JSON, the default search operating point at several collection sizes, with the facelens on
the path (so that an older release can be asked for its "before" figures, e.g. with PYTHONPATH set to an
exported older tree).

    python benchmarks/operating_points.py [--sizes 1000,10000,21629,1000000] > points.json

Per size N: the threshold of the default search (max FPIR 0.003, the engine's policy), the per-comparison
max FMR it became, whether it is extrapolated, the curve that set it, and the calibration's point
estimate of the overall FMR at that threshold (an older release without ``fmr_estimate`` gives its
``fmr``, which was the point estimate). Also the compare default (max FMR 1e-5) and max FMR 1e-3 / 1e-4.
Only the public engine API and the calibration's curves are used, so old and new releases both run it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import facelens


def _estimate(curve: Any, score: float) -> float:
    if hasattr(curve, "fmr_estimate"):
        return float(curve.fmr_estimate(score)[0])
    return float(curve.fmr(score)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000,1000000,10000000")
    ap.add_argument("--model", default="buffalo_s")
    args = ap.parse_args()
    engine = facelens.Engine(model=args.model, threads=1)
    cal = engine.calibration
    out: dict[str, Any] = {"calibration": cal.name, "facelens_version": facelens.__version__, "search": {},
                           "fmr": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        try:
            op = engine.operating_point(collection_size=n)
        except facelens.CalibrationError as exc:
            out["search"][str(n)] = {"refused": str(exc)}
            continue
        out["search"][str(n)] = {"threshold": op.threshold, "max_fmr": op.max_fmr, "extrapolated": op.extrapolated,
                                 "limited_by": op.limited_by, "fmr_estimate": _estimate(cal.overall, op.threshold)}
    for rate in (1e-3, 1e-4, 1e-5):
        op = engine.operating_point(max_fmr=rate)
        out["fmr"][f"{rate:g}"] = {"threshold": op.threshold, "extrapolated": op.extrapolated,
                                   "limited_by": op.limited_by}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
